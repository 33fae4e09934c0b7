"""``up``, ``down`` and ``status`` of the local stack (what the CLI and the tests call)."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Final

from devtools import processes
from devtools.stack.config import (
    DEFAULT_STATE_DIR,
    KAFKA_VERSION,
    Address,
    Server,
    ServerState,
    StackConfig,
    selected,
)
from devtools.stack.console import locked, rel, say
from devtools.stack.errors import StackError
from devtools.stack.install import install_ferretdb, install_kafka, java_major, require_tool
from devtools.stack.probes import answers, kafka_metadata, tcp_open
from devtools.stack.servers import kafka_command, mongo_command, server_ports
from devtools.stack.supervise import (
    ServerProcess,
    has_pid_files,
    read_server,
    remove_pid_files,
    start_server,
    stop_server,
    wait_ready,
)
from devtools.stack.topics import ensure_topics

__all__ = ["down", "status", "up"]

# A cold JVM on 2 busy cores: Kafka answers after ~5 s here, 90 s covers a loaded CI machine.
KAFKA_READY_TIMEOUT_S: Final = 90.0
# FerretDB answers in under a second; a minute covers a first start on a slow disk.
MONGO_READY_TIMEOUT_S: Final = 60.0


def up(
    state_dir: Path | str = DEFAULT_STATE_DIR,
    *,
    only: str | None = None,
    kafka_listen: Address | str | None = None,
    mongo_listen: Address | str | None = None,
    cache_dir: Path | str | None = None,
    create_topics: bool = True,
    kafka_timeout: float = KAFKA_READY_TIMEOUT_S,
    mongo_timeout: float = MONGO_READY_TIMEOUT_S,
) -> dict[Server, ServerState]:
    """Start the selected servers unless they already run from this state dir; wait until they
    answer; create the topics. Idempotent. Raises StackError (MissingToolError) on failure."""
    cfg = StackConfig.make(
        state_dir, kafka_listen=kafka_listen, mongo_listen=mongo_listen, cache_dir=cache_dir
    )
    servers = selected(only)
    cfg.state_dir.mkdir(parents=True, exist_ok=True)
    begin = time.monotonic()
    states: dict[Server, ServerState] = {}
    with locked(cfg.state_dir / "stack.lock"):
        running: dict[Server, ServerProcess] = {}
        for server in servers:
            recorded = read_server(cfg.state_dir, server)
            if recorded is not None and recorded.is_ours():
                if recorded.address != cfg.listen(server):
                    raise StackError(
                        f"{server} already runs from {cfg.state_dir} on {recorded.address} "
                        f"(pid {recorded.pid}), not on the requested {cfg.listen(server)}; "
                        "run `down` first to move it"
                    )
                running[server] = recorded
            elif has_pid_files(cfg.state_dir, server):
                remove_pid_files(cfg.state_dir, server)  # stale: that process is gone

        to_start = [s for s in servers if s not in running]
        for server in to_start:
            busy = [a for a in server_ports(server, cfg.listen(server)) if tcp_open(a, 0.5)]
            if busy:
                raise StackError(
                    f"cannot start {server}: {', '.join(map(str, busy))} already accepts "
                    f"connections, and not from a process this state dir ({cfg.state_dir}) "
                    "started. Stop that process or choose another address "
                    f"(--{server}-listen / STACK_{server.upper()}_LISTEN)."
                )
        # Installs first (they may take minutes the first time), then start both servers.
        commands: dict[Server, list[str]] = {}
        cwd: dict[Server, Path] = {}
        if "kafka" in to_start:
            java = require_tool("java", "to run the Kafka broker")
            major = java_major(java)
            if major is not None and major < 11:
                raise StackError(f"Kafka {KAFKA_VERSION} needs Java 11 or newer; {java} is {major}")
            libs = install_kafka(cfg.cache_dir)
            commands["kafka"] = kafka_command(cfg, java, libs)
            cwd["kafka"] = cfg.state_dir / "kafka"
        if "mongo" in to_start:
            binary = install_ferretdb(cfg.cache_dir)
            commands["mongo"] = mongo_command(cfg, binary)
            cwd["mongo"] = cfg.state_dir / "ferretdb"

        started: dict[Server, ServerProcess] = {}
        try:
            for server in to_start:
                started[server] = start_server(cfg, server, commands[server], cwd[server])
                say(f"{server}: started pid {started[server].pid} on {cfg.listen(server)}")
            for server in servers:
                if server in running:
                    recorded = running[server]
                    say(f"{server}: already running (pid {recorded.pid}, {recorded.address})")
                else:
                    recorded = started[server]
                timeout = kafka_timeout if server == "kafka" else mongo_timeout
                waited = wait_ready(cfg, server, recorded, timeout)
                if server in started:
                    say(f"{server}: answering on {recorded.address} after {waited:.1f} s")
                states[server] = ServerState(
                    name=server,
                    address=recorded.address,
                    pid=recorded.pid,
                    running=True,
                    answering=True,
                    started_now=server in started,
                    log=cfg.log_path(server),
                )
            if create_topics and "kafka" in servers:
                created = ensure_topics(str(cfg.kafka_listen))
                summary = ", ".join(f"{name} ({how})" for name, how in created.items())
                states["kafka"].detail = f"topics: {summary}"
                say(f"kafka: topics {summary}")
        except BaseException:
            # Leave nothing half-started behind: stop exactly what this call started.
            for server, recorded in started.items():
                stop_server(cfg, server, recorded, quiet=True)
            raise
    if to_start:
        say(f"stack up in {time.monotonic() - begin:.1f} s (state dir {rel(cfg.state_dir)})")
    return states


def down(
    state_dir: Path | str = DEFAULT_STATE_DIR,
    *,
    only: str | None = None,
    cache_dir: Path | str | None = None,
) -> dict[Server, str]:
    """Stop exactly the processes `up` started from *state_dir* (by PID, verified), SIGTERM then
    SIGKILL after a bound; remove their PID files. Returns {server: what happened}."""
    cfg = StackConfig.make(state_dir, cache_dir=cache_dir)
    servers = selected(only)
    result: dict[Server, str] = {}
    if not cfg.state_dir.exists():
        return {server: "not running" for server in servers}
    with locked(cfg.state_dir / "stack.lock"):
        ours: dict[Server, ServerProcess] = {}
        for server in servers:
            recorded = read_server(cfg.state_dir, server)
            if recorded is not None and recorded.is_ours():
                ours[server] = recorded
            elif has_pid_files(cfg.state_dir, server):
                remove_pid_files(cfg.state_dir, server)
                result[server] = "not running (removed a stale PID file)"
            else:
                result[server] = "not running"
        # SIGTERM all first so they shut down in parallel, then wait for each.
        signalled = {
            server: processes.terminate(recorded.id, recorded.cmdline)
            for server, recorded in ours.items()
        }
        for server, recorded in ours.items():
            start = time.monotonic()
            how = stop_server(cfg, server, recorded, signalled=signalled[server])
            result[server] = f"{how} pid {recorded.pid} in {time.monotonic() - start:.1f} s"
    return result


def status(
    state_dir: Path | str = DEFAULT_STATE_DIR,
    *,
    only: str | None = None,
    kafka_listen: Address | str | None = None,
    mongo_listen: Address | str | None = None,
    timeout: float = 5.0,
) -> dict[Server, ServerState]:
    """What each selected server is doing: PID (if this state dir started it) and whether the
    address answers a real request."""
    cfg = StackConfig.make(state_dir, kafka_listen=kafka_listen, mongo_listen=mongo_listen)
    states: dict[Server, ServerState] = {}
    for server in selected(only):
        recorded = read_server(cfg.state_dir, server)
        ours = recorded is not None and recorded.is_ours()
        address = recorded.address if recorded is not None and ours else cfg.listen(server)
        state = ServerState(name=server, address=address, log=cfg.log_path(server))
        if recorded is not None and ours:
            state.pid, state.running = recorded.pid, True
        elif recorded is not None:
            state.detail = f"stale PID file (pid {recorded.pid} is gone)"
        if server == "kafka":
            metadata = kafka_metadata(str(address), timeout)
            state.answering = metadata is not None
            if metadata is not None:
                topics = {
                    name: len(t.partitions)
                    for name, t in metadata.topics.items()
                    if not name.startswith("__")
                }
                shown = ", ".join(f"{n}({p})" for n, p in sorted(topics.items())[:6])
                more = f" +{len(topics) - 6} more" if len(topics) > 6 else ""
                state.detail = f"{len(metadata.brokers)} broker, topics: {shown or '-'}{more}"
        else:
            state.answering = answers(server, address, timeout)
        if state.answering and not state.running:
            state.detail = "; ".join(
                d for d in ("not started from this state dir", state.detail) if d
            )
        states[server] = state
    return states
