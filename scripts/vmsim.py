#!/usr/bin/env python3
"""The four-VM deployment on one machine: network namespaces, real servers, firewall rules.

    sudo .venv/bin/python scripts/vmsim.py run       # up + check + down (always tears down)
    sudo .venv/bin/python scripts/vmsim.py up        # build it and leave it running
    sudo .venv/bin/python scripts/vmsim.py check     # reachability checks + smoke test from admin
    sudo .venv/bin/python scripts/vmsim.py down      # remove everything `up` made

Hosts (addresses from compose/.env.example, or ``--env-file``), each a network namespace:

    gtc-vm1    KAFKA_PRIVATE_IP      Kafka 3.9.1 (scripts/stack.py --only kafka)
    gtc-vm2    MONGO_PRIVATE_IP      FerretDB 1.24.2 (scripts/stack.py --only mongo)
    gtc-vm3    PROCESSOR_PRIVATE_IP  python -m processor on :8080
    gtc-vm4    PRODUCERS_PRIVATE_IP  python -m producers (steady background traffic)
    gtc-admin  ADMIN_IP              runs scripts/smoke-test.sh

Namespace names are global on the machine: ``VMSIM_PREFIX`` (default ``gtc-``) replaces the
``gtc-`` above, so that two simulations (two checkouts, two users) never touch each other's.

Each host has one veth ("eth0") whose peer is plugged into a bridge living in its own namespace,
``gtc-net``: the machine's root namespace gets no address and no route on that network, so
nothing outside the namespaces can reach the servers, and they can reach nothing outside.
vm1..vm4 load the nftables ruleset of their role (scripts/firewall/nft-ROLE.nft, through
nft-render.sh): inbound policy drop; established, loopback and the role's sources only.

Every process is started by PID and stopped by PID (the servers through ``stack.py down``,
run inside their namespace); ``down`` then removes the namespaces and verifies none is left.
State (PIDs, logs, server data) lives in ``--state-dir`` (default .state/vmsim).
Prints one ``PASS <check>`` / ``FAIL <check>: <reason>`` line per check; exit 0 only if all pass.
"""

from __future__ import annotations

import argparse
import ipaddress
import json
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Final, Literal

REPO: Final = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:  # `python scripts/vmsim.py` puts scripts/ first, not the repo
    sys.path.insert(0, str(REPO))

from devtools import processes, stack  # noqa: E402
from devtools.logs import tail  # noqa: E402
from devtools.processes import ProcessId  # noqa: E402
from devtools.waiting import WaitTimeout, wait_for  # noqa: E402

PY: Final = sys.executable
STACK: Final = REPO / "scripts" / "stack.py"
SMOKE: Final = REPO / "scripts" / "smoke-test.sh"
NFT_RENDER: Final = REPO / "scripts" / "firewall" / "nft-render.sh"
DEFAULT_ENV_FILE: Final = REPO / "compose" / ".env.example"
DEFAULT_STATE_DIR: Final = REPO / ".state" / "vmsim"

# Network namespaces are global on the machine: another checkout's simulation may be running.
PREFIX: Final = os.environ.get("VMSIM_PREFIX") or "gtc-"
NET_NS: Final = f"{PREFIX}net"
BRIDGE: Final = "br0"

# First start of the JVM on a cold machine plus topic creation; then typically 10-15 s.
SERVER_UP_TIMEOUT_S: Final = 240.0
# See start_servers: a start that stack.py misreads is retried after stopping the survivor.
SERVER_START_ATTEMPTS: Final = 3
# The processor needs Kafka metadata and a MongoDB ping before /health says ok.
PROCESSOR_HEALTHY_TIMEOUT_S: Final = 90.0
# A graceful stop finishes the batch and commits (processor) or flushes (producer): seconds.
STOP_GRACE_S: Final = 30.0
# A dropped SYN never answers; a refused one answers in microseconds on a bridge. Two seconds
# tells the two apart without slowing the checks down (they run in parallel).
CONNECT_TIMEOUT_S: Final = 2.0
# The steady producer in vm4: a little background traffic, like a real fleet, while the smoke
# test produces its own burst (the smoke test's counts are robust to it).
STEADY_RATE: Final = "5"

