#!/usr/bin/env python3
"""The local stack: a real Apache Kafka broker (KRaft) and a real FerretDB, as processes, no Docker.

    .venv/bin/python scripts/stack.py [--state-dir .state] up|status|down
        [--kafka-listen HOST:PORT] [--mongo-listen HOST:PORT] [--only kafka|mongo]

* Kafka 3.9.1 runs from the official jars on Maven Central (collected once with
  ``mvn dependency:copy-dependencies`` from ``scripts/kafka/pom.xml``) with the machine's ``java``.
* FerretDB v1.24.2 (MongoDB wire protocol, SQLite backend) is built once with ``go``.
* Installs are cached under ``<repo>/.cache`` (``--cache-dir`` / ``STACK_CACHE_DIR``); state
  (PID files, logs, data) lives under the state dir.
* ``up`` is idempotent, readiness is decided by asking each server, ``down`` stops exactly the
  processes that ``up`` started (verified through ``/proc/<pid>``), by PID.

See docs/local-stack.md. The module is importable: tests use :func:`up`, :func:`down`,
:func:`status`, :func:`kafka_answers`, :func:`mongo_answers` and :func:`ensure_topics`.
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import fcntl
import json
import logging
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final, Literal

try:
    from confluent_kafka import KafkaError, KafkaException
    from confluent_kafka.admin import AdminClient
    from confluent_kafka.cimpl import NewTopic
    from pymongo import MongoClient
    from pymongo.errors import PyMongoError
except ImportError as exc:  # pragma: no cover - only without the virtualenv
    sys.exit(
        f"stack.py: {exc}. Run it with the project's virtualenv: "
        "`make install` then `.venv/bin/python scripts/stack.py ...`."
    )

REPO: Final = Path(__file__).resolve().parent.parent
KAFKA_VERSION: Final = "3.9.1"
KAFKA_POM: Final = REPO / "scripts" / "kafka" / "pom.xml"
KAFKA_LOG4J: Final = REPO / "scripts" / "kafka" / "log4j.properties"
KAFKA_HEAP: Final = ("-Xmx384m", "-Xms128m")
FERRETDB_MODULE: Final = "github.com/FerretDB/FerretDB"
FERRETDB_VERSION: Final = "v1.24.2"
FALLBACK_GOTOOLCHAIN: Final = "go1.24.3"
# Recorded in the binary (`ferretdb --version` -> "package: ..."); a cached binary without it is
# rebuilt. Bump it whenever FERRETDB_PATCHES changes.
FERRETDB_PACKAGE: Final = "local-stack+group-accumulators-fix"

DEFAULT_STATE_DIR: Final = Path(".state")
DEFAULT_KAFKA_LISTEN: Final = "127.0.0.1:9092"
DEFAULT_MONGO_LISTEN: Final = "127.0.0.1:27017"
DEFAULT_TOPIC: Final = "tokens"
DEFAULT_DLQ_TOPIC: Final = "tokens.dlq"
TOPIC_PARTITIONS: Final = 12
DLQ_PARTITIONS: Final = 3

KAFKA_READY_TIMEOUT_S: Final = 90.0
MONGO_READY_TIMEOUT_S: Final = 60.0
KAFKA_STOP_TIMEOUT_S: Final = 30.0
MONGO_STOP_TIMEOUT_S: Final = 15.0
KILL_WAIT_S: Final = 10.0
PORT_RELEASE_TIMEOUT_S: Final = 10.0
CMDLINE_RETRIES: Final = 20
MAVEN_TIMEOUT_S: Final = 15 * 60.0
GO_BUILD_TIMEOUT_S: Final = 30 * 60.0

Server = Literal["kafka", "mongo"]
SERVERS: Final[tuple[Server, ...]] = ("kafka", "mongo")

# librdkafka logs connection failures to stderr unless given a logger; keep probes quiet.
_QUIET: Final = logging.getLogger("stack.rdkafka")
_QUIET.addHandler(logging.NullHandler())
_QUIET.propagate = False

# Popen objects of the servers this interpreter started: kept so that stopping one reaps it
# (no zombie in our own process table) and no "still running" ResourceWarning fires.
_CHILDREN: dict[int, subprocess.Popen[bytes]] = {}
_EXIT_CODES: dict[int, int] = {}


class StackError(Exception):
    """Something the user has to act on; main() prints it and exits non-zero."""


class MissingToolError(StackError):
    """A program the stack needs (java, mvn, go) is not on PATH."""


# --------------------------------------------------------------------------- addresses, config


@dataclass(frozen=True)
class Address:
    host: str
    port: int

    @classmethod
    def parse(cls, text: str) -> Address:
        host, sep, port = text.strip().rpartition(":")
        host = host.strip("[]")
        if not sep or not host or not port.isdigit() or not 0 < int(port) < 65535:
            raise StackError(f"bad address {text!r}: expected HOST:PORT, e.g. 127.0.0.1:9092")
        return cls(host, int(port))

    def __str__(self) -> str:
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"

    def next_port(self) -> Address:
        return Address(self.host, self.port + 1)


def default_kafka_listen() -> Address:
    return Address.parse(os.environ.get("STACK_KAFKA_LISTEN") or DEFAULT_KAFKA_LISTEN)


def default_mongo_listen() -> Address:
    return Address.parse(os.environ.get("STACK_MONGO_LISTEN") or DEFAULT_MONGO_LISTEN)


def default_cache_dir() -> Path:
    return Path(os.environ.get("STACK_CACHE_DIR") or REPO / ".cache")


def topic_names() -> dict[str, int]:
    """The project's topics and their partition counts (names overridable by env)."""
    return {
        os.environ.get("KAFKA_TOPIC") or DEFAULT_TOPIC: TOPIC_PARTITIONS,
        os.environ.get("KAFKA_DLQ_TOPIC") or DEFAULT_DLQ_TOPIC: DLQ_PARTITIONS,
    }


