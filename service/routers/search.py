"""Search a collection (`service.search_request`: code candidates, lexical candidates, a rerank), and the
raw SQL lookup."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Path, Query, Request, Response

from service.deps import (
    BundleDep,
    CollectionDep,
    IndexedCollectionDep,
    SessionDep,
    SessionFactoryDep,
    SettingsDep,
    require_read_key,
)
from service.schemas import AddressMatch, AddressMatches, SearchRequest, SearchResponse
from service.search_request import check_address, check_bounds, run_search
from service.store import sql_ball

router = APIRouter(prefix="/v1/collections/{name}", tags=["search"], dependencies=[Depends(require_read_key)])


@router.post("/search", response_model=SearchResponse)
def search_collection(
    request: SearchRequest,
    collection: IndexedCollectionDep,
    bundle: BundleDep,
    session_factory: SessionFactoryDep,
    settings: SettingsDep,
    http: Request,
) -> Response:
    """Documents like a text, a stored document (`document_id`), a code or an address: candidates from
    the code index (the most likely addresses of a text query, a Hamming ball around the others') and,
    for `fused`/`bm25`, the documents holding the query's rarest words, reranked."""
    http.app.state.write_priority.wait_for_writes()  # short writes first (service.write_priority)
    response = run_search(request, collection, bundle, session_factory, settings)
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
    """The raw bit-indexed table: documents stored within `radius` of `address`, read from SQL, nearest
    first; `truncated` says when the ball holds more than `limit`."""
    check_bounds(settings, radius, limit, "query")
    check_address(collection.address_bits, address, ("path", "address"))
    matches = sql_ball(session, collection, address, radius, limit + 1)  # one more: is there more?
    data = [
        AddressMatch(id=match.external_id, address=match.address, distance=match.distance)
        for match in matches[:limit]
    ]
    return AddressMatches(data=data, count=len(data), truncated=len(matches) > limit)
