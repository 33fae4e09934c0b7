"""Loopback ports for processes the dev tools start, and whether an address is taken."""

from __future__ import annotations

import contextlib
import socket
from collections.abc import Sequence

from devtools.waiting import WaitTimeout, wait_for

__all__ = ["free_port", "port_free", "tcp_open", "wait_closed"]

LOOPBACK = "127.0.0.1"


def free_port(pair: bool = False, host: str = LOOPBACK, span: int = 1) -> int:
    """A TCP port free on *host* right now; with *pair*, port+1 is free too (the local stack's
    Kafka controller listens on the broker port + 1); with *span*, port..port+span-1 all are
    (a 3-broker stack uses 6 consecutive ports)."""
    count = max(span, 2 if pair else 1)
    for _ in range(200):
        with socket.socket() as sock:
            sock.bind((host, 0))
            port: int = sock.getsockname()[1]
        if port + count > 65535:
            continue
        if all(port_free(port + i, host) for i in range(1, count)):
            return port
    raise RuntimeError(f"no {count} consecutive free ports found on {host}")


def port_free(port: int, host: str = LOOPBACK) -> bool:
    """True if a server could bind host:port now (nothing listens there)."""
    with socket.socket() as sock:
        try:
            sock.bind((host, port))
        except OSError:
            return False
    return True


def tcp_open(host: str, port: int, timeout: float = 1.0) -> bool:
    """True if something accepts TCP connections on host:port."""
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def wait_closed(addresses: Sequence[tuple[str, int]], timeout_s: float) -> list[tuple[str, int]]:
    """Wait until none of *addresses* accepts connections; returns those still open at the end."""
    # A short connect timeout: a closed loopback port refuses at once, only a busy one lingers.
    still_open = list(addresses)

    def all_closed() -> bool:
        still_open[:] = [a for a in still_open if tcp_open(*a, timeout=0.5)]
        return not still_open

    with contextlib.suppress(WaitTimeout):
        wait_for(f"{still_open} to stop accepting connections", all_closed, timeout_s)
    return still_open
