"""OTLP trace requests -> ``token.usage.v1`` events (pure: no I/O).

    >>> request = decode_request(body, "application/json")      # or application/x-protobuf
    >>> result = map_request(request, mapping)                  # SpanMapping: host, GPUs, tenant
    >>> result.events, result.ignored, result.rejected, result.reasons

Mapping (docs/connect.md has the table):

- a span is **usage** when it carries ``gen_ai.usage.input_tokens`` or
  ``gen_ai.usage.output_tokens`` (a missing one counts as 0), or the older names
  ``gen_ai.usage.prompt_tokens`` / ``gen_ai.usage.completion_tokens`` that earlier OpenLIT and
  OpenLLMetry releases write; any other span is *ignored* (counted, not an error: most spans
  of a traced app are not LLM calls);
- ``model`` = ``gen_ai.response.model``, else ``gen_ai.request.model``;
- ``request_id`` = ``gen_ai.response.id``; ``latency_ms`` = end - start; ``ts`` = end;
  ``cache_read_input_tokens`` = ``gen_ai.usage.cache_read.input_tokens``;
  ``ttft_ms`` = ``gen_ai.server.time_to_first_token`` (seconds, as OpenLIT writes it) x 1000;
  ``status`` = ``error`` when the span's status is ERROR, else ``ok``;
- ``host`` = resource ``host.name``, else the receiver's PRODUCER_HOST;
- GPUs: the resource (or span) attribute named by PRODUCER_OTLP_GPU_ATTRIBUTE (``gpu_index``
  values of the receiver's host, comma-separated), else the deployment map by model; several
  GPUs = tensor parallel, split like every producer (``producers.fleet.split_request``);
- ``tenant`` = the span attribute named by PRODUCER_OTLP_TENANT_ATTRIBUTE, else that resource
  attribute; a value the contract refuses is left out (the usage still counts, unattributed);
- ``event_id`` = uuid5 of trace id + span id, so an exporter's retry re-sends the same ids and
  the processor stores each span once.

A usage span that cannot become a valid event (no model, no GPU for its model, end before start,
a value out of the contract's range) is *rejected*: counted, and reported back to the exporter
in ``partial_success``.
"""

from __future__ import annotations

import base64
import re
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Final

import orjson
from google.protobuf import json_format
from google.protobuf.message import DecodeError
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue
from opentelemetry.proto.trace.v1.trace_pb2 import Span, Status

from producers.fleet import Replica, split_request
from producers.traffic import GpuTarget
from schemas.contracts import TOKEN_USAGE_V1, ContractViolation, format_ts, validate

__all__ = [
    "CONTENT_JSON",
    "CONTENT_PROTOBUF",
    "BadRequest",
    "MapResult",
    "SpanMapping",
    "decode_request",
    "map_request",
]

CONTENT_PROTOBUF: Final = "application/x-protobuf"
CONTENT_JSON: Final = "application/json"

INPUT_TOKENS: Final = "gen_ai.usage.input_tokens"
OUTPUT_TOKENS: Final = "gen_ai.usage.output_tokens"
CACHE_READ: Final = "gen_ai.usage.cache_read.input_tokens"
# Names of the same counts before the conventions settled on input/output.
OLD_INPUT_TOKENS: Final = "gen_ai.usage.prompt_tokens"
OLD_OUTPUT_TOKENS: Final = "gen_ai.usage.completion_tokens"
RESPONSE_MODEL: Final = "gen_ai.response.model"
REQUEST_MODEL: Final = "gen_ai.request.model"
RESPONSE_ID: Final = "gen_ai.response.id"
TTFT_S: Final = "gen_ai.server.time_to_first_token"
HOST_NAME: Final = "host.name"

# uuid5 namespace of event ids made from OTLP span ids (any fixed UUID; never change it, or
# re-sent spans would be stored twice).
_SPAN_NAMESPACE: Final = uuid.UUID("5b0b2f4e-8d0a-4c55-9a57-0c7f3f1e6a10")
_TENANT_RE: Final = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:@+/-]*$")
_HOST_RE: Final = re.compile(r"^[^/\s]{1,253}$")
# The OTLP JSON encoding writes trace and span ids as hex; protobuf's JSON parser wants base64.
_ID_FIELDS: Final = ("traceId", "spanId", "parentSpanId", "trace_id", "span_id", "parent_span_id")
# Only the first few rejection reasons go back to the exporter: enough to diagnose, bounded.
_MAX_REASONS: Final = 5


class BadRequest(ValueError):
    """The body is not an ExportTraceServiceRequest in the declared encoding (-> HTTP 400)."""


