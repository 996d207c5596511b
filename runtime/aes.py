"""Fixed-key AES-128 (the permutation pi of the hash), two interchangeable implementations.

* :class:`OpenSSLAES`: ECB through the ``cryptography`` package; all blocks of a layer in one
  ``update_into`` call on a preallocated output buffer (AES-NI where the CPU has it).
* :class:`TorchAES`: AES-128 written in torch tensor ops (S-box gathers, ShiftRows as a
  column permutation, MixColumns with ``xtime`` tables), for blocks that live on a CUDA
  device.  It also runs on CPU tensors, where tests check it byte for byte against OpenSSL.

Blocks are ``uint8`` arrays/tensors of shape ``(N, 16)`` in FIPS-197 byte order.
The fixed key is public: the first 16 bytes of SHA-256 of a domain string.
"""
from __future__ import annotations

import hashlib

import numpy as np
import torch

FIXED_KEY = hashlib.sha256(b"dashc fixed-key AES-128 for the tweakable CCR hash").digest()[:16]


def _xtime(b: int) -> int:
    b <<= 1
    return (b ^ 0x11B) if b & 0x100 else b


def _make_sbox() -> list[int]:
    # inverses in GF(2^8) from powers of the generator 3 (3*b = xtime(b) ^ b)
    exp, x = [], 1
    for _ in range(255):
        exp.append(x)
        x = _xtime(x) ^ x
    inv = [0] * 256
    for i, e in enumerate(exp):
        inv[e] = exp[(255 - i) % 255]
    sbox = []
    for a in range(256):
        x = inv[a]
        s = x
        for shift in range(1, 5):
            s ^= ((x << shift) | (x >> (8 - shift))) & 0xFF
        sbox.append(s ^ 0x63)
    return sbox


SBOX = _make_sbox()


def expand_key(key: bytes) -> list[bytes]:
    """AES-128 key schedule: 11 round keys of 16 bytes."""
    if len(key) != 16:
        raise ValueError("AES-128 needs a 16-byte key")
    words = [list(key[4 * i:4 * i + 4]) for i in range(4)]
    rcon = 1
    for i in range(4, 44):
        t = list(words[i - 1])
        if i % 4 == 0:
            t = [SBOX[b] for b in t[1:] + t[:1]]
            t[0] ^= rcon
            rcon = _xtime(rcon)
        words.append([a ^ b for a, b in zip(words[i - 4], t)])
    return [bytes(sum(words[4 * r:4 * r + 4], [])) for r in range(11)]


class OpenSSLAES:
    """Batched AES-128-ECB encryption through OpenSSL into a reusable buffer."""

    def __init__(self, key: bytes = FIXED_KEY):
        from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

        self._enc = Cipher(algorithms.AES(key), modes.ECB()).encryptor()
        self._buf = bytearray(0)

    def encrypt(self, blocks: np.ndarray) -> np.ndarray:
        """``(N, 16) uint8 -> (N, 16) uint8`` (a fresh array)."""
        data = np.ascontiguousarray(blocks, dtype=np.uint8)
        n = data.size
        if len(self._buf) < n + 16:
            self._buf = bytearray(max(n + 16, 2 * len(self._buf)))
        # ECB keeps no state between calls, so one encryptor serves every batch
        written = self._enc.update_into(memoryview(data).cast("B"), self._buf)
        assert written == n
        return np.frombuffer(self._buf, dtype=np.uint8, count=n).reshape(data.shape).copy()

    def encrypt_into(self, blocks: np.ndarray, out: bytearray) -> memoryview:
        """Encrypt into a caller-owned buffer of at least ``blocks.size + 15`` bytes."""
        data = np.ascontiguousarray(blocks, dtype=np.uint8)
        self._enc.update_into(memoryview(data).cast("B"), out)
        return memoryview(out)[:data.size]


# ShiftRows as a permutation of the 16 state bytes (byte 4*c + r holds row r, column c)
_SHIFT_ROWS = [4 * ((c + r) % 4) + r for c in range(4) for r in range(4)]


class TorchAES:
    """AES-128 on ``(N, 16) uint8`` tensors of any device, byte-identical to OpenSSL."""

    def __init__(self, key: bytes = FIXED_KEY):
        self._round_keys = torch.tensor(list(b"".join(expand_key(key))),
                                        dtype=torch.uint8).reshape(11, 16)
        self._sbox = torch.tensor(SBOX, dtype=torch.uint8)
        self._x2 = torch.tensor([_xtime(a) for a in range(256)], dtype=torch.uint8)
        self._perm = torch.tensor(_SHIFT_ROWS, dtype=torch.int64)
        self._on: dict[str, tuple] = {}

    def _tables(self, device: torch.device):
        key = str(device)
        if key not in self._on:
            self._on[key] = tuple(t.to(device) for t in (self._round_keys, self._sbox,
                                                         self._x2, self._perm))
        return self._on[key]

    def encrypt(self, blocks: torch.Tensor) -> torch.Tensor:
        rk, sbox, x2, perm = self._tables(blocks.device)
        s = blocks.to(torch.uint8) ^ rk[0]
        for r in range(1, 11):
            s = sbox[s.long()][:, perm]  # SubBytes then ShiftRows
            if r < 10:  # MixColumns on the (N, 4 columns, 4 rows) view
                c = s.reshape(-1, 4, 4)
                c1 = torch.roll(c, -1, dims=2)
                t = x2[(c ^ c1).long()]  # 2*b_r ^ 3*b_{r+1} = xtime(b_r ^ b_{r+1}) ^ b_{r+1}
                s = (t ^ c1 ^ torch.roll(c, -2, dims=2) ^ torch.roll(c, -3, dims=2))
                s = s.reshape(-1, 16)
            s = s ^ rk[r]
        return s
