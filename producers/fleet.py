"""Fleet shape: which model runs on which GPUs of this host, and how a request is attributed.

    >>> entries = parse_deployment("llama-3.1-70b=0,1;llama-3.1-8b=2;mistral-7b=3")
    >>> replicas = resolve(entries, gpus)          # SettingsError lists every problem
    >>> [e["gpu_index"] for e in split_request(event, replicas[0].gpus)]
    [0, 1]

A **deployment map** (``PRODUCER_DEPLOYMENT`` / ``--deployment``) is ``model=i[,i...]`` entries
separated by ``;``, the numbers being ``gpu_index`` values of this host. One entry is one
*replica*: a model on a group of GPUs (several GPUs = tensor parallel). The same model may be
listed again on other GPUs (another replica; its requests alternate between replicas). When it
is unset, each GPU serves one model, round-robin over ``PRODUCER_MODELS`` (GPU 0 the first
model, GPU 1 the second, ... wrapping around).

**Tensor-parallel attribution** (:func:`split_request`): a request served by a replica on N GPUs
becomes N token.usage.v1 events, one per GPU of the group, in gpu_index order; input, output and
cached tokens are split evenly with the remainder going to the first GPUs (so the sums are
exact); ``tp_rank`` (0..N-1) and ``tp_size`` (N) say which share it is, so the request is
counted once (by rank 0); ``request_id``, ``model``, ``ts``, latencies and status are the
request's; each event_id is ``uuid5(request event_id, gpu_uuid)``, so replaying the same
request re-sends the same ids. Each GPU then counts its share in its own throughput and is
charged its own price: the group's price is charged to the model's tokens, and no GPU of the
group looks idle.

Pure: no I/O.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final, NamedTuple

from producers.exceptions import SettingsError
from producers.traffic import GpuTarget

__all__ = [
    "DeploymentEntry",
    "Replica",
    "default_deployment",
    "parse_deployment",
    "resolve",
    "split_request",
]

# Token fields divided between the GPUs of a tensor-parallel group.
_SPLIT_FIELDS: Final = ("input_tokens", "output_tokens", "cache_read_input_tokens")


class DeploymentEntry(NamedTuple):
    """One entry of the deployment map as written: a model and the gpu_index values it runs on."""

    model: str
    gpu_indexes: tuple[int, ...]


@dataclass(frozen=True, slots=True)
class Replica:
    """One model served by a group of this host's GPUs (more than one = tensor parallel)."""

    model: str
    gpus: tuple[GpuTarget, ...]


def parse_deployment(text: str) -> list[DeploymentEntry]:
    """``model=i[,i...];...`` into entries; ValueError names every malformed entry.

    The model name is everything before the last ``=`` (it may contain ``:`` or ``/``);
    empty entries (a trailing ``;``) are ignored.
    """
    entries: list[DeploymentEntry] = []
    errors: list[str] = []
    for raw in text.split(";"):
        item = raw.strip()
        if not item:
            continue
        name, sep, tail = item.rpartition("=")
        name = name.strip()
        if not sep:
            errors.append(f"{item!r}: must be model=gpu_index[,gpu_index...]")
            continue
        if not name:
            errors.append(f"{item!r}: empty model name")
        indexes: list[int] = []
        for part in tail.split(","):
            text_index = part.strip()
            if not text_index.isdigit() or not text_index.isascii():
                errors.append(f"{item!r}: GPU index {text_index!r} is not a number >= 0")
                continue
            indexes.append(int(text_index))
        if len(set(indexes)) != len(indexes):
            errors.append(f"{item!r}: lists a GPU twice")
        if name and indexes:
            entries.append(DeploymentEntry(name, tuple(indexes)))
    if errors:
        raise ValueError("; ".join(errors))
    if not entries:
        raise ValueError("must list at least one model=gpu_index[,gpu_index...]")
    return entries


def default_deployment(models: Sequence[str], gpus: Sequence[GpuTarget]) -> list[DeploymentEntry]:
    """Each GPU serves one model, round-robin over ``models`` in gpu_index order."""
    ordered = sorted(gpus, key=lambda g: (g.gpu_index, g.gpu_uuid))
    return [
        DeploymentEntry(models[i % len(models)], (gpu.gpu_index,)) for i, gpu in enumerate(ordered)
    ]


def resolve(
    entries: Sequence[DeploymentEntry], gpus: Sequence[GpuTarget], *, setting: str = ""
) -> tuple[Replica, ...]:
    """The entries bound to this host's GPUs; SettingsError lists every problem at once.

    Problems: an index the GPU reader did not report, a GPU in two entries.
    """
    where = setting or "PRODUCER_DEPLOYMENT"
    by_index = {gpu.gpu_index: gpu for gpu in gpus}
    known = ", ".join(str(i) for i in sorted(by_index)) or "none"
    owner: dict[int, str] = {}
    problems: list[str] = []
    replicas: list[Replica] = []
    for model, indexes in entries:
        group: list[GpuTarget] = []
        for index in indexes:
            gpu = by_index.get(index)
            if gpu is None:
                problems.append(
                    f"{where}[{model!r}]: GPU {index} is not on this host (GPUs: {known})"
                )
                continue
            if index in owner:
                problems.append(f"{where}[{model!r}]: GPU {index} already serves {owner[index]!r}")
                continue
            owner[index] = model
            group.append(gpu)
        replicas.append(Replica(model, tuple(sorted(group, key=lambda g: g.gpu_index))))
    if problems:
        raise SettingsError("\n".join(problems))
    return tuple(replicas)


def _shares(total: int, parts: int) -> list[int]:
    base, extra = divmod(total, parts)
    return [base + 1 if i < extra else base for i in range(parts)]


def split_request(event: Mapping[str, Any], gpus: Sequence[GpuTarget]) -> list[dict[str, Any]]:
    """One token.usage.v1 per GPU of ``gpus`` for the request ``event`` (see the module doc).

    ``event`` is the whole request's event (its gpu fields are replaced); one GPU gives one
    event, unchanged but for the GPU fields.
    """
    if not gpus:
        raise ValueError("a request needs at least one GPU")
    if len(gpus) == 1:
        out = dict(event)
        out["gpu_uuid"], out["gpu_index"] = gpus[0].gpu_uuid, gpus[0].gpu_index
        return [out]
    shares = {name: _shares(int(event[name]), len(gpus)) for name in _SPLIT_FIELDS if name in event}
    request_uuid = uuid.UUID(str(event["event_id"]))
    events: list[dict[str, Any]] = []
    for i, gpu in enumerate(gpus):
        out = dict(event)
        out["event_id"] = str(uuid.uuid5(request_uuid, gpu.gpu_uuid))
        out["gpu_uuid"], out["gpu_index"] = gpu.gpu_uuid, gpu.gpu_index
        for name, parts in shares.items():
            out[name] = parts[i]
        out["tp_rank"], out["tp_size"] = i, len(gpus)
        events.append(out)
    return events
