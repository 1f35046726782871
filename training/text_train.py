"""Training of the text bundle: greedy RBM pretraining, unrolling, fine-tuning with noisy codes.

Recipe (Salakhutdinov & Hinton, "Semantic hashing", 2009; seed slides 66-72, 78):

1. Vocabulary: the `vocab_size` most frequent non-stop words of the training documents.
2. A validation part is held out of the training documents; the rest ("fit") trains every layer.
3. Greedy CD pretraining of the shared lower layers V-h_1-...: a `ConstrainedPoissonRBM` on the word
   counts, `BernoulliRBM`s on the mean-field activities below (`training.stack.pretrain_stack`,
   checkpointed in `<out>/checkpoints`, so a rerun resumes instead of retraining).
4. For each code (address, long) a top `BernoulliRBM` h_{L-1}-bits, then the stack is unrolled into
   a `DeepAutoencoder` and fine-tuned by backprop with Gaussian noise of std `noise_std` on the code
   units' input. The noise is either fixed per training document (the paper: a deterministic
   objective) or drawn afresh for every minibatch.
5. Early stopping: after every epoch the validation documents are used as queries against the fit
   documents and the model is scored by precision@100 of Hamming ranking (when labels exist; else by
   the validation reconstruction loss). The un-fine-tuned stack is candidate epoch 0. The best
   epoch's weights are kept.
6. Last, for profiles with a `query` profile, the query encoder for short text is distilled from the
   document encoders (`training.query_train`) and added to the bundle.
"""

from __future__ import annotations

import hashlib
import logging
import math
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from bundles.text import TextBundle, check_code_sizes, encoder_layer_names, write_text_bundle
from bundles.text_features import WordIndex, cap_lengths, count_matrix, fit_vocabulary
from models.autoencoder import DeepAutoencoder
from models.rbm import RBM, BernoulliRBM, ConstrainedPoissonRBM
from training.backprop import BackpropSchedule, fine_tune
from training.corpus import Corpus
from training.occupancy import query_ball_fraction
from training.pretrain import CDSchedule
from training.query_train import QUERY_PROFILES, QueryProfile, scaled_profile, train_query_encoder
from training.retrieval import Relevance, hamming_relevant_at
from training.seed import set_seed
from training.stack import fingerprint, pretrain_stack, train_or_resume

log = logging.getLogger(__name__)

NOISE_MODES = ("fixed", "fresh")
# Shares of a --max-minutes budget: shared pretraining, then the address and the long encoder (code
# RBM + fine-tuning), roughly as the `full` profile spends its time on 20 Newsgroups, then the query
# encoder.
PHASE_NAMES = ("shared", "address", "long", "query")
PHASE_SHARES = (0.51, 0.14, 0.27, 0.08)
WIDE_CODE_BITS = 24  # wider codes may take their own noise std (`TextProfile.wide_code_noise_std`)


