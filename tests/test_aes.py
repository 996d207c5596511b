"""Fixed-key AES (OpenSSL and torch paths), packing and the tweakable hash."""
import numpy as np
import pytest
import torch

from dashc import crt
from dashc.runtime import hashing
from dashc.runtime.aes import FIXED_KEY, OpenSSLAES, TorchAES, expand_key
from dashc.runtime.hashing import HASH, pack, tweak_limbs, unpack

DEVICES = ["cpu", pytest.param("cuda", marks=[pytest.mark.gpu, pytest.mark.skipif(
    not torch.cuda.is_available(), reason="no CUDA device")])]

# FIPS-197 Appendix B and Appendix C.1 (AES-128)
KAT = [
    ("2b7e151628aed2a6abf7158809cf4f3c", "3243f6a8885a308d313198a2e0370734",
     "3925841d02dc09fbdc118597196a0b32"),
    ("000102030405060708090a0b0c0d0e0f", "00112233445566778899aabbccddeeff",
     "69c4e0d86a7b0430d8cdb78070b4c55a"),
]


def _block(hexstr):
    return np.frombuffer(bytes.fromhex(hexstr), dtype=np.uint8).reshape(1, 16).copy()


@pytest.mark.parametrize("key,pt,ct", KAT)
def test_fips197_openssl(key, pt, ct):
    assert bytes(OpenSSLAES(bytes.fromhex(key)).encrypt(_block(pt))[0]).hex() == ct


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("key,pt,ct", KAT)
def test_fips197_torch(key, pt, ct, device):
    out = TorchAES(bytes.fromhex(key)).encrypt(torch.from_numpy(_block(pt)).to(device))
    assert bytes(out[0].cpu().numpy()).hex() == ct


def test_key_schedule_last_round_key():
    # FIPS-197 Appendix A.1: w[40..43] for key 2b7e1516...
    assert expand_key(bytes.fromhex(KAT[0][0]))[10].hex() == "d014f9a8c9ee2589e13f0cc8b6630ca6"


@pytest.mark.parametrize("device", DEVICES)
def test_torch_path_matches_openssl(device):
    rng = np.random.default_rng(0)
    blocks = rng.integers(0, 256, size=(4096, 16), dtype=np.uint8)
    ref = OpenSSLAES(FIXED_KEY).encrypt(blocks)
    got = TorchAES(FIXED_KEY).encrypt(torch.from_numpy(blocks).to(device)).cpu().numpy()
    assert (ref == got).all()


@pytest.mark.parametrize("q", [2, 3, 5, 17, 19, 127, 251])
def test_pack_unpack_exact(q):
    n = crt.label_length(q)
    g = torch.Generator().manual_seed(q)
    d = torch.randint(0, q, (300, n), generator=g)
    d[0] = q - 1  # the largest packed value
    d[1] = 0
    limbs = pack(d, q)
    for row, lim in zip(d.tolist()[:40], limbs.tolist()[:40]):
        assert sum(v * q ** i for i, v in enumerate(row)) == sum(v << (32 * i)
                                                                  for i, v in enumerate(lim))
    assert (unpack(limbs, q, n) == d).all()


