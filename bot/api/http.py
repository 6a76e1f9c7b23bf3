"""The API's boundary: one route table, bounded body reading, validation errors that name the field, and
the mapping of core errors (TocsinError) to JSON 4xx answers."""
from __future__ import annotations

import asyncio
import functools
import logging
import math
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, TypeVar

import pydantic_core
from aiohttp import web
from pydantic import BaseModel, ValidationError

from bot.api.schemas import ErrorResponse, FieldProblem
from bot.server import RUNTIME
from core.db import busy, unavailable
from core.errors import Forbidden, InvalidInput, InvalidTransition, NotFound, StorageUnavailable, TocsinError

if TYPE_CHECKING:
    from bot.context import Context
    from bot.server import Runtime

log = logging.getLogger("tocsin.api")

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
M = TypeVar("M", bound=BaseModel)


@dataclass(frozen=True)
class Route:
    """One endpoint: mounted on the app and described in the OpenAPI document from the same entry."""

    method: str
    path: str
    handler: Handler
    summary: str
    responses: dict[int, tuple[str, type[BaseModel] | None]]
    request: type[BaseModel] | None = None
    query: type[BaseModel] | None = None
    security: Sequence[str] = ()
    """OpenAPI security scheme names, any one of which is accepted; empty = no authentication."""
    tags: Sequence[str] = field(default_factory=tuple)


