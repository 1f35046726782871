"""One validation path for every id, name, text and metadata value that enters the service.

Routers and schemas use the annotated types below (`DocumentIdStr`, `CollectionName`, `Text`,
`Metadata`); the bulk job uses the same `*_problem` functions. Each problem is a sentence meant for the
client, reported as a 422 naming the field.

Rules:
- Text (documents, queries, names, ids, metadata keys and values) must be storable on both backends and
  encodable in a UTF-8 response: no NUL (PostgreSQL refuses it) and no lone UTF-16 surrogate.
- Document ids appear in URLs (`/documents/{id}`, the rest of the path): they may hold `/` (file paths,
  "newsgroup/number"), but no segment between slashes may be empty, `.` or `..`. HTTP clients and
  proxies resolve dot segments and merge slashes before sending, so such an id would address another
  resource (`c/documents/..` -> `c/`, the collection itself). No control character (C0, DEL, C1) or
  backslash (which WHATWG URL parsers turn into `/`) either.
- Collection names are URL-safe tokens that start with a letter or digit (so never `.` or `..`).
- Metadata is a JSON object of finite numbers: NaN, Infinity and numbers beyond a double (1e400) are
  refused instead of stored as null on SQLite or refused by PostgreSQL; it nests at most
  `MAX_METADATA_DEPTH` levels.
"""

from __future__ import annotations

import math
import re
from typing import Annotated, Any

from pydantic import AfterValidator, Field, WithJsonSchema

MAX_ID_CHARS = 256
NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$"
NAME_RULE = "1 to 128 letters, digits, '_', '.' or '-', starting with a letter or digit"
# What a JSON Schema can say about ids (the segment rules need `document_id_problem`).
DOCUMENT_ID_PATTERN = r"^[^\x00-\x1f\x7f-\x9f\\]{1,256}$"
DOCUMENT_ID_RULE = (
    "1 to 256 characters without control characters, surrogates or backslashes, whose '/'-separated "
    "segments are neither empty nor '.' or '..'"
)
NUL_MESSAGE = "must not contain NUL characters (U+0000): PostgreSQL cannot store them"
SURROGATE_MESSAGE = "must not contain lone UTF-16 surrogates (U+D800 to U+DFFF): they are not valid Unicode"
MAX_METADATA_DEPTH = 32

_FORBIDDEN_IN_ID = re.compile(r"[\x00-\x1f\x7f-\x9f\\]")
_SURROGATE = re.compile(r"[\ud800-\udfff]")
_NAME = re.compile(NAME_PATTERN)


def text_problem(value: str) -> str | None:
    """Why `value` cannot be stored and sent back as text, or None."""
    if "\x00" in value:
        return NUL_MESSAGE
    if _SURROGATE.search(value):
        return SURROGATE_MESSAGE
    return None


def document_id_problem(value: str) -> str | None:
    """Why `value` is not a valid document id, or None."""
    if not 1 <= len(value) <= MAX_ID_CHARS:
        return f"must be 1 to {MAX_ID_CHARS} characters, got {len(value)}"
    problem = text_problem(value)
    if problem is not None:
        return problem
    if _FORBIDDEN_IN_ID.search(value):
        return "must not contain control characters or backslashes"
    for segment in value.split("/"):
        if segment in ("", ".", ".."):
            return (
                "must not have an empty, '.' or '..' segment between slashes: clients resolve those "
                "in URLs, so the id would address another resource"
            )
    return None


def collection_name_problem(value: str) -> str | None:
    """Why `value` is not a valid collection name, or None."""
    return None if _NAME.fullmatch(value) else f"must be {NAME_RULE}"


def metadata_problem(value: Any, depth: int = 0) -> str | None:
    """Why a JSON value cannot be stored as metadata, or None."""
    if depth > MAX_METADATA_DEPTH:
        return f"nests deeper than {MAX_METADATA_DEPTH} levels"
    if isinstance(value, str):
        return text_problem(value)
    if isinstance(value, float) and not math.isfinite(value):
        return "numbers must be finite (no NaN, Infinity or values beyond a double such as 1e400)"
    if isinstance(value, dict):
        for key, item in value.items():
            problem = text_problem(key) if isinstance(key, str) else "keys must be strings"
            problem = problem or metadata_problem(item, depth + 1)
            if problem is not None:
                return problem
    if isinstance(value, list):
        for item in value:
            problem = metadata_problem(item, depth + 1)
            if problem is not None:
                return problem
    return None


def _raise_if(problem: str | None) -> None:
    if problem is not None:
        raise ValueError(problem)


def check_text(value: str) -> str:
    _raise_if(text_problem(value))
    return value


def check_document_id(value: str) -> str:
    _raise_if(document_id_problem(value))
    return value


def check_collection_name(value: str) -> str:
    _raise_if(collection_name_problem(value))
    return value


def check_metadata(value: dict[str, Any] | None) -> dict[str, Any] | None:
    if value is not None:
        _raise_if(metadata_problem(value))
    return value


Text = Annotated[str, AfterValidator(check_text)]
DocumentIdStr = Annotated[
    str,
    Field(min_length=1, max_length=MAX_ID_CHARS),
    AfterValidator(check_document_id),
    WithJsonSchema(
        {"type": "string", "pattern": DOCUMENT_ID_PATTERN, "minLength": 1, "maxLength": MAX_ID_CHARS}
    ),
]
CollectionName = Annotated[str, Field(pattern=NAME_PATTERN)]
Metadata = Annotated[dict[str, Any] | None, AfterValidator(check_metadata)]
