"""Garbled == plain, bit for bit: every gadget and a hand-built plan through
Garbler -> encode -> Evaluator -> decode, compared with PlainBackend; the counter's
ciphertext model against the ciphertexts the garbler writes."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from dashc import crt
from dashc.runtime import gadgets
from dashc.runtime.backend import CrtTensor
from dashc.runtime.counter import CountingBackend, ShapeBackend, predict
from dashc.runtime.evaluator import Evaluator
from dashc.runtime.execute import run, run_plain
from dashc.runtime.garbler import Garbler
from dashc.runtime.plain import PlainBackend, to_signed
from dashc.runtime.rng import insecure_seeded_random

from test_execute import tiny_plan

SMALL = [(2, 3, 5, 7), (3, 5, 7), (2, 3, 5), (5, 7, 11)]
LARGE = [crt.first_primes(8), (37, 167, 173), (31, 167, 173)]
slow = pytest.mark.slow


def as_crt(w) -> CrtTensor:
    return w if isinstance(w, CrtTensor) else CrtTensor({w.q: w})


def garbled(fn, moduli, *xis, seed=1):
    """Garble ``fn`` on fresh inputs, encode ``xis``, evaluate, decode: signed int64 and
    the garbler (for its table statistics)."""
    B = xis[0].shape[0]
    g = Garbler(B, rng=insecure_seeded_random(seed))
    g.output(as_crt(fn(g, *[g.input(moduli, tuple(x.shape)) for x in xis])))
    labels = g.encode(list(xis))
    g.tables.rewind()
    ev = Evaluator(labels, g.tables)
    out = ev.output(as_crt(fn(ev, *[ev.input(moduli, tuple(x.shape)) for x in xis])))
    return g.decode([out])[0], g


def plain(fn, moduli, *xis):
    bk = PlainBackend(list(xis))
    return to_signed(as_crt(fn(bk, *[bk.input(moduli, tuple(x.shape)) for x in xis])))


def shape_ciphertexts(fn, moduli, *xis) -> int:
    bk = CountingBackend(ShapeBackend(xis[0].shape[0]))
    fn(bk, *[bk.input(moduli, tuple(x.shape)) for x in xis])
    return bk.total.ciphertexts


def check(fn, moduli, *xis):
    got, g = garbled(fn, moduli, *xis)
    want = plain(fn, moduli, *xis)
    assert torch.equal(got, want)
    assert g.tables.stats.ciphertexts == shape_ciphertexts(fn, moduli, *xis)
    return got


def inputs(moduli, hi=None, seed=0, n=32):
    """Whole Z_M for small bases; for large ones the boundaries (+-M/2, 0, +-1, +-M/4),
    the neighbourhoods of M/q and samples, ``n`` values in all.  Two batch rows."""
    lo, top = crt.signed_range(moduli)
    hi = top if hi is None else hi
    if hi - lo < 1000:
        xi = torch.arange(lo, hi + 1)
        if len(xi) % 2:
            xi = torch.cat([xi, torch.zeros(1, dtype=torch.int64)])
        return xi.reshape(2, -1)
    M = math.prod(moduli)
    pts = [lo, lo + 1, hi, hi - 1, 0, 1, -1, M // 4, -(M // 4)]
    for q in moduli[-2:]:
        pts += [M // q, -(M // q), M // (2 * q) + 1, -(M // (2 * q)) - 1]
    rng = np.random.default_rng(seed)
    pts += rng.integers(lo, hi + 1, size=n - len(pts)).tolist()
    return torch.tensor(pts[:n], dtype=torch.int64).reshape(2, -1)


GADGETS = {
    "sign_bit": gadgets.sign_bit,
    "relu": gadgets.relu,
    "sign": gadgets.sign,
}


SIGN_CASES = [(m, n) for m in SMALL for n in GADGETS] + [(LARGE[0], "relu"), (LARGE[1], "relu")]
SIGN_HEAVY = [(m, n) for m in LARGE for n in GADGETS if (m, n) not in SIGN_CASES]


@pytest.mark.parametrize("moduli,name", SIGN_CASES + [pytest.param(m, n, marks=slow)
                                                      for m, n in SIGN_HEAVY])
def test_sign_family(moduli, name):
    xi = inputs(moduli)
    got = check(GADGETS[name], moduli, xi)
    closed = {"sign_bit": (xi < 0).long(), "relu": xi.clamp(min=0),
              "sign": torch.where(xi >= 0, 1, -1)}[name]
    if name == "sign_bit":
        got = got % 2  # a single mod-2 wire decodes to 0 or -1
    assert torch.equal(got, closed)


@pytest.mark.parametrize("moduli", SMALL + [LARGE[1]] + [pytest.param(m, marks=slow)
                                                           for m in (LARGE[0], LARGE[2])])
def test_rescale_every_divisor(moduli):
    divisors = moduli if len(moduli) < 5 else (2, 3, max(moduli))
    for d in divisors:
        for method in ("extend", "sign") if d == 2 else ("extend",):
            xi = inputs(moduli, hi=gadgets.rescale_input_max(moduli, d, method), seed=d)
            got = check(lambda bk, x: gadgets.rescale(bk, x, d, method=method), moduli, xi)
            assert torch.equal(got, torch.div(xi + d // 2, d, rounding_mode="floor"))


COMPOSITE = [((2, 3, 5, 7), (15, 35, 6, 105)), ((3, 5, 7), (15, 21)), ((5, 7, 11), (77, 5)),
             ((2, 3, 5, 7, 11), (3 * 7 * 11,)),
             ((31, 101, 103, 107), (31, 31 * 101, 107)),
             (crt.first_primes(8), (19 * 17 * 13, 3 * 5 * 7 * 11 * 13 * 17))]


@pytest.mark.parametrize("moduli,divisors", COMPOSITE)
def test_composite_rescale_and_relu_rescale(moduli, divisors):
    """Divisors that are products of several moduli, plain and fused with a ReLU: whole
    range for small bases, boundaries and samples for large ones."""
    for d in divisors:
        for relu in (False, True):
            lo, hi = gadgets.rescale_input_range(moduli, d, relu)
            xi = inputs(moduli, hi=hi, seed=d % 997).clamp(min=lo)
            got = check(lambda bk, x: gadgets.rescale(bk, x, d, relu=relu), moduli, xi)
            want = torch.div(xi + d // 2, d, rounding_mode="floor")
            assert torch.equal(got, want.clamp(min=0) if relu else want), (d, relu)


@pytest.mark.parametrize("source,target", [((3, 5, 7), 11), ((167, 173), 37), ((2, 3, 5), 7)])
def test_base_extend(source, target):
    xi = inputs(source)
    got = check(lambda bk, x: gadgets.base_extend(bk, x, source, target), source, xi)
    assert torch.equal(got % target, xi % target)


@pytest.mark.parametrize("moduli", [(2, 3, 5, 7), (5, 7, 11),
                                    pytest.param(crt.first_primes(8), marks=slow)])
def test_max_and_maxpool(moduli):
    quarter = math.prod(moduli) // 4
    rng = np.random.default_rng(2)
    a = torch.as_tensor(rng.integers(-quarter, quarter + 1, size=(2, 16)))
    b = torch.as_tensor(rng.integers(-quarter, quarter + 1, size=(2, 16)))
    a[0, :3] = torch.tensor([-quarter, quarter, 0])
    b[0, :3] = torch.tensor([quarter, -quarter, 0])
    assert torch.equal(check(gadgets.maximum, moduli, a, b), torch.maximum(a, b))
    x = torch.as_tensor(rng.integers(-quarter, quarter + 1, size=(2, 1, 5, 4)))
    fn = lambda bk, x: gadgets.maxpool(bk, x, (3, 2), (2, 1), (1, 0, 1, 1), -quarter)
    check(fn, moduli, x)


def test_tiny_plan_garbled_equals_simulated():
    plan = tiny_plan(np.random.default_rng(7))
    rng = np.random.default_rng(8)
    xi = torch.as_tensor(rng.integers(-8, 9, size=(2, 1, 6, 6)))
    want, report = run_plain(plan, xi)
    assert report.ok

    g = Garbler(2, rng=insecure_seeded_random(5))
    counted = CountingBackend(g)
    assert run(plan, counted) is None
    labels = g.encode([xi])
    g.tables.rewind()
    ev = Evaluator(labels, g.tables)
    out = run(plan, ev, batch=2)
    got = g.decode([out])[0]
    assert torch.equal(got, want)
    assert counted.total.ciphertexts == g.tables.stats.ciphertexts
    assert 2 * predict(plan).ciphertexts == g.tables.stats.ciphertexts
    per_node = {n.name: 2 * n.ciphertexts for n in predict(plan).nodes}
    assert {k: v.ciphertexts for k, v in counted.by_node.items() if k} == per_node