class ApiError(Exception):
    """A 4xx answer decided at the boundary (auth, size, JSON, validation)."""

    def __init__(self, status: int, code: str, message: str, *, field: str | None = None,
                 details: list[FieldProblem] | None = None, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.body = ErrorResponse(error=code, message=message, field=field, details=details or [])
        self.headers = headers or {}


# TocsinError -> HTTP status. InvalidTransition is a conflict with the incident's current state;
# StorageUnavailable means nothing was stored and the sender should retry later.
_STATUS: list[tuple[type[TocsinError], int]] = [
    (NotFound, 404), (Forbidden, 403), (InvalidTransition, 409), (InvalidInput, 400), (StorageUnavailable, 503)]
RETRY_AFTER_S = 30


def error_response(status: int, body: ErrorResponse, headers: dict[str, str] | None = None) -> web.Response:
    return web.json_response(body.model_dump(mode="json"), status=status, headers=headers)


def api_handler(fn: Handler) -> Handler:
    """Map errors at the boundary: ApiError and TocsinError become JSON 4xx; a database that cannot be
    reached or written is a JSON 503 with Retry-After (nothing was stored); anything else propagates
    (aiohttp logs it and answers 500, so a sender such as Alertmanager retries)."""

    @functools.wraps(fn)
    async def wrapper(request: web.Request) -> web.StreamResponse:
        try:
            return await fn(request)
        except ApiError as exc:
            return error_response(exc.status, exc.body, exc.headers)
        except TocsinError as exc:
            status = next((code for cls, code in _STATUS if isinstance(exc, cls)), 400)
            log.info("api.request.refused", extra={"path": request.path, "status": status, "error": exc.code,
                                                   "reason": str(exc)})
            headers = {"Retry-After": str(RETRY_AFTER_S)} if status == 503 else None
            return error_response(status, ErrorResponse(error=exc.code, message=str(exc)), headers)
        except Exception as exc:
            if busy(exc):
                # SQLite's write lock held past database.busy_timeout_ms (a storm of writes): not an outage
                # and nothing was stored; a JSON 503 the sender retries, not a bare 500.
                log.warning("api.request.busy", extra={"path": request.path, "status": 503})
                return error_response(503, ErrorResponse(
                    error="database_busy", message="the database is busy (SQLite write lock); nothing was "
                    "stored, retry shortly"), {"Retry-After": "1"})
            if not unavailable(exc):
                raise
            # A read that could not reach the database (writes arrive here as StorageUnavailable already).
            err = context(request).db.unavailable_error(exc)
            log.info("api.request.refused", extra={"path": request.path, "status": 503, "error": err.code,
                                                   "reason": str(err)})
            return error_response(503, ErrorResponse(error=err.code, message=str(err)),
                                  {"Retry-After": str(RETRY_AFTER_S)})

    return wrapper


def runtime(request: web.Request) -> Runtime:
    rt: Runtime = request.app[RUNTIME]
    return rt


def context(request: web.Request) -> Context:
    return runtime(request).ctx


def field_path(loc: Sequence[str | int]) -> str:
    """('alerts', 0, 'fingerprint') -> 'alerts[0].fingerprint' (the style config errors use too)."""
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += ("." if out else "") + str(part)
    return out


def validation_error(exc: ValidationError, *, where: str = "body") -> ApiError:
    """A 400 naming every field at fault; the first one is `field`, and leads the message."""
    problems = []
    for err in exc.errors(include_url=False):
        if err["type"] == "json_invalid":
            return ApiError(400, "invalid_json", f"the {where} is not valid JSON: "
                                                 f"{err.get('ctx', {}).get('error', err['msg'])}")
        path = field_path(err["loc"])
        if not path:
            return ApiError(400, "invalid_request", f"the {where} must be a JSON object")
        msg = "required field is missing" if err["type"] == "missing" else (
            "unknown field" if err["type"] == "extra_forbidden" else err["msg"])
        problems.append(FieldProblem(field=path, message=msg, type=err["type"]))
    first = problems[0]
    more = f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""
    return ApiError(400, "invalid_request", f"{first.field}: {first.message}{more}", field=first.field,
                    details=problems)


def field_error(field: str, message: str, *, kind: str = "value_error") -> ApiError:
    """A 400 about one field found after parsing (e.g. a payload field a config path points at)."""
    return ApiError(400, "invalid_request", f"{field}: {message}", field=field,
                    details=[FieldProblem(field=field, message=message, type=kind)])


async def read_body(request: web.Request, *, limit: int) -> bytes:
    """Read at most `limit` bytes; a bigger body is 413 before it is buffered (Content-Length or streamed)."""
    too_big = ApiError(413, "body_too_large",
                       f"the body is larger than {limit} bytes (server.max_body_bytes)")
    if request.content_length is not None and request.content_length > limit:
        raise too_big
    buf = bytearray()
    async for chunk in request.content.iter_chunked(64 * 1024):
        buf += chunk
        if len(buf) > limit:
            raise too_big
    return bytes(buf)


async def parse_body(request: web.Request, model: type[M]) -> M:
    """Bounded read + JSON parse + validation in one step: 413 or 400 naming the field."""
    body = await read_body(request, limit=context(request).cfg.server.max_body_bytes)
    if not body.strip():
        raise ApiError(400, "invalid_json", "the body is empty; send a JSON object")
    if len(body) < _INLINE_BYTES:
        return _parse(body, model)
    # Parsing and walking a body near the limit takes tens of milliseconds of CPU: in a thread, the event
    # loop (health checks, deliveries, escalations) keeps running meanwhile.
    return await asyncio.to_thread(_parse, body, model)


_INLINE_BYTES = 32 * 1024
"""Bodies below this parse on the event loop (well under a millisecond); bigger ones in a thread."""


def _parse(body: bytes, model: type[M]) -> M:
    try:
        parsed = model.model_validate_json(body)
    except ValidationError as exc:
        raise validation_error(exc) from None
    found = unstorable(parsed.model_dump(by_alias=True))
    if found is not None:
        where, problem = found
        raise field_error(field_path(where) or "(body)", problem, kind="value_error")
    if b"NaN" in body or b"Infinity" in body:
        # In a field the model ignores (Alertmanager's extras) it is not stored, but the body is still not
        # JSON: say so too. A second, strict parse only for bodies that hold the words at all.
        try:
            pydantic_core.from_json(body, allow_inf_nan=False)
        except ValueError as exc:
            raise ApiError(400, "invalid_json", f"the body is not valid JSON ({exc}): {NON_FINITE_PROBLEM}",
                           details=[FieldProblem(field="(body)", message=NON_FINITE_PROBLEM,
                                                 type="value_error")]) from None
    return parsed


NUL_PROBLEM = "contains a NUL character (\\u0000), which cannot be stored"
NON_FINITE_PROBLEM = "NaN and Infinity are not JSON numbers (RFC 8259); send a number, a string or null"


def unstorable(value: object, path: tuple[str | int, ...] = ()) -> tuple[tuple[str | int, ...], str] | None:
    """(path, problem) of the first value we must refuse, else None.

    PostgreSQL text and jsonb cannot hold U+0000, and NaN/Infinity (which Python's and pydantic's JSON
    parsers accept) would be stored as null: refuse both here (400 naming the field, on every database)
    rather than fail the insert with a 500 the sender retries forever, or lose the value silently.
    Depth is bounded by the JSON parser's recursion limit, which runs first.
    """
    if isinstance(value, str):
        return (path, NUL_PROBLEM) if "\x00" in value else None
    if isinstance(value, float):
        return None if math.isfinite(value) else (path, NON_FINITE_PROBLEM)
    if isinstance(value, dict):
        for key, item in value.items():
            if "\x00" in str(key):
                return path + (str(key).replace("\x00", "\\u0000"),), NUL_PROBLEM
            found = unstorable(item, path + (str(key),))
            if found is not None:
                return found
    if isinstance(value, (list, tuple)):
        for i, item in enumerate(value):
            found = unstorable(item, path + (i,))
            if found is not None:
                return found
    return None


def parse_query(request: web.Request, model: type[M]) -> M:
    try:
        return model.model_validate(dict(request.query))
    except ValidationError as exc:
        raise validation_error(exc, where="query string") from None


def json_response(model: BaseModel, *, status: int = 200) -> web.Response:
    return web.json_response(model.model_dump(mode="json"), status=status)


def client_address(request: web.Request) -> str:
    return f"api {request.remote or '?'}"
