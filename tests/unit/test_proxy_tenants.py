"""Tenant resolution: API-key map by digest first, then the header; keys never kept."""

from __future__ import annotations

import pytest

from producers.proxy.tenants import TenantResolver, valid_label

KEYS = ["team-a=sk-aaa", "team-b = sk-bbb"]


def test_the_key_map_wins_over_the_header() -> None:
    resolver = TenantResolver.from_entries(KEYS, "X-Tenant")
    headers = {"Authorization": "Bearer sk-bbb", "X-Tenant": "team-a"}
    assert resolver.resolve(headers) == "team-b"
    assert resolver.resolve({"api-key": "sk-aaa"}) == "team-a"  # Azure-style header


def test_an_unknown_key_falls_back_to_the_header() -> None:
    resolver = TenantResolver.from_entries(KEYS, "x-tenant")
    assert resolver.resolve({"authorization": "Bearer other", "X-TENANT": "ops"}) == "ops"
    assert resolver.resolve({"authorization": "Bearer other"}) is None


def test_without_a_header_setting_only_keys_count() -> None:
    resolver = TenantResolver.from_entries(KEYS, None)
    assert resolver.resolve({"X-Tenant": "ops"}) is None


@pytest.mark.parametrize("value", ["", " ", "has space", "(unattributed)", "-x", "a" * 129])
def test_a_header_value_the_contract_refuses_is_ignored(value: str) -> None:
    resolver = TenantResolver.from_entries([], "X-Tenant")
    assert resolver.resolve({"X-Tenant": value}) is None
    assert valid_label(value) is None


def test_keys_are_kept_only_as_digests() -> None:
    resolver = TenantResolver.from_entries(KEYS, None)
    assert "sk-aaa" not in repr(resolver)
    assert all(len(digest) == 32 for digest, _ in resolver.keys)


def test_bad_entries_are_named_by_position_never_by_content() -> None:
    with pytest.raises(ValueError, match="entry 1") as caught:
        TenantResolver.from_entries(["no-equals-sk-secret", "bad tenant=sk-x", "ok=sk-y"], None)
    message = str(caught.value)
    assert "entry 2" in message
    assert "sk-secret" not in message
    assert "sk-x" not in message
