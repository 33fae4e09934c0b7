"""Read GPUs through NVML (the nvidia-ml-py bindings, module ``pynvml``).

NVML is the first choice: it is what nvidia-smi itself is built on, it is backwards
compatible across driver releases (nvidia-smi's text output is not), and it costs no process
start per sample. The module is imported lazily so that hosts without nvidia-ml-py still get
the nvidia-smi and seed sources; tests pass a fake module instead.
"""

from __future__ import annotations

import contextlib
import importlib
from collections.abc import Callable
from types import ModuleType
from typing import Any, Final

from .exceptions import SourceUnavailable
from .records import MAX_UUID_LEN, SOURCE_NVML, GpuReading

__all__ = ["NvmlSource", "describe_nvml_error"]

# NVML return codes are part of the C ABI (nvml.h) and never change between releases. We compare
# the error's `.value` with them rather than rely on the NVMLError_* class names, which old
# nvidia-ml-py releases do not all define.
NVML_ERROR_UNINITIALIZED: Final = 1
NVML_ERROR_NOT_SUPPORTED: Final = 3
NVML_ERROR_NO_PERMISSION: Final = 4
NVML_ERROR_DRIVER_NOT_LOADED: Final = 9
NVML_ERROR_LIBRARY_NOT_FOUND: Final = 12
NVML_ERROR_FUNCTION_NOT_FOUND: Final = 13
NVML_ERROR_GPU_IS_LOST: Final = 15
NVML_ERROR_RESET_REQUIRED: Final = 16
NVML_ERROR_LIB_RM_VERSION_MISMATCH: Final = 18
NVML_ERROR_UNKNOWN: Final = 999

# Codes that mean "this one value is not available on this device", not "NVML is broken":
# the value becomes null and is named in unsupported_fields. FUNCTION_NOT_FOUND is an older
# driver lacking a newer call (e.g. total energy); UNKNOWN matches nvidia-smi's "[Unknown Error]".
_FIELD_UNAVAILABLE_CODES: Final = frozenset(
    {
        NVML_ERROR_NOT_SUPPORTED,
        NVML_ERROR_NO_PERMISSION,
        NVML_ERROR_FUNCTION_NOT_FOUND,
        NVML_ERROR_UNKNOWN,
    }
)

_REASONS: Final = {
    NVML_ERROR_LIBRARY_NOT_FOUND: "NVML shared library not found (libnvidia-ml.so.1)",
    NVML_ERROR_DRIVER_NOT_LOADED: "NVIDIA driver not loaded",
    NVML_ERROR_NO_PERMISSION: "no permission to access the GPU devices (/dev/nvidia*)",
    NVML_ERROR_GPU_IS_LOST: "GPU is lost (fell off the bus or stopped responding)",
    NVML_ERROR_RESET_REQUIRED: "GPU requires a reset",
    NVML_ERROR_LIB_RM_VERSION_MISMATCH: "NVML library and kernel driver versions differ",
    NVML_ERROR_UNINITIALIZED: "NVML is not initialised (shut down elsewhere in the process?)",
}

# nvmlDeviceGetTemperature sensor 0 = NVML_TEMPERATURE_GPU; nvmlDeviceGetClockInfo type
# 1 = NVML_CLOCK_SM. Literal values so a fake module need not define the constants.
_TEMPERATURE_GPU: Final = 0
_CLOCK_SM: Final = 1
_BYTES_PER_MIB: Final = 1024 * 1024


def _code(exc: BaseException) -> int | None:
    value = getattr(exc, "value", None)
    return value if isinstance(value, int) else None


def describe_nvml_error(exc: BaseException) -> str:
    """A specific, human reason for an NVML error (falls back to NVML's own text and code)."""
    code = _code(exc)
    if code in _REASONS:
        return _REASONS[code]
    try:
        text = str(exc)
    except Exception:  # str() of an NVMLError may call into the library, which may be gone
        text = type(exc).__name__
    return f"NVML error: {text} (code {code})" if code is not None else f"NVML error: {text}"


def _text(value: Any) -> str:
    # nvidia-ml-py < 11.515 returns bytes from GetName/GetUUID; newer releases return str.
    if isinstance(value, bytes):
        return value.decode("utf-8", errors="replace").strip("\x00").strip()
    return str(value).strip()