def mongo_url(address: Address | str) -> str:
    return f"mongodb://{address}/"


@dataclass(frozen=True)
class StackConfig:
    state_dir: Path
    kafka_listen: Address
    mongo_listen: Address
    cache_dir: Path

    @classmethod
    def make(
        cls,
        state_dir: Path | str = DEFAULT_STATE_DIR,
        *,
        kafka_listen: Address | str | None = None,
        mongo_listen: Address | str | None = None,
        cache_dir: Path | str | None = None,
    ) -> StackConfig:
        def addr(value: Address | str | None, default: Address) -> Address:
            if value is None:
                return default
            return value if isinstance(value, Address) else Address.parse(value)

        return cls(
            state_dir=Path(state_dir).absolute(),
            kafka_listen=addr(kafka_listen, default_kafka_listen()),
            mongo_listen=addr(mongo_listen, default_mongo_listen()),
            cache_dir=Path(cache_dir).absolute() if cache_dir else default_cache_dir().absolute(),
        )

    def listen(self, server: Server) -> Address:
        return self.kafka_listen if server == "kafka" else self.mongo_listen

    def log_path(self, server: Server) -> Path:
        return self.state_dir / f"{server}.log"


@dataclass
class ServerState:
    """What one server of the stack is doing (returned by up() and status())."""

    name: Server
    address: Address
    pid: int | None = None
    running: bool = False  # a process this state dir started is alive
    answering: bool = False  # the server answered a real request
    started_now: bool = False
    detail: str = ""
    log: Path | None = None

    @property
    def ok(self) -> bool:
        return self.running and self.answering


def _selected(only: str | None) -> tuple[Server, ...]:
    if only is None:
        return SERVERS
    if only not in SERVERS:
        raise StackError(f"--only must be one of {', '.join(SERVERS)}, not {only!r}")
    return (only,)


# --------------------------------------------------------------------------- small helpers


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    """An exclusive fcntl lock on *path* (created if missing) for the duration of the block."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a+b") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _say(message: str) -> None:
    print(message, flush=True)


def _rel(path: Path) -> str:
    try:
        return str(path.relative_to(Path.cwd()))
    except ValueError:
        return str(path)


_START_MARK: Final = "===== "
_ERROR_RE: Final = re.compile(
    r"\b(ERROR|FATAL|Exception|panic)\b|BindException|address already in use"
)


def _tail(path: Path, lines: int = 25) -> str:
    """The end of a server log since its last start, led by the first error line if any."""
    try:
        text = path.read_bytes()[-256_000:].decode("utf-8", "replace")
    except OSError:
        return f"(no log at {path})"
    run = text.splitlines()
    starts = [i for i, line in enumerate(run) if line.startswith(_START_MARK)]
    run = run[starts[-1] :] if starts else run
    shown = run[-lines:]
    first_error = next((line for line in run if _ERROR_RE.search(line)), None)
    if first_error is not None and first_error not in shown:
        shown = [f"(first error) {first_error}", "...", *shown]
    return "\n".join("    | " + line for line in shown)


def _last_line(path: Path) -> str:
    try:
        text = path.read_bytes()[-4096:].decode("utf-8", "replace")
    except OSError:
        return ""
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return lines[-1][:140] if lines else ""


def _write_atomic(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def tcp_open(address: Address, timeout: float = 1.0) -> bool:
    """True if something accepts TCP connections on *address*."""
    try:
        with socket.create_connection((address.host, address.port), timeout=timeout):
            return True
    except OSError:
        return False


def require_tool(name: str, purpose: str) -> str:
    path = shutil.which(name)
    if path is None:
        raise MissingToolError(
            f"`{name}` is not on PATH; it is needed {purpose}. Install it "
            f"(Debian/Ubuntu: {_APT_HINT.get(name, name)}) and run again."
        )
    return path


_APT_HINT: Final = {
    "java": "apt-get install openjdk-17-jre-headless",
    "mvn": "apt-get install maven",
    "go": "Go 1.24+ from https://go.dev/dl/",
}


def _run_logged(
    cmd: Sequence[str],
    *,
    what: str,
    log_path: Path,
    timeout: float,
    cwd: Path | None = None,
    env: Mapping[str, str] | None = None,
) -> float:
    """Run a long install step with its output in *log_path*, printing a heartbeat."""
    log_path.parent.mkdir(parents=True, exist_ok=True)
    _say(f"==> {what}\n    $ {' '.join(cmd)}\n    (output in {_rel(log_path)})")
    start = time.monotonic()
    next_beat = start + 10.0
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(
            list(cmd),
            cwd=cwd,
            env=dict(env) if env else None,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        try:
            while True:
                try:
                    returncode = proc.wait(timeout=1.0)
                    break
                except subprocess.TimeoutExpired:
                    pass
                now = time.monotonic()
                if now - start > timeout:
                    raise StackError(f"{what}: no result after {timeout:.0f} s; gave up")
                if now >= next_beat:
                    _say(f"    ... {now - start:4.0f} s  {_last_line(log_path) or 'working'}")
                    next_beat = now + 15.0
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    elapsed = time.monotonic() - start
    if returncode != 0:
        raise StackError(
            f"{what} failed (exit {returncode}) after {elapsed:.1f} s; "
            f"last lines of {log_path}:\n{_tail(log_path, 25)}"
        )
    _say(f"    done in {elapsed:.1f} s")
    return elapsed


# --------------------------------------------------------------------------- installs


def kafka_libs_dir(cache_dir: Path) -> Path:
    return cache_dir / f"kafka-{KAFKA_VERSION}" / "libs"


def kafka_installed(cache_dir: Path) -> bool:
    libs = kafka_libs_dir(cache_dir)
    return (libs.parent / ".complete").exists() and (
        libs / f"kafka_2.13-{KAFKA_VERSION}.jar"
    ).exists()


def install_kafka(cache_dir: Path) -> Path:
    """The directory of the Kafka broker's jars, downloaded with Maven on first use."""
    libs = kafka_libs_dir(cache_dir)
    if kafka_installed(cache_dir):
        return libs
    with _locked(cache_dir / "install.lock"):
        if kafka_installed(cache_dir):
            return libs
        mvn = require_tool("mvn", f"once, to download the Kafka {KAFKA_VERSION} jars")
        partial = libs.with_name("libs.partial")
        shutil.rmtree(partial, ignore_errors=True)
        elapsed = _run_logged(
            [
                mvn,
                "-B",
                "-f",
                str(KAFKA_POM),
                "dependency:copy-dependencies",
                "-DincludeScope=runtime",
                f"-Dkafka.version={KAFKA_VERSION}",
                f"-DoutputDirectory={partial}",
            ],
            what=f"Downloading Apache Kafka {KAFKA_VERSION} jars from Maven Central",
            log_path=cache_dir / "logs" / "mvn-kafka.log",
            timeout=MAVEN_TIMEOUT_S,
        )
        if not (partial / f"kafka_2.13-{KAFKA_VERSION}.jar").exists():
            raise StackError(f"mvn finished but {partial} holds no kafka_2.13-{KAFKA_VERSION}.jar")
        shutil.rmtree(libs, ignore_errors=True)
        partial.rename(libs)
        (libs.parent / ".complete").write_text(f"{KAFKA_VERSION}\n")
        jars = len(list(libs.glob("*.jar")))
        _say(f"    Kafka {KAFKA_VERSION}: {jars} jars in {_rel(libs)} ({elapsed:.1f} s)")
    return libs


