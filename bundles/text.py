"""Text model bundles: load, validate, and encode documents into binary codes with numpy alone.

A bundle directory holds

    config.json          format_version, kind="text", name, vocab_size, address_bits, long_bits,
                         encoders (layer sizes of each encoder), scale_input_bias,
                         max_document_length, training settings, seed, created
    vocabulary.json      {"words": [...V words...], "idf": [...V floats...]}
    weights.safetensors  for code in (address, long), layer l:
                         "{code}.encoder.{l}.weight" (n_in, n_out) and "{code}.encoder.{l}.bias" (n_out,)
    metrics.json         validation (and, after `semhash evaluate text`, test) numbers
    query_encoder.*      optional (format_version 2): the query encoder for short text and its
    query_vocabulary.json  vocabulary, config["query_encoder"] (null: none); see bundles/query.py

Format versions: 1 (no query encoder) and 2 (config.json has "query_encoder", an object or null) are
read; bundles are written as 2. The fingerprint covers the document encoders only, so adding a query
encoder to a bundle leaves the collections indexed with it valid.

Encoding is the encoder of `models.autoencoder.DeepAutoencoder` without noise, in numpy
(so the service needs no torch), on counts whose length N is capped at max_document_length
(`bundles.text_features.cap_lengths`):  h_1 = sigmoid(v W_1 + s(N) c_1), ..., z = h W_L + c_L, bit = z > 0.
Address bit 0 (the first code unit of the address encoder) is the most significant bit of the
address; long codes are packed with `np.packbits` (code unit 0 = most significant bit of byte 0).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import scipy.sparse as sp

from bundles.io import WEIGHTS, BundleError, check_shapes, id_from_fingerprint, read_bundle, write_bundle
from bundles.query import QUERY_CONFIG_KEY, QueryEncoder
from bundles.text_features import WordIndex, cap_lengths, count_matrix, tfidf
from bundles.text_small import CountRows, capped, first_layer, fits

FORMAT_VERSION = 2
READABLE_VERSIONS = (1, 2)
# Without a query encoder, a query counts as short when it has fewer document-vocabulary tokens than
# this (a bundle with one stores its own, measured on its validation documents).
SHORT_QUERY_MAX_TOKENS = 20
KIND = "text"
VOCABULARY = "vocabulary.json"
CODES = ("address", "long")
MAX_ADDRESS_BITS = 32

__all__ = [
    "BundleError",
    "EmptyDocumentError",
    "QueryProbabilities",
    "TextBundle",
    "TextCodes",
    "write_text_bundle",
]


class EmptyDocumentError(ValueError):
    """Some documents are empty or contain no vocabulary word, so they have no meaningful code."""

    def __init__(self, indices: Sequence[int]):
        self.indices = [int(i) for i in indices]
        shown = ", ".join(map(str, self.indices[:10])) + (" ..." if len(self.indices) > 10 else "")
        super().__init__(
            f"{len(self.indices)} document(s) are empty or contain no vocabulary word "
            f"(indices {shown}); they have no meaningful code"
        )


@dataclass
class TextCodes:
    """Codes of n documents."""

    addresses: np.ndarray  # (n,) uint64, address bit 0 = most significant bit
    long_codes: np.ndarray  # (n, long_bits // 8) uint8, np.packbits order


@dataclass
class QueryProbabilities:
    """Code unit probabilities of n queries, from the query encoder or (fallback) the document encoders."""

    address: np.ndarray  # (n, address_bits) float32, P(address bit j = 1); bit 0 most significant
    long: np.ndarray  # (n, long_bits) float32, P(long bit k = 1), np.packbits order
    known: np.ndarray  # (n,) bool: the query has a word of the encoder's vocabulary (else: no meaning)
    encoder: str  # "query" or "document"

    def addresses(self) -> np.ndarray:
        """The most likely address of each query (bits p > 1/2).  -> (n,) uint64."""
        return pack_addresses(self.address > 0.5)

    def long_codes(self) -> np.ndarray:
        """The most likely long code of each query, packed as documents' are.  -> (n, long_bits/8) uint8."""
        return np.packbits(self.long > 0.5, axis=1)


def pack_addresses(bits: np.ndarray) -> np.ndarray:
    """(n, a) bool address bits (bit 0 most significant) -> (n,) uint64 addresses."""
    weights = np.uint64(1) << np.arange(bits.shape[1] - 1, -1, -1, dtype=np.uint64)
    addresses: np.ndarray = (bits.astype(np.uint64) * weights).sum(axis=1, dtype=np.uint64)
    return addresses