@dataclass
class TextProfile:
    """Everything that defines a training run apart from the data, the code sizes and the seed."""

    vocab_size: int = 2000  # words in the vocabulary (the input layer)
    hidden: tuple[int, ...] = (500, 500)  # shared hidden layers between the counts and the code
    # s(N) = N (replicated softmax) or 1 (constrained Poisson, the semantic-hashing paper); see
    # models/rbm.py. s(N) = 1 won on validation precision@100 of 20 Newsgroups (0.366 vs 0.331 at 32
    # bits, 0.410 vs 0.380 at 128): with the bias fixed, document length itself moves the hidden units.
    scale_hidden_bias: bool = False
    max_length: float | None = 500.0  # longer documents are scaled down to this many words (cap_lengths)
    bottom: CDSchedule = field(default_factory=lambda: CDSchedule(learning_rate=0.001))  # count RBM
    upper: CDSchedule = field(default_factory=CDSchedule)  # binary RBMs above it, code RBM included
    finetune: BackpropSchedule = field(
        default_factory=lambda: BackpropSchedule(epochs=10, optimizer="adam", learning_rate=1e-3, patience=3)
    )
    # std of the Gaussian noise on the code units' total input. Larger noise makes codes more bimodal;
    # it costs precision unless fine-tuning gets more epochs to converge (see the `full` profile).
    noise_std: float = 6.0
    # The std for codes wider than WIDE_CODE_BITS (None: `noise_std`). Wide codes need more noise to
    # be bimodal; narrow ones (addresses) are bimodal at std 6 and lose bits at 16 (see `full`).
    wide_code_noise_std: float | None = None
    # "fixed": one noise vector per training document (the paper); "fresh": new noise every minibatch.
    # Fresh won on 20 Newsgroups validation precision@100 (0.404 vs 0.392 at 32 bits, 0.439 vs 0.424).
    noise: str = "fresh"
    # Fine-tuning input drops each word type with this probability; the target stays the whole document
    # (denoising). Without it fine-tuning overfits after 1-2 epochs; on the `full` stack, 128 bits,
    # validation precision@100: 0.448 (none), 0.460 (0.2), 0.485 (0.5), 0.500 (0.7), 0.494 (0.8).
    word_dropout: float = 0.0
    # Weight of `balance_penalty` (each bit on for half the documents, bits uncorrelated) added to the
    # fine-tuning loss of address codes (<= WIDE_CODE_BITS): spreads documents over the addresses, so
    # a Hamming ball holds fewer of them.
    balance_weight: float = 0.0
    # The same penalty's weight for wide codes (> WIDE_CODE_BITS): correlated bits of a long code
    # count the same evidence twice in a Hamming distance.
    wide_balance_weight: float = 0.0
    # The code noise std grows linearly from 0 to its value over this many fine-tuning epochs, so the
    # pretrained code (not yet bimodal: |z| of a few units) is not drowned by std-16 noise at once.
    noise_warmup_epochs: float = 0.0
    # Address codes (<= WIDE_CODE_BITS): an epoch whose radius-3 ball around validation documents
    # holds more than this share of the fit documents is chosen only when no epoch holds less
    # (among those, the one holding least). None: precision alone chooses.
    max_touched: float | None = None
    # Reconstruct the idf-weighted word distribution (v_i idf_i / sum_j v_j idf_j) instead of v / N:
    # frequent, uninformative words then weigh less in what the code must explain.
    idf_target: bool = False
    # Profile overrides (top-level fields) for a second, gentler fine-tuning of a code whose fine-tuning
    # under this profile did not beat its pretrained stack on validation; the better of the two (after
    # median thresholds) is kept. None: no second try.
    fallback: dict[str, Any] | None = None
    validation_fraction: float = 0.1  # share of the training documents held out for early stopping
    # Corpora with more fit documents than this train on the same number of document passes as one of
    # this size (epochs x reference / n) on batches sqrt(n / reference) times larger, so training time
    # stays about flat as the corpus grows (`scaled`). None: the schedules as written.
    reference_documents: int | None = 12_000
    precision_at: int = 100  # validation score: precision at this many retrieved documents
    # The query encoder for short text, trained last (None: the bundle has none; queries then use the
    # document encoders).
    query: QueryProfile | None = None

    def scaled(self, documents: int) -> TextProfile:
        """This profile for a corpus of `documents` fit documents (see `reference_documents`)."""
        if self.reference_documents is None or documents <= self.reference_documents:
            return self
        passes, batch = self.reference_documents / documents, math.sqrt(documents / self.reference_documents)

        def scale(schedule: Any) -> Any:
            return replace(
                schedule,
                epochs=max(1, round(schedule.epochs * passes)),
                batch_size=round(schedule.batch_size * batch),
            )

        return replace(
            self, bottom=scale(self.bottom), upper=scale(self.upper), finetune=scale(self.finetune)
        )

    def balance_weight_for(self, bits: int) -> float:
        """The weight of `balance_penalty` in the fine-tuning loss of a `bits`-wide code."""
        return self.wide_balance_weight if bits > WIDE_CODE_BITS else self.balance_weight

    def noise_std_for(self, bits: int) -> float:
        """The code noise std of a `bits`-wide code."""
        if bits > WIDE_CODE_BITS and self.wide_code_noise_std is not None:
            return self.wide_code_noise_std
        return self.noise_std


