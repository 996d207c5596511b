"""The tweakable circular correlation-robust hash on labels, and base-q packing.

``H(x, t) = pi(pi(x) ^ t) ^ pi(x)`` with ``pi`` fixed-key AES-128 (Guo, Katz, Wang, Yu,
ePrint 2019/074, section 7.4).  A label (``n(q)`` digits mod ``q``) enters as one 128-bit
integer ``sum_i d_i q^i`` (exact: ``q^n(q) <= 2^128``).

Tweaks are unique per gate, per wire element and per use: the 128-bit tweak holds the gate
id in its high 64 bits and ``element << 6 | role << 3 | block`` in its low 64 bits, where
``role`` tells apart the hashes one gate makes under different keys and ``block`` numbers the
output blocks of one hash.  A gate that hashes each key for ``T`` outputs (a projection into
several moduli, :meth:`Hasher.many`) puts ``element * T + t`` in the element field for output
``t``, so its tweaks stay distinct; with ``T = 1`` this is the plain element index.

Output expansion.  A pad must be (statistically) uniform in ``Z_q^m``.  The low ``m`` base-q
digits of a uniform ``128h``-bit integer ``u`` are ``u mod q^m``, at statistical distance at
most ``q^m / 2^(128h)`` from uniform.  With one block (``h = 1``) that bound is useless for
``q = 3`` (``3^80 > 2^126``), so ``h`` is chosen so that ``q^m <= 2^(128h - 120)``; for a power
of two ``q`` one block is exact.  Block ``j`` of the output is ``H(x, t_j)``: ``pi(x)`` is
computed once, so a hash with ``h`` output blocks costs ``1 + h`` AES calls.

Fields.  A pad that only masks digits below ``q`` (a garbled row: :mod:`dashc.runtime.gates`)
need not be uniform in ``Z_q``: :func:`fields` cuts ``m`` chunks of ``field_width(q)`` bits
(a power of two) out of the output and keeps the low ``bits(q - 1)`` bits of each, exactly
uniform in ``[0, 2^bits(q - 1))``.  That costs a few bit operations per digit instead of a long
division; :func:`row_blocks` gives the blocks a pad needs to serve both ways.

Packing and expansion run on torch tensors of any device with int64 arithmetic in 32-bit
limbs: packing forms base ``q^k`` chunks (``q^k < 2^31``) with one float64 matmul (exact) and
combines them by Horner's rule on four limbs; expansion divides the ``4h`` limbs by ``q^k``
repeatedly (each division yields ``k`` digits at once) and splits the remainders with one
broadcast divmod.  Base 2 is plain bit extraction.
"""
from __future__ import annotations

import math

import numpy as np
import torch

from . import cpu_gates, cpu_kernels
from .aes import OpenSSLAES, TorchAES
from .bitpack import field_bits, field_width

MASK32 = (1 << 32) - 1
SECURITY_BITS = 120


def chunk_digits(q: int) -> int:
    """Largest k with q^k < 2^31 (digits per int64 limb step)."""
    k = 1
    while q ** (k + 1) < 1 << 31:
        k += 1
    return k


