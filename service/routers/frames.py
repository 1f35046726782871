"""POST /v1/frames/predict: the next frames of a short video, by the predictive network (seed 003).

The request carries 5-15 frames of a Moving MNIST-like video (ink = 1 on black, the bundle's frame
size, 64x64 for the trained models), as JSON arrays or as PNG/JPEG uploads, and `k`; the network
reads them and predicts the next k frames recursively (each prediction fed back as the next input).
The response gives each predicted frame as a base64 PNG (and its pixels on request) and names the
model. Every bad input is a 4xx with a clear message.
"""

from __future__ import annotations

import base64
import io
from typing import Annotated, Any

import numpy as np
from fastapi import APIRouter, Depends, Request
from fastapi.exceptions import RequestValidationError
from PIL import Image
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import UploadFile

from bundles.predict import PredictiveBundle
from service.decode_pool import decode_pool
from service.deps import require_read_key
from service.errors import InvalidInputError
from service.imaging import ImageInputError, decode_image
from service.loaded_models import LoadedModelsDep
from service.settings import Settings
from service.vision import UnsupportedMediaTypeError

router = APIRouter(prefix="/v1/frames", tags=["frames"], dependencies=[Depends(require_read_key)])

MIN_FRAMES, MAX_FRAMES, MAX_K = 5, 15, 20
Frame = list[list[float]]


class PredictRequest(BaseModel):
    """The frames seen so far and how many to predict."""

    model_config = ConfigDict(extra="forbid")

    frames: list[Frame] = Field(
        min_length=MIN_FRAMES,
        max_length=MAX_FRAMES,
        description="5-15 frames in time order, each rows of values in [0, 1] (ink = 1), the model's size "
        "(64 rows of 64 for the Moving MNIST models).",
    )
    k: int = Field(1, ge=1, le=MAX_K, description="How many frames to predict after the last one.")
    include_pixels: bool = Field(False, description="Also return each predicted frame's pixel values.")


class PredictedFrame(BaseModel):
    step: int = Field(description="1 = the frame right after the last input frame.")
    png: str = Field(description="The predicted frame as a base64 8-bit grayscale PNG (ink white).")
    pixels: list[list[float]] | None = Field(None, description="Its values in [0, 1] (include_pixels).")


class PredictResponse(BaseModel):
    model: str = Field(description="Which model predicted: the bundle kind, `predictive`.")
    bundle_id: str
    n_input_frames: int
    k: int
    size: int = Field(description="Frames are size x size pixels.")
    frames: list[PredictedFrame]


MULTIPART_SCHEMA = {
    "type": "object",
    "properties": {
        "files": {
            "type": "array",
            "items": {"type": "string", "format": "binary"},
            "description": "5-15 PNG/JPEG frames in time order (ink white on black, the model's size).",
        },
        "k": {"type": "integer", "default": 1, "minimum": 1, "maximum": MAX_K},
        "include_pixels": {"type": "boolean", "default": False},
    },
}
OPENAPI_BODY: dict[str, Any] = {
    "requestBody": {
        "required": True,
        "content": {
            "application/json": {"schema": PredictRequest.model_json_schema()},
            "multipart/form-data": {"schema": MULTIPART_SCHEMA},
        },
    }
}


def get_predictive_bundle(models: LoadedModelsDep) -> PredictiveBundle:
    return models.require(models.predictive, "predictive")


PredictiveBundleDep = Annotated[PredictiveBundle, Depends(get_predictive_bundle)]


def _validation_error(err: ValidationError) -> RequestValidationError:
    errors = [{**e, "loc": ("body", *e["loc"])} for e in err.errors(include_url=False, include_context=False)]
    return RequestValidationError(errors)