def check_code_sizes(address_bits: int, long_bits: int) -> None:
    """Raise ValueError unless 1 <= address_bits <= 32 and long_bits is a positive multiple of 8."""
    if not 1 <= address_bits <= MAX_ADDRESS_BITS:
        raise ValueError(f"address_bits must be in 1..{MAX_ADDRESS_BITS}, got {address_bits}")
    if long_bits < 8 or long_bits % 8:
        raise ValueError(f"long_bits must be a positive multiple of 8, got {long_bits}")


def write_text_bundle(
    path: Path | str,
    config: Mapping[str, Any],
    vocabulary: Sequence[str],
    idf: np.ndarray,
    weights: Mapping[str, np.ndarray],
    metrics: Mapping[str, Any],
) -> TextBundle:
    """Write a bundle (config gets format_version and kind added) and load it back, validated."""
    path = Path(path)
    header = {QUERY_CONFIG_KEY: None, **config, "format_version": FORMAT_VERSION, "kind": KIND}
    write_bundle(path, header, weights, metrics)
    document = {"words": list(vocabulary), "idf": [float(x) for x in idf]}
    (path / VOCABULARY).write_text(json.dumps(document) + "\n")
    return TextBundle.load(path)


def read_vocabulary(file: Path, vocab_size: int) -> tuple[list[str], np.ndarray]:
    """The words and idf of a vocabulary file, checked against `vocab_size`; BundleError otherwise."""
    try:
        document = json.loads(file.read_text(encoding="utf-8"))
        words, idf = document["words"], np.asarray(document["idf"], dtype=np.float64)
    except FileNotFoundError as err:
        raise BundleError(f"{file} is missing") from err
    except (OSError, UnicodeDecodeError, ValueError, TypeError, KeyError) as err:
        raise BundleError(f"{file} is corrupt: {err!r}") from err
    if not isinstance(words, list) or not all(isinstance(w, str) for w in words):
        raise BundleError(f"{file}: 'words' must be a list of strings")
    if len(words) != vocab_size or len(set(words)) != vocab_size:
        raise BundleError(f"{file}: {len(set(words))} distinct words, config says vocab_size={vocab_size}")
    if idf.shape != (vocab_size,) or not np.isfinite(idf).all() or (idf <= 0).any():
        raise BundleError(f"{file}: 'idf' must be {vocab_size} positive finite numbers")
    return words, idf


def encoder_layer_names(code: str, layer: int) -> tuple[str, str]:
    """The (weight, bias) tensor names of layer `layer` (from 0) of the `code` encoder in the weights."""
    return f"{code}.encoder.{layer}.weight", f"{code}.encoder.{layer}.bias"


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 0.5 * (1.0 + np.tanh(0.5 * x))  # stable for large |x|


