"""``up``, ``down`` and ``status`` of the local stack (what the CLI and the tests call)."""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from devtools import processes
from devtools.stack.config import (
    BROKER_COUNTS,
    DEFAULT_STATE_DIR,
    KAFKA_VERSION,
    Address,
    Server,
    ServerState,
    StackConfig,
    check_brokers,
    selected,
)
from devtools.stack.console import locked, rel, say
from devtools.stack.errors import StackError
from devtools.stack.install import install_ferretdb, install_kafka, java_major, require_tool
from devtools.stack.probes import answers, kafka_metadata, tcp_open
from devtools.stack.sasl import sasl_address
from devtools.stack.servers import (
    MIN_ISR_CLUSTER,
    kafka_command,
    kafka_node_address,
    kafka_unit,
    mongo_command,
    server_ports,
)
from devtools.stack.supervise import (
    ServerProcess,
    has_pid_files,
    read_server,
    remove_pid_files,
    start_server,
    stop_server,
    wait_ready,
)
from devtools.stack.topics import ensure_topics, wait_replicated

__all__ = ["down", "kafka_bootstrap", "status", "up"]

# A cold JVM on 2 busy cores: Kafka answers after ~5 s here, 90 s covers a loaded CI machine.
KAFKA_READY_TIMEOUT_S: Final = 90.0
# FerretDB answers in under a second; a minute covers a first start on a slow disk.
MONGO_READY_TIMEOUT_S: Final = 60.0


@dataclass(frozen=True)
class _Unit:
    """One process of the stack: FerretDB, or one Kafka KRaft node (its own PID/meta/log)."""

    server: Server
    name: str  # PID/meta/log file stem: "mongo", "kafka", "kafka-2", "kafka-3"
    node: int
    address: Address


def _units(cfg: StackConfig, servers: tuple[Server, ...], brokers: int) -> list[_Unit]:
    units: list[_Unit] = []
    for server in servers:
        if server == "kafka":
            units += [
                _Unit("kafka", kafka_unit(n), n, kafka_node_address(cfg.kafka_listen, n))
                for n in range(1, brokers + 1)
            ]
        else:
            units.append(_Unit(server, server, 1, cfg.listen(server)))
    return units


def _recorded_units(cfg: StackConfig, servers: tuple[Server, ...]) -> list[_Unit]:
    """Every unit this state dir has PID files for (down/status do not need --brokers)."""
    units = []
    for unit in _units(cfg, servers, max(BROKER_COUNTS)):
        if unit.node == 1 or has_pid_files(cfg.state_dir, unit.name):
            units.append(unit)
    return units


def kafka_bootstrap(listen: Address | str, brokers: int = 1) -> str:
    """The bootstrap string of the stack's Kafka: every broker address, comma-separated."""
    base = listen if isinstance(listen, Address) else Address.parse(listen)
    return ",".join(str(kafka_node_address(base, n)) for n in range(1, brokers + 1))


# Creating topics right after a cluster forms can hit a controller move ("broker handle
# destroyed"); creation is idempotent, so a few tries are safe.
TOPIC_CREATE_TRIES: Final = 4


