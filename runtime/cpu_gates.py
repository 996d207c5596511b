"""Gate drivers on the compiled CPU kernels: numpy in, numpy out, OpenSSL for AES.

Each driver cuts the wires of one gate into parts (:func:`dashc.runtime.workers.run_parts`),
and every part walks its wires in chunks of about ``CHUNK_BLOCKS`` AES blocks: pack the keys,
``y = pi(x)`` in one OpenSSL call, the tweaked blocks, ``z = pi(y ^ t)`` in a second call, then
the kernel that expands the pads and writes outputs and rows (see
:mod:`dashc.runtime.cpu_kernels`).  Each thread has its own OpenSSL context and buffers
(:func:`block_hasher`); parts write disjoint slices of the outputs.
"""
from __future__ import annotations

import threading

import numpy as np

from dashc.errors import IntegrityError

from .aes import FIXED_KEY
from .bitpack import field_width
from .cpu_kernels import (CHUNK_BLOCKS, KEY_BLOCK, _scratch, barrett, expand_consts,
                          expand_pads, mixed_eval, mixed_garble, pack_all_colours,
                          pack_consts, pack_labels, proj_eval, proj_garble, select_cols,
                          select_rows, tweak_xor, tweak_xor_elems, xor_pads)
from .tables import Packed
from .workers import run_parts


class BlockHasher:
    """``y = pi(x)``, ``z_j = pi(y ^ tweak_j)`` through OpenSSL on reused buffers."""

    def __init__(self, key: bytes = FIXED_KEY):
        from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

        self._enc = Cipher(algorithms.AES(key), modes.ECB()).encryptor()
        self._bufs: dict[str, np.ndarray] = {}

    def buffer(self, name: str, words: int) -> np.ndarray:
        """A reusable int64 buffer of at least ``words + 2`` entries (OpenSSL may need one
        block of slack in its output)."""
        buf = self._bufs.get(name)
        if buf is None or buf.shape[0] < words + 2:
            buf = np.empty(max(words + 2, 2 * (0 if buf is None else buf.shape[0])), np.int64)
            self._bufs[name] = buf
        return buf

    def encrypt(self, src: np.ndarray, name: str) -> np.ndarray:
        """AES of the int64 pairs in ``src`` (C-contiguous) into buffer ``name``; a view of
        ``src``'s shape."""
        out = self.buffer(name, src.size)
        self._enc.update_into(memoryview(src).cast("B"), memoryview(out).cast("B"))
        return out[:src.size].reshape(src.shape)

    def hash(self, x: np.ndarray, gid: int, elem: np.ndarray, role: int, h: int):
        """``(y, z)`` for packed keys ``x (N, 2)``: ``y = pi(x)``, ``z[i, j] = pi(y[i] ^ t)``
        with ``t`` the tweak of element ``elem[i]``."""
        y = self.encrypt(x, "y")
        t = self.buffer("t", y.shape[0] * h * 2)[:y.shape[0] * h * 2].reshape(-1, h, 2)
        tweak_xor_elems(y, gid, elem, role, h, t)
        return y, self.encrypt(t, "z")

    def tweaked(self, y: np.ndarray, gid: int, elem0: int, rep: int, role: int, h: int,
                T: int = 1, t: int = 0) -> np.ndarray:
        """``z[i, j] = pi(y[i] ^ tweak(gid, (elem0 + i // rep) * T + t, role, j))``."""
        buf = self.buffer("t", y.shape[0] * h * 2)[:y.shape[0] * h * 2].reshape(-1, h, 2)
        tweak_xor(y, gid, elem0, rep, T, t, role, h, buf)
        return self.encrypt(buf, "z")


_LOCAL = threading.local()


def block_hasher() -> BlockHasher:
    """This thread's hasher (OpenSSL context and buffers)."""
    h = getattr(_LOCAL, "hasher", None)
    if h is None:
        h = _LOCAL.hasher = BlockHasher()
    return h


def _keys(n: int) -> np.ndarray:
    return block_hasher().buffer("x", 2 * n)[:2 * n].reshape(n, 2)


