"""Helm, built from its released module source with ``go install`` into the project cache.

    >>> helm = install_helm(default_cache_dir())    # builds once (~minutes), then a no-op
    >>> subprocess.run([str(helm), "lint", str(CHART_DIR)])

Like FerretDB (devtools/stack/install.py), nothing prebuilt is downloaded: the Go module proxy
serves helm.sh/helm/v4 at the pinned version and the machine's Go compiles it. The binary lives
at ``<cache>/helm-<version>/helm``, so another pin never clobbers it. ``python -m devtools.helm``
prints its path (``make helm``).
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Final

from devtools.stack.config import REPO, default_cache_dir
from devtools.stack.console import locked, rel, say
from devtools.stack.errors import StackError
from devtools.stack.install import GO_BUILD_TIMEOUT_S, _run_logged, require_tool

__all__ = ["CHART_DIR", "HELM_MODULE", "HELM_VERSION", "helm_binary", "install_helm"]

HELM_MODULE: Final = "helm.sh/helm/v4"
# v4.3.2: the newest helm the package lists here mark as fetched whole; v3.22.0 is served but
# not approved. Helm 4 renders apiVersion v2 charts (ours) as Helm 3 does.
HELM_VERSION: Final = "v4.3.2"
CHART_DIR: Final = REPO / "deploy" / "helm" / "gpu-token-cost"


def helm_binary(cache_dir: Path) -> Path:
    return cache_dir / f"helm-{HELM_VERSION}" / "helm"


def _reported_version(binary: Path) -> str | None:
    if not binary.is_file():
        return None
    try:
        out = subprocess.run(
            [str(binary), "version", "--template", "{{.Version}}"],
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        ).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    return out.strip() or None


def helm_installed(cache_dir: Path) -> bool:
    return _reported_version(helm_binary(cache_dir)) == HELM_VERSION


def install_helm(cache_dir: Path) -> Path:
    """The helm binary of HELM_VERSION, built with Go on first use."""
    binary = helm_binary(cache_dir)
    if helm_installed(cache_dir):
        return binary
    with locked(cache_dir / "install.lock"):
        if helm_installed(cache_dir):
            return binary
        go = require_tool("go", f"once, to build helm {HELM_VERSION}")
        start = time.monotonic()
        # CGO off: a static binary like the released ones; -trimpath: no local paths inside.
        env = dict(os.environ, GOBIN=str(binary.parent), CGO_ENABLED="0")
        # The release Makefile stamps the full version (the source says only "v4.3").
        ldflags = f"-X {HELM_MODULE}/internal/version.version={HELM_VERSION}"
        _run_logged(
            [
                go,
                "install",
                "-trimpath",
                "-ldflags",
                ldflags,
                f"{HELM_MODULE}/cmd/helm@{HELM_VERSION}",
            ],
            what=f"Building helm {HELM_VERSION} from source through the Go module proxy",
            log_path=cache_dir / "logs" / "helm-build.log",
            timeout=GO_BUILD_TIMEOUT_S,
            cwd=cache_dir,
            env=env,
        )
        version = _reported_version(binary)
        if version != HELM_VERSION:
            raise StackError(f"built {binary} reports version {version!r}, not {HELM_VERSION}")
        say(f"    helm {HELM_VERSION}: {rel(binary)} ({time.monotonic() - start:.1f} s)")
    return binary


def main() -> int:
    try:
        sys.stdout.write(f"{install_helm(default_cache_dir())}\n")
    except StackError as exc:
        sys.stderr.write(f"{exc}\n")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
