"""A fake ``pynvml`` module: the real error classes and codes, devices from plain data.

    >>> nvml = FakeNvml([FakeGpu.a100(0), FakeGpu.rtx3090(1)])
    >>> GpuReader("host-a", pynvml_module=nvml.module).read()

The exception hierarchy and NVML_* constants are taken from the installed nvidia-ml-py, so
the reader under test meets the same ``NVMLError_*`` classes (and ``.value`` codes) it meets on
a GPU host. Only the device calls are faked.
"""

from __future__ import annotations

import types
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import pynvml as real_pynvml

__all__ = ["FakeGpu", "FakeNvml", "nvml_error"]

MIB = 1024 * 1024

# Every device call the reader may make; `FakeGpu.errors` and `FakeNvml.missing` name these.
DEVICE_CALLS = (
    "nvmlDeviceGetHandleByIndex",
    "nvmlDeviceGetName",
    "nvmlDeviceGetUUID",
    "nvmlDeviceGetUtilizationRates",
    "nvmlDeviceGetMemoryInfo",
    "nvmlDeviceGetPowerUsage",
    "nvmlDeviceGetTemperature",
    "nvmlDeviceGetClockInfo",
    "nvmlDeviceGetEnforcedPowerLimit",
    "nvmlDeviceGetTotalEnergyConsumption",
)


def nvml_error(code: int) -> Exception:
    """The exception the real bindings raise for ``code`` (e.g. NVMLError_NotSupported)."""
    error: Exception = real_pynvml.NVMLError(code)
    return error


@dataclass
class FakeGpu:
    """One device; values in NVML's own units (bytes, milliwatts, millijoules)."""

    name: str | bytes
    uuid: str | bytes
    utilization_pct: int = 50
    memory_used_bytes: int = 8192 * MIB
    memory_total_bytes: int = 40960 * MIB
    power_mw: int = 250_000
    temperature_c: int = 55
    clock_sm_mhz: int = 1410
    power_limit_mw: int = 400_000
    energy_mj: int = 123_456_789
    # NVML function name -> NVML error code that call raises for this device.
    errors: dict[str, int] = field(default_factory=dict)

    @classmethod
    def a100(cls, index: int = 0, **changes: Any) -> FakeGpu:
        values: dict[str, Any] = {
            "name": "NVIDIA A100-SXM4-40GB",
            "uuid": f"GPU-5f1c2d3e-aaaa-bbbb-cccc-0123456789a{index}",
            "utilization_pct": 87,
            "memory_used_bytes": 30120 * MIB,
            "memory_total_bytes": 40960 * MIB,
            "power_mw": 312_451,
            "temperature_c": 64,
            "clock_sm_mhz": 1410,
            "power_limit_mw": 400_000,
            "energy_mj": 987_654_321,
        }
        values.update(changes)
        return cls(**values)

    @classmethod
    def rtx3090(cls, index: int = 1, **changes: Any) -> FakeGpu:
        values: dict[str, Any] = {
            "name": "NVIDIA GeForce RTX 3090",
            "uuid": f"GPU-0d9e8f7a-1111-2222-3333-44445555666{index}",
            "utilization_pct": 41,
            "memory_used_bytes": 11000 * MIB + 512 * 1024,
            "memory_total_bytes": 24576 * MIB,
            "power_mw": 201_300,
            "temperature_c": 58,
            "clock_sm_mhz": 1695,
            "power_limit_mw": 350_000,
            "energy_mj": 45_000_000,
        }
        values.update(changes)
        return cls(**values)


@dataclass
class _Handle:
    index: int


