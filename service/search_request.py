"""One `/search` request from start to finish, without HTTP: what the route calls, and what benchmarks
and the defaults' validation (`training`-side scripts) call to search exactly as the API does.

    run_search(SearchRequest(text="clipper chip encryption", limit=10), collection, bundle,
               session_factory, settings) -> SearchResponse

Raises `InvalidInputError` (a 422 through the API) for what the request schema cannot check alone.
A `text` query is coded by `TextBundle.encode_query` (the query encoder for short text, the document
encoders otherwise, or as asked by `encoder`); its address bit probabilities order the multi-probe
lookup. Text with no word the encoder knows has no code: the lexical side (`fused`, `bm25`) still
searches every word of it.
"""

from __future__ import annotations

import time

from sqlalchemy.orm import Session, sessionmaker

from bundles.text import TextBundle
from service.codes import hex_to_long_words, long_code_hex_width, long_codes_to_words
from service.errors import InvalidInputError
from service.index_sync import CollectionIndex
from service.indexer import ensure_bundle_matches
from service.lexical import terms_of
from service.schemas import (
    DEFAULT_CODE_WEIGHT,
    DEFAULT_LEXICAL_CANDIDATES,
    SearchRequest,
    SearchResponse,
)
from service.search import LEXICAL_RERANKS, SearchOptions, SearchQuery, search
from service.settings import Settings
from service.store import find_collection, find_document

SessionFactory = sessionmaker[Session]


def check_bounds(settings: Settings, radius: int, limit: int, location: str) -> None:
    """The configured maxima of `radius` and `limit` (422 naming the field)."""
    if radius > settings.max_radius:
        raise InvalidInputError(f"radius must be at most {settings.max_radius}", [(location, "radius")])
    if limit > settings.max_limit:
        raise InvalidInputError(f"limit must be at most {settings.max_limit}", [(location, "limit")])


def check_address(address_bits: int, address: int, location: tuple[str, str]) -> None:
    if address >= 1 << address_bits:
        raise InvalidInputError(f"address must be below 2**{address_bits}", [location])


def text_query(
    text: str, collection: CollectionIndex, bundle: TextBundle, rerank: str, encoder: str = "auto"
) -> tuple[SearchQuery, str | None]:
    """The query of a text, and what coded it ("query", "document", or None: no code)."""
    ensure_bundle_matches(collection, bundle)
    probabilities = bundle.encode_query([text], encoder=encoder)
    if not probabilities.known[0]:
        # No word of the encoder's vocabulary: the lexical side may still find it.
        if rerank not in LEXICAL_RERANKS:
            raise InvalidInputError(
                f"text has no word of the model's vocabulary, which `rerank`={rerank!r} needs "
                "(`fused` or `bm25` search every word)",
                [("body", "text")],
            )
        if not terms_of(text):
            raise InvalidInputError(
                "text has no word to search for (only stop words, punctuation or one-letter words)",
                [("body", "text")],
            )
        return SearchQuery(address=None, text=text), None
    query = SearchQuery(
        address=int(probabilities.addresses()[0]),
        long_words=long_codes_to_words(probabilities.long_codes())[0],
        text=text,
        address_probabilities=probabilities.address[0],
    )
    return query, probabilities.encoder


def example_query(session: Session, name: str, document_id: str, rerank: str) -> SearchQuery:
    """Query by example: a stored document's codes (and text, for the lexical reranks), itself left out."""
    document = find_document(session, find_collection(session, name), document_id)
    words = hex_to_long_words(document.long_code.hex())
    text = document.text if rerank in ("tfidf", *LEXICAL_RERANKS) else None
    return SearchQuery(address=int(document.address), long_words=words, text=text, exclude_row=document.id)


def request_query(
    request: SearchRequest, collection: CollectionIndex, bundle: TextBundle, session_factory: SessionFactory
) -> tuple[SearchQuery, str | None]:
    """The query a request asks for, and what coded its text (None for other queries)."""
    rerank = request.rerank_or_default
    if request.text is not None:
        return text_query(request.text, collection, bundle, rerank, request.encoder)
    if request.document_id is not None:
        with session_factory() as session:
            return example_query(session, collection.name, request.document_id, rerank), None
    if request.code is not None:
        if len(request.code) != collection.address_bits:
            raise InvalidInputError(
                f"code must have exactly {collection.address_bits} bits", [("body", "code")]
            )
        address = int(request.code, 2)
    else:
        assert request.address is not None, "the schema requires text, document_id, code or address"
        address = request.address
        check_address(collection.address_bits, address, ("body", "address"))
    long_words = None
    if request.long_code is not None:
        width = long_code_hex_width(collection.long_bits)
        if len(request.long_code) != width:
            raise InvalidInputError(f"long_code must have {width} hex digits", [("body", "long_code")])
        long_words = hex_to_long_words(request.long_code)
    return SearchQuery(address=address, long_words=long_words), None


def request_options(request: SearchRequest, settings: Settings) -> SearchOptions:
    """The request's options with the defaults filled in, checked against the configured maxima."""
    check_bounds(settings, request.radius_or_default, request.limit, "body")
    if request.shortlist_size > settings.max_limit:
        raise InvalidInputError(f"shortlist must be at most {settings.max_limit}", [("body", "shortlist")])
    if request.shortlist_size < request.limit:
        raise InvalidInputError("shortlist must be at least limit", [("body", "shortlist")])
    return SearchOptions(
        radius=request.radius_or_default,
        limit=request.limit,
        shortlist_size=request.shortlist_size,
        rerank=request.rerank_or_default,
        lexical_candidates=(
            DEFAULT_LEXICAL_CANDIDATES if request.lexical_candidates is None else request.lexical_candidates
        ),
        code_weight=DEFAULT_CODE_WEIGHT if request.code_weight is None else request.code_weight,
        probes=request.probes_or_default,
    )


def run_search(
    request: SearchRequest,
    collection: CollectionIndex,
    bundle: TextBundle,
    session_factory: SessionFactory,
    settings: Settings,
) -> SearchResponse:
    """Everything `POST /v1/collections/{name}/search` does with a validated request body."""
    started = time.perf_counter()
    options = request_options(request, settings)
    query, encoder = request_query(request, collection, bundle, session_factory)
    outcome = search(collection, query, options, bundle, session_factory)
    return SearchResponse.model_validate(
        {
            "data": [
                {"id": hit.external_id, "distance": hit.distance, "score": hit.score} for hit in outcome.hits
            ],
            "count": len(outcome.hits),
            "rerank": outcome.rerank,
            "address": query.address,
            "encoder": encoder,
            "shortlist_size": outcome.shortlist_size,
            "lexical_size": outcome.lexical_size,
            "touched": outcome.touched,
            "probed": outcome.probed,
            "took_ms": (time.perf_counter() - started) * 1000.0,
        }
    )
