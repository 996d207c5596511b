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
        _garner_step(bk, rest, a, p, order[i + 1:])
    return digits


def _garner_step(bk, rest: dict, a, p: int, later: Sequence[int]) -> None:
    """``rest[q] <- (rest[q] - a) * p^-1 mod q`` for every later modulus, the digit ``a``
    projected into all of them in one multi-target gate."""
    if not later:
        return
    invs = [crt.inverse(p, q) for q in later]
    tables = [(q, (-np.arange(p, dtype=np.int64) * inv) % q) for q, inv in zip(later, invs)]
    for q, inv, lifted in zip(later, invs, bk.proj_many(a, tables)):
        rest[q] = bk.add(bk.cmul(rest[q], inv), lifted)


def _weighted_sum_into(bk, digits: list, order: Sequence[int], targets: Sequence[int]) -> dict:
    """``{t: sum_i a_i * w_i mod t}`` with ``w_i = prod(order[:i])``: each digit projected
    into every target in one multi-target gate, the radix weights folded into the tables."""
    terms: dict[int, list] = {t: [] for t in targets}
    weight = 1
    for a, p in zip(digits, order):
        tables = [(t, (np.arange(p, dtype=np.int64) * (weight % t)) % t) for t in targets]
        for t, lifted in zip(targets, bk.proj_many(a, tables)):
            terms[t].append(lifted)
        weight *= p
    return {t: _sum(bk, terms[t]) for t in targets}


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
    odd = [q for q in x.moduli if q != 2]
    lifted = dict(zip(odd, bk.proj_many(s, [(q, np.array([1, q - 1], dtype=np.int64))
                                            for q in odd]))) if odd else {}
    return CrtTensor({q: _constant_like(bk, s, 1) if q == 2 else lifted[q]
                      for q in x.moduli})


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
    sums = _weighted_sum_into(bk, digits, order, targets)
    out = {t: bk.add_const(sums[t], (-shift) % t) for t in targets}
    return out[targets[0]] if np.isscalar(target_q) else CrtTensor(out)


RESCALE_METHODS = ("extend", "sign")


def rescale_subset(moduli: Sequence[int], divisor: int) -> tuple[int, ...]:
    """The moduli ``S`` (ascending) whose product is ``divisor``.

    A rescale divisor is a product of distinct moduli of the base that leaves at least one
    modulus out; anything else raises ValueError."""
    d = int(divisor)
    subset = tuple(sorted(int(q) for q in moduli if d % int(q) == 0))
    if d < 2 or math.prod(subset) != d:
        raise ValueError(f"rescale divisor {d} is not a product of distinct moduli of the "
                         f"base {tuple(moduli)}")
    if len(subset) == len(moduli):
        raise ValueError(f"rescale divisor {d} uses every modulus of the base {tuple(moduli)}")
    return subset