Role = Literal["vm1", "vm2", "vm3", "vm4", "admin"]


@dataclass(frozen=True)
class Host:
    role: Role
    env_key: str  # the address's variable in the env file
    firewall: str | None  # scripts/firewall role, None = no ruleset (the admin host)
    what: str

    @property
    def ns(self) -> str:
        return f"{PREFIX}{self.role}"


HOSTS: Final[tuple[Host, ...]] = (
    Host("vm1", "KAFKA_PRIVATE_IP", "vm1-kafka", "Kafka"),
    Host("vm2", "MONGO_PRIVATE_IP", "vm2-mongo", "MongoDB-wire (FerretDB)"),
    Host("vm3", "PROCESSOR_PRIVATE_IP", "vm3-processor", "processor"),
    Host("vm4", "PRODUCERS_PRIVATE_IP", "vm4-producers", "producers"),
    Host("admin", "ADMIN_IP", None, "admin / smoke test"),
)
BY_ROLE: Final = {h.role: h for h in HOSTS}
OUR_NAMESPACES: Final = (NET_NS, *(h.ns for h in HOSTS))


class SimError(Exception):
    """The simulation could not be built or checked; the message says what and how to fix it."""


class MissingTool(SimError):
    """A tool or privilege the simulation needs is not there."""


def say(text: str) -> None:
    print(f"vmsim: {text}", flush=True)


# --------------------------------------------------------------------------- configuration


@dataclass(frozen=True)
class Topology:
    ips: dict[str, str]  # role -> address
    prefix_len: int
    kafka_port: int
    mongo_port: int
    processor_port: int
    ssh_port: int
    env_file: Path

    def ip(self, role: Role) -> str:
        return self.ips[role]

    @property
    def kafka(self) -> str:
        return f"{self.ip('vm1')}:{self.kafka_port}"

    @property
    def mongo(self) -> str:
        return f"{self.ip('vm2')}:{self.mongo_port}"

    @property
    def processor_url(self) -> str:
        return f"http://{self.ip('vm3')}:{self.processor_port}"


def read_env_file(path: Path) -> dict[str, str]:
    """KEY=VALUE lines of a compose .env file (comments and blank lines skipped; never executed)."""
    values: dict[str, str] = {}
    for line in path.read_text("utf-8").splitlines():
        line = line.strip()
        if not line or line.startswith("#") or "=" not in line:
            continue
        key, _, value = line.partition("=")
        values[key.strip()] = value.strip().strip("'\"")
    return values


def load_topology(env_file: Path) -> Topology:
    try:
        env = read_env_file(env_file)
    except OSError as exc:
        raise SimError(f"cannot read env file {env_file}: {exc}") from None
    try:
        prefix_len = int(env.get("PRIVATE_PREFIX_LEN", "24"))
        ips: dict[str, str] = {h.role: str(ipaddress.IPv4Address(env[h.env_key])) for h in HOSTS}
        ports = {k: int(env.get(k, d)) for k, d in
                 (("KAFKA_PORT", "9092"), ("MONGO_PORT", "27017"),
                  ("PROCESSOR_PORT", "8080"), ("SSH_PORT", "22"))}  # fmt: skip
    except (KeyError, ValueError) as exc:
        raise SimError(f"{env_file}: missing or bad value: {exc}") from None
    network = ipaddress.IPv4Network(f"{ips['vm1']}/{prefix_len}", strict=False)
    outside = [r for r, ip in ips.items() if ipaddress.IPv4Address(ip) not in network]
    if outside or len(set(ips.values())) != len(ips):
        raise SimError(f"{env_file}: the five addresses must be distinct and in {network}: {ips}")
    return Topology(
        ips=ips,
        prefix_len=prefix_len,
        kafka_port=ports["KAFKA_PORT"],
        mongo_port=ports["MONGO_PORT"],
        processor_port=ports["PROCESSOR_PORT"],
        ssh_port=ports["SSH_PORT"],
        env_file=env_file,
    )


# --------------------------------------------------------------------------- commands


