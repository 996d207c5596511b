"""Gadgets on CRT values, written once against the :class:`~dashc.runtime.backend.Backend`
protocol.

Every gadget takes a backend ``bk`` and :class:`CrtTensor` values and branches on moduli and
shapes only, never on values, so the same code simulates (PlainBackend), garbles (Garbler)
and evaluates (Evaluator).  Values are signed integers in ``[-M/2, M/2)`` (for odd ``M``:
``[-(M-1)/2, (M-1)/2]``), ``M`` the product of the tensor's moduli.

Ciphertext counts are per element and use ``rows(proj p->q) = p - 1`` (garbled row
reduction); ``H(p)`` below stands for the rows of one mixed-modulus half gate multiplying a
value mod ``p`` by a bit mod 2 (see :mod:`dashc.runtime.counter` for the model in use).
``MRC(order) = sum_i (k - 1 - i) * (p_i - 1)`` is the cost of a mixed-radix conversion in
that order (each digit projected into every later modulus); ascending order is cheapest.
"""
from __future__ import annotations

import math
from typing import Any, Sequence

import numpy as np

from dashc import crt
from dashc.runtime.backend import CrtTensor

# -- mixed-radix conversion -------------------------------------------------------------


def mrc_order(moduli: Sequence[int], last: int | None = None) -> tuple[int, ...]:
    """The cheapest conversion order: ascending moduli, ``last`` (if given) moved to the end.

    ``MRC(order)`` weights digit ``i`` by the ``k - 1 - i`` later moduli it is projected
    into, so small moduli go first."""
    order = sorted(int(q) for q in moduli)
    if last is not None:
        if last not in order:
            raise ValueError(f"modulus {last} is not in the base {tuple(moduli)}")
        order.remove(last)
        order.append(last)
    return tuple(order)


def mrc_cost(order: Sequence[int]) -> int:
    """Ciphertexts per element of :func:`mrc_digits` in ``order``."""
    k = len(order)
    return sum((k - 1 - i) * (p - 1) for i, p in enumerate(order))


def mrc_digits(bk, x: CrtTensor, order: Sequence[int] | None = None) -> list:
    """Mixed-radix digits of ``x mod M`` (Garner's algorithm on wires).

    Returns wires ``a_0 .. a_{k-1}``, ``a_i`` modulo ``order[i]`` with values in
    ``[0, order[i])``, such that ``x mod M = sum_i a_i * prod(order[:i])``.  Digit ``a_i`` is
    projected into every later modulus ``q`` with the table ``v -> -v * p_i^-1 mod q``
    (the factor ``p_i^-1`` folded in), and the running residue is multiplied by
    ``p_i^-1`` for free.  Ciphertexts per element: ``MRC(order)``.  Default order:
    :func:`mrc_order` of ``x.moduli``.
    """
    order = mrc_order(x.moduli) if order is None else tuple(int(q) for q in order)
    if set(order) - set(x.moduli):
        raise ValueError(f"conversion order {order} uses moduli missing from {x.moduli}")
    rest = {q: x[q] for q in order}
    digits = []
    for i, p in enumerate(order):
        a = rest[p]
        digits.append(a)
        for q in order[i + 1:]:
            inv = crt.inverse(p, q)
            table = (-np.arange(p, dtype=np.int64) * inv) % q
            rest[q] = bk.add(bk.cmul(rest[q], inv), bk.proj(a, q, table))
    return digits


def _sum(bk, wires: list):
    out = wires[0]
    for w in wires[1:]:
        out = bk.add(out, w)
    return out


# -- sign, ReLU -------------------------------------------------------------------------


def sign_bit_cost(moduli: Sequence[int]) -> int:
    """Ciphertexts per element of :func:`sign_bit`."""
    if 2 in moduli:
        return mrc_cost(mrc_order(moduli, last=2))
    return mrc_cost(mrc_order(moduli)) + sum(p - 1 for p in moduli)


def sign_bit(bk, x: CrtTensor):
    """The bit ``[x < 0]`` as a wire mod 2, exact on the whole of ``Z_M``.

    * ``2`` in the base: mixed-radix conversion with 2 as the last modulus.  The last digit
      of ``x mod M`` has weight ``M/2`` and the lower digits sum to less than ``M/2``, so it
      is ``[x mod M >= M/2] = [x < 0]``.  Ciphertexts: ``MRC(order, 2 last)``, e.g. 194 for
      the first 8 primes.
    * all moduli odd: ``y = 2x mod M`` is even iff ``x >= 0`` (``x >= 0`` gives ``2x`` in
      ``[0, M)``; ``x < 0`` gives ``2x + M``, odd).  Every radix weight is a product of odd
      primes, hence odd, so the parity of ``y`` is the sum of its digits mod 2: each digit is
      projected to mod 2 and the bits are added.  Ciphertexts: ``MRC(ascending) +
      sum_i (p_i - 1)``, e.g. 612 for (37, 167, 173).
    """
    moduli = x.moduli
    if 2 in moduli:
        return mrc_digits(bk, x, mrc_order(moduli, last=2))[-1]
    doubled = x.map(lambda w: bk.cmul(w, 2))
    digits = mrc_digits(bk, doubled, mrc_order(moduli))
    return _sum(bk, [bk.proj(a, 2, np.arange(a.q, dtype=np.int64) % 2) for a in digits])


