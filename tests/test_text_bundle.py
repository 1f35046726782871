"""Text bundles: a tiny real training, save/load round trip, deterministic codes, refusal of bad bundles."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from bundles.text import BundleError, EmptyDocumentError, TextBundle
from bundles.text_features import cap_lengths
from models.autoencoder import DeepAutoencoder
from training.corpus import synthetic_topic_corpus
from training.text_train import train_text_bundle

ADDRESS_BITS, LONG_BITS = 8, 16


@pytest.fixture(scope="module")
def bundle(tmp_path_factory: pytest.TempPathFactory) -> TextBundle:
    out = tmp_path_factory.mktemp("text") / "news"
    return train_text_bundle(
        synthetic_topic_corpus(300), out, profile="tiny", address_bits=ADDRESS_BITS, long_bits=LONG_BITS
    )


@pytest.fixture()
def copy(bundle: TextBundle, tmp_path: Path) -> Path:
    target = tmp_path / "copy"
    shutil.copytree(bundle.path, target, ignore=shutil.ignore_patterns("checkpoints"))
    return target


def test_round_trip(bundle: TextBundle) -> None:
    loaded = TextBundle.load(bundle.path, expected_vocab_size=len(bundle.vocabulary))
    assert loaded.vocabulary == bundle.vocabulary and loaded.fingerprint == bundle.fingerprint
    assert loaded.bundle_id == f"text-{bundle.fingerprint[:12]}"
    assert (loaded.address_bits, loaded.long_bits) == (ADDRESS_BITS, LONG_BITS)
    assert loaded.config["kind"] == "text" and loaded.config["format_version"] == 2
    assert {"address", "long", "train_seconds"} <= set(loaded.metrics)
    np.testing.assert_array_equal(loaded.idf, bundle.idf)


def test_tiny_training_learns_the_topics(bundle: TextBundle) -> None:
    """Chance precision is 0.25 (4 topics): the selected encoders must do far better on validation."""
    for code in ("address", "long"):
        assert -bundle.metrics[code]["validation_score"] > 0.8


def test_codes_are_deterministic_and_match_torch(bundle: TextBundle) -> None:
    texts = synthetic_topic_corpus(20, seed=7).texts
    first, again = bundle.encode(texts), TextBundle.load(bundle.path).encode(texts)
    np.testing.assert_array_equal(first.addresses, again.addresses)
    np.testing.assert_array_equal(first.long_codes, again.long_codes)
    assert first.addresses.dtype == np.uint64 and first.long_codes.shape == (20, LONG_BITS // 8)
    counts = bundle.counts(texts)
    for code in ("address", "long"):
        sizes = bundle.config["encoders"][code]
        model = DeepAutoencoder(sizes, scale_input_bias=bundle.scale_input_bias)
        with torch.no_grad():
            for layer in range(len(sizes) - 1):
                model.encoder_weights[layer].copy_(
                    torch.from_numpy(bundle.weights[f"{code}.encoder.{layer}.weight"])
                )
                model.encoder_biases[layer].copy_(
                    torch.from_numpy(bundle.weights[f"{code}.encoder.{layer}.bias"])
                )
        capped = torch.from_numpy(cap_lengths(counts, bundle.max_document_length).toarray())
        np.testing.assert_array_equal(bundle.code_bits(code, counts), model.codes(capped).numpy())


def test_address_bit_order_and_packing(bundle: TextBundle) -> None:
    texts = synthetic_topic_corpus(10, seed=8).texts
    codes, counts = bundle.encode(texts), bundle.counts(texts)
    bits = bundle.code_bits("address", counts)
    expected = [int("".join("1" if b else "0" for b in row), 2) for row in bits]  # bit 0 = MSB
    assert codes.addresses.tolist() == expected
    np.testing.assert_array_equal(
        np.unpackbits(codes.long_codes, axis=1).astype(bool), bundle.code_bits("long", counts)
    )


def test_empty_documents_are_refused(bundle: TextBundle) -> None:
    good = synthetic_topic_corpus(1).texts[0]
    with pytest.raises(EmptyDocumentError) as caught:
        bundle.encode(["", good, "only unknown wordz here", "  ?! "])
    assert caught.value.indices == [0, 2, 3]
    with pytest.raises(EmptyDocumentError):
        bundle.encode_counts(np.zeros((1, len(bundle.vocabulary))))
    with pytest.raises(ValueError, match="columns"):
        bundle.encode_counts(np.ones((1, 3)))


def test_tfidf_from_texts_or_counts(bundle: TextBundle) -> None:
    texts = synthetic_topic_corpus(5, seed=9).texts
    from_texts, from_counts = bundle.tfidf(texts), bundle.tfidf(bundle.counts(texts))
    np.testing.assert_allclose(from_texts.toarray(), from_counts.toarray())
    np.testing.assert_allclose(np.linalg.norm(from_texts.toarray(), axis=1), 1.0, rtol=1e-5)


def edit_json(path: Path, **changes: object) -> None:
    document = json.loads(path.read_text())
    document.update(changes)
    path.write_text(json.dumps(document))


def test_mismatched_expectations_are_refused(copy: Path, bundle: TextBundle) -> None:
    with pytest.raises(BundleError, match=r"copy.*vocab_size=\d+, expected 5"):
        TextBundle.load(copy, expected_vocab_size=5)
    with pytest.raises(BundleError, match="address_bits=8, expected 20"):
        TextBundle.load(copy, expected_address_bits=20)
    with pytest.raises(BundleError, match="long_bits=16, expected 128"):
        TextBundle.load(copy, expected_long_bits=128)


@pytest.mark.parametrize(
    ("damage", "message"),
    [
        (lambda p: edit_json(p / "config.json", format_version=3), "format_version 3; this code reads 1 or"),
        (lambda p: edit_json(p / "config.json", kind="digits"), "'digits' bundle, not 'text'"),
        (lambda p: edit_json(p / "config.json", vocab_size=3), "config says vocab_size=3"),
        (lambda p: edit_json(p / "config.json", long_bits=12), "multiple of 8"),
        (lambda p: edit_json(p / "config.json", address_bits=40), "address_bits must be in"),
        (lambda p: edit_json(p / "config.json", max_document_length=-1), "max_document_length"),
        (lambda p: (p / "config.json").write_text("{broken"), "config.json is not valid JSON"),
        (lambda p: (p / "weights.safetensors").unlink(), "weights.safetensors is missing"),
        (lambda p: (p / "weights.safetensors").write_bytes(b"\x00" * 64), "weights.safetensors is corrupt"),
        (lambda p: (p / "vocabulary.json").unlink(), "vocabulary.json is missing"),
        (lambda p: (p / "vocabulary.json").write_text("[]"), "vocabulary.json is corrupt"),
        (lambda p: edit_json(p / "vocabulary.json", idf=[1.0]), "'idf' must be"),
    ],
)
def test_corrupt_bundles_are_refused(copy: Path, damage, message: str) -> None:  # noqa: ANN001
    damage(copy)
    with pytest.raises(BundleError, match=message) as caught:
        TextBundle.load(copy)
    assert "copy" in str(caught.value)  # the message names the bundle


def test_weights_that_do_not_match_the_config_are_refused(copy: Path, bundle: TextBundle) -> None:
    encoders = bundle.config["encoders"]
    edit_json(copy / "config.json", encoders={**encoders, "long": [encoders["long"][0], 7, LONG_BITS]})
    with pytest.raises(BundleError, match="shape"):
        TextBundle.load(copy)


def test_code_sizes_are_checked_before_training(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="address_bits"):
        train_text_bundle(["some text"], tmp_path, address_bits=33)
    with pytest.raises(ValueError, match="long_bits"):
        train_text_bundle(["some text"], tmp_path, long_bits=100)
