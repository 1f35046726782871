"""Sparse image codes in the service: encoding responses, and image collections searched by shared parts.

An image collection is an ordinary collection (same table, same in-memory bit index) whose codes come
from the sparse bundle instead of the text bundle: a document is an image, its long code is the
image's signature (one bit per dictionary atom, set for the code's `signature_atoms` largest active
atoms: bundles/sparse.py `signature_bits`) and its address is the bundle's `address_bits`-bit hash of
the code. A search encodes the query image the same way, probes
the Hamming ball around its address and reranks the shortlist by signature Hamming distance, so the
nearest images are those built from the most nearly the same parts.
"""

from __future__ import annotations

import base64
import time
from typing import Any, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy.orm import Session, sessionmaker

from bundles.sparse import Encoder, SparseBundle
from service.codes import long_codes_to_words
from service.errors import ConflictError
from service.imaging import array_to_png
from service.index_sync import CollectionIndex
from service.schemas import SearchResponse
from service.search import SearchOptions, SearchQuery, search
from service.store import CollectionRef, Written
from service.upsert import IncomingDocument, write_encoded
from service.validation import CollectionName, DocumentIdStr, Metadata


class SparseImageCode(BaseModel):
    indices: list[int] = Field(description="The active atoms (dictionary columns), ascending.")
    values: list[float] = Field(description="Their coefficients (the code is zero everywhere else).")
    active: int = Field(description="How many atoms are active.")
    address: int = Field(description="The code's address in an image collection (bit 0 most significant).")
    signature: str = Field(
        description="The signature's atoms (the largest active ones) as bits, hex (np.packbits order): "
        "the long code."
    )
    reconstruction_png: str | None = Field(
        None, description="The reconstruction (code times dictionary) as a base64 28x28 PNG, ink white."
    )
    reconstruction_error: float | None = Field(
        None, description="Squared error of the reconstruction against the normalised input, summed."
    )


class SparseImageCodes(BaseModel):
    model: Literal["sparse"] = "sparse"
    encoder: Encoder = Field(description="Which encoder computed the codes.")
    iterations: int = Field(description="Shrinkage steps it ran: LISTA's K, 1 for PSD, FISTA's count.")
    n_atoms: int = Field(description="Dictionary size: indices are below it.")
    bundle_id: str
    data: list[SparseImageCode]
    count: int


class ImageIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    id: DocumentIdStr = Field(description="Your id for the image (unique per collection).")
    pixels: list[float] | list[list[float]] = Field(
        description="784 values in [0, 1] or 28 rows of 28, ink = 1 (as /v1/images/encode takes)."
    )
    metadata: Metadata = None


class ImagesUpsert(BaseModel):
    """A batch of images written all or nothing."""

    model_config = ConfigDict(extra="forbid")

    images: list[ImageIn] = Field(min_length=1)


class ImageCollectionCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: CollectionName = Field(description="Unique collection name.")


def encode_sparse(
    bundle: SparseBundle, images: np.ndarray, encoder: Encoder, iterations: int | None, reconstruct: bool
) -> SparseImageCodes:
    """Sparse codes of (n, 784) images, with their search codes and, if asked, reconstructions."""
    codes = bundle.encode(images, encoder, iterations)
    addresses = bundle.addresses(codes)
    signatures = bundle.signatures(codes)
    recon = bundle.reconstruct(codes) if reconstruct else None
    data = []
    for i, code in enumerate(codes):
        active = np.flatnonzero(code)
        item = SparseImageCode(
            indices=active.tolist(),
            values=code[active].tolist(),
            active=len(active),
            address=int(addresses[i]),
            signature=signatures[i].tobytes().hex(),
        )
        if recon is not None:
            item.reconstruction_png = base64.b64encode(array_to_png(np.clip(recon[i], 0.0, 1.0))).decode()
            item.reconstruction_error = float(((recon[i] - images[i]) ** 2).sum())
        data.append(item)
    steps = {"lista": bundle.lista_steps, "psd": 1, "fista": iterations or bundle.fista_iterations}[encoder]
    return SparseImageCodes(
        encoder=encoder,
        iterations=steps,
        n_atoms=bundle.n_atoms,
        bundle_id=bundle.bundle_id,
        data=data,
        count=len(data),
    )


def ensure_sparse_collection(collection: CollectionRef, bundle: SparseBundle) -> None:
    """Refuse to mix codes of two models: the collection must have been made with this sparse bundle."""
    if collection.bundle_fingerprint != bundle.fingerprint:
        raise ConflictError(
            f"collection {collection.name!r} holds codes of bundle {collection.bundle_id}, not of the loaded "
            f"sparse bundle {bundle.bundle_id}; add images to a collection made with "
            "POST /v1/images/collections (or load the bundle it was made with)"
        )


def upsert_images(
    session: Session,
    collection: CollectionRef,
    bundle: SparseBundle,
    documents: list[IncomingDocument],
    images: np.ndarray,
) -> Written:
    """Encode (n, 784) images with LISTA; insert or replace them as `documents` (the caller commits)."""
    ensure_sparse_collection(collection, bundle)
    codes = bundle.encode(images)
    return write_encoded(session, collection, documents, bundle.addresses(codes), bundle.signatures(codes))


def search_images(
    entry: CollectionIndex,
    bundle: SparseBundle,
    image: np.ndarray,
    radius: int,
    limit: int,
    shortlist: int,
    session_factory: sessionmaker[Session],
    text_bundle: Any,
) -> SearchResponse:
    """Images of the collection nearest to one (784,) image: Hamming ball, then signature rerank."""
    started = time.perf_counter()
    ensure_sparse_collection(entry, bundle)
    code = bundle.encode(image[None, :])
    query = SearchQuery(
        address=int(bundle.addresses(code)[0]), long_words=long_codes_to_words(bundle.signatures(code))[0]
    )
    options = SearchOptions(radius=radius, limit=limit, shortlist_size=shortlist, rerank="hamming")
    outcome = search(
        entry=entry, query=query, options=options, bundle=text_bundle, session_factory=session_factory
    )
    return SearchResponse.model_validate(
        {
            "data": [{"id": h.external_id, "distance": h.distance, "score": h.score} for h in outcome.hits],
            "count": len(outcome.hits),
            "rerank": outcome.rerank,
            "address": query.address,
            "shortlist_size": outcome.shortlist_size,
            "probed": outcome.probed,
            "took_ms": (time.perf_counter() - started) * 1000.0,
        }
    )
