"""Processes the dev tools start: spawn, know again, stop by PID, reap.

    started = spawn(["java", ...], log=state / "kafka.log", banner="starting kafka")
    ...                                   # save started.id (PID + start time) in a state file
    stop(ProcessId(pid, starttime), grace_s=30, cmdline=recorded)   # later, maybe elsewhere

A PID alone is not an identity: once our process exits, the kernel may give its PID to anything.
PID + start time (clock ticks since boot, ``/proc/PID/stat``) names one process for the life of
the machine, so a saved ``ProcessId`` is checked before every signal and a stale one is never
signalled. Optionally the exact command line is compared too. Nothing here looks processes up
by name: we stop only what we started, by PID (no pkill/killall).

Linux only (``/proc``), like the local stack.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from devtools.waiting import WaitTimeout, wait_for

__all__ = [
    "ProcessError",
    "ProcessId",
    "Spawned",
    "exit_note",
    "kill",
    "pid_is_gone",
    "reap",
    "spawn",
    "stop",
    "terminate",
    "wait_gone",
]

# After SIGKILL the kernel tears the process down in milliseconds; this bound only catches a
# process stuck in uninterruptible sleep (D state), which nothing here can fix anyway.
KILL_WAIT_S: Final = 10.0
# /proc/PID/cmdline reads empty for a moment while a new process sets up its memory (seen with
# FerretDB right after its start); how long an empty read means "ask again".
CMDLINE_SETTLE_S: Final = 1.0

# Popen objects of the processes this interpreter spawned: polling them reaps our own children
# (no zombie left in our process table, no "still running" ResourceWarning at exit).
_CHILDREN: dict[int, subprocess.Popen[bytes]] = {}
_EXIT_CODES: dict[int, int] = {}


class ProcessError(Exception):
    """A process could not be started or stopped; the message says which and why."""


def _stat(pid: int) -> tuple[str, int] | None:
    """(state letter, start time in clock ticks) of *pid*, or None if there is no such process."""
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # The command name (field 2) may contain spaces and parentheses: split after the last ")".
    fields = raw[raw.rindex(")") + 2 :].split()
    return fields[0], int(fields[19])


def _cmdline(pid: int) -> list[str]:
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return []
    return [part.decode("utf-8", "replace") for part in raw.split(b"\0") if part]


def reap(pid: int) -> None:
    """Collect the exit status of *pid* if this interpreter spawned it and it has exited."""
    child = _CHILDREN.get(pid)
    if child is not None and child.poll() is not None:
        _EXIT_CODES[pid] = child.returncode
        del _CHILDREN[pid]


def exit_note(pid: int) -> str:
    """' (exit status N)' / ' (killed by SIGX)' for a child of this interpreter, else ''."""
    reap(pid)
    code = _EXIT_CODES.get(pid)
    if code is None:
        return ""
    if code < 0:
        with contextlib.suppress(ValueError):
            return f" (killed by {signal.Signals(-code).name})"
    return f" (exit status {code})"


def pid_is_gone(pid: int) -> bool:
    """True if no process *pid* runs (it does not exist, or is a zombie awaiting its reaper).

    PID 1 of a container may never reap orphans; a zombie holds no memory and no port.
    """
    reap(pid)
    stat = _stat(pid)
    return stat is None or stat[0] == "Z"


@dataclass(frozen=True)
class ProcessId:
    """One process for the life of the machine: its PID and its start time in clock ticks."""

    pid: int
    starttime: int

    @classmethod
    def of(cls, pid: int) -> ProcessId | None:
        """The running process *pid* (None if there is none, or only its zombie)."""
        stat = _stat(pid)
        return None if stat is None or stat[0] == "Z" else cls(pid, stat[1])

    def alive(self) -> bool:
        """This very process still runs (a zombie counts as gone)."""
        reap(self.pid)
        stat = _stat(self.pid)
        return stat is not None and stat[0] != "Z" and stat[1] == self.starttime

    def cmdline(self) -> list[str]:
        return _cmdline(self.pid)

    def runs(self, cmdline: Sequence[str] | None = None) -> bool:
        """Alive and, if *cmdline* is given, still running exactly that command."""
        if not self.alive():
            return False
        if cmdline is None:
            return True
        expected = list(cmdline)
        with contextlib.suppress(WaitTimeout):
            seen = wait_for(f"pid {self.pid}'s command line", self.cmdline, CMDLINE_SETTLE_S, 0.05)
            return seen == expected
        # Still unreadable: PID plus start time identify it alone.
        return self.alive()


@dataclass(frozen=True)
class Spawned:
    """A process spawn() started: its identity, exact command line and Popen handle."""

    id: ProcessId
    cmdline: list[str]
    popen: subprocess.Popen[bytes]

    @property
    def pid(self) -> int:
        return self.id.pid


def spawn(
    cmd: Sequence[str],
    *,
    log: Path,
    cwd: Path | None = None,
    env: Mapping[str, str] | None = None,
    new_session: bool = True,
    banner: str | None = None,
) -> Spawned:
    """Start *cmd* with stdin closed and stdout + stderr appended to *log*.

    *new_session* (the default) puts it in its own session: it outlives the shell, test run or
    command that started it and must be stopped by PID. *banner* is written to the log first
    (a line a reader of the log can find the start of this run by).
    """
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "ab") as out:
        if banner is not None:
            out.write(f"\n{banner}\n".encode())
            out.flush()
        proc = subprocess.Popen(
            list(cmd),
            cwd=cwd,
            env=dict(env) if env is not None else None,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=new_session,
            close_fds=True,
        )
    _CHILDREN[proc.pid] = proc
    # Popen returns once exec succeeded, and an unreaped child keeps its /proc entry (as a
    # zombie if it died at once): the start time is there. A zombie is recorded as is, so
    # that the caller's readiness wait reports "exited (exit status N)" with the log.
    stat = _stat(proc.pid)
    if stat is None:
        raise ProcessError(f"{cmd[0]} (pid {proc.pid}) vanished right after its start")
    return Spawned(ProcessId(proc.pid, stat[1]), list(cmd), proc)


def terminate(process: ProcessId, cmdline: Sequence[str] | None = None) -> bool:
    """SIGTERM *process* if it is still the one we started; False if it is gone (or not ours)."""
    return _signal(process, signal.SIGTERM, cmdline)


def _signal(process: ProcessId, sig: signal.Signals, cmdline: Sequence[str] | None) -> bool:
    if not process.runs(cmdline):
        return False
    try:
        os.kill(process.pid, sig)
    except ProcessLookupError:
        return False
    return True


def wait_gone(process: ProcessId, timeout_s: float) -> bool:
    """Wait until *process* has exited; False if it still runs after *timeout_s*."""
    try:
        wait_for(f"pid {process.pid} to exit", lambda: not process.alive(), timeout_s, 0.1)
    except WaitTimeout:
        return False
    return True


def stop(
    process: ProcessId,
    *,
    grace_s: float,
    cmdline: Sequence[str] | None = None,
    signalled: bool = False,
) -> str:
    """Stop a process we started: SIGTERM, wait *grace_s*, then SIGKILL.

    Returns "not running", "stopped (SIGTERM)" or "killed (SIGKILL after N s)"; a process that
    is no longer ours (PID reused, other command line) is never signalled. *signalled*: the
    caller already sent SIGTERM (to stop several processes in parallel).
    Raises ProcessError if it survives SIGKILL.
    """
    if not signalled and not terminate(process, cmdline):
        return "not running"
    if wait_gone(process, grace_s):
        return "stopped (SIGTERM)"
    _signal(process, signal.SIGKILL, cmdline)
    if not wait_gone(process, KILL_WAIT_S):
        raise ProcessError(f"pid {process.pid} survived SIGKILL")
    return f"killed (SIGKILL after {grace_s:.0f} s)"


def kill(process: ProcessId, cmdline: Sequence[str] | None = None) -> bool:
    """SIGKILL *process* now (no grace) if it is still ours; False if it was not running."""
    if not _signal(process, signal.SIGKILL, cmdline):
        return False
    if not wait_gone(process, KILL_WAIT_S):
        raise ProcessError(f"pid {process.pid} survived SIGKILL")
    return True
