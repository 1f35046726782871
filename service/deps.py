"""Dependencies: the database session, loaded models, the indexes, collection lookup and API keys."""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from typing import Annotated

from fastapi import Depends, Header, HTTPException, Path, Request, status
from sqlalchemy.orm import Session
from training.text_bundle import TextBundle

from service.db import Collection
from service.index_sync import IndexRegistry
from service.schemas import NAME_PATTERN
from service.settings import Settings
from service.store import find_collection


def get_settings_from_app(request: Request) -> Settings:
    return request.app.state.settings


SettingsDep = Annotated[Settings, Depends(get_settings_from_app)]


def get_session(request: Request) -> Iterator[Session]:
    # Closing the session rolls back whatever the route did not commit: a failed batch leaves nothing.
    with request.app.state.session_factory() as session:
        yield session


SessionDep = Annotated[Session, Depends(get_session)]


def get_text_bundle(request: Request) -> TextBundle:
    return request.app.state.text_bundle


BundleDep = Annotated[TextBundle, Depends(get_text_bundle)]


def get_registry(request: Request) -> IndexRegistry:
    return request.app.state.index_registry


RegistryDep = Annotated[IndexRegistry, Depends(get_registry)]


def valid_collection(
    name: Annotated[str, Path(pattern=NAME_PATTERN, description="Collection name.")], session: SessionDep
) -> Collection:
    """The collection named in the path (404 if unknown)."""
    return find_collection(session, name)


CollectionDep = Annotated[Collection, Depends(valid_collection)]


def _check_key(settings: Settings, given: str | None) -> None:
    if settings.api_key is None:
        return
    if given is None or not secrets.compare_digest(given.encode(), settings.api_key.encode()):
        raise HTTPException(
            status_code=status.HTTP_401_UNAUTHORIZED,
            detail="a valid X-API-Key header is required",
            headers={"WWW-Authenticate": "X-API-Key"},
        )


def require_write_key(settings: SettingsDep, x_api_key: Annotated[str | None, Header()] = None) -> None:
    """Writes need the API key whenever one is configured."""
    _check_key(settings, x_api_key)


def require_read_key(settings: SettingsDep, x_api_key: Annotated[str | None, Header()] = None) -> None:
    """Reads need the API key only when configured so (`read_requires_key`)."""
    if settings.read_requires_key:
        _check_key(settings, x_api_key)