def run(cmd: Sequence[str], *, check: bool = True, timeout: float = 60.0) -> str:
    """Run a command, return its stdout; raise SimError with its stderr when it fails."""
    try:
        done = subprocess.run(
            list(cmd), capture_output=True, text=True, timeout=timeout, check=False, cwd=REPO
        )
    except subprocess.TimeoutExpired:
        raise SimError(f"timed out after {timeout:.0f} s: {shlex.join(cmd)}") from None
    if check and done.returncode != 0:
        detail = (done.stderr or done.stdout).strip()[-2000:]
        raise SimError(f"`{shlex.join(cmd)}` exited {done.returncode}: {detail}")
    return done.stdout


def in_ns(ns: str, *cmd: str) -> list[str]:
    return ["ip", "netns", "exec", ns, *cmd]


def namespaces() -> set[str]:
    out = run(["ip", "netns", "list"])
    return {line.split()[0] for line in out.splitlines() if line.strip()}


def ours_present() -> list[str]:
    present = namespaces()
    return [ns for ns in OUR_NAMESPACES if ns in present]


def base_env(**extra: str) -> dict[str, str]:
    """A small, explicit environment: nothing of the caller's KAFKA_*/MONGO_* leaks in."""
    env = {k: v for k, v in os.environ.items() if k in ("PATH", "HOME", "LANG", "LC_ALL", "TZ")}
    env.setdefault("PATH", "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin")
    env["PYTHONUNBUFFERED"] = "1"
    env.update(extra)
    return env


def preflight() -> None:
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,20}", PREFIX):
        raise SimError(f"VMSIM_PREFIX={PREFIX!r}: use letters, digits, '_', '.', '-' (max 21)")
    if os.geteuid() != 0:
        raise MissingTool("must run as root (network namespaces, veth, nftables)")
    missing = [t for t in ("ip", "nft", "bash", "java") if shutil.which(t) is None]
    if missing:
        raise MissingTool(f"missing tools: {', '.join(missing)} (run `make setup`)")
    if " " in PY:
        raise SimError(f"the Python path must not contain spaces: {PY!r}")


# --------------------------------------------------------------------------- processes


def stop_pid(pid: int, starttime: int, what: str) -> str:
    """Stop a process we started (checked by its start time), SIGKILL after a bound."""
    try:
        how = processes.stop(ProcessId(pid, starttime), grace_s=STOP_GRACE_S)
    except processes.ProcessError as exc:
        raise SimError(f"{what}: {exc}") from None
    return f"{what}: {how}" if how == "not running" else f"{what}: {how} pid {pid}"


@dataclass
class Started:
    """A process this tool started inside a namespace (saved in the state file)."""

    name: str
    ns: str
    pid: int
    starttime: int
    log: str

    @property
    def id(self) -> ProcessId:
        return ProcessId(self.pid, self.starttime)


def spawn(name: str, ns: str, cmd: Sequence[str], env: Mapping[str, str], log: Path) -> Started:
    # `ip netns exec` setns()es and then exec()s: the PID is the service's own PID. Its own
    # session: it survives this command (`up`) and is stopped by PID in `down`.
    started = processes.spawn(in_ns(ns, *cmd), log=log, cwd=REPO, env=env)
    return Started(name, ns, started.pid, started.id.starttime, str(log))


# --------------------------------------------------------------------------- probes


_PROBE: Final = r"""
import errno, json, socket, sys, threading
targets = json.loads(sys.argv[1]); timeout = float(sys.argv[2]); result = {}
def probe(host, port):
    sock = socket.socket(); sock.settimeout(timeout)
    try:
        sock.connect((host, port)); outcome = "open"
    except socket.timeout:
        outcome = "timeout"
    except ConnectionRefusedError:
        outcome = "refused"
    except OSError as exc:
        outcome = "error:" + (errno.errorcode.get(exc.errno or 0) or str(exc))
    finally:
        sock.close()
    result[f"{host}:{port}"] = outcome
threads = [threading.Thread(target=probe, args=(h, p)) for h, p in targets]
[t.start() for t in threads]; [t.join() for t in threads]
print(json.dumps(result))
"""