async def _read_multipart(request: Request, max_pixels: int) -> tuple[list[np.ndarray], PredictRequest]:
    form = await request.form(max_files=MAX_FRAMES + 1, max_fields=10)
    uploads = form.getlist("files")
    if not MIN_FRAMES <= len(uploads) <= MAX_FRAMES:
        raise InvalidInputError(
            f"upload {MIN_FRAMES}-{MAX_FRAMES} frames as `files`, got {len(uploads)}", [("body", "files")]
        )
    frames = []
    for i, upload in enumerate(uploads):
        if not isinstance(upload, UploadFile):
            raise InvalidInputError("expected a file upload, got a text field", [("body", "files", i)])
        try:
            data = await upload.read()
            frames.append(await decode_pool(request).run(decode_image, data, max_pixels=max_pixels))
        except ImageInputError as err:
            raise InvalidInputError(err.message, [("body", "files", i)]) from err
    try:
        options = PredictRequest(
            frames=[[[0.0]]] * MIN_FRAMES,  # placeholders: the uploads are checked below
            k=form.get("k", 1),
            include_pixels=form.get("include_pixels", False),
        )
    except ValidationError as err:
        raise _validation_error(err) from err
    return frames, options


async def read_frames(request: Request) -> tuple[list[np.ndarray], PredictRequest, str]:
    """The request's frames, (H, W) float32 each (size unchecked), its options, and where they came from."""
    settings: Settings = request.app.state.settings
    content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if content_type == "multipart/form-data":
        frames, options = await _read_multipart(request, settings.max_image_pixels)
        source = "files"
    elif content_type in ("application/json", ""):
        try:
            options = PredictRequest.model_validate_json(await request.body())
        except ValidationError as err:
            raise _validation_error(err) from err
        for i, rows in enumerate(options.frames):
            if not _rectangular(rows):
                raise InvalidInputError("each frame must be rows of equal length", [("body", "frames", i)])
        frames = [np.asarray(rows, dtype=np.float32) for rows in options.frames]
        source = "frames"
    else:
        raise UnsupportedMediaTypeError(
            f"unsupported content type {content_type!r}: send application/json or multipart/form-data"
        )
    return frames, options, source


def _rectangular(frame: Frame) -> bool:
    return len(frame) > 0 and all(len(row) == len(frame[0]) for row in frame)


def check_frames(frames: list[np.ndarray], size: int, source: str) -> np.ndarray:
    """Stack frames into (1, T, size, size), refusing wrong sizes and values outside [0, 1] (422)."""
    for i, frame in enumerate(frames):
        if frame.shape != (size, size):
            raise InvalidInputError(
                f"frame {i} is {frame.shape[1]}x{frame.shape[0]} pixels; the model reads {size}x{size}",
                [("body", source, i)],
            )
        if not np.isfinite(frame).all() or frame.min() < 0.0 or frame.max() > 1.0:
            raise InvalidInputError(
                "pixel values must be finite and lie in [0, 1] (ink = 1)", [("body", source, i)]
            )
    return np.stack(frames)[None]


def frame_png(frame: np.ndarray) -> bytes:
    """(H, W) values in [0, 1] -> an 8-bit grayscale PNG."""
    buffer = io.BytesIO()
    Image.fromarray(np.clip(frame * 255.0 + 0.5, 0, 255).astype(np.uint8)).save(buffer, format="PNG")
    return buffer.getvalue()


def _predict(bundle: PredictiveBundle, video: np.ndarray, options: PredictRequest) -> PredictResponse:
    predicted = bundle.rollout(video, options.k)[0]
    frames = [
        PredictedFrame(
            step=step + 1,
            png=base64.b64encode(frame_png(frame)).decode("ascii"),
            pixels=frame.round(4).tolist() if options.include_pixels else None,
        )
        for step, frame in enumerate(predicted)
    ]
    return PredictResponse(
        model=bundle.kind,
        bundle_id=bundle.bundle_id,
        n_input_frames=video.shape[1],
        k=options.k,
        size=bundle.size,
        frames=frames,
    )


@router.post("/predict", openapi_extra=OPENAPI_BODY)
async def predict(request: Request, bundle: PredictiveBundleDep) -> PredictResponse:
    """The next k frames after 5-15 given ones (JSON `frames` or PNG uploads `files`), as PNGs."""
    frames, options, source = await read_frames(request)
    video = check_frames(frames, bundle.size, source)
    return await run_in_threadpool(_predict, bundle, video, options)
