"""The motor bundle on disk and its numpy inference: recognition by reconstruction, local search, tracing.

Serving needs no torch: the nets are a few stacked matrix products (`models.motor.stack_forward`) and
the renderer runs in numpy (`models.motor_renderer` is written against the array API).

**Analysis of an image x** (seed 000, slides 4, 18-22): every class's recognition net proposes a code;
the renderer draws it; then `iterations` steps of local search refine each code with the class's
generative net, which turns the pixel residual into a code gradient:

    z <- z + step * J_G(z)^T (x - render(z)),      z = (code - prototype) / scale

(the residual is the real renderer's, J_G the generative net's Jacobian). A step is kept only if the
real squared pixel error falls; the step size grows by 1.5 after a kept step and halves otherwise.
The class whose program reconstructs x best wins; probabilities are softmax(-error / temperature),
the temperature fitted on validation digits.

Weights (float32): recognition.W{l} (C, a, b), recognition.b{l} (C, 1, b), likewise generative.*;
prototypes (C, 70) codes; scale (70,); class_codes (C, P, 70): the codes of P training digits of each
class, which `sample_code` perturbs to draw new digits of a class.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from scipy.special import log_softmax

from bundles.io import BundleError, bundle_id, check_shapes, read_bundle
from models.motor_codes import NoiseConfig, perturb_codes, program_from_code, stack_forward
from models.motor_renderer import N_STIFFNESS, PROGRAM_SIZE, SIDE, Drawing, RendererConfig, render, to_pixels

MOTOR_FORMAT_VERSION = 1
N_PIXELS = SIDE * SIDE
CHUNK = 1024  # images rendered per batch (bounds the renderer's temporaries)


@dataclass(frozen=True)
class LocalSearch:
    """Local search settings (saved in config.json; the defaults are what training validated)."""

    iterations: int = 10
    step: float = 0.02  # initial step in z units per unit of J^T r


@dataclass
class Trace:
    """How one image was drawn, according to the class whose program reconstructs it best."""

    digit: int
    probabilities: np.ndarray  # (C,)
    errors: np.ndarray  # (C,) squared pixel error of each class's reconstruction (after local search)
    errors_before: np.ndarray  # (C,) the same before local search
    program: np.ndarray  # (70,) the best class's program: 17 x 4 stiffnesses, log ink, log width
    drawing: Drawing  # its rendering (batch of one): image, trajectory, ink points


@dataclass
class Analysis:
    """Every class's reading of N images."""

    codes: np.ndarray  # (N, C, 70) after local search
    errors: np.ndarray  # (N, C) squared pixel error of each class's reconstruction, after local search
    errors_before: np.ndarray  # (N, C) the same straight from the recognition nets
    reconstructions: np.ndarray  # (N, C, 784)


# Weight names, spelled once for the writer (training/motor.py) and this reader.
RECOGNITION, GENERATIVE = "recognition", "generative"
PROTOTYPES, SCALE, CLASS_CODES = "prototypes", "scale", "class_codes"


def layer_names(net: str, layer: int) -> tuple[str, str]:
    """Names of the weight matrix and bias of `layer` of the per-class stack `net`."""
    return f"{net}.W{layer}", f"{net}.b{layer}"


def net_shapes(n_classes: int, sizes: list[int], net: str) -> dict[str, tuple[int, ...]]:
    shapes: dict[str, tuple[int, ...]] = {}
    for layer, (a, b) in enumerate(zip(sizes[:-1], sizes[1:], strict=True)):
        weight, bias = layer_names(net, layer)
        shapes[weight], shapes[bias] = (n_classes, a, b), (n_classes, 1, b)
    return shapes


def motor_weight_shapes(n_classes: int, hidden: list[int], n_class_codes: int) -> dict[str, tuple[int, ...]]:
    return {
        CLASS_CODES: (n_classes, n_class_codes, PROGRAM_SIZE),
        **net_shapes(n_classes, [N_PIXELS, *hidden, PROGRAM_SIZE], RECOGNITION),
        **net_shapes(n_classes, [PROGRAM_SIZE, *hidden, N_PIXELS], GENERATIVE),
        PROTOTYPES: (n_classes, PROGRAM_SIZE),
        SCALE: (PROGRAM_SIZE,),
    }


