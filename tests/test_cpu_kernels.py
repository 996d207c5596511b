"""The compiled CPU kernels equal the torch path bit for bit (labels, rows, pads)."""
import numpy as np
import pytest
import torch

from dashc import crt
from dashc.runtime import cpu_kernels, gates
from dashc.runtime.hashing import HASH
from dashc.runtime.rng import insecure_seeded_random

pytestmark = pytest.mark.skipif(not cpu_kernels.AVAILABLE, reason="numba is not installed")

# row-field widths 1 bit (2), 2 (3), 4 (5..13), 8 (17..251) and 16 (257..); 32 below
PAIRS = [(2, 2), (2, 3), (3, 2), (5, 7), (17, 19), (19, 17), (2, 251), (251, 2), (251, 251),
         (233, 17), (3, 257), (257, 5)]


def _setup(p, q, B, E, seed):
    rng = insecure_seeded_random(seed)
    return (rng.labels(p, (B, E)), rng.labels(q, (B, E)), rng.delta(p, B), rng.delta(q, B),
            rng.residues(p, (B, E)), rng.residues(p, (B, E)), rng.residues(q, (B, E)))


def _same(a, b):
    return a.shape == b.shape and torch.equal(a.to(torch.int64), b.to(torch.int64))


@pytest.mark.parametrize("p,q", PAIRS)
def test_gates_compiled_equal_torch(p, q):
    B, E = 2, 37
    a0, b0, dp, dq, r, x, y = _setup(p, q, B, E, p * 1000 + q)
    table = torch.from_numpy(np.random.default_rng(p + q).integers(0, q, size=p))
    per_wire = torch.from_numpy(np.random.default_rng(q).integers(0, q, size=(B, E, p)))
    for tab in (table, per_wire):
        ref = gates.garble_proj(a0, p, dp, q, dq, tab, 11, impl="torch")
        got = gates.garble_proj(a0, p, dp, q, dq, tab, 11, impl="compiled")
        assert _same(ref[0], got[0]) and _same(ref[1], got[1])
    active_a = (a0 + x[..., None] * dp[:, None, :]) % p
    active_b = (b0 + y[..., None] * dq[:, None, :]) % q
    assert _same(gates.eval_proj(active_a, p, q, ref[1], 11, impl="torch"),
                 gates.eval_proj(active_a, p, q, got[1], 11, impl="compiled"))
    ref0, ref_t = gates.garble_mixed_mul(a0, p, dp, b0, q, dq, r, 12, impl="torch")
    got0, got_t = gates.garble_mixed_mul(a0, p, dp, b0, q, dq, r, 12, impl="compiled")
    assert _same(ref0, got0) and all(_same(u, v) for u, v in zip(ref_t, got_t))
    assert _same(gates.eval_mixed_mul(active_a, p, active_b, q, *ref_t, 12, impl="torch"),
                 gates.eval_mixed_mul(active_a, p, active_b, q, *got_t, 12, impl="compiled"))


@pytest.mark.parametrize("p,q", [(2, 65521), (3, 65537)])
def test_projection_into_wide_moduli_compiled_equals_torch(p, q):
    """Rows into moduli above 2^16 (32-bit pad fields) and just below (16-bit fields, no
    float reduction): projections only, a half gate with that many colours is not cheap."""
    B, E = 2, 37
    a0, _, dp, _, _, x, _ = _setup(p, 2, B, E, q)
    dq = insecure_seeded_random(q).delta(q, B)
    table = torch.from_numpy(np.random.default_rng(q).integers(0, q, size=p))
    ref = gates.garble_proj(a0, p, dp, q, dq, table, 11, impl="torch")
    got = gates.garble_proj(a0, p, dp, q, dq, table, 11, impl="compiled")
    assert _same(ref[0], got[0]) and _same(ref[1], got[1])
    assert int(ref[1].max()) >= q  # entries fill the 2^bits(q - 1) range, not just [0, q)
    active = (a0 + x[..., None] * dp[:, None, :]) % p
    out = gates.eval_proj(active, p, q, got[1], 11, impl="compiled")
    assert _same(gates.eval_proj(active, p, q, ref[1], 11, impl="torch"), out)
    fx = table[x]
    assert _same(out, (ref[0] + fx[..., None] * dq[:, None, :]) % q)


def test_chunks_and_blocks_cover_every_wire():
    """More wires than one OpenSSL chunk and one expansion block: no seam shows."""
    p, q = 5, 17
    B, E = 3, 3000
    a0, b0, dp, dq, r, x, _ = _setup(p, q, B, E, 3)
    table = torch.arange(p) % q
    ref = gates.garble_proj(a0, p, dp, q, dq, table, 2 ** 40, impl="torch")
    got = gates.garble_proj(a0, p, dp, q, dq, table, 2 ** 40, impl="compiled")
    assert _same(ref[0], got[0]) and _same(ref[1], got[1])
    active = (a0 + x[..., None] * dp[:, None, :]) % p
    assert _same(gates.eval_proj(active, p, q, ref[1], 2 ** 40, impl="torch"),
                 gates.eval_proj(active, p, q, got[1], 2 ** 40, impl="compiled"))
    ref0, ref_t = gates.garble_mixed_mul(a0, p, dp, b0, q, dq, r, 5, impl="torch")
    got0, got_t = gates.garble_mixed_mul(a0, p, dp, b0, q, dq, r, 5, impl="compiled")
    assert _same(ref0, got0) and all(_same(u, v) for u, v in zip(ref_t, got_t))


