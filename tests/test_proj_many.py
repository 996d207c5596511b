"""The multi-target projection gate: one gate id, one record, the value of separate
projections, distinct tweaks per target, compiled == torch, tamper detection."""
import numpy as np
import pytest
import torch

from dashc import crt
from dashc.errors import IntegrityError
from dashc.runtime import cpu_kernels, gates
from dashc.runtime.backend import CrtTensor
from dashc.runtime.counter import CountingBackend, ShapeBackend
from dashc.runtime.evaluator import Evaluator
from dashc.runtime.garbler import Garbler
from dashc.runtime.hashing import HASH
from dashc.runtime.plain import PlainBackend
from dashc.runtime.tables import MemoryTables
from dashc.runtime.rng import insecure_seeded_random

PRIMES = [2, 3, 5, 7, 11, 13]


def _target_lists():
    """Every (p, q) pair of primes up to 13 appears with 2, 3 and 4 targets."""
    cases = []
    for p in PRIMES:
        for T in (2, 3, 4):
            for i in range(len(PRIMES)):
                cases.append((p, tuple(PRIMES[(i + j) % len(PRIMES)] for j in range(T))))
    return cases


def _garble_eval(p, targets, xs, batch, seed=0):
    """Garbler -> Evaluator -> decode of ``proj_many``; also the plain result."""
    shape = tuple(xs.shape)
    xs = torch.where(xs >= (p + 1) // 2, xs - p, xs)  # residues -> signed inputs
    g = Garbler(batch, rng=insecure_seeded_random(seed))
    a = g.input((p,), shape)[p]
    outs = g.proj_many(a, targets)
    for o in outs:
        g.output(CrtTensor({o.q: o}))
    active = g.encode([xs])
    e = Evaluator(active, g.tables)
    ea = e.input((p,), shape)[p]
    got = [e.output(CrtTensor({o.q: o})) for o in e.proj_many(ea, targets)]
    plain = PlainBackend([xs])
    pa = plain.input((p,), shape)[p]
    ref = [r.v for r in plain.proj_many(pa, targets)]
    return g, e, got, ref, plain


@pytest.mark.parametrize("p,qs", _target_lists())
def test_exhaustive_small_moduli(p, qs):
    rng = np.random.default_rng(p * 1000 + sum(q * 10 ** i for i, q in enumerate(qs)))
    targets = [(q, rng.integers(0, q, size=p)) for q in qs]
    xs = torch.arange(p).repeat(2, 1)  # every value, two batch elements (own deltas)
    g, e, got, ref, plain = _garble_eval(p, targets, xs, batch=2)
    decoded = g.decode(got)
    for (q, table), d, r in zip(targets, decoded, ref):
        d = d.cpu()
        assert torch.equal(d % q, torch.from_numpy(table)[xs])
        assert torch.equal(d % q, r)
    # one gate id for the whole call, one record with one row array per target
    assert g.gate_id == e.gate_id == plain.gate_id == 1
    (rec,) = g.tables.records
    assert [m for m, _ in rec.arrays] == [gates.row_modulus(q) for q in qs]
    assert rec.ciphertexts == g.tables.stats.ciphertexts == 2 * p * (p - 1) * len(qs)


def test_one_target_is_exactly_proj():
    """With one target the gate writes the bytes of a plain projection."""
    p, q = 7, 5
    table = np.array([3, 1, 4, 1, 0, 2, 2])
    recs = []
    for use_many in (False, True):
        g = Garbler(2, rng=insecure_seeded_random(3))
        a = g.input((p,), (2, 9))[p]
        out = g.proj_many(a, [(q, table)])[0] if use_many else g.proj(a, q, table)
        recs.append((out.digits.clone(), g.tables.records[0].arrays[0][1].copy()))
    assert torch.equal(recs[0][0], recs[1][0])
    assert np.array_equal(recs[0][1], recs[1][1])


@pytest.mark.skipif(not cpu_kernels.AVAILABLE, reason="numba is not installed")
@pytest.mark.parametrize("p,qs", [(2, (3, 5)), (5, (2, 3, 7, 11)), (13, (2, 17, 251)),
                                  (251, (2, 241)), (17, (17, 19, 2))])
def test_compiled_equals_torch(p, qs):
    B, E = 2, 37
    rng = insecure_seeded_random(p)
    a0, dp = rng.labels(p, (B, E)), rng.delta(p, B)
    np_rng = np.random.default_rng(p)
    targets = []
    for i, q in enumerate(qs):
        tab = np_rng.integers(0, q, size=p if i % 2 == 0 else (B, E, p))
        targets.append((q, rng.delta(q, B), torch.from_numpy(tab)))
    ref = gates.garble_proj_many(a0, p, dp, targets, 77, impl="torch")
    got = gates.garble_proj_many(a0, p, dp, targets, 77, impl="compiled")
    for (c0r, rr), (c0g, rg) in zip(ref, got):
        assert torch.equal(c0r, c0g.to(torch.int64))
        assert torch.equal(rr, rg.to(torch.int64))
    x = rng.residues(p, (B, E))
    active = (a0 + x[..., None] * dp[:, None, :]) % p
    spec = [(q, rows) for (q, _, _), (_, rows) in zip(targets, got)]
    out_t = gates.eval_proj_many(active, p, spec, 77, impl="torch")
    out_c = gates.eval_proj_many(active, p, spec, 77, impl="compiled")
    for (q, dq, tab), (c0, _), ot, oc in zip(targets, ref, out_t, out_c):
        assert torch.equal(ot, oc)
        fx = tab[x] if tab.dim() == 1 else torch.gather(tab, 2, x[..., None])[..., 0]
        assert torch.equal(ot, (c0 + fx[..., None] * dq[:, None, :]) % q)


def test_tweaks_distinct_per_target_and_gate():
    """Pads of one key under different targets (and under a plain projection of the same
    gate id) all differ; the element field is ``elem * T + t``."""
    p, q = 5, 2
    keys = insecure_seeded_random(1).labels(p, (1, 50)).reshape(50, -1)
    elem = torch.arange(50)
    n = crt.label_length(q)
    pads = HASH.many(keys, p, 9, elem, 0, [(q, n)] * 4)
    for i in range(4):
        for j in range(i + 1, 4):
            assert not (pads[i] == pads[j]).all(dim=1).any()
    # target t of T is the hash at element elem * T + t: no (element, target) collides
    for t in range(4):
        assert torch.equal(pads[t], HASH(keys, p, 9, elem * 4 + t, 0, q, n))
    fields = torch.stack([elem * 4 + t for t in range(4)]).reshape(-1)
    assert fields.unique().numel() == fields.numel()
    # the garbled rows of two targets with the same table share no row
    g = Garbler(1, rng=insecure_seeded_random(4))
    a = g.input((p,), (1, 20))[p]
    g.proj_many(a, [(q, np.arange(p) % q), (q, np.arange(p) % q)])
    r0, r1 = (torch.from_numpy(arr.astype(np.int64)) for _, arr in g.tables.records[0].arrays)
    assert not (r0 == r1).all(dim=-1).any()


@pytest.mark.parametrize("target", [0, 1, 2])
def test_tampered_row_detected(target):
    """Every other value of one opened row entry is caught: at evaluation when the row
    opens to a digit out of range (an entry has ``bits(q - 1)`` bits, so ``2^b - q`` of its
    values are impossible), else at decoding."""
    p, qs = 5, (3, 7, 2)
    targets = [(q, np.arange(p) % q) for q in qs]
    g = Garbler(1, rng=insecure_seeded_random(8))
    a = g.input((p,), (1, 10))[p]
    for o in g.proj_many(a, targets):
        g.output(CrtTensor({o.q: o}))
    xs = torch.tensor([[1, 2, -1, -2, 0, 1, 2, -1, -2, 0]])
    active = g.encode([xs])
    colours = active[0][p].digits[0, :, 0]
    i = int(torch.nonzero(colours)[0])
    m, rows = g.tables.records[0].arrays[target]
    assert m == gates.row_modulus(qs[target])
    at = (0, i, int(colours[i]) - 1, 0)
    honest = int(rows[at])
    caught = {"evaluation": 0, "decoding": 0}
    for v in range(m):
        if v == honest:
            continue
        rows[at] = v
        e = Evaluator(active, MemoryTables(g.tables.records))
        ea = e.input((p,), (1, 10))[p]
        try:
            got = [e.output(CrtTensor({o.q: o})) for o in e.proj_many(ea, targets)]
        except IntegrityError as err:
            assert "out of range" in str(err) and "gate 0" in str(err)
            caught["evaluation"] += 1
            continue
        with pytest.raises(IntegrityError, match="not valid labels"):
            g.decode(got)
        caught["decoding"] += 1
    assert caught == {"evaluation": m - qs[target], "decoding": qs[target] - 1}


def test_counts_and_shapes():
    bk = CountingBackend(ShapeBackend())
    a = bk.input((7,), (1, 4))[7]
    outs = bk.proj_many(a, [(2, np.zeros(7, np.int64)), (3, np.zeros(7, np.int64))])
    assert [o.q for o in outs] == [2, 3] and all(o.shape == (1, 4) for o in outs)
    assert bk.total.ciphertexts == 2 * 4 * 6 and bk.total.gates == 8


def test_bad_targets_rejected():
    g = Garbler(1, rng=insecure_seeded_random(0))
    a = g.input((5,), (1, 2))[5]
    with pytest.raises(ValueError, match="at least one target"):
        g.proj_many(a, [])
    with pytest.raises(ValueError, match="not prime"):
        g.proj_many(a, [(4, np.zeros(5, np.int64))])
    with pytest.raises(ValueError, match="entries"):
        g.proj_many(a, [(3, np.zeros(4, np.int64))])
    plain = PlainBackend([torch.zeros(1, 2, dtype=torch.int64)])
    pa = plain.input((5,), (1, 2))[5]
    with pytest.raises(ValueError, match=r"\[0, 3\)"):
        plain.proj_many(pa, [(3, np.full(5, 3))])
