"""Service settings from the environment (prefix `SEMHASH_`), read once through `get_settings()`."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Literal

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    """Everything the API, the bulk job and `semhash migrate` can be configured with."""

    model_config = SettingsConfigDict(env_prefix="SEMHASH_", env_file=".env", extra="ignore")

    database_url: str = Field(
        "sqlite:///./semhash.db",
        description="SQLAlchemy URL: a SQLite file (default) or postgresql+psycopg://user:pass@host/db.",
    )
    models_dir: Path = Field(
        Path("artifacts"),
        description="Directory with one model bundle per kind in a sub-directory (text/, digits/, images/).",
    )
    max_radius: int = Field(4, ge=0, le=8, description="Largest Hamming radius a search may ask for.")
    max_limit: int = Field(10_000, ge=1, description="Largest number of results a search may ask for.")
    max_body_bytes: int = Field(
        8 * 1024 * 1024, ge=1024, description="Requests with a larger body are refused with 413."
    )
    max_batch_documents: int = Field(
        5_000, ge=1, description="Most documents one upsert request (or one /v1/hash batch) may carry."
    )
    api_key: str | None = Field(
        None, description="When set, writes (collections, documents) need it in the X-API-Key header."
    )
    read_requires_key: bool = Field(False, description="When true (and api_key is set), reads need it too.")
    index_poll_seconds: float = Field(
        0.5,
        gt=0,
        le=1.5,
        description="How often the in-memory indexes poll SQL for changes made by other processes "
        "(kept under 1.5 s so such changes are searchable within 2 s).",
    )
    search_yield_to_writes_ms: float = Field(
        5.0,
        ge=0,
        le=50,
        description="How long a search waits, at most, for single-document writes in flight in its "
        "process to finish before it runs (service.write_priority); 0: searches never wait.",
    )
    tombstone_retention_seconds: float = Field(
        3600,
        ge=10,
        description="How long a deleted document's tombstone row is kept before it is purged (every "
        "server keeps its index current long before; one that falls further behind reloads).",
    )

    max_image_pixels: int = Field(
        4096 * 4096,
        ge=28 * 28,
        description="Largest image (width x height) the digit and image routes decode.",
    )
    image_decode_workers: int | None = Field(
        None,
        ge=1,
        le=64,
        description="Worker processes (at a lower CPU priority) that decode and normalise images, off the "
        "event loop. Unset: one fewer than the CPU cores, at least 1, so a core stays free for the loop.",
    )
    image_decode_queue: int = Field(
        8,
        ge=0,
        le=1000,
        description="Image requests that may wait for a decoding worker; more at once get 429 + Retry-After.",
    )
    cors_origins: list[str] = Field(
        [],
        description="Origins (e.g. https://app.example.org) whose browser pages may call the API; empty: "
        "no CORS headers, so only same-origin pages can. As JSON: '[\"https://app.example.org\"]'.",
    )
    log_format: Literal["json", "text"] = Field(
        "json", description="`semhash serve` logs: JSON lines with a request id (default) or plain text."
    )
    log_requests: bool = Field(True, description="Log one line per request (method, path, status, duration).")

    @field_validator("api_key")
    @classmethod
    def _reject_weak_key(cls, value: str | None) -> str | None:
        # An empty or short key gives a false sense of protection; refuse it rather than accept it.
        if value is not None and len(value) < 16:
            raise ValueError("SEMHASH_API_KEY must be at least 16 characters (or unset)")
        return value

    @property
    def text_bundle_dir(self) -> Path:
        """Where the text model bundle lives."""
        return self.models_dir / "text"


@lru_cache
def get_settings() -> Settings:
    """The process-wide settings, read from the environment on first use."""
    return Settings()
