"""Conversions between the code representations the API shows and the ones the index uses."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from service.index import long_codes_to_words


def address_to_code(address: int, address_bits: int) -> str:
    """The address as a 0/1 string, bit 0 (the most significant) first."""
    return format(address, f"0{address_bits}b")


def long_code_hex_width(long_bits: int) -> int:
    """Hex characters in a long code of `long_bits` bits (whole bytes, as np.packbits stores them)."""
    return 2 * ((long_bits + 7) // 8)


def hex_to_long_words(long_code: str) -> np.ndarray:
    """A hex long code as the (words,) uint64 array the index compares against."""
    packed = np.frombuffer(bytes.fromhex(long_code), dtype=np.uint8)
    return long_codes_to_words(packed[np.newaxis, :])[0]


def stored_codes_to_words(codes: Sequence[bytes], long_bits: int) -> np.ndarray:
    """Long codes as stored in SQL (bytes each) -> (n, words) uint64, each cut or zero-padded to the
    collection's whole bytes, as the index holds them."""
    code_bytes = (long_bits + 7) // 8
    packed = np.frombuffer(b"".join(code.ljust(code_bytes, b"\0")[:code_bytes] for code in codes), np.uint8)
    return long_codes_to_words(packed.reshape(len(codes), code_bytes))
