"""TEST_SERVERS: which servers the tests use, decided without Docker (the probe is injected), and
the Docker probe itself against a fake engine on a unix socket."""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from devtools.harness import (
    DEFAULT_SOCKET,
    Choice,
    DockerEndpoint,
    HarnessError,
    choose,
    docker_endpoint,
    ping_docker,
)


class Probe:
    def __init__(self, answers: bool) -> None:
        self.answers = answers
        self.calls = 0

    def __call__(self) -> bool:
        self.calls += 1
        return self.answers


@pytest.mark.parametrize("requested", [None, "", "auto", " AUTO "])
@pytest.mark.parametrize(("engine", "harness"), [(True, "containers"), (False, "local")])
def test_auto_is_containers_exactly_when_an_engine_answers(
    requested: str | None, engine: bool, harness: str
) -> None:
    probe = Probe(engine)
    choice = choose(requested, probe)
    assert choice.harness == harness
    assert probe.calls == 1
    assert "answers" in choice.reason
    assert ("no Docker" in choice.reason) != engine


@pytest.mark.parametrize("engine", [True, False])
def test_env_local_and_containers_are_taken_as_asked_without_probing(engine: bool) -> None:
    probe = Probe(engine)
    assert choose("env", probe) == Choice("env", "TEST_SERVERS=env")
    assert choose("local", probe) == Choice("local", "TEST_SERVERS=local")
    # containers without an engine is not silently downgraded: testcontainers then fails loudly.
    assert choose("containers", probe) == Choice("containers", "TEST_SERVERS=containers")
    assert probe.calls == 0


@pytest.mark.parametrize("bad", ["docker", "environment", "container", "1"])
def test_anything_else_is_refused_with_the_choices(bad: str) -> None:
    with pytest.raises(HarnessError, match="env, local, containers, auto"):
        choose(bad, Probe(True))


@pytest.mark.parametrize(
    ("env", "endpoint"),
    [
        ({}, DockerEndpoint(unix_path=DEFAULT_SOCKET)),
        ({"DOCKER_HOST": ""}, DockerEndpoint(unix_path=DEFAULT_SOCKET)),
        ({"DOCKER_HOST": "unix:///run/user/1000/docker.sock"},
         DockerEndpoint(unix_path="/run/user/1000/docker.sock")),
        ({"DOCKER_HOST": "tcp://10.0.0.5:2376"}, DockerEndpoint(host="10.0.0.5", port=2376)),
        ({"DOCKER_HOST": "tcp://docker"}, DockerEndpoint(host="docker", port=2375)),
    ],
)  # fmt: skip
def test_docker_host_names_the_endpoint(env: dict[str, str], endpoint: DockerEndpoint) -> None:
    assert docker_endpoint(env) == endpoint


def test_an_ssh_docker_host_is_not_probed() -> None:
    endpoint = docker_endpoint({"DOCKER_HOST": "ssh://me@box"})
    assert endpoint.unprobed
    assert "TEST_SERVERS" in endpoint.unprobed
    assert ping_docker(endpoint) is False


@pytest.fixture
def fake_engine(tmp_path: Path) -> Iterator[tuple[str, list[bytes]]]:
    """A unix socket that answers each connection with the next canned HTTP reply."""
    path = str(tmp_path / "docker.sock")
    replies: list[bytes] = []
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    server.bind(path)
    server.listen()
    server.settimeout(0.05)  # accept wakes up this often to see whether the test is over
    stop = threading.Event()

    def serve() -> None:
        while not stop.is_set():
            try:
                conn, _ = server.accept()
            except TimeoutError:
                continue
            with conn:
                request = conn.recv(4096)
                if request.startswith(b"GET /_ping ") and replies:
                    conn.sendall(replies.pop(0))

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    yield path, replies
    stop.set()
    thread.join(timeout=5)
    server.close()


def test_ping_is_true_only_for_200_ok(fake_engine: tuple[str, list[bytes]]) -> None:
    path, replies = fake_engine
    endpoint = DockerEndpoint(unix_path=path)
    replies.append(b"HTTP/1.0 200 OK\r\nContent-Type: text/plain\r\n\r\nOK")
    assert ping_docker(endpoint) is True
    replies.append(b"HTTP/1.0 500 Internal Server Error\r\n\r\nOK")
    assert ping_docker(endpoint) is False
    replies.append(b"HTTP/1.0 200 OK\r\n\r\nnot docker")
    assert ping_docker(endpoint) is False


def test_ping_is_false_when_nothing_listens(tmp_path: Path) -> None:
    assert ping_docker(DockerEndpoint(unix_path=str(tmp_path / "none.sock"))) is False
