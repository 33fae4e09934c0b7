"""Read GPUs by running ``nvidia-smi --query-gpu ... --format=csv,noheader,nounits``.

The fallback when NVML cannot be loaded from Python (no nvidia-ml-py, a container that ships
only the binary). nvidia-smi's text output is not guaranteed stable across drivers, so parsing
is strict about the shape (field count, numbers) and tolerant about the values a device cannot
report: every bracketed token (``[N/A]``, ``[Not Supported]``, ...) and bare ``N/A`` is null.
"""

from __future__ import annotations

import contextlib
import csv
import os
import re
import signal
import subprocess
from collections.abc import Mapping
from typing import Final

from .exceptions import SourceUnavailable
from .records import MAX_GPU_INDEX, MAX_UUID_LEN, SOURCE_NVIDIA_SMI, GpuReading

__all__ = [
    "NULL_TOKENS",
    "QUERY_FIELDS",
    "SmiSource",
    "parse_smi_query",
    "parse_smi_value",
    "row_to_reading",
    "smi_command",
    "split_csv_line",
]

# The columns we ask for, in order; `power.limit` last so a log written without it (the
# replay format) is the same list minus its tail.
QUERY_FIELDS: Final = (
    "index",
    "uuid",
    "name",
    "utilization.gpu",
    "memory.used",
    "memory.total",
    "power.draw",
    "temperature.gpu",
    "clocks.sm",
    "power.limit",
)

# What nvidia-smi prints instead of a value. Any other "[...]" token is treated the same way:
# brackets are nvidia-smi's marker for "no value", and a new driver's new wording must not take
# a whole host's telemetry down.
NULL_TOKENS: Final = frozenset(
    {"[N/A]", "N/A", "[Not Supported]", "[Insufficient Permissions]", "[Unknown Error]"}
)

# nvidia-smi column -> contract field, for the metric columns.
_METRIC_COLUMNS: Final = {
    "utilization.gpu": "utilization_gpu_pct",
    "memory.used": "memory_used_mib",
    "memory.total": "memory_total_mib",
    "power.draw": "power_draw_w",
    "temperature.gpu": "temperature_gpu_c",
    "clocks.sm": "clock_sm_mhz",
}
_OPTIONAL_COLUMNS: Final = {"power.limit": "power_limit_w"}

# A number, optionally followed by the unit nvidia-smi prints with `--format=csv` (logs keep
# units; the live query asks for `nounits`). No nan/inf: those are garbage, not readings.
_NUMBER_RE: Final = re.compile(r"^(?P<num>[-+]?(?:\d+(?:\.\d*)?|\.\d+))(?:\s*(?:%|MiB|W|MHz|C))?$")
# Enough of stderr to name the problem without flooding a log line.
_MAX_DETAIL_CHARS: Final = 300
# After a timeout the process group is killed; this only bounds collecting what is left.
_REAP_TIMEOUT_S: Final = 2.0


def smi_command(executable: str = "nvidia-smi") -> list[str]:
    """The argv the reader runs."""
    return [
        executable,
        f"--query-gpu={','.join(QUERY_FIELDS)}",
        "--format=csv,noheader,nounits",
    ]


def split_csv_line(line: str) -> list[str]:
    """Split one nvidia-smi CSV line (``", "`` separated, never quoted in practice)."""
    return [field.strip() for field in next(csv.reader([line], skipinitialspace=True), [])]


def parse_smi_value(raw: str, column: str) -> float | None:
    """A number from an nvidia-smi cell, None for a no-value token; ValueError for garbage."""
    token = raw.strip()
    if token in NULL_TOKENS or (token.startswith("[") and token.endswith("]")):
        return None
    match = _NUMBER_RE.fullmatch(token)
    if match is None:
        raise ValueError(f"{column}: not a number: {raw!r}")
    number = match["num"]
    # Keep integers integral ("54" -> 54): nvidia-smi prints them so, and it reads better.
    return float(number) if "." in number else int(number)


