"""Bearer tokens and their scopes: ``read`` for every query, ``admin`` for what changes things.

    @router.post("/api/v1/replay", dependencies=[AdminScope])   # one dependency per route
    app.include_router(costs.router, dependencies=[ReadScope])    # or per router

A request sends ``Authorization: Bearer <token>``; the token is compared with every configured
one in constant time (``hmac.compare_digest``, no early exit), so the answer's timing says
nothing about how much of a token was right. An admin token also has the read scope. Missing
or unknown token: 401 with ``WWW-Authenticate: Bearer``; a known token without the scope: 403.
Both are RFC 9457 problems like every other error (problems.py). With no token configured the
checks pass and the OpenAPI document declares no security (the API is open, as it was).
"""

from __future__ import annotations

import hmac
from collections.abc import Callable, Coroutine
from typing import Annotated, Any, Final, Literal

from fastapi import Depends, FastAPI, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from starlette.exceptions import HTTPException

from processor.settings import ProcessorSettings

__all__ = [
    "SCHEME",
    "AdminScope",
    "ReadScope",
    "Scope",
    "Tokens",
    "authorize",
    "install",
    "protected",
]

Scope = Literal["read", "admin"]
# What each scope grants, itself included: admin implies read.
_GRANTS: Final[dict[Scope, frozenset[Scope]]] = {
    "read": frozenset({"read"}),
    "admin": frozenset({"read", "admin"}),
}
# The name of the scheme in the OpenAPI document (components.securitySchemes).
SCHEME: Final = "bearerAuth"

_bearer = HTTPBearer(
    auto_error=False,  # we answer 401 ourselves, as a problem with WWW-Authenticate
    scheme_name=SCHEME,
    description="`Authorization: Bearer <token>`; a token of the `read` or `admin` scope "
    "(API_READ_TOKENS, API_ADMIN_TOKENS).",
)


class Tokens:
    """The configured tokens and their scopes; ``scope_of`` finds a presented one."""

    def __init__(self, read: list[str], admin: list[str]) -> None:
        self._tokens: list[tuple[bytes, Scope]] = [
            *((t.encode(), "admin") for t in admin),
            *((t.encode(), "read") for t in read),
        ]

    @classmethod
    def from_settings(cls, settings: ProcessorSettings) -> Tokens | None:
        """The settings' tokens, or None when there are none (the API is open)."""
        if not settings.auth_enabled:
            return None
        return cls(
            [t.get_secret_value() for t in settings.api_read_tokens or ()],
            [t.get_secret_value() for t in settings.api_admin_tokens or ()],
        )

    def scope_of(self, presented: str) -> Scope | None:
        """The widest scope of the token ``presented`` is, or None when it is none of them."""
        candidate = presented.encode()
        found: Scope | None = None
        for token, scope in self._tokens:
            # Every token is compared, a match or not: the time depends on the number of
            # tokens only, not on which one matched or how many bytes of it did.
            if hmac.compare_digest(candidate, token) and (found is None or scope == "admin"):
                found = scope
        return found


def _unauthorized(detail: str, error: str | None = None) -> HTTPException:
    challenge = "Bearer" if error is None else f'Bearer error="{error}"'
    return HTTPException(401, detail, headers={"WWW-Authenticate": challenge})


def authorize(request: Request, credentials: HTTPAuthorizationCredentials | None,
              scope: Scope) -> None:  # fmt: skip
    """Raise the 401/403 a request without ``scope`` gets; pass when auth is off."""
    tokens: Tokens | None = request.app.state.tokens
    if tokens is None:
        return
    if credentials is None or not credentials.credentials:
        raise _unauthorized("this request needs a bearer token: Authorization: Bearer <token>")
    granted = tokens.scope_of(credentials.credentials)
    if granted is None:
        raise _unauthorized("the bearer token is not valid", "invalid_token")
    if scope not in _GRANTS[granted]:
        raise HTTPException(
            403,
            f"this request needs a token of the {scope} scope",
            headers={"WWW-Authenticate": f'Bearer error="insufficient_scope", scope="{scope}"'},
        )


def _require(scope: Scope) -> Callable[..., None]:
    def check(
        request: Request,
        credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
    ) -> None:
        authorize(request, credentials, scope)

    return check


ReadScope: Final = Depends(_require("read"))
AdminScope: Final = Depends(_require("admin"))


def protected(
    endpoint: Callable[[Request], Any], scope: Scope
) -> Callable[[Request], Coroutine[Any, Any, Any]]:
    """A plain Starlette endpoint (``/metrics``) behind the same check as the routes."""

    async def guarded(request: Request) -> Any:
        authorize(request, await _bearer(request), scope)
        return endpoint(request)

    return guarded


def install(app: FastAPI, tokens: Tokens | None) -> None:
    """Give ``app`` its tokens; with none, the OpenAPI document declares no security."""
    app.state.tokens = tokens
    if tokens is not None:
        return
    generate = app.openapi

    def openapi() -> dict[str, Any]:
        # The routes declare the bearer scheme whatever the settings; an open API must not
        # advertise one (a client would ask for a token it cannot get).
        schema = generate()
        schema.get("components", {}).pop("securitySchemes", None)
        for operations in schema.get("paths", {}).values():
            for operation in operations.values():
                if isinstance(operation, dict):
                    operation.pop("security", None)
        return schema

    app.openapi = openapi  # type: ignore[method-assign]
