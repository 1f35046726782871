"""Documents: batch upsert (all or nothing), get and delete by id."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Path, Response, status

from bundles.text import EmptyDocumentError
from service.codes import address_to_code
from service.deps import CollectionDep, DocumentDeleteDep, DocumentUpsertDep, SessionDep, require_read_key
from service.errors import InvalidInputError
from service.schemas import DocumentPublic, DocumentsUpsert, UpsertResult
from service.store import delete_document, find_document
from service.upsert import DuplicateIdsError, IncomingDocument, upsert_documents
from service.validation import DocumentIdStr

router = APIRouter(prefix="/v1/collections/{name}/documents", tags=["documents"])

DocumentId = Annotated[DocumentIdStr, Path(description="The document's id.")]


# The writes take one thread-pool hop, the route's own: they open their session themselves (entering
# and closing SessionDep's would cost a hop each) and serialise their answer (FastAPI would validate a
# returned model again in another hop). Under load, every hop waits its turn for the GIL. What they
# need comes from one dependency each (`service.deps.DocumentWrite`), which checks the API key.


@router.post("", response_model=UpsertResult)
def upsert(body: DocumentsUpsert, write: DocumentUpsertDep) -> Response:
    """Insert or replace a batch of documents by id; nothing is written if any of them is invalid."""
    if len(body.documents) > write.settings.max_batch_documents:
        raise InvalidInputError(
            f"at most {write.settings.max_batch_documents} documents per request", [("body", "documents")]
        )
    assert write.bundle is not None  # document_upsert loads it
    documents = [IncomingDocument(item.id, item.text, item.metadata) for item in body.documents]
    with write.session_factory() as session:  # closing it rolls back a failed batch: all or nothing
        try:
            written = upsert_documents(session, write.collection, write.bundle, documents)
        except DuplicateIdsError as err:
            locations = [("body", "documents", index, "id") for index in err.indices]
            raise InvalidInputError("duplicate document id within the batch", locations) from err
        except EmptyDocumentError as err:
            locations = [("body", "documents", index, "text") for index in err.indices]
            raise InvalidInputError.empty_text(locations) from err
        session.commit()
    write.registry.apply_written(written)
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


@router.delete("/{document_id:path}", status_code=status.HTTP_204_NO_CONTENT)
def delete(document_id: DocumentId, write: DocumentDeleteDep) -> None:
    """Delete one document."""
    with write.session_factory() as session:
        written = delete_document(session, write.collection, document_id)
        session.commit()
    write.registry.apply_written(written)
