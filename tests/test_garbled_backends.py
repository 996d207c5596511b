"""Garbler and Evaluator as Backends: whole circuits, decoding, authenticity, misuse."""
import math

import numpy as np
import pytest
import torch

from dashc import crt
from dashc.errors import CircuitReuseError, IntegrityError
from dashc.runtime.backend import Backend, CrtTensor
from dashc.runtime.evaluator import Evaluator
from dashc.runtime.garbler import Garbler
from dashc.runtime.labels import LabelTensor
from dashc.runtime.rng import insecure_seeded_random
from dashc.runtime.tables import MemoryTables, TableReader, TableWriter

DEVICES = ["cpu", pytest.param("cuda", marks=[pytest.mark.gpu, pytest.mark.skipif(
    not torch.cuda.is_available(), reason="no CUDA device")])]
MODULI = (2, 3, 5, 7, 11, 13)
M = math.prod(MODULI)


def signed(v):
    v = v % M
    return torch.where(v >= M // 2, v - M, v)


def network(be, x, w1, b1, w2, b2, idx):
    """Every free op and every gate on a CRT tensor (the circuit under test)."""
    h = x.map(lambda a: be.conv2d(a, w1, (2, 1), (1, 0, 1, 2)))
    h = h.map(lambda a: be.add_const(a, b1[:, None, None]))
    h = h.map(lambda a: be.sumpool(a, (2, 2), (1, 2), (0, 1, 1, 0)))
    h = h.map(lambda a: be.reshape(a, (a.shape[0], -1)))
    d = h.map(lambda a: be.dense(a, w2))
    d = d.map(lambda a: be.add_const(a, b2))
    t = d.map(lambda a: be.take(a, idx))
    u = t.zip(t.map(lambda a: be.cmul(a, -3)), be.sub)
    u = u.map(be.neg).zip(t, be.add)  # -(t + 3t) + t
    cube = u.map(lambda a: be.proj(a, a.q, (np.arange(a.q) ** 3) % a.q))  # residue-wise
    prod = cube.zip(t, be.mul)
    bit = t[2]
    masked = CrtTensor({q: be.mixed_mul(a, bit) for q, a in prod.parts.items()})
    return [be.output(masked), be.output(u)]


def reference(xi, w1, b1, w2, b2, idx):
    h = torch.nn.functional.pad(xi, (0, 2, 1, 1))
    win = h.unfold(2, 3, 2).unfold(3, 3, 1)
    h = torch.einsum("bchwij,ocij->bohw", win, torch.from_numpy(w1)) + torch.from_numpy(b1)[
        None, :, None, None]
    h = torch.nn.functional.pad(h, (1, 0, 0, 1)).unfold(2, 2, 1).unfold(3, 2, 2).sum((-1, -2))
    d = h.reshape(h.shape[0], -1) @ torch.from_numpy(w2).T + torch.from_numpy(b2)
    t = d.reshape(d.shape[0], -1)[:, idx]
    u = -3 * t
    prod = ((u % M) ** 3 % M) * (t % M) % M
    masked = prod * (t % 2) % M
    return [signed(masked), signed(u)]


def _params(seed):
    rng = np.random.default_rng(seed)
    w1 = rng.integers(-50, 50, size=(3, 2, 3, 3))
    b1 = rng.integers(-1000, 1000, size=3)
    w2 = rng.integers(-20, 20, size=(5, 3 * 3 * 3))
    b2 = rng.integers(-10 ** 5, 10 ** 5, size=5)
    idx = np.array([[4, 0, 2], [1, 1, 3]])
    return w1, b1, w2, b2, idx


def garble_and_evaluate(device, batch=2, seed=0, tamper=None, tables=None, reader=None):
    params = _params(seed)
    xi = torch.from_numpy(np.random.default_rng(seed + 1).integers(-9, 10, (batch, 2, 6, 6)))
    g = Garbler(batch, tables=tables, rng=insecure_seeded_random(seed), device=device)
    network(g, g.input(MODULI, xi.shape), *params)
    active = g.encode([xi])
    if tamper:
        tamper(g, active)
    e = Evaluator(active, reader if reader is not None else g.tables, device=device)
    outs = network(e, e.input(MODULI, tuple(xi.shape)), *params)
    return g, e, outs, reference(xi, *params)


def test_backends_implement_the_protocol():
    g = Garbler(1)
    e = Evaluator([], MemoryTables())
    assert isinstance(g, Backend) and isinstance(e, Backend)
    for name in [n for n in dir(Backend) if not n.startswith("_")]:
        assert callable(getattr(g, name)) and callable(getattr(e, name))


@pytest.mark.parametrize("device", DEVICES)
def test_garbled_network_equals_integer_computation(device):
    g, e, outs, ref = garble_and_evaluate(device)
    got = g.decode(outs)
    for a, b in zip(got, ref):
        assert a.dtype == torch.int64 and torch.equal(a.cpu(), b)
    assert g.tables.stats.gates == len(MODULI) * 2 + len(MODULI)
    assert isinstance(outs[0][3], LabelTensor) and outs[0][3].device.type == device


def test_tables_through_a_file(tmp_path):
    path = tmp_path / "tt.bin"
    params = _params(3)
    xi = torch.from_numpy(np.random.default_rng(4).integers(-9, 10, (1, 2, 6, 6)))
    with TableWriter(path) as w:
        g = Garbler(1, tables=w)
        network(g, g.input(MODULI, xi.shape), *params)
        assert g.secure
    active = g.encode([xi])
    e = Evaluator(active, TableReader(path))
    outs = network(e, e.input(MODULI, tuple(xi.shape)), *params)
    e.finish()
    for a, b in zip(g.decode(outs), reference(xi, *params)):
        assert torch.equal(a, b)


def _one_gate(kind, tamper_array, seed=5):
    """Garble one gate, flip one digit of the ciphertext the evaluator opens, decode."""
    g = Garbler(1, rng=insecure_seeded_random(seed))
    x, y = g.input((3,), (1, 6)), g.input((2,), (1, 6))
    out = g.proj(x[3], 2, [1, 0, 1]) if kind == "proj" else g.mixed_mul(x[3], y[2])
    g.output(CrtTensor({out.q: out}))
    active = g.encode([torch.tensor([[0, 1, -1, 0, 1, -1]]), torch.tensor([[0, -1] * 3])])
    colours = (active[0][3] if kind == "proj" else active[1][2]).digits[0, :, 0]
    i = int(torch.nonzero(colours)[0])  # a wire whose opened row is sent (not implicit)
    arr = g.tables.records[0].arrays[tamper_array]
    rows = arr[1]
    if rows.ndim == 4:
        rows[0, i, int(colours[i]) - 1, 3] = (rows[0, i, int(colours[i]) - 1, 3] + 1) % arr[0]
    else:
        rows[0, i, int(colours[i])] = (rows[0, i, int(colours[i])] + 1) % arr[0]
    e = Evaluator(active, g.tables)
    x, y = e.input((3,), (1, 6)), e.input((2,), (1, 6))
    out = e.proj(x[3], 2, [1, 0, 1]) if kind == "proj" else e.mixed_mul(x[3], y[2])
    return g, [e.output(CrtTensor({out.q: out}))]


@pytest.mark.parametrize("kind,array", [("proj", 0), ("mixed", 1), ("mixed", 2)])
def test_tampered_ciphertext_detected(kind, array):
    g, outs = _one_gate(kind, array)
    with pytest.raises(IntegrityError, match="not valid labels"):
        g.decode(outs)


def test_tampered_input_label_detected():
    def tamper(g, active):
        active[0].parts[5].digits[0, 1, 2, 3, 4] += 1
        active[0].parts[5].digits[0, 1, 2, 3, 4] %= 5
    with pytest.raises(IntegrityError):  # at evaluation (a row opens out of range) or decoding
        g, _, outs, _ = garble_and_evaluate("cpu", tamper=tamper)
        g.decode(outs)


def test_tampered_output_label_detected_and_clean_one_decodes():
    g, _, outs, ref = garble_and_evaluate("cpu")
    assert torch.equal(g.decode(outs)[1], ref[1])
    outs[1].parts[7].digits[1, 0, 2, 6] = (outs[1].parts[7].digits[1, 0, 2, 6] + 1) % 7
    with pytest.raises(IntegrityError, match="output 1 mod 7: 1 of"):
        g.decode(outs)
    # a label moved by a whole multiple of the wrong batch element's delta is caught too
    g, _, outs, _ = garble_and_evaluate("cpu")
    d = g.delta(11)
    outs[1].parts[11].digits[0, 0, 0] = (outs[1].parts[11].digits[0, 0, 0] + d[1]) % 11
    if not torch.equal(d[0], d[1]):
        with pytest.raises(IntegrityError):
            g.decode(outs)


def test_single_use_and_input_checks():
    g = Garbler(2, rng=insecure_seeded_random(1))
    g.input((3, 5), (2, 4))
    with pytest.raises(ValueError, match="shape"):
        g.encode([torch.zeros(2, 5, dtype=torch.int64)])
    with pytest.raises(ValueError, match="range"):
        g.encode([torch.full((2, 4), 8)])
    g.encode([torch.full((2, 4), -7)])
    with pytest.raises(CircuitReuseError):
        g.encode([torch.zeros(2, 4, dtype=torch.int64)])
    with pytest.raises(ValueError, match="batch"):
        g.input((3,), (3, 4))
    with pytest.raises(ValueError, match="not prime"):
        g.input((4,), (2, 4))
    with pytest.raises(ValueError, match="not prime"):
        g.proj(g.input((3,), (2, 4))[3], 9, [0, 1, 2])
    with pytest.raises(ValueError, match="entries"):
        g.proj(g.input((3,), (2, 4))[3], 2, [0, 1, 2])


def test_evaluator_rejects_mismatched_material():
    g = Garbler(1, rng=insecure_seeded_random(2))
    x = g.input((3,), (1, 4))
    g.proj(x[3], 2, [0, 1, 1])
    active = g.encode([torch.zeros(1, 4, dtype=torch.int64)])
    e = Evaluator(active, g.tables)
    with pytest.raises(IntegrityError, match="expects"):
        e.input((3,), (1, 5))
    e = Evaluator(active, g.tables)
    y = e.input((3,), (1, 4))
    with pytest.raises(IntegrityError, match="modulus"):
        e.proj(y[3], 5, [0, 1, 1])


def test_each_batch_element_has_its_own_delta():
    g = Garbler(3)
    d = g.delta(17)
    assert d.shape == (3, crt.label_length(17)) and (d[:, 0] == 1).all()
    assert not torch.equal(d[0], d[1]) and not torch.equal(d[1], d[2])