# FerretDB v1.24.2 bug: `$group` hands ONE iterator over the group's documents to every
# accumulator in turn, so the first accumulator consumes it and every later one sees no documents
# ({"a": {"$sum": "$a"}, "n": {"$sum": 1}} -> n == 0). MongoDB (and the compose deployment) give
# each accumulator all documents; the processor's rollups rely on that. The fix: a fresh iterator
# per accumulator. (path inside the module, upstream text, patched text)
FERRETDB_PATCHES: Final = (
    (
        "internal/handler/common/aggregations/stages/group.go",
        """\
		groupIter := iterator.Values(iterator.ForSlice(groupedDocument.documents))
		defer groupIter.Close()

		for _, accumulation := range g.groupBy {
			out, err := accumulation.accumulator.Accumulate(groupIter)
""",
        """\
		for _, accumulation := range g.groupBy {
			// local-stack patch: a fresh iterator per accumulator (upstream shares one).
			groupIter := iterator.Values(iterator.ForSlice(groupedDocument.documents))
			out, err := accumulation.accumulator.Accumulate(groupIter)
			groupIter.Close()
""",
    ),
)


def _patch_ferretdb(src: Path) -> None:
    for relpath, upstream, patched in FERRETDB_PATCHES:
        path = src / relpath
        text = path.read_text()
        if text.count(upstream) != 1:
            raise StackError(f"FerretDB patch does not apply: {relpath} changed upstream")
        path.write_text(text.replace(upstream, patched))
        _say(f"    patched {relpath} ($group: one iterator per accumulator)")


def ferretdb_binary(cache_dir: Path) -> Path:
    return cache_dir / "bin" / "ferretdb"


def _ferretdb_version(binary: Path) -> tuple[str, str] | None:
    """(version, package) that *binary* reports, or None if it does not run."""
    if not os.access(binary, os.X_OK):
        return None
    try:
        out = subprocess.run(
            [str(binary), "--version"], capture_output=True, text=True, timeout=30, check=False
        ).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    version = re.search(r"^version:\s*(\S+)", out, re.MULTILINE)
    package = re.search(r"^package:\s*(\S+)", out, re.MULTILINE)
    if not version:
        return None
    return version.group(1), package.group(1) if package else ""


def ferretdb_installed(cache_dir: Path) -> bool:
    return _ferretdb_version(ferretdb_binary(cache_dir)) == (FERRETDB_VERSION, FERRETDB_PACKAGE)


def _make_writable(root: Path) -> None:
    for dirpath, _dirnames, filenames in os.walk(root):
        os.chmod(dirpath, 0o755)
        for name in filenames:
            os.chmod(os.path.join(dirpath, name), 0o644)


