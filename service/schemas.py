"""Pydantic models for every request and response of the API."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

# Collection names appear in URLs: keep them to URL-safe characters. Document ids may hold any
# printable character, "/" included (file paths, "newsgroup/number"): their routes take the rest of
# the path, and clients percent-encode what URLs need encoded.
NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$"
DOCUMENT_ID_PATTERN = r"^[^\x00-\x1f\x7f]{1,256}$"
DOCUMENT_ID_RULE = "1 to 256 characters, none of them a control character"
NUL_MESSAGE = "must not contain NUL characters (U+0000): PostgreSQL cannot store them"


def _contains_nul(value: object) -> bool:
    """Whether a JSON value has a NUL character in any string, key or value."""
    if isinstance(value, str):
        return "\x00" in value
    if isinstance(value, dict):
        return any(_contains_nul(key) or _contains_nul(item) for key, item in value.items())
    if isinstance(value, list):
        return any(_contains_nul(item) for item in value)
    return False


class HashRequest(BaseModel):
    """One `text` or a batch of `texts` to hash."""

    model_config = ConfigDict(extra="forbid")

    text: str | None = Field(None, min_length=1, description="A single text.")
    texts: list[str] | None = Field(None, min_length=1, description="A batch of texts.")

    @model_validator(mode="after")
    def _exactly_one(self) -> HashRequest:
        if (self.text is None) == (self.texts is None):
            raise ValueError("give exactly one of `text` or `texts`")
        return self


class HashCode(BaseModel):
    address: int = Field(
        description="The address as an integer (bit 0 of the code is its most significant bit)."
    )
    address_code: str = Field(description="The address as a string of 0/1, bit 0 first.")
    long_code: str = Field(description="The long code as hex (np.packbits order).")
    bundle_id: str


class HashCodes(BaseModel):
    data: list[HashCode]
    count: int


class CollectionCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(pattern=NAME_PATTERN, description="Unique name; letters, digits, '_', '.', '-'.")
    bundle_id: str | None = Field(
        None, description="The text bundle to hash with; defaults to the loaded one (the only one allowed)."
    )


class CollectionPublic(BaseModel):
    name: str
    bundle_id: str
    bundle_fingerprint: str
    address_bits: int
    long_bits: int
    document_count: int
    created_at: datetime


class CollectionsPublic(BaseModel):
    data: list[CollectionPublic]
    count: int


class DocumentIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    id: str = Field(
        pattern=DOCUMENT_ID_PATTERN, description="Your id for the document (unique per collection)."
    )
    text: str = Field(min_length=1)
    metadata: dict[str, Any] | None = None

    @field_validator("text")
    @classmethod
    def _storable_text(cls, text: str) -> str:
        if "\x00" in text:
            raise ValueError(NUL_MESSAGE)
        return text

    @field_validator("metadata")
    @classmethod
    def _storable_metadata(cls, metadata: dict[str, Any] | None) -> dict[str, Any] | None:
        if _contains_nul(metadata):
            raise ValueError(NUL_MESSAGE)
        return metadata


class DocumentsUpsert(BaseModel):
    """A batch written all or nothing."""

    model_config = ConfigDict(extra="forbid")

    documents: list[DocumentIn] = Field(min_length=1)


class UpsertResult(BaseModel):
    upserted: int


class DocumentPublic(BaseModel):
    id: str
    text: str
    metadata: dict[str, Any] | None
    address: int
    address_code: str
    long_code: str
    created_at: datetime
    updated_at: datetime


class SearchRequest(BaseModel):
    """Give exactly one of `text`, `code` or `address`."""

    model_config = ConfigDict(extra="forbid")

    text: str | None = Field(None, min_length=1, description="Hash this text and search around its address.")
    code: str | None = Field(None, pattern=r"^[01]+$", description="An address as a 0/1 string, bit 0 first.")
    address: int | None = Field(None, ge=0, description="An address as an integer.")
    long_code: str | None = Field(
        None,
        pattern=r"^[0-9a-fA-F]+$",
        description="Hex long code for the Hamming rerank of a code/address query.",
    )
    radius: int = Field(
        2, ge=0, description="Hamming radius around the address (at most the configured maximum)."
    )
    limit: int = Field(100, ge=1, description="Most results (at most the configured maximum).")
    shortlist: int | None = Field(
        None,
        ge=1,
        description="How many documents of the Hamming ball, nearest addresses first, to rerank; the "
        "results are the best `limit` of them. Default: `limit`. Larger shortlists rank better and cost "
        "more (at most the configured maximum).",
    )
    rerank: Literal["hamming", "tfidf", "none"] = "hamming"

    @model_validator(mode="after")
    def _one_query(self) -> SearchRequest:
        if sum(value is not None for value in (self.text, self.code, self.address)) != 1:
            raise ValueError("give exactly one of `text`, `code` or `address`")
        if self.rerank == "tfidf" and self.text is None:
            raise ValueError("`rerank`='tfidf' needs a `text` query")
        return self

    @property
    def shortlist_size(self) -> int:
        return self.limit if self.shortlist is None else self.shortlist


class SearchResult(BaseModel):
    id: str
    distance: int = Field(description="Hamming distance between the query's and the document's address.")
    score: float = Field(
        description="Rerank score, higher is better: 1 - normalised Hamming distance, or cosine."
    )


class SearchResponse(BaseModel):
    data: list[SearchResult]
    count: int
    rerank: Literal["hamming", "tfidf", "none"] = Field(description="The rerank applied.")
    address: int
    shortlist_size: int
    probed: int = Field(description="Addresses probed in the Hamming ball.")
    took_ms: float = Field(description="Server time for hashing the query, the lookup and the rerank.")


class AddressMatch(BaseModel):
    id: str
    address: int
    distance: int


class AddressMatches(BaseModel):
    data: list[AddressMatch]
    count: int


class Health(BaseModel):
    status: Literal["ok"] = "ok"


class Readiness(BaseModel):
    ready: bool
    models_loaded: bool
    database_reachable: bool
    database_at_head: bool
    detail: str | None = None


class ModelInfo(BaseModel):
    kind: str
    bundle_id: str
    fingerprint: str | None = Field(description="Hash of weights, vocabulary and code sizes (text bundles).")
    config: dict[str, Any]
    metrics: dict[str, Any]


class ModelsPublic(BaseModel):
    data: list[ModelInfo]
    count: int
