"""The evaluator: runs a plan on active labels with the garbled tables.

It holds only active labels (one per wire), the table stream and the gate counter: no zero
label, no global offset and nothing derived from one.  Public constants change nothing on its
side (the garbler moved the zero label instead).  Malformed material (tables out of order or
of the wrong shape, input labels that do not match the plan) raises
:class:`dashc.errors.IntegrityError`; anything subtler shows up when the garbler decodes.
"""
from __future__ import annotations

import numpy as np
import torch

from dashc import crt
from dashc.errors import IntegrityError

from . import gates
from .backend import CrtTensor
from .labels import LabelOps, LabelTensor, check_modulus
from .tables import Packed


def _flat(a: LabelTensor) -> torch.Tensor:
    return a.digits.reshape(a.batch, -1, a.n)


class Evaluator(LabelOps):
    """Backend on active labels."""

    def __init__(self, inputs, tables, device="cpu"):
        self.device = torch.device(device)
        self.tables = tables
        self.gate_id = 0
        self._inputs = [self._import(i, x) for i, x in enumerate(inputs)]
        self._next_input = 0
        self.batch = self._inputs[0].shape[0] if self._inputs else None

    def _import(self, i: int, x: CrtTensor) -> CrtTensor:
        parts = {}
        for q, lab in x.parts.items():
            q = check_modulus(q)
            digits = lab.digits if isinstance(lab, LabelTensor) else torch.as_tensor(lab)
            if digits.dtype.is_floating_point:
                raise IntegrityError(f"input {i} mod {q}: labels must be integers")
            digits = digits.to(self.device, torch.int64)
            if digits.numel() and (int(digits.min()) < 0 or int(digits.max()) >= q):
                raise IntegrityError(f"input {i} mod {q}: label digit out of range")
            parts[q] = LabelTensor(digits, q)
        return CrtTensor(parts)

    # -- inputs and outputs ---------------------------------------------------------------
    def input(self, moduli, shape) -> CrtTensor:
        if self._next_input >= len(self._inputs):
            raise IntegrityError(f"the plan asks for input {self._next_input}, only "
                                 f"{len(self._inputs)} were given")
        x = self._inputs[self._next_input]
        self._next_input += 1
        if tuple(int(q) for q in moduli) != x.moduli or tuple(shape) != x.shape:
            raise IntegrityError(f"input labels have moduli {x.moduli} and shape {x.shape}; "
                                 f"the plan expects {tuple(moduli)} and {tuple(shape)}")
        return x

    def output(self, a: CrtTensor) -> CrtTensor:
        return a

    def finish(self) -> None:
        """Verify the end of a checksummed table stream, where the source has one."""
        if hasattr(self.tables, "finish"):
            self.tables.finish()

    # -- free operations that differ from the garbler -------------------------------------
    def add_const(self, a: LabelTensor, c) -> LabelTensor:
        """The garbler absorbed the constant into the zero label; labels stay as they are."""
        c = np.asarray(c)
        np.broadcast_shapes(c.shape, a.shape)  # same shape check as the garbler's
        return a

    # -- gates -----------------------------------------------------------------------------
    def _next_gate(self) -> int:
        gid = self.gate_id
        self.gate_id += 1
        return gid

    def _array(self, rec, k: int, q: int, shape: tuple[int, ...]):
        mod, a = rec.arrays[k]
        if mod != q or tuple(a.shape) != shape:
            raise IntegrityError(f"gate {rec.gate_id}: table {k} has modulus {mod} and shape "
                                 f"{tuple(a.shape)}, expected {q} and {shape}")
        if isinstance(a, Packed):
            return a  # compiled gates read the opened rows in place, the others unpack
        # the digits keep their storage type: the gates widen them as they need
        return torch.from_numpy(np.ascontiguousarray(a)).to(self.device)

    def proj(self, a: LabelTensor, q: int, table) -> LabelTensor:
        return self.proj_many(a, [(q, table)])[0]

    def proj_many(self, a: LabelTensor, targets) -> list[LabelTensor]:
        p = a.q
        qs = []
        for q, table in targets:
            q = check_modulus(q)
            if len(np.asarray(table).reshape(-1)) != p:
                raise ValueError(f"projection table has {len(np.asarray(table).reshape(-1))} "
                                 f"entries, modulus is {p}")
            qs.append(q)
        if not qs:
            raise ValueError("proj_many needs at least one target")
        gid = self._next_gate()
        x = _flat(a)
        B, E, _ = x.shape
        rec = self.tables.read(gid, len(qs))
        spec = [(q, self._array(rec, k, gates.row_modulus(q),
                                (B, E, p - 1, crt.label_length(q))))
                for k, q in enumerate(qs)]
        outs = gates.eval_proj_many(x, p, spec, gid)
        return [LabelTensor(out.reshape(*a.shape, -1), q) for q, out in zip(qs, outs)]

    def mixed_mul(self, a: LabelTensor, b: LabelTensor) -> LabelTensor:
        if a.shape != b.shape:
            raise ValueError(f"mixed_mul operands have shapes {a.shape} and {b.shape}")
        p, q = a.q, b.q
        gid = self._next_gate()
        x, y = _flat(a), _flat(b)
        B, E, n_p = x.shape
        rec = self.tables.read(gid, 3)
        rows_g = self._array(rec, 0, gates.row_modulus(p), (B, E, p - 1, n_p))
        rows_e = self._array(rec, 1, gates.row_modulus(p), (B, E, q - 1, n_p))
        digits = self._array(rec, 2, gates.row_modulus(p), (B, E, q))
        out = gates.eval_mixed_mul(x, p, y, q, rows_g, rows_e, digits, gid)
        return LabelTensor(out.reshape(*a.shape, -1), p)
