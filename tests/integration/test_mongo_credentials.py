"""MongoDB credentials end to end: a MONGO_URL with a user and a percent-encoded password, read
from MONGO_URL_FILE, authenticates against a FerretDB that checks passwords; and the password
shows nowhere (logs, /health, errors) whether it is right, wrong or its server unreachable.

FerretDB 1.24's default authentication does not check passwords with the SQLite handler (PLAIN
is passed to the backend, and SQLite has none; SCRAM is refused as unsupported). Its
experimental ``--test-enable-new-auth`` stores users and checks SCRAM-SHA-256: this test starts
its own FerretDB with that flag and a setup user. The stack's FerretDB (tests, compose) runs
without it, so production-like runs are unauthenticated; see docs/security.md.
"""

from __future__ import annotations

import logging
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Final
from urllib.parse import quote

import pytest
from fastapi.testclient import TestClient
from pymongo import MongoClient
from pymongo.errors import PyMongoError

from devtools.ports import free_port
from devtools.stack import default_cache_dir
from devtools.stack.install import install_ferretdb
from devtools.waiting import wait_for
from processor.app import create_app
from processor.settings import ProcessorSettings
from tests.integration.api_support import KnownReader

pytestmark = pytest.mark.integration

USER: Final = "cost-app"
# Every character a connection string reserves (RFC 3986 gen-delims and then some).
PASSWORD: Final = "p@ss:w/rd?#[%]&=+ 1"
DB: Final = "gpu_cost"
MECHANISM: Final = "authMechanism=SCRAM-SHA-256"
# A fresh FerretDB on SQLite answers in well under a second; generous for a shared machine.
START_TIMEOUT_S: Final = 30.0


def url(address: str, password: str = PASSWORD) -> str:
    return f"mongodb://{USER}:{quote(password, safe='')}@{address}/{DB}?{MECHANISM}"


def _answers(address: str) -> bool:
    client: MongoClient[dict[str, object]] = MongoClient(url(address), serverSelectionTimeoutMS=500)
    try:
        client[DB].command("ping")
        return True
    except PyMongoError:
        return False
    finally:
        client.close()


@pytest.fixture(scope="module")
def ferretdb_with_auth(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """host:port of a FerretDB that checks SCRAM-SHA-256 passwords, with USER/PASSWORD set up."""
    # Built on first use like the local stack's (a no-op when the cache has it): never skipped.
    binary = install_ferretdb(default_cache_dir())
    data = tmp_path_factory.mktemp("ferretdb-auth")
    address = f"127.0.0.1:{free_port()}"
    log = (data / "ferretdb.log").open("wb")
    proc = subprocess.Popen(
        [
            str(binary), "--handler=sqlite", f"--sqlite-url=file:{data}/", f"--state-dir={data}",
            f"--listen-addr={address}", "--telemetry=disable", "--log-level=warn",
            "--test-enable-new-auth", f"--setup-username={USER}",
            f"--setup-password={PASSWORD}", f"--setup-database={DB}",
        ],
        stdout=log, stderr=subprocess.STDOUT,
    )  # fmt: skip
    try:
        wait_for("FerretDB with auth to answer",
                 lambda: _answers(address) or proc.poll() is not None,
                 START_TIMEOUT_S)  # fmt: skip
        assert proc.poll() is None, (data / "ferretdb.log").read_text()
        yield address
    finally:
        proc.terminate()
        proc.wait(10)
        log.close()


def settings_from_file(tmp_path: Path, mongo_url: str, monkeypatch: pytest.MonkeyPatch,
                       kafka_bootstrap: str) -> ProcessorSettings:  # fmt: skip
    secret = tmp_path / "mongo_url"
    secret.write_text(mongo_url + "\n")
    monkeypatch.delenv("MONGO_URL", raising=False)
    monkeypatch.setenv("MONGO_URL_FILE", str(secret))
    return ProcessorSettings(kafka_bootstrap=kafka_bootstrap, mongo_db=DB, mongo_timeout_ms=1500)


def assert_nowhere(client: TestClient, caplog: pytest.LogCaptureFixture, health: str) -> None:
    for shown in (PASSWORD, quote(PASSWORD, safe=""), quote(PASSWORD)):
        assert shown not in health
        assert shown not in caplog.text


def test_credentials_from_the_file_reach_pymongo_and_authenticate(
    ferretdb_with_auth: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
    kafka_bootstrap: str, caplog: pytest.LogCaptureFixture,
) -> None:  # fmt: skip
    settings = settings_from_file(tmp_path, url(ferretdb_with_auth), monkeypatch, kafka_bootstrap)
    with (
        caplog.at_level(logging.DEBUG),
        TestClient(create_app(settings, consume=False, gpu_reader=KnownReader([]))) as client,
    ):
        # What pymongo parsed out of the URL (private in pymongo 4: no public accessor).
        store = client.app.state.store  # type: ignore[attr-defined]
        credentials = store._client.options.pool_options._credentials
        assert (credentials.username, credentials.password) == (USER, PASSWORD)
        assert credentials.mechanism == "SCRAM-SHA-256"
        # A query the server runs only for an authenticated user.
        assert client.get("/api/v1/stats").status_code == 200
        health = client.get("/health")
        assert health.json()["mongodb"]["ok"] is True
        assert_nowhere(client, caplog, health.text)


@pytest.mark.parametrize("where", ["wrong password", "unreachable server"])
def test_a_failing_connection_never_shows_the_password(
    where: str, ferretdb_with_auth: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
    kafka_bootstrap: str, caplog: pytest.LogCaptureFixture,
) -> None:  # fmt: skip
    mongo_url = (
        url(ferretdb_with_auth, PASSWORD + "x")
        if where == "wrong password"
        else url(f"127.0.0.1:{free_port()}").replace(
            quote(PASSWORD, safe=""), quote(PASSWORD + "x", safe="")
        )
    )
    settings = settings_from_file(tmp_path, mongo_url, monkeypatch, kafka_bootstrap)
    with (
        caplog.at_level(logging.DEBUG),
        TestClient(create_app(settings, consume=False, gpu_reader=KnownReader([]))) as client,
    ):
        health = client.get("/health")
        assert health.status_code == 503
        mongodb = health.json()["mongodb"]
        assert mongodb["ok"] is False
        assert ("Authentication failed" if where == "wrong password" else "refused") in mongodb[
            "detail"
        ]
        stats = client.get("/api/v1/stats")
        assert stats.status_code == 503
        assert_nowhere(client, caplog, health.text + stats.text)
        for shown in (PASSWORD + "x", quote(PASSWORD + "x", safe="")):
            assert shown not in health.text + stats.text + caplog.text
