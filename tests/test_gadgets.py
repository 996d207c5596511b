"""Gadgets on the plain backend against closed forms: exhaustive over Z_M for small bases,
sampled with boundaries for large ones; costs from the shape-only counter."""
from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from dashc import crt
from dashc.runtime import gadgets
from dashc.runtime.backend import CrtTensor
from dashc.runtime.counter import CountingBackend, ShapeBackend, gadget_cost, gate_rows
from dashc.runtime.plain import PlainBackend, from_signed, to_signed

SMALL = [(2, 3, 5, 7), (3, 5, 7), (2, 3, 5), (5, 7, 11), (7, 2, 5, 3), (2, 3, 5, 7, 11)]
LARGE = [crt.first_primes(8), (37, 167, 173), (31, 167, 173), (2, 167, 173)]
ALL = SMALL + LARGE


def domain(moduli, lo=None, hi=None, n_random=20000, seed=0) -> torch.Tensor:
    """Every value of [lo, hi] for small ranges, else boundaries, divisor neighbourhoods and
    random samples."""
    rlo, rhi = crt.signed_range(moduli)
    lo = rlo if lo is None else lo
    hi = rhi if hi is None else hi
    if hi - lo < 50000:
        return torch.arange(lo, hi + 1, dtype=torch.int64).reshape(1, -1)
    M = math.prod(moduli)
    pts = [lo, lo + 1, lo + 2, hi, hi - 1, hi - 2, 0, 1, -1, 2, -2, M // 4, -(M // 4)]
    for q in moduli:
        for c in (q, M // q, M // (2 * q)):
            pts += [c - 1, c, c + 1, -c - 1, -c, -c + 1]
    rng = np.random.default_rng(seed)
    pts += rng.integers(lo, hi + 1, size=n_random).tolist()
    xi = torch.tensor(sorted({p for p in pts if lo <= p <= hi}), dtype=torch.int64)
    return xi.reshape(1, -1)


def run(moduli, *xis):
    bk = PlainBackend(list(xis))
    return bk, [bk.input(tuple(moduli), tuple(x.shape)) for x in xis]


@pytest.mark.parametrize("moduli", ALL)
def test_sign_bit_relu_sign(moduli):
    xi = domain(moduli)
    bk, (x,) = run(moduli, xi)
    s = gadgets.sign_bit(bk, x)
    assert s.q == 2
    assert torch.equal(s.v, (xi < 0).long())
    assert torch.equal(to_signed(gadgets.relu(bk, x)), xi.clamp(min=0))
    assert torch.equal(to_signed(gadgets.sign(bk, x)), torch.where(xi >= 0, 1, -1))


def test_sign_bit_at_the_boundaries():
    for moduli in ALL:
        lo, hi = crt.signed_range(moduli)
        xi = torch.tensor([[lo, lo + 1, -1, 0, 1, hi - 1, hi]])
        bk, (x,) = run(moduli, xi)
        assert gadgets.sign_bit(bk, x).v.tolist() == [[1, 1, 1, 0, 0, 0, 0]], moduli


@pytest.mark.parametrize("moduli", ALL)
def test_mrc_digits_are_garner(moduli):
    xi = domain(moduli, n_random=2000)
    bk, (x,) = run(moduli, xi)
    order = gadgets.mrc_order(moduli, last=2 if 2 in moduli else None)
    digits = gadgets.mrc_digits(bk, x, order)
    want = crt.mixed_radix_digits({q: xi % q for q in moduli}, order)
    for a, w, p in zip(digits, want, order):
        assert a.q == p and torch.equal(a.v, w)


@pytest.mark.parametrize("moduli", ALL)
def test_rescale_rounds_half_up_for_every_divisor(moduli):
    for d in moduli:
        for method in ("extend", "sign") if d == 2 else ("extend",):
            hi = gadgets.rescale_input_max(moduli, d, method)
            xi = domain(moduli, hi=hi, n_random=3000, seed=d)
            bk, (x,) = run(moduli, xi)
            want = torch.div(xi + d // 2, d, rounding_mode="floor")
            y = gadgets.rescale(bk, x, d, method=method)
            assert y.moduli == tuple(moduli)
            assert torch.equal(to_signed(y), want), (d, method)


def test_rescale_input_range_is_tight():
    """With 2 in the base and an odd divisor, x + d//2 must not wrap: the first value
    beyond rescale_input_max comes out wrong."""
    moduli = (2, 3, 5, 7)
    for d in (3, 5, 7):
        top = gadgets.rescale_input_max(moduli, d)
        xi = torch.tensor([[top, top + 1]])
        bk, (x,) = run(moduli, xi)
        y = to_signed(gadgets.rescale(bk, x, d)).tolist()[0]
        assert y[0] == (top + d // 2) // d
        assert y[1] != (top + 1 + d // 2) // d


def _subsets(moduli, skip_two=False):
    qs = sorted(q for q in moduli if not (skip_two and q == 2))
    for r in range(1, len(qs) + 1):
        for s in itertools.combinations(qs, r):
            if len(s) < len(moduli):
                yield s


def _closed_form(xi, d, relu):
    y = torch.div(xi + d // 2, d, rounding_mode="floor")
    return y.clamp(min=0) if relu else y


COMPOSITE_SMALL = [(2, 3, 5, 7), (3, 5, 7), (7, 2, 5, 3), (5, 7, 11), (2, 3, 5, 7, 11),
                   (3, 5, 7, 11)]


@pytest.mark.parametrize("moduli", COMPOSITE_SMALL)
def test_composite_rescale_exhaustive(moduli):
    """Every divisor that is a product of distinct moduli (2 included), plain and fused
    with a ReLU, on every input of its exact range; one step beyond either end of a range
    narrower than Z_M comes out wrong, so the ranges are tight."""
    lo_m, hi_m = crt.signed_range(moduli)
    xi = torch.arange(lo_m, hi_m + 1).reshape(1, -1)
    bk, (x,) = run(moduli, xi)
    signs = set()
    for s in _subsets(moduli):
        d = math.prod(s)
        signs.add(gadgets._Layout(moduli, d, True).sign)
        for relu in (False, True):
            lo, hi = gadgets.rescale_input_range(moduli, d, relu)
            assert lo_m <= lo <= 0 <= hi <= hi_m
            y = to_signed(gadgets.rescale(bk, x, d, relu=relu))
            assert y.shape == xi.shape
            inside = (xi >= lo) & (xi <= hi)
            want = _closed_form(xi, d, relu)
            assert torch.equal(y[inside], want[inside]), (s, relu)
            if lo > lo_m:
                assert y[0, lo - 1 - lo_m] != want[0, lo - 1 - lo_m], (s, relu, "low end")
            if hi < hi_m:
                assert y[0, hi + 1 - lo_m] != want[0, hi + 1 - lo_m], (s, relu, "high end")
            if relu:
                assert torch.equal(to_signed(gadgets.relu_rescale(bk, x, d)), y)
    # both ways of reading the sign (the digit of 2, a threshold on an odd digit) occur
    assert signs == ({"digit", "threshold"} if 2 in moduli else {"threshold"})


def test_composite_rescale_ranges():
    """The documented ranges: whole Z_M when M/d is odd, d // 2 short at the top with 2
    outside the divisor, about M/(2p) short at the bottom for a fused ReLU with M/d odd."""
    P = crt.first_primes(8)
    lo, hi = crt.signed_range(P)
    d = 19 * 17 * 13
    M = math.prod(P)
    assert gadgets.rescale_input_range(P, d) == (lo, hi - d // 2)
    # the sign from the digit of 11 (t = 5) is cheaper than from 2 moved last
    assert gadgets.rescale_input_range(P, d, relu=True) == (-(d // 2 + 5 * M // 11), hi)
    # from the digit of 2 when that is cheapest
    assert gadgets.rescale_input_range(P, 3 * 5 * 7 * 11 * 13 * 17, relu=True) == (
        lo, hi - 3 * 5 * 7 * 11 * 13 * 17 // 2)
    assert gadgets.rescale_input_range(P, 2 * d) == (lo, hi)
    odd = (31, 101, 103, 107)
    lo, hi = crt.signed_range(odd)
    M = math.prod(odd)
    assert gadgets.rescale_input_range(odd, 31) == (lo, hi)
    assert gadgets.rescale_input_range(odd, 31 * 103) == (lo, hi)
    assert gadgets.rescale_input_range(odd, 31, relu=True) == (-(15 + 53 * M // 107), hi)
    assert gadgets.rescale_input_range(odd, 107, relu=True) == (-(53 + 51 * M // 103), hi)
    assert gadgets.rescale_input_range(P, 2, method="sign") == crt.signed_range(P)[:1] + (
        crt.signed_range(P)[1] - 1,)


@pytest.mark.parametrize("moduli,divisors", [
    (crt.first_primes(8), (19 * 17 * 13, 3 * 7 * 11 * 17, 3, 19, 2 * 5 * 7, 3 * 5 * 7 * 11 * 13 * 17)),
    ((31, 101, 103, 107), (31, 101, 107, 31 * 101, 31 * 103 * 107, 101 * 103 * 107)),
    ((37, 167, 173), (37, 173, 37 * 167)),
    ((2, 167, 173), (167, 173, 2 * 173)),
])
def test_composite_rescale_large_bases(moduli, divisors):
    for d in divisors:
        for relu in (False, True):
            lo, hi = gadgets.rescale_input_range(moduli, d, relu)
            xi = domain(moduli, lo=lo, hi=hi, n_random=3000, seed=d % 1000)
            extra = torch.tensor([[k * d + e for k in (-3, -1, 0, 1, 2) for e in
                                   (-d // 2 - 1, -d // 2, -(d // 2) + 1, d // 2 - 1, d // 2,
                                    d // 2 + 1)]])
            xi = torch.cat([xi, extra[(extra >= lo) & (extra <= hi)].reshape(1, -1)], 1)
            bk, (x,) = run(moduli, xi)
            y = gadgets.rescale(bk, x, d, bound=max(-lo, 0) if -lo <= hi else None,
                                relu=relu)
            assert torch.equal(to_signed(y), _closed_form(xi, d, relu)), (d, relu)


def test_relu_rescale_commutes_with_relu_then_rescale():
    """relu(rescale(x)) == rescale(relu(x)) == relu_rescale(x) on a small base."""
    moduli = (2, 3, 5, 7, 11)
    for s in _subsets(moduli, skip_two=True):
        d = math.prod(s)
        (lo1, hi1), (lo2, hi2) = (gadgets.rescale_input_range(moduli, d, relu)
                                  for relu in (True, False))
        xi = torch.arange(max(lo1, lo2), min(hi1, hi2) + 1).reshape(1, -1)
        bk, (x,) = run(moduli, xi)
        fused = to_signed(gadgets.relu_rescale(bk, x, d))
        assert torch.equal(fused, to_signed(gadgets.relu(bk, gadgets.rescale(bk, x, d))))
        assert torch.equal(fused, to_signed(gadgets.rescale(bk, gadgets.relu(bk, x), d)))


def test_repeated_halving_is_ceil():
    moduli = crt.first_primes(8)
    xi = domain(moduli, n_random=3000)
    bk, (x,) = run(moduli, xi)
    want = xi
    for _ in range(4):
        x = gadgets.rescale(bk, x, 2)
        want = -torch.div(-want, 2, rounding_mode="floor")  # ceil(want / 2)
    assert torch.equal(to_signed(x), want)


def test_rescale_errors():
    moduli = (2, 3, 5, 7)
    bk, (x,) = run(moduli, torch.zeros(1, 3, dtype=torch.long))
    for bad in (11, 4, 9, 22, 1, 0, -3):
        with pytest.raises(ValueError, match="not a product of distinct moduli"):
            gadgets.rescale(bk, x, bad)
    with pytest.raises(ValueError, match="uses every modulus"):
        gadgets.rescale(bk, x, 210)
    with pytest.raises(ValueError, match="divides by 2 only"):
        gadgets.rescale(bk, x, 3, method="sign")
    with pytest.raises(ValueError, match="without a ReLU"):
        gadgets.rescale(bk, x, 2, method="sign", relu=True)
    with pytest.raises(ValueError, match="unknown rescale method"):
        gadgets.rescale(bk, x, 3, method="magic")
    with pytest.raises(ValueError, match="input bound"):
        gadgets.rescale(bk, x, 3, bound=104)
    gadgets.rescale(bk, x, 3, bound=103)


@pytest.mark.parametrize("source,targets", [
    ((3, 5, 7), (2, 11, 13)), ((2, 3, 5), (7,)), ((5, 7, 11), (2, 3)),
    ((167, 173), (37, 2)), ((3, 5, 7, 11, 13, 17, 19), (2, 23)), ((31, 173), (167,)),
])
def test_base_extend(source, targets):
    xi = domain(source, n_random=5000)
    bk, (x,) = run(source, xi)
    out = gadgets.base_extend(bk, x, source, targets)
    assert out.moduli == targets
    for t in targets:
        assert torch.equal(out[t].v, xi % t)
    assert torch.equal(gadgets.base_extend(bk, x, source, targets[0]).v, xi % targets[0])
    with pytest.raises(ValueError, match="overlap"):
        gadgets.base_extend(bk, x, source, source[0])


@pytest.mark.parametrize("moduli", [(2, 3, 5, 7), (3, 5, 7), (5, 7, 11), crt.first_primes(8),
                                    (37, 167, 173)])
def test_maximum(moduli):
    quarter = math.prod(moduli) // 4
    if quarter < 60:
        grid = torch.arange(-quarter, quarter + 1)
        a, b = torch.meshgrid(grid, grid, indexing="ij")
        a, b = a.reshape(1, -1), b.reshape(1, -1)
    else:
        rng = np.random.default_rng(5)
        a = torch.as_tensor(rng.integers(-quarter, quarter + 1, size=(1, 20000)))
        b = torch.as_tensor(rng.integers(-quarter, quarter + 1, size=(1, 20000)))
        edges = torch.tensor([[-quarter, quarter, 0, -1, quarter, -quarter, 5]])
        a = torch.cat([a, edges], 1)
        b = torch.cat([b, edges.flip(1)], 1)
        b[0, -1] = 5  # equal operands
    bk, (x, y) = run(moduli, a, b)
    assert torch.equal(to_signed(gadgets.maximum(bk, x, y)), torch.maximum(a, b))


@pytest.mark.parametrize("kernel,stride,pads,pad_value", [
    ((2, 2), (2, 2), (0, 0, 0, 0), 0),
    ((3, 3), (2, 2), (1, 1, 1, 1), None),   # torch semantics: padding never wins
    ((3, 2), (1, 2), (0, 1, 2, 0), 0),
    ((2, 3), (1, 1), (1, 0, 0, 1), 17),
    ((1, 1), (1, 1), (0, 0, 0, 0), 0),
    ((5, 5), (1, 1), (0, 0, 0, 0), 0),
])
def test_maxpool_against_torch(kernel, stride, pads, pad_value):
    moduli = crt.first_primes(8)
    quarter = math.prod(moduli) // 4
    rng = np.random.default_rng(11)
    xi = torch.as_tensor(rng.integers(-quarter, quarter + 1, size=(2, 3, 7, 6)))
    xi[0, 0, 0, 0], xi[1, 2, 3, 3] = -quarter, quarter
    fill = -quarter if pad_value is None else pad_value
    bk, (x,) = run(moduli, xi)
    out = to_signed(gadgets.maxpool(bk, x, kernel, stride, pads, fill))
    top, left, bottom, right = pads
    if pad_value is None:  # -inf padding, as torch's max_pool2d
        ref = F.max_pool2d(F.pad(xi.double(), (left, right, top, bottom), value=-math.inf),
                           kernel, stride)
    else:
        ref = F.max_pool2d(F.pad(xi.double(), (left, right, top, bottom), value=float(fill)),
                           kernel, stride)
    assert out.shape == ref.shape
    assert torch.equal(out, ref.long())


def test_maxpool_exhaustive_small_base():
    """Permutations of the values |x| <= M/4 of base (2,3,5,7) in 2x2 windows."""
    moduli = (2, 3, 5, 7)
    q4 = 52
    vals = torch.arange(-q4, q4 + 1)
    rng = np.random.default_rng(3)
    xi = torch.stack([vals[torch.as_tensor(rng.permutation(len(vals)))] for _ in range(4)])
    xi = xi[:, :104].reshape(4, 1, 8, 13)
    bk, (x,) = run(moduli, xi)
    out = to_signed(gadgets.maxpool(bk, x, (2, 2), (2, 1)))
    assert torch.equal(out, F.max_pool2d(xi.double(), (2, 2), (2, 1)).long())


def shape_cost(fn, moduli, n_inputs=1, shape=(1, 1)):
    bk = CountingBackend(ShapeBackend())
    xs = [bk.input(moduli, shape) for _ in range(n_inputs)]
    fn(bk, *xs)
    return bk


def test_costs_first_8_primes(capsys):
    P = crt.first_primes(8)
    sign = gadget_cost("sign_bit", P)
    assert sign == 194 == gadgets.sign_bit_cost(P)
    half = sum(gate_rows("mul" if q == 2 else "mixed_mul", q, 2) for q in P)
    assert gadget_cost("relu", P) == sign + half
    assert gadget_cost("sign", P) == sign + 7
    assert gadget_cost("max", P) == gadget_cost("relu", P)
    assert gadget_cost("maxpool", P, kernel=(2, 2)) == 3 * gadget_cost("relu", P)
    for d in P:
        assert gadget_cost("rescale", P, divisor=d) == gadgets.rescale_cost(P, d)
    assert gadget_cost("rescale", P, divisor=2) == 201
    assert gadget_cost("rescale", P, divisor=2, method="sign") == 201
    assert gadget_cost("base_extend", P[1:], target=2) == gadgets.base_extend_cost(P[1:])
    d = 19 * 17 * 13
    assert gadget_cost("rescale", P, divisor=d) == gadgets.rescale_cost(P, d) == 363
    assert gadget_cost("relu_rescale", P, divisor=d) == gadgets.rescale_cost(P, d, relu=True)
    assert gadget_cost("relu_rescale", P, divisor=d) == 450
    separate = gadget_cost("rescale", P, divisor=d) + gadget_cost("relu", P)
    chain = sum(gadget_cost("rescale", P, divisor=q) for q in (13, 17, 19))
    assert chain == 733 and separate == 634
    odd = (37, 167, 173)
    assert gadget_cost("sign_bit", odd) == gadgets.sign_bit_cost(odd) == 612
    with capsys.disabled():
        print(f"\n  k=8 first primes: sign_bit {sign}, relu {gadget_cost('relu', P)}, "
              f"rescale/2 {gadget_cost('rescale', P, divisor=2)}; (37,167,173): "
              f"sign_bit {gadget_cost('sign_bit', odd)}, relu {gadget_cost('relu', odd)}, "
              f"rescale/37 {gadget_cost('rescale', odd, divisor=37)}\n"
              f"  k=8 first primes, d=19*17*13: relu_rescale "
              f"{gadget_cost('relu_rescale', P, divisor=d)}, rescale+relu {separate}, "
              f"chain of single-prime rescales + relu {chain + gadget_cost('relu', P)}")
    b = (31, 101, 103, 107)
    for d in (31, 101, 31 * 101):
        fused = gadget_cost("relu_rescale", b, divisor=d)
        resc = gadget_cost("rescale", b, divisor=d)
        assert fused == gadgets.rescale_cost(b, d, relu=True)
        assert resc == gadgets.rescale_cost(b, d)
        assert fused < resc + gadget_cost("relu", b)
        with capsys.disabled():
            print(f"  {b}, d={d}: relu_rescale {fused}, rescale {resc}, "
                  f"rescale+relu {resc + gadget_cost('relu', b)}")


@pytest.mark.parametrize("moduli", [(2, 3, 5, 7), (5, 7, 11), (37, 167, 173)])
def test_plain_and_shape_runs_agree_on_gates(moduli):
    """Gadgets branch on moduli and shapes only: a value-carrying run and a shape-only run
    consume the same gates."""
    xi = domain(moduli, n_random=50)[:, :40].reshape(1, 5, 8)
    d = math.prod(sorted(q for q in moduli if q != 2)[-2:])
    for fn in (gadgets.relu, gadgets.sign, lambda bk, x: gadgets.rescale(bk, x, moduli[-1]),
               lambda bk, x: gadgets.relu_rescale(bk, x, d),
               lambda bk, x: gadgets.rescale(bk, x, d)):
        plain = CountingBackend(PlainBackend([xi]))
        fn(plain, plain.input(moduli, tuple(xi.shape)))
        shape = shape_cost(fn, moduli, shape=tuple(xi.shape))
        assert plain.total.to_dict() == shape.total.to_dict()
        assert {k: t.to_dict() for k, t in plain.by_kind.items()} == \
            {k: t.to_dict() for k, t in shape.by_kind.items()}
        assert plain.inner.gate_id == _gate_calls(fn, moduli)


def _gate_calls(fn, moduli):
    calls = []

    class Probe(ShapeBackend):
        def proj(self, a, q, table):
            calls.append(1)
            return super().proj(a, q, table)

        def proj_many(self, a, targets):
            calls.append(1)
            return super().proj_many(a, targets)

        def mul(self, a, b):
            calls.append(1)
            return super().mul(a, b)

        def mixed_mul(self, a, b):
            calls.append(1)
            return super().mixed_mul(a, b)

    bk = Probe()
    fn(bk, bk.input(moduli, (1, 5, 8)))
    return len(calls)


def test_constant_wire_sign_mod_2():
    """In a base with 2 the sign's mod-2 residue is the constant 1."""
    moduli = (2, 3, 5)
    xi = torch.tensor([[-15, -1, 0, 14]])
    bk, (x,) = run(moduli, xi)
    s = gadgets.sign(bk, x)
    assert s[2].v.tolist() == [[1, 1, 1, 1]]
    assert isinstance(s, CrtTensor)


def test_pool_windows_indices():
    win = gadgets.pool_windows((2, 4, 5), (2, 3), (2, 1))
    x = np.arange(40).reshape(2, 4, 5)
    assert win.shape == (2, 2, 3, 6)
    assert x.reshape(-1)[win[1, 1, 2]].tolist() == x[1, 2:4, 2:5].reshape(-1).tolist()
    with pytest.raises(ValueError, match="larger"):
        gadgets.pool_windows((1, 2, 2), (3, 3), (1, 1))


def test_signed_helpers_round_trip():
    moduli = (37, 167, 173)
    xi = domain(moduli, n_random=100)
    assert torch.equal(to_signed(from_signed(xi, moduli)), xi)
