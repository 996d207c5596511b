"""Number theory for CRT values: primes, inverses, residues, mixed radix, reconstruction.

Values are signed integers in ``[-M/2, M/2)`` for the base product ``M``.  All array helpers
accept numpy arrays or torch tensors of integers and return the same kind; ``M`` must stay
below ``2**62`` so that every intermediate fits in int64.
"""
from __future__ import annotations

import math
from typing import Sequence

import numpy as np

MAX_M = 1 << 62


def is_prime(n: int) -> bool:
    if n < 2:
        return False
    if n % 2 == 0:
        return n == 2
    f = 3
    while f * f <= n:
        if n % f == 0:
            return False
        f += 2
    return True


def first_primes(k: int) -> tuple[int, ...]:
    out: list[int] = []
    n = 2
    while len(out) < k:
        if is_prime(n):
            out.append(n)
        n += 1
    return tuple(out)


def inverse(a: int, m: int) -> int:
    """Multiplicative inverse of ``a`` modulo ``m`` (raises ValueError if none exists)."""
    return pow(a % m, -1, m)


def check_base(moduli: Sequence[int]) -> None:
    """Raise ValueError unless ``moduli`` are distinct primes with product below 2**62."""
    if not moduli:
        raise ValueError("empty CRT base")
    for q in moduli:
        if not is_prime(int(q)):
            raise ValueError(f"modulus {q} is not prime: every wire modulus must be prime")
    if len(set(moduli)) != len(moduli):
        raise ValueError(f"moduli {tuple(moduli)} repeat a prime")
    if math.prod(moduli) >= MAX_M:
        raise ValueError(f"base product {math.prod(moduli)} exceeds 2**62")


def label_length(q: int) -> int:
    """Digits per label for modulus q: floor(128 / log2 q)."""
    n = int(128 // math.log2(q))
    while q ** (n + 1) <= 1 << 128:  # guard float rounding
        n += 1
    while q ** n > 1 << 128:
        n -= 1
    return n


def to_residues(x, moduli: Sequence[int]) -> dict[int, object]:
    """Signed integers -> ``{q: x mod q}`` (non-negative residues, same array kind)."""
    return {q: x % q for q in moduli}


def mixed_radix_digits(residues: dict[int, object], order: Sequence[int]) -> list:
    """Garner's algorithm: digits a_i with x mod M = sum_i a_i * prod(order[:i])."""
    digits: list = []
    rest = {q: residues[q] for q in order}
    for i, p in enumerate(order):
        a = rest[p] % p
        digits.append(a)
        for q in order[i + 1:]:
            rest[q] = ((rest[q] - a) * inverse(p, q)) % q
    return digits


def from_residues(residues: dict[int, object], moduli: Sequence[int]):
    """``{q: x mod q}`` -> signed integers in ``[-M/2, M/2)`` (int64)."""
    M = math.prod(moduli)
    digits = mixed_radix_digits(residues, moduli)
    x = digits[0] * 0
    weight = 1
    for a, p in zip(digits, moduli):
        x = x + a * weight
        weight *= p
    return x - M * (x >= (M + 1) // 2) if M % 2 else x - M * (x >= M // 2)


def signed_range(moduli: Sequence[int]) -> tuple[int, int]:
    """Smallest and largest representable value."""
    M = math.prod(moduli)
    return -(M // 2), (M - 1) // 2 if M % 2 else M // 2 - 1


def as_int64(x):
    if isinstance(x, np.ndarray):
        return x.astype(np.int64)
    return x.long()
