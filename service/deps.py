"""Dependencies: the database session, loaded models, the indexes, collection lookup and API keys."""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, Header, HTTPException, Path, Request, status
from sqlalchemy.orm import Session, sessionmaker
from starlette.concurrency import run_in_threadpool

from bundles.text import TextBundle
from service.db import Collection
from service.errors import NotFoundError
from service.index_sync import CollectionIndex, IndexRegistry
from service.loaded_models import LoadedModelsDep, get_loaded_models
from service.settings import Settings
from service.store import CollectionRef, find_collection
from service.validation import CollectionName

# Dependencies that do no I/O are `async def`: they run on the event loop, without a thread-pool hop.


async def get_settings_from_app(request: Request) -> Settings:
    settings: Settings = request.app.state.settings
    return settings


SettingsDep = Annotated[Settings, Depends(get_settings_from_app)]


def get_session(request: Request) -> Iterator[Session]:
    # Closing the session rolls back whatever the route did not commit: a failed batch leaves nothing.
    with request.app.state.session_factory() as session:
        yield session


SessionDep = Annotated[Session, Depends(get_session)]


async def get_session_factory(request: Request) -> sessionmaker[Session]:
    """For routes that need the database only on some paths (a session opens lazily)."""
    factory: sessionmaker[Session] = request.app.state.session_factory
    return factory


SessionFactoryDep = Annotated[sessionmaker[Session], Depends(get_session_factory)]


async def get_text_bundle(models: LoadedModelsDep) -> TextBundle:
    return models.require(models.text, "text")


BundleDep = Annotated[TextBundle, Depends(get_text_bundle)]


async def get_registry(request: Request) -> IndexRegistry:
    registry: IndexRegistry = request.app.state.index_registry
    return registry


RegistryDep = Annotated[IndexRegistry, Depends(get_registry)]


def valid_collection(
    name: Annotated[CollectionName, Path(description="Collection name.")], session: SessionDep
) -> Collection:
    """The collection named in the path (404 if unknown)."""
    return find_collection(session, name)


CollectionDep = Annotated[Collection, Depends(valid_collection)]


async def indexed_collection(
    name: Annotated[CollectionName, Path(description="Collection name.")], registry: RegistryDep
) -> CollectionIndex:
    """The named collection's in-memory index (404 if unknown): searches need no SQL round trip."""
    entry = registry.get(name)
    if entry is None:
        raise NotFoundError(f"collection {name!r} not found")
    return entry


IndexedCollectionDep = Annotated[CollectionIndex, Depends(indexed_collection)]


def _collection_row(session_factory: sessionmaker[Session], name: str) -> Collection:
    with session_factory() as session:
        return find_collection(session, name)


async def writable_collection(
    name: Annotated[CollectionName, Path(description="Collection name.")],
    registry: RegistryDep,
    session_factory: SessionFactoryDep,
) -> CollectionRef:
    """The named collection for a document write: as this process's index describes it (no SQL, no
    thread-pool hop), else its row, read in the thread pool (404 if unknown). One deleted meanwhile by
    another process is a 404 at the write itself (`service.store.next_change_seq`)."""
    entry = registry.get(name)
    return entry if entry is not None else await run_in_threadpool(_collection_row, session_factory, name)


WritableCollectionDep = Annotated[CollectionRef, Depends(writable_collection)]


@dataclass(frozen=True)
class DocumentWrite:
    """What a document write needs, gathered by one dependency: FastAPI spends tens of microseconds on
    each dependency of a request, and a single-document write had seven (a fifth of its server CPU)."""

    collection: CollectionRef
    session_factory: sessionmaker[Session]
    registry: IndexRegistry
    settings: Settings
    bundle: TextBundle | None  # the text bundle, for upserts


async def _document_write(request: Request, name: str, x_api_key: str | None, text: bool) -> DocumentWrite:
    """The API key (401), then the collection (404), then for an upsert the text bundle (503): the order
    in which the separate dependencies answered."""
    state = request.app.state
    _check_key(state.settings, x_api_key)
    collection = await writable_collection(name, state.index_registry, state.session_factory)
    bundle = await get_text_bundle(await get_loaded_models(request)) if text else None
    return DocumentWrite(collection, state.session_factory, state.index_registry, state.settings, bundle)


async def document_upsert(
    request: Request,
    name: Annotated[CollectionName, Path(description="Collection name.")],
    x_api_key: Annotated[str | None, Header()] = None,
) -> DocumentWrite:
    return await _document_write(request, name, x_api_key, text=True)


async def document_delete(
    request: Request,
    name: Annotated[CollectionName, Path(description="Collection name.")],
    x_api_key: Annotated[str | None, Header()] = None,
) -> DocumentWrite:
    return await _document_write(request, name, x_api_key, text=False)


DocumentUpsertDep = Annotated[DocumentWrite, Depends(document_upsert)]
DocumentDeleteDep = Annotated[DocumentWrite, Depends(document_delete)]


def _check_key(settings: Settings, given: str | None) -> None:
    if settings.api_key is None:
        return
    if given is None or not secrets.compare_digest(given.encode(), settings.api_key.encode()):
        raise HTTPException(
            status_code=status.HTTP_401_UNAUTHORIZED,
            detail="a valid X-API-Key header is required",
            headers={"WWW-Authenticate": "X-API-Key"},
        )


async def require_write_key(settings: SettingsDep, x_api_key: Annotated[str | None, Header()] = None) -> None:
    """Writes need the API key whenever one is configured."""
    _check_key(settings, x_api_key)


async def require_read_key(settings: SettingsDep, x_api_key: Annotated[str | None, Header()] = None) -> None:
    """Reads need the API key only when configured so (`read_requires_key`)."""
    if settings.read_requires_key:
        _check_key(settings, x_api_key)
