"""Compiled CPU kernels for hashing and garbling (numba), bit for bit equal to the torch path.

The torch path (:mod:`dashc.runtime.hashing`, :mod:`dashc.runtime.gates`) spends its time in
int64 tensor temporaries: packing digits into 128-bit blocks, expanding hash outputs into
digits and gathering rows.  Here the same arithmetic runs as fused loops over wires, with
AES (fixed key, ECB) done by OpenSSL in one ``update_into`` call per chunk of wires on
reused buffers.  Per gate and chunk of wires:

1. a kernel forms the keys of every wire (``W0 + x*delta`` for every colour on the
   garbler's side, the active label on the evaluator's) and packs each to 128 bits;
2. OpenSSL computes ``y = pi(key)``; a kernel writes ``pi(key) ^ tweak_j`` for the output
   blocks ``j``; OpenSSL encrypts those (``z_j``);
3. a kernel expands each pad ``z_j ^ y`` into digits and writes the gate's outputs (zero or
   active labels, table rows in their storage type) directly.

Blocks are held as pairs of int64 (the little-endian 128-bit value), which is the byte
layout the torch path feeds to AES.  Tweaks, digit expansion (low base-q digits of the
``128h``-bit pad, divided by ``q^k`` per pass) and packing (the integer ``sum d_i q^i``; here
chunks of ``k`` digits times 16-bit limbs of the chunk weights, summed exactly in float64,
then carried) give exactly what :mod:`dashc.runtime.hashing` gives.

The drivers that call these kernels chunk by chunk, with OpenSSL, live in
:mod:`dashc.runtime.cpu_gates`.  ``AVAILABLE`` is False when numba cannot be imported;
callers then use the torch path.
"""
from __future__ import annotations

import functools

import numpy as np

try:  # pragma: no cover - exercised by whichever environment runs the tests
    from numba import njit

    AVAILABLE = True
except Exception:  # noqa: BLE001 - any import failure means "no compiled path"
    AVAILABLE = False

    def njit(*args, **kwargs):
        def wrap(f):
            return f
        return wrap if not (args and callable(args[0])) else args[0]

CHUNK_BLOCKS = 1 << 14  # AES blocks per OpenSSL call (keeps the working set in cache)


# -- constants per modulus -------------------------------------------------------------------

def chunk_digits(q: int) -> int:
    """Largest k with q^k < 2^31."""
    k = 1
    while q ** (k + 1) < 1 << 31:
        k += 1
    return k