@dataclass(frozen=True, slots=True)
class SpanMapping:
    """What the receiver knows that spans do not say: its host, GPUs and attribute names."""

    host: str
    gpus: Mapping[int, GpuTarget]
    replicas: Sequence[Replica] = ()
    tenant_attribute: str = "tenant.id"
    gpu_attribute: str = "gpu.index"


@dataclass(slots=True)
class MapResult:
    """Events to publish and what happened to every other span."""

    events: list[dict[str, Any]] = field(default_factory=list)
    usage_spans: int = 0
    ignored: int = 0
    rejected: int = 0
    reasons: list[str] = field(default_factory=list)

    def reject(self, reason: str) -> None:
        self.rejected += 1
        if len(self.reasons) < _MAX_REASONS:
            self.reasons.append(reason)


# ---------------------------------------------------------------- decoding


def decode_request(body: bytes, content_type: str) -> ExportTraceServiceRequest:
    """The request in ``body``; BadRequest with a reason when it cannot be decoded."""
    request = ExportTraceServiceRequest()
    if content_type == CONTENT_PROTOBUF:
        try:
            request.ParseFromString(body)
        except DecodeError as exc:
            raise BadRequest(
                f"body is not an OTLP protobuf ExportTraceServiceRequest: {exc}"
            ) from None
        return request
    if content_type == CONTENT_JSON:
        try:
            data = orjson.loads(body)
        except orjson.JSONDecodeError as exc:
            raise BadRequest(f"body is not JSON: {exc}") from None
        if not isinstance(data, dict):
            raise BadRequest("body must be a JSON object (ExportTraceServiceRequest)")
        try:
            _hex_ids_to_base64(data)
            # The OTLP spec: receivers MUST ignore fields they do not know (newer senders).
            json_format.ParseDict(data, request, ignore_unknown_fields=True)
        except (json_format.ParseError, BadRequest) as exc:
            raise BadRequest(f"body is not an OTLP JSON ExportTraceServiceRequest: {exc}") from None
        return request
    raise BadRequest(f"unsupported content type {content_type!r}")


def _hex_ids_to_base64(data: Any) -> None:
    """Rewrite OTLP JSON's hex ids in place into the base64 protobuf's JSON parser expects."""
    if isinstance(data, list):
        for item in data:
            _hex_ids_to_base64(item)
        return
    if not isinstance(data, dict):
        return
    for key, value in data.items():
        if key in _ID_FIELDS and isinstance(value, str):
            try:
                data[key] = base64.b64encode(bytes.fromhex(value)).decode()
            except ValueError:
                raise BadRequest(f"{key} {value[:64]!r} is not hex") from None
        elif key != "attributes":  # attribute values are user data, never ids
            _hex_ids_to_base64(value)


# ---------------------------------------------------------------- mapping


def _value(value: AnyValue) -> Any:
    kind = value.WhichOneof("value")
    if kind == "string_value":
        return value.string_value
    if kind == "int_value":
        return value.int_value
    if kind == "double_value":
        return value.double_value
    if kind == "bool_value":
        return value.bool_value
    if kind == "array_value":
        return [_value(v) for v in value.array_value.values]
    return None


def _attributes(attributes: Sequence[KeyValue]) -> dict[str, Any]:
    return {kv.key: _value(kv.value) for kv in attributes}


def _count(value: Any, name: str) -> int:
    """A token count as an int; ValueError names the attribute."""
    if isinstance(value, bool):
        raise ValueError(f"{name} is a boolean")
    if isinstance(value, int):
        return value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, str) and value.strip().isdigit():
        return int(value.strip())
    raise ValueError(f"{name} {value!r} is not a whole number")


def _gpu_indexes(value: Any) -> list[int]:
    if isinstance(value, int) and not isinstance(value, bool):
        return [value]
    if isinstance(value, list):
        return [_gpu_indexes(v)[0] for v in value]
    if isinstance(value, str):
        parts = [p.strip() for p in value.split(",")]
        if all(p.isdigit() for p in parts):
            return [int(p) for p in parts]
    raise ValueError(f"{value!r} is not a list of gpu_index values")


def _span_name(span: Span) -> str:
    return f"span {span.span_id.hex() or '?'} ({span.name[:64]!r})"