class TextBundle:
    """A loaded, validated text bundle; use `TextBundle.load(path)`."""

    def __init__(
        self,
        path: Path,
        config: dict[str, Any],
        metrics: dict[str, Any],
        vocabulary: list[str],
        idf: np.ndarray,
        weights: dict[str, np.ndarray],
        fingerprint: str,
        query_encoder: QueryEncoder | None = None,
    ):
        self.path = path
        self.config = config
        self.metrics = metrics
        self.vocabulary = vocabulary
        self.idf = idf
        self.weights = weights
        self.fingerprint = fingerprint
        self.bundle_id = id_from_fingerprint(config["name"], fingerprint)
        self.address_bits = int(config["address_bits"])
        self.long_bits = int(config["long_bits"])
        self.scale_input_bias = bool(config["scale_input_bias"])
        self.max_document_length: float | None = config["max_document_length"]
        self._index = WordIndex(vocabulary)
        self.query_encoder = query_encoder

    @property
    def has_query_encoder(self) -> bool:
        """Whether the bundle holds a query encoder (else `encode_query` uses the document encoders)."""
        return self.query_encoder is not None

    @classmethod
    def load(
        cls,
        path: Path | str,
        *,
        expected_vocab_size: int | None = None,
        expected_address_bits: int | None = None,
        expected_long_bits: int | None = None,
    ) -> TextBundle:
        """Read and validate a bundle; raise BundleError naming the bundle and the problem."""
        path = Path(path)
        config, weights, metrics = read_bundle(path, kind=KIND, format_version=READABLE_VERSIONS)
        for key, kind in (("name", str), ("vocab_size", int), ("address_bits", int), ("long_bits", int)):
            if not isinstance(config.get(key), kind):
                raise BundleError(f"{path}/config.json: {key!r} missing or not {kind.__name__}")
        try:
            check_code_sizes(config["address_bits"], config["long_bits"])
        except ValueError as err:
            raise BundleError(f"{path}/config.json: {err}") from err
        for key, expected in (
            ("vocab_size", expected_vocab_size),
            ("address_bits", expected_address_bits),
            ("long_bits", expected_long_bits),
        ):
            if expected is not None and config[key] != expected:
                raise BundleError(f"{path}: bundle has {key}={config[key]}, expected {expected}")
        vocabulary, idf = read_vocabulary(path / VOCABULARY, config["vocab_size"])
        check_shapes(path, weights, cls._expected_shapes(path, config))
        query_encoder = None
        if config["format_version"] >= 2:
            if QUERY_CONFIG_KEY not in config:
                raise BundleError(
                    f"{path}/config.json: format_version 2 needs {QUERY_CONFIG_KEY!r} (or null)"
                )
            if config[QUERY_CONFIG_KEY] is not None:
                query_encoder = QueryEncoder.load(
                    path, config[QUERY_CONFIG_KEY], config["address_bits"], config["long_bits"]
                )
        digest = hashlib.sha256()
        digest.update((path / WEIGHTS).read_bytes())
        digest.update((path / VOCABULARY).read_bytes())
        essentials = {k: config.get(k) for k in ("vocab_size", "address_bits", "long_bits", "encoders")}
        digest.update(json.dumps(essentials, sort_keys=True).encode())
        return cls(path, config, metrics, vocabulary, idf, weights, digest.hexdigest(), query_encoder)

    @staticmethod
    def _expected_shapes(path: Path, config: Mapping[str, Any]) -> dict[str, tuple[int, ...]]:
        encoders = config.get("encoders")
        if not isinstance(encoders, dict) or set(encoders) != set(CODES):
            raise BundleError(f"{path}/config.json: 'encoders' must give layer sizes for {CODES}")
        if not isinstance(config.get("scale_input_bias"), bool):
            raise BundleError(f"{path}/config.json: 'scale_input_bias' must be true or false")
        cap = config.get("max_document_length", "missing")
        if cap is not None and (not isinstance(cap, int | float) or isinstance(cap, bool) or cap <= 0):
            raise BundleError(f"{path}/config.json: 'max_document_length' must be a positive number or null")
        shapes: dict[str, tuple[int, ...]] = {}
        for code in CODES:
            sizes = encoders[code]
            bits = config[f"{code}_bits"]
            if not isinstance(sizes, list) or len(sizes) < 2 or sizes[0] != config["vocab_size"]:
                raise BundleError(
                    f"{path}/config.json: {code} encoder sizes {sizes} do not start at vocab_size"
                )
            if sizes[-1] != bits:
                raise BundleError(f"{path}/config.json: {code} encoder ends in {sizes[-1]} units, not {bits}")
            for layer, (n_in, n_out) in enumerate(zip(sizes[:-1], sizes[1:], strict=True)):
                weight, bias = encoder_layer_names(code, layer)
                shapes[weight] = (n_in, n_out)
                shapes[bias] = (n_out,)
        return shapes

    # ----- encoding --------------------------------------------------------------------------------
    def counts(self, texts: Sequence[str]) -> sp.csr_matrix:
        """(n, V) float32 word counts over the bundle's vocabulary."""
        return count_matrix(texts, self._index)

    def encode(self, texts: Sequence[str]) -> TextCodes:
        """Codes of `texts`; raises EmptyDocumentError if any has no vocabulary word.

        A few documents take `bundles.text_small` (numpy, the same numbers), more the scipy path."""
        rows = CountRows.of_texts(texts, self._index)
        if not all(fits(rows, self.weights[encoder_layer_names(code, 0)[1]].shape[0]) for code in CODES):
            return self.encode_counts(self.counts(texts))
        empty = np.flatnonzero(np.diff(rows.indptr) == 0)
        if empty.size:
            raise EmptyDocumentError(empty.tolist())
        rows = capped(rows, self.max_document_length)
        w = self.weights
        inputs = []
        for code in CODES:
            weight, bias = encoder_layer_names(code, 0)
            inputs.append(
                self._deeper_layers(code, first_layer(rows, w[weight], w[bias], self.scale_input_bias))
            )
        return self._codes(*inputs)

    def encode_counts(self, counts: sp.spmatrix | np.ndarray) -> TextCodes:
        """Codes from a (n, V) count matrix (the bulk path); raises EmptyDocumentError for empty rows."""
        counts = self._check_counts(counts)
        empty = np.flatnonzero(np.asarray(counts.sum(axis=1)).ravel() <= 0)
        if empty.size:
            raise EmptyDocumentError(empty.tolist())
        return self._codes(self._code_input("address", counts), self._code_input("long", counts))

    def _codes(self, address_inputs: np.ndarray, long_inputs: np.ndarray) -> TextCodes:
        """Codes from the last layer's inputs z of both encoders (bit = z > 0)."""
        weights = np.uint64(1) << np.arange(self.address_bits - 1, -1, -1, dtype=np.uint64)
        addresses = ((address_inputs > 0).astype(np.uint64) * weights).sum(axis=1, dtype=np.uint64)
        long_codes = np.packbits(long_inputs > 0, axis=1)
        return TextCodes(addresses=addresses, long_codes=long_codes)

    def encode_query(self, texts: Sequence[str], encoder: str = "auto") -> QueryProbabilities:
        """Code unit probabilities of short query texts.

        `encoder`: "query" (the query encoder; the document encoders when the bundle has none),
        "document" (the document encoders, as documents are encoded), or "auto": "query" for the texts
        that `query_is_short`, "document" for the rest (the result then says "query" when any text
        used the query encoder). Never raises for texts without a known word: `known` marks them.
        """
        if encoder not in ("auto", "query", "document"):
            raise ValueError(f"encoder must be 'auto', 'query' or 'document', got {encoder!r}")
        n = len(texts)
        document_counts = self.counts(texts)
        use_query = np.zeros(n, dtype=bool)
        if self.query_encoder is not None and encoder != "document":
            lengths = np.asarray(document_counts.sum(axis=1)).ravel()
            use_query[:] = True if encoder == "query" else lengths < self.short_query_max_tokens
        address = np.zeros((n, self.address_bits), dtype=np.float32)
        long = np.zeros((n, self.long_bits), dtype=np.float32)
        known = np.zeros(n, dtype=bool)
        rows = np.flatnonzero(~use_query)
        if rows.size:
            counts = document_counts[rows]
            address[rows] = self.code_activations("address", counts)
            long[rows] = self.code_activations("long", counts)
            known[rows] = np.asarray(counts.sum(axis=1)).ravel() > 0
        rows = np.flatnonzero(use_query)
        if rows.size:
            assert self.query_encoder is not None
            counts = self.query_encoder.counts([texts[i] for i in rows.tolist()])
            address[rows], long[rows] = self.query_encoder.probabilities(counts)
            known[rows] = np.asarray(counts.sum(axis=1)).ravel() > 0
        return QueryProbabilities(address, long, known, "query" if use_query.any() else "document")

    @property
    def short_query_max_tokens(self) -> int:
        """Queries with fewer document-vocabulary tokens than this go to the query encoder ("auto")."""
        if self.query_encoder is None:
            return SHORT_QUERY_MAX_TOKENS
        return self.query_encoder.short_query_max_tokens

    def query_is_short(self, text: str) -> bool:
        """Whether `text` has fewer document-vocabulary tokens than `short_query_max_tokens`."""
        return sum(column >= 0 for column in self._index.token_columns(text)) < self.short_query_max_tokens

    def code_activations(self, code: str, counts: sp.spmatrix | np.ndarray) -> np.ndarray:
        """sigmoid(z) of the `code` ("address" or "long") encoder.  (n, V) counts -> (n, bits) float32."""
        return _sigmoid(self._code_input(code, self._check_counts(counts)))

    def code_bits(self, code: str, counts: sp.spmatrix | np.ndarray) -> np.ndarray:
        """Binary codes z > 0 of the `code` encoder.  (n, V) counts -> (n, bits) bool."""
        return self._code_input(code, self._check_counts(counts)) > 0

    def _code_input(self, code: str, counts: sp.csr_matrix) -> np.ndarray:
        if code not in CODES:
            raise ValueError(f"code must be one of {CODES}, got {code!r}")
        w = self.weights
        counts = cap_lengths(counts, self.max_document_length)
        weight, bias = encoder_layer_names(code, 0)
        h = np.asarray(counts @ w[weight], dtype=np.float32)
        scale = np.asarray(counts.sum(axis=1), dtype=np.float32) if self.scale_input_bias else 1.0
        h += scale * w[bias]
        return self._deeper_layers(code, h)

    def _deeper_layers(self, code: str, h: np.ndarray) -> np.ndarray:
        """z of the `code` encoder from its first layer's input h (n, hidden)."""
        w = self.weights
        for layer in range(1, len(self.config["encoders"][code]) - 1):
            weight, bias = encoder_layer_names(code, layer)
            h = _sigmoid(h) @ w[weight] + w[bias]
        return h

    def _check_counts(self, counts: sp.spmatrix | np.ndarray) -> sp.csr_matrix:
        matrix = sp.csr_matrix(counts, dtype=np.float32)
        if matrix.ndim != 2 or matrix.shape[1] != len(self.vocabulary):
            raise ValueError(f"counts must have {len(self.vocabulary)} columns, got shape {matrix.shape}")
        return matrix

    def tfidf(self, texts_or_counts: Sequence[str] | sp.spmatrix | np.ndarray) -> sp.csr_matrix:
        """(n, V) L2-normalised TF-IDF with the idf fitted on the training corpus."""
        if sp.issparse(texts_or_counts) or isinstance(texts_or_counts, np.ndarray):
            counts = self._check_counts(texts_or_counts)
        else:
            counts = self.counts(texts_or_counts)
        return tfidf(counts, self.idf)