def _bit_times(bk, w, bit):
    """``w * bit`` for a wire ``w`` mod q and a wire ``bit`` mod 2 (one half gate)."""
    if w.q == bit.q:
        return bk.mul(w, bit)
    return bk.mixed_mul(w, bit)


def relu(bk, x: CrtTensor) -> CrtTensor:
    """``max(x, 0) = x * (1 - [x < 0])``, exact on ``Z_M``.

    One :func:`sign_bit`, its complement (free), then one half gate per modulus: a
    mixed-modulus half gate ``x mod q`` times the bit (the same-modulus half gate for
    ``q = 2``).  Ciphertexts: ``sign_bit_cost + sum_q H(q)``."""
    keep = bk.add_const(bk.neg(sign_bit(bk, x)), 1)
    return x.map(lambda w: _bit_times(bk, w, keep))


def _constant_like(bk, w, c: int):
    """A wire of the same modulus and shape as ``w`` holding the public constant ``c``
    (``0 * w + c``, free: its labels carry no secret)."""
    return bk.add_const(bk.cmul(w, 0), c)


def sign(bk, x: CrtTensor) -> CrtTensor:
    """The sign activation ``+1 if x >= 0 else -1``.

    The bit ``s = [x < 0]`` is projected into every odd modulus with the table
    ``(1, -1 mod q)``; modulo 2 the result is the constant 1.  Ciphertexts:
    ``sign_bit_cost + (number of odd moduli)``."""
    s = sign_bit(bk, x)
    parts = {}
    for q in x.moduli:
        if q == 2:
            parts[q] = _constant_like(bk, s, 1)
        else:
            parts[q] = bk.proj(s, q, np.array([1, q - 1], dtype=np.int64))
    return CrtTensor(parts)


# -- base extension and rescale ---------------------------------------------------------


def base_extend_cost(source_moduli: Sequence[int], n_targets: int = 1) -> int:
    """Ciphertexts per element of :func:`base_extend`."""
    return mrc_cost(mrc_order(source_moduli)) + n_targets * sum(p - 1 for p in source_moduli)


def base_extend(bk, x: CrtTensor, source_moduli: Sequence[int], target_q: int | Sequence[int]):
    """Exact base extension: the residues modulo ``target_q`` of the value that the wires of
    ``source_moduli`` represent.

    The value must lie in the signed range of ``Ms = prod(source_moduli)``.  With
    ``shift = Ms // 2``, ``z = x + shift`` lies in ``[0, Ms)``; its mixed-radix digits
    ``a_i`` (ascending order) give ``z = sum_i a_i w_i`` over the integers, so
    ``x mod t = sum_i proj(a_i, v -> v * w_i mod t) - shift``.  The radix weights are folded
    into the projection tables; the shifts are free.  Returns one wire for an integer
    ``target_q``, a CrtTensor over the targets for a sequence.  Ciphertexts per element:
    ``MRC(ascending source) + (number of targets) * sum_i (p_i - 1)``.
    """
    source = tuple(int(q) for q in source_moduli)
    targets = (int(target_q),) if np.isscalar(target_q) else tuple(int(t) for t in target_q)
    if set(targets) & set(source):
        raise ValueError(f"targets {targets} overlap the source moduli {source}")
    shift = math.prod(source) // 2
    z = CrtTensor({q: bk.add_const(x[q], shift % q) for q in source})
    order = mrc_order(source)
    digits = mrc_digits(bk, z, order)
    out = {}
    for t in targets:
        weight = 1
        terms = []
        for a, p in zip(digits, order):
            table = (np.arange(p, dtype=np.int64) * (weight % t)) % t
            terms.append(bk.proj(a, t, table))
            weight *= p
        out[t] = bk.add_const(_sum(bk, terms), (-shift) % t)
    return out[targets[0]] if np.isscalar(target_q) else CrtTensor(out)


RESCALE_METHODS = ("extend", "sign")


def rescale_input_max(moduli: Sequence[int], d: int) -> int:
    """Largest input that :func:`rescale` by ``d`` accepts: ``x + d // 2`` must stay in the
    signed range (the lower end of the range is always accepted)."""
    return crt.signed_range(moduli)[1] - d // 2


