"""POST /v1/hash: texts to codes."""

from __future__ import annotations

from fastapi import APIRouter, Depends

from bundles.text import EmptyDocumentError
from service.codes import address_to_code
from service.deps import BundleDep, SettingsDep, require_read_key
from service.errors import InvalidInputError
from service.schemas import HashCode, HashCodes, HashRequest

router = APIRouter(prefix="/v1", tags=["hash"], dependencies=[Depends(require_read_key)])


@router.post("/hash")
def hash_texts(request: HashRequest, bundle: BundleDep, settings: SettingsDep) -> HashCodes:
    """Hash one text or a batch of texts into addresses and long codes."""
    texts = [request.text] if request.text is not None else request.texts or []
    if len(texts) > settings.max_batch_documents:
        raise InvalidInputError(
            f"at most {settings.max_batch_documents} texts per request", [("body", "texts")]
        )
    try:
        codes = bundle.encode(texts)
    except EmptyDocumentError as err:
        locations = (
            [("body", "text")] if request.text is not None else [("body", "texts", i) for i in err.indices]
        )
        raise InvalidInputError("text is empty or has no word of the model's vocabulary", locations) from err
    data = [
        HashCode(
            address=int(address),
            address_code=address_to_code(int(address), bundle.address_bits),
            long_code=long_code.tobytes().hex(),
            bundle_id=bundle.bundle_id,
        )
        for address, long_code in zip(codes.addresses, codes.long_codes, strict=True)
    ]
    return HashCodes(data=data, count=len(data))
