"""`train_sparse`: PSD, then LISTA, then the search codes (address; signature size chosen on validation,
training/sparse_signature.py), written as a `sparse` bundle.

The stages and their checkpoints are in training/sparse.py; the bundle layout and its numpy
inference in bundles/sparse.py.
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from bundles.io import write_bundle
from bundles.sparse import (
    ADDRESS_MEAN,
    ADDRESS_ROTATION,
    ADDRESS_THRESHOLDS,
    DICTIONARY,
    LISTA_ENCODER,
    LISTA_INHIBITION,
    LISTA_THRESHOLD,
    PSD_ENCODER,
    PSD_THRESHOLD,
    SPARSE_FORMAT_VERSION,
)
from models.sparse_coding import LISTA, PSD, lipschitz_constant
from training.images import fit_binary_code
from training.mnist import MnistSplits
from training.seed import set_seed
from training.sparse import (
    SparseConfig,
    batched,
    load_checkpoint,
    optimal_codes,
    save_checkpoint,
    train_lista,
    train_psd,
    training_inputs,
)
from training.sparse_signature import choose_signature_atoms
from training.stack import fingerprint, resolve_device

log = logging.getLogger(__name__)


def _init_dictionary(model: PSD, x: Tensor, generator: torch.Generator) -> None:
    """Atoms start as distinct random training inputs: digit-shaped, so PSD starts near the data."""
    with torch.no_grad():
        picks = torch.randperm(len(x), generator=generator)[: model.n_atoms]
        atoms = x[picks].T.clone()  # (n, m)
        if atoms.shape[1] < model.n_atoms:  # fewer inputs than atoms (tiny data): pad with noise
            extra = torch.rand(atoms.shape[0], model.n_atoms - atoms.shape[1], generator=generator)
            atoms = torch.cat([atoms, extra.to(atoms)], dim=1)
        model.dictionary.copy_(atoms + 0.01 * torch.rand(atoms.shape, generator=generator).to(atoms))
        model.normalize_dictionary()


def _targets(
    x: Tensor, xv: Tensor, model: PSD, config: SparseConfig, checkpoint: Path, key: str
) -> tuple[Tensor, Tensor]:
    """FISTA's optimal codes of the LISTA training inputs and the validation inputs (cached)."""
    saved = load_checkpoint(checkpoint, key)
    if saved is not None:
        return saved["train"].to(x.device), saved["validation"].to(x.device)
    started = time.perf_counter()
    args = (model.dictionary.detach(), config.lam, config.lista.target_iterations, config.nonnegative)
    train, validation = optimal_codes(x, *args), optimal_codes(xv, *args)
    log.info("optimal codes of %d + %d inputs in %.0f s", len(x), len(xv), time.perf_counter() - started)
    save_checkpoint(checkpoint, {"key": key, "train": train.cpu(), "validation": validation.cpu()})
    return train, validation


