"""The motor bundle on disk and its numpy inference: recognition by reconstruction, local search, tracing.

Serving needs no torch: the nets are a few stacked matrix products (`models.motor.stack_forward`) and
the renderer runs in numpy (`models.motor_renderer` is written against the array API).

**Analysis of an image x** (seed 000, slides 4, 18-22): every class's recognition net proposes a code;
the renderer draws it; then local search (`bundles.motor_search`) refines the codes of the most likely
classes with the class's generative net, which turns the pixel residual into a code gradient, under a
prior that keeps each code near the recognition net's. The class with the lowest score (final energy
or pixel error) wins; probabilities are softmax(-score / temperature), the temperature fitted on
validation digits.

Weights (float32): recognition.W{l} (C, a, b), recognition.b{l} (C, 1, b), likewise generative.*;
prototypes (C, 70) codes; scale (70,); class_codes (C, P, 70): the codes of P training digits of each
class, which `sample_code` perturbs to draw new digits of a class.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
from scipy.special import log_softmax

from bundles.io import BundleError, bundle_id, check_shapes, read_bundle
from bundles.motor_search import LocalSearch, refine, squared_error
from models.motor_codes import NoiseConfig, perturb_codes, program_from_code, stack_forward
from models.motor_renderer import N_STIFFNESS, PROGRAM_SIZE, SIDE, Drawing, RendererConfig, render, to_pixels

MOTOR_FORMAT_VERSION = 1
N_PIXELS = SIDE * SIDE
CHUNK = 1024  # images rendered per batch (bounds the renderer's temporaries)


@dataclass
class Trace:
    """How one image was drawn, according to the class whose program reconstructs it best."""

    digit: int
    probabilities: np.ndarray  # (C,)
    errors: np.ndarray  # (C,) squared pixel error of each class's reconstruction (after local search)
    errors_before: np.ndarray  # (C,) the same before local search
    scores: np.ndarray  # (C,) what ranks the classes (lowest wins): final energy or pixel error
    program: np.ndarray  # (70,) the best class's program: 17 x 4 stiffnesses, log ink, log width
    drawing: Drawing  # its rendering (batch of one): image, trajectory, ink points


@dataclass
class Analysis:
    """Every class's reading of N images."""

    codes: np.ndarray  # (N, C, 70) after local search
    errors: np.ndarray  # (N, C) squared pixel error of each class's reconstruction, after local search
    errors_before: np.ndarray  # (N, C) the same straight from the recognition nets
    scores: np.ndarray  # (N, C) what ranks the classes (lowest wins)
    scores_before: np.ndarray  # (N, C) the same at the recognition nets' codes
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
        self.local_search = saved_search(config["local_search"], self.n_classes)
        self.temperature = float(config.get("temperature", 1.0))
        self.noise = NoiseConfig(**config["training"]["noise"])
        n_layers = len(self.hidden) + 1
        names = {net: [layer_names(net, i) for i in range(n_layers)] for net in (RECOGNITION, GENERATIVE)}
        self.recognition = [(weights[w], weights[b]) for w, b in names[RECOGNITION]]
        self.generative = [(weights[w], weights[b]) for w, b in names[GENERATIVE]]
        self.prototypes, self.scale = weights[PROTOTYPES], weights[SCALE]
        self.class_codes = weights[CLASS_CODES]
        # the class codes in the nets' units, for the class-manifold term of local search
        self.class_z = ((self.class_codes - self.prototypes[:, None, :]) / self.scale).astype(np.float32)
        self.class_z_norms = (self.class_z**2).sum(-1)
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
            saved_search(config["local_search"], n_classes)
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

    def code_gradient(self, codes: np.ndarray, residual: np.ndarray, classes: np.ndarray) -> np.ndarray:
        """J_G(z)^T r in z units, each (code, residual) pair through its class's generative net:
        codes (M, 70), residuals (M, 784), classes (M,) -> (M, 70)."""
        out = np.empty(codes.shape, dtype=np.float32)
        for c in np.unique(classes):
            rows = classes == c
            z = (codes[rows] - self.prototypes[c]) / self.scale
            activations = [z]
            for w, b in self.generative[:-1]:
                activations.append(np.maximum(activations[-1] @ w[c] + b[c], 0.0))
            w, b = self.generative[-1]
            y = 0.5 * (1.0 + np.tanh(0.5 * (activations[-1] @ w[c] + b[c])))  # sigmoid, without overflow
            delta: np.ndarray = residual[rows] * y * (1.0 - y)
            for (w, _), h in zip(reversed(self.generative), reversed(activations), strict=True):
                delta = delta @ w[c].T
                if h is not z:
                    delta = delta * (h > 0)
            out[rows] = delta
        return out

    def manifold(self, codes: np.ndarray, classes: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """m_c(z), the mean squared distance (z units) from each code to the k nearest class codes of its
        class, and the mean of those k codes:  codes (M, 70), classes (M,) -> (M,), (M, 70)."""
        distance = np.empty(len(codes), dtype=np.float32)
        centre = np.empty(codes.shape, dtype=np.float32)
        k = min(k, self.class_z.shape[1])
        for c in np.unique(classes):
            rows = classes == c
            z = (codes[rows] - self.prototypes[c]) / self.scale
            d2 = (z**2).sum(-1)[:, None] + self.class_z_norms[c] - 2.0 * z @ self.class_z[c].T
            nearest = self.class_z[c][np.argpartition(d2, k - 1, axis=1)[:, :k]]  # (m, k, 70)
            distance[rows] = ((z[:, None, :] - nearest) ** 2).sum(-1).mean(-1)
            centre[rows] = self.prototypes[c] + self.scale * nearest.mean(1)
        return distance, centre

    def analyse(
        self, images: np.ndarray, *, local_search: bool = True, settings: LocalSearch | None = None
    ) -> Analysis:
        """Recognise, render and (optionally) locally refine every class's program for every image, with
        the bundle's local search settings unless `settings` are given."""
        x = np.asarray(images, dtype=np.float32)
        if x.ndim != 2 or x.shape[1] != N_PIXELS:
            raise ValueError(f"images must have shape (n, {N_PIXELS}), got {x.shape}")
        codes = self.recognize_codes(x)  # (C, N, 70)
        recon = draw(codes, self.renderer)
        before = squared_error(recon, x)
        search = settings or self.local_search
        if not local_search:
            search = replace(search, iterations=0)
        out = refine(
            x,
            codes,
            recon,
            search,
            self.scale,
            lambda c: draw(c, self.renderer),
            self.code_gradient,
            lambda c, k: self.manifold(c, k, search.neighbours),
        )
        return Analysis(
            out.codes.swapaxes(0, 1),
            out.errors.T,
            before.T,
            out.scores.T,
            out.scores_before.T,
            out.reconstructions.swapaxes(0, 1),
        )

    def probabilities(self, scores: np.ndarray) -> np.ndarray:
        """softmax(-scores / temperature).  (N, C) -> (N, C)."""
        probabilities: np.ndarray = np.exp(log_softmax(-scores / self.temperature, axis=1))
        return probabilities

    def predict_proba(self, images: np.ndarray) -> np.ndarray:
        """Class probabilities by reconstruction after local search.  (N, 784) -> (N, C)."""
        return self.probabilities(self.analyse(images).scores)

    def trace(self, images: np.ndarray, *, local_search: bool = True) -> list[Trace]:
        """For each image, the best class's program and drawing, and every class's error."""
        analysis = self.analyse(images, local_search=local_search)
        best = analysis.scores.argmin(axis=1)
        programs = readable(program_from_code(analysis.codes[np.arange(len(best)), best].astype(np.float64)))
        drawings = [render(programs[i : i + 1], self.renderer) for i in range(len(best))]
        probabilities = self.probabilities(analysis.scores)
        return [
            Trace(
                int(best[i]),
                probabilities[i],
                analysis.errors[i],
                analysis.errors_before[i],
                analysis.scores[i],
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


def saved_search(saved: dict[str, Any], n_classes: int) -> LocalSearch:
    """The local search a bundle's config.json names; bundles saved before the prior existed searched
    every class without one and ranked by pixel error."""
    return LocalSearch(**{"prior": 0.0, "top_k": n_classes, "score": "pixel", **saved})


def readable(programs: np.ndarray) -> np.ndarray:
    """Programs (B, 70) with each stiffness as the renderer reads it (a spring only pulls: >= 0)."""
    out = programs.copy()
    out[:, :N_STIFFNESS] = np.maximum(out[:, :N_STIFFNESS], 0.0)
    return out


def pixel_trajectory(drawing: Drawing, renderer: RendererConfig) -> np.ndarray:
    """The pen's path of a one-program drawing in pixel coordinates (col, row).  -> (T, 2)."""
    return np.asarray(to_pixels(drawing.trajectory[0], renderer))


def fit_temperature(scores: np.ndarray, labels: np.ndarray) -> float:
    """The temperature T minimising the NLL of softmax(-scores / T) (log-spaced grid search)."""
    grid = np.exp(np.linspace(np.log(0.05), np.log(50.0), 200))
    nll = [-log_softmax(-scores / t, axis=1)[np.arange(len(labels)), labels].mean() for t in grid]
    return float(grid[int(np.argmin(nll))])