def row_blocks(q: int, m: int) -> int:
    """AES output blocks of a projection pad into ``Z_q^m``: the colour-0 key's pad is
    expanded into digits (:func:`output_blocks`), every other key's pad is read as ``m``
    fields (:func:`fields`, one per ``field_width(q)`` bits), so both must fit."""
    return max(output_blocks(q, m), -(-m * field_width(q) // 128))


def output_blocks(q: int, m: int) -> int:
    """AES output blocks needed for an (almost) uniform element of Z_q^m."""
    if q & (q - 1) == 0:  # power of two: the low bits are exactly uniform
        return max(1, math.ceil(m * (q.bit_length() - 1) / 128))
    return math.ceil(((q ** m).bit_length() + SECURITY_BITS) / 128)


_POWERS: dict[tuple, torch.Tensor] = {}


def _chunk_matrix(q: int, n: int, device) -> torch.Tensor:
    key = (q, n, str(device))
    if key not in _POWERS:
        k = chunk_digits(q)
        nchunks = -(-n // k)
        P = torch.zeros(n, nchunks, dtype=torch.float64)
        for i in range(n):
            P[i, i // k] = float(q ** (i % k))
        _POWERS[key] = P.to(device)
    return _POWERS[key]


def pack(digits: torch.Tensor, q: int) -> torch.Tensor:
    """``(N, n)`` digits in ``[0, q)`` -> ``(N, 4)`` int64 32-bit limbs of ``sum d_i q^i``
    (least significant limb first); requires ``q^n <= 2^128``."""
    n = digits.shape[-1]
    if q ** n > 1 << 128:
        raise ValueError(f"{n} digits mod {q} do not fit in 128 bits")
    k = chunk_digits(q)
    chunks = (digits.to(torch.float64) @ _chunk_matrix(q, n, digits.device)).to(torch.int64)
    Q = q ** k
    N = digits.shape[0]
    limbs = torch.zeros(4, N, dtype=torch.int64, device=digits.device)
    limbs[0] = chunks[:, -1]
    used = 1  # limbs that may be non-zero
    bound = q ** (n - k * (chunks.shape[1] - 1))
    for j in range(chunks.shape[1] - 2, -1, -1):  # Horner: value = value * Q + chunk
        bound *= Q
        new_used = min(4, -(-bound.bit_length() // 32))
        carry = chunks[:, j]
        for i in range(new_used):
            t = limbs[i] * Q + carry if i < used else carry
            limbs[i] = t & MASK32
            carry = t >> 32
        used = new_used
    return limbs.T.contiguous()


def limbs_to_bytes(limbs: torch.Tensor) -> torch.Tensor:
    """``(N, L)`` 32-bit limbs -> ``(N, 4L)`` uint8, little-endian (on the limbs' device)."""
    shifts = torch.tensor([0, 8, 16, 24], device=limbs.device)
    return ((limbs[:, :, None] >> shifts) & 255).to(torch.uint8).reshape(limbs.shape[0], -1)


def bytes_to_limbs(blocks: torch.Tensor) -> torch.Tensor:
    """``(N, 4L)`` uint8 -> ``(N, L)`` int64 32-bit limbs (little-endian)."""
    b = blocks.to(torch.int64).reshape(blocks.shape[0], -1, 4)
    return b[..., 0] | (b[..., 1] << 8) | (b[..., 2] << 16) | (b[..., 3] << 24)


def unpack(limbs: torch.Tensor, q: int, m: int) -> torch.Tensor:
    """The low ``m`` base-q digits of the integer in ``limbs`` ``(N, L)`` -> ``(N, m)``."""
    N, L = limbs.shape
    if q == 2:
        bits = (limbs[:, :, None] >> torch.arange(32, device=limbs.device)) & 1
        return bits.reshape(N, 32 * L)[:, :m].contiguous()
    k = chunk_digits(q)
    D = q ** k
    work = [limbs[:, i] for i in range(L)]
    bound = 1 << (32 * L)  # exclusive bound of the value still to divide
    chunks = []
    for _ in range(-(-m // k)):
        top = min(L, -(-(bound - 1).bit_length() // 32))
        rem = torch.zeros(N, dtype=torch.int64, device=limbs.device)
        for i in range(top - 1, -1, -1):
            cur = (rem << 32) | work[i]
            work[i] = torch.div(cur, D, rounding_mode="floor")
            rem = cur - work[i] * D
        chunks.append(rem)
        bound = -(-bound // D)
    chunks_t = torch.stack(chunks, dim=1)
    pw = torch.tensor([q ** i for i in range(k)], dtype=torch.int64, device=limbs.device)
    digits = torch.div(chunks_t[:, :, None], pw, rounding_mode="floor") % q
    return digits.reshape(N, -1)[:, :m].contiguous()


def fields(limbs: torch.Tensor, q: int, m: int) -> torch.Tensor:
    """The ``m`` row fields for modulus ``q`` of the integers in ``limbs`` ``(N, L)`` (32-bit
    limbs, least significant first): field ``j`` is bits ``bp*j .. bp*j + b - 1`` with
    ``b = bits(q - 1)`` and ``bp = field_width(q)`` (a power of two, so a field lies in one
    limb) -> ``(N, m)`` int64, uniform in ``[0, 2^b)`` for a uniform pad."""
    N, L = limbs.shape
    b, bp = field_bits(q), field_width(q)
    if m * bp > 32 * L or b > 31:
        raise ValueError(f"{m} fields of {bp} bits do not fit in {L} limbs")
    bit = torch.arange(m, device=limbs.device) * bp
    return (limbs[:, bit >> 5] >> (bit & 31)) & ((1 << b) - 1)


def tweak_limbs(gate_id: int, elem: torch.Tensor, role: int, block: int) -> torch.Tensor:
    """``(N, 4)`` int64 32-bit limbs of the 128-bit tweak."""
    if not 0 <= role < 8 or not 0 <= block < 8:
        raise ValueError("tweak role and block must lie in [0, 8)")
    if not 0 <= gate_id < 1 << 63:
        raise ValueError(f"gate id {gate_id} out of range")
    low = (elem.to(torch.int64) << 6) | (role << 3) | block
    t = torch.empty(elem.shape[0], 4, dtype=torch.int64, device=elem.device)
    t[:, 0] = low & MASK32
    t[:, 1] = low >> 32
    t[:, 2] = gate_id & MASK32
    t[:, 3] = gate_id >> 32
    return t


class Hasher:
    """Hashes batches of labels to pads.  Implementations (bit for bit equal): ``compiled``
    (numba kernels around OpenSSL, the CPU default when numba is installed), ``openssl``
    (torch packing and expansion around OpenSSL) and ``torch`` (everything in torch ops, for
    CUDA tensors)."""

    def __init__(self):
        self._openssl = OpenSSLAES()
        self._torch = TorchAES()
        self.aes_blocks = 0  # AES calls made, for benchmarks

    def __call__(self, keys: torch.Tensor, q_in: int, gate_id: int, elem: torch.Tensor,
                 role: int, q_out: int, m: int, impl: str = "auto") -> torch.Tensor:
        """Pads ``H(key_i, t(gate_id, elem_i, role))`` as ``(N, m)`` digits mod ``q_out``.

        ``keys``: ``(N, n(q_in))`` digits; ``elem``: ``(N,)`` element indices."""
        return self.many(keys, q_in, gate_id, elem, role, [(q_out, m)], impl)[0]

    def many(self, keys: torch.Tensor, q_in: int, gate_id: int, elem: torch.Tensor,
             role: int, outputs: list[tuple[int, int]], impl: str = "auto") -> list[torch.Tensor]:
        """Several pads per key, one per output ``(q_out_j, m_j)``: pad ``j`` of key ``i`` is
        ``H(key_i, t(gate_id, elem_i * T + j, role))`` with ``T = len(outputs)``, as
        ``(N, m_j)`` digits mod ``q_out_j``.  ``pi(key)`` is computed once per key; the
        element field ``elem * T + j`` keeps every tweak distinct.  With one output this is
        :meth:`__call__`."""
        T = len(outputs)
        if T < 1:
            raise ValueError("at least one hash output is needed")
        hs = [output_blocks(q_out, m) for q_out, m in outputs]
        if impl == "auto":
            if keys.device.type != "cpu":
                impl = "torch"
            else:
                impl = "compiled" if cpu_kernels.AVAILABLE else "openssl"
        elems = [elem.to(torch.int64) * T + j for j in range(T)]
        if impl == "compiled":
            if not 0 <= role < 8 or not 0 <= gate_id < 1 << 63:
                raise ValueError("tweak role must lie in [0, 8) and the gate id in [0, 2^63)")
            if q_in ** keys.shape[-1] > 1 << 128:
                raise ValueError(f"{keys.shape[-1]} digits mod {q_in} do not fit in 128 bits")
            kn = np.ascontiguousarray(keys.numpy(), dtype=np.int64)
            out = []
            for (q_out, m), h, el in zip(outputs, hs, elems):
                out.append(torch.from_numpy(cpu_gates.hash_labels(
                    kn, q_in, gate_id, np.ascontiguousarray(el.numpy()), role, q_out, m, h)))
            self.aes_blocks += keys.shape[0] * (1 + sum(hs))
            return out
        return [unpack(limbs, q_out, m) for (q_out, m), limbs
                in zip(outputs, self.blocks(keys, q_in, gate_id, elem, role, hs, impl))]

    def blocks(self, keys: torch.Tensor, q_in: int, gate_id: int, elem: torch.Tensor,
               role: int, hs: list[int], impl: str = "auto") -> list[torch.Tensor]:
        """The hash outputs themselves, as :meth:`many` computes them before expansion:
        output ``j`` of key ``i`` is ``(N, 4 * hs[j])`` 32-bit limbs of the ``128 hs[j]``-bit
        integer whose block ``b`` is ``H(key_i, t(gate_id, elem_i * T + j, role, b))``."""
        T = len(hs)
        if impl in ("auto", "compiled"):
            impl = "torch" if keys.device.type != "cpu" else "openssl"
        if impl not in ("openssl", "torch"):
            raise ValueError(f"unknown AES implementation {impl!r}")
        x = pack(keys, q_in)
        y = self._pi_openssl(x) if impl == "openssl" else self._pi_torch(x)
        out = []
        for j, h in enumerate(hs):
            el = elem.to(torch.int64) * T + j
            tweaks = [tweak_limbs(gate_id, el, role, b) for b in range(h)]
            if impl == "openssl":
                out.append(self._hash_openssl(y, tweaks))
            else:
                out.append(self._hash_torch(y, tweaks))
        self.aes_blocks += x.shape[0] * (1 + sum(hs))
        return out

    def _pi_openssl(self, x: torch.Tensor) -> np.ndarray:
        N = x.shape[0]
        xb = x.numpy().astype(np.uint32).view(np.uint8).reshape(N, 16)
        return self._openssl.encrypt(xb).view(np.uint64)  # (N, 2)

    def _pi_torch(self, x: torch.Tensor) -> torch.Tensor:
        return self._torch.encrypt(limbs_to_bytes(x))

    def _hash_openssl(self, y: np.ndarray, tweaks: list[torch.Tensor]) -> torch.Tensor:
        """``(N, 4h)`` limbs of ``pi(y ^ t_j) ^ y`` for ``y = pi(x)`` (``(N, 2)`` uint64)."""
        N = y.shape[0]
        h = len(tweaks)
        t = np.stack([tw.numpy().astype(np.uint32).view(np.uint64) for tw in tweaks])
        z = self._openssl.encrypt((t ^ y).view(np.uint8).reshape(h * N, 16))
        out = z.view(np.uint64).reshape(h, N, 2) ^ y
        limbs = out.transpose(1, 0, 2).reshape(N, 2 * h).view(np.uint32)
        return torch.from_numpy(limbs.astype(np.int64))

    def _hash_torch(self, y: torch.Tensor, tweaks: list[torch.Tensor]) -> torch.Tensor:
        """As :meth:`_hash_openssl` with ``y`` as ``(N, 16)`` uint8 on any device."""
        N = y.shape[0]
        t = torch.cat([limbs_to_bytes(tw) for tw in tweaks])
        z = self._torch.encrypt(t ^ y.repeat(len(tweaks), 1))
        out = (z.reshape(len(tweaks), N, 16) ^ y).transpose(0, 1).reshape(N, -1)
        return bytes_to_limbs(out)


HASH = Hasher()