def draw(codes: np.ndarray, renderer: RendererConfig) -> np.ndarray:
    """Render codes (..., 70) -> images (..., 784) in chunks."""
    flat = codes.reshape(-1, PROGRAM_SIZE)
    out = np.empty((len(flat), N_PIXELS), dtype=np.float32)
    for start in range(0, len(flat), CHUNK):
        out[start : start + CHUNK] = render(program_from_code(flat[start : start + CHUNK]), renderer).images
    return out.reshape(*codes.shape[:-1], N_PIXELS)


class MotorBundle:
    """A trained motor model: per-class recognition and generative nets, the renderer's constants."""

    kind = "motor"

    def __init__(
        self, path: Path, config: dict[str, Any], weights: dict[str, np.ndarray], metrics: dict[str, Any]
    ):
        self.path, self.config, self.weights, self.metrics = path, config, weights, metrics
        architecture = config["architecture"]
        self.n_classes: int = architecture["n_classes"]
        self.hidden: list[int] = architecture["hidden"]
        self.renderer = RendererConfig(**config["renderer"])
        self.local_search = LocalSearch(**config["local_search"])
        self.temperature = float(config.get("temperature", 1.0))
        self.noise = NoiseConfig(**config["training"]["noise"])
        n_layers = len(self.hidden) + 1
        names = {net: [layer_names(net, i) for i in range(n_layers)] for net in (RECOGNITION, GENERATIVE)}
        self.recognition = [(weights[w], weights[b]) for w, b in names[RECOGNITION]]
        self.generative = [(weights[w], weights[b]) for w, b in names[GENERATIVE]]
        self.prototypes, self.scale = weights[PROTOTYPES], weights[SCALE]
        self.class_codes = weights[CLASS_CODES]
        self.bundle_id = bundle_id(path, self.kind)

    @classmethod
    def load(cls, path: Path | str) -> MotorBundle:
        path = Path(path)
        config, weights, metrics = read_bundle(path, kind=cls.kind, format_version=MOTOR_FORMAT_VERSION)
        try:
            architecture = config["architecture"]
            n_classes, hidden = int(architecture["n_classes"]), [int(h) for h in architecture["hidden"]]
            n_class_codes = int(architecture["n_class_codes"])
            RendererConfig(**config["renderer"])
            LocalSearch(**config["local_search"])
            NoiseConfig(**config["training"]["noise"])
        except (KeyError, TypeError, ValueError) as err:
            raise BundleError(
                f"{path}: config.json lacks a valid architecture, renderer or local_search: {err}"
            ) from err
        check_shapes(path, weights, motor_weight_shapes(n_classes, hidden, n_class_codes))
        return cls(path, config, weights, metrics)

    # ----- inference -----------------------------------------------------------------------------
    def recognize_codes(self, images: np.ndarray) -> np.ndarray:
        """Every class's code for every image.  (N, 784) -> (C, N, 70)."""
        x = np.broadcast_to(images.astype(np.float32), (self.n_classes, *images.shape))
        codes: np.ndarray = self.prototypes[:, None, :] + self.scale * stack_forward(
            x, self.recognition, sigmoid_output=False
        )
        return codes

    def code_gradient(self, codes: np.ndarray, residual: np.ndarray) -> np.ndarray:
        """J_G(z)^T r in z units for codes (C, N, 70) and pixel residuals (C, N, 784) -> (C, N, 70)."""
        z = (codes - self.prototypes[:, None, :]) / self.scale
        activations = [z]
        for w, b in self.generative[:-1]:
            activations.append(np.maximum(activations[-1] @ w + b, 0.0))
        w, b = self.generative[-1]
        out = 0.5 * (1.0 + np.tanh(0.5 * (activations[-1] @ w + b)))  # sigmoid, without overflow
        delta: np.ndarray = residual * out * (1.0 - out)
        for (w, _), h in zip(reversed(self.generative), reversed(activations), strict=True):
            delta = delta @ np.swapaxes(w, 1, 2)
            if h is not z:
                delta = delta * (h > 0)
        return delta

    def analyse(self, images: np.ndarray, *, local_search: bool = True) -> Analysis:
        """Recognise, render and (optionally) locally refine every class's program for every image."""
        x = np.asarray(images, dtype=np.float32)
        if x.ndim != 2 or x.shape[1] != N_PIXELS:
            raise ValueError(f"images must have shape (n, {N_PIXELS}), got {x.shape}")
        codes = self.recognize_codes(x)  # (C, N, 70)
        recon = draw(codes, self.renderer)
        err = ((recon - x) ** 2).sum(-1)
        before = err.copy()
        if local_search:
            step = np.full(err.shape, self.local_search.step, dtype=np.float32)
            for _ in range(self.local_search.iterations):
                grad = self.code_gradient(codes, x - recon)
                trial = codes + (step[..., None] * grad) * self.scale
                trial_recon = draw(trial, self.renderer)
                trial_err = ((trial_recon - x) ** 2).sum(-1)
                better = trial_err < err
                codes = np.where(better[..., None], trial, codes)
                recon = np.where(better[..., None], trial_recon, recon)
                err = np.where(better, trial_err, err)
                step = np.where(better, step * 1.5, step * 0.5).astype(np.float32)
        return Analysis(codes.swapaxes(0, 1), err.T, before.T, recon.swapaxes(0, 1))

    def probabilities(self, errors: np.ndarray) -> np.ndarray:
        """softmax(-errors / temperature).  (N, C) -> (N, C)."""
        probabilities: np.ndarray = np.exp(log_softmax(-errors / self.temperature, axis=1))
        return probabilities

    def predict_proba(self, images: np.ndarray) -> np.ndarray:
        """Class probabilities by reconstruction after local search.  (N, 784) -> (N, C)."""
        return self.probabilities(self.analyse(images).errors)

    def trace(self, images: np.ndarray, *, local_search: bool = True) -> list[Trace]:
        """For each image, the best class's program and drawing, and every class's error."""
        analysis = self.analyse(images, local_search=local_search)
        best = analysis.errors.argmin(axis=1)
        programs = readable(program_from_code(analysis.codes[np.arange(len(best)), best].astype(np.float64)))
        drawings = [render(programs[i : i + 1], self.renderer) for i in range(len(best))]
        probabilities = self.probabilities(analysis.errors)
        return [
            Trace(
                int(best[i]),
                probabilities[i],
                analysis.errors[i],
                analysis.errors_before[i],
                programs[i],
                drawings[i],
            )
            for i in range(len(best))
        ]

    def sample_code(self, digit: int, seed: int, noise: float = 1.0) -> np.ndarray:
        """A new code of class `digit`: one of its training digits' codes (picked by `seed`) with training
        noise times `noise` added.  -> (70,)."""
        if not 0 <= digit < self.n_classes:
            raise ValueError(f"digit must be in 0..{self.n_classes - 1}, got {digit}")
        rng = np.random.default_rng(seed)
        code = self.class_codes[digit, rng.integers(self.class_codes.shape[1])].astype(np.float64)
        new_code: np.ndarray = perturb_codes(
            code[None], self.noise.scaled(noise), lambda shape: rng.standard_normal(shape)
        )[0]
        return new_code

    def sample_program(self, digit: int, seed: int, noise: float = 1.0) -> np.ndarray:
        """The program of `sample_code(digit, seed, noise)`.  -> (70,)."""
        program: np.ndarray = readable(program_from_code(self.sample_code(digit, seed, noise)[None]))[0]
        return program

    def draw_program(self, program: np.ndarray) -> Drawing:
        """Render one program (70,) (batch of one), in float64 like `trace`."""
        return render(np.asarray(program, dtype=np.float64)[None], self.renderer)


def readable(programs: np.ndarray) -> np.ndarray:
    """Programs (B, 70) with each stiffness as the renderer reads it (a spring only pulls: >= 0)."""
    out = programs.copy()
    out[:, :N_STIFFNESS] = np.maximum(out[:, :N_STIFFNESS], 0.0)
    return out


def pixel_trajectory(drawing: Drawing, renderer: RendererConfig) -> np.ndarray:
    """The pen's path of a one-program drawing in pixel coordinates (col, row).  -> (T, 2)."""
    return np.asarray(to_pixels(drawing.trajectory[0], renderer))


def fit_temperature(errors: np.ndarray, labels: np.ndarray) -> float:
    """The temperature T minimising the NLL of softmax(-errors / T) (log-spaced grid search)."""
    grid = np.exp(np.linspace(np.log(0.05), np.log(50.0), 200))
    nll = [-log_softmax(-errors / t, axis=1)[np.arange(len(labels)), labels].mean() for t in grid]
    return float(grid[int(np.argmin(nll))])
