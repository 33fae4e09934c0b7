"""Install once into the cache: Kafka's jars (Maven) and a FerretDB binary (Go, patched).

Later runs find both in the cache and run neither Maven nor Go. A half-finished install is
never used: jars are moved into place only when complete, and the binary must report the right
version and patch mark. A cache lock serialises installs of concurrent runs.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Final

from devtools.logs import last_line, tail
from devtools.stack.config import (
    FERRETDB_VERSION,
    KAFKA_VERSION,
    REPO,
    default_cache_dir,
    selected,
)
from devtools.stack.console import locked, rel, say
from devtools.stack.errors import MissingToolError, StackError
from devtools.stack.ferretdb_patch import FERRETDB_PACKAGE, apply_patches
from devtools.waiting import WaitTimeout, wait_for

__all__ = [
    "ferretdb_binary",
    "ferretdb_installed",
    "install_ferretdb",
    "install_kafka",
    "installed",
    "java_major",
    "kafka_installed",
    "kafka_libs_dir",
    "require_tool",
]

KAFKA_POM: Final = REPO / "scripts" / "kafka" / "pom.xml"
FERRETDB_MODULE: Final = "github.com/FerretDB/FerretDB"
FALLBACK_GOTOOLCHAIN: Final = "go1.24.3"
# A cold Maven repository downloads ~60 jars (~30 s here); a slow mirror gets many times that.
MAVEN_TIMEOUT_S: Final = 15 * 60.0
# Cold Go caches: module download plus a full build took ~2 min here; leave room for slow disks.
GO_BUILD_TIMEOUT_S: Final = 30 * 60.0
# Long steps print their log's last line this often, so a waiting user sees they move.
HEARTBEAT_S: Final = 15.0

_APT_HINT: Final = {
    "java": "apt-get install openjdk-17-jre-headless",
    "mvn": "apt-get install maven",
    "go": "Go 1.24+ from https://go.dev/dl/",
}


def require_tool(name: str, purpose: str) -> str:
    path = shutil.which(name)
    if path is None:
        raise MissingToolError(
            f"`{name}` is not on PATH; it is needed {purpose}. Install it "
            f"(Debian/Ubuntu: {_APT_HINT.get(name, name)}) and run again."
        )
    return path


def java_major(java: str) -> int | None:
    """The major version of *java* (8 for "1.8.0_x"), None if it cannot tell."""
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
    say(f"==> {what}\n    $ {' '.join(cmd)}\n    (output in {rel(log_path)})")
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

    def finished() -> tuple[int] | None:
        nonlocal next_beat
        if proc.poll() is not None:
            return (proc.returncode,)  # a tuple: exit status 0 must count as an answer
        now = time.monotonic()
        if now >= next_beat:
            say(f"    ... {now - start:4.0f} s  {last_line(log_path) or 'working'}")
            next_beat = now + HEARTBEAT_S
        return None

    try:
        (returncode,) = wait_for(what, finished, timeout, every_s=1.0)
    except WaitTimeout:
        raise StackError(f"{what}: no result after {timeout:.0f} s; gave up") from None
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    elapsed = time.monotonic() - start
    if returncode != 0:
        raise StackError(
            f"{what} failed (exit {returncode}) after {elapsed:.1f} s; "
            f"last lines of {log_path}:\n{tail(log_path, 25)}"
        )
    say(f"    done in {elapsed:.1f} s")
    return elapsed


# --------------------------------------------------------------------------- Kafka


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
    with locked(cache_dir / "install.lock"):
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
        say(f"    Kafka {KAFKA_VERSION}: {jars} jars in {rel(libs)} ({elapsed:.1f} s)")
    return libs


# --------------------------------------------------------------------------- FerretDB


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
    # The Go module cache is read-only; our copy of it must be editable and removable.
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
    project's own ``bin/task gen-version`` does, apply our patch (ferretdb_patch.py), and
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
    apply_patches(src)
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
    with locked(cache_dir / "install.lock"):
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
                    say(
                        f"    the machine's Go failed; retrying, GOTOOLCHAIN={FALLBACK_GOTOOLCHAIN}"
                    )
        else:
            raise StackError("could not build FerretDB:\n" + "\n".join(errors))
        say(f"    FerretDB {FERRETDB_VERSION}: {rel(binary)} ({time.monotonic() - start:.1f} s)")
    return binary


def installed(cache_dir: Path | None = None, only: str | None = None) -> bool:
    """True if nothing needs downloading or building for the selected servers."""
    cache = cache_dir or default_cache_dir()
    checks = {"kafka": kafka_installed, "mongo": ferretdb_installed}
    return all(checks[name](cache) for name in selected(only))
