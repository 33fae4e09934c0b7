"""Put the fake ``nvidia-smi`` script on PATH and choose what it prints.

>>> smi = install_fake_smi(tmp_path, monkeypatch, stdout="query_multi_gpu.csv")
>>> GpuReader("host-a", pynvml_module=broken_nvml).read()   # runs tmp_path/bin/nvidia-smi
>>> smi.argv()                                              # what the reader passed
"""

from __future__ import annotations

import os
import shutil
import stat
from dataclasses import dataclass
from pathlib import Path

import pytest

__all__ = ["FAKES_DIR", "LOGS_DIR", "OUTPUTS_DIR", "FakeSmi", "hide_smi", "install_fake_smi"]

FAKES_DIR = Path(__file__).resolve().parent
OUTPUTS_DIR = FAKES_DIR / "smi_outputs"
LOGS_DIR = FAKES_DIR / "smi_logs"


@dataclass(frozen=True)
class FakeSmi:
    """Where the fake lives; ``argv()`` and ``pid()`` describe its last run."""

    bin_dir: Path
    argv_file: Path
    pid_file: Path

    def argv(self) -> list[str]:
        return self.argv_file.read_text().splitlines() if self.argv_file.exists() else []

    def pid(self) -> int | None:
        return int(self.pid_file.read_text()) if self.pid_file.exists() else None

    def still_running(self) -> bool:
        """Whether the last run's process still exists (a zombie counts: it was not reaped)."""
        pid = self.pid()
        if pid is None:
            return False
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        return True


def install_fake_smi(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    *,
    stdout: str | None = None,
    stderr: str | None = None,
    exit_code: int = 0,
    hang: bool = False,
) -> FakeSmi:
    """Copy the fake to ``tmp_path/bin/nvidia-smi``, put that first on PATH, configure it.

    ``stdout`` / ``stderr`` name files in ``smi_outputs/`` or are literal text (written to a
    temporary file) when no such file exists.
    """
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(exist_ok=True)
    target = bin_dir / "nvidia-smi"
    shutil.copyfile(FAKES_DIR / "nvidia-smi", target)
    target.chmod(target.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ.get('PATH', os.defpath)}")
    argv_file = tmp_path / "nvidia-smi.argv"
    monkeypatch.setenv("FAKE_NVIDIA_SMI_ARGV", str(argv_file))
    pid_file = tmp_path / "nvidia-smi.pid"
    monkeypatch.setenv("FAKE_NVIDIA_SMI_PID", str(pid_file))
    for variable, content in (
        ("FAKE_NVIDIA_SMI_STDOUT", stdout),
        ("FAKE_NVIDIA_SMI_STDERR", stderr),
    ):
        if content is None:
            monkeypatch.delenv(variable, raising=False)
            continue
        monkeypatch.setenv(variable, str(_content_file(tmp_path, variable, content)))
    monkeypatch.setenv("FAKE_NVIDIA_SMI_EXIT", str(exit_code))
    if hang:
        monkeypatch.setenv("FAKE_NVIDIA_SMI_HANG", "1")
    else:
        monkeypatch.delenv("FAKE_NVIDIA_SMI_HANG", raising=False)
    return FakeSmi(bin_dir=bin_dir, argv_file=argv_file, pid_file=pid_file)


def hide_smi(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """PATH with no nvidia-smi on it, even on a host that has the real one."""
    empty = tmp_path / "empty-path"
    empty.mkdir(exist_ok=True)
    monkeypatch.setenv("PATH", str(empty))


def _content_file(tmp_path: Path, variable: str, content: str) -> Path:
    recorded = OUTPUTS_DIR / content
    if "\n" not in content and recorded.is_file():
        return recorded
    path = tmp_path / f"{variable.lower()}.txt"
    path.write_text(content)
    return path
