"""PlainBackend: every protocol op against an independent integer computation."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from dashc import crt
from dashc.runtime.backend import Backend, CrtTensor
from dashc.runtime.plain import PlainBackend, Residues, check_modulus, from_signed, to_signed

Q = 13


def wire(rng, shape, q=Q) -> Residues:
    return Residues(torch.as_tensor(rng.integers(0, q, size=shape)), q)


@pytest.fixture
def rng():
    return np.random.default_rng(1234)


@pytest.fixture(params=["compiled", "torch"])
def kernels(request, monkeypatch):
    """Runs a test with the compiled residue kernels and again with torch alone."""
    from dashc.runtime import cpu_kernels
    if request.param == "compiled" and not cpu_kernels.AVAILABLE:
        pytest.skip("numba is not installed")
    if request.param == "torch":
        monkeypatch.setattr(cpu_kernels, "AVAILABLE", False)
    return request.param


def test_implements_protocol():
    assert isinstance(PlainBackend([]), Backend)


def test_input_residues_and_order():
    a = torch.tensor([[-7, 0, 6]])
    b = torch.tensor([[1, -1]])
    bk = PlainBackend([a, b])
    x = bk.input((2, 3, 5), (1, 3))
    y = bk.input((7,), (1, 2))
    assert x[3].v.tolist() == [[2, 0, 0]] and x[5].v.tolist() == [[3, 0, 1]]
    assert y[7].v.tolist() == [[1, 6]]
    assert torch.equal(to_signed(x), a)
    with pytest.raises(ValueError, match="input #2"):
        bk.input((7,), (1, 2))


def test_input_checks_shape_and_base():
    with pytest.raises(ValueError, match="shape"):
        PlainBackend([torch.zeros(2, 3, dtype=torch.long)]).input((5, 7), (2, 4))
    with pytest.raises(ValueError, match="not prime"):
        PlainBackend([torch.zeros(1, 1, dtype=torch.long)]).input((2, 9), (1, 1))


@pytest.mark.parametrize("q", [1, 4, 9, 32, 98, 1 << 31])
def test_composite_or_huge_modulus_refused(q):
    with pytest.raises(ValueError):
        check_modulus(q)
    bk = PlainBackend([])
    with pytest.raises(ValueError):
        bk.proj(Residues(torch.zeros(1, 2, dtype=torch.long), 5), q, np.zeros(5, np.int64))


def test_free_ops(rng, kernels):
    bk = PlainBackend([])
    a, b = wire(rng, (3, 4)), wire(rng, (3, 4))
    av, bv = a.v.numpy(), b.v.numpy()
    assert np.array_equal(bk.add(a, b).v.numpy(), (av + bv) % Q)
    assert np.array_equal(bk.sub(a, b).v.numpy(), (av - bv) % Q)
    assert np.array_equal(bk.neg(a).v.numpy(), (-av) % Q)
    assert np.array_equal(bk.cmul(a, -40).v.numpy(), (av * -40) % Q)
    c = rng.integers(-100, 100, size=(4,))
    assert np.array_equal(bk.add_const(a, c).v.numpy(), (av + c) % Q)
    assert np.array_equal(bk.add_const(a, 7).v.numpy(), (av + 7) % Q)
    with pytest.raises(ValueError, match="broadcast"):
        bk.add_const(a, np.zeros((2, 3, 4), np.int64))
    with pytest.raises(ValueError, match="moduli differ"):
        bk.add(a, wire(rng, (3, 4), 11))
    r = bk.reshape(a, (3, 2, 2))
    assert r.shape == (3, 2, 2) and r.q == Q
    t = Residues(a.v.t(), Q)  # not contiguous: the torch path takes it
    assert np.array_equal(bk.add(t, Residues(b.v.t(), Q)).v.numpy(), ((av + bv) % Q).T)
    assert np.array_equal(bk.cmul(t, 5).v.numpy(), ((av * 5) % Q).T)
    big = wire(rng, (2, 3, 50, 50), 19)  # large enough to matter, with a per-channel constant
    c = rng.integers(-50, 50, size=(3, 1, 1))
    assert np.array_equal(bk.add_const(big, c).v.numpy(), (big.v.numpy() + c) % 19)


def test_take(rng):
    bk = PlainBackend([])
    a = wire(rng, (2, 3, 4))
    idx = rng.integers(0, 12, size=(5, 2))
    out = bk.take(a, idx)
    assert out.shape == (2, 5, 2)
    assert np.array_equal(out.v.numpy(), a.v.numpy().reshape(2, 12)[:, idx])
    with pytest.raises(ValueError, match="out of range"):
        bk.take(a, np.array([12]))


def test_dense_exact(rng):
    bk = PlainBackend([])
    a = wire(rng, (4, 9))
    w = rng.integers(-1000, 1000, size=(5, 9))
    ref = (a.v.numpy() @ w.T) % Q
    assert np.array_equal(bk.dense(a, w).v.numpy(), ref)


def test_dense_exact_beyond_float_mantissa(rng):
    """A modulus near 2**31 with huge weights forces the limb path; compare with Python ints."""
    q = 2147483647
    bk = PlainBackend([])
    a = wire(rng, (2, 64), q)
    w = rng.integers(-(1 << 40), 1 << 40, size=(3, 64))
    out = bk.dense(a, w).v.numpy()
    av = a.v.numpy().tolist()
    ref = [[sum(int(x) * int(y) for x, y in zip(row, wr)) % q for wr in w.tolist()] for row in av]
    assert out.tolist() == ref


def conv_ref(x, w, stride, pads):
    """Direct int64 convolution with explicit loops over output positions."""
    top, left, bottom, right = pads
    x = np.pad(x, ((0, 0), (0, 0), (top, bottom), (left, right)))
    B, C, H, W = x.shape
    O, _, kh, kw = w.shape
    Ho, Wo = (H - kh) // stride[0] + 1, (W - kw) // stride[1] + 1
    out = np.zeros((B, O, Ho, Wo), dtype=x.dtype)
    for i in range(Ho):
        for j in range(Wo):
            patch = x[:, :, i * stride[0]:i * stride[0] + kh, j * stride[1]:j * stride[1] + kw]
            out[:, :, i, j] = np.einsum("bckl,ockl->bo", patch, w)
    return out


@pytest.mark.parametrize("q", [Q, 65521, 2147483647])  # float32, float64, limbs
@pytest.mark.parametrize("stride,pads", [((1, 1), (0, 0, 0, 0)), ((2, 3), (1, 2, 0, 1))])
def test_conv2d_exact(rng, stride, pads, q):
    bk = PlainBackend([])
    a = wire(rng, (2, 3, 7, 8), q)
    w = rng.integers(-(q // 2), q // 2 + 1, size=(4, 3, 3, 2))
    out = bk.conv2d(a, w, stride, pads).v.numpy()
    ref = conv_ref(a.v.numpy().astype(object), w.astype(object), stride, pads) % q
    assert np.array_equal(out, ref.astype(np.int64))


def test_sumpool_exact(rng):
    bk = PlainBackend([])
    a = wire(rng, (2, 3, 6, 5))
    out = bk.sumpool(a, (2, 3), (2, 1), (1, 0, 0, 2)).v.numpy()
    ones = np.zeros((3, 3, 2, 3), dtype=np.int64)
    for c in range(3):
        ones[c, c] = 1
    assert np.array_equal(out, conv_ref(a.v.numpy(), ones, (2, 1), (1, 0, 0, 2)) % Q)


def test_gates(rng, kernels):
    bk = PlainBackend([])
    a = wire(rng, (3, 5), 7)
    table = rng.integers(0, 11, size=7)
    out = bk.proj(a, 11, table)
    assert out.q == 11 and np.array_equal(out.v.numpy(), table[a.v.numpy()])
    with pytest.raises(ValueError, match="table"):
        bk.proj(a, 11, np.zeros(6, np.int64))
    with pytest.raises(ValueError, match="entries"):
        bk.proj(a, 11, np.full(7, 11))
    b = wire(rng, (3, 5), 7)
    assert np.array_equal(bk.mul(a, b).v.numpy(), (a.v.numpy() * b.v.numpy()) % 7)
    bit = wire(rng, (3, 5), 2)
    assert np.array_equal(bk.mixed_mul(a, bit).v.numpy(), a.v.numpy() * bit.v.numpy())
    assert bk.gate_id == 3


@pytest.mark.parametrize("moduli", [(2, 3, 5, 7, 11, 13, 17, 19), (3, 5, 7, 11, 13),
                                    (2, 3, 5, 7, 11, 13, 17, 19, 23, 29, 31, 37, 41, 43, 47),
                                    (65521, 65519, 65497)])
def test_signed_round_trip(rng, kernels, moduli):
    import math
    M = math.prod(moduli)
    lo, hi = -(M // 2), (M + 1) // 2  # [-M/2, M/2) for even M, symmetric for odd M
    edges = [lo, lo + 1, -1, 0, 1, hi - 2, hi - 1]
    xi = torch.as_tensor(np.concatenate([rng.integers(lo, hi, size=24), edges]).reshape(1, -1))
    assert torch.equal(to_signed(from_signed(xi, moduli)), xi)
    assert isinstance(from_signed(xi, moduli), CrtTensor)
    assert torch.equal(to_signed(from_signed(xi, moduli)),
                       crt.from_residues({q: xi % q for q in moduli}, moduli))
