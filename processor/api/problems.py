"""RFC 9457 problem details: the one shape of every 4xx/5xx the API answers.

    HTTP/1.1 404 Not Found
    Content-Type: application/problem+json

    {"type": "about:blank", "title": "Not Found", "status": 404,
     "detail": "no readings ever stored for GPU host-a/GPU-x",
     "instance": "/api/v1/gpus/host-a/GPU-x/metrics"}

A request whose parameters are refused (422) has its own ``type`` and lists every bad
parameter in ``invalid_params``, whether FastAPI refused it while parsing (a ``group_by`` that
is not in its enum) or a route did (``start`` after ``end``). ``install`` puts the handlers on
an app and the ``Problem`` schema into its OpenAPI document; routes declare which statuses they
answer with ``problem_responses``. ``GET /health``'s 503 is not a problem: it is the health
report itself, with status ``degraded``. See docs/api.md.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from http import HTTPStatus
from typing import Any, Final
from urllib.parse import quote

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field
from starlette.exceptions import HTTPException as StarletteHTTPException

from processor.exceptions import BadParameter, InvalidParameters, StoreUnavailable

__all__ = [
    "INVALID_PARAMETERS",
    "PROBLEM_MEDIA_TYPE",
    "InvalidParam",
    "Problem",
    "ProblemResponse",
    "install",
    "problem_responses",
]

PROBLEM_MEDIA_TYPE: Final = "application/problem+json"
# An identifier (RFC 9457 §3.1.1), in the namespace the event contracts' $id already use; it
# is compared as a string and documented in docs/api.md, not fetched.
INVALID_PARAMETERS: Final = "https://gpu-token-cost.dev/problems/invalid-parameters"
_ABOUT_BLANK: Final = "about:blank"
_REF: Final = {"$ref": "#/components/schemas/Problem"}

_DESCRIPTIONS: Final = {
    401: "No bearer token, or not a valid one; `WWW-Authenticate: Bearer` says how to send it.",
    403: "The bearer token is valid but lacks the scope this operation needs.",
    404: "Nothing is stored for what the path names.",
    422: "A parameter was refused; `invalid_params` lists each one with its reason.",
    500: "A defect in the processor; its log has the traceback.",
    503: "MongoDB did not answer the query; try again later.",
}


class InvalidParam(BaseModel):
    """One refused request parameter."""

    location: str = Field(description="Where the parameter was: `query` or `path`.")
    name: str = Field(description="The parameter's name, e.g. `start`.")
    reason: str = Field(description="Why it was refused.")


class Problem(BaseModel):
    """An error, as RFC 9457 `application/problem+json`."""

    type: str = Field(
        description=f"`about:blank` (the status says it all) or `{INVALID_PARAMETERS}`."
    )
    title: str = Field(description="Short summary of the problem type.")
    status: int = Field(ge=400, le=599, description="The HTTP status code, repeated.")
    detail: str = Field(description="What went wrong with this request, for a person.")
    instance: str = Field(description="The request path this problem is about.")
    # Only the invalid-parameters type has this member (RFC 9457 §3.2 extension); it is left
    # out of every other problem rather than sent empty.
    invalid_params: list[InvalidParam] = Field(
        default_factory=list,
        exclude_if=lambda params: not params,
        description="Every refused parameter (only when `type` is invalid-parameters).",
    )


class ProblemResponse(JSONResponse):
    media_type = PROBLEM_MEDIA_TYPE


def problem_responses(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI ``responses=`` entries: each status answers a ``Problem``, plus 500 for defects."""
    return {
        status: {
            "description": _DESCRIPTIONS[status],
            "content": {PROBLEM_MEDIA_TYPE: {"schema": dict(_REF)}},
        }
        for status in sorted({*statuses, 500})
    }


def _instance(request: Request) -> str:
    # The decoded path may hold spaces or non-ASCII; re-quoted it is a valid URI reference.
    return quote(request.url.path, safe="/")


def problem(
    request: Request,
    status: int,
    detail: str,
    *,
    params: Sequence[BadParameter] = (),
    headers: Mapping[str, str] | None = None,
) -> ProblemResponse:
    """The response for one problem; with ``params`` it is of the invalid-parameters type."""
    body = Problem(
        type=INVALID_PARAMETERS if params else _ABOUT_BLANK,
        title="Invalid request parameters" if params else HTTPStatus(status).phrase,
        status=status,
        detail=detail,
        instance=_instance(request),
        invalid_params=[
            InvalidParam(location=p.where, name=p.name, reason=p.reason) for p in params
        ],
    )
    return ProblemResponse(body.model_dump(mode="json"), status_code=status, headers=headers)


def _invalid(request: Request, params: Iterable[BadParameter]) -> ProblemResponse:
    params = list(params)
    detail = "; ".join(f"{p.where} parameter {p.name}: {p.reason}" for p in params)
    return problem(request, 422, detail, params=params)


def _from_validation_error(error: dict[str, Any]) -> BadParameter:
    # FastAPI's loc is (where, name, *inner) for parameters, e.g. ("query", "limit").
    where, *name = error.get("loc") or ("query",)
    return BadParameter(
        where=str(where), name=".".join(str(n) for n in name) or "?", reason=str(error["msg"])
    )


async def _request_validation(request: Request, exc: Exception) -> ProblemResponse:
    assert isinstance(exc, RequestValidationError)
    return _invalid(request, (_from_validation_error(e) for e in exc.errors()))


async def _invalid_parameters(request: Request, exc: Exception) -> ProblemResponse:
    assert isinstance(exc, InvalidParameters)
    return _invalid(request, exc.params)


async def _http_exception(request: Request, exc: Exception) -> ProblemResponse:
    # Routing's 404 and 405 (with its Allow header) as well as the routes' own HTTPExceptions.
    assert isinstance(exc, StarletteHTTPException)
    return problem(request, exc.status_code, str(exc.detail), headers=exc.headers)


async def _store_unavailable(request: Request, exc: Exception) -> ProblemResponse:
    return problem(request, 503, str(exc))


async def _unexpected(request: Request, _exc: Exception) -> ProblemResponse:
    # Starlette's ServerErrorMiddleware calls this and then re-raises, so uvicorn still logs
    # the traceback; the client gets the same shape as every other error, without internals.
    return problem(request, 500, "unexpected error; the processor's log has the traceback")


def install(app: FastAPI) -> None:
    """Answer every error of ``app`` as a problem and put ``Problem`` into its OpenAPI schema."""
    handlers: dict[type[Exception], Callable[[Request, Exception], Any]] = {
        RequestValidationError: _request_validation,
        InvalidParameters: _invalid_parameters,
        StarletteHTTPException: _http_exception,
        StoreUnavailable: _store_unavailable,
        Exception: _unexpected,
    }
    for exc_class, handler in handlers.items():
        app.add_exception_handler(exc_class, handler)

    generate = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            schema = generate()  # caches the document in app.openapi_schema; completed in place
            components = schema.setdefault("components", {}).setdefault("schemas", {})
            problem_schema = Problem.model_json_schema(
                ref_template="#/components/schemas/{model}", mode="serialization"
            )
            components.update(problem_schema.pop("$defs", {}))
            components["Problem"] = problem_schema
            return schema
        return app.openapi_schema

    # FastAPI's documented way to extend the generated document is to replace this method.
    app.openapi = openapi  # type: ignore[method-assign]
