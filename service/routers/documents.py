"""Documents: batch upsert (all or nothing), get and delete by id."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Path, status

from bundles.text import EmptyDocumentError
from service.codes import address_to_code
from service.deps import (
    BundleDep,
    CollectionDep,
    RegistryDep,
    SessionDep,
    SettingsDep,
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


@router.post("", dependencies=[Depends(require_write_key)])
def upsert(
    body: DocumentsUpsert,
    collection: CollectionDep,
    session: SessionDep,
    bundle: BundleDep,
    registry: RegistryDep,
    settings: SettingsDep,
) -> UpsertResult:
    """Insert or replace a batch of documents by id; nothing is written if any of them is invalid."""
    if len(body.documents) > settings.max_batch_documents:
        raise InvalidInputError(
            f"at most {settings.max_batch_documents} documents per request", [("body", "documents")]
        )
    documents = [IncomingDocument(item.id, item.text, item.metadata) for item in body.documents]
    try:
        upserted = upsert_documents(session, collection, bundle, documents)
    except DuplicateIdsError as err:
        locations = [("body", "documents", index, "id") for index in err.indices]
        raise InvalidInputError("duplicate document id within the batch", locations) from err
    except EmptyDocumentError as err:
        locations = [("body", "documents", index, "text") for index in err.indices]
        raise InvalidInputError("text is empty or has no word of the model's vocabulary", locations) from err
    session.commit()
    registry.sync_after_write(collection.name)
    return UpsertResult(upserted=upserted)


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
    document_id: DocumentId, collection: CollectionDep, session: SessionDep, registry: RegistryDep
) -> None:
    """Delete one document."""
    delete_document(session, collection, document_id)
    session.commit()
    registry.sync_after_write(collection.name)
