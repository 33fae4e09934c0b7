"""Bearer tokens on the real app: 401 without a valid token, 403 without the scope, 200 with it;
/health and /metrics open by default and protected when configured; the API open (and saying
so) when no token is configured."""

from __future__ import annotations

import hmac
import logging
import re
from collections.abc import Callable, Iterator
from typing import Any, Final

import pytest
from fastapi.testclient import TestClient
from pymongo.database import Database

from processor.api import auth
from processor.api.problems import PROBLEM_MEDIA_TYPE
from processor.app import create_app
from processor.settings import ProcessorSettings
from tests.integration.api_support import KnownReader

pytestmark = pytest.mark.integration

READ: Final = "read-token-0123456789abcdef"
ADMIN: Final = "admin-token-0123456789abcdef"
OTHER_READ: Final = "read-token-fedcba9876543210"


@pytest.fixture
def make_client(
    kafka_bootstrap: str, mongo_url: str, topic: str, mongo_db: Database[dict[str, Any]]
) -> Iterator[Callable[..., TestClient]]:
    """A started app (lifespan, no consume loop) with the given settings on the test stack."""
    clients: list[TestClient] = []

    def make(**overrides: Any) -> TestClient:
        settings = ProcessorSettings(
            kafka_bootstrap=kafka_bootstrap, kafka_topic=topic, mongo_url=mongo_url,
            mongo_db=mongo_db.name, **overrides,
        )  # fmt: skip
        app = create_app(settings, consume=False, gpu_reader=KnownReader([]))
        # No route needs admin yet: one declared the documented way, to test the scope.
        app.add_api_route("/api/v1/admin-probe", lambda: {"ok": True},
                          dependencies=[auth.AdminScope], include_in_schema=False)  # fmt: skip
        client = TestClient(app)
        client.__enter__()
        clients.append(client)
        return client

    yield make
    for client in clients:
        client.__exit__(None, None, None)


def secured(make_client: Callable[..., TestClient], **overrides: Any) -> TestClient:
    return make_client(api_read_tokens=f"{READ},{OTHER_READ}", api_admin_tokens=ADMIN,
                       **overrides)  # fmt: skip


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def operations(client: TestClient) -> list[tuple[str, dict[str, Any]]]:
    """Every GET of the OpenAPI document as a requestable path, with its operation."""
    found = []
    for path, item in client.get("/openapi.json").json()["paths"].items():
        for method, operation in item.items():
            assert method == "get", (path, method)  # every route reads today
            found.append((re.sub(r"\{[^}]+\}", "x", path), operation))
    return found


def assert_401(response: Any, path: str, challenge: str = "Bearer") -> None:
    assert response.status_code == 401, (path, response.text)
    assert response.headers["www-authenticate"] == challenge
    assert response.headers["content-type"] == PROBLEM_MEDIA_TYPE
    body = response.json()
    assert body["status"] == 401
    assert body["title"] == "Unauthorized"
    assert body["instance"] == path


def test_every_api_operation_needs_a_token(make_client: Callable[..., TestClient]) -> None:
    client = secured(make_client)
    api = [(p, op) for p, op in operations(client) if p != "/health"]
    # /gpu/info, /api/v1/gpus, .../metrics, /api/v1/costs, /api/v1/stats, /api/v1/events/{id},
    # /api/v1/requests/{id}, /api/v1/anomalies
    assert len(api) == 8
    for path, operation in api:
        assert operation["security"] == [{auth.SCHEME: []}], path
        assert {"401", "403"} <= set(operation["responses"]), path
        assert_401(client.get(path), path)
        assert_401(
            client.get(path, headers=bearer(READ + "x")), path, 'Bearer error="invalid_token"'
        )
        assert_401(client.get(path, headers={"Authorization": f"Basic {READ}"}), path)
        assert_401(client.get(path, headers={"Authorization": "Bearer"}), path)


def test_a_read_or_admin_token_is_let_through(make_client: Callable[..., TestClient]) -> None:
    client = secured(make_client)
    for token in (READ, OTHER_READ, ADMIN):
        response = client.get("/api/v1/stats", headers=bearer(token))
        assert response.status_code == 200, response.text
        assert client.get("/gpu/info", headers=bearer(token)).status_code != 401


def test_a_read_token_on_an_admin_route_is_403(make_client: Callable[..., TestClient]) -> None:
    client = secured(make_client)
    response = client.get("/api/v1/admin-probe", headers=bearer(READ))
    assert response.status_code == 403
    assert response.headers["content-type"] == PROBLEM_MEDIA_TYPE
    assert response.json()["detail"] == "this request needs a token of the admin scope"
    assert client.get("/api/v1/admin-probe", headers=bearer(ADMIN)).json() == {"ok": True}
    assert_401(client.get("/api/v1/admin-probe"), "/api/v1/admin-probe")


def test_health_metrics_and_docs_stay_open_by_default(
    make_client: Callable[..., TestClient],
) -> None:
    client = secured(make_client)
    assert client.get("/health").status_code in (200, 503)  # not started consuming: 503
    assert client.get("/metrics").status_code == 200
    assert client.get("/openapi.json").status_code == 200
    assert client.get("/docs").status_code == 200
    schema = client.get("/openapi.json").json()
    assert "security" not in schema["paths"]["/health"]["get"]
    assert schema["components"]["securitySchemes"][auth.SCHEME] == {
        "type": "http", "scheme": "bearer", "description": auth._bearer.model.description,
    }  # fmt: skip


def test_health_and_metrics_protected_when_configured(
    make_client: Callable[..., TestClient],
) -> None:
    client = secured(make_client, api_health_open=False, api_metrics_open=False)
    assert_401(client.get("/health"), "/health")
    assert_401(client.get("/metrics"), "/metrics")
    assert client.get("/health", headers=bearer(READ)).status_code in (200, 503)
    assert client.get("/metrics", headers=bearer(READ)).status_code == 200
    assert client.get("/openapi.json").json()["paths"]["/health"]["get"]["security"]


def test_tokens_are_compared_in_constant_time(
    make_client: Callable[..., TestClient], monkeypatch: pytest.MonkeyPatch
) -> None:
    client = secured(make_client)
    calls: list[tuple[bytes, bytes]] = []
    real = hmac.compare_digest

    def spy(a: bytes, b: bytes) -> bool:
        calls.append((a, b))
        return real(a, b)

    # The module global auth.py calls at request time.
    monkeypatch.setattr(hmac, "compare_digest", spy)
    assert client.get("/api/v1/stats", headers=bearer(READ)).status_code == 200
    # Every configured token compared, even after the match: no early exit.
    assert sorted(b for _, b in calls) == sorted(t.encode() for t in (READ, OTHER_READ, ADMIN))
    assert {a for a, _ in calls} == {READ.encode()}


def test_no_token_leaves_the_api_open_and_warns_once(
    make_client: Callable[..., TestClient], caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.INFO, logger="processor.app"):
        client = make_client()
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1
    assert "authentication is off" in warnings[0].getMessage()
    assert client.get("/api/v1/stats").status_code == 200
    schema = client.get("/openapi.json").json()
    assert "securitySchemes" not in schema["components"]
    for path, operation in operations(client):
        assert "security" not in operation, path
        assert "401" not in operation["responses"], path