def row_to_reading(row: Mapping[str, str]) -> GpuReading:
    """A reading from one row keyed by the ``QUERY_FIELDS`` names; ValueError names the cell.

    A metric column that is absent from ``row`` is null (listed as unsupported); an absent
    ``power.limit`` is left out of the event.
    """
    index_text = row.get("index", "").strip()
    if not index_text.isdigit() or int(index_text) > MAX_GPU_INDEX:
        raise ValueError(f"index: not a GPU index: {index_text!r}")
    uuid = row.get("uuid", "").strip()
    if not uuid or uuid in NULL_TOKENS or uuid.startswith("["):
        raise ValueError(f"uuid: missing GPU UUID: {uuid!r}")
    if len(uuid) > MAX_UUID_LEN:
        raise ValueError(f"uuid: longer than {MAX_UUID_LEN} characters: {uuid[:40]!r}...")
    name = row.get("name", "").strip()
    if not name or name in NULL_TOKENS:
        raise ValueError(f"name: missing GPU name: {name!r}")

    values: dict[str, float | None] = {}
    unsupported: list[str] = []
    for column, field in _METRIC_COLUMNS.items():
        raw = row.get(column)
        values[field] = None if raw is None else parse_smi_value(raw, column)
        if values[field] is None:
            unsupported.append(field)
    for column, field in _OPTIONAL_COLUMNS.items():
        raw = row.get(column)
        if raw is None:
            continue
        values[field] = parse_smi_value(raw, column)
        if values[field] is None:
            unsupported.append(field)
    return GpuReading(
        gpu_index=int(index_text),
        gpu_uuid=uuid,
        gpu_name=name,
        utilization_gpu_pct=values["utilization_gpu_pct"],
        memory_used_mib=values["memory_used_mib"],
        memory_total_mib=values["memory_total_mib"],
        power_draw_w=values["power_draw_w"],
        temperature_gpu_c=values["temperature_gpu_c"],
        clock_sm_mhz=values["clock_sm_mhz"],
        power_limit_w=values.get("power_limit_w"),
        unsupported_fields=tuple(unsupported),
    )


def parse_smi_query(text: str) -> list[GpuReading]:
    """Parse the output of ``smi_command()``: one line per GPU (or MIG device).

    ValueError, naming the line, for anything that is not that shape.
    """
    readings: list[GpuReading] = []
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        fields = split_csv_line(line)
        if len(fields) != len(QUERY_FIELDS):
            raise ValueError(
                f"line {number}: expected {len(QUERY_FIELDS)} fields, got {len(fields)}: "
                f"{_clip(line)!r}"
            )
        try:
            readings.append(row_to_reading(dict(zip(QUERY_FIELDS, fields, strict=True))))
        except ValueError as exc:
            raise ValueError(f"line {number}: {exc}") from None
    if not readings:
        raise ValueError("no GPU rows in the output")
    return readings


def _clip(text: str) -> str:
    text = " ".join(text.split())
    return text if len(text) <= _MAX_DETAIL_CHARS else text[:_MAX_DETAIL_CHARS] + "..."


class SmiSource:
    """GPU readings from the nvidia-smi binary, run with a timeout on every read."""

    def __init__(self, executable: str = "nvidia-smi", timeout_s: float = 5.0) -> None:
        if timeout_s <= 0:
            raise ValueError(f"nvidia-smi timeout must be positive, got {timeout_s}")
        self._executable = executable
        self._timeout_s = timeout_s

    @property
    def name(self) -> str:
        return SOURCE_NVIDIA_SMI

    def _unavailable(self, reason: str) -> SourceUnavailable:
        return SourceUnavailable(self.name, reason)

    def read(self) -> list[GpuReading]:
        output = self._run()
        try:
            return parse_smi_query(output)
        except ValueError as exc:
            raise self._unavailable(f"cannot parse nvidia-smi output: {exc}") from exc

    def close(self) -> None:
        """Nothing held between reads."""

    def _run(self) -> str:
        argv = smi_command(self._executable)
        try:
            # A new session makes the child a process-group leader, so a timeout can kill it
            # together with anything it started (wrapper scripts), leaving no stray process.
            proc = subprocess.Popen(
                argv,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
                encoding="utf-8",
                errors="replace",
                start_new_session=True,
            )
        except FileNotFoundError as exc:
            raise self._unavailable(f"{self._executable} not found (binary missing)") from exc
        except PermissionError as exc:
            raise self._unavailable(f"no permission to execute {self._executable}") from exc
        except OSError as exc:
            raise self._unavailable(f"cannot run {self._executable}: {exc}") from exc
        try:
            stdout, stderr = proc.communicate(timeout=self._timeout_s)
        except subprocess.TimeoutExpired:
            self._kill(proc)
            raise self._unavailable(
                f"{self._executable} timed out after {self._timeout_s:g}s"
            ) from None
        if proc.returncode != 0:
            # nvidia-smi writes some failures ("couldn't communicate with the NVIDIA driver")
            # to stdout, so fall back to it when stderr is empty.
            detail = _clip(stderr.strip() or stdout.strip() or "no output")
            raise self._unavailable(
                f"{self._executable} exited with status {proc.returncode}: {detail}"
            )
        return stdout

    @staticmethod
    def _kill(proc: subprocess.Popen[str]) -> None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, signal.SIGKILL)
        try:
            proc.communicate(timeout=_REAP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            # Something outside the group still holds the pipes; stop waiting for it.
            for stream in (proc.stdout, proc.stderr):
                if stream is not None:
                    stream.close()
            proc.wait()
