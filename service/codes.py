"""Binary codes: the XOR masks of a Hamming ball, long codes as uint64 words, and conversions between the
code representations the API shows and the ones the index uses."""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache

import numpy as np

MAX_ADDRESS_BITS = 32


@dataclass(frozen=True)
class XorMasks:
    """Every mask of popcount <= radius over `address_bits` bits, sorted by popcount."""

    masks: np.ndarray  # (m,) int64 (addresses have at most 32 bits; the compiled lookup indexes with them)
    popcounts: np.ndarray  # (m,) uint8


@lru_cache(maxsize=64)
def xor_masks(address_bits: int, radius: int) -> XorMasks:
    """The precomputed masks for one (address_bits, radius); cached, as every query reuses them."""
    if not 1 <= address_bits <= MAX_ADDRESS_BITS:
        raise ValueError(f"address_bits must be in 1..{MAX_ADDRESS_BITS}, got {address_bits}")
    if radius < 0:
        raise ValueError(f"radius must be >= 0, got {radius}")
    masks: list[int] = []
    popcounts: list[int] = []
    for distance in range(radius + 1):
        for bits in itertools.combinations(range(address_bits), distance):
            masks.append(sum(1 << bit for bit in bits))
            popcounts.append(distance)
    return XorMasks(masks=np.array(masks, dtype=np.int64), popcounts=np.array(popcounts, dtype=np.uint8))


def long_codes_to_words(long_codes: np.ndarray) -> np.ndarray:
    """(n, bytes) uint8 packed codes -> (n, ceil(bytes / 8)) uint64 words for popcount distances."""
    codes = np.ascontiguousarray(long_codes, dtype=np.uint8)
    if codes.ndim != 2:
        raise ValueError(f"long codes must be a 2-D (n, bytes) array, got shape {codes.shape}")
    padding = (-codes.shape[1]) % 8
    if padding:
        codes = np.concatenate([codes, np.zeros((codes.shape[0], padding), dtype=np.uint8)], axis=1)
    return codes.view(np.uint64)


def address_to_code(address: int, address_bits: int) -> str:
    """The address as a 0/1 string, bit 0 (the most significant) first."""
    return format(address, f"0{address_bits}b")


def long_code_hex_width(long_bits: int) -> int:
    """Hex characters in a long code of `long_bits` bits (whole bytes, as np.packbits stores them)."""
    return 2 * ((long_bits + 7) // 8)


def hex_to_long_words(long_code: str) -> np.ndarray:
    """A hex long code as the (words,) uint64 array the index compares against."""
    packed = np.frombuffer(bytes.fromhex(long_code), dtype=np.uint8)
    words: np.ndarray = long_codes_to_words(packed[np.newaxis, :])[0]
    return words


def stored_codes_to_words(codes: Sequence[bytes], long_bits: int) -> np.ndarray:
    """Long codes as stored in SQL (bytes each) -> (n, words) uint64, each cut or zero-padded to the
    collection's whole bytes, as the index holds them."""
    code_bytes = (long_bits + 7) // 8
    packed = np.frombuffer(b"".join(code.ljust(code_bytes, b"\0")[:code_bytes] for code in codes), np.uint8)
    return long_codes_to_words(packed.reshape(len(codes), code_bytes))
