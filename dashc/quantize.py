"""Quantization choices: integer scales, rescale points and divisors, CRT base, costs.

Numbers flow as ``real = integer * scale``.  The input is encoded with
``xi = clip(round(x / input_scale), *input_clip)``; each dense/conv weight tensor gets its
own scale ``max|w| / (2^(bits-1) - 1)``; a layer's accumulator then has scale
``s_in * s_w`` and its bias is ``round(b / (s_in * s_w))``.  After every op that grows the
integers (dense, conv, sum pooling, aligned add) the value is brought back to about
``act_bits`` bits by ONE rescale whose divisor is a product of distinct moduli of the base
(:func:`choose_divisor`: the largest such product not above
``calibrated max / (scale * (2^(act_bits-1) - 1))``, or the cheapest within a quarter bit
below it), fused with the following ReLU where there is one.  With 2 in the base the
divisor never contains 2: 2 is the sign modulus of the fused ReLU.

Strategies (``Config.strategy``), each a list of candidate bases (:func:`candidate_bases`)
from which the compiler takes the smallest that holds every bound:

* ``dash``: the first primes 2, 3, 5, ...
* ``redash``: one scaling prime (``scale_prime``, 31 by default) plus as few consecutive
  large primes (101..251) as the bounds need.
* ``auto``: tries dash and redash at several bit widths, keeps those whose simulated
  agreement with the float model on calibration data is within ``max_drop`` points, and
  picks the cheapest by :func:`dashc.report.plan_cost` (ciphertexts plus weighted label
  digits).
"""
from __future__ import annotations

import bisect
import functools
import itertools
import math
from dataclasses import asdict, dataclass, field, replace
from typing import Sequence

import numpy as np

from . import crt

STRATEGIES = ("dash", "redash", "auto")
BOUND_MODES = ("auto", "worst", "calibrated")
#: large primes the redash base draws from (every one prime, see design §3)
LARGE_PRIMES = tuple(p for p in range(101, 256) if crt.is_prime(p))


@dataclass(frozen=True)
class Config:
    """Every knob of compilation (recorded in ``plan.meta['config']``)."""

    strategy: str = "dash"
    weight_bits: int = 8
    act_bits: int = 8
    input_bits: int = 8
    moduli: tuple[int, ...] | None = None
    scale_prime: int = 31
    bound: str = "auto"
    margin: float = 2.0
    extra_moduli: int = 1
    max_drop: float = 0.5
    digit_weight: float = 0.02
    calib_method: str = "minmax"
    calib_size: int = 512
    seed: int = 0

    def to_dict(self) -> dict:
        d = asdict(self)
        d["moduli"] = list(self.moduli) if self.moduli else None
        return d

    def with_(self, **kw) -> "Config":
        return replace(self, **kw)


def check_config(cfg: Config) -> None:
    from .errors import UsageError

    if cfg.strategy not in STRATEGIES:
        raise UsageError(f"unknown strategy {cfg.strategy!r}; choose one of "
                         f"{', '.join(STRATEGIES)}")
    if cfg.bound not in BOUND_MODES:
        raise UsageError(f"unknown bound mode {cfg.bound!r}; choose one of "
                         f"{', '.join(BOUND_MODES)}")
    for name in ("weight_bits", "act_bits", "input_bits"):
        v = getattr(cfg, name)
        if not 2 <= v <= 16:
            raise UsageError(f"{name.replace('_', '-')} must be between 2 and 16, got {v}")
    if cfg.margin < 1.0:
        raise UsageError(f"margin must be at least 1, got {cfg.margin}")
    if not crt.is_prime(cfg.scale_prime):
        raise UsageError(f"scale prime {cfg.scale_prime} is not prime: every wire modulus "
                         "must be prime")
    if cfg.moduli is not None:
        try:
            crt.check_base(cfg.moduli)
        except ValueError as e:
            raise UsageError(f"moduli {tuple(cfg.moduli)}: {e}") from None


# -- scales ---------------------------------------------------------------------------------


def input_encoding(lo: float, hi: float, bits: int) -> tuple[float, tuple[int, int]]:
    """Input scale and clip range: unsigned when the calibrated input is non-negative."""
    if lo >= 0:
        top = (1 << bits) - 1
        scale = hi / top if hi > 0 else 1.0
        return scale, (0, top)
    top = (1 << (bits - 1)) - 1
    amax = max(abs(lo), abs(hi))
    scale = amax / top if amax > 0 else 1.0
    return scale, (-top, top)


def integer_weights(w: np.ndarray, bits: int) -> tuple[np.ndarray, float]:
    top = (1 << (bits - 1)) - 1
    amax = float(np.max(np.abs(w))) if w.size else 0.0
    scale = amax / top if amax > 0 else 1.0
    return np.round(w / scale).astype(np.int64), scale