@functools.lru_cache(maxsize=None)
def pack_consts(q: int, n: int) -> tuple[int, np.ndarray, np.ndarray]:
    """Constants of packing ``n`` digits mod ``q``: ``(k, PW, QL)`` with ``k`` digits per
    chunk (``q^k < 2^31``), ``PW = (1, q, .., q^(k-1))`` and ``QL[c, j]`` the ``j``-th 16-bit
    limb of ``(q^k)^c`` (float64, exact)."""
    k = chunk_digits(q)
    Q = q ** k
    PW = np.array([float(q ** i) for i in range(k)])
    QL = np.array([[float(((Q ** c) >> (16 * j)) & 0xFFFF) for j in range(8)]
                   for c in range(-(-n // k))])
    return k, PW, QL


LIMB = 21  # bits per limb in the expansion: every partial dividend is below 2^52
#: divisors below this take the quotient digit with one rounding (see _expand_block)
ONE_FLOOR_D = 1 << 29


@functools.lru_cache(maxsize=None)
def expand_consts(q: int, m: int, h: int) -> tuple:
    """Constants of the pad expansion into ``m`` digits mod ``q`` from ``h`` blocks:
    ``(k, D = q^k, tops)`` with ``k`` the largest with ``q^k < 2^29`` (at least 1); ``tops[c]`` is the number of 21-bit limbs that may be non-zero
    before division pass ``c`` (the value shrinks by a factor ``D`` per pass)."""
    k = 1
    while q ** (k + 1) < ONE_FLOOR_D:
        k += 1
    D = q ** k
    L = -(-128 * h // LIMB)
    bound = 1 << (128 * h)
    tops = []
    for _ in range(-(-m // k)):
        tops.append(min(L, -(-(bound - 1).bit_length() // LIMB)))
        bound = -(-bound // D)
    return k, D, np.array(tops, dtype=np.int64)


# -- inner helpers (inlined by LLVM) -------------------------------------------------------

@njit(cache=True, nogil=True, inline="always")
def _carry_limbs(A, ch, nk, out, o0, nw):
    """Limb sums ``A[0:8, i]`` (16-bit limbs, each sum exact in float64) -> carried 128-bit
    integers ``out[o0 + i]`` as (low, high) int64; ``ch`` is scratch for the carries.  With
    ``nw > 0`` the keys come colour-major (``i = r * nw + v`` for wire ``v`` of ``nw`` and
    colour ``r``) and go to ``out[o0 + v * (nk // nw) + r]``, wire-major."""
    inv = 1.0 / 65536.0
    for i in range(nk):
        ch[i] = 0.0
    for j in range(8):
        for i in range(nk):
            v = A[j, i] + ch[i]
            cq = np.floor(v * inv)
            A[j, i] = v - cq * 65536.0
            ch[i] = cq
    nv = nw if nw > 0 else nk
    nc = nk // nv
    for v in range(nv):  # the writes in order (strided ones are slow), the reads strided
        for r in range(nc):
            i = r * nv + v
            o = o0 + (v * nc + r if nw > 0 else i)
            out[o, 0] = (np.int64(A[0, i]) | (np.int64(A[1, i]) << 16)
                         | (np.int64(A[2, i]) << 32) | (np.int64(A[3, i]) << 48))
            out[o, 1] = (np.int64(A[4, i]) | (np.int64(A[5, i]) << 16)
                         | (np.int64(A[6, i]) << 32) | (np.int64(A[7, i]) << 48))


@njit(cache=True, inline="always")
def _clear(A, nk):
    """``A[:, 0:nk] = 0``."""
    for j in range(A.shape[0]):
        for i in range(nk):
            A[j, i] = 0.0


@njit(cache=True, inline="always")
def _limb_sums(A, ch, nk, QL, c):
    """``A[j, i] += ch[i] * QL[c, j]``: chunk ``c`` of keys ``i < nk`` times the 16-bit limbs
    of its weight ``(q^k)^c``, summed per limb (zero at the start of a block)."""
    for j in range(8):
        lj = QL[c, j]
        if lj != 0.0:
            for i in range(nk):
                A[j, i] += ch[i] * lj


@njit(cache=True, nogil=True, fastmath={"contract"})
def _pack_block(Dg, nk, n, k, PW, QL, A, ch, out, o0):
    """Keys ``Dg[0:n, i]`` (digit-major, ``i < nk``) -> ``out[o0 + i]``, the 128-bit integers
    ``sum_d Dg[d, i] q^d`` as (low, high) int64.  Chunks of ``k`` digits (``< 2^31``) times
    the 16-bit limbs of ``q^(k c)`` are summed per limb in float64 (each sum is below
    ``2^50``: exact), then the carries are propagated limb by limb.  The loops over keys are
    innermost (vectorised)."""
    _clear(A, nk)
    for c in range(QL.shape[0]):
        s = c * k
        e = min(n, s + k)
        for i in range(nk):
            ch[i] = Dg[s, i]
        for d in range(s + 1, e):
            pwd = PW[d - s]
            for i in range(nk):
                ch[i] += Dg[d, i] * pwd
        _limb_sums(A, ch, nk, QL, c)
    _carry_limbs(A, ch, nk, out, o0, 0)


@njit(cache=True, nogil=True, fastmath={"contract", "reassoc"})
def _pack_rows(d, i0, nk, n, k, PW, QL, CH, A, ch, out, o0):
    """As :func:`_pack_block` for the keys ``d[i0:i0 + nk]`` read in place (row-major):
    each chunk is a dot product over the key's own contiguous digits (exact in any order:
    every partial sum is an integer below ``2^31``), so only the chunk sums ``CH[c, i]``
    are stored across keys.  Faster than transposing the digits when chunks are long
    (``k >= PACK_ROWS_MIN_K``)."""
    C = QL.shape[0]
    for i in range(nk):
        for c in range(C):
            s = c * k
            e = min(n, s + k)
            acc = 0.0
            for t in range(e - s):
                acc += float(d[i0 + i, s + t]) * PW[t]
            CH[c, i] = acc
    _clear(A, nk)
    for c in range(C):
        _limb_sums(A, CH[c], nk, QL, c)
    _carry_limbs(A, ch, nk, out, o0, 0)


@njit(cache=True, nogil=True, fastmath={"contract"})
def _pack_colours(U, DL, nw, p, n, k, PW, QL, A, ch, out, o0):
    """The keys ``u + r * delta mod p`` of every colour ``r < p`` of ``nw`` wires, packed as
    :func:`_pack_block` packs them, into ``out[o0 + v * p + r]``; ``U[:, v]`` holds the
    digits of wire ``v``'s colour-0 key and ``DL`` those of the wires' offset, as float64.
    The digits are formed inside the chunk sums (colour-major: key ``r * nw + v``), never
    stored."""
    nk = nw * p
    pf = float(p)
    invp = 1.0 / pf
    _clear(A, nk)
    for c in range(QL.shape[0]):
        s = c * k
        e = min(n, s + k)
        for i in range(nk):
            ch[i] = 0.0
        for d in range(s, e):
            pwd = PW[d - s]
            for r in range(p):
                rd = float(r) * DL[d]
                o = r * nw
                for v in range(nw):
                    t = U[d, v] + rd
                    ch[o + v] += (t - pf * np.floor((t + 0.5) * invp)) * pwd
        _limb_sums(A, ch, nk, QL, c)
    _carry_limbs(A, ch, nk, out, o0, nw)


#: chunk length from which :func:`pack_labels` reads keys in place (moduli 3, 5 and 7)
PACK_ROWS_MIN_K = 11


@njit(cache=True, inline="always")
def _bits(d, n):
    """Digits mod 2 ``d[0:n]`` (``n <= 128``) -> (low, high) int64 of ``sum d_i 2^i``."""
    lo = 0
    hi = 0
    for i in range(min(n, 64)):
        lo |= d[i] << i
    for i in range(64, n):
        hi |= d[i] << (i - 64)
    return lo, hi


@njit(cache=True, nogil=True, fastmath={"contract"})
def _expand_block(y, z, i0, nk, h, q, m, k, D, tops, F, R, pad):
    """Digits ``pad[i, 0:m]`` (``i < nk``) of the pads ``z[i0 + i, j] ^ y[i0 + i]``
    (``j < h``) read as one ``128h``-bit integer; ``F`` is a float64 scratch of shape
    ``(>= 128h/21, >= nk)`` (the limbs), ``R`` one of ``nk`` remainders.

    Long division by ``D < 2^31`` on 21-bit limbs in float64: each partial dividend
    ``rem * 2^21 + limb`` is below ``2^52``, so it, the quotient estimate times ``D`` and the
    remainder are exact; the estimate ``floor(cur * (1/D))`` is off by at most one either
    way (its error is below ``2^-30``), which ``floor((r + 1/2) * (1/D))`` of the remainder
    ``r`` in ``(-D, 2D)`` corrects (margin ``1/(2D)``).  For ``D < 2^29`` (every modulus
    below 2^29: :func:`expand_consts` picks ``k`` so) one rounding suffices:
    ``floor((cur + 1/2) * (1/D))`` is exact because ``cur + 1/2`` is exact, the quotient
    is below ``2^21`` (its computed value is off by less than ``1.5 * 2^-32``) and
    ``(cur + 1/2) / D`` lies at least ``1/(2D) > 2^-30`` from every integer.  The loops over
    keys are innermost (vectorised)."""
    if q == 2:
        for i in range(nk):
            for wd in range((m + 63) >> 6):
                v = z[i0 + i, wd >> 1, wd & 1] ^ y[i0 + i, wd & 1]
                top = min(64, m - 64 * wd)
                for t in range(top):
                    pad[i, 64 * wd + t] = (v >> t) & 1
        return
    L = (128 * h + LIMB - 1) // LIMB
    mask = (1 << LIMB) - 1
    for li in range(L):  # limb-major: the offsets are constant along the loop over keys
        bit = li * LIMB
        wd = bit >> 6
        off = bit & 63
        blk = wd >> 1
        hw = wd & 1
        keep = (1 << (64 - off)) - 1 if off > 0 else -1
        if off + LIMB > 64 and wd + 1 < 2 * h:
            nb = (wd + 1) >> 1
            nw = (wd + 1) & 1
            up = 64 - off
            for i in range(nk):
                v = ((z[i0 + i, blk, hw] ^ y[i0 + i, hw]) >> off) & keep
                v |= (z[i0 + i, nb, nw] ^ y[i0 + i, nw]) << up
                F[li, i] = float(v & mask)
        else:
            for i in range(nk):
                v = ((z[i0 + i, blk, hw] ^ y[i0 + i, hw]) >> off) & keep
                F[li, i] = float(v & mask)
    rem = R
    Df = float(D)
    invD = 1.0 / Df
    qf = float(q)
    invq = 1.0 / qf
    base = float(1 << LIMB)
    j = 0
    one = D < ONE_FLOOR_D
    for c in range(tops.shape[0]):
        for i in range(nk):
            rem[i] = 0.0
        for li in range(tops[c] - 1, -1, -1):
            if one:
                for i in range(nk):
                    cur = rem[i] * base + F[li, i]
                    qt = np.floor((cur + 0.5) * invD)
                    F[li, i] = qt
                    rem[i] = cur - qt * Df
            else:
                for i in range(nk):
                    cur = rem[i] * base + F[li, i]
                    qt = np.floor(cur * invD)
                    r = cur - qt * Df  # in (-D, 2D)
                    adj = np.floor((r + 0.5) * invD)
                    F[li, i] = qt + adj
                    rem[i] = r - adj * Df
        for _ in range(k):
            if j >= m:
                break
            for i in range(nk):
                d = np.floor((rem[i] + 0.5) * invq)
                pad[i, j] = np.int32(rem[i] - d * qf)
                rem[i] = d
            j += 1


@njit(cache=True, inline="always")
def _md(v, q, M):
    """``v mod q`` for ``0 <= v``: Barrett with ``M = 2^32 // q + 1`` (exact when
    ``v * q < 2^32``), or the hardware remainder when ``M == 0``."""
    if M == 0:
        return v % q
    return v - ((v * M) >> 32) * q


def barrett(q: int, vmax: int) -> int:
    """The Barrett constant for reducing values below ``vmax`` mod ``q`` (0: use ``%``)."""
    return (1 << 32) // q + 1 if vmax * q < 1 << 32 else 0


#: below this modulus a row sum ``pad + c0 + f * delta < q^2 + 2q`` fits int32 (and float64)
SMALL_Q = 46000

KEY_BLOCK = 128  # keys expanded together (the vectorised loops run over them; the limb
#               scratch of 128 keys stays in L1)


def _scratch(h: int, nkeys: int, m: int):
    L = -(-128 * h // LIMB)
    return np.empty((L, nkeys)), np.empty(nkeys), np.empty((nkeys, m), np.int32)


# -- kernels ----------------------------------------------------------------------------------

PACK_BLOCK = 128  # keys packed together
COLOUR_BLOCK = 512  # keys of every colour packed together (at least this many wires' worth
#                      keeps the loops over the wires of one colour long)


@njit(cache=True, nogil=True)
def pack_labels(d, q, k, PW, QL, out):
    """``d (N, n)`` digits -> ``out (N, 2)`` packed 128-bit integers."""
    N, n = d.shape
    if q == 2:
        for i in range(N):
            lo, hi = _bits(d[i], n)
            out[i, 0] = lo
            out[i, 1] = hi
        return
    A = np.empty((8, PACK_BLOCK))
    ch = np.empty(PACK_BLOCK)
    if k >= PACK_ROWS_MIN_K:
        CH = np.empty((QL.shape[0], PACK_BLOCK))
        for i0 in range(0, N, PACK_BLOCK):
            _pack_rows(d, i0, min(PACK_BLOCK, N - i0), n, k, PW, QL, CH, A, ch, out, i0)
        return
    Dg = np.empty((n, PACK_BLOCK))
    for i0 in range(0, N, PACK_BLOCK):
        nk = min(PACK_BLOCK, N - i0)
        for i in range(nk):
            for j in range(n):
                Dg[j, i] = d[i0 + i, j]
        _pack_block(Dg, nk, n, k, PW, QL, A, ch, out, i0)


@njit(cache=True, nogil=True)
def pack_all_colours(a0, delta, E, p, k, PW, QL, w0, w1, out):
    """Keys ``a0[w] + x*delta[w // E]`` for every ``x`` in ``Z_p``, wires ``w0 <= w < w1``,
    packed into ``out[(w - w0) * p + colour]`` (colour ``= a0[w, 0] + x mod p``).  Mod 2 the
    two keys are the bits of ``a0[w]`` and those exclusive-or the bits of the offset."""
    n = a0.shape[1]
    if p == 2:
        bprev = -1
        dlo = dhi = 0
        for w in range(w0, w1):
            lo, hi = _bits(a0[w], n)
            if w // E != bprev:  # the offset's bits, once per batch element
                bprev = w // E
                dlo, dhi = _bits(delta[bprev], n)
            base = (w - w0) * 2
            c = a0[w, 0]
            out[base + c, 0] = lo
            out[base + c, 1] = hi
            out[base + 1 - c, 0] = lo ^ dlo
            out[base + 1 - c, 1] = hi ^ dhi
        return
    bw = max(8, COLOUR_BLOCK // p // 8 * 8)  # whole vectors of wires
    nk = bw * p
    U = np.empty((n, bw))  # keys of colour 0 (value -s), digit-major
    DL = np.empty(n)  # the offset of the block's batch element
    A = np.empty((8, nk))
    ch = np.empty(nk)
    pf = float(p)
    invp = 1.0 / pf
    v0 = w0
    while v0 < w1:
        b = v0 // E
        v1 = min(w1, v0 + bw, (b + 1) * E)  # one batch element (one offset) per block
        nw = v1 - v0
        for i in range(n):
            DL[i] = float(delta[b, i])
        for v in range(nw):
            w = v0 + v
            s = a0[w, 0]
            # colour r holds value r - s: its key is u + r * delta with u = a0 - s * delta
            for i in range(n):
                t = float(a0[w, i] + (p - s) * delta[b, i])
                U[i, v] = t - pf * np.floor((t + 0.5) * invp)
        _pack_colours(U, DL, nw, p, n, k, PW, QL, A, ch, out, (v0 - w0) * p)
        v0 = v1


@njit(cache=True, nogil=True)
def tweak_xor(y, gid, elem0, rep, T, t, role, h, out):
    """``out[i, j] = tweak(gid, (elem0 + i // rep) * T + t, role, j) ^ y[i]`` for
    ``i < len(y)`` (``T`` outputs per element, this is output ``t``)."""
    N = y.shape[0]
    for e0 in range(0, N, rep):  # one element per ``rep`` keys (no division per key)
        base = (((elem0 + e0 // rep) * T + t) << 6) | (role << 3)
        for i in range(e0, min(N, e0 + rep)):
            for j in range(h):
                out[i, j, 0] = (base | j) ^ y[i, 0]
                out[i, j, 1] = gid ^ y[i, 1]


@njit(cache=True, nogil=True)
def tweak_xor_elems(y, gid, elem, role, h, out):
    """As :func:`tweak_xor` with explicit element indices ``elem[i]``."""
    for i in range(y.shape[0]):
        base = (elem[i] << 6) | (role << 3)
        for j in range(h):
            out[i, j, 0] = (base | j) ^ y[i, 0]
            out[i, j, 1] = gid ^ y[i, 1]


@njit(cache=True, nogil=True)
def expand_pads(y, z, h, q, m, k, D, tops, F, R, pad, out):
    """Every pad as ``m`` digits mod q into ``out (N, m)``."""
    N = y.shape[0]
    B = pad.shape[0]
    for i0 in range(0, N, B):
        nk = min(B, N - i0)
        _expand_block(y, z, i0, nk, h, q, m, k, D, tops, F, R, pad)
        for i in range(nk):
            for j in range(m):
                out[i0 + i, j] = pad[i, j]


@njit(cache=True, nogil=True)
def xor_pads(y, z):
    """``z[i, j] ^= y[i]``: the hash outputs ``pi(y ^ t_j) ^ y`` in place."""
    for i in range(z.shape[0]):
        for j in range(z.shape[1]):
            z[i, j, 0] ^= y[i, 0]
            z[i, j, 1] ^= y[i, 1]


@njit(cache=True, inline="always")
def _field_mask(q):
    """``2^bits(q - 1) - 1``: the bits of a row entry into ``Z_q``."""
    mask = 1
    while mask < q - 1:
        mask = 2 * mask + 1
    return mask


@njit(cache=True, nogil=True, inline="always")
def _pad_chunks(zb, i, bp, m, fb):
    """``fb[0:m]``: the ``bp``-bit chunks (``bp`` a power of two) of the pad bytes ``zb[i]``,
    little-endian; a chunk never straddles a byte unless it is whole bytes.  One loop per
    width, so each has constant shifts; bits go 64 at a time (``fb`` holds ``m + 64``)."""
    if bp == 8:
        for j in range(m):
            fb[j] = zb[i, j]
    elif bp == 4:
        for t in range((m + 1) >> 1):
            v = zb[i, t]
            fb[2 * t] = v & 15
            fb[2 * t + 1] = v >> 4
    elif bp == 2:
        for t in range((m + 3) >> 2):
            v = zb[i, t]
            fb[4 * t] = v & 3
            fb[4 * t + 1] = (v >> 2) & 3
            fb[4 * t + 2] = (v >> 4) & 3
            fb[4 * t + 3] = v >> 6
    elif bp == 1:
        for g in range((m + 63) >> 6):  # 64 bits at a time (the pad is whole blocks)
            v = np.int64(0)
            for t in range(8):
                v |= np.int64(zb[i, 8 * g + t]) << (8 * t)
            for u in range(64):
                fb[64 * g + u] = (v >> u) & 1
    else:
        nb = bp >> 3
        for j in range(m):
            v = np.int64(0)
            for t in range(nb):
                v |= np.int64(zb[i, j * nb + t]) << (8 * t)
            fb[j] = v


@njit(cache=True, nogil=True, inline="always")
def _expand_strided(z, i0, step, nk, Z0, y0, h, q, m, k, D, tops, F, R, pad):
    """``pad[i]``: the pad ``z[i0 + i * step]`` (hash outputs, :func:`xor_pads` applied)
    expanded into ``m`` digits mod ``q``, for ``i < nk``; ``Z0`` holds the gathered pads and
    ``y0`` is zeros."""
    for i in range(nk):
        for j in range(h):
            Z0[i, j, 0] = z[i0 + i * step, j, 0]
            Z0[i, j, 1] = z[i0 + i * step, j, 1]
    _expand_block(y0, Z0, 0, nk, h, q, m, k, D, tops, F, R, pad)


@njit(cache=True, nogil=True, fastmath={"contract"})
def proj_garble(a0, table, tw, dq, E, p, q, M, h, k, D, tops, bp, F, R, pad, Z0, y0, z, zb,
                w0, w1, c0, rows):
    """Projection rows and output zero labels for wires ``w0 <= w < w1``.  The pads (hash
    outputs, :func:`xor_pads` applied) of wire ``w`` and colour ``r`` are ``z`` and its
    bytes ``zb`` at ``(w - w0) * p + r``; ``y0`` is zeros; ``f(x) = table[w * tw, x]``.  The
    pad of colour 0 is expanded into digits mod ``q`` (the output zero label); row
    ``r >= 1`` is the label of ``f(x_r)`` exclusive-or the fields of its pad (the low
    ``bits(q - 1)`` bits, ``mask``, of each chunk of :func:`_pad_chunks`)."""
    nq = dq.shape[1]
    bw = pad.shape[0]
    qf = float(q)
    invq = 1.0 / qf
    small = q < SMALL_Q  # label sums fit int32: reduce them in float64 (vectorised)
    mask = _field_mask(q)
    fld = np.empty(nq + 64, np.int64)  # chunks of one pad (rounded up to whole words)
    cf = np.empty(nq)
    df = np.empty(nq)
    # moduli up to 256: rows are bytes, and label sums below 2^17 reduce exactly in float32
    # (the quotient's error, below (q + 1) * 2^-23, stays under the margin 1/(2q))
    byte = q <= 256
    cf32 = np.empty(nq, np.float32)
    df32 = np.empty(nq, np.float32)
    qf32 = np.float32(q)
    invq32 = np.float32(1.0) / qf32
    half32 = np.float32(0.5)
    m8 = np.uint8(mask & 255)
    for v0 in range(w0, w1, bw):
        v1 = min(w1, v0 + bw)
        nw = v1 - v0
        _expand_strided(z, (v0 - w0) * p, p, nw, Z0, y0, h, q, nq, k, D, tops, F, R, pad)
        for w in range(v0, v1):
            bb = w // E
            s = a0[w, 0]
            ti = w * tw
            base = (w - w0) * p
            x0 = 0 if s == 0 else p - s
            f0 = table[ti, x0]
            for j in range(nq):
                c0[w, j] = _md(q + q * q - pad[w - v0, j] - f0 * dq[bb, j], q, M)
                cf[j] = float(c0[w, j])
                df[j] = float(dq[bb, j])
                cf32[j] = np.float32(c0[w, j])
                df32[j] = np.float32(dq[bb, j])
            for r in range(1, p):
                x = r - s
                if x < 0:
                    x += p
                f = table[ti, x]
                ff = float(f)
                if byte and bp == 8:  # the chunks are the pad's bytes: read in place
                    ff32 = np.float32(f)
                    for j in range(nq):
                        v32 = cf32[j] + ff32 * df32[j]
                        lab32 = v32 - qf32 * np.floor((v32 + half32) * invq32)
                        rows[w, r - 1, j] = np.uint8(np.int32(lab32)) ^ (zb[base + r, j] & m8)
                    continue
                _pad_chunks(zb, base + r, bp, nq, fld)
                if small:
                    for j in range(nq):
                        v = cf[j] + ff * df[j]
                        lab = np.int64(v - qf * np.floor((v + 0.5) * invq))
                        rows[w, r - 1, j] = lab ^ (fld[j] & mask)
                else:
                    for j in range(nq):
                        rows[w, r - 1, j] = ((c0[w, j] + f * dq[bb, j]) % q) ^ (fld[j] & mask)


@njit(cache=True, inline="always")
def _field(src, i, b):
    """Digit ``i`` of a bit-packed stream ``src`` (``b`` bits per digit, little-endian)."""
    bit = i * b
    at = bit >> 3
    v = np.int64(src[at]) >> (bit & 7)
    got = 8 - (bit & 7)
    while got < b:
        at += 1
        v |= np.int64(src[at]) << got
        got += 8
    return v & ((1 << b) - 1)


@njit(cache=True, nogil=True)
def select_rows(rows, packed, bits, nrows, lab, w0, w1, out):
    """``out[w - w0] = row[lab[w, 0] - 1]`` of wire ``w`` (zeros for colour 0) for
    ``w0 <= w < w1``: the one row of a gate's table the evaluator opens.  The rows are
    ``rows (W, nrows, n)``, or with ``bits > 0`` the same digits bit-packed in ``packed``
    (read in place: the other rows are never unpacked)."""
    n = out.shape[1]
    mask = (1 << bits) - 1
    for w in range(w0, w1):
        c = lab[w, 0]
        o = w - w0
        if c == 0:
            for j in range(n):
                out[o, j] = 0
        elif bits == 0:
            for j in range(n):
                out[o, j] = rows[w, c - 1, j]
        else:  # a bit reader over the row's bytes
            bit = (w * nrows + c - 1) * n * bits
            at = bit >> 3
            acc = np.int64(packed[at]) >> (bit & 7)
            have = 8 - (bit & 7)
            for j in range(n):
                while have < bits:
                    at += 1
                    acc |= np.int64(packed[at]) << have
                    have += 8
                out[o, j] = acc & mask
                acc >>= bits
                have -= bits


@njit(cache=True, nogil=True)
def select_cols(cols, packed, bits, ncols, lab, w0, w1, out):
    """``out[w - w0] = cols[w, lab[w, 0]]`` for ``cols (W, ncols)``, or packed as in
    :func:`select_rows`."""
    for w in range(w0, w1):
        c = lab[w, 0]
        if bits == 0:
            out[w - w0] = cols[w, c]
        else:
            out[w - w0] = _field(packed, w * ncols + c, bits)


@njit(cache=True, nogil=True)
def proj_eval(a, q, M, h, k, D, tops, bp, F, R, pad, Z0, idx, y0, z, zb, w0, w1, sel, out):
    """Active output labels for wires ``w0 <= w < w1`` with ``sel[w - w0]`` the row that the
    colour of ``a[w]`` opens (:func:`select_rows`) and the pads as in :func:`proj_garble`:
    ``row ^ fields(pad)``, or for colour 0 (no row) the negated pad expanded into digits mod
    ``q``.  Returns the number of opened fields above ``q - 1`` (only a damaged or forged
    row has any; they are brought into ``[0, q)`` so that the labels stay well formed, and
    the caller raises)."""
    nq = out.shape[1]
    bw = pad.shape[0]
    mask = _field_mask(q)
    bad = 0
    fld = np.empty(nq + 64, np.int64)
    for v0 in range(w0, w1, bw):
        v1 = min(w1, v0 + bw)
        n0 = 0
        for w in range(v0, v1):
            o = w - w0
            if a[w, 0] == 0 and q != 2:  # mod 2 the expansion is the field: no row is zeros
                idx[n0] = w
                for j in range(h):
                    Z0[n0, j, 0] = z[o, j, 0]
                    Z0[n0, j, 1] = z[o, j, 1]
                n0 += 1
            else:
                _pad_chunks(zb, o, bp, nq, fld)
                for j in range(nq):
                    v = sel[o, j] ^ (fld[j] & mask)
                    if v >= q:
                        bad += 1
                        v -= q
                    out[w, j] = v
        if n0 > 0:
            _expand_block(y0, Z0, 0, n0, h, q, nq, k, D, tops, F, R, pad)
            for t in range(n0):
                w = idx[t]
                for j in range(nq):
                    out[w, j] = _md(q - pad[t, j], q, M)
    return bad


@njit(cache=True, nogil=True)
def mixed_garble(a0, b0, r, g0, p, q, M, h, k, D, tops, bp, F, R, pad, Z0, y0, z, zb, w0, w1,
                 out0, rows_e, digits):
    """Evaluator half of the mixed half gate (see :mod:`dashc.runtime.gates`); the pads of
    wire ``w`` and colour ``s`` of ``y`` are ``z`` and ``zb`` at ``(w - w0) * q + s`` (as in
    :func:`proj_garble`): colour 0's is expanded into ``n(p) + 1`` digits mod ``p``, every
    other colour's is read as ``n(p) + 1`` fields."""
    n_p = a0.shape[1]
    m = n_p + 1
    zz = np.empty(n_p, np.int64)
    fld = np.empty(m + 64, np.int64)
    pp = p * p
    mask = _field_mask(p)
    bw = pad.shape[0]
    for v0 in range(w0, w1, bw):
        v1 = min(w1, v0 + bw)
        nw = v1 - v0
        _expand_strided(z, (v0 - w0) * q, q, nw, Z0, y0, h, p, m, k, D, tops, F, R, pad)
        for w in range(v0, v1):
            sb = b0[w, 0]
            rr = r[w]
            base = (w - w0) * q
            i = w - v0
            c = ((0 if sb == 0 else q - sb) + rr) % p
            digits[w, 0] = _md(c + pad[i, 0], p, M)
            for j in range(n_p):
                zz[j] = _md(c * a0[w, j] + p - pad[i, 1 + j], p, M)
                out0[w, j] = _md(zz[j] + p - g0[w, j], p, M)
            for s in range(1, q):
                ys = s - sb
                if ys < 0:
                    ys += q
                c = (ys + rr) % p
                _pad_chunks(zb, base + s, bp, m, fld)
                digits[w, s] = c ^ (fld[0] & mask)
                for j in range(n_p):
                    rows_e[w, s - 1, j] = (_md(zz[j] + pp - c * a0[w, j], p, M)
                                           ^ (fld[1 + j] & mask))


@njit(cache=True, nogil=True)
def mixed_eval(a, b, g, p, M, h, k, D, tops, bp, F, R, pad, Z0, idx, y0, z, zb, w0, w1,
               sel_rows, sel_digits, out):
    """Active label of ``x*y``: ``c*a + K - g`` with the row and digit that the colour ``s``
    of ``b[w]`` opens in ``sel_rows[w - w0]`` and ``sel_digits[w - w0]``: for ``s != 0``
    ``c = digit ^ field_0``, ``K = row ^ fields_1..``; for ``s = 0`` (no row)
    ``c = digit - pad_0`` and ``K = -pad_1..`` from the expanded pad.  Returns the number of
    opened values above ``p - 1`` (see :func:`proj_eval`)."""
    n_p = a.shape[1]
    m = n_p + 1
    p2 = 2 * p
    bw = pad.shape[0]
    mask = _field_mask(p)
    fld = np.empty(m + 64, np.int64)
    bad = 0
    for v0 in range(w0, w1, bw):
        v1 = min(w1, v0 + bw)
        n0 = 0
        for w in range(v0, v1):
            o = w - w0
            if b[w, 0] == 0:
                idx[n0] = w
                for j in range(h):
                    Z0[n0, j, 0] = z[o, j, 0]
                    Z0[n0, j, 1] = z[o, j, 1]
                n0 += 1
                continue
            _pad_chunks(zb, o, bp, m, fld)
            c = sel_digits[o] ^ (fld[0] & mask)
            if c >= p:
                bad += 1
                c -= p
            for j in range(n_p):
                kj = sel_rows[o, j] ^ (fld[1 + j] & mask)
                if kj >= p:
                    bad += 1
                    kj -= p
                out[w, j] = _md(c * a[w, j] + kj + p - g[w, j], p, M)
        if n0 > 0:
            _expand_block(y0, Z0, 0, n0, h, p, m, k, D, tops, F, R, pad)
            for t in range(n0):
                w = idx[t]
                c = _md(sel_digits[w - w0] + p - pad[t, 0], p, M)
                for j in range(n_p):
                    out[w, j] = _md(c * a[w, j] + p2 - pad[t, 1 + j] - g[w, j], p, M)
    return bad


# -- free operations on label digits (flat int64 arrays of residues in [0, q)) ------------

@njit(cache=True, nogil=True)
def add_mod(a, b, q, out):
    """``out = a + b mod q``."""
    for i in range(a.shape[0]):
        v = a[i] + b[i]
        out[i] = v - q if v >= q else v


@njit(cache=True, nogil=True)
def sub_mod(a, b, q, out):
    """``out = a - b mod q``."""
    for i in range(a.shape[0]):
        v = a[i] - b[i]
        out[i] = v + q if v < 0 else v


@njit(cache=True, nogil=True)
def cmul_mod(a, c, q, out):
    """``out = a * c mod q`` for ``0 <= c < q``: in float64 when ``a * c < q^2 < 2^52``
    (``floor((v + 1/2) / q)`` is exact there), else the integer remainder."""
    if q < 1 << 26:
        qf = float(q)
        inv = 1.0 / qf
        for i in range(a.shape[0]):
            v = float(a[i] * c)
            out[i] = np.int64(v - qf * np.floor((v + 0.5) * inv))
    else:
        for i in range(a.shape[0]):
            out[i] = (a[i] * c) % q


@njit(cache=True, nogil=True)
def add_rows(a, d, q, out):
    """``out[b, e] = a[b, e] + d[b] mod q`` for ``a (B, E, n)`` and ``d (B, n)``."""
    for b in range(a.shape[0]):
        for e in range(a.shape[1]):
            for j in range(a.shape[2]):
                v = a[b, e, j] + d[b, j]
                out[b, e, j] = v - q if v >= q else v


@njit(cache=True, nogil=True)
def add_scaled_rows(a, c, d, q, out):
    """``out[b, e] = a[b, e] + c[b, e] * d[b] mod q`` for ``a (B, E, n)``, ``c (B, E)`` and
    ``d (B, n)`` in ``[0, q)`` (float64 reduction below ``2^26``, as :func:`cmul_mod`)."""
    small = q < 1 << 26
    qf = float(q)
    inv = 1.0 / qf
    for b in range(a.shape[0]):
        for e in range(a.shape[1]):
            ce = c[b, e]
            if small:
                for j in range(a.shape[2]):
                    v = float(a[b, e, j] + ce * d[b, j])
                    out[b, e, j] = np.int64(v - qf * np.floor((v + 0.5) * inv))
            else:
                for j in range(a.shape[2]):
                    out[b, e, j] = (a[b, e, j] + (ce * d[b, j]) % q) % q


# -- CRT reconstruction (the plain simulation's overflow monitor) --------------------------

@njit(cache=True, nogil=True)
def crt_signed(res, moduli, inv, out):
    """``res (K, N)`` residues mod ``moduli`` -> ``out (N,)`` the signed integers in
    ``[-M/2, M/2)`` (Garner's mixed radix per element; ``inv[i, j]`` is the inverse of
    ``moduli[i]`` mod ``moduli[j]``; ``M < 2^62``, so every sum fits int64)."""
    K, N = res.shape
    M = 1
    for i in range(K):
        M *= moduli[i]
    top = (M + 1) // 2 if M % 2 else M // 2
    rest = np.empty(K, np.int64)
    for e in range(N):
        for i in range(K):
            rest[i] = res[i, e]
        x = 0
        w = 1
        for i in range(K):
            a = rest[i]
            x += a * w
            w *= moduli[i]
            for j in range(i + 1, K):
                v = rest[j] - a
                if v < 0:
                    v += moduli[j]
                rest[j] = (v * inv[i, j]) % moduli[j]
        out[e] = x - M if x >= top else x
