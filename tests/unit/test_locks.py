"""requirements/*.txt agree with pyproject.toml and with each other (`make lock` writes them).

A pin bumped in pyproject.toml without `make lock` would otherwise go unnoticed: `make install`
and the images install the lock, and the package itself with --no-deps.
"""

from __future__ import annotations

import re
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
REQUIREMENTS = REPO / "requirements"
_ENTRY = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*)==([^\s;\\]+)", re.M)
_HASH = re.compile(r"--hash=sha256:([0-9a-f]{64})")


def _norm(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def lock(name: str) -> dict[str, tuple[str, frozenset[str]]]:
    """A lock file as name -> (version, hashes)."""
    text = (REQUIREMENTS / name).read_text()
    starts = list(_ENTRY.finditer(text))
    entries = {}
    for match, after in zip(starts, [*starts[1:], None], strict=True):
        block = text[match.end() : after.start() if after else len(text)]
        entries[_norm(match[1])] = (match[2], frozenset(_HASH.findall(block)))
    return entries


def pins(requirements: list[str]) -> dict[str, str]:
    found = {}
    for req in requirements:
        name, sep, version = req.partition("==")
        assert sep, f"pyproject.toml: {req!r} is not an exact pin"
        found[_norm(name)] = version.strip()
    return found


PROJECT = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
RUNTIME_PINS = pins(PROJECT["dependencies"])
DEV_PINS = pins(PROJECT["optional-dependencies"]["dev"])


@pytest.mark.parametrize("name", ["runtime.txt", "dev.txt", "producers.txt"])
def test_every_entry_is_pinned_with_hashes(name: str) -> None:
    entries = lock(name)
    assert entries, name
    assert [pkg for pkg, (_, hashes) in entries.items() if not hashes] == []


@pytest.mark.parametrize(
    ("name", "wanted"),
    [("runtime.txt", RUNTIME_PINS), ("dev.txt", {**RUNTIME_PINS, **DEV_PINS})],
)
def test_the_locks_hold_the_pins_of_pyproject(name: str, wanted: dict[str, str]) -> None:
    entries = lock(name)
    stale = {pkg: (v, entries.get(pkg, ("missing",))[0]) for pkg, v in wanted.items()}
    assert {k: v for k, v in stale.items() if v[0] != v[1]} == {}, "run `make lock`"


@pytest.mark.parametrize("name", ["dev.txt", "producers.txt"])
def test_shared_packages_are_the_runtime_locks_versions(name: str) -> None:
    # Tests run on what ships; the producer image ships what the processor image ships.
    runtime = lock("runtime.txt")
    differing = [
        pkg for pkg, entry in lock(name).items() if pkg in runtime and runtime[pkg] != entry
    ]
    assert differing == []


def test_the_producer_lock_is_part_of_the_runtime_lock() -> None:
    assert set(lock("producers.txt")) <= set(lock("runtime.txt"))


def test_install_and_images_install_the_locks_with_hashes() -> None:
    makefile = (REPO / "Makefile").read_text()
    assert "--require-hashes -r requirements/dev.txt" in makefile
    for dockerfile, name in (("processor", "runtime.txt"), ("producers", "producers.txt")):
        text = (REPO / dockerfile / "Dockerfile").read_text()
        assert f"--require-hashes -r requirements/{name}" in text, dockerfile
        assert "--no-deps --no-build-isolation ." in text, dockerfile


def test_the_test_client_has_its_http_library() -> None:
    # httpx2 is imported by no file of ours, only by fastapi.testclient: a grep for unused pins
    # would drop it, and the API tests would then fail on starlette's deprecation warning.
    done = subprocess.run(
        [sys.executable, "-W", "error", "-c", "import fastapi.testclient"],
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