def _build_ferretdb(go: str, cache_dir: Path, toolchain: str | None) -> None:
    """Build FerretDB from its released module source with ``go install`` into cache/bin.

    Why not plain ``go install github.com/FerretDB/FerretDB/cmd/ferretdb@v1.24.2``: that binary
    panics at start-up ("Invalid build/version/version.txt"): FerretDB embeds a generated
    ``build/version/version.txt`` that the module zip does not contain. (On this machine the
    command does not even get that far: the Go proxy refuses the module's version list, which
    ``go install pkg@version`` reads for its deprecation check.) So: download the module at the
    release tag (checksum-verified by the go command), add version.txt/commit.txt the way the
    project's own ``bin/task gen-version`` does, apply FERRETDB_PATCHES, and
    ``go install ./cmd/ferretdb`` from there (GOBIN=<cache>/bin).
    """
    env = dict(os.environ, GOBIN=str(cache_dir / "bin"), CGO_ENABLED="0")
    if toolchain:
        env["GOTOOLCHAIN"] = toolchain
    label = f" (GOTOOLCHAIN={toolchain})" if toolchain else ""
    logs = cache_dir / "logs"
    _run_logged(
        [go, "mod", "download", "-json", f"{FERRETDB_MODULE}@{FERRETDB_VERSION}"],
        what=f"Downloading FerretDB {FERRETDB_VERSION} source through the Go module proxy{label}",
        log_path=logs / "ferretdb-download.log",
        timeout=GO_BUILD_TIMEOUT_S,
        cwd=cache_dir,
        env=env,
    )
    raw = (logs / "ferretdb-download.log").read_text()
    info = json.loads(raw[raw.index("{") : raw.rindex("}") + 1])
    if info.get("Error") or not info.get("Dir"):
        raise StackError(f"go mod download: {info.get('Error') or 'no module directory'}")
    src = cache_dir / "src" / f"ferretdb-{FERRETDB_VERSION}"
    if src.exists():
        _make_writable(src)
        shutil.rmtree(src)
    shutil.copytree(info["Dir"], src, copy_function=shutil.copyfile)
    _make_writable(src)
    version_dir = src / "build" / "version"
    (version_dir / "version.txt").write_text(f"{FERRETDB_VERSION}\n")
    commit = str(info.get("Origin", {}).get("Hash", ""))
    if commit:
        (version_dir / "commit.txt").write_text(f"{commit}\n")
    (version_dir / "package.txt").write_text(f"{FERRETDB_PACKAGE}\n")
    _patch_ferretdb(src)
    try:
        _run_logged(
            [go, "install", "-trimpath", "-buildvcs=false", "./cmd/ferretdb"],
            what=f"Building FerretDB {FERRETDB_VERSION} (pure Go, SQLite backend){label}",
            log_path=logs / "ferretdb-build.log",
            timeout=GO_BUILD_TIMEOUT_S,
            cwd=src,
            env=env,
        )
    finally:
        _make_writable(src)
        shutil.rmtree(src, ignore_errors=True)
    version = _ferretdb_version(ferretdb_binary(cache_dir))
    if version != (FERRETDB_VERSION, FERRETDB_PACKAGE):
        raise StackError(f"built {ferretdb_binary(cache_dir)} reports (version, package) {version}")


def install_ferretdb(cache_dir: Path) -> Path:
    """The FerretDB binary, built with Go on first use."""
    binary = ferretdb_binary(cache_dir)
    if ferretdb_installed(cache_dir):
        return binary
    with _locked(cache_dir / "install.lock"):
        if ferretdb_installed(cache_dir):
            return binary
        go = require_tool("go", f"once, to build FerretDB {FERRETDB_VERSION}")
        start = time.monotonic()
        errors: list[str] = []
        for toolchain in (None, FALLBACK_GOTOOLCHAIN):
            try:
                _build_ferretdb(go, cache_dir, toolchain)
                break
            except StackError as exc:
                errors.append(str(exc))
                if toolchain is None:
                    _say(
                        f"    the machine's Go failed; retrying, GOTOOLCHAIN={FALLBACK_GOTOOLCHAIN}"
                    )
        else:
            raise StackError("could not build FerretDB:\n" + "\n".join(errors))
        _say(f"    FerretDB {FERRETDB_VERSION}: {_rel(binary)} ({time.monotonic() - start:.1f} s)")
    return binary


def installed(cache_dir: Path | None = None, only: str | None = None) -> bool:
    """True if nothing needs downloading or building for the selected servers."""
    cache = cache_dir or default_cache_dir()
    checks = {"kafka": kafka_installed, "mongo": ferretdb_installed}
    return all(checks[name](cache) for name in _selected(only))


# --------------------------------------------------------------------------- processes


def _pid_path(state_dir: Path, server: Server) -> Path:
    return state_dir / f"{server}.pid"


def _meta_path(state_dir: Path, server: Server) -> Path:
    return state_dir / f"{server}.meta.json"


def _proc_stat(pid: int) -> tuple[str, int] | None:
    """(state letter, start time in clock ticks) of *pid*, or None if there is no such process."""
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = raw[raw.rindex(")") + 2 :].split()
    return fields[0], int(fields[19])


def _proc_cmdline(pid: int) -> list[str]:
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return []
    return [part.decode("utf-8", "replace") for part in raw.split(b"\0") if part]


def _reap(pid: int) -> None:
    child = _CHILDREN.get(pid)
    if child is not None and child.poll() is not None:
        _EXIT_CODES[pid] = child.returncode
        del _CHILDREN[pid]


def _exit_note(pid: int) -> str:
    """' (exit status N)' / ' (killed by SIGX)' for a child of this interpreter, else ''."""
    _reap(pid)
    code = _EXIT_CODES.get(pid)
    if code is None:
        return ""
    if code < 0:
        with contextlib.suppress(ValueError):
            return f" (killed by {signal.Signals(-code).name})"
    return f" (exit status {code})"


def _alive(pid: int, starttime: int) -> bool:
    """The process *pid* that started at *starttime* still runs (zombies count as gone)."""
    _reap(pid)
    stat = _proc_stat(pid)
    return stat is not None and stat[0] != "Z" and stat[1] == starttime


def process_starttime(pid: int) -> int | None:
    """Start time (clock ticks since boot) of a running *pid*; None if gone or a zombie."""
    stat = _proc_stat(pid)
    return None if stat is None or stat[0] == "Z" else stat[1]


def process_alive(pid: int, starttime: int) -> bool:
    """The process *pid* that started at *starttime* (see process_starttime) still runs."""
    return _alive(pid, starttime)


def pid_is_gone(pid: int) -> bool:
    """True if no process *pid* runs (it does not exist or is a zombie awaiting its reaper)."""
    _reap(pid)
    stat = _proc_stat(pid)
    return stat is None or stat[0] == "Z"