# Address balance (benchmarks/results/text_tuning.md, 20 Newsgroups validation, 20 bits): penalty
# weight 0 / 1 / 4 gave precision@100 0.409 / 0.399 / 0.400 with the radius-3 ball holding 2.75% /
# 1.89% / 1.67% of the fit documents. Epochs whose ball holds more than MAX_TOUCHED are chosen last.
BALANCE_WEIGHT = 4.0
MAX_TOUCHED = 0.02

PROFILES: dict[str, TextProfile] = {
    "tiny": TextProfile(
        vocab_size=200,
        hidden=(64,),
        bottom=CDSchedule(epochs=5, batch_size=20, learning_rate=0.005),
        upper=CDSchedule(epochs=5, batch_size=20, learning_rate=0.05),
        finetune=BackpropSchedule(epochs=4, batch_size=20, optimizer="adam", learning_rate=3e-3, patience=2),
        validation_fraction=0.2,
        precision_at=10,
    ),
    # The `full` recipe on a third of its pretraining and half its fine-tuning epochs.
    "quick": TextProfile(
        hidden=(500, 500),
        bottom=CDSchedule(epochs=30, learning_rate=0.002),
        upper=CDSchedule(epochs=20),
        finetune=BackpropSchedule(epochs=20, optimizer="adam", learning_rate=1e-3, patience=3),
        wide_code_noise_std=16.0,
        word_dropout=0.7,
        balance_weight=BALANCE_WEIGHT,
        max_touched=MAX_TOUCHED,
        query=QUERY_PROFILES["quick"],
    ),
    "full": TextProfile(
        hidden=(500, 500),
        bottom=CDSchedule(epochs=100, learning_rate=0.001),
        upper=CDSchedule(epochs=60),
        # Noise std 16 makes wide codes bimodal (0.92 at 128 bits against 0.82 with std 6) and, given up
        # to 45 epochs to converge, costs almost no precision (benchmarks/results/text_tuning.md). At
        # 16 and 20 bits it left a bit constant over the database in 2 of 3 seeds: they keep std 6.
        finetune=BackpropSchedule(epochs=45, optimizer="adam", learning_rate=1e-3, patience=4),
        wide_code_noise_std=16.0,
        word_dropout=0.7,
        balance_weight=BALANCE_WEIGHT,
        max_touched=MAX_TOUCHED,
        query=QUERY_PROFILES["full"],
    ),
}


@dataclass
class TextData:
    """Word counts of the fit and validation parts of the training documents."""

    vocabulary: list[str]
    idf: np.ndarray  # (V,)
    fit: Tensor  # (n_fit, V) float32 counts
    validation: Tensor  # (n_val, V)
    # which fit documents are relevant to each validation document (shared label); None: unlabelled
    relevance: Relevance | None
    # sha256 of the vocabulary and the exact (capped) counts: stands for the data in checkpoint keys.
    # Hashing bytes, not a float sum, so the key does not depend on the thread count.
    digest: str = ""


def prepare_data(corpus: Corpus, profile: TextProfile, seed: int) -> TextData:
    """Fit the vocabulary on the training documents, count words, drop empty ones, hold out validation."""
    vocabulary, idf = fit_vocabulary(corpus.texts, profile.vocab_size)
    counts = cap_lengths(count_matrix(corpus.texts, WordIndex(vocabulary)), profile.max_length)
    keep = np.flatnonzero(np.asarray(counts.sum(axis=1)).ravel() > 0)
    if len(keep) < len(corpus):
        log.info("skipping %d training documents with no vocabulary word", len(corpus) - len(keep))
    order = np.random.default_rng(seed).permutation(keep)
    n_val = max(1, int(round(profile.validation_fraction * len(order))))
    if len(order) - n_val < 2:
        raise ValueError(f"{corpus.source or 'corpus'}: too few non-empty documents ({len(order)}) to train")
    val_rows, fit_rows = np.sort(order[:n_val]), np.sort(order[n_val:])
    dense = torch.from_numpy(counts.toarray())
    label_sets = corpus.relevance_labels()
    relevance = (
        None
        if label_sets is None
        else Relevance.from_labels([label_sets[i] for i in val_rows], [label_sets[i] for i in fit_rows])
    )
    digest = hashlib.sha256("\n".join(vocabulary).encode())
    fit_counts = counts[fit_rows]
    for array in (fit_counts.indptr, fit_counts.indices, fit_counts.data, val_rows):
        digest.update(np.ascontiguousarray(array).tobytes())
    return TextData(vocabulary, idf, dense[fit_rows], dense[val_rows], relevance, digest.hexdigest())