def _row_scratch(h: int, nkeys: int):
    """Scratch of the row kernels for the colour-0 pads among ``nkeys``: zeros for ``y``
    (the pads come with it applied) and the gathered pads."""
    return np.zeros((nkeys, 2), np.int64), np.empty((nkeys, h, 2), np.int64)


def forged(gid: int, gate: str, what: str = "value") -> IntegrityError:
    """The error for an opened row entry out of range (only a damaged table or a forged
    label gives one)."""
    return IntegrityError(f"gate {gid}: {gate} opened a row to a {what} out of range: its "
                          "garbled table or the labels that key it are damaged or forged")


def _pads(hasher: BlockHasher, y: np.ndarray, gid: int, elem0: int, rep: int, role: int,
          h: int, T: int, t: int) -> tuple[np.ndarray, np.ndarray]:
    """The hash outputs ``pi(y ^ tweak_j) ^ y`` as ``(N, h, 2)`` int64 and as bytes."""
    z = hasher.tweaked(y, gid, elem0, rep, role, h, T, t)
    xor_pads(y, z)
    return z, z.view(np.uint8).reshape(z.shape[0], 16 * h)


def hash_labels(keys: np.ndarray, q_in: int, gid: int, elem: np.ndarray, role: int,
                q_out: int, m: int, h: int) -> np.ndarray:
    """``(N, m)`` int64 pads of the labels ``keys (N, n(q_in))`` (the tweakable hash)."""
    N = keys.shape[0]
    out = np.empty((N, m), np.int64)
    k, D, tops = expand_consts(q_out, m, h)
    kp, PWp, QLp = pack_consts(q_in, keys.shape[1])
    step = max(1, CHUNK_BLOCKS // (1 + h))

    def part(p0: int, p1: int) -> None:
        F, R, pad = _scratch(h, KEY_BLOCK, m)
        hasher = block_hasher()
        for i0 in range(p0, p1, step):
            i1 = min(p1, i0 + step)
            x = _keys(i1 - i0)
            pack_labels(keys[i0:i1], q_in, kp, PWp, QLp, x)
            y, z = hasher.hash(x, gid, elem[i0:i1], role, h)
            expand_pads(y, z, h, q_out, m, k, D, tops, F, R, pad, out[i0:i1])

    run_parts(N, 1 + h, part)
    return out


def garble_proj_many(a0: np.ndarray, E: int, p: int, delta_p: np.ndarray, targets: list,
                     gid: int, role: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """One projection gate of the zero labels ``a0 (W, n(p))`` (wire ``w`` in batch element
    ``w // E``) into several targets ``(q, delta_q, table, h, rows_dtype)``, ``table`` of
    shape ``(p,)`` or ``(W, p)``: per target (output zero labels ``(W, n(q))`` int64, rows
    ``(W, p - 1, n(q))`` of ``rows_dtype``).  The ``p`` keys of every wire are packed and
    put through ``pi`` once, then each target ``t`` of ``T`` takes its own tweaks (element
    field ``w * T + t``) and rows."""
    W = a0.shape[0]
    T = len(targets)
    kp, PWp, QLp = pack_consts(p, a0.shape[1])
    prep = []
    for q, delta_q, table, h, rows_dtype in targets:
        nq = delta_q.shape[1]
        table = np.ascontiguousarray(table, dtype=np.int64)
        tw = 1 if table.ndim == 2 else 0
        k, D, tops = expand_consts(q, nq, h)
        prep.append((q, delta_q, table.reshape(-1, p), tw, h, k, D, tops, nq,
                     barrett(q, q * q + 2 * q), np.empty((W, nq), np.int64),
                     np.empty((W, p - 1, nq), rows_dtype), field_width(q)))
    blocks = p * (1 + sum(t[3] for t in targets))
    step = max(1, CHUNK_BLOCKS // blocks)

    def part(p0: int, p1: int) -> None:
        hasher = block_hasher()
        nkeys = max(p, KEY_BLOCK // p * p)
        scratch = [(*_scratch(t[4], nkeys // p, t[8]), *_row_scratch(t[4], nkeys // p))
                   for t in prep]
        for w0 in range(p0, p1, step):
            w1 = min(p1, w0 + step)
            x = _keys((w1 - w0) * p)
            pack_all_colours(a0, delta_p, E, p, kp, PWp, QLp, w0, w1, x)
            y = hasher.encrypt(x, "y")
            for t, (q, dq, tab, tw, h, k, D, tops, _, M, c0, rows, bp) in enumerate(prep):
                F, R, pad, y0, Z0 = scratch[t]
                z, zb = _pads(hasher, y, gid, w0, p, role, h, T, t)
                proj_garble(a0, tab, tw, dq, E, p, q, M, h, k, D, tops, bp, F, R, pad, Z0,
                            y0, z, zb, w0, w1, c0, rows)

    run_parts(W, blocks, part)
    return [(t[10], t[11]) for t in prep]


_NO_ROWS = np.zeros((1, 1, 1), np.uint8)
_NO_BYTES = np.zeros(1, np.uint8)


def table_source(t, shape: tuple[int, ...]) -> tuple[np.ndarray, np.ndarray, int]:
    """``(dense, packed, bits)`` for a gate's table array of ``shape``: a numpy array of
    digits (``bits = 0``), or a :class:`~dashc.runtime.tables.Packed` read in place."""
    if isinstance(t, Packed):
        if t.size != int(np.prod(shape)):
            raise ValueError(f"packed table of shape {t.shape} does not fit {shape}")
        return (_NO_ROWS if len(shape) == 3 else _NO_ROWS[0]), t.data, t.bits
    return np.ascontiguousarray(t).reshape(shape), _NO_BYTES, 0


def eval_proj_many(a: np.ndarray, p: int, targets: list, gid: int, role: int) -> list:
    """Active labels ``a (W, n(p))`` and, per target, ``(q, rows, h)`` with ``rows`` the
    gate's ``(W, p - 1, n(q))`` table (an array or packed, see :func:`table_source`) ->
    one ``(W, n(q))`` int64 active label array per target (see :func:`garble_proj_many`).
    Only the row each wire opens is read."""
    W = a.shape[0]
    T = len(targets)
    kp, PWp, QLp = pack_consts(p, a.shape[1])
    prep = []
    for q, rows, h in targets:
        nq = int(rows.shape[-1])
        dense, packed, bits = table_source(rows, (W, p - 1, nq))
        k, D, tops = expand_consts(q, nq, h)
        prep.append((q, dense, packed, bits, h, k, D, tops, nq, barrett(q, 3 * q),
                     np.empty((W, nq), np.int64), field_width(q)))
    blocks = 1 + sum(t[2] for t in targets)
    step = max(1, CHUNK_BLOCKS // blocks)
    bad = []

    def part(p0: int, p1: int) -> None:
        hasher = block_hasher()
        scratch = [(*_scratch(t[4], KEY_BLOCK, t[8]), *_row_scratch(t[4], KEY_BLOCK),
                    np.empty(KEY_BLOCK, np.int64), np.empty((step, t[8]), np.int64))
                   for t in prep]
        for w0 in range(p0, p1, step):
            w1 = min(p1, w0 + step)
            x = _keys(w1 - w0)
            pack_labels(a[w0:w1], p, kp, PWp, QLp, x)
            y = hasher.encrypt(x, "y")
            for t, (q, dense, packed, bits, h, k, D, tops, nq, M, out, bp) in enumerate(prep):
                F, R, pad, y0, Z0, idx, sel = scratch[t]
                select_rows(dense, packed, bits, p - 1, a, w0, w1, sel)
                z, zb = _pads(hasher, y, gid, w0, 1, role, h, T, t)
                if proj_eval(a, q, M, h, k, D, tops, bp, F, R, pad, Z0, idx, y0, z, zb, w0,
                             w1, sel, out):
                    bad.append(q)

    run_parts(W, blocks, part)
    if bad:
        raise forged(gid, f"a projection into Z{bad[0]}", "digit")
    return [t[10] for t in prep]


def garble_mixed_half(a0: np.ndarray, b0: np.ndarray, E: int, p: int, q: int,
                      delta_q: np.ndarray, r: np.ndarray, g0: np.ndarray, gid: int, h: int,
                      rows_dtype):
    """The evaluator half of the mixed half gate (role 1): (output zero labels, rows
    ``(W, q - 1, n(p))``, digits ``(W, q)``)."""
    W, n_p = a0.shape
    out0 = np.empty((W, n_p), np.int64)
    rows_e = np.empty((W, q - 1, n_p), rows_dtype)
    digits = np.empty((W, q), rows_dtype)
    k, D, tops = expand_consts(p, n_p + 1, h)
    kq, PWq, QLq = pack_consts(q, b0.shape[1])
    M = barrett(p, 2 * p * p + 2 * p)
    bp = field_width(p)
    step = max(1, CHUNK_BLOCKS // (q * (1 + h)))

    def part(p0: int, p1: int) -> None:
        hasher = block_hasher()
        nw = max(1, KEY_BLOCK // q)
        F, R, pad = _scratch(h, nw, n_p + 1)
        y0, Z0 = _row_scratch(h, nw)
        for w0 in range(p0, p1, step):
            w1 = min(p1, w0 + step)
            x = _keys((w1 - w0) * q)
            pack_all_colours(b0, delta_q, E, q, kq, PWq, QLq, w0, w1, x)
            y = hasher.encrypt(x, "y")
            z, zb = _pads(hasher, y, gid, w0, q, 1, h, 1, 0)
            mixed_garble(a0, b0, r, g0, p, q, M, h, k, D, tops, bp, F, R, pad, Z0, y0, z, zb,
                         w0, w1, out0, rows_e, digits)

    run_parts(W, q * (1 + h), part)
    return out0, rows_e, digits


def eval_mixed_half(a: np.ndarray, b: np.ndarray, g: np.ndarray, p: int, q: int,
                    rows_e, digits, gid: int, h: int) -> np.ndarray:
    """Active label of ``x*y`` from the garbler half's result ``g`` and the evaluator half's
    tables: rows ``(W, q - 1, n(p))`` and digits ``(W, q)``, arrays or packed (see
    :func:`table_source`)."""
    W, n_p = a.shape
    out = np.empty((W, n_p), np.int64)
    k, D, tops = expand_consts(p, n_p + 1, h)
    kq, PWq, QLq = pack_consts(q, b.shape[1])
    M = barrett(p, p * p + 6 * p)
    bp = field_width(p)
    rows_d, rows_p, rows_b = table_source(rows_e, (W, q - 1, n_p))
    dig_d, dig_p, dig_b = table_source(digits, (W, q))
    step = max(1, CHUNK_BLOCKS // (1 + h))
    bad = []

    def part(p0: int, p1: int) -> None:
        hasher = block_hasher()
        F, R, pad = _scratch(h, KEY_BLOCK, n_p + 1)
        y0, Z0 = _row_scratch(h, KEY_BLOCK)
        idx = np.empty(KEY_BLOCK, np.int64)
        sel_rows = np.empty((step, n_p), np.int64)
        sel_digits = np.empty(step, np.int64)
        for w0 in range(p0, p1, step):
            w1 = min(p1, w0 + step)
            x = _keys(w1 - w0)
            pack_labels(b[w0:w1], q, kq, PWq, QLq, x)
            y = hasher.encrypt(x, "y")
            z, zb = _pads(hasher, y, gid, w0, 1, 1, h, 1, 0)
            select_rows(rows_d, rows_p, rows_b, q - 1, b, w0, w1, sel_rows)
            select_cols(dig_d, dig_p, dig_b, q, b, w0, w1, sel_digits)
            if mixed_eval(a, b, g, p, M, h, k, D, tops, bp, F, R, pad, Z0, idx, y0, z, zb, w0,
                          w1, sel_rows, sel_digits, out):
                bad.append(p)

    run_parts(W, 1 + h, part)
    if bad:
        raise forged(gid, f"a mixed half gate mod {p}")
    return out