@dataclass
class _Meta:
    pid: int
    starttime: int
    cmdline: list[str]
    address: Address
    started_at: str = ""

    def is_ours(self) -> bool:
        """The recorded process still runs and is the very one we started."""
        if not _alive(self.pid, self.starttime):
            return False
        # /proc/PID/cmdline reads empty for a moment while a new process sets up its memory
        # (seen with FerretDB right after its start): empty means "ask again", not "different".
        for _ in range(CMDLINE_RETRIES):
            cmdline = _proc_cmdline(self.pid)
            if cmdline:
                return cmdline == self.cmdline
            time.sleep(0.05)
        # Still unreadable: PID plus start time (clock ticks since boot) identify it alone.
        return _alive(self.pid, self.starttime)


def _read_meta(state_dir: Path, server: Server) -> _Meta | None:
    try:
        raw = json.loads(_meta_path(state_dir, server).read_text())
        pid = int(_pid_path(state_dir, server).read_text().split()[0])
        meta = _Meta(
            pid=int(raw["pid"]),
            starttime=int(raw["starttime"]),
            cmdline=[str(x) for x in raw["cmdline"]],
            address=Address.parse(str(raw["address"])),
            started_at=str(raw.get("started_at", "")),
        )
    except (OSError, ValueError, KeyError, IndexError, TypeError, StackError):
        return None
    return meta if meta.pid == pid else None


def _has_pid_files(state_dir: Path, server: Server) -> bool:
    return _pid_path(state_dir, server).exists() or _meta_path(state_dir, server).exists()


def _remove_pid_files(state_dir: Path, server: Server) -> None:
    for path in (_pid_path(state_dir, server), _meta_path(state_dir, server)):
        path.unlink(missing_ok=True)


def running_pid(state_dir: Path | str, server: Server) -> int | None:
    """PID of *server* if this state dir started it and it still runs, else None."""
    meta = _read_meta(Path(state_dir).absolute(), server)
    return meta.pid if meta is not None and meta.is_ours() else None


def _spawn(cfg: StackConfig, server: Server, cmd: list[str], cwd: Path) -> _Meta:
    log_path = cfg.log_path(server)
    stamp = time.strftime("%Y-%m-%dT%H:%M:%S%z")
    with open(log_path, "ab") as log:
        log.write(f"\n{_START_MARK}{stamp} stack.py starting {server}: {' '.join(cmd)}\n".encode())
        log.flush()
        proc = subprocess.Popen(
            cmd,
            cwd=cwd,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            close_fds=True,
        )
    _CHILDREN[proc.pid] = proc
    stat = _proc_stat(proc.pid)
    if stat is None:
        raise StackError(f"{server} exited at once; see {log_path}:\n{_tail(log_path)}")
    meta = _Meta(proc.pid, stat[1], cmd, cfg.listen(server), stamp)
    _write_atomic(
        _meta_path(cfg.state_dir, server),
        json.dumps(
            {
                "pid": meta.pid,
                "starttime": meta.starttime,
                "cmdline": meta.cmdline,
                "address": str(meta.address),
                "started_at": stamp,
                "log": str(log_path),
            },
            indent=2,
        )
        + "\n",
    )
    _write_atomic(_pid_path(cfg.state_dir, server), f"{proc.pid}\n")
    return meta


def _signal_ours(meta: _Meta, sig: signal.Signals) -> bool:
    if not meta.is_ours():
        return False
    try:
        os.kill(meta.pid, sig)
    except ProcessLookupError:
        return False
    return True


def _wait_gone(meta: _Meta, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while _alive(meta.pid, meta.starttime):
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.1)
    return True


def _server_ports(server: Server, address: Address) -> list[Address]:
    return [address, address.next_port()] if server == "kafka" else [address]


def _wait_ports_free(addresses: Sequence[Address], timeout: float) -> list[Address]:
    deadline = time.monotonic() + timeout
    busy = [a for a in addresses if tcp_open(a, 0.5)]
    while busy and time.monotonic() < deadline:
        time.sleep(0.2)
        busy = [a for a in busy if tcp_open(a, 0.5)]
    return busy


# --------------------------------------------------------------------------- readiness probes


def _admin(bootstrap: str, timeout: float) -> AdminClient:
    conf: dict[str, str | int | float | bool] = {
        "bootstrap.servers": bootstrap,
        "socket.connection.setup.timeout.ms": max(1000, int(timeout * 1000)),
        "reconnect.backoff.ms": 100,
        "reconnect.backoff.max.ms": 1000,
    }
    return AdminClient(conf, logger=_QUIET)


def kafka_metadata(bootstrap: str, timeout: float = 5.0) -> Any | None:
    """Cluster metadata if a Kafka broker answers on *bootstrap* within *timeout*, else None."""
    first = bootstrap.split(",")[0]
    with contextlib.suppress(StackError):
        if not tcp_open(Address.parse(first), min(timeout, 2.0)):
            return None
    try:
        metadata = _admin(bootstrap, timeout).list_topics(timeout=timeout)
    except KafkaException:
        return None
    return metadata if metadata.brokers else None


def kafka_answers(bootstrap: str, timeout: float = 5.0) -> bool:
    return kafka_metadata(bootstrap, timeout) is not None


def mongo_answers(url_or_address: str | Address, timeout: float = 5.0) -> bool:
    """True if a MongoDB-wire server answers ``ping``."""
    url = str(url_or_address)
    if not url.startswith("mongodb"):
        url = mongo_url(url)
    ms = max(500, int(timeout * 1000))
    client: MongoClient[dict[str, Any]] = MongoClient(
        url,
        serverSelectionTimeoutMS=ms,
        connectTimeoutMS=ms,
        socketTimeoutMS=ms,
        directConnection=True,
        appname="stack.py",
    )
    try:
        client.admin.command("ping")
        return True
    except PyMongoError:
        return False
    finally:
        client.close()