def shared_layers(data: TextData, profile: TextProfile) -> list[RBM]:
    """The untrained shared RBMs V-h_1-...-h_{L-1}."""
    sizes = [len(data.vocabulary), *profile.hidden]
    rbms: list[RBM] = [ConstrainedPoissonRBM(sizes[0], sizes[1], scale_hidden_bias=profile.scale_hidden_bias)]
    rbms += [BernoulliRBM(n_in, n_out) for n_in, n_out in zip(sizes[1:-1], sizes[2:], strict=True)]
    return rbms


def pretrain_shared(
    data: TextData,
    profile: TextProfile,
    *,
    checkpoint_dir: Path | None,
    seed: int,
    progress: bool,
    deadline: float | None = None,
) -> tuple[list[RBM], str, list[list[dict[str, float]]]]:
    """Greedy CD training of the shared layers; returns (rbms, checkpoint key, per-layer histories)."""
    rbms = shared_layers(data, profile)
    schedules = [profile.bottom] + [profile.upper] * (len(rbms) - 1)
    pretraining = {
        k: asdict(profile)[k] for k in ("vocab_size", "hidden", "scale_hidden_bias", "bottom", "upper")
    }
    # the digest stands for the corpus, the vocabulary, the length cap and the validation split
    key = fingerprint({**pretraining, "seed": seed, "data": data.digest})
    histories = pretrain_stack(
        rbms,
        data.fit,
        schedules,
        checkpoint_dir=checkpoint_dir,
        key=key,
        validation=data.validation,
        generator=torch.Generator().manual_seed(seed),
        progress=progress,
        prefix="shared",
        deadline=deadline,
    )
    return rbms, key, histories


INFEASIBLE = 1e3  # added to the score of an epoch whose address ball is too crowded (max_touched)


def validation_score(model: DeepAutoencoder, data: TextData, profile: TextProfile) -> float:
    """Lower is better: -precision@K of validation queries against fit documents, else validation loss;
    plus INFEASIBLE * (1 + share touched) for an address code whose radius-3 ball is too crowded."""
    with torch.no_grad():
        validation, fit = model.codes(data.validation).numpy(), model.codes(data.fit).numpy()
        if data.relevance is None:
            score = float(model.reconstruction_loss(data.validation))
        else:
            k = min(profile.precision_at, data.fit.shape[0])
            score = -float(hamming_relevant_at(validation, fit, data.relevance, [k]).mean() / k)
    if profile.max_touched is not None and model.code_bits <= WIDE_CODE_BITS:
        touched = query_ball_fraction(validation, fit, radius=3)
        log.info("%d-bit validation score %.4f, radius-3 ball %.2f%%", model.code_bits, score, 100 * touched)
        if touched > profile.max_touched:
            score += INFEASIBLE * (1 + touched)
    return score


