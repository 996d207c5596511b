"""Every gate through Garbler and Evaluator: evaluate(garble(f))(x) == f(x)."""
import itertools

import numpy as np
import pytest
import torch

from dashc import crt
from dashc.runtime import gates
from dashc.runtime.backend import CrtTensor
from dashc.runtime.evaluator import Evaluator
from dashc.runtime.garbler import Garbler
from dashc.runtime.hashing import HASH
from dashc.runtime.rng import SecureRandom, insecure_seeded_random

DEVICES = ["cpu", pytest.param("cuda", marks=[pytest.mark.gpu, pytest.mark.skipif(
    not torch.cuda.is_available(), reason="no CUDA device")])]
SMALL = [2, 3, 5, 7, 11, 13, 17]


def signed(v, q):
    return torch.where(v >= (q + 1) // 2, v - q, v)


def run(circuit, specs, values, device="cpu", rng=None, batch=2):
    """Garble ``circuit(backend, *inputs) -> list of single-modulus wires``, encode
    ``values`` (residues), evaluate, decode; returns decoded residues and the parties."""
    g = Garbler(batch, rng=rng or insecure_seeded_random(0), device=device)
    ins = [g.input((q,), shape) for q, shape in specs]
    outs = circuit(g, *[x[q] for x, (q, _) in zip(ins, specs)])
    for o in outs:
        g.output(CrtTensor({o.q: o}))
    active = g.encode([signed(v, q) for v, (q, _) in zip(values, specs)])
    e = Evaluator(active, g.tables, device=device)
    ins = [e.input((q,), shape) for q, shape in specs]
    got = [e.output(CrtTensor({o.q: o}))
           for o in circuit(e, *[x[q] for x, (q, _) in zip(ins, specs)])]
    decoded = g.decode(got)
    return [d.cpu() % o.q for d, o in zip(decoded, outs)], g, e


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("p,q", list(itertools.product(SMALL, SMALL)))
def test_exhaustive_small_moduli(p, q, device):
    """All (x, y) pairs, two batch elements (independent deltas)."""
    rng = np.random.default_rng(p * 100 + q)
    table = rng.integers(0, q, size=p)
    x = torch.arange(p).repeat_interleave(q).repeat(2, 1)
    y = torch.arange(q).repeat(p).repeat(2, 1)
    shape = (2, p * q)

    def circuit(be, a, b):
        out = [be.proj(a, q, table), be.mixed_mul(a, b)]
        if p == q:
            out += [be.mul(a, b), be.mul(b, b)]
        return out

    got, g, _ = run(circuit, [(p, shape), (q, shape)], [x, y], device)
    assert torch.equal(got[0], torch.from_numpy(table)[x])
    assert torch.equal(got[1], (x * y) % p)
    if p == q:
        assert torch.equal(got[2], (x * y) % p) and torch.equal(got[3], (y * y) % p)
    rows = p - 1 + (p - 1 + q - 1) + (2 * (2 * p - 2) if p == q else 0)
    assert g.tables.stats.ciphertexts == 2 * p * q * rows


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("p,q", [(251, 2), (2, 251), (251, 251), (233, 17), (17, 241)])
def test_sampled_large_moduli(p, q, device):
    rng = np.random.default_rng(p + q)
    shape = (3, 16)
    x = torch.from_numpy(rng.integers(0, p, size=shape))
    y = torch.from_numpy(rng.integers(0, q, size=shape))
    table = rng.integers(0, q, size=p)

    def circuit(be, a, b):
        return [be.proj(a, q, table), be.mixed_mul(a, b), be.proj(b, p, np.arange(q) % p)]

    got, _, _ = run(circuit, [(p, shape), (q, shape)], [x, y], device, rng=SecureRandom(),
                    batch=3)
    assert torch.equal(got[0], torch.from_numpy(table)[x])
    assert torch.equal(got[1], (x * y) % p)
    assert torch.equal(got[2], y % p)


def test_chained_gates_compose():
    """proj -> mixed_mul -> proj -> mul: labels produced by gates feed further gates."""
    shape = (2, 30)
    x = torch.arange(60).reshape(shape) % 7
    y = torch.arange(60).reshape(shape) % 2

    def circuit(be, a, b):
        sq = be.proj(a, 7, (np.arange(7) ** 2) % 7)
        m = be.mixed_mul(sq, b)
        bit = be.proj(m, 2, (np.arange(7) > 3).astype(np.int64))
        return [be.mul(be.add(m, sq), be.cmul(sq, 3)), bit]

    got, _, _ = run(circuit, [(7, shape), (2, shape)], [x, y])
    sq = x * x % 7
    m = sq * y % 7
    assert torch.equal(got[0], (m + sq) * 3 * sq % 7)
    assert torch.equal(got[1], (m > 3).long())


def test_cost_formulas_match_tables():
    assert gates.proj_rows(17, 19) == 16
    assert gates.mixed_mul_rows(17, 2) == 17


# -- the three flaws of the reference -------------------------------------------------------

def _tensors(obj, seen=None):
    """Every tensor reachable from an object's attributes (excluding the table stream)."""
    seen = seen if seen is not None else set()
    if id(obj) in seen:
        return
    seen.add(id(obj))
    if isinstance(obj, torch.Tensor):
        yield obj
    elif isinstance(obj, dict):
        for k, v in obj.items():
            yield from _tensors(v, seen)
    elif isinstance(obj, (list, tuple)):
        for v in obj:
            yield from _tensors(v, seen)
    elif hasattr(obj, "__dict__") or hasattr(obj, "__slots__"):
        for name in getattr(obj, "__slots__", ()):
            yield from _tensors(getattr(obj, name, None), seen)
        for v in getattr(obj, "__dict__", {}).values():
            yield from _tensors(v, seen)


def test_evaluator_holds_no_zero_label_and_no_delta():
    p, shape = 5, (2, 6)
    x = torch.arange(12).reshape(shape) % p
    bias = np.array([1, 2, 3, 4, 0, -1])

    def circuit(be, a):
        return [be.proj(be.add_const(a, bias), 3, np.arange(p) % 3)]

    got, g, e = run(circuit, [(p, shape)], [x])
    names = " ".join(vars(e)).lower()
    assert "delta" not in names and "zero" not in names
    secrets = []
    for q, d in g._delta.items():
        for c in range(1, q):
            secrets += [(q, (c * d[b]) % q) for b in range(d.shape[0])]
    # a wire's zero label is secret unless the evaluator's value on it is 0 (then the
    # active label is the zero label by definition)
    values = [x] + got
    for zero, v in zip(g._inputs + g._outputs, values):
        for q, w in zero.parts.items():
            nonzero = (v.reshape(-1) % q) != 0
            secrets += [(q, row) for row in w.digits.reshape(-1, w.n)[nonzero]]
    held = list(_tensors({k: v for k, v in vars(e).items() if k != "tables"}))
    held += [torch.from_numpy(a.astype(np.int64)) for rec in g.tables.records
             for _, a in rec.arrays]
    assert held
    for t in held:
        rows = t.reshape(-1, t.shape[-1]) if t.dim() else t.reshape(1, 1)
        for q, s in secrets:
            if rows.shape[-1] == s.shape[-1]:
                assert not (rows == s).all(dim=1).any(), "evaluator holds a secret label"


def test_evaluator_ignores_public_constants():
    p, shape = 7, (1, 4)
    x = torch.tensor([[0, 1, 2, 3]])

    def circuit(be, a):
        return [be.add_const(a, np.array([5, 5, 5, 5]))]

    got, g, e = run(circuit, [(p, shape)], [x], batch=1)
    assert torch.equal(got[0], (x + 5) % p)
    lab = e._inputs[0][p]
    assert e.add_const(lab, 3) is lab


def _recovered_masks(g, e, p, q):
    """The clear value c = y + r the evaluator learns in the single mixed gate."""
    rec = g.tables.records[0]
    digits = torch.from_numpy(rec.arrays[2][1].astype(np.int64))
    b = e._inputs[1][q].digits.reshape(1, -1, crt.label_length(q))
    pads = HASH(b.reshape(-1, b.shape[-1]), q, 0, torch.arange(b.shape[1]), 1, p,
                crt.label_length(p) + 1)
    s = b[0, :, 0]
    return (digits[0, torch.arange(len(s)), s] - pads[:, 0]) % p


def test_mixed_half_gate_masks_are_fresh_and_not_colours():
    p, q, shape = 251, 2, (1, 64)
    x = torch.arange(64).reshape(shape) % p
    y = (torch.arange(64).reshape(shape) // 3) % 2
    runs = []
    for _ in range(2):
        got, g, e = run(lambda be, a, b: [be.mixed_mul(a, b)], [(p, shape), (q, shape)],
                        [x, y], rng=SecureRandom(), batch=1)
        assert torch.equal(got[0], x * y % p)
        c = _recovered_masks(g, e, p, q)
        r = (c - y[0]) % p
        colours = [g._inputs[0][p].digits[0, :, 0], g._inputs[1][q].digits[0, :, 0],
                   e._inputs[0][p].digits[0, :, 0], e._inputs[1][q].digits[0, :, 0]]
        for col in colours:
            assert (r != col % p).sum() > 50
        runs.append(r)
    assert (runs[0] != runs[1]).sum() > 50  # same circuit, same inputs: fresh masks


def test_gates_keyed_by_the_same_label_use_different_pads():
    p, shape = 3, (1, 8)
    x = torch.arange(8).reshape(shape) % p
    table = np.array([1, 0, 1])

    def circuit(be, a):
        return [be.proj(a, 2, table), be.proj(a, 2, table), be.mul(a, a)]

    got, g, e = run(circuit, [(p, shape)], [x], batch=1)
    assert torch.equal(got[0], torch.from_numpy(table)[x]) and torch.equal(got[1], got[0])
    assert torch.equal(got[2], x * x % p)
    r0, r1 = (torch.from_numpy(rec.arrays[0][1].astype(np.int64)) for rec in
              g.tables.records[:2])
    assert not (r0 == r1).all(dim=-1).any()  # no row (hence no pad) shared by the two gates
    a = e._inputs[0][p].digits.reshape(-1, crt.label_length(p))
    n2 = crt.label_length(2)
    pad_g0 = HASH(a, p, 0, torch.arange(8), 0, 2, n2)
    pad_g1 = HASH(a, p, 1, torch.arange(8), 0, 2, n2)
    pad_mul_role1 = HASH(a, p, 2, torch.arange(8), 1, p, crt.label_length(p) + 1)[:, 1:]
    pad_mul_role0 = HASH(a, p, 2, torch.arange(8), 0, p, crt.label_length(p))
    assert not (pad_g0 == pad_g1).all(dim=1).any()
    assert not (pad_mul_role0 == pad_mul_role1).all(dim=1).any()


@pytest.mark.parametrize("p,q", [(5, 3), (3, 11), (2, 19)])
def test_unopened_row_entries_are_uniform_in_their_bits(p, q):
    """Row entries are label digits (below q) under one-time pads of bits(q - 1) bits: every
    value of that range turns up equally often, those at least q included (rows that only
    held digits mod q, or pads with fewer bits, would miss them)."""
    W = 4000
    rng = insecure_seeded_random(p * 100 + q)
    a0 = rng.labels(p, (1, W))
    table = torch.from_numpy(np.random.default_rng(q).integers(0, q, size=p))
    _, rows = gates.garble_proj(a0, p, rng.delta(p, 1), q, rng.delta(q, 1), table, 3)
    m = gates.row_modulus(q)
    uniform = torch.full((m,), 1 / m, dtype=torch.float64)
    freq = torch.bincount(rows.reshape(-1).to(torch.int64), minlength=m).double() / rows.numel()
    assert freq.shape[0] == m and torch.allclose(freq, uniform, atol=0.01)
    # the mixed half gate's evaluator half: rows and digits alike
    b0 = rng.labels(q, (1, W))
    _, (_, rows_e, digits) = gates.garble_mixed_mul(a0, p, rng.delta(p, 1), b0, q,
                                                    rng.delta(q, 1), rng.residues(p, (1, W)), 4)
    m = gates.row_modulus(p)
    uniform = torch.full((m,), 1 / m, dtype=torch.float64)
    for t in (rows_e, digits[..., 1:]):
        freq = torch.bincount(t.reshape(-1).to(torch.int64), minlength=m).double() / t.numel()
        assert freq.shape[0] == m and torch.allclose(freq, uniform, atol=0.02)
