"""The proxy's settings and the GPU attribution it derives from the deployment map."""

from __future__ import annotations

from pathlib import Path

import pytest

from producers.exceptions import SettingsError
from producers.proxy.serve import attribution_for, config_from
from producers.settings import load_settings
from producers.traffic import GpuTarget

GPUS = [GpuTarget("GPU-0", 0), GpuTarget("GPU-1", 1), GpuTarget("GPU-2", 2)]


def test_the_upstream_is_required_and_must_be_a_url() -> None:
    with pytest.raises(SettingsError, match="PROXY_UPSTREAM"):
        config_from(load_settings({}), GPUS)
    with pytest.raises(SettingsError, match="PROXY_UPSTREAM"):
        load_settings({"PROXY_UPSTREAM": "vllm:8000"})


def test_api_keys_come_from_a_file_and_never_show(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    keys = tmp_path / "keys"
    keys.write_text("team-a=sk-secret-1,team-b=sk-secret-2\n")
    monkeypatch.setenv("PROXY_API_KEYS_FILE", str(keys))
    settings = load_settings({"PROXY_UPSTREAM": "http://127.0.0.1:8000"})
    assert "sk-secret" not in repr(settings)
    config = config_from(settings, GPUS)
    assert config.tenants.resolve({"Authorization": "Bearer sk-secret-2"}) == "team-b"


def test_a_malformed_key_map_is_a_settings_error() -> None:
    settings = load_settings({"PROXY_UPSTREAM": "http://u", "PROXY_API_KEYS": "sk-no-tenant"})
    with pytest.raises(SettingsError, match="PROXY_API_KEYS: entry 1") as caught:
        config_from(settings, GPUS)
    assert "sk-no-tenant" not in str(caught.value)


def test_tenant_header_dash_means_none() -> None:
    assert load_settings({"PROXY_TENANT_HEADER": "-"}).proxy_tenant_header is None
    assert load_settings({}).proxy_tenant_header == "X-Tenant"


def test_without_a_deployment_map_every_model_is_on_all_gpus() -> None:
    attribution = attribution_for(load_settings({}), GPUS)
    assert attribution.gpus("anything") == tuple(GPUS)


def test_a_deployment_map_routes_models_and_alternates_replicas() -> None:
    settings = load_settings({"PRODUCER_DEPLOYMENT": "big=0,1;small=2"})
    attribution = attribution_for(settings, GPUS)
    assert attribution.gpus("big") == (GPUS[0], GPUS[1])
    assert attribution.gpus("small") == (GPUS[2],)
    assert attribution.gpus("unlisted") is None
    two = attribution_for(load_settings({"PRODUCER_DEPLOYMENT": "m=0;m=1"}), GPUS)
    assert [two.gpus("m") for _ in range(3)] == [(GPUS[0],), (GPUS[1],), (GPUS[0],)]


def test_a_deployment_map_that_does_not_fit_the_gpus_is_refused() -> None:
    with pytest.raises(SettingsError, match="GPU 7 is not on this host"):
        attribution_for(load_settings({"PRODUCER_DEPLOYMENT": "m=7"}), GPUS)
