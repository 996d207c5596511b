"""LabelTensor free operations, modulus checks and the random generators."""
import numpy as np
import pytest
import torch
import torch.nn.functional as F

from dashc import crt
from dashc.runtime import labels as labels_mod
from dashc.runtime.labels import LabelTensor, check_modulus, exact_float_plan
from dashc.runtime.rng import InsecureSeededRandom, SecureRandom, insecure_seeded_random

DEVICES = ["cpu", pytest.param("cuda", marks=[pytest.mark.gpu, pytest.mark.skipif(
    not torch.cuda.is_available(), reason="no CUDA device")])]


def _labels(q, shape, seed, device):
    return LabelTensor(insecure_seeded_random(seed).labels(q, shape, device), q)


def _conv_ref(x, w, stride, pads, q):
    """Integer reference: x (N, C, H, W) int64, exact Python-int convolution via unfold."""
    top, left, bottom, right = pads
    x = F.pad(x, (left, right, top, bottom))
    O, C, kh, kw = w.shape
    win = x.unfold(2, kh, stride[0]).unfold(3, kw, stride[1])  # N C H' W' kh kw
    return torch.einsum("nchwij,ocij->nohw", win, torch.as_tensor(w)) % q


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("q", [2, 3, 17, 251])
def test_ring_ops_are_digitwise(q, device):
    a, b = _labels(q, (2, 5), 1, device), _labels(q, (2, 5), 2, device)
    assert (a.add(b).digits == (a.digits + b.digits) % q).all()
    assert (a.sub(b).digits == (a.digits - b.digits) % q).all()
    assert (a.neg().add(a).digits == 0).all()
    assert (a.cmul(-7).digits == (a.digits * -7) % q).all()
    assert a.shape == (2, 5) and a.n == crt.label_length(q) and a.q == q