class _Layout:
    """How :func:`rescale` by ``D = prod(S)`` runs in ``moduli``.

    ``order``: the conversion order of ``R`` (the moduli outside ``S``) after ``S``;
    ``c``: the offset of ``v = floor((x + s) / D) = y + c`` with ``s = D // 2 + c * D``;
    ``sign``: how ``[y >= 0]`` is read off the last digit ``b`` of ``v`` (``"digit"``: 2
    is last and ``b`` is the bit; ``"threshold"``: ``[b >= t]``, one projection), None
    without a ReLU.  With a ReLU the last modulus is the one that makes the whole gadget
    cheapest (ties: 2, then the largest)."""

    def __init__(self, moduli: Sequence[int], divisor: int, relu: bool):
        self.subset = rescale_subset(moduli, divisor)
        self.D = int(divisor)
        rest = sorted(int(q) for q in moduli if int(q) not in self.subset)
        self.M = math.prod(int(q) for q in moduli)
        m_rest = self.M // self.D
        self.sign: str | None = None
        self.t = 0
        self.c = m_rest // 2
        if relu:
            def cost(last: int) -> tuple[int, bool, int]:
                order = tuple(q for q in rest if q != last) + (last,)
                extra = 0 if last == 2 else last - 1
                return mrc_cost(self.subset + order) + extra, last != 2, -last

            last = min(rest, key=cost)
            rest.remove(last)
            rest.append(last)
            if last == 2:
                self.sign = "digit"
            else:
                self.sign, self.t = "threshold", (last - 1) // 2
                self.c = self.t * (m_rest // last)
        self.order = tuple(rest)
        self.shift = self.D // 2 + self.c * self.D


def rescale_input_range(moduli: Sequence[int], divisor: int, relu: bool = False,
                        method: str = "extend") -> tuple[int, int]:
    """The inputs ``[lo, hi]`` on which :func:`rescale` by ``divisor`` (fused with a ReLU
    when ``relu``) is exact: those with ``0 <= x + s < M`` for its shift ``s``, within the
    signed range.

    * no ReLU, ``M / D`` odd (no 2 in the base, or 2 in ``S``): the whole signed range.
    * no ReLU, ``M / D`` even (2 in the base, not in ``S``): ``x <= M/2 - 1 - D // 2``;
      the same with a ReLU whose sign is the digit of 2.
    * a ReLU whose sign is a threshold on the digit of ``p`` (see :func:`relu_rescale`):
      ``x >= -(D // 2 + (p - 1)/2 * M/p)``, about ``M/(2p)`` short of ``-M/2``.
    * ``method="sign"`` (``d = 2``): ``x + 1`` within the signed range.
    """
    lay = _Layout(moduli, divisor, relu)
    lo, hi = crt.signed_range(moduli)
    if method == "sign":
        return lo, hi - 1
    return max(lo, -lay.shift), min(hi, lay.M - 1 - lay.shift)


def rescale_input_max(moduli: Sequence[int], d: int, method: str = "extend") -> int:
    """Largest input that :func:`rescale` by ``d`` accepts (see
    :func:`rescale_input_range`)."""
    return rescale_input_range(moduli, d, method=method)[1]


def _half_gate_rows(q: int) -> int:
    """Rows of ``w mod q`` times a bit mod 2 in :func:`_bit_times` (the counter's model:
    ``(q - 1) + 1``; the same-modulus half gate for ``q = 2`` has ``2 (2 - 1)``)."""
    return q


def rescale_cost(moduli: Sequence[int], d: int, method: str = "extend",
                 relu: bool = False) -> int:
    """Ciphertexts per element of :func:`rescale` (``relu=True``: of :func:`relu_rescale`)."""
    if method == "sign":
        rest = [q for q in moduli if q != d]
        return (len(moduli) - 1) * (d - 1) + sign_bit_cost(rest)
    lay = _Layout(moduli, d, relu)
    cost = mrc_cost(lay.subset + lay.order)
    cost += len(lay.subset) * sum(q - 1 for q in lay.order)
    if relu:  # the half gates and the sign projection (see relu_rescale)
        cost += sum(_half_gate_rows(q) for q in moduli)
        if lay.sign == "threshold":
            cost += lay.order[-1] - 1
    return cost


def rescale(bk, x: CrtTensor, d: int, bound: int | None = None, method: str = "extend",
            relu: bool = False) -> CrtTensor:
    """Divide by ``d``, rounding half up, in the same base: ``y = floor((x + d // 2) / d)``
    (``ceil(x / 2)`` for ``d = 2``); with ``relu``, ``max(y, 0)`` (see
    :func:`relu_rescale`).

    ``d`` is a product of distinct moduli ``S`` of the base (:func:`rescale_subset`), ``R``
    the moduli outside ``S``, ``M' = M / d`` their product.  The result is exact for every
    ``x`` in :func:`rescale_input_range`; ``bound`` (a proven ``|x|`` bound) is checked
    against it when given.

    ``method="extend"`` (any ``d``), one mixed-radix conversion in the order ``S`` then
    ``R``:

    1. add the public shift ``s = d // 2 + c d`` (free); ``u = x + s`` lies in ``[0, M)``.
    2. Garner over ``S``: after the digits of ``S`` the running residues modulo ``q`` in
       ``R`` are exactly ``v = floor(u / d) = y + c`` (``u`` minus its residue mod ``d``,
       times ``d^-1``), so ``y mod q = v mod q - c`` (free).
    3. Garner goes on over ``R``, giving the mixed-radix digits ``b_j`` of ``v < M'``; the
       lost residues follow by exact base extension, ``y mod p = sum_j proj(b_j, b -> b
       W_j mod p) - c`` for ``p`` in ``S`` (radix weights ``W_j`` folded into the tables).

    The offset ``c = floor(M' / 2)`` keeps ``u`` non-negative.  With 2 in ``R`` the range
    ends ``d // 2`` below ``M/2`` (and, 2 last in the order, ``v >= M'/2`` exactly when
    ``y >= 0``: the last digit is the sign bit of ``y``).  With ``M'`` odd, the shift is
    ``(M - 1) / 2`` and every ``x`` of ``Z_M`` is accepted.

    ``method="sign"`` (``d = 2`` only, the Dash paper's way): ``u = y + (M'-1)/2`` lies in
    ``[0, M')`` (``M'`` odd) and its parity is the sign bit of ``u * 2^-1 mod M'`` in the
    odd base, computed by :func:`sign_bit`; the parity of ``y`` follows by removing the
    shift mod 2.

    Ciphertexts per element (:func:`rescale_cost`): ``MRC(S then R) + |S| sum_{q in R}
    (q - 1)``: 201 for ``d = 2`` and the first 8 primes, 363 for ``d = 19 * 17 * 13`` there
    against 733 for three single-prime rescales.  (With ``relu`` the last modulus of ``R``
    carries the sign: see :func:`relu_rescale`.)
    """
    moduli = x.moduli
    d = int(d)
    if method not in RESCALE_METHODS:
        raise ValueError(f"unknown rescale method {method!r}; expected one of {RESCALE_METHODS}")
    if method == "sign" and (d != 2 or relu):
        raise ValueError("rescale method 'sign' divides by 2 only, without a ReLU")
    if len(moduli) < 2:
        raise ValueError("rescale needs at least two moduli")
    lay = _Layout(moduli, d, relu)
    if bound is not None:
        lo, hi = rescale_input_range(moduli, d, relu, method)
        if bound > hi or -bound < lo:
            raise ValueError(f"{'relu_' if relu else ''}rescale by {d} needs {lo} <= x <= {hi}"
                             f" in base {moduli}; the input bound is {bound}")
    if method == "sign":
        return _rescale_by_sign(bk, x)
    u = {q: bk.add_const(x[q], lay.shift % q) for q in moduli}
    rest = lay.order
    for i, p in enumerate(lay.subset):
        _garner_step(bk, u, u[p], p, lay.subset[i + 1:] + rest)
    v = CrtTensor({q: u[q] for q in rest})
    digits = mrc_digits(bk, v, rest)
    y = {q: bk.add_const(v[q], (-lay.c) % q) for q in rest}
    sums = _weighted_sum_into(bk, digits, rest, lay.subset)
    for p in lay.subset:
        y[p] = bk.add_const(sums[p], (-lay.c) % p)
    out = CrtTensor({q: y[q] for q in moduli})
    if not relu:
        return out
    if lay.sign == "digit":
        keep = digits[-1]
    else:
        a = digits[-1]
        keep = bk.proj(a, 2, (np.arange(a.q, dtype=np.int64) >= lay.t).astype(np.int64))
    return out.map(lambda w: _bit_times(bk, w, keep))


def relu_rescale(bk, x: CrtTensor, d: int, bound: int | None = None) -> CrtTensor:
    """``max(floor((x + d // 2) / d), 0)``: :func:`rescale` fused with a ReLU.

    ReLU and rescale commute (``floor((max(x, 0) + h) / d) = max(floor((x + h) / d), 0)``
    for ``0 <= h < d``), and the conversion of ``v = y + c`` yields the sign of ``y`` from
    its last digit ``b``, whose modulus ``p`` is chosen last in the order of ``R``:

    * ``p = 2`` (2 in the base, outside ``S``): with ``c = M'/2``, ``b = [v >= M'/2] =
      [y >= 0]`` is the sign bit itself.
    * ``p`` odd: with ``W = M'/p`` the weight of ``b``, ``t = (p - 1)/2`` and the offset
      ``c = t W``, ``y >= 0`` exactly when ``b >= t``: one projection ``p -> 2``.  Moving 2
      to the end of the order costs every later-converted modulus a projection into 2, so
      this is often the cheaper choice; the input range then ends about ``M/(2p)`` short
      of ``-M/2`` (:func:`rescale_input_range`).

    Then one half gate per modulus (``y mod q`` times the bit).  Ciphertexts per element:
    ``MRC(S then R) + |S| sum_{q in R} (q - 1) + sum_q H(q)`` (plus ``p - 1`` for an odd
    ``p``), with ``p`` the cheapest; for the first 8 primes and ``d = 19 * 17 * 13``, 450
    against 363 + 271 = 634 for a rescale and a separate ReLU."""
    return rescale(bk, x, d, bound=bound, relu=True)


def _rescale_by_sign(bk, x: CrtTensor) -> CrtTensor:
    """``ceil(x / 2)`` the Dash paper's way (see :func:`rescale`, ``method="sign"``)."""
    moduli = x.moduli
    xs = {q: bk.add_const(x[q], 1) for q in moduli}
    rest = tuple(q for q in moduli if q != 2)
    y = {q: xs[q] for q in rest}
    _garner_step(bk, y, xs[2], 2, rest)
    m_odd = math.prod(rest)
    shift = (m_odd - 1) // 2
    inv2 = {q: crt.inverse(2, q) for q in rest}
    w = CrtTensor({q: bk.cmul(bk.add_const(y[q], shift % q), inv2[q]) for q in rest})
    y2 = bk.add_const(sign_bit(bk, w), shift % 2)
    return CrtTensor({q: (y2 if q == 2 else y[q]) for q in moduli})


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
