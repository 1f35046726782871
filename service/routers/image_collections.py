"""Image collections: images stored by their sparse-code signature and found by shared parts.

Create with POST /v1/images/collections; list, inspect, delete them and their documents with the
/v1/collections routes like any collection.
"""

from __future__ import annotations

from typing import Annotated

import numpy as np
from fastapi import APIRouter, Depends, Query, Request, status
from starlette.concurrency import run_in_threadpool

from service.decode_pool import decode_pool
from service.deps import (
    IndexedCollectionDep,
    RegistryDep,
    SessionDep,
    SessionFactoryDep,
    SettingsDep,
    WritableCollectionDep,
    require_read_key,
    require_write_key,
)
from service.errors import InvalidInputError
from service.imaging import ImageInputError, pixels_to_array, to_mnist
from service.indexer import IncomingDocument, duplicate_positions
from service.routers.collections import public_collection
from service.schemas import CollectionPublic, SearchResponse, UpsertResult
from service.sparse_codes import ImageCollectionCreate, ImagesUpsert, search_images, upsert_images
from service.store import create_collection
from service.vision import OPENAPI_BODY, ImagesDep, SparseBundleDep

router = APIRouter(prefix="/v1/images/collections", tags=["images"])


@router.post("", status_code=status.HTTP_201_CREATED, dependencies=[Depends(require_write_key)])
def create(
    body: ImageCollectionCreate, session: SessionDep, bundle: SparseBundleDep, registry: RegistryDep
) -> CollectionPublic:
    """Create an empty image collection coded by the loaded sparse bundle."""
    collection = create_collection(session, body.name, bundle)
    session.commit()
    registry.sync_after_write(collection.name)
    return public_collection(collection, 0)


def _normalise_stored(body: ImagesUpsert) -> np.ndarray:
    rows = []
    for index, item in enumerate(body.images):
        try:
            # the same preprocessing as queries get (ImagesDep), so stored images and queries match
            rows.append(to_mnist(pixels_to_array(item.pixels), allow_blank=True))
        except ImageInputError as err:
            raise InvalidInputError(err.message, [("body", "images", index, "pixels")]) from err
    return np.stack(rows)


@router.post("/{name}/images", dependencies=[Depends(require_write_key)])
def upsert(
    request: Request,
    body: ImagesUpsert,
    collection: WritableCollectionDep,
    session: SessionDep,
    bundle: SparseBundleDep,
    registry: RegistryDep,
    settings: SettingsDep,
) -> UpsertResult:
    """Insert or replace a batch of images by id; nothing is written if any of them is invalid."""
    if len(body.images) > settings.max_batch_documents:
        raise InvalidInputError(
            f"at most {settings.max_batch_documents} images per request", [("body", "images")]
        )
    # An image is stored as a document without text: its codes and metadata are what is kept.
    documents = [IncomingDocument(item.id, "", item.metadata) for item in body.images]
    duplicates = duplicate_positions(documents)
    if duplicates:
        locations = [("body", "images", index, "id") for index in duplicates]
        raise InvalidInputError("duplicate image id within the batch", locations)
    images = decode_pool(request).call(_normalise_stored, body)  # bounded, like every image decode
    written = upsert_images(session, collection, bundle, documents, images)
    session.commit()
    registry.apply_written(written)
    return UpsertResult(upserted=len(written))


@router.post("/{name}/search", openapi_extra=OPENAPI_BODY, dependencies=[Depends(require_read_key)])
async def search(
    request: Request,
    images: ImagesDep,
    collection: IndexedCollectionDep,
    bundle: SparseBundleDep,
    session_factory: SessionFactoryDep,
    settings: SettingsDep,
    radius: Annotated[int, Query(ge=0, description="Hamming radius around the image's address.")] = 2,
    limit: Annotated[int, Query(ge=1, description="Most results.")] = 10,
    shortlist: Annotated[
        int | None, Query(ge=1, description="Documents of the ball to rerank (default: limit).")
    ] = None,
) -> SearchResponse:
    """The collection's images nearest to one query image (upload `file` or JSON `pixels`)."""
    if len(images) != 1:
        raise InvalidInputError("search takes one image (`file` or `pixels`)", [("body",)])
    size = limit if shortlist is None else shortlist
    if radius > settings.max_radius:
        raise InvalidInputError(f"radius must be at most {settings.max_radius}", [("query", "radius")])
    if max(limit, size) > settings.max_limit:
        raise InvalidInputError(
            f"limit and shortlist must be at most {settings.max_limit}", [("query", "limit")]
        )
    if size < limit:
        raise InvalidInputError("shortlist must be at least limit", [("query", "shortlist")])
    text_bundle = getattr(request.app.state, "text_bundle", None)
    return await run_in_threadpool(
        search_images, collection, bundle, images[0], radius, limit, size, session_factory, text_bundle
    )