_HTTP_GET: Final = r"""
import json, sys, urllib.error, urllib.request
try:
    with urllib.request.urlopen(sys.argv[1], timeout=5) as resp:
        print(json.dumps({"status": resp.status, "body": json.loads(resp.read())}))
except urllib.error.HTTPError as exc:
    print(json.dumps({"status": exc.code, "body": None}))
except OSError as exc:
    print(json.dumps({"status": 0, "body": str(exc)}))
"""


def connect_from(ns: str, targets: Sequence[tuple[str, int]]) -> dict[str, str]:
    """Try a TCP connect to each target from inside namespace *ns*: open/refused/timeout/error."""
    out = run(
        in_ns(ns, PY, "-c", _PROBE, json.dumps(list(targets)), str(CONNECT_TIMEOUT_S)),
        timeout=CONNECT_TIMEOUT_S * 3 + 10,
    )
    result: dict[str, str] = json.loads(out)
    return result


def http_get_from(ns: str, url: str) -> tuple[int, object]:
    out = json.loads(run(in_ns(ns, PY, "-c", _HTTP_GET, url), timeout=20))
    return int(out["status"]), out["body"]


# --------------------------------------------------------------------------- state


@dataclass
class State:
    env_file: str
    processes: list[Started]

    def save(self, state_dir: Path) -> None:
        path = state_dir / "state.json"
        data = {"env_file": self.env_file, "processes": [asdict(p) for p in self.processes]}
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(data, indent=2))
        tmp.replace(path)

    @classmethod
    def load(cls, state_dir: Path) -> State | None:
        try:
            data = json.loads((state_dir / "state.json").read_text())
        except (OSError, ValueError):
            return None
        return cls(data["env_file"], [Started(**p) for p in data["processes"]])


# --------------------------------------------------------------------------- up


def create_network(topo: Topology) -> None:
    """Bridge in its own namespace; one veth per host, the host end named eth0."""
    run(["ip", "netns", "add", NET_NS])
    run(["ip", "-n", NET_NS, "link", "set", "lo", "up"])
    run(["ip", "-n", NET_NS, "link", "add", BRIDGE, "type", "bridge"])
    run(["ip", "-n", NET_NS, "link", "set", BRIDGE, "up"])
    for host in HOSTS:
        run(["ip", "netns", "add", host.ns])
        run(["ip", "-n", host.ns, "link", "set", "lo", "up"])
        # Created directly inside the two namespaces: no interface ever exists in the root one.
        run(["ip", "-n", host.ns, "link", "add", "eth0", "type", "veth",
             "peer", "name", host.role, "netns", NET_NS])  # fmt: skip
        run(["ip", "-n", NET_NS, "link", "set", host.role, "master", BRIDGE])
        run(["ip", "-n", NET_NS, "link", "set", host.role, "up"])
        address = f"{topo.ip(host.role)}/{topo.prefix_len}"
        run(["ip", "-n", host.ns, "addr", "add", address, "dev", "eth0"])
        run(["ip", "-n", host.ns, "link", "set", "eth0", "up"])
    say(f"network: bridge {BRIDGE} in {NET_NS}; " + ", ".join(
        f"{h.ns}={topo.ip(h.role)}" for h in HOSTS))  # fmt: skip


def apply_firewalls(topo: Topology) -> None:
    for host in HOSTS:
        if host.firewall is None:
            continue
        run(in_ns(host.ns, "bash", str(NFT_RENDER), host.firewall,
                  "--env-file", str(topo.env_file), "--apply"))  # fmt: skip
        run(in_ns(host.ns, "nft", "list", "table", "inet", "gtc_filter"))
    say("firewall: nftables rulesets loaded in vm1..vm4 (scripts/firewall/nft-*.nft)")


def ensure_installed() -> None:
    """Kafka's jars and the FerretDB binary, fetched in the root namespace (the simulated hosts
    have no route to the internet) into <repo>/.cache, as scripts/stack.py caches them."""
    cache = stack.default_cache_dir()
    if not stack.installed(cache):
        say(f"installing Kafka {stack.KAFKA_VERSION} and FerretDB into {cache} (first run only)")
    stack.install_kafka(cache)
    stack.install_ferretdb(cache)


