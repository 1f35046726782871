"""Evaluate a predictive bundle on Moving MNIST test sequences (MNIST test digits only).

Prediction: from frames 1..C (C = `context`, 10) the network predicts frames C+1 .. C+K recursively
(K = 5, each prediction fed back). Against, in the same run and on the same sequences:

    copy_last:  x^_{C+k} = x_C
    linear:     x^_{C+k} = clip(x_C + k (x_C - x_{C-1}), 0, 1)   (pixelwise linear extrapolation)

Scores per step k: mean squared pixel error (`mse.<predictor>.<k>`) and SSIM (`ssim.<predictor>.<k>`,
Gaussian window sigma 1.5, data range 1, mean over the frame).

Probes (the seed's "LSTM activities -> L2 regression -> value of a latent variable"): after frame C,
the representation is the LSTM state h_C (predictive), the frame autoencoder's code of x_C (a code of
as many units) or the raw pixels of x_C. Targets are frame C's latent variables with the two digits
ordered left to right: positions (x, y of each centre, 4 numbers) and identities (one class per
digit). Ridge regression (penalty chosen by generalised cross-validation) and multinomial logistic
regression (penalty chosen on the last 20% of the probe-training sequences, then refitted on all),
on standardised features, are fitted on sequences of training digits and scored on the test
sequences: `probe.position_r2.<rep>` (R^2, mean over the 4 coordinates) and
`probe.identity_accuracy.<rep>` (mean over the 2 digits); `probe.identity_log10_c.<rep>` is the
penalty chosen.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from scipy.ndimage import gaussian_filter
from sklearn.linear_model import LogisticRegression, RidgeCV
from sklearn.metrics import r2_score
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from bundles.io import CONFIG
from models.predictive import FrameAutoencoder, PredictiveNet
from training.mnist import MnistSplits
from training.moving_mnist import MovingMnistSpec, Sequences, sequence_set
from training.predict import load_model

log = logging.getLogger(__name__)

STEPS = 5
BATCH = 50


def ssim(a: np.ndarray, b: np.ndarray, sigma: float = 1.5) -> np.ndarray:
    """Mean SSIM of image pairs (..., H, W) in [0, 1] (Wang et al. 2004, Gaussian window).  -> (...)."""
    c1, c2 = 0.01**2, 0.03**2
    axes = (0,) * (a.ndim - 2) + (sigma, sigma)

    def blur(x: np.ndarray) -> np.ndarray:
        blurred: np.ndarray = gaussian_filter(x.astype(np.float64), axes, truncate=3.5)
        return blurred

    mu_a, mu_b = blur(a), blur(b)
    var_a, var_b = blur(a * a) - mu_a**2, blur(b * b) - mu_b**2
    cov = blur(a * b) - mu_a * mu_b
    s = ((2 * mu_a * mu_b + c1) * (2 * cov + c2)) / ((mu_a**2 + mu_b**2 + c1) * (var_a + var_b + c2))
    mean_ssim: np.ndarray = s.mean(axis=(-2, -1))
    return mean_ssim


def _batches(frames: np.ndarray) -> list[torch.Tensor]:
    return [torch.from_numpy(frames[i : i + BATCH]) for i in range(0, len(frames), BATCH)]


@torch.no_grad()
def predictive_rollout(net: PredictiveNet, frames: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """(predicted frames (S, k, H, W), LSTM state after the last context frame (S, n))."""
    predictions, states = [], []
    for batch in _batches(frames):
        h, state = net.states(batch)
        states.append(h[:, -1].numpy())
        if k > 0:
            predictions.append(net.continue_from(h[:, -1], state, k).numpy())
    return (np.concatenate(predictions) if k > 0 else np.empty((0,))), np.concatenate(states)


@torch.no_grad()
def autoencoder_codes(ae: FrameAutoencoder, frames: np.ndarray) -> np.ndarray:
    """(N, H, W) -> codes (N, n)."""
    return np.concatenate([ae.encode(batch).numpy() for batch in _batches(frames)])


def prediction_scores(seqs: Sequences, predicted: np.ndarray, context: int) -> dict[str, float]:
    """MSE and SSIM of the model and the two baselines at steps 1..K."""
    last, before = seqs.frames[:, context - 1], seqs.frames[:, context - 2]
    scores: dict[str, float] = {}
    for k in range(1, predicted.shape[1] + 1):
        truth = seqs.frames[:, context - 1 + k]
        guesses = {
            "model": predicted[:, k - 1],
            "copy_last": last,
            "linear": np.clip(last + k * (last - before), 0.0, 1.0),
        }
        for name, guess in guesses.items():
            scores[f"mse.{name}.{k}"] = float(((guess - truth) ** 2).mean())
            scores[f"ssim.{name}.{k}"] = float(ssim(guess, truth).mean())
    return scores


def probe_targets(seqs: Sequences, frame: int) -> tuple[np.ndarray, np.ndarray]:
    """Frame `frame`'s latents, digits ordered left to right: positions (S, 4), identities (S, 2)."""
    positions = seqs.positions[:, frame]  # (S, D, 2)
    order = np.argsort(positions[:, :, 0], axis=1, kind="stable")
    rows = np.arange(len(seqs))[:, None]
    return positions[rows, order].reshape(len(seqs), -1), seqs.labels[rows, order]


LOGISTIC_C = (0.001, 0.01, 0.1, 1.0)  # inverse penalties tried for the identity probe
HELD_OUT = 0.2  # share of the probe-training sequences that chooses the penalty


def _logistic(c: float) -> Any:
    return make_pipeline(StandardScaler(), LogisticRegression(C=c, max_iter=500))


