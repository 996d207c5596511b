"""Randomness for garbling: the OS CSPRNG with unbiased sampling modulo a prime.

Every secret (global offsets, zero labels, half-gate masks) is drawn here, never from torch
or numpy random generators.  :class:`SecureRandom` reads ``os.urandom``; samples modulo ``q``
use rejection (draws at or above the largest multiple of ``q`` that fits are discarded; a
power of two takes bit fields directly), so each residue is exactly uniform.  Sampling is vectorised: one batch of bytes per call, topped
up only when rejections leave it short.

A deterministic generator exists for tests only: :func:`insecure_seeded_random` returns an
:class:`InsecureSeededRandom`, whose byte stream is AES-128-CTR under a key derived from the
seed.  Production paths never call it: ``Garbler(rng=None)`` always builds a
:class:`SecureRandom`, and every generator carries ``secure`` (True only for the OS source) so
that code writing garbled material can refuse material made with the seeded one.
"""
from __future__ import annotations

import hashlib
import os

import numpy as np
import torch

from dashc import crt


class SecureRandom:
    """Uniform residues from the operating system's CSPRNG."""

    secure = True

    def random_bytes(self, n: int) -> bytes:
        return os.urandom(n)

    def residues(self, q: int, shape: tuple[int, ...], device="cpu") -> torch.Tensor:
        """An int64 tensor of ``shape`` with entries uniform in ``[0, q)``."""
        if q < 2:
            raise ValueError(f"modulus {q} must be at least 2")
        count = int(np.prod(shape, dtype=np.int64))
        width = max(1, (int(q - 1).bit_length() + 7) // 8)
        if width > 8:
            raise ValueError(f"modulus {q} is too large for 64-bit sampling")
        if q & (q - 1) == 0 and q <= 256:  # a power of two: uniform bit fields, no rejection
            bits = q.bit_length() - 1
            raw = np.frombuffer(self.random_bytes(-(-count * bits // 8)), dtype=np.uint8)
            flat = np.unpackbits(raw, bitorder="little")[:count * bits]
            if bits == 1:
                out = flat
            else:
                pw = (1 << np.arange(bits, dtype=np.uint16)).astype(np.uint16)
                out = flat.reshape(count, bits).astype(np.uint16) @ pw
        else:
            dtype = {1: np.uint8, 2: np.uint16}.get(width, np.uint64)
            span = 1 << (8 * width)
            limit = (span // q) * q  # accept draws below limit: each residue equally often
            out = np.empty(count, dtype=dtype)
            filled = 0
            while filled < count:
                want = count - filled
                draw = int(want * span / limit * 1.05) + 16
                raw = np.frombuffer(self.random_bytes(draw * width), dtype=np.uint8)
                if width in (1, 2):
                    value = raw.view(dtype)  # little-endian integers of the width
                else:
                    raw = raw.reshape(draw, width).astype(np.uint64)
                    value = np.zeros(draw, dtype=np.uint64)
                    for i in range(width):  # little-endian bytes -> integer
                        value |= raw[:, i] << np.uint64(8 * i)
                if limit < span:
                    value = value[value < limit]
                value = value[:want]
                out[filled:filled + len(value)] = value % dtype(q)
                filled += len(value)
        return torch.from_numpy(out.astype(np.int64)).reshape(shape).to(device)

    def labels(self, q: int, shape: tuple[int, ...], device="cpu") -> torch.Tensor:
        """Random labels for modulus ``q``: shape ``(*shape, n(q))``."""
        return self.residues(q, (*shape, crt.label_length(q)), device)

    def delta(self, q: int, batch: int, device="cpu") -> torch.Tensor:
        """One global offset per batch element, ``(batch, n(q))``, digit 0 forced to 1
        (point-and-permute: a label's colour is its digit 0)."""
        d = self.labels(q, (batch,), device)
        d[:, 0] = 1
        return d


class InsecureSeededRandom(SecureRandom):
    """Deterministic stream for reproducible tests.  NOT SECRET: never garble with it."""

    secure = False

    def __init__(self, seed: int):
        from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

        key = hashlib.sha256(b"dashc insecure test rng" + int(seed).to_bytes(16, "little",
                                                                            signed=True))
        self._enc = Cipher(algorithms.AES(key.digest()[:16]),
                           modes.CTR(bytes(16))).encryptor()

    def random_bytes(self, n: int) -> bytes:
        return self._enc.update(bytes(n))


def insecure_seeded_random(seed: int) -> InsecureSeededRandom:
    """The only way to obtain a deterministic generator (tests and benchmarks)."""
    return InsecureSeededRandom(seed)