def stack_cmd(state_dir: Path, role: Role, action: str, topo: Topology) -> list[str]:
    server = "kafka" if role == "vm1" else "mongo"
    cmd = [PY, str(STACK), "--state-dir", str(state_dir / role), action, "--only", server]
    if action == "up" and server == "kafka":
        cmd += ["--kafka-listen", topo.kafka]
    elif action == "up":
        cmd += ["--mongo-listen", topo.mongo]
    return in_ns(BY_ROLE[role].ns, *cmd)


def start_servers(topo: Topology, state_dir: Path) -> None:
    for role in ("vm1", "vm2"):
        (state_dir / role).mkdir(parents=True, exist_ok=True)
        cmd = stack_cmd(state_dir, role, "up", topo)
        for attempt in range(1, SERVER_START_ATTEMPTS + 1):
            try:
                out = run(cmd, timeout=SERVER_UP_TIMEOUT_S)
                break
            except SimError as exc:
                # stack.py can take a server that is still inside execve() for one that died
                # ("exited before answering": /proc/PID/cmdline reads empty for a moment) and
                # then leaves it running without a PID file. Stop what runs in this host's
                # namespace (only this tool starts processes there) and start again.
                if "exited before answering" not in str(exc) or attempt == SERVER_START_ATTEMPTS:
                    raise
                stopped = "; ".join(_stop_leftovers(BY_ROLE[role].ns)) or "nothing was left"
                say(f"{role}: stack.py misread the start as an exit ({stopped}); retrying")
        last = [line for line in out.splitlines() if line.strip()][-1:]
        say(f"{role}: {' '.join(last)}")


def wait_healthy(topo: Topology, processor: Started) -> None:
    status, body = 0, None

    def healthy() -> bool:
        nonlocal status, body
        if not processor.id.alive():
            raise SimError(f"processor exited; its log:\n{tail(processor.log)}")
        status, body = http_get_from(BY_ROLE["admin"].ns, f"{topo.processor_url}/health")
        return status == 200

    try:
        wait_for("the processor to be healthy", healthy, PROCESSOR_HEALTHY_TIMEOUT_S, every_s=1)
    except WaitTimeout:
        raise SimError(
            f"processor not healthy after {PROCESSOR_HEALTHY_TIMEOUT_S:.0f} s "
            f"(HTTP {status}: {body}); its log:\n{tail(processor.log)}"
        ) from None
    say(f"vm3: processor healthy on {topo.processor_url}")


def up(topo: Topology, state_dir: Path) -> None:
    preflight()
    left = ours_present()
    if left:
        raise SimError(f"namespaces {left} exist already: run `vmsim.py down` first")
    ensure_installed()
    for role in ("vm1", "vm2", "vm3", "vm4"):
        # Fresh data and logs each time (`up` never runs over a live simulation: checked above).
        shutil.rmtree(state_dir / role, ignore_errors=True)
    state_dir.mkdir(parents=True, exist_ok=True)
    state = State(str(topo.env_file), [])
    state.save(state_dir)
    try:
        create_network(topo)
        apply_firewalls(topo)
        start_servers(topo, state_dir)
        processor = spawn(
            "processor",
            BY_ROLE["vm3"].ns,
            [PY, "-m", "processor"],
            base_env(
                KAFKA_BOOTSTRAP=topo.kafka,
                MONGO_URL=f"mongodb://{topo.mongo}/",
                MONGO_DB="gpu_cost",
                HTTP_HOST=topo.ip("vm3"),
                HTTP_PORT=str(topo.processor_port),
                PROCESSOR_HOST="vm3",
                KAFKA_CLIENT_ID="processor-vm3",
            ),
            state_dir / "vm3" / "processor.log",
        )
        state.processes.append(processor)
        state.save(state_dir)
        wait_healthy(topo, processor)
        producer = spawn(
            "producer",
            BY_ROLE["vm4"].ns,
            [PY, "-m", "producers", "run", "--rate", STEADY_RATE, "--gpu-interval", "5"],
            base_env(KAFKA_BOOTSTRAP=topo.kafka, PRODUCER_HOST="vm4", PRODUCER_PROGRESS_S="0"),
            state_dir / "vm4" / "producer.log",
        )
        state.processes.append(producer)
        state.save(state_dir)
        say(f"vm4: steady producer pid {producer.pid} at {STEADY_RATE} events/s")
    except BaseException:
        say("up failed: tearing down what was made")
        down(state_dir, quiet=True)
        raise
    say(f"up: {len(HOSTS)} hosts ready; state in {state_dir}")


