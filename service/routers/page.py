"""The web page (GET /, static files under /static) and the two reads it needs beside the API's own.

The page itself is static HTML, CSS and JavaScript shipped in the package (service/static): no build
step, no CDN. It searches through POST /search, recognises digits through /v1/digits, and so on; the
routes here add what a person looking at results needs: snippets of a page of results in one round
trip, and the code-space map.
"""

from __future__ import annotations

import hashlib
import mimetypes
from pathlib import Path
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Header, Query, Response
from pydantic import BaseModel, ConfigDict, Field

from service.deps import (
    CollectionDep,
    IndexedCollectionDep,
    RegistryDep,
    SessionDep,
    SettingsDep,
    require_read_key,
)
from service.errors import InvalidInputError, NotFoundError
from service.loaded_models import LoadedModelsDep
from service.page_data import SNIPPET_CHARS, code_map, snippets
from service.validation import DocumentIdStr, Text

STATIC_DIR = Path(__file__).resolve().parent.parent / "static"
MAX_MAP_SAMPLE = 5000
DEFAULT_MAP_SAMPLE = 1500

router = APIRouter(tags=["page"])
reads = APIRouter(prefix="/v1/collections/{name}", tags=["page"], dependencies=[Depends(require_read_key)])


def _load_static() -> dict[str, tuple[bytes, str, str]]:
    """Every file of the page, read once: name -> (content, media type, ETag). A few tens of kB."""
    files = {}
    for path in sorted(STATIC_DIR.iterdir()):
        if path.is_file():
            content = path.read_bytes()
            media = mimetypes.guess_type(path.name)[0] or "application/octet-stream"
            media = "text/javascript" if path.suffix == ".js" else media
            files[path.name] = (content, media, f'"{hashlib.sha256(content).hexdigest()[:16]}"')
    return files


STATIC_FILES = _load_static()


def _static(name: str, if_none_match: str | None) -> Response:
    # Served from memory on the event loop: a page load asks for several files at once.
    found = STATIC_FILES.get(name)
    if found is None:
        raise NotFoundError(f"no file {name!r}")
    content, media, etag = found
    headers = {"ETag": etag, "Cache-Control": "no-cache"}  # revalidated: a new release shows at once
    if if_none_match == etag:
        return Response(status_code=304, headers=headers)
    return Response(content, media_type=media, headers=headers)


@router.get("/", include_in_schema=False)
async def page(if_none_match: Annotated[str | None, Header()] = None) -> Response:
    """The web page."""
    return _static("index.html", if_none_match)


@router.get("/static/{name}", include_in_schema=False)
async def static_file(name: str, if_none_match: Annotated[str | None, Header()] = None) -> Response:
    """The page's scripts and style sheet."""
    return _static(name, if_none_match)


class OverviewCollection(BaseModel):
    name: str
    bundle_id: str
    document_count: int = Field(description="Live documents in the collection's in-memory index.")


class Overview(BaseModel):
    models: dict[str, str] = Field(description="The loaded bundles: kind (text, digits, ...) -> bundle id.")
    collections: list[OverviewCollection] = Field(description="Every collection, by name.")


@router.get("/v1/overview", dependencies=[Depends(require_read_key)])
async def overview(loaded: LoadedModelsDep, registry: RegistryDep) -> Overview:
    """What a client needs to start, in one round trip and from memory: loaded models and collections."""
    models = {kind: bundle.bundle_id for kind, bundle in loaded.served().items()}
    collections = []
    for name, size in sorted(registry.sizes().items()):
        entry = registry.get(name)
        if entry is not None:
            collections.append(OverviewCollection(name=name, bundle_id=entry.bundle_id, document_count=size))
    return Overview(models=models, collections=collections)


class SnippetsRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    ids: list[DocumentIdStr] = Field(min_length=1, description="Document ids, e.g. a page of search results.")
    query: Text | None = Field(
        None, max_length=10_000, description="Each snippet starts near the first of its words in the text."
    )
    chars: int = Field(SNIPPET_CHARS, ge=20, le=2000, description="Snippet length in characters.")


class SnippetOut(BaseModel):
    id: str
    snippet: str = Field(description="Part of the text (whitespace collapsed), around the first query word.")
    metadata: dict[str, Any] | None
    address_code: str
    long_code: str


class SnippetsResponse(BaseModel):
    data: list[SnippetOut] = Field(description="The documents found, in the order asked.")
    count: int
    missing: list[str] = Field(description="Ids with no live document (deleted since the search).")


@reads.post("/snippets")
def collection_snippets(
    body: SnippetsRequest, collection: CollectionDep, session: SessionDep, settings: SettingsDep
) -> SnippetsResponse:
    """Snippets, metadata and codes of many documents at once (a page of search results)."""
    if len(body.ids) > settings.max_limit:
        raise InvalidInputError(f"at most {settings.max_limit} ids", [("body", "ids")])
    found, missing = snippets(session, collection, body.ids, body.query, body.chars)
    data = [SnippetOut(**vars(item)) for item in found]
    return SnippetsResponse(data=data, count=len(data), missing=missing)


class MapPoint(BaseModel):
    id: str
    x: float
    y: float
    value: str | int | float | bool | None = Field(description="The colour field's value (null: none).")


class CodeMapResponse(BaseModel):
    data: list[MapPoint]
    count: int
    total: int = Field(description="Live documents in the collection (the map shows a sample).")
    field: str | None = Field(description="The metadata field the points are coloured by.")
    fields: list[str] = Field(description="Metadata fields found in the sample.")
    mean: list[float] = Field(description="Mean of the sample's long-code bits as -1/+1.")
    components: list[list[float]] = Field(
        description="Two rows of long-bits weights: a code's map position is (bits - mean) . component."
    )


@reads.get("/map")
def collection_map(
    collection: IndexedCollectionDep,
    session: SessionDep,
    sample: Annotated[int, Query(ge=1, le=MAX_MAP_SAMPLE, description="Most documents to place.")] = (
        DEFAULT_MAP_SAMPLE
    ),
    field: Annotated[
        str | None,
        Query(max_length=128, description="Metadata field to colour by; default `label` when present."),
    ] = None,
) -> CodeMapResponse:
    """The code space in 2-D: a sample of documents on the principal plane of their long codes."""
    result = code_map(session, collection, sample, field or "label")
    chosen = field if field is not None else ("label" if "label" in result.fields else None)
    values = result.values if chosen is not None else [None] * len(result.ids)
    data = [
        MapPoint(id=i, x=round(float(x), 4), y=round(float(y), 4), value=value)
        for i, (x, y), value in zip(result.ids, result.xy.tolist(), values, strict=True)
    ]
    return CodeMapResponse(
        data=data,
        count=len(data),
        total=result.total,
        field=chosen,
        fields=result.fields,
        mean=result.mean.round(5).tolist(),
        components=result.components.round(5).tolist(),
    )