def _gpus_for(
    span: Span, model: str, attrs: Mapping[str, Any], resource: Mapping[str, Any], m: SpanMapping
) -> tuple[GpuTarget, ...]:
    raw = attrs.get(m.gpu_attribute, resource.get(m.gpu_attribute))
    if raw is not None:
        targets: list[GpuTarget] = []
        for index in _gpu_indexes(raw):
            gpu = m.gpus.get(index)
            if gpu is None:
                known = ", ".join(str(i) for i in sorted(m.gpus)) or "none"
                raise ValueError(
                    f"{m.gpu_attribute}={raw!r}: GPU {index} is not on this host (GPUs: {known})"
                )
            targets.append(gpu)
        return tuple(sorted(set(targets), key=lambda g: g.gpu_index))
    replicas = [r for r in m.replicas if r.model == model and r.gpus]
    if not replicas:
        raise ValueError(f"model {model!r} is not in the deployment map and no {m.gpu_attribute}")
    # Several replicas of one model: spread by span id, deterministically (a retry lands on
    # the same GPU, so its event ids match).
    pick = int.from_bytes(span.span_id or b"\0", "big") % len(replicas)
    return replicas[pick].gpus


def _event(
    span: Span, trace_id: bytes, resource: Mapping[str, Any], m: SpanMapping
) -> list[dict[str, Any]] | None:
    """The span's events, None when it is not usage; ValueError says why it is invalid."""
    attrs = _attributes(span.attributes)
    for old, new in ((OLD_INPUT_TOKENS, INPUT_TOKENS), (OLD_OUTPUT_TOKENS, OUTPUT_TOKENS)):
        if new not in attrs and old in attrs:
            attrs[new] = attrs[old]
    if INPUT_TOKENS not in attrs and OUTPUT_TOKENS not in attrs:
        return None
    model = attrs.get(RESPONSE_MODEL) or attrs.get(REQUEST_MODEL)
    if not isinstance(model, str) or not model:
        raise ValueError(f"no {RESPONSE_MODEL} or {REQUEST_MODEL}")
    if span.end_time_unix_nano < span.start_time_unix_nano or not span.start_time_unix_nano:
        raise ValueError("end time before start time (or no start time)")
    host = resource.get(HOST_NAME)
    if not isinstance(host, str) or not _HOST_RE.fullmatch(host):
        host = m.host
    end = datetime.fromtimestamp(span.end_time_unix_nano / 1e9, UTC)
    event: dict[str, Any] = {
        "schema": TOKEN_USAGE_V1,
        "event_id": str(uuid.uuid5(_SPAN_NAMESPACE, trace_id.hex() + span.span_id.hex())),
        "ts": format_ts(end),
        "host": host,
        "gpu_uuid": "",
        "gpu_index": 0,
        "model": model,
        "input_tokens": _count(attrs.get(INPUT_TOKENS, 0), INPUT_TOKENS),
        "output_tokens": _count(attrs.get(OUTPUT_TOKENS, 0), OUTPUT_TOKENS),
        "latency_ms": (span.end_time_unix_nano - span.start_time_unix_nano) / 1e6,
        "status": "error" if span.status.code == Status.STATUS_CODE_ERROR else "ok",
    }
    if CACHE_READ in attrs:
        event["cache_read_input_tokens"] = _count(attrs[CACHE_READ], CACHE_READ)
    response_id = attrs.get(RESPONSE_ID)
    if isinstance(response_id, str) and response_id:
        event["request_id"] = response_id[:256]
    ttft = attrs.get(TTFT_S)
    if isinstance(ttft, int | float) and not isinstance(ttft, bool):
        event["ttft_ms"] = float(ttft) * 1000.0
    tenant = attrs.get(m.tenant_attribute, resource.get(m.tenant_attribute))
    if isinstance(tenant, str) and len(tenant) <= 128 and _TENANT_RE.fullmatch(tenant):
        event["tenant"] = tenant
    events = split_request(event, _gpus_for(span, model, attrs, resource, m))
    for out in events:
        try:
            validate(out)
        except ContractViolation as exc:
            raise ValueError(str(exc)) from None
    return events


def map_request(request: ExportTraceServiceRequest, mapping: SpanMapping) -> MapResult:
    """Every span of ``request``: usage spans become events, the rest are counted."""
    result = MapResult()
    for resource_spans in request.resource_spans:
        resource = _attributes(resource_spans.resource.attributes)
        for scope_spans in resource_spans.scope_spans:
            for span in scope_spans.spans:
                try:
                    events = _event(span, span.trace_id, resource, mapping)
                except ValueError as exc:
                    result.usage_spans += 1
                    result.reject(f"{_span_name(span)}: {exc}")
                    continue
                if events is None:
                    result.ignored += 1
                    continue
                result.usage_spans += 1
                result.events.extend(events)
    return result