@pytest.mark.parametrize("q", [2, 3, 13, 251, 65521, (1 << 26) - 5, (1 << 31) - 1])
def test_compiled_ring_ops_equal_torch(q, monkeypatch):
    """The compiled free operations (CPU) give the torch path's digits, on every pair of
    residues for small moduli and on samples with the extremes for large ones."""
    if not labels_mod.cpu_kernels.AVAILABLE:
        pytest.skip("numba is not installed")
    if q < 300:
        x = torch.arange(q).repeat_interleave(q)
        y = torch.arange(q).repeat(q)
    else:
        g = torch.Generator().manual_seed(q)
        x = torch.cat([torch.tensor([0, 1, q - 1, q - 2]), torch.randint(0, q, (4000,),
                                                                        generator=g)])
        y = torch.cat([torch.tensor([q - 1, q - 1, q - 1, 0]), torch.randint(0, q, (4000,),
                                                                            generator=g)])
    n = crt.label_length(q)
    size = -(-x.numel() // (2 * n)) * 2 * n
    pad = size - x.numel()
    x = torch.cat([x, torch.zeros(pad, dtype=torch.int64)]).reshape(2, -1, n)
    y = torch.cat([y, torch.zeros(pad, dtype=torch.int64)]).reshape(2, -1, n)
    a, b = LabelTensor(x, q), LabelTensor(y, q)
    delta = y[:, 0, :].contiguous()
    ops = [lambda: a.add(b), lambda: a.sub(b), lambda: a.neg(), lambda: a.cmul(q - 1),
           lambda: a.cmul(-3), lambda: a.cmul(0), lambda: a.add_scaled(delta, q - 2),
           lambda: a.add_scaled(delta, y[..., 0] - 5), lambda: a.add_scaled(delta, x[0, :, 1])]
    fast = [op().digits for op in ops]
    monkeypatch.setattr(labels_mod.cpu_kernels, "AVAILABLE", False)
    for op, got in zip(ops, fast):
        ref = op().digits
        assert got.dtype == ref.dtype == torch.int64 and torch.equal(got, ref)
    assert torch.equal(fast[0], (x + y) % q) and torch.equal(fast[3], (x * (q - 1)) % q)


def _linear_cases():
    return [(3, 5), (251, 300), (251, 2000), (17, 40)]


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("q,fan_in", _linear_cases())
def test_dense_exact_with_large_weights(q, fan_in, device):
    rng = np.random.default_rng(q + fan_in)
    w = rng.integers(-10 ** 6, 10 ** 6, size=(4, fan_in))
    a = _labels(q, (2, fan_in), 3, device)
    ref = torch.einsum("bin,oi->bon", a.digits.cpu(), torch.from_numpy(w % q)) % q
    assert (a.dense(w).digits.cpu() == ref).all()


@pytest.mark.parametrize("q,wmax", [(2, 1), (3, 127), (23, 127), (251, 60), (251, 4000)])
def test_dense_exact_with_small_raw_weights(q, wmax):
    """Weights small enough to be used as they are (no reduction mod q) and weights just
    past that bound give the same exact result."""
    rng = np.random.default_rng(q * wmax)
    w = rng.integers(-wmax, wmax + 1, size=(6, 784))
    a = _labels(q, (2, 784), 5, "cpu")
    ref = torch.einsum("bin,oi->bon", a.digits, torch.from_numpy(w % q)) % q
    assert (a.dense(w).digits == ref).all()


def test_exact_float_plan_splits_when_needed():
    assert exact_float_plan(10, 251, 125)[0] is torch.float32
    assert exact_float_plan(10 ** 5, 251, 125)[0] is torch.float64
    dtype, step = exact_float_plan(10 ** 12, 251, 125)
    assert dtype is torch.float64 and step * 250 * 125 < 2 ** 53 <= (step + 1) * 250 * 125 * 2


def test_dense_split_sum_is_exact(monkeypatch):
    monkeypatch.setattr(labels_mod, "FLOAT64_EXACT", 1 << 20)  # force the split path
    monkeypatch.setattr(labels_mod, "FLOAT32_EXACT", 1 << 10)
    q, fan_in = 251, 97
    w = np.random.default_rng(0).integers(-125, 126, size=(3, fan_in))
    a = _labels(q, (2, fan_in), 4, "cpu")
    ref = torch.einsum("bin,oi->bon", a.digits, torch.from_numpy(w % q)) % q
    assert (a.dense(w).digits == ref).all()


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("q,stride,pads", [(5, (1, 1), (0, 0, 0, 0)), (251, (2, 1), (1, 2, 0, 1)),
                                           (2, (3, 3), (1, 1, 1, 1))])
def test_conv2d_matches_integer_convolution(q, stride, pads, device):
    w = np.random.default_rng(q).integers(-1000, 1000, size=(4, 3, 3, 2))
    a = _labels(q, (2, 3, 7, 6), 5, device)
    x = a.digits.cpu().permute(0, 4, 1, 2, 3).reshape(-1, 3, 7, 6)
    ref = _conv_ref(x, w, stride, pads, q)
    got = a.conv2d(w, stride, pads).digits.cpu()
    assert (got.permute(0, 4, 1, 2, 3).reshape(ref.shape) == ref).all()


@pytest.mark.parametrize("device", DEVICES)
def test_sumpool_and_take_and_reshape(device):
    q = 13
    a = _labels(q, (2, 2, 5, 5), 6, device)
    x = a.digits.cpu().permute(0, 4, 1, 2, 3).reshape(-1, 2, 5, 5)
    ones = np.zeros((2, 2, 2, 3), dtype=np.int64)
    ones[0, 0] = ones[1, 1] = 1
    ref = _conv_ref(x, ones, (2, 2), (1, 0, 0, 1), q)
    got = a.sumpool((2, 3), (2, 2), (1, 0, 0, 1)).digits.cpu()
    assert (got.permute(0, 4, 1, 2, 3).reshape(ref.shape) == ref).all()
    idx = np.array([[49, 0], [3, 3], [10, 7]])
    t = a.take(idx)
    assert t.shape == (2, 3, 2)
    assert (t.digits.cpu() == a.digits.cpu().reshape(2, 50, -1)[:, idx]).all()
    assert a.reshape((2, 50)).shape == (2, 50)
    with pytest.raises(IndexError):
        a.take(np.array([50]))


@pytest.mark.parametrize("device", DEVICES)
def test_add_scaled_broadcasts_constants(device):
    q = 7
    a = _labels(q, (2, 3), 7, device)
    delta = insecure_seeded_random(8).delta(q, 2, device)
    c = np.array([1, -2, 10])
    out = a.add_scaled(delta, c)
    ref = (a.digits + torch.as_tensor(c % q, device=device)[None, :, None] * delta[:, None]) % q
    assert (out.digits == ref).all()


@pytest.mark.parametrize("q", [1, 4, 32, 98, 255])
def test_composite_modulus_refused(q):
    with pytest.raises(ValueError, match="not prime"):
        check_modulus(q)
    with pytest.raises(ValueError):
        LabelTensor(torch.zeros(1, 8, dtype=torch.int64), q)


def test_secure_residues_in_range_and_spread():
    r = SecureRandom()
    for q in (2, 3, 251, 257, 65537):
        x = r.residues(q, (4000,))
        assert x.dtype == torch.int64 and x.min() >= 0 and x.max() < q
    counts = torch.bincount(r.residues(3, (30000,)), minlength=3).float()
    assert ((counts / 30000 - 1 / 3).abs() < 0.02).all()


def test_rejection_sampling_is_unbiased():
    """q = 200 over bytes: without rejection, residues < 56 would be twice as likely."""
    x = insecure_seeded_random(9).residues(200, (200000,))
    low = (x < 56).float().mean().item()
    assert abs(low - 56 / 200) < 0.01


def test_delta_has_colour_one_and_fresh_draws_differ():
    r = SecureRandom()
    d = r.delta(5, 3)
    assert d.shape == (3, crt.label_length(5)) and (d[:, 0] == 1).all()
    assert not torch.equal(r.labels(5, (4,)), r.labels(5, (4,)))


def test_seeded_generator_is_explicit_and_marked_insecure():
    a, b = insecure_seeded_random(3), insecure_seeded_random(3)
    assert torch.equal(a.labels(11, (5,)), b.labels(11, (5,)))
    assert not a.secure and SecureRandom.secure
    assert isinstance(a, InsecureSeededRandom)


@pytest.mark.parametrize("q", [2, 4, 32, 3, 257, 65537])
def test_residues_uniform_for_every_width(q):
    """Bit fields (powers of two), one-, two- and four-byte rejection: chi-square on the
    counts (or on 64 buckets for large q) stays far below what a bias would give."""
    n = 64000
    x = insecure_seeded_random(q).residues(q, (n,))
    assert x.shape == (n,) and x.min() >= 0 and x.max() < q
    buckets = min(q, 64)
    counts = torch.bincount(x * buckets // q, minlength=buckets).double()
    expected = torch.tensor([((torch.arange(q) * buckets // q) == b).sum() for b in
                             range(buckets)], dtype=torch.float64) * n / q
    chi2 = float(((counts - expected) ** 2 / expected).sum())
    assert chi2 < buckets + 6 * (2 * buckets) ** 0.5, chi2


def test_prepared_weights_are_reused_only_for_read_only_arrays():
    L = labels_mod
    rng = np.random.default_rng(5)
    w = rng.integers(-300, 300, (7, 40))
    x = LabelTensor(torch.from_numpy(rng.integers(0, 13, (2, 40, crt.label_length(13)))), 13)
    want = x.dense(w.copy()).digits
    L._PREPARED.clear()
    x.dense(w)
    assert not L._PREPARED  # a writable array may change: never memoised
    w.flags.writeable = False
    assert torch.equal(x.dense(w).digits, want) and len(L._PREPARED) == 1
    assert torch.equal(x.dense(w).digits, want) and len(L._PREPARED) == 1


@pytest.mark.parametrize("device", ["cpu", pytest.param("cuda", marks=pytest.mark.gpu)])
@pytest.mark.parametrize("C,O,k,s", [(3, 32, 3, 1), (32, 32, 2, 2), (5, 5, 3, 3), (64, 16, 1, 1)])
def test_conv2d_gemm_equals_conv2d(device, C, O, k, s):
    """The matrix-product convolution used off the CPU equals ``F.conv2d`` exactly on
    integer-valued floats, including full-range float32 sums."""
    if device == "cuda" and not torch.cuda.is_available():
        pytest.skip("CUDA is not available")
    from dashc.runtime.labels import conv2d_gemm, exact_conv2d
    g = torch.Generator().manual_seed(C * O + k)
    fan_in = C * k * k
    top = (1 << 24) // (fan_in * 128)  # every partial sum exact in float32
    x = torch.randint(0, 128, (6, C, 13, 13), generator=g).float()
    w = torch.randint(-top, top + 1, (O, C, k, k), generator=g).float()
    ref = torch.nn.functional.conv2d(x.double(), w.double(), stride=(s, s))
    x, w = x.to(device), w.to(device)
    assert torch.equal(conv2d_gemm(x, w, (s, s)).cpu().double(), ref)
    assert torch.equal(exact_conv2d(x, w, (s, s)).cpu().double(), ref)


def test_conv2d_split_sum_is_exact(monkeypatch):
    monkeypatch.setattr(labels_mod, "FLOAT64_EXACT", 1 << 18)  # two channels a piece
    monkeypatch.setattr(labels_mod, "FLOAT32_EXACT", 1 << 10)
    q = 251
    w = np.random.default_rng(1).integers(-125, 126, size=(3, 5, 2, 2))
    a = _labels(q, (2, 5, 4, 4), 8, "cpu")
    x = a.digits.permute(0, 4, 1, 2, 3).reshape(-1, 5, 4, 4)
    ref = _conv_ref(x, w, (1, 1), (1, 0, 0, 1), q)
    got = a.conv2d(w, (1, 1), (1, 0, 0, 1)).digits
    assert (got.permute(0, 4, 1, 2, 3).reshape(ref.shape) == ref).all()


@pytest.mark.parametrize("q", [2, 7, 251])
def test_compiled_linear_layers_equal_torch(q, monkeypatch):
    """The one-pass fold and residue kernels give what permute, pad, cast and remainder
    give, for contiguous and strided digits."""
    rng = np.random.default_rng(q)
    wc = rng.integers(-300, 300, size=(4, 3, 3, 3))
    wd = rng.integers(-300, 300, size=(5, 3 * 6 * 5))
    a = _labels(q, (2, 3, 6, 5), 9, "cpu")
    strided = LabelTensor(a.digits.transpose(2, 3).contiguous().transpose(2, 3), q)
    ops = [lambda t: t.conv2d(wc, (2, 1), (1, 0, 2, 1)),
           lambda t: t.conv2d(wc, (1, 1), (0, 0, 0, 0)),
           lambda t: t.reshape((2, -1)).dense(wd)]
    fast = [op(t).digits for op in ops for t in (a, strided)]
    monkeypatch.setattr(labels_mod.cpu_kernels, "AVAILABLE", False)
    slow = [op(t).digits for op in ops for t in (a, strided)]
    for got, ref in zip(fast, slow):
        assert got.dtype == ref.dtype == torch.int64 and torch.equal(got, ref)
