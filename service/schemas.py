"""Pydantic models for every request and response of the API."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, model_validator

from service.validation import CollectionName, DocumentIdStr, Metadata, Text


def _assume_utc(value: datetime) -> datetime:
    # SQLite keeps no zone: its CURRENT_TIMESTAMP is UTC, so a naive value read back is UTC.
    return value if value.tzinfo is not None else value.replace(tzinfo=UTC)


Timestamp = Annotated[datetime, AfterValidator(_assume_utc)]


class HashRequest(BaseModel):
    """One `text` or a batch of `texts` to hash."""

    model_config = ConfigDict(extra="forbid")

    text: Text | None = Field(None, min_length=1, description="A single text.")
    texts: list[Text] | None = Field(None, min_length=1, description="A batch of texts.")

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

    name: CollectionName = Field(description="Unique name; letters, digits, '_', '.', '-'.")
    bundle_id: Text | None = Field(
        None, description="The text bundle to hash with; defaults to the loaded one (the only one allowed)."
    )


class CollectionPublic(BaseModel):
    name: str
    bundle_id: str
    bundle_fingerprint: str
    address_bits: int
    long_bits: int
    document_count: int
    created_at: Timestamp


class CollectionsPublic(BaseModel):
    data: list[CollectionPublic]
    count: int


class DocumentIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    id: DocumentIdStr = Field(description="Your id for the document (unique per collection).")
    text: Text = Field(min_length=1)
    metadata: Metadata = Field(
        None, description="Any JSON object of finite numbers, strings, lists, objects."
    )


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
    created_at: Timestamp
    updated_at: Timestamp


# The `/search` defaults: the best setting measured on a VALIDATION split of the 20 Newsgroups training
# documents (10% held out by id hash; their subject lines as queries against the rest; the test split
# is never used), through the route's own code path: `benchmarks/short_queries_tune.py`, results in
# benchmarks/results/short_queries_tuning.json (quick bundle). P@10 there: 0.7035 with these defaults
# against 0.6955 with code_weight 1 / 256 probes, 0.700 with shortlist 300 (P@100 higher, touching 3.9%
# instead of 2.4%), 0.694 with code_weight 3; exhaustive BM25 0.649. Rechecked with a bundle that never saw
# the validation documents (short_queries_tuning_clean.json): 0.691 against 0.685 (w 1 / 256 probes), the
# best setting 0.694 (within noise, touching 3.8%).
DEFAULT_RADIUS = 2  # Hamming ball of code/address/document_id queries, and of text queries given `radius`
DEFAULT_PROBES = 1024  # multi-probe budget (addresses) of text queries
DEFAULT_SHORTLIST = 100
DEFAULT_LEXICAL_CANDIDATES = 300
DEFAULT_CODE_WEIGHT = 2.0
MAX_LEXICAL_CANDIDATES = 100_000
MAX_PROBES = 1 << 16
Rerank = Literal["fused", "bm25", "hamming", "tfidf", "none"]
Encoder = Literal["auto", "query", "document"]


class SearchRequest(BaseModel):
    """Give exactly one of `text`, `document_id`, `code` or `address`."""

    model_config = ConfigDict(extra="forbid")

    text: Text | None = Field(None, min_length=1, description="Hash this text and search around its address.")
    document_id: DocumentIdStr | None = Field(
        None,
        description="Query by example: documents like this stored one (left out itself), by its codes.",
    )
    code: str | None = Field(None, pattern=r"^[01]+$", description="An address as a 0/1 string, bit 0 first.")
    address: int | None = Field(None, ge=0, description="An address as an integer.")
    long_code: str | None = Field(
        None,
        pattern=r"^[0-9a-fA-F]+$",
        description="Hex long code for the Hamming rerank of a code/address query.",
    )
    radius: int | None = Field(
        None,
        ge=0,
        description="Search the Hamming ball of this radius around the query's address (at most the "
        f"configured maximum). Default: {DEFAULT_RADIUS} for `code`, `address` and `document_id` queries; "
        "`text` queries are probed by likelihood (`probes`) unless `radius` is given.",
    )
    probes: int | None = Field(
        None,
        ge=1,
        le=MAX_PROBES,
        description="`text` queries: look up this many addresses, the most likely first under the "
        "encoder's bit probabilities (multi-probe: uncertain bits flip first), instead of a ball. "
        f"Default: {DEFAULT_PROBES}. Give `radius` or `probes`, not both.",
    )
    encoder: Encoder = Field(
        "auto",
        description="`text` queries: `query` codes the text with the bundle's query encoder (trained for "
        "short text), `document` with the document encoders (as documents are coded), `auto` (default) "
        "picks `query` for short texts (fewer words than the bundle's threshold) when the bundle has one.",
    )
    limit: int = Field(100, ge=1, description="Most results (at most the configured maximum).")
    shortlist: int | None = Field(
        None,
        ge=1,
        description="How many documents of the code candidates (Hamming ball, nearest addresses first, or "
        "multi-probe, most likely addresses first) to rerank; the "
        f"results are the best `limit` of them. Default: {DEFAULT_SHORTLIST} (at least `limit`). Larger "
        "shortlists rank better and cost more (at most the configured maximum).",
    )
    rerank: Rerank | None = Field(
        None,
        description="`fused` (BM25 over every word + long-code similarity), `bm25`, `hamming` (long "
        "code), `tfidf` (bundle vocabulary), `none` (address order). Default: `fused` for `text` queries, "
        "`hamming` otherwise.",
    )
    lexical_candidates: int | None = Field(
        None,
        ge=0,
        le=MAX_LEXICAL_CANDIDATES,
        description="For `fused`/`bm25`: also rerank the documents holding the query's rarest words, whole "
        "postings lists, rarest first, up to this many postings entries (0: the code shortlist only). "
        f"Default: {DEFAULT_LEXICAL_CANDIDATES}.",
    )
    code_weight: float | None = Field(
        None,
        ge=0,
        le=100,
        description="w in the `fused` score bm25 / max bm25 + w (1 - Hamming / long bits). "
        f"Default: {DEFAULT_CODE_WEIGHT}.",
    )

    @model_validator(mode="after")
    def _one_query(self) -> SearchRequest:
        given = (self.text, self.document_id, self.code, self.address)
        if sum(value is not None for value in given) != 1:
            raise ValueError("give exactly one of `text`, `document_id`, `code` or `address`")
        if self.rerank in ("tfidf", "bm25", "fused") and self.text is None and self.document_id is None:
            raise ValueError(f"`rerank`={self.rerank!r} needs a `text` or `document_id` query")
        if self.radius is not None and self.probes is not None:
            raise ValueError("give `radius` (a Hamming ball) or `probes` (multi-probe), not both")
        if self.probes is not None and self.text is None:
            raise ValueError("`probes` needs a `text` query (its bit probabilities order the probes)")
        if self.encoder != "auto" and self.text is None:
            raise ValueError("`encoder` applies to `text` queries only")
        return self

    @property
    def radius_or_default(self) -> int:
        return DEFAULT_RADIUS if self.radius is None else self.radius

    @property
    def probes_or_default(self) -> int:
        """The multi-probe budget, 0 for a Hamming ball."""
        if self.text is None or self.radius is not None:
            return 0
        return DEFAULT_PROBES if self.probes is None else self.probes

    @property
    def shortlist_size(self) -> int:
        return max(self.limit, DEFAULT_SHORTLIST) if self.shortlist is None else self.shortlist

    @property
    def rerank_or_default(self) -> Rerank:
        if self.rerank is not None:
            return self.rerank
        return "fused" if self.text is not None else "hamming"


class SearchResult(BaseModel):
    id: str
    distance: int | None = Field(
        description="Hamming distance between the query's and the document's address (null when the "
        "query text has no word of the model's vocabulary and so no address)."
    )
    score: float = Field(
        description="Rerank score, higher is better: the fused score, BM25, 1 - normalised Hamming "
        "distance, or cosine."
    )


class SearchResponse(BaseModel):
    data: list[SearchResult]
    count: int
    rerank: Rerank = Field(description="The rerank applied.")
    address: int | None = Field(description="The query's address (null: the text has none).")
    encoder: Literal["query", "document"] | None = Field(
        None, description="What coded a `text` query: the query encoder or the document encoders."
    )
    shortlist_size: int = Field(description="Documents of the code shortlist (ball or multi-probe).")
    lexical_size: int = Field(0, description="Documents found by the lexical candidate source.")
    touched: int = Field(
        0, description="Documents and postings entries the search read: shortlist + postings entries."
    )
    probed: int = Field(description="Addresses looked up (in the Hamming ball, or by multi-probe).")
    took_ms: float = Field(description="Server time for hashing the query, the lookup and the rerank.")


class AddressMatch(BaseModel):
    id: str
    address: int
    distance: int


class AddressMatches(BaseModel):
    data: list[AddressMatch]
    count: int
    truncated: bool = Field(
        description="More documents lie within the radius than `limit`: these are the nearest `limit` of "
        "them (ask again with a larger `limit` or a smaller `radius` for the rest)."
    )


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
