"""Collections: create, list, get, delete."""

from __future__ import annotations

from fastapi import APIRouter, Depends, status

from service.db import Collection
from service.deps import (
    BundleDep,
    CollectionDep,
    RegistryDep,
    SessionDep,
    require_read_key,
    require_write_key,
)
from service.errors import InvalidInputError
from service.schemas import CollectionCreate, CollectionPublic, CollectionsPublic
from service.store import create_collection, delete_collection, document_counts, list_collections

router = APIRouter(prefix="/v1/collections", tags=["collections"])


def public_collection(collection: Collection, document_count: int) -> CollectionPublic:
    return CollectionPublic(
        name=collection.name,
        bundle_id=collection.bundle_id,
        bundle_fingerprint=collection.bundle_fingerprint,
        address_bits=collection.address_bits,
        long_bits=collection.long_bits,
        document_count=document_count,
        created_at=collection.created_at,
    )


@router.post("", status_code=status.HTTP_201_CREATED, dependencies=[Depends(require_write_key)])
def create(
    body: CollectionCreate, session: SessionDep, bundle: BundleDep, registry: RegistryDep
) -> CollectionPublic:
    """Create an empty collection hashed by the loaded text bundle."""
    if body.bundle_id is not None and body.bundle_id != bundle.bundle_id:
        raise InvalidInputError(
            f"bundle {body.bundle_id!r} is not loaded; this server has {bundle.bundle_id!r}",
            [("body", "bundle_id")],
        )
    collection = create_collection(session, body.name, bundle)
    session.commit()
    registry.sync_after_write()
    return public_collection(collection, 0)


@router.get("", dependencies=[Depends(require_read_key)])
def list_all(session: SessionDep) -> CollectionsPublic:
    """List collections with their document counts."""
    counts = document_counts(session)
    data = [
        public_collection(collection, counts.get(collection.id, 0))
        for collection in list_collections(session)
    ]
    return CollectionsPublic(data=data, count=len(data))


@router.get("/{name}", dependencies=[Depends(require_read_key)])
def get(collection: CollectionDep, session: SessionDep) -> CollectionPublic:
    """One collection: its bundle, code sizes and document count."""
    return public_collection(collection, document_counts(session).get(collection.id, 0))


@router.delete("/{name}", status_code=status.HTTP_204_NO_CONTENT, dependencies=[Depends(require_write_key)])
def delete(collection: CollectionDep, session: SessionDep, registry: RegistryDep) -> None:
    """Delete a collection and all its documents."""
    delete_collection(session, collection)
    session.commit()
    registry.sync_after_write()