def fit_logistic(train_x: np.ndarray, train_y: np.ndarray) -> tuple[Any, float]:
    """A logistic regression whose penalty is chosen on held-out sequences, refitted on all of them.

    The last HELD_OUT of the (independent) training sequences scores each C of LOGISTIC_C; ties go to
    the stronger penalty. Returns (the fitted pipeline, its C).
    """
    cut = int(len(train_x) * (1 - HELD_OUT))
    scores = [
        float((_logistic(c).fit(train_x[:cut], train_y[:cut]).predict(train_x[cut:]) == train_y[cut:]).mean())
        for c in LOGISTIC_C
    ]
    best = LOGISTIC_C[int(np.argmax(scores))]
    return _logistic(best).fit(train_x, train_y), best


def probe(
    train_x: np.ndarray,
    train_t: tuple[np.ndarray, np.ndarray],
    test_x: np.ndarray,
    test_t: tuple[np.ndarray, np.ndarray],
) -> dict[str, float]:
    """Linear read-out of positions (ridge, R^2) and identities (logistic regression, accuracy).

    Both on standardised features, each with its penalty chosen on the training sequences only
    (ridge: generalised cross-validation; logistic: held-out sequences), the same way for every
    representation. `identity_c` is the mean log10 C chosen for the digits.
    """
    ridge = make_pipeline(StandardScaler(), RidgeCV(alphas=np.logspace(-2, 4, 13)))
    ridge.fit(train_x, train_t[0])
    r2 = r2_score(test_t[0], ridge.predict(test_x))
    accuracies, chosen = [], []
    for d in range(train_t[1].shape[1]):
        clf, c = fit_logistic(train_x, train_t[1][:, d])
        accuracies.append(float((clf.predict(test_x) == test_t[1][:, d]).mean()))
        chosen.append(np.log10(c))
    return {
        "position_r2": float(r2),
        "identity_accuracy": float(np.mean(accuracies)),
        "identity_log10_c": float(np.mean(chosen)),
    }


def save_rows_plot(seqs: Sequences, predicted: np.ndarray, context: int, path: Path, n: int = 4) -> None:
    """Rows of true vs predicted frames: for each of n sequences, the last 3 context frames, then
    the true and the predicted next K frames."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    k = predicted.shape[1]
    fig, axes = plt.subplots(2 * n, 3 + k, figsize=(1.2 * (3 + k), 2.4 * n))
    for s in range(n):
        for row, label in ((2 * s, "true"), (2 * s + 1, "predicted")):
            for c in range(3 + k):
                ax = axes[row, c]
                ax.axis("off")
                if c < 3:
                    if row % 2 == 0:
                        ax.imshow(seqs.frames[s, context - 3 + c], cmap="gray", vmin=0, vmax=1)
                        ax.set_title(f"t={context - 2 + c}", fontsize=7)
                    continue
                step = c - 3
                image = seqs.frames[s, context + step] if label == "true" else predicted[s, step]
                ax.imshow(image, cmap="gray", vmin=0, vmax=1)
                ax.set_title(f"{label} t={context + 1 + step}", fontsize=7)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=80)
    plt.close(fig)


def evaluate_predictive(
    bundle: Path,
    data: MnistSplits,
    *,
    autoencoder: Path | None = None,
    n_test: int = 1000,
    n_probe_train: int = 2000,
    context: int = 10,
    seed: int = 0,
    plots: Path | None = None,
) -> dict[str, Any]:
    """Prediction scores against the baselines and the linear probes; optionally the rows plot."""
    started = time.perf_counter()
    net = load_model(bundle)
    assert isinstance(net, PredictiveNet)
    spec = MovingMnistSpec(**{**net_spec(bundle), "n_frames": context + STEPS})
    test = sequence_set(data, "test", n_test, spec, seed)
    probe_train = sequence_set(data, "train", n_probe_train, spec, seed)
    predicted, test_states = predictive_rollout(net, test.frames[:, :context], STEPS)
    results: dict[str, Any] = prediction_scores(test, predicted, context)
    _, train_states = predictive_rollout(net, probe_train.frames[:, :context], 0)
    train_t, test_t = probe_targets(probe_train, context - 1), probe_targets(test, context - 1)
    representations = {
        "predictive": (train_states, test_states),
        "pixels": (
            probe_train.frames[:, context - 1].reshape(n_probe_train, -1),
            test.frames[:, context - 1].reshape(n_test, -1),
        ),
    }
    if autoencoder is not None:
        ae = load_model(autoencoder)
        assert isinstance(ae, FrameAutoencoder)
        representations["autoencoder"] = (
            autoencoder_codes(ae, probe_train.frames[:, context - 1]),
            autoencoder_codes(ae, test.frames[:, context - 1]),
        )
    for name, (train_x, test_x) in representations.items():
        for key, value in probe(train_x, train_t, test_x, test_t).items():
            results[f"probe.{key}.{name}"] = value
        log.info("probe %s done", name)
    if plots is not None:
        save_rows_plot(test, predicted, context, plots / "predictive_rows.png")
    results["setup"] = {
        "test_sequences": n_test,
        "probe_train_sequences": n_probe_train,
        "context_frames": context,
        "steps_ahead": STEPS,
        "seed": seed,
        "bundle": str(bundle),
        "autoencoder": str(autoencoder) if autoencoder else None,
        "seconds": round(time.perf_counter() - started, 1),
    }
    return results


def net_spec(bundle: Path) -> dict[str, Any]:
    """The Moving MNIST settings a bundle was trained on."""
    import json

    return dict(json.loads((Path(bundle) / CONFIG).read_text())["data"])
