"""Shared plumbing of the digits and images routes: schemas, bundle dependencies, input parsing.

A request carries either JSON (`pixels`: one image as rows of values in [0, 1], ink = 1, or 784
values for 28x28; `images`: a batch of those) or a multipart upload (`file`: one PNG/JPEG; `files`:
several). Both then take the same preprocessing path (service/imaging.py `to_mnist`;
`preprocess=false` skips it for pixels that are already normalised MNIST) and become an (n, 784)
float32 array. Every bad input becomes a 4xx with a clear message: 422 in FastAPI's validation format
(naming the field), 413 for an image over the pixel limit, 415 for another content type.

Where the work happens: uploads, large JSON bodies and the preprocessing run in the decode pool
(service/decode_pool.py), off the event loop. A small JSON body whose pictures need no preprocessing
(`preprocess=false`, or the raw pictures of `read_pictures`) is parsed and checked on the event loop
instead: at most `INLINE_JSON_BYTES` (one 28x28 image at full float precision is ~16 KB) parse and
check in ~0.1 ms, less than handing them to a worker process and back costs (~0.3 ms on an idle
machine, over 1 ms on a loaded one, where the niced worker waits for a core), so the loop is held no
longer than the hand-off itself would hold it. The parse and the checks are the same either way.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from functools import partial
from typing import Annotated, Any

import numpy as np
from fastapi import Depends, Query, Request, status
from fastapi.exceptions import RequestValidationError
from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError, model_validator
from starlette.datastructures import UploadFile

from bundles.convnet import ConvNetBundle
from bundles.motor import MotorBundle
from bundles.sparse import SparseBundle
from bundles.vision import DigitBundle, ImageBundle
from service.decode_pool import decode_pool
from service.errors import InvalidInputError, Location, ServiceError
from service.imaging import ImageInputError, decode_image, pixels_to_array, to_mnist
from service.loaded_models import LoadedModelsDep
from service.settings import Settings

logger = logging.getLogger(__name__)

Pixels = list[float] | list[list[float]]
# JSON bodies up to this size, without preprocessing, are parsed on the event loop (see the docstring).
INLINE_JSON_BYTES = 32 * 1024


class PixelsRequest(BaseModel):
    """One image (`pixels`) or a batch (`images`), each rows of values in [0, 1] (ink = 1) or 784 values."""

    model_config = ConfigDict(extra="forbid")

    pixels: Pixels | None = Field(
        None, description="One image as rows of values in [0, 1], ink = 1 (any size), or 784 values (28x28)."
    )
    images: list[Pixels] | None = Field(None, min_length=1, description="A batch of such images.")

    @model_validator(mode="after")
    def _exactly_one(self) -> PixelsRequest:
        if (self.pixels is None) == (self.images is None):
            raise ValueError("give exactly one of `pixels` or `images`")
        return self


_REQUEST_ADAPTER = TypeAdapter(PixelsRequest)

MULTIPART_SCHEMA = {
    "type": "object",
    "properties": {
        "file": {"type": "string", "format": "binary", "description": "One PNG or JPEG image of any size."},
        "files": {
            "type": "array",
            "items": {"type": "string", "format": "binary"},
            "description": "A batch.",
        },
    },
}
OPENAPI_BODY: dict[str, Any] = {
    "requestBody": {
        "required": True,
        "content": {
            "application/json": {"schema": PixelsRequest.model_json_schema()},
            "multipart/form-data": {"schema": MULTIPART_SCHEMA},
        },
    }
}


class UnsupportedMediaTypeError(ServiceError):
    status_code = status.HTTP_415_UNSUPPORTED_MEDIA_TYPE


class ImageTooLargeError(ServiceError):
    status_code = status.HTTP_413_CONTENT_TOO_LARGE


# ----- bundles -----------------------------------------------------------------------------------
# Each route names the bundle it needs as a dependency; a missing one answers 503 before the body is read.
def get_digit_bundle(models: LoadedModelsDep) -> DigitBundle:
    return models.require(models.digits, "digits")


def get_image_bundle(models: LoadedModelsDep) -> ImageBundle:
    return models.require(models.images, "images")


def get_sparse_bundle(models: LoadedModelsDep) -> SparseBundle:
    return models.require(models.sparse, "sparse")


def get_motor_bundle(models: LoadedModelsDep) -> MotorBundle:
    return models.require(models.motor, "motor")


def get_convnet_bundle(models: LoadedModelsDep) -> ConvNetBundle:
    return models.require(models.convnet, "convnet")


DigitBundleDep = Annotated[DigitBundle, Depends(get_digit_bundle)]
ImageBundleDep = Annotated[ImageBundle, Depends(get_image_bundle)]
SparseBundleDep = Annotated[SparseBundle, Depends(get_sparse_bundle)]
MotorBundleDep = Annotated[MotorBundle, Depends(get_motor_bundle)]
ConvNetBundleDep = Annotated[ConvNetBundle, Depends(get_convnet_bundle)]


# ----- inputs ------------------------------------------------------------------------------------
def _limits(request: Request) -> tuple[int, int]:
    settings: Settings = request.app.state.settings
    return settings.max_batch_documents, settings.max_image_pixels


def _fail(err: ImageInputError, location: Location) -> ServiceError:
    if err.too_large:
        return ImageTooLargeError(f"{'.'.join(map(str, location[1:]))}: {err.message}")
    return InvalidInputError(err.message, [location])


PreprocessQuery = Annotated[
    bool,
    Query(
        description="Normalise each image as MNIST was made (polarity, noise, crop, scale, centring); "
        "false: the pixels are already a normalised 28x28 MNIST digit, ink = 1, and are used as they are."
    ),
]


# A decoded picture (H, W) -> what the route needs; defined at module level (it runs in a worker process).
Transform = Callable[[np.ndarray], np.ndarray]


def _as_decoded(gray: np.ndarray) -> np.ndarray:
    return gray


def _normalise_uploads(
    uploads: Sequence[tuple[Location, bytes]], max_pixels: int, transform: Transform
) -> list[np.ndarray]:
    """Decode and normalise each upload in turn (in the decode pool): one full-size image in memory."""
    rows = []
    for location, data in uploads:
        try:
            gray = decode_image(data, max_pixels=max_pixels)
            rows.append(transform(gray))
        except ImageInputError as err:
            raise _fail(err, location) from err
    return rows


def _normalise_json(body: bytes, max_batch: int, max_pixels: int, transform: Transform) -> list[np.ndarray]:
    """Parse a JSON body of pixels and normalise each image (in the decode pool)."""
    try:
        parsed = _REQUEST_ADAPTER.validate_json(body)
    except ValidationError as err:
        errors = [
            {**e, "loc": ("body", *e["loc"])} for e in err.errors(include_url=False, include_context=False)
        ]
        raise RequestValidationError(errors) from err
    if parsed.pixels is not None:
        items: list[tuple[tuple[str | int, ...], Pixels]] = [(("body", "pixels"), parsed.pixels)]
    else:
        assert parsed.images is not None
        items = [(("body", "images", i), image) for i, image in enumerate(parsed.images)]
    if len(items) > max_batch:
        raise InvalidInputError(f"at most {max_batch} images per request", [("body", "images")])
    rows = []
    for location, values in items:
        try:
            gray = pixels_to_array(values, max_pixels=max_pixels)
            rows.append(transform(gray))
        except ImageInputError as err:
            raise _fail(err, location) from err
    return rows


async def _read_each(request: Request, transform: Transform, *, cheap: bool = False) -> list[np.ndarray]:
    """`transform` of each of the request's pictures, decoded and transformed in the decode pool, or,
    when `cheap` (the transform costs next to nothing: no preprocessing) and the body is JSON of at most
    `INLINE_JSON_BYTES`, parsed, checked and transformed right here, on the event loop."""
    max_batch, max_pixels = _limits(request)
    pool = decode_pool(request)
    pool.check_room()  # refuse before reading a body the pool has no room for
    content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if content_type == "multipart/form-data":
        form = await request.form(max_files=max_batch + 1, max_fields=10)
        single, batch = form.getlist("file"), form.getlist("files")
        if len(single) + len(batch) == 0 or (single and batch) or len(single) > 1:
            raise InvalidInputError("upload one image as `file` or several as `files`", [("body", "file")])
        uploads = (
            [(("body", "file"), single[0])]
            if single
            else [(("body", "files", i), f) for i, f in enumerate(batch)]
        )
        if len(uploads) > max_batch:
            raise InvalidInputError(f"at most {max_batch} images per request", [("body", "files")])
        files = []
        for location, upload in uploads:
            if not isinstance(upload, UploadFile):
                raise InvalidInputError("expected a file upload, got a text field", [location])
            files.append((location, await upload.read()))
        return await pool.run(_normalise_uploads, files, max_pixels, transform)
    if content_type not in ("application/json", ""):
        raise UnsupportedMediaTypeError(
            f"unsupported content type {content_type!r}: send application/json or multipart/form-data"
        )
    body = await request.body()
    if cheap and len(body) <= INLINE_JSON_BYTES:
        return _normalise_json(body, max_batch, max_pixels, transform)
    return await pool.run(_normalise_json, body, max_batch, max_pixels, transform)


async def _read_images(request: Request, preprocess: bool, allow_blank: bool) -> np.ndarray:
    """The request's images as an (n, 784) float32 array (decoded and normalised as `_read_each` says)."""
    transform = partial(to_mnist, preprocess=preprocess, allow_blank=allow_blank)
    return np.stack(await _read_each(request, transform, cheap=not preprocess))


async def read_digits(request: Request, preprocess: PreprocessQuery = True) -> np.ndarray:
    """The request's digits as an (n, 784) float32 array in [0, 1]; a blank image is refused (422)."""
    return await _read_images(request, preprocess, allow_blank=False)


async def read_pictures(request: Request) -> list[np.ndarray]:
    """The request's pictures as they are (any size, either polarity), for readers that find the digits."""
    return await _read_each(request, _as_decoded, cheap=True)


async def read_images(request: Request, preprocess: PreprocessQuery = True) -> np.ndarray:
    """The same for the autoencoder, which also encodes a blank image (as an empty field)."""
    return await _read_images(request, preprocess, allow_blank=True)


ImagesDep = Annotated[np.ndarray, Depends(read_images)]
DigitsDep = Annotated[np.ndarray, Depends(read_digits)]
