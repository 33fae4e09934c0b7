"""The servers a state dir started: PID files, start, stop, readiness.

``<state>/<server>.pid`` holds the PID; ``<server>.meta.json`` the PID, its start time, exact
command line and address. A server is "ours" only while /proc still shows that start time and
that command line: a stale PID file (process gone, PID reused) is removed, never signalled.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from devtools import processes
from devtools.logs import START_MARK, tail
from devtools.ports import wait_closed
from devtools.processes import ProcessId
from devtools.stack.config import Address, Server, StackConfig
from devtools.stack.console import say, write_atomic
from devtools.stack.errors import StackError
from devtools.stack.probes import answers
from devtools.stack.servers import server_ports
from devtools.waiting import WaitTimeout, wait_for

__all__ = [
    "ServerProcess",
    "has_pid_files",
    "read_server",
    "remove_pid_files",
    "running_pid",
    "start_server",
    "stop_server",
    "wait_ready",
]

# Kafka flushes its logs and leaves the controller quorum on SIGTERM: seconds, rarely 20.
KAFKA_STOP_TIMEOUT_S: Final = 30.0
MONGO_STOP_TIMEOUT_S: Final = 15.0
# A stopped server's sockets close with the process; longer means someone else took the port.
PORT_RELEASE_TIMEOUT_S: Final = 10.0
# Between two readiness questions: short, since each answer is a real request taking its time.
READY_POLL_S: Final = 0.25


@dataclass(frozen=True)
class ServerProcess:
    """A server this state dir started, as recorded in its meta file."""

    id: ProcessId
    cmdline: list[str]
    address: Address
    started_at: str = ""

    @property
    def pid(self) -> int:
        return self.id.pid

    def is_ours(self) -> bool:
        """The recorded process still runs and is the very one we started."""
        return self.id.runs(self.cmdline)


def _pid_path(state_dir: Path, server: str) -> Path:
    return state_dir / f"{server}.pid"


def _meta_path(state_dir: Path, server: str) -> Path:
    return state_dir / f"{server}.meta.json"


def read_server(state_dir: Path, server: str) -> ServerProcess | None:
    """What the PID files of *server* say (None if missing, unreadable or inconsistent)."""
    try:
        raw = json.loads(_meta_path(state_dir, server).read_text())
        pid = int(_pid_path(state_dir, server).read_text().split()[0])
        recorded = ServerProcess(
            id=ProcessId(int(raw["pid"]), int(raw["starttime"])),
            cmdline=[str(x) for x in raw["cmdline"]],
            address=Address.parse(str(raw["address"])),
            started_at=str(raw.get("started_at", "")),
        )
    except (OSError, ValueError, KeyError, IndexError, TypeError, StackError):
        return None
    return recorded if recorded.pid == pid else None


def has_pid_files(state_dir: Path, server: str) -> bool:
    return _pid_path(state_dir, server).exists() or _meta_path(state_dir, server).exists()


def remove_pid_files(state_dir: Path, server: str) -> None:
    for path in (_pid_path(state_dir, server), _meta_path(state_dir, server)):
        path.unlink(missing_ok=True)


def running_pid(state_dir: Path | str, server: str) -> int | None:
    """PID of *server* if this state dir started it and it still runs, else None."""
    recorded = read_server(Path(state_dir).absolute(), server)
    return recorded.pid if recorded is not None and recorded.is_ours() else None


def start_server(
    cfg: StackConfig,
    server: Server,
    cmd: list[str],
    cwd: Path,
    *,
    unit: str | None = None,
    address: Address | None = None,
) -> ServerProcess:
    """Start *server* in its own session (it outlives this command) and record it under *unit*
    (a Kafka node's name, "kafka-2"; the server's name by default)."""
    unit = unit or server
    log_path = cfg.log_path(unit)
    stamp = time.strftime("%Y-%m-%dT%H:%M:%S%z")
    started = processes.spawn(
        cmd,
        log=log_path,
        cwd=cwd,
        banner=f"{START_MARK}{stamp} stack.py starting {unit}: {' '.join(cmd)}",
    )
    recorded = ServerProcess(started.id, started.cmdline, address or cfg.listen(server), stamp)
    meta = {
        "pid": started.pid,
        "starttime": started.id.starttime,
        "cmdline": started.cmdline,
        "address": str(recorded.address),
        "started_at": stamp,
        "log": str(log_path),
    }
    write_atomic(_meta_path(cfg.state_dir, unit), json.dumps(meta, indent=2) + "\n")
    write_atomic(_pid_path(cfg.state_dir, unit), f"{started.pid}\n")
    return recorded


def stop_server(
    cfg: StackConfig,
    server: Server,
    recorded: ServerProcess,
    *,
    signalled: bool = False,
    quiet: bool = False,
    unit: str | None = None,
) -> str:
    """Stop a server we started (SIGTERM, SIGKILL after a bound), remove its PID files and wait
    until its ports close. Returns what happened."""
    grace = KAFKA_STOP_TIMEOUT_S if server == "kafka" else MONGO_STOP_TIMEOUT_S
    try:
        how = processes.stop(
            recorded.id, grace_s=grace, cmdline=recorded.cmdline, signalled=signalled
        )
    except processes.ProcessError as exc:
        raise StackError(f"{unit or server}: {exc}") from None
    remove_pid_files(cfg.state_dir, unit or server)
    addresses = [(a.host, a.port) for a in server_ports(server, recorded.address)]
    busy = wait_closed(addresses, PORT_RELEASE_TIMEOUT_S)
    if busy and not quiet:
        shown = ", ".join(str(Address(h, p)) for h, p in busy)
        say(f"{server}: warning: {shown} still accepts connections (not ours)")
    return how


def wait_ready(
    cfg: StackConfig,
    server: Server,
    recorded: ServerProcess,
    timeout: float,
    unit: str | None = None,
) -> float:
    """Ask the server until it answers; error with its log if it dies or the deadline passes.

    Returns the seconds it took.
    """
    start = time.monotonic()
    deadline = start + timeout
    log = cfg.log_path(unit or server)

    def answering() -> bool:
        if not recorded.is_ours():
            if recorded.id.alive():
                what = f"now runs {' '.join(recorded.id.cmdline())[:200]!r}, not the server"
            else:
                what = f"exited{processes.exit_note(recorded.pid)}"
            raise StackError(
                f"{server} (pid {recorded.pid}) {what} before answering on {recorded.address}; "
                f"last lines of {log}:\n{tail(log)}"
            )
        # Each question may take up to 3 s; never let the last one run past the deadline.
        remaining = deadline - time.monotonic()
        return answers(server, recorded.address, min(3.0, max(remaining, 0.5)))

    try:
        wait_for(f"{server} on {recorded.address}", answering, timeout, READY_POLL_S)
    except WaitTimeout:
        raise StackError(
            f"{server} (pid {recorded.pid}) did not answer on {recorded.address} within "
            f"{timeout:.0f} s; last lines of {log}:\n{tail(log)}"
        ) from None
    return time.monotonic() - start
