"""What the JSON API's handlers share: an error raised anywhere becomes a JSON answer, and
database work runs in a worker thread, where a failure becomes a 503.

A handler raises ``ApiError`` (a bad parameter, a missing permission) instead of building the
answer itself; ``create_app`` registers ``api_error_response`` for it, so that every route
module refuses in the same shape: ``{"error": "..."}`` and the status.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Final, TypeVar, TypeVarTuple, Unpack

import anyio
from sqlalchemy.exc import SQLAlchemyError
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

log = logging.getLogger(__name__)

RETRY_AFTER_SECONDS: Final = 5

T = TypeVar("T")
Ts = TypeVarTuple("Ts")


class ApiError(Exception):
    """A request refused: ``status`` and a message saying what to change."""

    def __init__(self, status: int, message: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.headers = headers


def bad_parameter(name: str, problem: str) -> ApiError:
    """400 naming the query parameter or field that is wrong."""
    return ApiError(400, f"{name}: {problem}")


def error_response(status: int, message: str, headers: dict[str, str] | None = None) -> Response:
    return JSONResponse({"error": message}, status_code=status, headers=headers)


async def api_error_response(_request: Request, exc: Exception) -> Response:
    """The answer for an ``ApiError`` raised by a handler (registered in ``create_app``)."""
    assert isinstance(exc, ApiError)
    return error_response(exc.status, exc.message, exc.headers)


def unavailable(exc: SQLAlchemyError) -> ApiError:
    log.warning("database error, request refused for now: %s", getattr(exc, "orig", None) or exc)
    return ApiError(
        503,
        "the collector's database is unavailable; try again shortly",
        {"Retry-After": str(RETRY_AFTER_SECONDS)},
    )


async def in_thread(
    limiter: anyio.CapacityLimiter, work: Callable[[Unpack[Ts]], T], *args: *Ts
) -> T:
    """``work(*args)`` in a worker thread, within the collector's ``limiter``; a database
    failure raises a 503 ``ApiError``."""
    try:
        return await anyio.to_thread.run_sync(work, *args, limiter=limiter)
    except SQLAlchemyError as exc:
        raise unavailable(exc) from exc
