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
from pydantic import BaseModel, Field
from sqlalchemy.exc import (
    DataError,
    DBAPIError,
    IntegrityError,
    InterfaceError,
    OperationalError,
    TimeoutError,
)
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

    def __reduce__(self) -> tuple[object, ...]:
        # Rebuilt from its attributes, whatever a subclass's __init__ takes: image decoding raises these
        # in worker processes, and they cross back by pickling.
        return (_rebuild, (type(self), self.args, self.__dict__))


def _rebuild(cls: type[ServiceError], args: tuple[object, ...], state: dict[str, object]) -> ServiceError:
    error = cls.__new__(cls)
    error.args = args
    error.__dict__.update(state)
    return error


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


class ErrorItem(BaseModel):
    """One problem with the request, FastAPI's validation format: where, what, which kind."""

    loc: list[str | int] = Field(description="Where: `body`/`path`/`query`, then field names and indices.")
    msg: str = Field(description="What was wrong, for a person.")
    type: str = Field(description="The kind of problem (`value_error`, `json_invalid`, `missing`...).")
    input: Any = Field(None, description="The rejected value, when it is a short scalar.")
    ctx: dict[str, str] | None = Field(None, description="Parameters of the rule that failed.")


class ErrorResponse(BaseModel):
    """Every error response: a message, or (422) a list of problems naming their fields."""

    detail: str | list[ErrorItem]


_ERROR_DESCRIPTIONS = {
    400: "The body could not be read (e.g. a malformed multipart upload).",
    401: "A valid X-API-Key header is required.",
    404: "The collection or document does not exist.",
    409: "The request conflicts with stored data (a name in use, another bundle, a concurrent write).",
    413: "The body, or an image in it, is over the configured limit.",
    415: "The content type is neither application/json nor multipart/form-data.",
    422: "Invalid input; each problem names its field. Also: data the database refused.",
    429: "The image decoders are all busy: retry after Retry-After seconds.",
    503: "The database is unreachable (retry after Retry-After), or the needed model is not loaded.",
}


def error_responses(*codes: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI `responses` for these error status codes, all with the `ErrorResponse` model."""
    return {code: {"model": ErrorResponse, "description": _ERROR_DESCRIPTIONS[code]} for code in codes}


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


# SQLSTATE classes of conditions that pass: connection exceptions (08), insufficient resources (53),
# operator intervention such as a shutdown or a cancelled statement (57), system errors (58),
# transaction rollbacks such as serialization failures and deadlocks (40), lock not available (55P03).
_TRANSIENT_SQLSTATE_CLASSES = ("08", "53", "57", "58", "40")
_TRANSIENT_SQLSTATES = ("55P03",)


def database_error_kind(error: DBAPIError | TimeoutError) -> str:
    """`unavailable` (the database cannot be reached or is busy: retrying can work), `conflict` (a unique
    key raced), `invalid` (the database refused a value), or `internal` (a bug: retrying cannot help)."""
    if isinstance(error, TimeoutError) or getattr(error, "connection_invalidated", False):
        return "unavailable"
    if isinstance(error, IntegrityError):
        return "conflict"
    if isinstance(error, DataError):
        return "invalid"
    sqlstate = getattr(getattr(error, "orig", None), "sqlstate", None)
    if isinstance(error, OperationalError | InterfaceError):
        # A psycopg error without SQLSTATE failed to connect or lost the connection; SQLite's are all
        # about the file: locked, unreadable, full.
        if (
            sqlstate is None
            or sqlstate[:2] in _TRANSIENT_SQLSTATE_CLASSES
            or sqlstate in _TRANSIENT_SQLSTATES
        ):
            return "unavailable"
    if sqlstate is not None and sqlstate[:2] == "22":  # data exception raised under another class
        return "invalid"
    return "internal"


def _database_error(_request: Request, error: Exception) -> JSONResponse:
    # The transaction was rolled back when its session closed, so nothing was half-written.
    assert isinstance(error, DBAPIError | TimeoutError)
    kind = database_error_kind(error)
    lines = str(getattr(error, "orig", None) or error).strip().splitlines()
    summary = printable(lines[0] if lines else type(error).__name__)[:MAX_ECHOED_CHARS]
    if kind == "unavailable":
        logger.warning("database unavailable: %s", summary)
        return JSONResponse(
            {"detail": "the database is unavailable; nothing was written, retry later"},
            status_code=status.HTTP_503_SERVICE_UNAVAILABLE,
            headers={"Retry-After": "1"},
        )
    if kind == "conflict":
        # A concurrent writer won a race on a unique key (e.g. two creates of one collection name).
        logger.info("integrity conflict: %s", summary)
        return JSONResponse(
            {"detail": "the request conflicts with data written concurrently; nothing was written"},
            status_code=status.HTTP_409_CONFLICT,
        )
    if kind == "invalid":
        logger.info("the database refused a value: %s", summary)
        return JSONResponse(
            {
                "detail": [
                    {
                        "loc": ["body"],
                        "msg": f"the database refused a value; nothing was written ({summary})",
                        "type": "value_error",
                    }
                ]
            },
            status_code=status.HTTP_422_UNPROCESSABLE_CONTENT,
        )
    return _unexpected(_request, error)


def _unexpected(_request: Request, error: Exception) -> JSONResponse:
    # Log the traceback for operators; never send it to clients.
    logger.error("unhandled error", exc_info=error)
    return JSONResponse({"detail": "internal error"}, status_code=status.HTTP_500_INTERNAL_SERVER_ERROR)


def register_error_handlers(app: FastAPI) -> None:
    """Install the handlers on `app`."""
    app.add_exception_handler(ServiceError, _service_error)
    app.add_exception_handler(RequestValidationError, _request_validation_error)
    app.add_exception_handler(StarletteHTTPException, _http_error)
    for database_error in (DBAPIError, TimeoutError):
        app.add_exception_handler(database_error, _database_error)
    app.add_exception_handler(Exception, _unexpected)