def answers(server: Server, address: Address | str, timeout: float = 5.0) -> bool:
    """True if *server* ("kafka" or "mongo") answers a real request on *address*."""
    address = address if isinstance(address, Address) else Address.parse(address)
    if server == "kafka":
        return kafka_answers(str(address), timeout)
    return tcp_open(address, min(timeout, 2.0)) and mongo_answers(address, timeout)


def _wait_ready(cfg: StackConfig, server: Server, meta: _Meta, timeout: float) -> float:
    """Ask the server until it answers; error with its log if it dies or the deadline passes."""
    start = time.monotonic()
    deadline = start + timeout
    log = cfg.log_path(server)
    while True:
        if not meta.is_ours():
            if _alive(meta.pid, meta.starttime):
                what = f"now runs {' '.join(_proc_cmdline(meta.pid))[:200]!r}, not the server"
            else:
                what = f"exited{_exit_note(meta.pid)}"
            raise StackError(
                f"{server} (pid {meta.pid}) {what} before answering on {meta.address}; "
                f"last lines of {log}:\n{_tail(log)}"
            )
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise StackError(
                f"{server} (pid {meta.pid}) did not answer on {meta.address} within "
                f"{timeout:.0f} s; last lines of {log}:\n{_tail(log)}"
            )
        if answers(server, meta.address, min(3.0, max(remaining, 0.5))):
            return time.monotonic() - start
        time.sleep(0.25)


# --------------------------------------------------------------------------- kafka specifics


def _java_major(java: str) -> int | None:
    try:
        out = subprocess.run(
            [java, "-version"], capture_output=True, text=True, timeout=60, check=False
        )
    except (OSError, subprocess.SubprocessError):
        return None
    match = re.search(r'version "(\d+)(?:\.(\d+))?', out.stderr + out.stdout)
    if not match:
        return None
    major = int(match.group(1))
    return int(match.group(2) or 0) if major == 1 else major


def new_cluster_id() -> str:
    """16 random bytes, URL-safe base64 without padding, not starting with '-' (as Kafka's)."""
    while True:
        cid = base64.urlsafe_b64encode(os.urandom(16)).rstrip(b"=").decode()
        if not cid.startswith("-"):
            return cid


def _kafka_properties(cfg: StackConfig, data_dir: Path) -> str:
    broker = cfg.kafka_listen
    controller = broker.next_port()
    lines = {
        "process.roles": "broker,controller",
        "node.id": "1",
        "controller.quorum.voters": f"1@{controller}",
        "listeners": f"PLAINTEXT://{broker},CONTROLLER://{controller}",
        "advertised.listeners": f"PLAINTEXT://{broker}",
        "controller.listener.names": "CONTROLLER",
        "inter.broker.listener.name": "PLAINTEXT",
        "listener.security.protocol.map": "CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT",
        "log.dirs": str(data_dir),
        "num.partitions": "1",
        "default.replication.factor": "1",
        "min.insync.replicas": "1",
        "offsets.topic.replication.factor": "1",
        "offsets.topic.num.partitions": "12",
        "transaction.state.log.replication.factor": "1",
        "transaction.state.log.min.isr": "1",
        "group.initial.rebalance.delay.ms": "0",
        "auto.create.topics.enable": "false",
        "delete.topic.enable": "true",
        "num.network.threads": "3",
        "num.io.threads": "4",
        "log.retention.hours": "168",
    }
    body = "".join(f"{key}={value}\n" for key, value in lines.items())
    return f"# Written by scripts/stack.py on every `up`; edits are overwritten.\n{body}"


def _kafka_java_cmd(java: str, libs: Path, main: str, *args: str, heap: Sequence[str]) -> list[str]:
    return [
        java,
        *heap,
        "-XX:+UseG1GC",
        "-XX:MaxGCPauseMillis=20",
        "-XX:InitiatingHeapOccupancyPercent=35",
        "-XX:+ExplicitGCInvokesConcurrent",
        "-Djava.awt.headless=true",
        f"-Dlog4j.configuration=file:{KAFKA_LOG4J}",
        "-cp",
        f"{libs}/*",
        main,
        *args,
    ]


def _prepare_kafka(cfg: StackConfig, java: str, libs: Path) -> list[str]:
    home = cfg.state_dir / "kafka"
    data = home / "data"
    data.mkdir(parents=True, exist_ok=True)
    props = home / "server.properties"
    _write_atomic(props, _kafka_properties(cfg, data))
    if not (data / "meta.properties").exists():
        id_file = home / "cluster.id"
        if not id_file.exists():
            id_file.write_text(new_cluster_id() + "\n")
        cluster_id = id_file.read_text().strip()
        cmd = _kafka_java_cmd(
            java,
            libs,
            "kafka.tools.StorageTool",
            "format",
            "-t",
            cluster_id,
            "-c",
            str(props),
            "--ignore-formatted",
            heap=("-Xmx256m",),
        )
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=180, check=False)
        if out.returncode != 0:
            raise StackError(
                f"kafka.tools.StorageTool format failed (exit {out.returncode}):\n"
                f"{out.stdout}{out.stderr}"
            )
        _say(f"kafka: formatted KRaft storage in {_rel(data)} (cluster id {cluster_id})")
    return _kafka_java_cmd(java, libs, "kafka.Kafka", str(props), heap=KAFKA_HEAP)


def _prepare_mongo(cfg: StackConfig, binary: Path) -> list[str]:
    home = cfg.state_dir / "ferretdb"
    data = home / "data"
    data.mkdir(parents=True, exist_ok=True)
    return [
        str(binary),
        "--handler=sqlite",
        f"--sqlite-url=file:{data}/",
        f"--listen-addr={cfg.mongo_listen}",
        "--telemetry=disable",
        f"--state-dir={home}",
        "--debug-addr=-",
        # STACK.md suggests warn; but at warn FerretDB dumps every failed command's full response
        # (each pymongo close sends the unsupported endSessions, each duplicate key is a failure).
        "--log-level=error",
    ]