def median_threshold(
    model: DeepAutoencoder, data: TextData, profile: TextProfile, score: float
) -> tuple[float, bool]:
    """Move each code unit's threshold to its median over the fit documents (bit = z > median), by
    shifting the code layer's bias, when that improves the validation score; returns (score, moved).

    Every bit is then on for half the documents: no dead bits, and addresses crowd less. It matters
    most when fine-tuning did not make the activations bimodal (then z > 0 splits them unevenly).
    """
    bias = model.encoder_biases[-1]
    with torch.no_grad():
        median = model.code_input(data.fit).median(dim=0).values
        original = bias.detach().clone()
        bias -= median
    moved = validation_score(model, data, profile)
    log.info(
        "%d-bit code, median thresholds: validation score %.4f (zero: %.4f)", model.code_bits, moved, score
    )
    if moved < score:
        return moved, True
    with torch.no_grad():
        bias.copy_(original)
    return score, False


def balance_penalty(y: Tensor) -> Tensor:
    """Address balance of (B, bits) code activations y, a scalar in [0, 2]:

        4 mean_j (mean_b y_bj - 1/2)^2  +  mean_{j != k} corr_b(y_j, y_k)^2

    (each bit on for half the documents; bits uncorrelated, so that the 2^bits addresses are used
    evenly instead of the documents crowding into a few).
    """
    bits = y.shape[1]
    mean = y.mean(dim=0)
    centred = y - mean
    cov = centred.T @ centred / y.shape[0]  # (bits, bits)
    std = cov.diagonal().clamp_min(1e-6).sqrt()
    corr = cov / (std[:, None] * std[None, :])
    off_diagonal = corr - torch.diag(corr.diagonal())
    return 4 * ((mean - 0.5) ** 2).mean() + (off_diagonal**2).sum() / max(1, bits * (bits - 1))


def train_code_encoder(
    shared: Sequence[RBM],
    bits: int,
    data: TextData,
    profile: TextProfile,
    *,
    checkpoint_dir: Path | None,
    key: str,
    seed: int,
    progress: bool,
    name: str,
    deadline: float | None = None,
) -> tuple[DeepAutoencoder, dict[str, Any]]:
    """Pretrain a `bits`-unit code RBM on top of `shared`, unroll, fine-tune; returns (model, report)."""
    if profile.noise not in NOISE_MODES:
        raise ValueError(f"noise must be one of {NOISE_MODES}, got {profile.noise!r}")
    generator = torch.Generator().manual_seed(seed + bits)
    top = BernoulliRBM(shared[-1].n_hidden, bits)
    top_history = train_or_resume(
        top,
        f"{name}_code{bits}",
        data.fit,
        profile.upper,
        below=shared,
        checkpoint_dir=checkpoint_dir,
        key=f"{key}-code{bits}",
        validation=data.validation,
        generator=generator,
        progress=progress,
        deadline=deadline,
    )
    model = DeepAutoencoder.from_rbms([*shared, top])
    pretrained_score = validation_score(model, data, profile)
    pretrained_state = {k: v.clone() for k, v in model.state_dict().items()}
    log.info("%s: %d-bit pretrained stack, validation score %.4f", name, bits, pretrained_score)
    history, best_epoch = fine_tune_code(
        model, data, profile, generator=generator, name=name, progress=progress, deadline=deadline
    )
    best_score = min(record["validation"] for record in history)
    if pretrained_score <= best_score:  # the un-fine-tuned stack wins: epoch 0
        model.load_state_dict(pretrained_state)
        best_epoch, best_score = 0, pretrained_score
    thresholded_score, median_thresholds = median_threshold(model, data, profile, best_score)
    fallback: dict[str, Any] | None = None
    if best_epoch == 0 and profile.fallback:
        # the profile's fine-tuning lost to the pretrained stack: try the gentler one from that stack
        chosen = {k: v.clone() for k, v in model.state_dict().items()}
        model.load_state_dict(pretrained_state)
        gentle = replace(profile, **profile.fallback)
        gentle_history, gentle_epoch = fine_tune_code(
            model,
            data,
            gentle,
            generator=generator,
            name=f"{name} fallback",
            progress=progress,
            deadline=deadline,
        )
        gentle_best = min(record["validation"] for record in gentle_history)
        gentle_thresholded, gentle_median = median_threshold(model, data, gentle, gentle_best)
        fallback = {
            "overrides": profile.fallback,
            "selected_epoch": gentle_epoch,
            "validation_score": gentle_best,
            "thresholded_validation_score": gentle_thresholded,
            "fine_tune": gentle_history,
            "chosen": gentle_thresholded < thresholded_score,
        }
        log.info(
            "%s: %d-bit fallback fine-tuning scores %.4f against the pretrained stack's %.4f",
            name,
            bits,
            gentle_thresholded,
            thresholded_score,
        )
        if fallback["chosen"]:
            best_epoch, best_score = gentle_epoch, gentle_best
            thresholded_score, median_thresholds = gentle_thresholded, gentle_median
        else:
            model.load_state_dict(chosen)
    report = {
        "bits": bits,
        "selected_epoch": best_epoch,
        "validation_score": best_score,
        "validation_metric": "neg_precision" if data.relevance is not None else "reconstruction_loss",
        "pretrained_validation_score": pretrained_score,
        "median_thresholds": median_thresholds,
        "thresholded_validation_score": thresholded_score,
        "code_rbm": top_history,
        "fine_tune": history,
        "fallback": fallback,
    }
    return model, report