@pytest.mark.parametrize("q_in,q_out,m", [(3, 2, 128), (2, 3, 81), (17, 19, 30), (19, 17, 32),
                                          (251, 7, 46), (2, 251, 17), (3, 3, 200)])
def test_hash_compiled_equals_openssl_and_torch(q_in, q_out, m):
    n = crt.label_length(q_in)
    g = torch.Generator().manual_seed(q_in * q_out)
    keys = torch.randint(0, q_in, (700, n), generator=g)
    keys[0] = q_in - 1
    keys[1] = 0
    elem = torch.randint(0, 1 << 50, (700,), generator=g)
    ref = HASH(keys, q_in, 1 << 62, elem, 7, q_out, m, impl="openssl")
    assert torch.equal(ref, HASH(keys, q_in, 1 << 62, elem, 7, q_out, m, impl="compiled"))
    assert torch.equal(ref, HASH(keys, q_in, 1 << 62, elem, 7, q_out, m, impl="torch"))


@pytest.mark.parametrize("q,m,h", [(3, 80, 1), (19, 30, 2), (46337, 8, 1), (46337, 16, 2),
                                   (23, 28, 2), (251, 16, 2), (536870909, 4, 1),
                                   (536870909, 8, 2), (1073741827, 4, 1), (1073741827, 8, 2)])
def test_expansion_division_edge_values(q, m, h):
    """Pads at the edges of the float quotient estimate (all ones, zero, multiples of
    ``D = q^k`` and their neighbours; 46337^2 is just below 2^31) expand like exact integer
    division."""
    assert crt.is_prime(q)
    k, D, tops = cpu_kernels.expand_consts(q, m, h)
    top = 1 << (128 * h)
    values = [0, top - 1, D, D - 1, D ** 2, D ** 3 - 1, D ** 4 + D - 1, (top // D) * D,
              (top // D) * D - 1, (top // D ** 2) * D ** 2 - 1, top - D]
    # partial dividends at exact multiples of D and just below, at every limb position
    for s in range(0, 128 * h - 21, 21):
        for mult in (1, (1 << 21) - 1, D - 1):
            v = (mult * D) << s
            if v < top:
                values += [v, v - 1, v + D - 1]
    words = [[int.from_bytes(((v >> (64 * i)) & ((1 << 64) - 1)).to_bytes(8, "little"),
                             "little", signed=True) for i in range(2 * h)] for v in values]
    y = np.zeros((len(values), 2), np.int64)
    z = np.array(words, dtype=np.int64).reshape(len(values), h, 2)
    F, R, pad = cpu_kernels._scratch(h, len(values), m)
    out = np.empty((len(values), m), np.int64)
    cpu_kernels.expand_pads(y, z, h, q, m, k, D, tops, F, R, pad, out)
    for v, row in zip(values, out.tolist()):
        assert row == [(v // q ** i) % q for i in range(m)]


@pytest.mark.parametrize("q", [2, 3, 5, 7, 11, 13, 17, 19, 31, 127, 251, 257, 65521])
def test_packing_equals_the_integer_sum(q):
    """Both packing kernels give sum d_i q^i exactly, extreme digits included."""
    n = crt.label_length(q)
    rng = np.random.default_rng(q)
    d = rng.integers(0, q, (300, n)).astype(np.int64)
    d[0], d[1], d[2, ::2] = q - 1, 0, q - 1
    k, PW, QL = cpu_kernels.pack_consts(q, n)
    out = np.empty((300, 2), np.int64)
    cpu_kernels.pack_labels(d, q, k, PW, QL, out)
    want = [sum(int(v) * q ** i for i, v in enumerate(row)) for row in d]
    got = [int(lo) % (1 << 64) | (int(hi) % (1 << 64)) << 64 for lo, hi in out]
    assert got == want
    delta = rng.integers(0, q, (3, n)).astype(np.int64)
    delta[:, 0] = 1
    allc = np.empty((300 * q, 2), np.int64)
    cpu_kernels.pack_all_colours(d, delta, 100, q, k, PW, QL, 0, 300, allc)
    for w in (0, 1, 2, 299):
        for x in range(q):
            key = (d[w] + x * delta[w // 100]) % q
            lo, hi = allc[w * q + int(key[0])]
            assert int(lo) % (1 << 64) | (int(hi) % (1 << 64)) << 64 == sum(
                int(v) * q ** i for i, v in enumerate(key))
