"""Search a collection: the Hamming-ball shortlist (in memory) with a rerank, and the raw SQL lookup."""

from __future__ import annotations

import time
from typing import Annotated

from fastapi import APIRouter, Depends, Path, Query, Response

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
from service.schemas import AddressMatch, AddressMatches, SearchRequest, SearchResponse
from service.search import SearchQuery, search
from service.settings import Settings
from service.store import sql_ball
from training.text_bundle import EmptyDocumentError, TextBundle

router = APIRouter(prefix="/v1/collections/{name}", tags=["search"], dependencies=[Depends(require_read_key)])


def _check_bounds(settings: Settings, radius: int, limit: int, location: str) -> None:
    if radius > settings.max_radius:
        raise InvalidInputError(f"radius must be at most {settings.max_radius}", [(location, "radius")])
    if limit > settings.max_limit:
        raise InvalidInputError(f"limit must be at most {settings.max_limit}", [(location, "limit")])


def _check_address(address_bits: int, address: int, location: tuple[str, str]) -> None:
    if address >= 1 << address_bits:
        raise InvalidInputError(f"address must be below 2**{address_bits}", [location])


def _query(request: SearchRequest, collection: CollectionIndex, bundle: TextBundle) -> SearchQuery:
    if request.text is not None:
        ensure_bundle_matches(collection, bundle)
        try:
            codes = bundle.encode([request.text])
        except EmptyDocumentError as err:
            raise InvalidInputError(
                "text is empty or has no word of the model's vocabulary", [("body", "text")]
            ) from err
        return SearchQuery(
            address=int(codes.addresses[0]),
            long_words=long_codes_to_words(codes.long_codes)[0],
            text=request.text,
        )
    if request.code is not None:
        if len(request.code) != collection.address_bits:
            raise InvalidInputError(
                f"code must have exactly {collection.address_bits} bits", [("body", "code")]
            )
        address = int(request.code, 2)
    else:
        assert request.address is not None, "the schema requires text, code or address"
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
    """Documents within a Hamming radius of a text's, code's or address's address, reranked."""
    started = time.perf_counter()
    _check_bounds(settings, request.radius, request.limit, "body")
    if request.shortlist_size > settings.max_limit:
        raise InvalidInputError(f"shortlist must be at most {settings.max_limit}", [("body", "shortlist")])
    if request.shortlist_size < request.limit:
        raise InvalidInputError("shortlist must be at least limit", [("body", "shortlist")])
    query = _query(request, collection, bundle)
    outcome = search(
        collection,
        query,
        request.radius,
        request.limit,
        request.shortlist_size,
        request.rerank,
        bundle,
        session_factory,
    )
    response = SearchResponse.model_validate(
        {
            "data": [
                {"id": hit.external_id, "distance": hit.distance, "score": hit.score} for hit in outcome.hits
            ],
            "count": len(outcome.hits),
            "rerank": outcome.rerank,
            "address": query.address,
            "shortlist_size": outcome.shortlist_size,
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
