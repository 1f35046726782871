"""Domain errors and the handlers that turn them (and database failures) into clear 4xx/503 responses."""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from typing import Any

from fastapi import FastAPI, Request, status
from fastapi.exception_handlers import http_exception_handler
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from sqlalchemy.exc import DBAPIError, IntegrityError, OperationalError, TimeoutError
from starlette.exceptions import HTTPException as StarletteHTTPException

logger = logging.getLogger(__name__)

Location = Sequence[str | int]


class ServiceError(Exception):
    """Base of the errors a request can cause; each maps to one status code."""

    status_code = status.HTTP_400_BAD_REQUEST
    headers: dict[str, str] | None = None  # e.g. Retry-After on a 429

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message

    def detail(self) -> object:
        return self.message


class NotFoundError(ServiceError):
    """An unknown collection or document."""

    status_code = status.HTTP_404_NOT_FOUND


class ConflictError(ServiceError):
    """The request clashes with stored state (a name in use, a collection hashed by another bundle)."""

    status_code = status.HTTP_409_CONFLICT


class InvalidInputError(ServiceError):
    """Input that passes the schema but not the model or the data (e.g. text with no vocabulary word).

    Reported in FastAPI's validation format so every 422 names its field the same way.
    """

    status_code = status.HTTP_422_UNPROCESSABLE_CONTENT

    def __init__(self, message: str, locations: Sequence[Location], error_type: str = "value_error") -> None:
        super().__init__(message)
        self.locations = [list(location) for location in locations]
        self.error_type = error_type

    def detail(self) -> object:
        return [
            {"loc": location, "msg": self.message, "type": self.error_type} for location in self.locations
        ]


class ModelNotLoadedError(ServiceError):
    """The request needs a model bundle this server did not load."""

    status_code = status.HTTP_503_SERVICE_UNAVAILABLE


MAX_ECHOED_CHARS = 200  # a 422 echoes a rejected value only when it is a short scalar


def printable(text: str) -> str:
    """`text` safe for a UTF-8 response or a log line: lone surrogates and control characters escaped."""
    escaped = text.encode("utf-8", "backslashreplace").decode("utf-8")
    return "".join(c if c.isprintable() or c == " " else ascii(c)[1:-1] for c in escaped)


def _echo(value: Any) -> tuple[bool, Any]:
    """(whether to echo, the JSON-safe value): short strings and finite scalars; never bytes or bodies."""
    if value is None or isinstance(value, bool | int):
        return True, value
    if isinstance(value, float):
        return math.isfinite(value), value
    if isinstance(value, str) and len(value) <= MAX_ECHOED_CHARS:
        return True, printable(value)
    return False, None


def validation_details(errors: Sequence[Any]) -> list[dict[str, Any]]:
    """Pydantic/FastAPI errors as JSON-safe items: loc, msg, type, and the input when it is safe to echo.

    Raw request bytes (an undecodable body), lone surrogates and non-finite numbers would make the 422
    itself fail to encode (a 500); they are escaped or left out.
    """
    details = []
    for error in errors:
        location = [part if isinstance(part, int) else printable(str(part)) for part in error.get("loc", ())]
        item: dict[str, Any] = {
            "loc": location,
            "msg": printable(str(error.get("msg", "invalid value"))),
            "type": printable(str(error.get("type", "value_error"))),
        }
        echo, value = _echo(error.get("input"))
        if echo:
            item["input"] = value
        context = error.get("ctx")
        if isinstance(context, dict) and context:
            item["ctx"] = {
                printable(str(key)): printable(str(value))[:MAX_ECHOED_CHARS]
                for key, value in context.items()
            }
        details.append(item)
    return details


def _request_validation_error(_request: Request, error: Exception) -> JSONResponse:
    assert isinstance(error, RequestValidationError)
    return JSONResponse(
        {"detail": validation_details(error.errors())}, status_code=status.HTTP_422_UNPROCESSABLE_CONTENT
    )


# FastAPI's answer when reading a JSON body raised something other than a JSON syntax error (in practice
# a RecursionError: arrays or objects nested thousands deep).
_FASTAPI_BODY_PARSE_ERROR = "There was an error parsing the body"


async def _http_error(request: Request, error: Exception) -> Any:
    assert isinstance(error, StarletteHTTPException)
    if error.status_code == status.HTTP_400_BAD_REQUEST and error.detail == _FASTAPI_BODY_PARSE_ERROR:
        detail = [
            {
                "loc": ["body"],
                "msg": "the body could not be parsed as JSON: it nests too deeply or is otherwise malformed",
                "type": "json_invalid",
            }
        ]
        return JSONResponse({"detail": detail}, status_code=status.HTTP_422_UNPROCESSABLE_CONTENT)
    return await http_exception_handler(request, error)


def _service_error(_request: Request, error: Exception) -> JSONResponse:
    assert isinstance(error, ServiceError)
    return JSONResponse({"detail": error.detail()}, status_code=error.status_code, headers=error.headers)


def _database_unavailable(_request: Request, error: Exception) -> JSONResponse:
    # The transaction was rolled back when its session closed, so nothing was half-written.
    logger.warning("database error: %s", error)
    return JSONResponse(
        {"detail": "the database is unavailable; nothing was written, retry later"},
        status_code=status.HTTP_503_SERVICE_UNAVAILABLE,
    )


def _integrity_conflict(_request: Request, error: Exception) -> JSONResponse:
    # A concurrent writer won a race on a unique key (e.g. two creates of one collection name).
    logger.info("integrity conflict: %s", error)
    return JSONResponse(
        {"detail": "the request conflicts with data written concurrently; nothing was written"},
        status_code=status.HTTP_409_CONFLICT,
    )


def _unexpected(_request: Request, error: Exception) -> JSONResponse:
    # Log the traceback for operators; never send it to clients.
    logger.error("unhandled error", exc_info=error)
    return JSONResponse({"detail": "internal error"}, status_code=status.HTTP_500_INTERNAL_SERVER_ERROR)


def register_error_handlers(app: FastAPI) -> None:
    """Install the handlers on `app`."""
    app.add_exception_handler(ServiceError, _service_error)
    app.add_exception_handler(RequestValidationError, _request_validation_error)
    app.add_exception_handler(StarletteHTTPException, _http_error)
    for database_error in (OperationalError, DBAPIError, TimeoutError):
        app.add_exception_handler(database_error, _database_unavailable)
    app.add_exception_handler(IntegrityError, _integrity_conflict)
    app.add_exception_handler(Exception, _unexpected)
