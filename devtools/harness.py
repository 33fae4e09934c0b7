"""Which servers the test harness uses: named ones, the local stack or containers.

    >>> choose("auto", docker_probe=lambda: True).harness
    'containers'

``TEST_SERVERS`` = ``env`` | ``local`` | ``containers`` (unset, or ``auto``: containers when a
Docker engine answers its ``/_ping``, else the local stack). ``env``: exactly the servers named
by ``KAFKA_BOOTSTRAP`` and ``MONGO_URL`` (both required). In the other modes a server named by
one of them still wins over the chosen source, as before (tests/conftest.py). The decision is a
pure function of the requested value and an injected probe, so it is unit-tested without Docker;
the probe itself is a plain HTTP ``GET /_ping`` on the engine's socket (no Docker SDK call, no
image pulled).
"""

from __future__ import annotations

import socket
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Final, Literal
from urllib.parse import urlsplit

__all__ = [
    "HARNESS_ENV",
    "Choice",
    "DockerEndpoint",
    "HarnessError",
    "choose",
    "docker_endpoint",
    "ping_docker",
]

HARNESS_ENV: Final = "TEST_SERVERS"
MODES: Final = ("env", "local", "containers", "auto")
DEFAULT_SOCKET: Final = "/var/run/docker.sock"
# An engine that answers at all answers /_ping within milliseconds; this only bounds a hung socket.
PING_TIMEOUT_S: Final = 2.0

Harness = Literal["env", "local", "containers"]


class HarnessError(ValueError):
    """TEST_SERVERS holds something other than env, local, containers or auto."""


@dataclass(frozen=True)
class Choice:
    harness: Harness
    reason: str


def choose(requested: str | None, docker_probe: Callable[[], bool]) -> Choice:
    """The harness for ``requested`` (the raw TEST_SERVERS value); probes Docker only for auto."""
    mode = (requested or "auto").strip().lower() or "auto"
    if mode not in MODES:
        raise HarnessError(f"{HARNESS_ENV}={requested!r}: expected one of {', '.join(MODES)}")
    if mode in ("env", "local"):
        return Choice(mode, f"{HARNESS_ENV}={mode}")  # type: ignore[arg-type]  # checked above
    if mode == "containers":
        # Asked for explicitly: no probe, so a missing engine fails loudly in testcontainers
        # instead of silently testing something else.
        return Choice("containers", f"{HARNESS_ENV}=containers")
    if docker_probe():
        return Choice("containers", f"{HARNESS_ENV}=auto and a Docker engine answers")
    return Choice("local", f"{HARNESS_ENV}=auto and no Docker engine answers")


@dataclass(frozen=True)
class DockerEndpoint:
    """Where the engine listens: a unix socket path, or a TCP host and port."""

    unix_path: str | None = None
    host: str | None = None
    port: int | None = None
    unprobed: str | None = None  # why this endpoint is not probed (ssh://, npipe://, ...)


def docker_endpoint(env: Mapping[str, str]) -> DockerEndpoint:
    """The endpoint DOCKER_HOST names (unset: the default unix socket)."""
    raw = env.get("DOCKER_HOST", "").strip()
    if not raw:
        return DockerEndpoint(unix_path=DEFAULT_SOCKET)
    url = urlsplit(raw)
    if url.scheme == "unix":
        return DockerEndpoint(unix_path=url.path or DEFAULT_SOCKET)
    if url.scheme == "tcp" and url.hostname:
        return DockerEndpoint(host=url.hostname, port=url.port or 2375)
    return DockerEndpoint(unprobed=f"DOCKER_HOST={raw} is not probed (set {HARNESS_ENV})")


def ping_docker(endpoint: DockerEndpoint, timeout: float = PING_TIMEOUT_S) -> bool:
    """True if the engine at ``endpoint`` answers ``GET /_ping`` with 200 OK."""
    if endpoint.unprobed is not None:
        return False
    try:
        if endpoint.unix_path is not None:
            conn = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            try:
                conn.settimeout(timeout)
                conn.connect(endpoint.unix_path)
            except OSError:
                conn.close()
                raise
        else:
            conn = socket.create_connection((str(endpoint.host), endpoint.port or 2375), timeout)
        with conn:
            conn.sendall(b"GET /_ping HTTP/1.0\r\nHost: docker\r\n\r\n")
            reply = b""
            while chunk := conn.recv(4096):
                reply += chunk
                if len(reply) > 65536:
                    break
    except OSError:
        return False
    head, _, body = reply.partition(b"\r\n\r\n")
    status = head.split(b"\r\n", 1)[0].split()
    return len(status) >= 2 and status[1] == b"200" and body.strip() == b"OK"
