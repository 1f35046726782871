"""Training of a text bundle's query encoder by distillation from its document encoders.

1. The training documents are split: a held-out part (`validation_fraction`, seeded) for early
   stopping and measurement, the rest ("fit") to learn from. The query vocabulary (the `vocab_size`
   words of highest document frequency) is fitted on the fit documents only.
2. Targets: the document encoders' code probabilities t(d) = sigmoid(z(d)) for each whole document.
3. Every epoch draws `samples_per_document` fresh short samples of each fit document (word subsets,
   sentences, subject lines: `training.query_samples`) and minimises the BCE against t(d) with Adam.
4. After every epoch the BCE on fixed samples of the held-out documents is measured; the best epoch
   is kept and training stops after `patience` epochs without improvement, at `epochs`, or at the
   deadline. A checkpoint after every epoch lets an interrupted run resume where it stopped.
5. Measured on the held-out documents (`training.query_eval`): precision@10 of their subject lines
   against the fit documents with both encoders, and the query length (in document-vocabulary
   tokens) below which the query encoder ranks better: `short_query_max_tokens`.
"""

from __future__ import annotations

import logging
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import scipy.sparse as sp
import torch
from tqdm.auto import tqdm

from bundles.query import QueryEncoder, layer_weights, query_features, write_query_encoder
from bundles.text import TextBundle
from bundles.text_features import WordIndex
from models.query_encoder import QueryEncoderNet
from training.corpus import Corpus
from training.query_samples import SampleMix, ShortSampler, document_words, fit_query_vocabulary
from training.stack import fingerprint

log = logging.getLogger(__name__)

CHECKPOINT = "query_encoder.pt"


@dataclass
class QueryProfile:
    """Everything that defines a query encoder training apart from the data and the seed."""

    vocab_size: int = 20_000  # input words: the most frequent by document frequency
    hidden: tuple[int, ...] = (512,)
    samples_per_document: int = 4  # fresh short samples of each fit document per epoch
    epochs: int = 30
    batch_size: int = 256
    learning_rate: float = 1e-3
    patience: int = 3
    validation_fraction: float = 0.1
    address_weight: float = 1.0  # weight of the address units' BCE against the long units'
    mix: SampleMix = field(default_factory=SampleMix)


QUERY_PROFILES: dict[str, QueryProfile] = {
    "tiny": QueryProfile(
        vocab_size=500,
        hidden=(32,),
        samples_per_document=4,
        epochs=8,
        batch_size=32,
        learning_rate=3e-3,
        validation_fraction=0.2,
    ),
    "quick": QueryProfile(epochs=12),
    "full": QueryProfile(epochs=40, patience=4),
}