def train_sparse(
    config: SparseConfig, data: MnistSplits, out: Path, *, progress: bool = True
) -> dict[str, Any]:
    """Train PSD and LISTA on `data`; write the bundle to `out`; return its metrics."""
    started = time.perf_counter()
    set_seed(config.seed)
    generator = torch.Generator().manual_seed(config.seed)
    device = resolve_device(config.device)
    x_np, xv_np = training_inputs(config, data)
    x, xv = torch.from_numpy(x_np).to(device), torch.from_numpy(xv_np).to(device)
    n_inputs = x.shape[1]
    settings = {
        k: v for k, v in asdict(config).items() if k not in ("device", "fista_iterations", "address_bits")
    }
    checkpoints = out / "checkpoints"

    model = PSD(n_inputs, config.n_atoms, lam=config.lam, alpha=config.alpha, nonnegative=config.nonnegative)
    model.to(device)
    _init_dictionary(model, x, generator)
    model.init_encoder()
    psd_key = fingerprint({**settings, "lista": None, "stage": "psd"})
    psd_history = train_psd(
        model,
        x,
        xv,
        config.psd,
        checkpoint=checkpoints / "psd.pt",
        key=psd_key,
        generator=generator,
        progress=progress,
    )
    dictionary = model.dictionary.detach()
    lipschitz = lipschitz_constant(dictionary)

    lista_x = x[: config.lista.n_train]
    # The targets depend on the dictionary and on which inputs and iterations define them, not on how
    # LISTA is then trained: a retuned LISTA schedule reuses them.
    target_key = fingerprint(
        {
            **settings,
            "lista": {k: settings["lista"][k] for k in ("n_train", "target_iterations")},
            "stage": "targets",
        }
    )
    target, target_v = _targets(lista_x, xv, model, config, checkpoints / "targets.pt", target_key)
    net = LISTA(
        n_inputs,
        config.n_atoms,
        config.lista.steps,
        nonnegative=config.nonnegative,
        untied=config.lista.untied,
    ).to(device)
    net.init_from_dictionary(dictionary, config.lam, lipschitz)
    lista_history = train_lista(
        net,
        lista_x,
        target,
        xv,
        target_v,
        config.lista,
        dictionary=dictionary,
        lam=config.lam,
        checkpoint=checkpoints / "lista.pt",
        key=fingerprint({**settings, "stage": "lista"}),
        generator=generator,
        progress=progress,
    )

    with torch.no_grad():
        codes = batched(net, x).cpu().numpy()
        lista_v = batched(net, xv)
        recon_v = float(((xv - lista_v @ dictionary.T) ** 2).sum(1).mean())
        optimal_recon_v = float(((xv - target_v @ dictionary.T) ** 2).sum(1).mean())
    address = fit_binary_code(codes, n_bits=config.address_bits, seed=config.seed)
    # Whole images have labels: the signature's size is chosen on the validation images. Patches
    # (not servable by the images routes) keep every active atom.
    signature = (
        choose_signature_atoms(
            codes, data.train_y[: len(codes)], lista_v.cpu().numpy(), data.valid_y[: len(xv)]
        )
        if config.patch_size is None
        else {"signature_atoms": None}
    )
    seconds = time.perf_counter() - started
    metrics = {
        "validation": {
            "lista_code_error": min(r["validation_code_error"] for r in lista_history),
            "lista_reconstruction_error": recon_v,
            "lista_active_atoms": float((lista_v != 0).sum(1).float().mean()),
            "optimal_reconstruction_error": optimal_recon_v,
            "optimal_active_atoms": float((target_v != 0).sum(1).float().mean()),
        },
        "signature": signature,
        "train_seconds": seconds,
        "device": device.type,
        "history": {"psd": psd_history, "lista": lista_history},
    }
    side = int(math.isqrt(n_inputs))
    config_json = {
        "format_version": SPARSE_FORMAT_VERSION,
        "kind": "sparse",
        "architecture": {
            "input_shape": [side, side],
            "n_atoms": config.n_atoms,
            "lam": config.lam,
            "nonnegative": config.nonnegative,
            "lipschitz": lipschitz,
            "lista_steps": config.lista.steps,
            "lista_untied": net.untied,
            "fista_iterations": config.fista_iterations,
            "address_bits": config.address_bits,
            "signature_atoms": signature["signature_atoms"],
            "signature": "one bit per atom, set for the signature_atoms active atoms of largest magnitude "
            "in the LISTA code (null: every active atom)",
            "address": "PCA + ITQ rotation of the LISTA code, median thresholds",
        },
        "seed": config.seed,
        "training": asdict(config),
        "data": {"n_train": len(x), "n_validation": len(xv), "lista_n_train": len(lista_x)},
    }

    def arr(t: Tensor) -> np.ndarray:
        return t.detach().cpu().numpy().astype(np.float32)

    assert net.S is not None or net.steps == 1
    weights = {
        DICTIONARY: arr(dictionary),
        LISTA_ENCODER: arr(net.W_e),
        LISTA_INHIBITION: arr(net.S) if net.S is not None else np.zeros((config.n_atoms,) * 2, np.float32),
        LISTA_THRESHOLD: arr(net.theta),
        PSD_ENCODER: arr(model.encoder.W_e),
        PSD_THRESHOLD: arr(model.encoder.theta),
        ADDRESS_MEAN: address["code_mean"],
        ADDRESS_ROTATION: address["code_rotation"],
        ADDRESS_THRESHOLDS: address["code_thresholds"],
    }
    write_bundle(out, config_json, weights, metrics)
    log.info("sparse bundle written to %s in %.0f s (validation %s)", out, seconds, metrics["validation"])
    return metrics