def rescale_cost(moduli: Sequence[int], d: int, method: str = "extend") -> int:
    """Ciphertexts per element of :func:`rescale`."""
    rest = [q for q in moduli if q != d]
    drop = (len(moduli) - 1) * (d - 1)
    if method == "sign":
        return drop + sign_bit_cost(rest)
    return drop + base_extend_cost(rest)


def rescale(bk, x: CrtTensor, d: int, bound: int | None = None, method: str = "extend") -> CrtTensor:
    """Divide by a modulus ``d`` of the base, rounding half up, in the same base:
    ``y = floor((x + d // 2) / d)`` (``ceil(x / 2)`` for ``d = 2``).

    Input bound: ``-M/2 <= x`` and ``x + d // 2`` within the signed range of ``M``, i.e.
    ``x <= rescale_input_max(moduli, d)``; then ``y`` lies in the signed range of
    ``M / d`` and the result is exact.  (For ``d = 2``, or ``M / d`` odd, that is the whole
    of ``Z_M`` except the top ``d // 2`` values.)  ``bound`` (a proven ``|x|`` bound) is
    checked against it when given.

    Steps: add ``d // 2`` (free); project the mod-``d`` residue ``r`` into every other
    modulus ``q`` with the table ``v -> -v * d^-1 mod q`` and add it to ``(x + d//2) * d^-1``
    (free), giving ``y mod q``; recover ``y mod d`` from the other moduli:

    * ``method="extend"``: exact :func:`base_extend` of ``y`` to ``d``;
    * ``method="sign"`` (``d = 2`` only, the Dash paper's way): ``u = y + (M'-1)/2`` lies in
      ``[0, M')`` (``M' = M/2``, odd) and its parity is the sign bit of ``u * 2^-1 mod M'``
      in the odd base, computed by :func:`sign_bit`; the parity of ``y`` follows by
      removing the shift mod 2.

    Ciphertexts per element: ``(k - 1)(d - 1) + base_extend_cost(others)`` (``extend``) or
    ``(k - 1)(d - 1) + sign_bit_cost(others)`` (``sign``).  With the exact MRC sign both
    equal ``(k-1)(d-1) + MRC(others) + sum_{q != d} (q - 1)``: 201 for ``d = 2`` and the
    first 8 primes.
    """
    moduli = x.moduli
    d = int(d)
    if d not in moduli:
        raise ValueError(f"rescale divisor {d} is not a modulus of the base {moduli}")
    if len(moduli) < 2:
        raise ValueError("rescale needs at least two moduli")
    if method not in RESCALE_METHODS:
        raise ValueError(f"unknown rescale method {method!r}; expected one of {RESCALE_METHODS}")
    if method == "sign" and d != 2:
        raise ValueError("rescale method 'sign' divides by 2 only")
    if bound is not None:
        lo = crt.signed_range(moduli)[0]
        if bound > rescale_input_max(moduli, d) or -bound < lo:
            raise ValueError(f"rescale by {d} needs |x| <= {rescale_input_max(moduli, d)} "
                             f"in base {moduli}; the input bound is {bound}")
    xs = {q: bk.add_const(x[q], (d // 2) % q) for q in moduli}
    r = xs[d]
    rest = tuple(q for q in moduli if q != d)
    y = {}
    for q in rest:
        inv = crt.inverse(d, q)
        table = (-np.arange(d, dtype=np.int64) * inv) % q
        y[q] = bk.add(bk.cmul(xs[q], inv), bk.proj(r, q, table))
    ys = CrtTensor(y)
    if method == "extend":
        yd = base_extend(bk, ys, rest, d)
    else:
        m_odd = math.prod(rest)
        shift = (m_odd - 1) // 2
        inv2 = {q: crt.inverse(2, q) for q in rest}
        w = CrtTensor({q: bk.cmul(bk.add_const(y[q], shift % q), inv2[q]) for q in rest})
        yd = bk.add_const(sign_bit(bk, w), shift % 2)
    return CrtTensor({q: (yd if q == d else y[q]) for q in moduli})


# -- max and pooling --------------------------------------------------------------------


def maximum(bk, x: CrtTensor, y: CrtTensor) -> CrtTensor:
    """``max(x, y) = x + relu(y - x)``; requires ``|x|, |y| <= M/4`` so that ``y - x``
    does not wrap.  Ciphertexts: those of :func:`relu`."""
    diff = y.zip(x, bk.sub)
    return x.zip(relu(bk, diff), bk.add)


def _append_zero(bk, w, n: int):
    """``(B, n)`` wire -> ``(B, n + 1)`` with a zero appended (free: zero padding)."""
    B = w.shape[0]
    w = bk.reshape(w, (B, 1, 1, n))
    w = bk.sumpool(w, (1, 1), (1, 1), (0, 0, 0, 1))
    return bk.reshape(w, (B, n + 1))


def _concat_last(bk, a: CrtTensor, b: CrtTensor) -> CrtTensor:
    """Concatenate ``(B, N, ha)`` and ``(B, N, hb)`` along the last axis with free ops:
    each operand gets a zero appended and is gathered with the zero filling the other's
    slots, then the two are added."""
    B, N, ha = a.shape
    hb = b.shape[2]
    ia = np.full((N, ha + hb), N * ha, dtype=np.int64)
    ia[:, :ha] = np.arange(N * ha).reshape(N, ha)
    ib = np.full((N, ha + hb), N * hb, dtype=np.int64)
    ib[:, ha:] = np.arange(N * hb).reshape(N, hb)

    def gather(w, n, idx):
        return bk.take(_append_zero(bk, bk.reshape(w, (B, n)), n), idx)

    return a.zip(b, lambda wa, wb: bk.add(gather(wa, N * ha, ia), gather(wb, N * hb, ib)))


def reduce_max(bk, x: CrtTensor) -> CrtTensor:
    """Maximum over the last axis of ``(B, N, K)`` -> ``(B, N)``: a pairwise tree, each level
    one vectorised :func:`maximum` over all windows; an odd element is carried to the next
    level.  ``K - 1`` maxima per window."""
    B, N, K = x.shape
    while K > 1:
        h = K // 2
        base = (np.arange(N, dtype=np.int64) * K)[:, None]
        even = base + 2 * np.arange(h, dtype=np.int64)
        a = x.map(lambda w: bk.take(w, even))
        b = x.map(lambda w: bk.take(w, even + 1))
        m = maximum(bk, a, b)
        if K % 2:
            last = base + (K - 1)
            m = _concat_last(bk, m, x.map(lambda w: bk.take(w, last)))
        x = m
        K = x.shape[2]
    return x.map(lambda w: bk.reshape(w, (B, N)))


def pool_windows(shape: tuple[int, int, int], kernel: Sequence[int], stride: Sequence[int]) -> np.ndarray:
    """Flat indices ``(C, Ho, Wo, kh*kw)`` of every pooling window of a ``(C, H, W)`` tensor
    (no padding: pad first)."""
    C, H, W = shape
    kh, kw = (int(k) for k in kernel)
    sh, sw = (int(s) for s in stride)
    Ho, Wo = (H - kh) // sh + 1, (W - kw) // sw + 1
    if Ho < 1 or Wo < 1:
        raise ValueError(f"pooling window {kh}x{kw} larger than the padded input {H}x{W}")
    c = np.arange(C).reshape(C, 1, 1, 1, 1)
    i = (np.arange(Ho) * sh).reshape(1, Ho, 1, 1, 1) + np.arange(kh).reshape(1, 1, 1, kh, 1)
    j = (np.arange(Wo) * sw).reshape(1, 1, Wo, 1, 1) + np.arange(kw).reshape(1, 1, 1, 1, kw)
    return (c * H * W + i * W + j).reshape(C, Ho, Wo, kh * kw).astype(np.int64)


def pad2d(bk, x: CrtTensor, pads: Sequence[int], pad_value: int = 0) -> CrtTensor:
    """Pad the two last axes of ``(B, C, H, W)`` by ``pads = (top, left, bottom, right)``
    with the public value ``pad_value`` (free: a 1x1 sum pool with zero padding, then a
    constant on the padded cells)."""
    top, left, bottom, right = (int(p) for p in pads)
    if not any((top, left, bottom, right)):
        return x
    out = x.map(lambda w: bk.sumpool(w, (1, 1), (1, 1), (top, left, bottom, right)))
    if pad_value:
        H, W = out.shape[2], out.shape[3]
        mask = np.full((H, W), int(pad_value), dtype=np.int64)
        mask[top:H - bottom, left:W - right] = 0
        out = out.map(lambda w: bk.add_const(w, mask))
    return out


def maxpool(bk, x: CrtTensor, kernel: Sequence[int], stride: Sequence[int],
            pads: Sequence[int] = (0, 0, 0, 0), pad_value: int = 0) -> CrtTensor:
    """Window maxima of ``(B, C, H, W)``; padded cells hold ``pad_value``.  Windows are
    gathered with ``take`` and reduced by :func:`reduce_max`.  Requires ``|x| <= M/4`` (and
    ``|pad_value| <= M/4``).  Ciphertexts per output element: ``(kh*kw - 1)`` ReLUs."""
    x = pad2d(bk, x, pads, pad_value)
    B, C, H, W = x.shape
    win = pool_windows((C, H, W), kernel, stride)
    _, Ho, Wo, K = win.shape
    windows = x.map(lambda w: bk.take(w, win.reshape(C * Ho * Wo, K)))
    out = reduce_max(bk, windows)
    return out.map(lambda w: bk.reshape(w, (B, C, Ho, Wo)))
