"""Digits mod ``q`` stored in ``b = bits(q - 1)`` bits each, for the garbled-table stream.

A table row mod 19 is 30 digits of 5 significant bits; stored one byte each it costs 30
bytes, packed 19.  Digits are written little-endian in bit order: digit ``i`` occupies bits
``b*i .. b*i + b - 1`` of the byte string, so eight digits fill exactly ``b`` bytes.  The
packed length of ``count`` digits is ``ceil(count * b / 8)``; unused high bits of the last
byte are zero (a reader refuses anything else, as it refuses a digit ``>= q``).

Bits (``q = 2``) go through numpy's ``packbits``; other widths up to 8 through kernels on
groups of eight digits (one 64-bit word), specialised per width, with a bit-serial tail; wider
digits bit-serially.  The kernels are compiled with numba when it is present and run as
plain Python otherwise.
"""
from __future__ import annotations

import functools

import numpy as np

from .cpu_kernels import njit


def field_bits(q: int) -> int:
    """Bits per stored digit modulo ``q``."""
    return max(1, int(q - 1).bit_length())


def field_width(q: int) -> int:
    """The power of two ``bp >= bits(q - 1)``: a projection row's entry into ``Z_q`` is
    masked by the low ``bits(q - 1)`` bits of a ``bp``-bit chunk of its pad, so chunks never
    straddle a byte (or a 32-bit limb) unless they are whole bytes."""
    b = field_bits(q)
    return 1 << (b - 1).bit_length()


def packed_size(count: int, q: int) -> int:
    """Bytes of ``count`` packed digits modulo ``q``."""
    return -(-count * field_bits(q) // 8)


@functools.lru_cache(maxsize=None)
def _group_kernels(b: int):
    """Pack and unpack kernels for whole groups of eight ``b``-bit digits (``b <= 8``: a
    group is one 64-bit word, ``b`` bytes); ``b`` is a compile-time constant, so the shifts
    are unrolled."""
    @njit(cache=True, nogil=True)
    def pack_groups(d, out):
        for g in range(d.shape[0] // 8):
            v = np.uint64(0)
            for i in range(8):
                v |= np.uint64(d[8 * g + i]) << np.uint64(b * i)
            for j in range(b):
                out[g * b + j] = np.uint8((v >> np.uint64(8 * j)) & np.uint64(255))

    @njit(cache=True, nogil=True)
    def unpack_groups(src, q, out):
        mask = np.uint64((1 << b) - 1)
        bad = np.uint64(0)
        for g in range(out.shape[0] // 8):
            v = np.uint64(0)
            for j in range(b):
                v |= np.uint64(src[g * b + j]) << np.uint64(8 * j)
            for i in range(8):
                x = (v >> np.uint64(b * i)) & mask
                bad |= np.uint64(x >= q)
                out[8 * g + i] = x
        return bad == 0

    return pack_groups, unpack_groups


@njit(cache=True, nogil=True)
def _pack_serial(d, b, out):
    acc = 0
    nbits = 0
    o = 0
    for i in range(d.shape[0]):
        acc |= int(d[i]) << nbits
        nbits += b
        while nbits >= 8:
            out[o] = acc & 255
            acc >>= 8
            nbits -= 8
            o += 1
    if nbits > 0:
        out[o] = acc & 255


@njit(cache=True, nogil=True)
def _unpack_serial(src, b, q, out):
    mask = (1 << b) - 1
    ok = True
    acc = 0
    nbits = 0
    o = 0
    for i in range(out.shape[0]):
        while nbits < b:
            acc |= int(src[o]) << nbits
            o += 1
            nbits += 8
        x = acc & mask
        ok &= x < q
        out[i] = x
        acc >>= b
        nbits -= b
    return ok and acc == 0


def pack(digits: np.ndarray, q: int) -> np.ndarray:
    """Digits in ``[0, q)`` (any unsigned integer array) -> packed ``uint8`` bytes."""
    flat = np.ascontiguousarray(digits).reshape(-1)
    b = field_bits(q)
    if b == 1:
        return np.packbits(flat.astype(np.uint8, copy=False), bitorder="little")
    out = np.zeros(packed_size(flat.shape[0], q), np.uint8)
    if b > 8:
        _pack_serial(flat, b, out)
        return out
    body = flat.shape[0] // 8 * 8
    _group_kernels(b)[0](flat[:body], out)
    if body < flat.shape[0]:
        _pack_serial(flat[body:], b, out[body // 8 * b:])
    return out


def unpack(data, count: int, q: int, dtype) -> np.ndarray | None:
    """Packed bytes -> ``count`` digits of ``dtype``, or None when the bytes are not a valid
    packing of digits mod ``q`` (a digit ``>= q`` or non-zero padding)."""
    src = np.frombuffer(data, dtype=np.uint8)
    if src.shape[0] != packed_size(count, q):
        return None
    b = field_bits(q)
    if b == 1:
        bits = np.unpackbits(src, count=count, bitorder="little")
        if src.shape[0] and int(src[-1]) >> (count - 8 * (src.shape[0] - 1)) != 0:
            return None  # non-zero padding
        return bits.astype(dtype, copy=False)
    out = np.empty(count, dtype)
    if b > 8:
        return out if _unpack_serial(src, b, q, out) else None
    body = count // 8 * 8
    ok = _group_kernels(b)[1](src[:body // 8 * b], np.uint64(q), out[:body])
    if body < count:
        ok &= _unpack_serial(src[body // 8 * b:], b, q, out[body:])
    return out if ok else None