def validation_rows(n: int, fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(held-out rows, fit rows) of n documents, sorted: a seeded random `fraction` is held out."""
    order = np.random.default_rng(seed).permutation(n)
    held = max(1, int(round(fraction * n)))
    if n - held < 2:
        raise ValueError(f"too few documents ({n}) to train a query encoder")
    return np.sort(order[:held]), np.sort(order[held:])


def teacher_probabilities(bundle: TextBundle, texts: list[str]) -> tuple[np.ndarray, np.ndarray]:
    """(targets (n, a + l) float32, encodable (n,) bool): the document encoders' code probabilities."""
    counts = bundle.counts(texts)
    targets = np.concatenate(
        [bundle.code_activations("address", counts), bundle.code_activations("long", counts)], axis=1
    )
    return targets.astype(np.float32), np.asarray(counts.sum(axis=1)).ravel() > 0


def _batch(features: sp.csr_matrix) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """EmbeddingBag inputs (indices, offsets, values) of CSR feature rows."""
    return (
        torch.from_numpy(features.indices.astype(np.int64)),
        torch.from_numpy(features.indptr[:-1].astype(np.int64)),
        torch.from_numpy(features.data.astype(np.float32)),
    )


def mean_loss(net: QueryEncoderNet, features: sp.csr_matrix, targets: np.ndarray, weight: float) -> float:
    """BCE of `net` on fixed features, over batches of 1024."""
    total = 0.0
    with torch.no_grad():
        for start in range(0, features.shape[0], 1024):
            rows = slice(start, start + 1024)
            logits = net(*_batch(features[rows]))
            n = logits.shape[0]
            total += float(net.loss(logits, torch.from_numpy(targets[rows]), weight)) * n
    return total / max(1, int(features.shape[0]))


def train_query_encoder(
    bundle: TextBundle,
    corpus: Corpus,
    profile: str | QueryProfile = "quick",
    *,
    seed: int = 0,
    checkpoint_dir: Path | None = None,
    progress: bool = False,
    deadline: float | None = None,
) -> TextBundle:
    """Train a query encoder for `bundle` on `corpus` (its training documents), add it to the bundle
    directory and return the bundle reloaded. `deadline`: time.monotonic() after which training stops
    at the end of the epoch (keeping the best one)."""
    from training.query_eval import measure_query_encoder  # evaluation after training

    settings = QUERY_PROFILES[profile] if isinstance(profile, str) else profile
    started = time.perf_counter()
    texts = list(corpus.texts)
    targets, encodable = teacher_probabilities(bundle, texts)
    held, fit = validation_rows(len(texts), settings.validation_fraction, seed)
    vocabulary, idf = fit_query_vocabulary([texts[i] for i in fit], settings.vocab_size)
    index = WordIndex(vocabulary)
    words = document_words(texts, index, idf, settings.mix.min_words)
    usable = encodable & np.array([len(c) > 0 for c in words.columns])
    held, fit = held[usable[held]], fit[usable[fit]]
    sampler = ShortSampler(words, len(vocabulary), settings.mix)
    log.info(
        "query encoder: %d fit, %d held-out documents, %d input words", len(fit), len(held), len(vocabulary)
    )

    # fixed validation samples: two per held-out document
    check_rows = np.concatenate([held, held])
    check_counts, _ = sampler.sample(check_rows, np.random.default_rng(seed + 1))
    check_features, check_targets = query_features(check_counts, idf), targets[check_rows]

    layers = [len(vocabulary), *settings.hidden, bundle.address_bits + bundle.long_bits]
    torch.manual_seed(seed)
    net = QueryEncoderNet(layers, bundle.address_bits)
    net.init_output_bias(torch.from_numpy(targets[fit].mean(axis=0)))
    optimizer = torch.optim.Adam(net.parameters(), lr=settings.learning_rate)
    rng = np.random.default_rng(seed + 2)
    key = fingerprint({**asdict(settings), "seed": seed, "bundle": bundle.fingerprint, "fit": fit.tolist()})
    state: dict[str, Any] = {
        "epoch": 0,
        "history": [],
        "best": None,
        "best_loss": mean_loss(net, check_features, check_targets, settings.address_weight),
    }
    state["history"].append({"epoch": 0, "validation_loss": state["best_loss"], "seconds": 0.0})
    state["best"] = {k: v.clone() for k, v in net.state_dict().items()}
    checkpoint = None if checkpoint_dir is None else Path(checkpoint_dir) / CHECKPOINT
    if checkpoint is not None and checkpoint.exists():
        saved = torch.load(checkpoint, weights_only=False)
        if saved.get("key") == key:
            net.load_state_dict(saved["model"])
            optimizer.load_state_dict(saved["optimizer"])
            rng.bit_generator.state = saved["rng"]
            state = saved["state"]
            log.info("query encoder: resuming after epoch %d", state["epoch"])
    best_epoch = min(state["history"], key=lambda r: r["validation_loss"])["epoch"]
    while state["epoch"] < settings.epochs and state["epoch"] - best_epoch < settings.patience:
        if deadline is not None and time.monotonic() > deadline and state["epoch"] > 0:
            log.info("query encoder: time budget spent after epoch %d", state["epoch"])
            break
        epoch_start = time.perf_counter()
        rows = rng.permutation(np.repeat(fit, settings.samples_per_document))
        train_loss, batches = 0.0, range(0, len(rows), settings.batch_size)
        for start in tqdm(batches, desc=f"query encoder epoch {state['epoch'] + 1}", disable=not progress):
            chunk = rows[start : start + settings.batch_size]
            counts, _ = sampler.sample(chunk, rng)
            logits = net(*_batch(query_features(counts, idf)))
            loss = net.loss(logits, torch.from_numpy(targets[chunk]), settings.address_weight)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            train_loss += float(loss.detach()) * len(chunk)
        state["epoch"] += 1
        validation = mean_loss(net, check_features, check_targets, settings.address_weight)
        record = {
            "epoch": state["epoch"],
            "train_loss": train_loss / len(rows),
            "validation_loss": validation,
            "seconds": time.perf_counter() - epoch_start,
        }
        state["history"].append(record)
        if validation < state["best_loss"]:
            state["best_loss"], best_epoch = validation, state["epoch"]
            state["best"] = {k: v.clone() for k, v in net.state_dict().items()}
        log.info(
            "query encoder epoch %d: train %.4f, validation %.4f (best epoch %d)",
            state["epoch"],
            record["train_loss"],
            validation,
            best_epoch,
        )
        if checkpoint is not None:
            checkpoint.parent.mkdir(parents=True, exist_ok=True)
            saved = {
                "key": key,
                "model": net.state_dict(),
                "optimizer": optimizer.state_dict(),
                "rng": rng.bit_generator.state,
                "state": state,
            }
            torch.save(saved, checkpoint.with_suffix(".tmp"))
            checkpoint.with_suffix(".tmp").replace(checkpoint)
    net.load_state_dict(state["best"])
    weights = layer_weights(net.numpy_layers())
    config: dict[str, Any] = {
        "vocab_size": len(vocabulary),
        "layers": layers,
        "address_bits": bundle.address_bits,
        "long_bits": bundle.long_bits,
        "input": "l2(ln(1+counts)*idf)",
        "short_query_max_tokens": 0,  # measured below
        "training": {**asdict(settings), "seed": seed, "held_out_documents": len(held)},
    }
    metrics: dict[str, Any] = {
        "selected_epoch": best_epoch,
        "validation_loss": state["best_loss"],
        "history": state["history"],
        "train_seconds": time.perf_counter() - started,
    }
    encoder = QueryEncoder(config, vocabulary, idf, weights)  # the numpy encoder the service will use
    measured = measure_query_encoder(bundle, encoder, corpus, held, fit)
    config["short_query_max_tokens"] = measured.pop("short_query_max_tokens")
    metrics |= measured
    write_query_encoder(bundle.path, config, vocabulary, idf, weights, metrics)
    log.info("query encoder written to %s (epoch %d, %s)", bundle.path, best_epoch, measured)
    return TextBundle.load(bundle.path)


def scaled_profile(profile: QueryProfile, documents: int, reference: int = 12_000) -> QueryProfile:
    """Fewer samples per document for corpora larger than `reference`, so an epoch costs about the same."""
    if documents <= reference:
        return profile
    return replace(
        profile, samples_per_document=max(1, round(profile.samples_per_document * reference / documents))
    )