class FakeNvml:
    """State of one fake NVML and the module object (``.module``) that exposes it."""

    def __init__(
        self,
        gpus: Iterable[FakeGpu],
        *,
        init_error: int | None = None,
        count_error: int | None = None,
        missing: Iterable[str] = (),
    ) -> None:
        self.gpus = list(gpus)
        self.init_error = init_error  # nvmlInit raises this code (LibraryNotFound, ...)
        self.count_error = count_error
        self.init_calls = 0
        self.shutdown_calls = 0
        self.initialised = False
        self.calls: list[str] = []
        self.module = self._build(set(missing))

    def lose(self, index: int) -> None:
        """Make every call on GPU ``index`` fail with GpuIsLost, as a device falling off the bus."""
        self.gpus[index].errors = dict.fromkeys(DEVICE_CALLS, real_pynvml.NVML_ERROR_GPU_IS_LOST)

    # -- the fake module's functions ---------------------------------------------------

    def _init(self) -> None:
        self.init_calls += 1
        if self.init_error is not None:
            raise nvml_error(self.init_error)
        self.initialised = True

    def _shutdown(self) -> None:
        self.shutdown_calls += 1
        if not self.initialised:
            raise nvml_error(real_pynvml.NVML_ERROR_UNINITIALIZED)
        self.initialised = False

    def _count(self) -> int:
        self._check_initialised()
        if self.count_error is not None:
            raise nvml_error(self.count_error)
        return len(self.gpus)

    def _check_initialised(self) -> None:
        if not self.initialised:
            raise nvml_error(real_pynvml.NVML_ERROR_UNINITIALIZED)

    def _device_call(self, name: str, result: Callable[[FakeGpu], Any]) -> Callable[..., Any]:
        def call(handle: _Handle, *args: Any) -> Any:
            self._check_initialised()
            self.calls.append(name)
            gpu = self.gpus[handle.index]
            if name in gpu.errors:
                raise nvml_error(gpu.errors[name])
            if name == "nvmlDeviceGetTemperature" and args != (real_pynvml.NVML_TEMPERATURE_GPU,):
                raise nvml_error(real_pynvml.NVML_ERROR_INVALID_ARGUMENT)
            if name == "nvmlDeviceGetClockInfo" and args != (real_pynvml.NVML_CLOCK_SM,):
                # Any other clock would be a wrong reading, not an error: make the test fail.
                raise nvml_error(real_pynvml.NVML_ERROR_INVALID_ARGUMENT)
            return result(gpu)

        return call

    def _handle_by_index(self, index: int) -> _Handle:
        self._check_initialised()
        self.calls.append("nvmlDeviceGetHandleByIndex")
        if not 0 <= index < len(self.gpus):
            raise nvml_error(real_pynvml.NVML_ERROR_INVALID_ARGUMENT)
        code = self.gpus[index].errors.get("nvmlDeviceGetHandleByIndex")
        if code is not None:
            raise nvml_error(code)
        return _Handle(index)

    def _build(self, missing: set[str]) -> types.ModuleType:
        module = types.ModuleType("pynvml", "fake pynvml for tests")
        # The real exception hierarchy and constants.
        for attr in dir(real_pynvml):
            if attr.startswith(("NVMLError", "NVML_")):
                setattr(module, attr, getattr(real_pynvml, attr))
        functions: dict[str, Callable[..., Any]] = {
            "nvmlInit": self._init,
            "nvmlShutdown": self._shutdown,
            "nvmlDeviceGetCount": self._count,
            "nvmlDeviceGetHandleByIndex": self._handle_by_index,
            "nvmlDeviceGetName": self._device_call("nvmlDeviceGetName", lambda g: g.name),
            "nvmlDeviceGetUUID": self._device_call("nvmlDeviceGetUUID", lambda g: g.uuid),
            "nvmlDeviceGetUtilizationRates": self._device_call(
                "nvmlDeviceGetUtilizationRates",
                lambda g: types.SimpleNamespace(gpu=g.utilization_pct, memory=20),
            ),
            "nvmlDeviceGetMemoryInfo": self._device_call(
                "nvmlDeviceGetMemoryInfo",
                lambda g: types.SimpleNamespace(
                    total=g.memory_total_bytes,
                    free=g.memory_total_bytes - g.memory_used_bytes,
                    used=g.memory_used_bytes,
                ),
            ),
            "nvmlDeviceGetPowerUsage": self._device_call(
                "nvmlDeviceGetPowerUsage", lambda g: g.power_mw
            ),
            "nvmlDeviceGetTemperature": self._device_call(
                "nvmlDeviceGetTemperature", lambda g: g.temperature_c
            ),
            "nvmlDeviceGetClockInfo": self._device_call(
                "nvmlDeviceGetClockInfo", lambda g: g.clock_sm_mhz
            ),
            "nvmlDeviceGetEnforcedPowerLimit": self._device_call(
                "nvmlDeviceGetEnforcedPowerLimit", lambda g: g.power_limit_mw
            ),
            "nvmlDeviceGetTotalEnergyConsumption": self._device_call(
                "nvmlDeviceGetTotalEnergyConsumption", lambda g: g.energy_mj
            ),
        }
        for name, function in functions.items():
            if name not in missing:  # an old nvidia-ml-py that lacks the call
                setattr(module, name, function)
        return module
