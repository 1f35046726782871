"""bundles.text_small: the numpy path for a few documents gives bit-identical numbers to the scipy path."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from bundles.text import EmptyDocumentError, TextBundle
from bundles.text_small import CountRows, capped, first_layer

VOCABULARY = [f"w{i:03d}" for i in range(300)]


def random_bundle(max_length: float | None, scale_input_bias: bool, seed: int = 0) -> TextBundle:
    """Random weights (no training needed: only the arithmetic is compared), 300 words, 3 layers."""
    rng = np.random.default_rng(seed)
    weights = {}
    for code, sizes in (("address", [300, 120, 60, 16]), ("long", [300, 120, 60, 64])):
        for layer, (fan_in, fan_out) in enumerate(zip(sizes, sizes[1:], strict=False)):
            weight = rng.normal(0, 0.3, (fan_in, fan_out))
            weights[f"{code}.encoder.{layer}.weight"] = weight.astype(np.float32)
            weights[f"{code}.encoder.{layer}.bias"] = rng.normal(0, 0.3, fan_out).astype(np.float32)
    config = {
        "name": "random",
        "address_bits": 16,
        "long_bits": 64,
        "scale_input_bias": scale_input_bias,
        "max_document_length": max_length,
        "encoders": {"address": [300, 120, 60, 16], "long": [300, 120, 60, 64]},
    }
    idf = np.ones(len(VOCABULARY))
    return TextBundle(Path("."), config, {}, VOCABULARY, idf, weights, "0" * 64)


def random_texts(rng: np.random.Generator, count: int) -> list[str]:
    """Short and long documents with repeated words, unknown words and mixed case."""
    texts = []
    for _ in range(count):
        length = int(rng.choice([1, 3, 8, 30, 120, 700]))
        words = [f"W{w:03d}" if w % 7 == 0 else f"w{w:03d}" for w in rng.integers(0, 340, length)]
        texts.append(" ".join(words) + " unknownword")
    return texts


@pytest.mark.parametrize("max_length", [None, 25.0, 500.0])
@pytest.mark.parametrize("scale_input_bias", [False, True])
def test_first_layer_is_bit_identical_to_scipy(max_length: float | None, scale_input_bias: bool) -> None:
    bundle = random_bundle(max_length, scale_input_bias)
    rng = np.random.default_rng(1)
    for batch in (1, 2, 7):
        texts = random_texts(rng, batch)
        counts = bundle.counts(texts)
        rows = CountRows.of_texts(texts, bundle._index)
        np.testing.assert_array_equal(rows.indptr, counts.indptr)
        np.testing.assert_array_equal(rows.columns, counts.indices)
        np.testing.assert_array_equal(rows.counts, counts.data)
        for code in ("address", "long"):
            w = bundle.weights
            small = bundle._deeper_layers(
                code,
                first_layer(
                    capped(rows, max_length),
                    w[f"{code}.encoder.0.weight"],
                    w[f"{code}.encoder.0.bias"],
                    scale_input_bias,
                ),
            )
            assert np.array_equal(small, bundle._code_input(code, counts))  # bit for bit, not close
        codes, reference = bundle.encode(texts), bundle.encode_counts(counts)
        np.testing.assert_array_equal(codes.addresses, reference.addresses)
        np.testing.assert_array_equal(codes.long_codes, reference.long_codes)


def test_documents_without_a_known_word_are_refused_by_position() -> None:
    bundle = random_bundle(500.0, False)
    with pytest.raises(EmptyDocumentError) as raised:
        bundle.encode(["w001 w002", "nothing known", "w003", ""])
    assert raised.value.indices == [1, 3]
