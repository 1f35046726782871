"""Documents: batch upsert (all or nothing), get and delete by id."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Path, Response, status

from bundles.text import EmptyDocumentError
from service.codes import address_to_code
from service.deps import (
    BundleDep,
    CollectionDep,
    RegistryDep,
    SessionDep,
    SessionFactoryDep,
    SettingsDep,
    WritableCollectionDep,
    require_read_key,
    require_write_key,
)
from service.errors import InvalidInputError
from service.indexer import DuplicateIdsError, IncomingDocument, upsert_documents
from service.schemas import DocumentPublic, DocumentsUpsert, UpsertResult
from service.store import delete_document, find_document
from service.validation import DocumentIdStr

router = APIRouter(prefix="/v1/collections/{name}/documents", tags=["documents"])

DocumentId = Annotated[DocumentIdStr, Path(description="The document's id.")]


# The writes take one thread-pool hop, the route's own: they open their session themselves (entering
# and closing SessionDep's would cost a hop each) and serialise their answer (FastAPI would validate a
# returned model again in another hop). Under load, every hop waits its turn for the GIL.


@router.post("", response_model=UpsertResult, dependencies=[Depends(require_write_key)])
def upsert(
    body: DocumentsUpsert,
    collection: WritableCollectionDep,
    session_factory: SessionFactoryDep,
    bundle: BundleDep,
    registry: RegistryDep,
    settings: SettingsDep,
) -> Response:
    """Insert or replace a batch of documents by id; nothing is written if any of them is invalid."""
    if len(body.documents) > settings.max_batch_documents:
        raise InvalidInputError(
            f"at most {settings.max_batch_documents} documents per request", [("body", "documents")]
        )
    documents = [IncomingDocument(item.id, item.text, item.metadata) for item in body.documents]
    with session_factory() as session:  # closing it rolls back a failed batch: all or nothing
        try:
            written = upsert_documents(session, collection, bundle, documents)
        except DuplicateIdsError as err:
            locations = [("body", "documents", index, "id") for index in err.indices]
            raise InvalidInputError("duplicate document id within the batch", locations) from err
        except EmptyDocumentError as err:
            locations = [("body", "documents", index, "text") for index in err.indices]
            message = "text is empty or has no word of the model's vocabulary"
            raise InvalidInputError(message, locations) from err
        session.commit()
    registry.apply_written(written)
    return Response(UpsertResult(upserted=len(written)).model_dump_json(), media_type="application/json")


@router.get("/{document_id:path}", dependencies=[Depends(require_read_key)])
def get(document_id: DocumentId, collection: CollectionDep, session: SessionDep) -> DocumentPublic:
    """One document with its codes."""
    document = find_document(session, collection, document_id)
    return DocumentPublic(
        id=document.external_id,
        text=document.text,
        metadata=document.metadata_,
        address=document.address,
        address_code=address_to_code(document.address, collection.address_bits),
        long_code=document.long_code.hex(),
        created_at=document.created_at,
        updated_at=document.updated_at,
    )


@router.delete(
    "/{document_id:path}", status_code=status.HTTP_204_NO_CONTENT, dependencies=[Depends(require_write_key)]
)
def delete(
    document_id: DocumentId,
    collection: WritableCollectionDep,
    session_factory: SessionFactoryDep,
    registry: RegistryDep,
) -> None:
    """Delete one document."""
    with session_factory() as session:
        written = delete_document(session, collection, document_id)
        session.commit()
    registry.apply_written(written)