def divisor_moduli(moduli: Sequence[int]) -> tuple[int, ...]:
    """The moduli a rescale divisor may use: all but 2 (the sign modulus) when 2 is in the
    base."""
    moduli = tuple(int(q) for q in moduli)
    return tuple(sorted(q for q in moduli if q != 2 or 2 not in moduli))


@functools.lru_cache(maxsize=64)
def _divisors(moduli: tuple[int, ...]) -> tuple[int, ...]:
    """Products of the subsets of :func:`divisor_moduli` that leave a modulus of the base
    out, ascending."""
    allowed = divisor_moduli(moduli)
    return tuple(sorted(math.prod(s) for r in range(1, len(allowed) + 1)
                        for s in itertools.combinations(allowed, r) if len(s) < len(moduli)))


def choose_divisor(ratio: float, moduli: Sequence[int], relu: bool = False,
                   tolerance_bits: float = 0.25) -> int:
    """The rescale divisor for a value ``ratio`` times too large: a product of distinct
    moduli of the base (:func:`divisor_moduli`), the largest not above ``ratio`` (so at
    least ``act_bits`` bits remain) or, among the products within ``tolerance_bits`` below
    it, the one whose gadget (plain, or fused with a ReLU) costs fewest ciphertexts.  1 (no
    rescale) when ``ratio`` is below every product."""
    from .runtime import gadgets

    moduli = tuple(int(q) for q in moduli)
    divisors = _divisors(moduli)
    i = bisect.bisect_right(divisors, ratio * (1 + 1e-12))
    if i == 0:
        return 1
    best = divisors[i - 1]
    near = [d for d in divisors[:i] if math.log2(best / d) <= tolerance_bits]
    return min(near, key=lambda d: (gadgets.rescale_cost(moduli, d, relu=relu), -d))


def align_factors(sa: float, sb: float, tol: float = 0.01, max_k: int = 256
                  ) -> tuple[int, int, float]:
    """Integers ``(ca, cb)`` and the common scale ``s`` with ``sa ≈ ca*s`` and
    ``sb ≈ cb*s`` within relative error ``tol``: ``a*ca + b*cb`` is then ``a + b`` at
    scale ``s``."""
    swap = sa > sb
    fine, coarse = (sb, sa) if swap else (sa, sb)
    ratio = coarse / fine
    for k in range(1, max_k + 1):
        c = round(ratio * k)
        if c > 0 and abs(c - ratio * k) <= tol * ratio * k:
            break
    s = fine / k
    ca, cb = (c, k) if swap else (k, c)
    return ca, cb, s


# -- CRT base -------------------------------------------------------------------------------


def candidate_bases(cfg: Config) -> list[list[tuple[int, ...]]]:
    """The bases ``cfg`` allows, in groups of equal length (fewest moduli first), each
    group by increasing product; the compiler takes the first that holds every bound."""
    if cfg.moduli:
        return [[tuple(int(q) for q in cfg.moduli)]]
    groups: list[list[tuple[int, ...]]] = []
    if cfg.strategy == "dash":
        for k in range(2, 16):
            base = crt.first_primes(k)
            if math.prod(base) >= crt.MAX_M:
                break
            groups.append([base])
        return groups
    larges = [p for p in LARGE_PRIMES if p != cfg.scale_prime]
    for j in range(1, 8):
        group = [(cfg.scale_prime,) + tuple(larges[i:i + j])
                 for i in range(len(larges) - j + 1)]
        group = [b for b in group if math.prod(b) < crt.MAX_M]
        if group:
            groups.append(group)
    return groups


# -- costs ----------------------------------------------------------------------------------


def placeholder_gadget_cost(name: str, moduli: Sequence[int], **attrs) -> int:
    """Ciphertexts per element of a gadget; a stand-in for
    ``dashc.runtime.counter.gadget_cost`` built on the gadgets' own cost formulas (one
    mixed-modulus half gate counted as 2 ciphertexts)."""
    from .runtime import gadgets

    moduli = tuple(int(q) for q in moduli)
    half = 2 * len(moduli)
    if name == "sign":
        return gadgets.sign_bit_cost(moduli) + sum(1 for q in moduli if q != 2)
    if name == "relu":
        return gadgets.sign_bit_cost(moduli) + half
    if name == "rescale":
        return gadgets.rescale_cost(moduli, int(attrs["divisor"]))
    if name == "relu_rescale":
        return gadgets.rescale_cost(moduli, int(attrs["divisor"]), relu=True)
    if name == "max":
        return gadgets.sign_bit_cost(moduli) + half
    return 0


def gadget_cost_fn():
    """The runtime's cost function when it exists, else :func:`placeholder_gadget_cost`."""
    try:
        from .runtime.counter import gadget_cost
        return gadget_cost, "dashc.runtime.counter.gadget_cost"
    except ImportError:
        return placeholder_gadget_cost, "placeholder_gadget_cost"


def label_digits(moduli: Sequence[int]) -> int:
    return sum(crt.label_length(int(q)) for q in moduli)
