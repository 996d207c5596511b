"""Compiled layout kernels for the linear layers on label digits (CPU).

A linear layer with public weights runs as one float matrix product or convolution over
every label digit at once.  Around it the digits change layout and type twice: from
``(B, C, H, W, n)`` integers to ``(B * n, C, H', W')`` floats (padded), and from the float
result back to ``(B, O, H, W, n)`` residues mod ``q``.  Each of these is one pass here, in
place of the permute, pad, cast, remainder and copy that torch would do one after another.

Residues of an integer-valued float ``v`` (``|v| < 2^52``) are ``v - q floor((v + 1/2)/q)``
in float64: ``(v + 1/2)/q`` lies at least ``1/(2q)`` from every integer, further than the
rounding error of the product, so the floor is exact.
"""
from __future__ import annotations

import numpy as np

from .cpu_kernels import njit

TILE = 64  # elements per tile of the transposing loops (keeps both sides in cache)


@njit(cache=True, nogil=True)
def fold_pad(src, top, left, out):
    """``src (B, C, H, W, n)`` integers -> ``out (B * n, C, H + top + bottom,
    W + left + right)`` floats, ``out`` zero outside the copied window (the caller
    allocates it zeroed)."""
    B, C, H, W, n = src.shape
    for b in range(B):
        for c in range(C):
            for h in range(H):
                for w in range(W):
                    for j in range(n):
                        out[b * n + j, c, h + top, w + left] = src[b, c, h, w, j]


@njit(cache=True, nogil=True, fastmath={"contract"})
def residues_unfold(src, q, out):
    """``src (B, n, E)`` integer-valued floats -> ``out (B, E, n)`` int64 residues mod
    ``q`` (``E`` flat output elements)."""
    B, n, E = src.shape
    qf = float(q)
    inv = 1.0 / qf
    for b in range(B):
        for e0 in range(0, E, TILE):
            e1 = min(E, e0 + TILE)
            for j in range(n):
                for e in range(e0, e1):
                    v = float(src[b, j, e])
                    out[b, e, j] = np.int64(v - qf * np.floor((v + 0.5) * inv))


@njit(cache=True, nogil=True, fastmath={"contract"})
def residues(src, q, out):
    """Flat integer-valued floats -> int64 residues mod ``q``, same layout."""
    qf = float(q)
    inv = 1.0 / qf
    for i in range(src.shape[0]):
        v = float(src[i])
        out[i] = np.int64(v - qf * np.floor((v + 0.5) * inv))


@njit(cache=True, nogil=True)
def add_residues(acc, src, q, out):
    """``out = (acc + residue(src)) mod q`` for flat int64 ``acc`` in ``[0, q)`` and
    integer-valued floats ``src`` (the pieces of a reduction split for exactness)."""
    qf = float(q)
    inv = 1.0 / qf
    for i in range(src.shape[0]):
        v = float(src[i])
        r = np.int64(v - qf * np.floor((v + 0.5) * inv)) + acc[i]
        out[i] = r - q if r >= q else r
