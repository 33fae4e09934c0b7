"""The page, /docs and /redoc: served by the processor from its own files, no CDN."""

from __future__ import annotations

import re

import pytest
from fastapi.testclient import TestClient

from processor.app import create_app
from processor.settings import ProcessorSettings
from scripts import vendor_assets

# An attribute that loads something (src/href/url(...)) pointing off this server.
_REMOTE = re.compile(r"""(?:src|href)\s*=\s*["']?\s*(?:https?:)?//|url\(\s*["']?(?:https?:)?//""")


@pytest.fixture
def client() -> TestClient:
    # No `with`: the lifespan (Kafka, MongoDB) is not needed to serve static files.
    return TestClient(create_app(ProcessorSettings(), consume=False))


def test_committed_vendor_files_match_the_manifest() -> None:
    assert vendor_assets.check() == []


def test_every_vendored_package_ships_its_license() -> None:
    for package in vendor_assets.load_manifest()["packages"]:
        targets = [e["to"] for e in package["files"].values()]
        assert any(t.endswith("/LICENSE") for t in targets), package["name"]


@pytest.mark.parametrize("path", ["/", "/docs", "/redoc"])
def test_html_loads_nothing_from_elsewhere(client: TestClient, path: str) -> None:
    response = client.get(path)
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/html")
    html = response.text
    assert "cdn" not in html.lower()
    assert not _REMOTE.search(html), _REMOTE.search(html)
    # Every local asset the HTML names is served.
    for asset in re.findall(r"""(?:src|href)=["'](/static/[^"']+)["']""", html):
        assert client.get(asset).status_code == 200, asset


def test_docs_pages_switch_off_their_remote_requests(client: TestClient) -> None:
    redoc = client.get("/redoc").text
    assert redoc.index("/static/redoc-offline.js") < redoc.index("redoc.standalone.js")
    assert '"validatorUrl": null' in client.get("/docs").text


def test_page_script_and_styles_are_served(client: TestClient) -> None:
    for asset in ("/static/page.js", "/static/page.css", "/static/favicon.svg",
                  "/static/vendor/uplot/uPlot.iife.min.js"):  # fmt: skip
        response = client.get(asset)
        assert response.status_code == 200, asset
        assert b"http://" not in response.content.replace(b"http://www.w3.org", b"")
    assert "cdn" not in client.get("/static/page.js").text.lower()


def test_page_routes_stay_out_of_the_openapi_document(client: TestClient) -> None:
    paths = client.get("/openapi.json").json()["paths"]
    assert not {"/", "/docs", "/redoc"} & set(paths)


def test_page_is_open_when_the_api_needs_a_token() -> None:
    settings = ProcessorSettings(api_read_tokens=["r" * 32])
    client = TestClient(create_app(settings, consume=False))
    for path in ("/", "/docs", "/redoc", "/static/page.js", "/openapi.json"):
        assert client.get(path).status_code == 200, path
    assert client.get("/api/v1/stats").status_code == 401