def test_unpack_low_digits_of_long_integers():
    rng = np.random.default_rng(1)
    limbs = torch.from_numpy(rng.integers(0, 1 << 32, size=(50, 8), dtype=np.int64))
    for q, m in [(3, 81), (19, 31), (251, 17), (2, 128)]:
        got = unpack(limbs, q, m)
        for lim, row in zip(limbs.tolist(), got.tolist()):
            u = sum(v << (32 * i) for i, v in enumerate(lim)) % q ** m
            assert row == [(u // q ** i) % q for i in range(m)]


def test_output_blocks_statistically_close():
    for q in [3, 5, 17, 19, 251]:
        for m in (crt.label_length(q), crt.label_length(q) + 1):
            h = hashing.output_blocks(q, m)
            assert q ** m * 2 ** hashing.SECURITY_BITS <= 2 ** (128 * h)
    assert hashing.output_blocks(2, 128) == 1


def test_row_fields_are_bits_of_the_integer():
    """Field j for modulus q: the low bits(q - 1) bits of the j-th chunk of field_width(q)
    bits (a power of two) of the hash output, as an integer."""
    g = torch.Generator().manual_seed(5)
    limbs = torch.randint(0, 1 << 32, (40, 8), generator=g, dtype=torch.int64)
    for q, b, bp in [(2, 1, 1), (3, 2, 2), (7, 3, 4), (13, 4, 4), (19, 5, 8), (251, 8, 8),
                     (257, 9, 16), (65537, 17, 32)]:
        assert (hashing.field_bits(q), hashing.field_width(q)) == (b, bp)
        m = crt.label_length(q)
        assert hashing.row_blocks(q, m) >= hashing.output_blocks(q, m)
        assert m * bp <= 128 * hashing.row_blocks(q, m)
        got = hashing.fields(limbs, q, m)
        for lim, row in zip(limbs.tolist(), got.tolist()):
            u = sum(v << (32 * i) for i, v in enumerate(lim))
            assert row == [(u >> (bp * j)) & ((1 << b) - 1) for j in range(m)]


def test_hash_definition():
    """H(x, t) = pi(pi(x) ^ t) ^ pi(x) on the packed label, expanded to digits."""
    q, n = 5, crt.label_length(5)
    keys = torch.randint(0, q, (3, n), generator=torch.Generator().manual_seed(2))
    elem = torch.tensor([0, 7, 1 << 40])
    out = HASH(keys, q, 99, elem, 2, 2, 128)
    aes = OpenSSLAES(FIXED_KEY)
    for i in range(3):
        x = sum(int(v) * q ** j for j, v in enumerate(keys[i].tolist())).to_bytes(16, "little")
        t = ((int(elem[i]) << 6 | 2 << 3) | (99 << 64)).to_bytes(16, "little")
        px = bytes(aes.encrypt(np.frombuffer(x, np.uint8).reshape(1, 16))[0])
        inner = bytes(a ^ b for a, b in zip(px, t))
        h = bytes(a ^ b for a, b in zip(aes.encrypt(np.frombuffer(inner, np.uint8)
                                                    .reshape(1, 16))[0], px))
        u = int.from_bytes(h, "little")
        assert out[i].tolist() == [(u >> j) & 1 for j in range(128)]


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("q_in,q_out,m", [(3, 2, 128), (17, 19, 30), (2, 251, 17), (251, 7, 46)])
def test_hash_openssl_equals_torch(q_in, q_out, m, device):
    n = crt.label_length(q_in)
    keys = torch.randint(0, q_in, (500, n), generator=torch.Generator().manual_seed(q_in))
    elem = torch.arange(500) * 3
    ref = HASH(keys, q_in, 12345, elem, 1, q_out, m, impl="openssl")
    got = HASH(keys.to(device), q_in, 12345, elem.to(device), 1, q_out, m, impl="torch")
    assert (ref == got.cpu()).all()
    assert ref.min() >= 0 and ref.max() < q_out


def test_tweaks_separate_gates_elements_and_roles():
    elem = torch.arange(4)
    t = {tuple(tweak_limbs(g, elem, r, b)[i].tolist())
         for g in (0, 1) for r in (0, 1) for b in (0, 1) for i in range(4)}
    assert len(t) == 2 * 2 * 2 * 4
    keys = torch.zeros(2, crt.label_length(7), dtype=torch.int64)
    a = HASH(keys, 7, 0, torch.arange(2), 0, 7, 45)
    b = HASH(keys, 7, 1, torch.arange(2), 0, 7, 45)
    assert not (a[0] == a[1]).all() and not (a == b).all(dim=1).any()


def test_pad_digits_look_uniform():
    q, n = 3, crt.label_length(3)
    keys = torch.randint(0, q, (2000, n), generator=torch.Generator().manual_seed(5))
    pads = HASH(keys, q, 1, torch.arange(2000), 0, q, n)
    top = torch.bincount(pads[:, -1], minlength=3).float() / 2000  # the digit bias would hit
    assert (top - 1 / 3).abs().max() < 0.05