# --------------------------------------------------------------------------- check


@dataclass(frozen=True)
class Flow:
    src: Role
    dst: Role
    port: int
    expect: Literal["open", "blocked", "passes-firewall"]
    why: str


def flows(topo: Topology) -> list[Flow]:
    k, m, p, s = topo.kafka_port, topo.mongo_port, topo.processor_port, topo.ssh_port
    return [
        Flow("vm3", "vm1", k, "open", "processor consumes from Kafka"),
        Flow("vm3", "vm2", m, "open", "processor writes to MongoDB"),
        Flow("vm4", "vm1", k, "open", "producers publish to Kafka"),
        Flow("admin", "vm3", p, "open", "admin reads the API"),
        Flow("vm4", "vm2", m, "blocked", "producers never touch MongoDB"),
        Flow("admin", "vm1", k, "blocked", "admin has no Kafka access"),
        Flow("admin", "vm2", m, "blocked", "admin has no MongoDB access"),
        Flow("vm4", "vm3", p, "blocked", "API only from admin"),
        Flow("vm1", "vm2", m, "blocked", "MongoDB only from the processor"),
        # Nothing listens on 22 here: "refused" proves the SYN got through the firewall,
        # a timeout proves it was dropped.
        Flow("admin", "vm1", s, "passes-firewall", "SSH from admin"),
        Flow("admin", "vm4", s, "passes-firewall", "SSH from admin"),
        Flow("vm3", "vm1", s, "blocked", "SSH only from admin"),
    ]


def check_flows(topo: Topology) -> list[tuple[str, bool, str]]:
    results: list[tuple[str, bool, str]] = []
    todo = flows(topo)
    by_src: dict[Role, list[Flow]] = {}
    for flow in todo:
        by_src.setdefault(flow.src, []).append(flow)
    outcomes: dict[tuple[Role, str], str] = {}
    for src, items in by_src.items():
        targets = [(topo.ip(f.dst), f.port) for f in items]
        for target, outcome in connect_from(BY_ROLE[src].ns, targets).items():
            outcomes[(src, target)] = outcome
    for f in todo:
        outcome = outcomes[(f.src, f"{topo.ip(f.dst)}:{f.port}")]
        good = {
            "open": outcome == "open",
            "blocked": outcome == "timeout",
            "passes-firewall": outcome in ("open", "refused"),
        }[f.expect]
        name = f"{f.expect} {f.src}->{f.dst}:{f.port}"
        results.append((name, good, f"{outcome}; {f.why}"))
    return results


def check_isolation(topo: Topology) -> tuple[str, bool, str]:
    """The root namespace has no address in the simulated network (checked, never connected)."""
    out = run(["ip", "-o", "-4", "addr", "show"])
    network = ipaddress.IPv4Network(f"{topo.ip('vm1')}/{topo.prefix_len}", strict=False)
    found = [
        word.split("/")[0]
        for line in out.splitlines()
        for word in line.split()
        if "/" in word and _is_in(word.split("/")[0], network)
    ]
    return ("root-namespace-isolated", not found,
            f"root namespace addresses in {network}: {found or 'none'}")  # fmt: skip


def _is_in(text: str, network: ipaddress.IPv4Network) -> bool:
    try:
        return ipaddress.IPv4Address(text) in network
    except ValueError:
        return False


