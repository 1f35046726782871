"""POST /v1/digits/trace and /v1/digits/render: how a digit was drawn, and drawing one (seed 000).

`trace` infers, for each image, the motor program of every digit class (recognition net, then local
search) and returns the best class's program (spring stiffnesses), the pen's trajectory, the rendered
reconstruction and every class's reconstruction error and score. `render` draws a given program, or a
new digit of a class (a training digit's program plus noise, chosen by a seed); its trajectory lets a
client animate the pen.
"""

from __future__ import annotations

import base64
from typing import Annotated, Any

import numpy as np
from fastapi import APIRouter, Depends, Query
from pydantic import BaseModel, ConfigDict, Field, model_validator
from starlette.concurrency import run_in_threadpool

from bundles.motor import MotorBundle, Trace, pixel_trajectory
from models.motor_renderer import N_SPRINGS, N_STEPS, N_STIFFNESS, Drawing
from service.deps import require_read_key
from service.imaging import array_to_png
from service.vision import OPENAPI_BODY, DigitsDep, MotorBundleDep

router = APIRouter(prefix="/v1/digits", tags=["digits"], dependencies=[Depends(require_read_key)])

MAX_STIFFNESS = 1e4
Stiffness = Annotated[float, Field(ge=0.0, le=MAX_STIFFNESS, allow_inf_nan=False)]
StyleValue = Annotated[float, Field(ge=-5.0, le=5.0, allow_inf_nan=False)]
Point = list[float]


class MotorProgram(BaseModel):
    """A motor program: the four springs' stiffnesses at 17 time steps and two style values."""

    model_config = ConfigDict(extra="forbid")

    stiffness: list[Annotated[list[Stiffness], Field(min_length=N_SPRINGS, max_length=N_SPRINGS)]] = Field(
        min_length=N_STEPS,
        max_length=N_STEPS,
        description="17 time steps, each [left, right, down, up] spring stiffness (>= 0); linear in between.",
    )
    log_ink: StyleValue = Field(
        0.0, description="Ink per unit of stroke length, log of a factor on the default."
    )
    log_width: StyleValue = Field(0.0, description="Blur kernel width, log of a factor on the default.")

    @classmethod
    def from_array(cls, program: np.ndarray) -> MotorProgram:
        stiffness = program[:N_STIFFNESS].reshape(N_STEPS, N_SPRINGS)
        return cls(stiffness=stiffness.tolist(), log_ink=float(program[-2]), log_width=float(program[-1]))

    def to_array(self) -> np.ndarray:
        return np.concatenate([np.asarray(self.stiffness).ravel(), [self.log_ink, self.log_width]])


class DrawingOut(BaseModel):
    program: MotorProgram
    trajectory: list[Point] = Field(
        description="The pen's path in pixel coordinates [col, row] (0..27, row 0 at the top), in time "
        "order: 16 intervals x the renderer's Euler steps, plus the start."
    )
    ink_points: list[Point] = Field(
        description="The 60 points along the path that carry the ink, [col, row]."
    )
    image_png: str = Field(description="The rendered 28x28 image as base64 PNG (ink white on black).")


class DigitTrace(DrawingOut):
    digit: int = Field(ge=0, le=9, description="The class whose program reconstructs the image best.")
    probabilities: list[float] = Field(description="softmax(-score / temperature) over the classes.")
    scores: list[float] = Field(
        description="What ranks the classes (lowest wins): each class's final local-search energy, squared "
        "pixel error + lambda ||z - z0||^2 (z0: the recognition net's program in the nets' units) + gamma "
        "m_c(z) (mean squared distance to the nearest programs of real training digits of the class), or "
        "its squared pixel error, as the model's local search is set."
    )
    errors: list[float] = Field(
        description="Squared pixel error of each class's reconstruction, after local search."
    )
    errors_before_local_search: list[float] = Field(
        description="The same straight from the recognition nets."
    )
    bundle_id: str


class DigitTraces(BaseModel):
    data: list[DigitTrace]
    count: int


class RenderRequest(BaseModel):
    """Either a `program` to draw, or a `digit` to draw a new example of (picked by `seed`)."""

    model_config = ConfigDict(extra="forbid")

    program: MotorProgram | None = None
    digit: int | None = Field(None, ge=0, le=9, description="Draw a new digit of this class.")
    seed: int = Field(0, ge=0, le=2**32 - 1, description="Picks the training digit and the noise.")
    noise: float = Field(
        1.0, ge=0.0, le=3.0, description="Noise on the training digit's code, in units of the training noise."
    )

    @model_validator(mode="after")
    def _one_source(self) -> RenderRequest:
        if (self.program is None) == (self.digit is None):
            raise ValueError("give exactly one of `program` or `digit`")
        return self


class RenderedDigit(DrawingOut):
    digit: int | None = Field(None, description="The class asked for (absent when a program was given).")
    bundle_id: str


def _drawing(bundle: MotorBundle, program: np.ndarray, drawing: Drawing) -> dict[str, Any]:
    return {
        "program": MotorProgram.from_array(program),
        "trajectory": pixel_trajectory(drawing, bundle.renderer).round(3).tolist(),
        "ink_points": np.asarray(drawing.points[0]).round(3).tolist(),
        "image_png": base64.b64encode(array_to_png(drawing.images[0])).decode("ascii"),
    }


def _trace_out(bundle: MotorBundle, trace: Trace) -> DigitTrace:
    return DigitTrace(
        **_drawing(bundle, trace.program, trace.drawing),
        digit=trace.digit,
        probabilities=trace.probabilities.tolist(),
        scores=trace.scores.tolist(),
        errors=trace.errors.tolist(),
        errors_before_local_search=trace.errors_before.tolist(),
        bundle_id=bundle.bundle_id,
    )


def _trace(bundle: MotorBundle, images: np.ndarray, local_search: bool) -> list[DigitTrace]:
    return [_trace_out(bundle, t) for t in bundle.trace(images, local_search=local_search)]


def _render(bundle: MotorBundle, request: RenderRequest) -> RenderedDigit:
    if request.program is not None:
        program = request.program.to_array()
    else:
        assert request.digit is not None
        program = bundle.sample_program(request.digit, request.seed, request.noise)
    drawing = bundle.draw_program(program)
    return RenderedDigit(
        **_drawing(bundle, program, drawing), digit=request.digit, bundle_id=bundle.bundle_id
    )


@router.post("/trace", openapi_extra=OPENAPI_BODY)
async def trace(
    bundle: MotorBundleDep,  # first: without the model, answer 503 before reading the images
    images: DigitsDep,
    local_search: bool = Query(True, description="Refine each class's program by local search."),
) -> DigitTraces:
    """How each digit was drawn: the best class's motor program, pen trajectory, reconstruction, errors."""
    data = await run_in_threadpool(_trace, bundle, images, local_search)
    return DigitTraces(data=data, count=len(data))


@router.post("/render")
async def render_digit(body: RenderRequest, bundle: MotorBundleDep) -> RenderedDigit:
    """Draw a motor program, or a new digit of a class: image, pen trajectory and ink points."""
    return await run_in_threadpool(_render, bundle, body)