def fine_tune_code(
    model: DeepAutoencoder,
    data: TextData,
    profile: TextProfile,
    *,
    generator: torch.Generator,
    name: str,
    progress: bool,
    deadline: float | None,
) -> tuple[list[dict[str, float]], int]:
    """Fine-tune the unrolled stack with noisy code units (step 4); the model ends on its best epoch
    by validation. Returns (history, best epoch)."""
    bits = model.code_bits
    noise_std = profile.noise_std_for(bits)
    fixed_noise = torch.randn(data.fit.shape[0], bits, generator=generator) * noise_std
    idf = torch.from_numpy(data.idf.astype(np.float32))
    balance_weight = profile.balance_weight_for(bits)
    warmup_steps = profile.noise_warmup_epochs * math.ceil(data.fit.shape[0] / profile.finetune.batch_size)
    steps = [0]  # minibatches seen, for the noise warm-up

    def loss_fn(net: DeepAutoencoder, counts: Tensor, noise: Tensor | None) -> Tensor:
        ramp = min(1.0, steps[0] / warmup_steps) if warmup_steps > 0 else 1.0
        steps[0] += 1
        if noise is None:  # fresh noise for this minibatch
            noise = torch.randn(counts.shape[0], bits, generator=generator) * noise_std
        noise = noise * ramp
        inputs = counts
        if profile.word_dropout > 0:
            inputs = counts * (torch.rand(counts.shape, generator=generator) >= profile.word_dropout)
        target = counts * idf if profile.idf_target else counts
        y = net.encode(inputs, noise)
        log_p = net.decode_log_probs(y)
        loss = -((target / target.sum(dim=1, keepdim=True).clamp_min(1e-6)) * log_p).sum(dim=1).mean()
        if balance_weight > 0:
            loss = loss + balance_weight * balance_penalty(y)
        return loss

    return fine_tune(
        model,
        loss_fn,  # type: ignore[arg-type]
        data.fit,
        fixed_noise if profile.noise == "fixed" else None,
        profile.finetune,
        validate=lambda: validation_score(model, data, profile),
        generator=generator,
        description=f"{name} {bits}-bit fine-tune",
        progress=progress,
        deadline=deadline,
    )


def encoder_weights(model: DeepAutoencoder, code: str) -> dict[str, np.ndarray]:
    """The encoder's parameters as numpy arrays named as in a text bundle."""
    arrays = {}
    for layer, (w, b) in enumerate(zip(model.encoder_weights, model.encoder_biases, strict=True)):
        weight, bias = encoder_layer_names(code, layer)
        arrays[weight] = w.detach().cpu().numpy()
        arrays[bias] = b.detach().cpu().numpy()
    return arrays