def _create_topics(bootstrap: str, brokers: int, timeout: float) -> dict[str, str]:
    if brokers == 1:
        return ensure_topics(bootstrap)
    wait_replicated(bootstrap, [], brokers, timeout)  # all brokers registered: RF 3 can place
    config = {"min.insync.replicas": str(MIN_ISR_CLUSTER)}
    for attempt in range(1, TOPIC_CREATE_TRIES + 1):
        try:
            return ensure_topics(bootstrap, replication_factor=brokers, config=config)
        except StackError as exc:
            if attempt == TOPIC_CREATE_TRIES:
                raise
            say(f"kafka: retrying topic creation ({exc})")
            time.sleep(1.0)
    raise AssertionError("unreachable")


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
    brokers: int = 1,
    rejoin: bool = False,
    security: str = "plaintext",
) -> dict[Server, ServerState]:
    """Start the selected servers unless they already run from this state dir; wait until they
    answer; create the topics. Idempotent. Raises StackError (MissingToolError) on failure.

    *brokers* = 3 runs a 3-node KRaft cluster (combined broker+controller nodes) whose topics
    have replication factor 3 and min.insync.replicas 2. *rejoin*: restart the nodes of a running
    cluster that died (the fault suite's broker kill); they rejoin with their formatted storage."""
    cfg = StackConfig.make(
        state_dir,
        kafka_listen=kafka_listen,
        mongo_listen=mongo_listen,
        cache_dir=cache_dir,
        brokers=check_brokers(brokers),
        security=security,
    )
    servers = selected(only)
    cfg.state_dir.mkdir(parents=True, exist_ok=True)
    begin = time.monotonic()
    states: dict[Server, ServerState] = {}
    units = _units(cfg, servers, brokers)
    with locked(cfg.state_dir / "stack.lock"):
        running: dict[str, ServerProcess] = {}
        for unit in _recorded_units(cfg, servers):
            recorded = read_server(cfg.state_dir, unit.name)
            if recorded is not None and recorded.is_ours():
                if unit not in units:
                    raise StackError(
                        f"{unit.name} already runs from {cfg.state_dir} (pid {recorded.pid}): "
                        f"that is a cluster of more brokers than the requested {brokers}; "
                        "run `down` first to change --brokers"
                    )
                if recorded.address != unit.address:
                    raise StackError(
                        f"{unit.name} already runs from {cfg.state_dir} on {recorded.address} "
                        f"(pid {recorded.pid}), not on the requested {unit.address}; "
                        "run `down` first to move it"
                    )
                running[unit.name] = recorded
            elif has_pid_files(cfg.state_dir, unit.name):
                remove_pid_files(cfg.state_dir, unit.name)  # stale: that process is gone
        kafka_running = [u for u in units if u.server == "kafka" and u.name in running]
        if kafka_running and len(kafka_running) != brokers and not rejoin:
            # A KRaft quorum is formatted with its voters; adding nodes to a running one is a
            # reconfiguration this dev tool does not do (nor restart half a cluster).
            raise StackError(
                f"{len(kafka_running)} of {brokers} Kafka nodes run from {cfg.state_dir}; "
                "run `down` first, then `up` again"
            )

        to_start = [u for u in units if u.name not in running]
        for unit in to_start:
            ports = server_ports(unit.server, unit.address)
            if unit.server == "kafka" and cfg.security == "sasl-ssl":
                ports.append(sasl_address(cfg))
            busy = [a for a in ports if tcp_open(a, 0.5)]
            if busy:
                raise StackError(
                    f"cannot start {unit.name}: {', '.join(map(str, busy))} already accepts "
                    f"connections, and not from a process this state dir ({cfg.state_dir}) "
                    "started. Stop that process or choose another address "
                    f"(--{unit.server}-listen / STACK_{unit.server.upper()}_LISTEN)."
                )
        # Installs first (they may take minutes the first time), then start the servers.
        commands: dict[str, list[str]] = {}
        cwd: dict[str, Path] = {}
        kafka_to_start = [u for u in to_start if u.server == "kafka"]
        if kafka_to_start:
            java = require_tool("java", "to run the Kafka broker")
            major = java_major(java)
            if major is not None and major < 11:
                raise StackError(f"Kafka {KAFKA_VERSION} needs Java 11 or newer; {java} is {major}")
            libs = install_kafka(cfg.cache_dir)
            for unit in kafka_to_start:
                commands[unit.name] = kafka_command(cfg, java, libs, unit.node)
                cwd[unit.name] = cfg.state_dir / unit.name
        if any(u.server == "mongo" for u in to_start):
            binary = install_ferretdb(cfg.cache_dir)
            commands["mongo"] = mongo_command(cfg, binary)
            cwd["mongo"] = cfg.state_dir / "ferretdb"

        started: dict[str, tuple[_Unit, ServerProcess]] = {}
        try:
            for unit in to_start:
                process = start_server(
                    cfg,
                    unit.server,
                    commands[unit.name],
                    cwd[unit.name],
                    unit=unit.name,
                    address=unit.address,
                )
                started[unit.name] = (unit, process)
                say(f"{unit.name}: started pid {process.pid} on {unit.address}")
            for unit in units:
                if unit.name in running:
                    recorded = running[unit.name]
                    say(f"{unit.name}: already running (pid {recorded.pid}, {recorded.address})")
                else:
                    recorded = started[unit.name][1]
                timeout = kafka_timeout if unit.server == "kafka" else mongo_timeout
                waited = wait_ready(cfg, unit.server, recorded, timeout, unit.name)
                if unit.name in started:
                    say(f"{unit.name}: answering on {recorded.address} after {waited:.1f} s")
                state = ServerState(
                    name=unit.server,
                    address=recorded.address,
                    pid=recorded.pid,
                    running=True,
                    answering=True,
                    started_now=unit.name in started,
                    log=cfg.log_path(unit.name),
                    node=unit.node,
                )
                if unit.node == 1:
                    states[unit.server] = state
                else:
                    states[unit.server].members.append(state)
            if "kafka" in servers:
                bootstrap = kafka_bootstrap(cfg.kafka_listen, brokers)
                states["kafka"].bootstrap = bootstrap
                if create_topics:
                    created = _create_topics(bootstrap, brokers, kafka_timeout)
                    # Ready means every partition has a leader and its full ISR (all brokers).
                    wait_replicated(bootstrap, list(created), brokers, kafka_timeout)
                    summary = ", ".join(f"{name} ({how})" for name, how in created.items())
                    rf = f", replication factor {brokers}" if brokers > 1 else ""
                    states["kafka"].detail = f"topics: {summary}{rf}"
                    say(f"kafka: topics {summary}{rf}")
        except BaseException:
            # Leave nothing half-started behind: stop exactly what this call started.
            for name, (unit, process) in started.items():
                stop_server(cfg, unit.server, process, quiet=True, unit=name)
            raise
    if to_start:
        say(f"stack up in {time.monotonic() - begin:.1f} s (state dir {rel(cfg.state_dir)})")
    return states


