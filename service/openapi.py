"""The OpenAPI document states this server's configured maxima of `radius`, `limit` and `shortlist`.

They are settings (`SEMHASH_MAX_RADIUS`, `SEMHASH_MAX_LIMIT`), checked by the routes, so the request
models cannot carry them; they are written into the document when it is first built.
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI

from service.settings import Settings


def _maxima(settings: Settings) -> dict[str, int]:
    return {"radius": settings.max_radius, "limit": settings.max_limit, "shortlist": settings.max_limit}


def _set_maximum(schema: dict[str, Any], maximum: int) -> None:
    # An optional field (`int | None`) is `anyOf: [integer, null]`: the bound goes on the integer.
    for option in schema.get("anyOf", [schema]):
        if option.get("type") == "integer":
            option["maximum"] = maximum


def document_configured_maxima(app: FastAPI, settings: Settings) -> None:
    """Make `app.openapi()` give every `radius`, `limit` and `shortlist` (request fields and query
    parameters) its configured maximum."""
    build = app.openapi
    maxima = _maxima(settings)

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            document = build()  # caches itself in app.openapi_schema
            for schema in document.get("components", {}).get("schemas", {}).values():
                for name, field in schema.get("properties", {}).items():
                    if name in maxima:
                        _set_maximum(field, maxima[name])
            for operations in document["paths"].values():
                for operation in operations.values():
                    for parameter in operation.get("parameters", []):
                        if parameter["in"] == "query" and parameter["name"] in maxima:
                            _set_maximum(parameter["schema"], maxima[parameter["name"]])
            return document
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]
