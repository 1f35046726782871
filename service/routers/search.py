"""Search a collection: the Hamming-ball shortlist (in memory) with a rerank, and the raw SQL lookup."""

from __future__ import annotations

import time
from typing import Annotated

from fastapi import APIRouter, Depends, Path, Query, Response
from sqlalchemy.orm import Session, sessionmaker

from service.codes import hex_to_long_words, long_code_hex_width
from service.deps import (
    BundleDep,
    CollectionDep,
    IndexedCollectionDep,
    SessionDep,
    SessionFactoryDep,
    SettingsDep,
    require_read_key,
)
from service.errors import InvalidInputError
from service.index import long_codes_to_words
from service.index_sync import CollectionIndex
from service.indexer import ensure_bundle_matches
from service.lexical import terms_of
from service.schemas import (
    DEFAULT_CODE_WEIGHT,
    DEFAULT_LEXICAL_CANDIDATES,
    AddressMatch,
    AddressMatches,
    SearchRequest,
    SearchResponse,
)
from service.search import LEXICAL_RERANKS, SearchOptions, SearchQuery, search
from service.settings import Settings
from service.store import find_collection, find_document, sql_ball
from training.text_bundle import EmptyDocumentError, TextBundle

SessionFactory = sessionmaker[Session]

router = APIRouter(prefix="/v1/collections/{name}", tags=["search"], dependencies=[Depends(require_read_key)])


def _check_bounds(settings: Settings, radius: int, limit: int, location: str) -> None:
    if radius > settings.max_radius:
        raise InvalidInputError(f"radius must be at most {settings.max_radius}", [(location, "radius")])
    if limit > settings.max_limit:
        raise InvalidInputError(f"limit must be at most {settings.max_limit}", [(location, "limit")])


def _check_address(address_bits: int, address: int, location: tuple[str, str]) -> None:
    if address >= 1 << address_bits:
        raise InvalidInputError(f"address must be below 2**{address_bits}", [location])


def _text_query(text: str, collection: CollectionIndex, bundle: TextBundle, rerank: str) -> SearchQuery:
    ensure_bundle_matches(collection, bundle)
    try:
        codes = bundle.encode([text])
    except EmptyDocumentError as err:
        # No word of the encoder's vocabulary: the lexical side may still find it.
        if rerank not in LEXICAL_RERANKS:
            raise InvalidInputError(
                f"text has no word of the model's vocabulary, which `rerank`={rerank!r} needs "
                "(`fused` or `bm25` search every word)",
                [("body", "text")],
            ) from err
        if not terms_of(text):
            raise InvalidInputError(
                "text has no word to search for (only stop words, punctuation or one-letter words)",
                [("body", "text")],
            ) from err
        return SearchQuery(address=None, text=text)
    return SearchQuery(
        address=int(codes.addresses[0]), long_words=long_codes_to_words(codes.long_codes)[0], text=text
    )


def _example_query(session: Session, name: str, document_id: str, rerank: str) -> SearchQuery:
    document = find_document(session, find_collection(session, name), document_id)
    words = hex_to_long_words(document.long_code.hex())
    text = document.text if rerank in ("tfidf", *LEXICAL_RERANKS) else None
    return SearchQuery(address=int(document.address), long_words=words, text=text, exclude_row=document.id)


def _query(
    request: SearchRequest, collection: CollectionIndex, bundle: TextBundle, session_factory: SessionFactory
) -> SearchQuery:
    rerank = request.rerank_or_default
    if request.text is not None:
        return _text_query(request.text, collection, bundle, rerank)
    if request.document_id is not None:
        with session_factory() as session:
            return _example_query(session, collection.name, request.document_id, rerank)
    if request.code is not None:
        if len(request.code) != collection.address_bits:
            raise InvalidInputError(
                f"code must have exactly {collection.address_bits} bits", [("body", "code")]
            )
        address = int(request.code, 2)
    else:
        assert request.address is not None, "the schema requires text, document_id, code or address"
        address = request.address
        _check_address(collection.address_bits, address, ("body", "address"))
    long_words = None
    if request.long_code is not None:
        width = long_code_hex_width(collection.long_bits)
        if len(request.long_code) != width:
            raise InvalidInputError(f"long_code must have {width} hex digits", [("body", "long_code")])
        long_words = hex_to_long_words(request.long_code)
    return SearchQuery(address=address, long_words=long_words)


@router.post("/search", response_model=SearchResponse)
def search_collection(
    request: SearchRequest,
    collection: IndexedCollectionDep,
    bundle: BundleDep,
    session_factory: SessionFactoryDep,
    settings: SettingsDep,
) -> Response:
    """Documents like a text, a stored document (`document_id`), a code or an address: candidates from
    the Hamming ball around the query's address (and, for `fused`/`bm25`, the documents holding the
    query's rarest words), reranked."""
    started = time.perf_counter()
    _check_bounds(settings, request.radius, request.limit, "body")
    if request.shortlist_size > settings.max_limit:
        raise InvalidInputError(f"shortlist must be at most {settings.max_limit}", [("body", "shortlist")])
    if request.shortlist_size < request.limit:
        raise InvalidInputError("shortlist must be at least limit", [("body", "shortlist")])
    query = _query(request, collection, bundle, session_factory)
    options = SearchOptions(
        radius=request.radius,
        limit=request.limit,
        shortlist_size=request.shortlist_size,
        rerank=request.rerank_or_default,
        lexical_candidates=(
            DEFAULT_LEXICAL_CANDIDATES if request.lexical_candidates is None else request.lexical_candidates
        ),
        code_weight=DEFAULT_CODE_WEIGHT if request.code_weight is None else request.code_weight,
    )
    outcome = search(collection, query, options, bundle, session_factory)
    response = SearchResponse.model_validate(
        {
            "data": [
                {"id": hit.external_id, "distance": hit.distance, "score": hit.score} for hit in outcome.hits
            ],
            "count": len(outcome.hits),
            "rerank": outcome.rerank,
            "address": query.address,
            "shortlist_size": outcome.shortlist_size,
            "lexical_size": outcome.lexical_size,
            "touched": outcome.touched,
            "probed": outcome.probed,
            "took_ms": (time.perf_counter() - started) * 1000.0,
        }
    )
    # The hot path: validated once here and serialised directly, rather than re-validated by FastAPI
    # in a second thread-pool hop (the response_model above still documents it).
    return Response(response.model_dump_json(), media_type="application/json")


@router.get("/addresses/{address}")
def lookup_address(
    address: Annotated[int, Path(ge=0, description="The address as an integer.")],
    collection: CollectionDep,
    session: SessionDep,
    settings: SettingsDep,
    radius: Annotated[int, Query(ge=0, description="Hamming radius.")] = 0,
    limit: Annotated[int, Query(ge=1, description="Most results.")] = 100,
) -> AddressMatches:
    """The raw bit-indexed table: documents stored within `radius` of `address`, read from SQL."""
    _check_bounds(settings, radius, limit, "query")
    _check_address(collection.address_bits, address, ("path", "address"))
    matches = sql_ball(session, collection, address, radius, limit)
    data = [
        AddressMatch(id=match.external_id, address=match.address, distance=match.distance)
        for match in matches
    ]
    return AddressMatches(data=data, count=len(data))
