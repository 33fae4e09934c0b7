"""Who a proxied request is billed to; pure (no I/O).

    >>> resolver = TenantResolver.from_entries(["team-a=sk-aaa"], header="x-tenant")
    >>> resolver.resolve({"authorization": "Bearer sk-aaa"})
    'team-a'

Order: the API key (``Authorization: Bearer KEY`` or ``api-key: KEY``) when it is in the key
map, else the tenant header, else none (the event carries no tenant: ``(unattributed)``). The
key map wins because a client chooses its headers but cannot forge another team's key.

Keys are never kept: the map holds SHA-256 digests, a presented key is hashed and the digest
looked up (constant-time compared), and nothing here logs a key or its digest.
"""

from __future__ import annotations

import hashlib
import hmac
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Final

__all__ = ["TenantResolver", "valid_label"]

# The contract's pattern for tenant and user (schemas/token.usage.v1.json).
_LABEL: Final = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:@+/-]*$")
_MAX_TENANT: Final = 128
_MAX_USER: Final = 256


def valid_label(value: str | None, max_length: int = _MAX_TENANT) -> str | None:
    """``value`` if the contract accepts it as a tenant (or user, with its length), else None."""
    if value is None:
        return None
    value = value.strip()
    if 0 < len(value) <= max_length and _LABEL.match(value):
        return value
    return None


def valid_user(value: str | None) -> str | None:
    return valid_label(value, _MAX_USER)


def _digest(key: str) -> bytes:
    return hashlib.sha256(key.encode()).digest()


@dataclass(frozen=True, slots=True)
class TenantResolver:
    """API-key digests -> tenant, and the header name to read a tenant from (lower case)."""

    keys: tuple[tuple[bytes, str], ...]
    header: str | None

    @classmethod
    def from_entries(cls, entries: Iterable[str], header: str | None) -> TenantResolver:
        """``tenant=key`` entries (as PROXY_API_KEYS holds them); ValueError names bad ones
        by position only (an entry holds a key)."""
        keys: list[tuple[bytes, str]] = []
        errors: list[str] = []
        for n, entry in enumerate(entries, 1):
            tenant, sep, key = entry.partition("=")
            tenant, key = tenant.strip(), key.strip()
            if not sep or not key:
                errors.append(f"entry {n}: must be tenant=api_key")
            elif valid_label(tenant) is None:
                errors.append(f"entry {n}: tenant {tenant!r} is not a valid tenant name")
            else:
                keys.append((_digest(key), tenant))
        if errors:
            raise ValueError("; ".join(errors))
        return cls(tuple(keys), header.strip().lower() if header else None)

    def resolve(self, headers: Mapping[str, str]) -> str | None:
        """The tenant of a request with these headers (names in any case), or None."""
        key = _presented_key(headers)
        if key is not None and self.keys:
            digest = _digest(key)
            found: str | None = None
            for known, tenant in self.keys:  # every entry compared: no early exit by position
                if hmac.compare_digest(known, digest):
                    found = tenant
            if found is not None:
                return found
        if self.header:
            return valid_label(_get(headers, self.header))
        return None


def _get(headers: Mapping[str, str], name: str) -> str | None:
    value = headers.get(name)
    if value is None:
        lowered = {k.lower(): v for k, v in headers.items()}
        value = lowered.get(name)
    return value


def _presented_key(headers: Mapping[str, str]) -> str | None:
    auth = _get(headers, "authorization")
    if auth:
        scheme, _, token = auth.strip().partition(" ")
        if scheme.lower() == "bearer" and token.strip():
            return token.strip()
    api_key = _get(headers, "api-key")  # Azure OpenAI style
    return api_key.strip() if api_key and api_key.strip() else None