def ensure_topics(
    bootstrap: str,
    topics: Mapping[str, int] | None = None,
    *,
    replication_factor: int = 1,
    timeout: float = 30.0,
) -> dict[str, str]:
    """Create *topics* ({name: partitions}) if missing; returns {name: "created"|"exists"}.

    Idempotent: TOPIC_ALREADY_EXISTS is success. Waits until the metadata shows every topic.
    """
    wanted = dict(topics) if topics is not None else topic_names()
    admin = _admin(bootstrap, timeout)
    futures = admin.create_topics(
        [
            NewTopic(name, num_partitions=n, replication_factor=replication_factor)
            for name, n in wanted.items()
        ],
        operation_timeout=timeout,
        request_timeout=timeout,
    )
    result: dict[str, str] = {}
    for name, future in futures.items():
        try:
            future.result(timeout=timeout)
            result[name] = "created"
        except KafkaException as exc:
            error = exc.args[0]
            if isinstance(error, KafkaError) and error.code() == KafkaError.TOPIC_ALREADY_EXISTS:
                result[name] = "exists"
            else:
                raise StackError(f"creating topic {name!r} on {bootstrap}: {error}") from exc
    deadline = time.monotonic() + timeout
    while True:
        metadata = admin.list_topics(timeout=timeout)
        missing = [n for n in wanted if n not in metadata.topics or metadata.topics[n].error]
        if not missing:
            break
        if time.monotonic() > deadline:
            raise StackError(
                f"topics {missing} not visible in {bootstrap} metadata after {timeout:.0f} s"
            )
        time.sleep(0.2)
    for name, partitions in wanted.items():
        actual = len(metadata.topics[name].partitions)
        if actual != partitions:
            _say(f"kafka: warning: topic {name!r} has {actual} partitions, not {partitions}")
    return result


# --------------------------------------------------------------------------- up / status / down


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
    servers = _selected(only)
    cfg.state_dir.mkdir(parents=True, exist_ok=True)
    begin = time.monotonic()
    states: dict[Server, ServerState] = {}
    with _locked(cfg.state_dir / "stack.lock"):
        running: dict[Server, _Meta] = {}
        for server in servers:
            meta = _read_meta(cfg.state_dir, server)
            if meta is not None and meta.is_ours():
                if meta.address != cfg.listen(server):
                    raise StackError(
                        f"{server} already runs from {cfg.state_dir} on {meta.address} "
                        f"(pid {meta.pid}), not on the requested {cfg.listen(server)}; "
                        "run `down` first to move it"
                    )
                running[server] = meta
            elif _has_pid_files(cfg.state_dir, server):
                _remove_pid_files(cfg.state_dir, server)  # stale: that process is gone

        to_start = [s for s in servers if s not in running]
        for server in to_start:
            busy = [a for a in _server_ports(server, cfg.listen(server)) if tcp_open(a, 0.5)]
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
            major = _java_major(java)
            if major is not None and major < 11:
                raise StackError(f"Kafka {KAFKA_VERSION} needs Java 11 or newer; {java} is {major}")
            libs = install_kafka(cfg.cache_dir)
            commands["kafka"] = _prepare_kafka(cfg, java, libs)
            cwd["kafka"] = cfg.state_dir / "kafka"
        if "mongo" in to_start:
            binary = install_ferretdb(cfg.cache_dir)
            commands["mongo"] = _prepare_mongo(cfg, binary)
            cwd["mongo"] = cfg.state_dir / "ferretdb"

        started: dict[Server, _Meta] = {}
        try:
            for server in to_start:
                started[server] = _spawn(cfg, server, commands[server], cwd[server])
                _say(f"{server}: started pid {started[server].pid} on {cfg.listen(server)}")
            for server in servers:
                if server in running:
                    meta = running[server]
                    _say(f"{server}: already running (pid {meta.pid}, {meta.address})")
                else:
                    meta = started[server]
                timeout = kafka_timeout if server == "kafka" else mongo_timeout
                waited = _wait_ready(cfg, server, meta, timeout)
                if server in started:
                    _say(f"{server}: answering on {meta.address} after {waited:.1f} s")
                states[server] = ServerState(
                    name=server,
                    address=meta.address,
                    pid=meta.pid,
                    running=True,
                    answering=True,
                    started_now=server in started,
                    log=cfg.log_path(server),
                )
            if create_topics and "kafka" in servers:
                bootstrap = str(cfg.kafka_listen)
                created = ensure_topics(bootstrap)
                summary = ", ".join(f"{name} ({how})" for name, how in created.items())
                states["kafka"].detail = f"topics: {summary}"
                _say(f"kafka: topics {summary}")
        except BaseException:
            # Leave nothing half-started behind: stop exactly what this call started.
            for server, meta in started.items():
                _stop_meta(cfg, server, meta, quiet=True)
            raise
    if to_start:
        _say(f"stack up in {time.monotonic() - begin:.1f} s (state dir {_rel(cfg.state_dir)})")
    return states


def _stop_meta(
    cfg: StackConfig, server: Server, meta: _Meta, *, signalled: bool = False, quiet: bool = False
) -> str:
    grace = KAFKA_STOP_TIMEOUT_S if server == "kafka" else MONGO_STOP_TIMEOUT_S
    how = "not running"
    if signalled or _signal_ours(meta, signal.SIGTERM):
        how = "stopped (SIGTERM)"
        if not _wait_gone(meta, grace):
            _signal_ours(meta, signal.SIGKILL)
            how = f"killed (SIGKILL after {grace:.0f} s)"
            if not _wait_gone(meta, KILL_WAIT_S):
                raise StackError(f"{server} pid {meta.pid} survived SIGKILL")
    _remove_pid_files(cfg.state_dir, server)
    busy = _wait_ports_free(_server_ports(server, meta.address), PORT_RELEASE_TIMEOUT_S)
    if busy and not quiet:
        _say(f"{server}: warning: {', '.join(map(str, busy))} still accepts connections (not ours)")
    return how