def down(
    state_dir: Path | str = DEFAULT_STATE_DIR,
    *,
    only: str | None = None,
    cache_dir: Path | str | None = None,
) -> dict[str, str]:
    """Stop exactly the processes `up` started from *state_dir* (by PID, verified), SIGTERM then
    SIGKILL after a bound; remove their PID files. Returns {server or Kafka node: what happened}
    ("kafka", "kafka-2", "kafka-3" for a cluster)."""
    cfg = StackConfig.make(state_dir, cache_dir=cache_dir)
    servers = selected(only)
    result: dict[str, str] = {}
    if not cfg.state_dir.exists():
        return {server: "not running" for server in servers}
    with locked(cfg.state_dir / "stack.lock"):
        ours: dict[str, tuple[_Unit, ServerProcess]] = {}
        for unit in _recorded_units(cfg, servers):
            recorded = read_server(cfg.state_dir, unit.name)
            if recorded is not None and recorded.is_ours():
                ours[unit.name] = (unit, recorded)
            elif has_pid_files(cfg.state_dir, unit.name):
                remove_pid_files(cfg.state_dir, unit.name)
                result[unit.name] = "not running (removed a stale PID file)"
            else:
                result[unit.name] = "not running"
        # SIGTERM all first so they shut down in parallel, then wait for each.
        signalled = {
            name: processes.terminate(recorded.id, recorded.cmdline)
            for name, (_, recorded) in ours.items()
        }
        for name, (unit, recorded) in ours.items():
            start = time.monotonic()
            how = stop_server(cfg, unit.server, recorded, signalled=signalled[name], unit=name)
            result[name] = f"{how} pid {recorded.pid} in {time.monotonic() - start:.1f} s"
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
    address answers a real request. A Kafka cluster's nodes 2.. are in ``members``."""
    cfg = StackConfig.make(state_dir, kafka_listen=kafka_listen, mongo_listen=mongo_listen)
    states: dict[Server, ServerState] = {}
    units = _recorded_units(cfg, selected(only))
    kafka_nodes = [u for u in units if u.server == "kafka"]
    for unit in units:
        recorded = read_server(cfg.state_dir, unit.name)
        ours = recorded is not None and recorded.is_ours()
        address = recorded.address if recorded is not None and ours else unit.address
        state = ServerState(
            name=unit.server, address=address, log=cfg.log_path(unit.name), node=unit.node
        )
        if recorded is not None and ours:
            state.pid, state.running = recorded.pid, True
        elif recorded is not None:
            state.detail = f"stale PID file (pid {recorded.pid} is gone)"
        if unit.server == "kafka":
            # Each node is asked on its own address: one dead node must show as not answering.
            metadata = kafka_metadata(str(address), timeout)
            state.answering = metadata is not None
            if metadata is not None and unit.node == 1:
                topics = {
                    name: len(t.partitions)
                    for name, t in metadata.topics.items()
                    if not name.startswith("__")
                }
                shown = ", ".join(f"{n}({p})" for n, p in sorted(topics.items())[:6])
                more = f" +{len(topics) - 6} more" if len(topics) > 6 else ""
                n = len(metadata.brokers)
                state.detail = f"{n} broker{'s' if n != 1 else ''}, topics: {shown or '-'}{more}"
        else:
            state.answering = answers(unit.server, address, timeout)
        if state.answering and not state.running:
            state.detail = "; ".join(
                d for d in ("not started from this state dir", state.detail) if d
            )
        if unit.node == 1:
            states[unit.server] = state
        else:
            states[unit.server].members.append(state)
    if "kafka" in states:
        states["kafka"].bootstrap = kafka_bootstrap(cfg.kafka_listen, len(kafka_nodes))
    return states
