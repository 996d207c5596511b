"""The one small protocol that the plain simulator, the garbler and the evaluator implement.

Gadgets (``dashc.runtime.gadgets``) and the plan loop (``dashc.runtime.execute``) are written
once against :class:`Backend`; they branch on moduli and shapes only, never on values.

A *wire tensor* ``W`` is a backend-specific object standing for a tensor of values modulo one
prime ``q`` with a leading batch axis:

* ``PlainBackend``: a torch int64 tensor of residues in ``[0, q)``, shape ``(B, *shape)``;
* ``Garbler``: the zero labels, a ``LabelTensor`` of shape ``(B, *shape, n(q))``;
* ``Evaluator``: the active labels, a ``LabelTensor`` of the same shape.

Every wire tensor exposes ``.q`` (its modulus) and ``.shape`` (value shape, batch included,
label digits excluded).  A :class:`CrtTensor` bundles one wire tensor per modulus of the base.

Gates (``proj``, ``proj_many``, ``mul``, ``mixed_mul``) consume one gate id per call from the backend's
counter; garbler and evaluator call them in the same order, so ids (and the hash tweaks
derived from them) agree.  Free operations consume no gate id and no table bytes.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Iterator, Protocol, runtime_checkable

import numpy as np


@runtime_checkable
class Backend(Protocol):
    """Operations on wire tensors of one modulus each."""

    # -- inputs and outputs -------------------------------------------------------------
    def input(self, moduli: tuple[int, ...], shape: tuple[int, ...]) -> "CrtTensor":
        """The next input tensor, value shape ``shape`` (batch included), one wire tensor
        per modulus.  Plain: residues of the next integer tensor it was given; Garbler:
        fresh zero labels (kept as encoding information); Evaluator: the next active input
        labels it was given.  Inputs are consumed in call order."""

    def output(self, a: "CrtTensor") -> Any:
        """Mark ``a`` as the next output.  Plain: returns the residues (a CrtTensor);
        Garbler: keeps the decoding information, returns None; Evaluator: returns the
        active labels (a CrtTensor)."""

    # -- free operations (no ciphertexts) -----------------------------------------------
    def add(self, a: Any, b: Any) -> Any: ...
    def sub(self, a: Any, b: Any) -> Any: ...
    def neg(self, a: Any) -> Any: ...

    def cmul(self, a: Any, c: int) -> Any:
        """Multiply by a public integer ``c`` (any sign)."""

    def add_const(self, a: Any, c: np.ndarray | int) -> Any:
        """Add a public integer constant, broadcast against ``a.shape``.  The garbler
        shifts the zero label (``W0 - c*delta``); the evaluator changes nothing."""

    def dense(self, a: Any, weight: np.ndarray) -> Any:
        """``(B, in) -> (B, out)`` with public integer weight ``[out, in]`` (no bias)."""

    def conv2d(self, a: Any, weight: np.ndarray, stride: tuple[int, int],
               pads: tuple[int, int, int, int]) -> Any:
        """``(B, C, H, W) -> (B, O, H', W')`` with public weight ``[O, C, kh, kw]``, zero
        padding ``pads = (top, left, bottom, right)`` (no bias)."""

    def sumpool(self, a: Any, kernel: tuple[int, int], stride: tuple[int, int],
                pads: tuple[int, int, int, int]) -> Any:
        """Window sums over the two last axes, zero padding."""

    def reshape(self, a: Any, shape: tuple[int, ...]) -> Any:
        """New value shape, batch axis included (row-major)."""

    def take(self, a: Any, index: np.ndarray) -> Any:
        """Re-index the non-batch elements: ``out[b, *i] = a.flatten(1)[b, index[*i]]``.
        ``index`` is an int64 array of any shape; output shape ``(B, *index.shape)``."""

    # -- gates (cost ciphertexts, consume one gate id per call) -------------------------
    def proj(self, a: Any, q: int, table: np.ndarray) -> Any:
        """Projection ``Z_p -> Z_q``: ``out = table[a]`` elementwise, ``table`` of length
        ``p = a.q`` with entries in ``[0, q)``.  ``p - 1`` ciphertexts per wire."""

    def proj_many(self, a: Any, targets: "list[tuple[int, np.ndarray]]") -> list:
        """Several projections of one wire tensor in ONE gate (one gate id):
        ``[proj(a, q, table) for q, table in targets]`` in value, in that order, at the same
        cost in ciphertexts (``p - 1`` per wire and target).  The garbled backends pack the
        ``p`` colour keys of every wire and apply ``pi`` once, then hash under one tweak
        per (gate, element, target), which saves the repeated packing and AES calls (and
        the per-call overhead) of separate ``proj`` calls, e.g. when a mixed-radix digit is
        projected into every later modulus."""

    def mul(self, a: Any, b: Any) -> Any:
        """Generalized half gate: ``a * b mod p`` for two wires of the same modulus."""

    def mixed_mul(self, a: Any, b: Any) -> Any:
        """Mixed-modulus half gate: ``a * b mod a.q`` where ``b`` (a small modulus, e.g. 2)
        is read as the integer in ``[0, b.q)``."""


@dataclass
class CrtTensor:
    """One value tensor in CRT form: ``parts[q]`` is its wire tensor modulo ``q``."""

    parts: dict[int, Any]

    @property
    def moduli(self) -> tuple[int, ...]:
        return tuple(self.parts)

    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(next(iter(self.parts.values())).shape)

    def __getitem__(self, q: int) -> Any:
        return self.parts[q]

    def __iter__(self) -> Iterator[int]:
        return iter(self.parts)

    def map(self, fn) -> "CrtTensor":
        return CrtTensor({q: fn(w) for q, w in self.parts.items()})

    def zip(self, other: "CrtTensor", fn) -> "CrtTensor":
        return CrtTensor({q: fn(w, other.parts[q]) for q, w in self.parts.items()})