def run_smoke(topo: Topology, events: int) -> tuple[int, list[str]]:
    """scripts/smoke-test.sh from the admin host; the producer it runs lives in vm4."""
    env = base_env(
        PROCESSOR_URL=topo.processor_url,
        KAFKA_BOOTSTRAP=topo.kafka,
        SMOKE_EVENTS=str(events),
        SMOKE_HOST=f"smoke-vmsim-{int(time.time())}",
        PYTHON=PY,
        PRODUCER_CMD=shlex.join(in_ns(BY_ROLE["vm4"].ns, PY, "-m", "producers")),
    )
    proc = subprocess.Popen(
        in_ns(BY_ROLE["admin"].ns, "bash", str(SMOKE)),
        cwd=REPO,
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    assert proc.stdout is not None
    lines = []
    for line in proc.stdout:
        line = line.rstrip("\n")
        lines.append(line)
        print(f"{line}", flush=True)
    return proc.wait(), lines


def check(topo: Topology, state_dir: Path, events: int) -> bool:
    preflight()
    missing = [ns for ns in OUR_NAMESPACES if ns not in namespaces()]
    if missing:
        raise SimError(f"namespaces {missing} do not exist: run `vmsim.py up` first")
    failures = 0
    total = 0

    def report(name: str, good: bool, detail: str) -> None:
        nonlocal failures, total
        total += 1
        if good:
            print(f"PASS {name} ({detail})", flush=True)
        else:
            failures += 1
            print(f"FAIL {name}: {detail}", flush=True)

    report(*check_isolation(topo))
    for host in HOSTS:
        if host.firewall is not None:
            listed = run(in_ns(host.ns, "nft", "list", "chain", "inet", "gtc_filter", "input"),
                         check=False)  # fmt: skip
            report(f"firewall-{host.role}", "policy drop" in listed,
                   f"{host.firewall}: input policy drop")  # fmt: skip
    for result in check_flows(topo):
        report(*result)
    state = State.load(state_dir)
    for proc in state.processes if state else []:
        report(f"running-{proc.name}", proc.id.alive(),
               f"pid {proc.pid} in {proc.ns}")  # fmt: skip
    say(f"smoke test from {BY_ROLE['admin'].ns} against {topo.processor_url} ({events} events)")
    code, lines = run_smoke(topo, events)
    steps = [line for line in lines if line.startswith(("PASS ", "FAIL "))]
    total += len(steps)
    failures += sum(1 for line in steps if line.startswith("FAIL "))
    if code != 0 and not any(line.startswith("FAIL ") for line in steps):
        report("smoke-test", False, f"exited {code} without a FAIL line")
    if failures:
        say(f"check: {failures} of {total} checks FAILED")
    else:
        say(f"check: all {total} checks passed")
    return failures == 0


# --------------------------------------------------------------------------- down


def pids_in(ns: str) -> list[int]:
    out = run(["ip", "netns", "pids", ns], check=False)
    return [int(p) for p in out.split() if p.isdigit()]


def _stop_leftovers(ns: str) -> list[str]:
    """Processes still inside one of OUR namespaces were started there by this tool (nothing
    else enters them), e.g. by a run that was killed: stop them by PID."""
    done: list[str] = []
    for pid in pids_in(ns):
        found = ProcessId.of(pid)
        if found is not None:
            done.append(stop_pid(found.pid, found.starttime, f"leftover in {ns}"))
    return done


def down(state_dir: Path, *, quiet: bool = False) -> tuple[bool, list[str]]:
    """Stop every process, then remove every namespace. Returns (clean, notes)."""
    notes: list[str] = []
    state = State.load(state_dir)
    present = set(namespaces())
    # Clients first (producer, processor: they flush / commit), then the servers.
    for proc in reversed(state.processes if state else []):
        notes.append(stop_pid(proc.pid, proc.starttime, f"{proc.name} ({proc.ns})"))
    topo = load_topology(Path(state.env_file)) if state else None
    for role in ("vm2", "vm1"):
        ns = BY_ROLE[role].ns
        if (state_dir / role).exists() and ns in present and topo is not None:
            # Inside the namespace: stack.py's "is the port free yet" probe must not go out
            # through the root namespace's default route.
            out = run(stack_cmd(state_dir, role, "down", topo), check=False, timeout=120)
            notes += [f"{role}: {line}" for line in out.splitlines() if line.strip()]
    for ns in OUR_NAMESPACES:
        if ns in present:
            notes += _stop_leftovers(ns)
    for host in HOSTS:
        if host.ns in present:
            run(["ip", "netns", "del", host.ns])
    if NET_NS in present:
        run(["ip", "netns", "del", NET_NS])
    left = ours_present()
    if left:
        notes.append(f"namespaces left behind: {left}")
    else:
        notes.append(f"no namespace left ({', '.join(OUR_NAMESPACES)} removed)")
    (state_dir / "state.json").unlink(missing_ok=True)
    if not quiet:
        for note in notes:
            say(f"down: {note}")
    return not left, notes


def producer_summary(state_dir: Path) -> str | None:
    log = state_dir / "vm4" / "producer.log"
    try:
        lines = log.read_text(errors="replace").splitlines()
    except OSError:
        return None
    found = [line for line in lines if line.startswith("summary ")]
    return found[-1] if found else None


# --------------------------------------------------------------------------- CLI


@contextmanager
def _terminate_on_sigterm() -> Iterator[None]:
    """SIGTERM behaves like Ctrl-C, so `run` still reaches its teardown."""

    def handler(_signum: int, _frame: object) -> None:
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def cmd_run(topo: Topology, state_dir: Path, events: int) -> int:
    preflight()
    ok = False
    try:
        left = ours_present()
        if left:
            busy = {ns: pids_in(ns) for ns in left}
            busy = {ns: pids for ns, pids in busy.items() if pids}
            if busy:
                raise SimError(
                    f"a simulation is up (processes {busy} in {PREFIX}* namespaces): "
                    "`vmsim.py down` stops it"
                )
            say(f"removing empty namespaces left by an earlier run: {left}")
            down(state_dir)
        up(topo, state_dir)
        ok = check(topo, state_dir, events)
    finally:
        # Always: stop everything, remove every namespace, then say whether it all went.
        log = state_dir / "vm4" / "producer.log"
        clean, _ = down(state_dir)
        summary = producer_summary(state_dir) if log.exists() else None
        if summary is not None:
            good = "failed=0" in summary.split()
            line = (
                f"PASS steady-producer-vm4 ({summary})"
                if good
                else (f"FAIL steady-producer-vm4: {summary}")
            )
            print(line, flush=True)
            ok = ok and good
        if clean:
            print(f"PASS teardown (no {PREFIX}* namespace left, every process stopped)")
        else:
            print(f"FAIL teardown: {PREFIX}* namespaces left: {ours_present()}")
        ok = ok and clean
    say("run: all checks passed" if ok else "run: FAILED")
    return 0 if ok else 1


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="vmsim.py",
        description="Four VMs + admin as network namespaces, with the real servers and firewall.",
    )
    parser.add_argument("command", choices=("up", "check", "down", "run"))
    parser.add_argument("--env-file", type=Path, default=DEFAULT_ENV_FILE,
                        help="addresses and ports (default compose/.env.example)")  # fmt: skip
    parser.add_argument("--state-dir", type=Path, default=DEFAULT_STATE_DIR,
                        help="PIDs, logs and server data (default .state/vmsim)")  # fmt: skip
    parser.add_argument("--events", type=int, default=200,
                        help="token events the smoke test produces (default 200)")  # fmt: skip
    args = parser.parse_args(argv)
    state_dir = args.state_dir.absolute()
    try:
        topo = load_topology(args.env_file.absolute())
        with _terminate_on_sigterm():
            if args.command == "run":
                return cmd_run(topo, state_dir, args.events)
            if args.command == "up":
                up(topo, state_dir)
                return 0
            if args.command == "check":
                return 0 if check(topo, state_dir, args.events) else 1
            preflight()
            clean, _ = down(state_dir)
            return 0 if clean else 1
    except MissingTool as exc:
        print(f"vmsim: {exc}", file=sys.stderr)
        return 3
    except SimError as exc:
        print(f"vmsim: error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("vmsim: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