def down(
    state_dir: Path | str = DEFAULT_STATE_DIR,
    *,
    only: str | None = None,
    cache_dir: Path | str | None = None,
) -> dict[Server, str]:
    """Stop exactly the processes `up` started from *state_dir* (by PID, verified), SIGTERM then
    SIGKILL after a bound; remove their PID files. Returns {server: what happened}."""
    cfg = StackConfig.make(state_dir, cache_dir=cache_dir)
    servers = _selected(only)
    result: dict[Server, str] = {}
    if not cfg.state_dir.exists():
        return {server: "not running" for server in servers}
    with _locked(cfg.state_dir / "stack.lock"):
        metas: dict[Server, _Meta] = {}
        for server in servers:
            meta = _read_meta(cfg.state_dir, server)
            if meta is not None and meta.is_ours():
                metas[server] = meta
            elif _has_pid_files(cfg.state_dir, server):
                _remove_pid_files(cfg.state_dir, server)
                result[server] = "not running (removed a stale PID file)"
            else:
                result[server] = "not running"
        # SIGTERM all first so they shut down in parallel, then wait for each.
        signalled = {server: _signal_ours(meta, signal.SIGTERM) for server, meta in metas.items()}
        for server, meta in metas.items():
            start = time.monotonic()
            how = _stop_meta(cfg, server, meta, signalled=signalled[server])
            result[server] = f"{how} pid {meta.pid} in {time.monotonic() - start:.1f} s"
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
    for server in _selected(only):
        meta = _read_meta(cfg.state_dir, server)
        ours = meta is not None and meta.is_ours()
        address = meta.address if meta is not None and ours else cfg.listen(server)
        state = ServerState(name=server, address=address, log=cfg.log_path(server))
        if meta is not None and ours:
            state.pid, state.running = meta.pid, True
        elif meta is not None:
            state.detail = f"stale PID file (pid {meta.pid} is gone)"
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


# --------------------------------------------------------------------------- CLI


def _print_states(states: Mapping[Server, ServerState]) -> None:
    for state in states.values():
        proc = f"pid {state.pid}" if state.pid else "-"
        run = "running" if state.running else "stopped"
        answer = "answering" if state.answering else "NOT answering"
        detail = f"  {state.detail}" if state.detail else ""
        log = f"  log {_rel(state.log)}" if state.log else ""
        _say(f"{state.name:<6} {run:<8} {proc:<11} {state.address!s:<21} {answer}{detail}{log}")


def _parser() -> argparse.ArgumentParser:
    def add_common(p: argparse.ArgumentParser, suppress: bool) -> None:
        def default(value: object) -> object:
            return argparse.SUPPRESS if suppress else value

        p.add_argument(
            "--state-dir",
            type=Path,
            default=default(DEFAULT_STATE_DIR),
            help="PID files, logs and data (default: .state)",
        )
        p.add_argument(
            "--cache-dir",
            type=Path,
            default=default(None),
            help="downloaded jars and built binaries (default: <repo>/.cache, env STACK_CACHE_DIR)",
        )
        p.add_argument(
            "--kafka-listen",
            default=default(None),
            metavar="HOST:PORT",
            help=f"Kafka broker address; controller on PORT+1 "
            f"(env STACK_KAFKA_LISTEN, default {DEFAULT_KAFKA_LISTEN})",
        )
        p.add_argument(
            "--mongo-listen",
            default=default(None),
            metavar="HOST:PORT",
            help=f"FerretDB address (env STACK_MONGO_LISTEN, default {DEFAULT_MONGO_LISTEN})",
        )
        p.add_argument(
            "--only",
            choices=SERVERS,
            default=default(None),
            help="act on one server only (default: both)",
        )

    parser = argparse.ArgumentParser(
        prog="stack.py",
        description="Local Kafka (KRaft) + FerretDB as plain processes. See docs/local-stack.md.",
    )
    add_common(parser, suppress=False)
    sub = parser.add_subparsers(dest="command", required=True, metavar="{up,status,down}")
    p_up = sub.add_parser(
        "up", help="install if needed, start, wait until answering, create topics"
    )
    add_common(p_up, suppress=True)
    p_up.add_argument("--no-topics", action="store_true", help="do not create the topics")
    p_status = sub.add_parser("status", help="show servers; exit 1 if one is not answering")
    add_common(p_status, suppress=True)
    p_down = sub.add_parser("down", help="stop exactly the processes `up` started")
    add_common(p_down, suppress=True)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        if args.command == "up":
            states = up(
                args.state_dir,
                only=args.only,
                kafka_listen=args.kafka_listen,
                mongo_listen=args.mongo_listen,
                cache_dir=args.cache_dir,
                create_topics=not getattr(args, "no_topics", False),
            )
            _print_states(states)
            return 0
        if args.command == "status":
            states = status(
                args.state_dir,
                only=args.only,
                kafka_listen=args.kafka_listen,
                mongo_listen=args.mongo_listen,
            )
            _print_states(states)
            return 0 if all(s.ok for s in states.values()) else 1
        for server, how in down(args.state_dir, only=args.only, cache_dir=args.cache_dir).items():
            _say(f"{server}: {how}")
        return 0
    except MissingToolError as exc:
        print(f"stack.py: missing tool: {exc}", file=sys.stderr)
        return 3
    except StackError as exc:
        print(f"stack.py: error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("stack.py: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