class NvmlSource:
    """GPU readings from NVML; raises SourceUnavailable with the specific reason it cannot."""

    def __init__(self, module: ModuleType | None = None) -> None:
        self._module = module
        self._nvml: Any = None  # the initialised module, once nvmlInit succeeded

    @property
    def name(self) -> str:
        return SOURCE_NVML

    def _unavailable(self, reason: str) -> SourceUnavailable:
        return SourceUnavailable(self.name, reason)

    def _error_type(self, nvml: Any) -> type[BaseException]:
        error_type = getattr(nvml, "NVMLError", None)
        if isinstance(error_type, type) and issubclass(error_type, BaseException):
            return error_type
        raise self._unavailable("the pynvml module defines no NVMLError class")

    def _initialised(self) -> Any:
        if self._nvml is not None:
            return self._nvml
        nvml: Any = self._module
        if nvml is None:
            try:
                nvml = importlib.import_module("pynvml")
            except ImportError as exc:
                raise self._unavailable(
                    "nvidia-ml-py is not installed (cannot import pynvml)"
                ) from exc
        error_type = self._error_type(nvml)
        try:
            nvml.nvmlInit()
        except error_type as exc:
            raise self._unavailable(describe_nvml_error(exc)) from exc
        self._nvml = nvml
        return nvml

    def read(self) -> list[GpuReading]:
        nvml = self._initialised()
        error_type = self._error_type(nvml)
        try:
            count = int(nvml.nvmlDeviceGetCount())
        except error_type as exc:
            raise self._unavailable(f"cannot count GPUs: {describe_nvml_error(exc)}") from exc
        if count <= 0:
            raise self._unavailable("NVML reports no GPUs")
        return [self._read_one(nvml, error_type, index) for index in range(count)]

    def _read_one(self, nvml: Any, error_type: type[BaseException], index: int) -> GpuReading:
        unsupported: list[str] = []

        def value(field: str, call: Callable[[], Any]) -> Any:
            """The call's result; None (field named unsupported) if only this value is missing."""
            try:
                return call()
            except AttributeError:
                # The installed nvidia-ml-py predates this call: the value is simply unavailable.
                unsupported.append(field)
                return None
            except error_type as exc:
                if _code(exc) in _FIELD_UNAVAILABLE_CODES:
                    unsupported.append(field)
                    return None
                raise self._unavailable(f"GPU {index}: {describe_nvml_error(exc)}") from exc

        try:
            handle = nvml.nvmlDeviceGetHandleByIndex(index)
            uuid = _text(nvml.nvmlDeviceGetUUID(handle))
            name = _text(nvml.nvmlDeviceGetName(handle))
        except error_type as exc:
            raise self._unavailable(f"GPU {index}: {describe_nvml_error(exc)}") from exc
        if not uuid or len(uuid) > MAX_UUID_LEN:
            raise self._unavailable(f"GPU {index}: NVML returned an unusable UUID {uuid!r}")

        rates = value("utilization_gpu_pct", lambda: nvml.nvmlDeviceGetUtilizationRates(handle))
        memory = value("memory_used_mib", lambda: nvml.nvmlDeviceGetMemoryInfo(handle))
        if memory is None:
            unsupported.append("memory_total_mib")  # one call reports both used and total
        power_mw = value("power_draw_w", lambda: nvml.nvmlDeviceGetPowerUsage(handle))
        temperature = value(
            "temperature_gpu_c", lambda: nvml.nvmlDeviceGetTemperature(handle, _TEMPERATURE_GPU)
        )
        clock = value("clock_sm_mhz", lambda: nvml.nvmlDeviceGetClockInfo(handle, _CLOCK_SM))
        limit_mw = value("power_limit_w", lambda: nvml.nvmlDeviceGetEnforcedPowerLimit(handle))
        energy = value("energy_total_mj", lambda: nvml.nvmlDeviceGetTotalEnergyConsumption(handle))
        return GpuReading(
            gpu_index=index,
            gpu_uuid=uuid,
            gpu_name=name or "unknown NVIDIA GPU",
            utilization_gpu_pct=None if rates is None else float(rates.gpu),
            memory_used_mib=None if memory is None else _mib(memory.used),
            memory_total_mib=None if memory is None else _mib(memory.total),
            power_draw_w=None if power_mw is None else power_mw / 1000,
            temperature_gpu_c=None if temperature is None else float(temperature),
            clock_sm_mhz=None if clock is None else float(clock),
            power_limit_w=None if limit_mw is None else limit_mw / 1000,
            energy_total_mj=None if energy is None else int(energy),
            unsupported_fields=tuple(unsupported),
        )

    def close(self) -> None:
        nvml, self._nvml = self._nvml, None
        if nvml is not None:
            # Best effort: the driver may already be gone (that is often why we are closing).
            with contextlib.suppress(Exception):
                nvml.nvmlShutdown()


def _mib(size_bytes: Any) -> float:
    # Two decimals: MiB is nvidia-smi's unit; finer than 10 KiB means nothing on a dashboard.
    return round(int(size_bytes) / _BYTES_PER_MIB, 2)