def train_text_bundle(
    documents: Corpus | Sequence[str],
    out_dir: Path | str,
    *,
    profile: str | TextProfile = "tiny",
    address_bits: int = 20,
    long_bits: int = 128,
    seed: int = 0,
    noise: str | None = None,
    name: str | None = None,
    progress: bool = False,
    max_minutes: float | None = None,
) -> TextBundle:
    """Train the address and long encoders on `documents` and write the bundle to `out_dir`.

    `documents`: a `Corpus` (labels, when present, choose the fine-tuning epoch) or plain texts.
    `profile`: "tiny" (a few hundred short documents in seconds, for tests), "quick", "full", or a
    `TextProfile`. `noise` overrides the profile's noise mode ("fixed" or "fresh"). `name` (default
    "text") prefixes the bundle id. `max_minutes`: a time budget split over the phases by
    PHASE_SHARES (a phase that ends early leaves its time to the next); each phase stops after the
    epoch that crosses its share and keeps its best weights, so the bundle is written about on time.
    """
    check_code_sizes(address_bits, long_bits)
    corpus = (
        documents
        if isinstance(documents, Corpus)
        else Corpus([str(i) for i in range(len(documents))], list(documents))
    )
    settings = PROFILES[profile] if isinstance(profile, str) else profile
    if noise is not None:
        settings = replace(settings, noise=noise)
    out = Path(out_dir)
    started, clock_start = time.perf_counter(), time.monotonic()

    def deadline(phase: str) -> float | None:
        if max_minutes is None:
            return None
        share = sum(PHASE_SHARES[: PHASE_NAMES.index(phase) + 1])
        return clock_start + 60 * max_minutes * share

    set_seed(seed)
    data = prepare_data(corpus, settings, seed)
    settings = settings.scaled(data.fit.shape[0])
    checkpoints = out / "checkpoints"
    shared, key, shared_history = pretrain_shared(
        data, settings, checkpoint_dir=checkpoints, seed=seed, progress=progress, deadline=deadline("shared")
    )
    weights: dict[str, np.ndarray] = {}
    reports: dict[str, Any] = {}
    encoders: dict[str, list[int]] = {}
    for code, bits in (("address", address_bits), ("long", long_bits)):
        model, reports[code] = train_code_encoder(
            shared,
            bits,
            data,
            settings,
            checkpoint_dir=checkpoints,
            key=key,
            seed=seed,
            progress=progress,
            name=code,
            deadline=deadline(code),
        )
        weights |= encoder_weights(model, code)
        encoders[code] = model.layer_sizes
    seconds = time.perf_counter() - started
    config = {
        "name": name or "text",
        "vocab_size": len(data.vocabulary),
        "address_bits": address_bits,
        "long_bits": long_bits,
        "encoders": encoders,
        "scale_input_bias": settings.scale_hidden_bias,
        "max_document_length": settings.max_length,
        "architecture": f"{'-'.join(map(str, [len(data.vocabulary), *settings.hidden]))}-{{bits}}",
        "training": {"profile": profile if isinstance(profile, str) else "custom", **asdict(settings)},
        "corpus": {
            "source": corpus.source,
            "documents": len(corpus),
            "validation": int(data.validation.shape[0]),
        },
        "seed": seed,
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
    }
    histories = [*shared_history] + [reports[c][k] for c in reports for k in ("code_rbm", "fine_tune")]
    histories += [reports[c]["fallback"]["fine_tune"] for c in reports if reports[c]["fallback"]]
    metrics = {
        "train_seconds": seconds,
        # seconds of every epoch behind the bundle, including layers resumed from checkpoints
        "compute_seconds": sum(record.get("seconds", 0.0) for history in histories for record in history),
        "max_minutes": max_minutes,
        "shared_pretraining": shared_history,
        **reports,
    }
    log.info("trained text bundle in %.1f s -> %s", seconds, out)
    bundle = write_text_bundle(out, config, data.vocabulary, data.idf, weights, metrics)
    if settings.query is None:
        return bundle
    return train_query_encoder(
        bundle,
        corpus,
        scaled_profile(settings.query, len(corpus)),
        seed=seed,
        checkpoint_dir=checkpoints,
        progress=progress,
        deadline=deadline("query"),
    )
