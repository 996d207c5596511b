"""The garbler: runs a plan on zero labels, writes garbled tables, encodes and decodes.

Secrets it holds and never hands out: one global offset ``delta_q`` per modulus and batch
element (shape ``(B, n(q))``, digit 0 = 1), the input zero labels (encoding information) and
the output zero labels (decoding information).  Everything the evaluator needs goes through
the table stream (offline) and :meth:`Garbler.encode` (online, the active input labels).

A garbled circuit serves one inference: :meth:`encode` refuses a second call.
:meth:`decode` accepts a label only if it equals ``W0 + x*delta`` for some ``x``; a forged or
corrupted label raises :class:`dashc.errors.IntegrityError`.
"""
from __future__ import annotations

import numpy as np
import torch

from dashc import crt
from dashc.errors import CircuitReuseError, IntegrityError

from . import gates
from .backend import CrtTensor
from .labels import LabelOps, LabelTensor, check_modulus
from .rng import SecureRandom
from .tables import MemoryTables, make_record


def _flat(a: LabelTensor) -> torch.Tensor:
    return a.digits.reshape(a.batch, -1, a.n)


class Garbler(LabelOps):
    """Backend on zero labels; ``batch`` independent circuits side by side."""

    def __init__(self, batch: int, tables=None, rng=None, device="cpu"):
        if int(batch) < 1:
            raise ValueError(f"batch must be positive, got {batch}")
        self.batch = int(batch)
        self.device = torch.device(device)
        self.tables = MemoryTables() if tables is None else tables
        self.rng = SecureRandom() if rng is None else rng
        self.gate_id = 0
        self._delta: dict[int, torch.Tensor] = {}
        self._inputs: list[CrtTensor] = []
        self._outputs: list[CrtTensor] = []
        self._encoded = False

    def state(self) -> dict:
        """The garbler's secrets, to be kept by the garbler between garbling and decoding:
        ``batch``, ``delta`` ({q: (B, n(q))}), the input and output zero labels (lists of
        CrtTensor) and whether the circuits already encoded an input."""
        return {"batch": self.batch, "delta": dict(self._delta), "inputs": list(self._inputs),
                "outputs": list(self._outputs), "encoded": self._encoded}

    @classmethod
    def from_state(cls, state: dict, device="cpu") -> "Garbler":
        """A garbler restored from :meth:`state` that can encode and decode (not garble)."""
        g = cls(int(state["batch"]), device=device)
        for q, d in state["delta"].items():
            d = torch.as_tensor(d).to(g.device, torch.int64)
            if tuple(d.shape) != (g.batch, crt.label_length(int(q))) or \
                    bool((d[:, 0] != 1).any()):
                raise ValueError(f"global offset mod {q} is malformed")
            g._delta[check_modulus(int(q))] = d
        for part in ("inputs", "outputs"):
            tensors = list(state[part])
            for t in tensors:
                for q, lab in t.parts.items():
                    if q not in g._delta or lab.shape[0] != g.batch:
                        raise ValueError(f"{part} labels mod {q} do not match the offsets")
            setattr(g, f"_{part}", [t.map(lambda lab: LabelTensor(
                lab.digits.to(g.device, torch.int64), lab.q)) for t in tensors])
        g._encoded = bool(state.get("encoded", False))
        return g

    @property
    def secure(self) -> bool:
        """False when garbled with the seeded test generator (material must not be used)."""
        return bool(self.rng.secure)

    def delta(self, q: int) -> torch.Tensor:
        """The global offsets modulo ``q``, ``(B, n(q))`` (drawn on first use)."""
        q = check_modulus(q)
        if q not in self._delta:
            self._delta[q] = self.rng.delta(q, self.batch, self.device)
        return self._delta[q]

    def _zero(self, q: int, shape: tuple[int, ...]) -> LabelTensor:
        return LabelTensor(self.rng.labels(q, shape, self.device), q)

    # -- inputs and outputs ---------------------------------------------------------------
    def input(self, moduli, shape) -> CrtTensor:
        shape = tuple(int(s) for s in shape)
        if not shape or shape[0] != self.batch:
            raise ValueError(f"input shape {shape} must start with the batch size {self.batch}")
        for q in moduli:
            self.delta(q)
        zero = CrtTensor({int(q): self._zero(int(q), shape) for q in moduli})
        self._inputs.append(zero)
        return zero

    def encode(self, values) -> list[CrtTensor]:
        """Active input labels for signed integer inputs, one tensor per ``input()`` call."""
        if self._encoded:
            raise CircuitReuseError("this garbled circuit has already encoded an input; "
                                    "garble a fresh circuit for every inference")
        values = list(values)
        if len(values) != len(self._inputs):
            raise ValueError(f"expected {len(self._inputs)} input tensors, got {len(values)}")
        out = []
        for i, (x, zero) in enumerate(zip(values, self._inputs)):
            x = torch.as_tensor(np.asarray(x) if not isinstance(x, torch.Tensor) else x)
            if x.dtype.is_floating_point or x.dtype == torch.bool:
                raise ValueError(f"input {i} must be an integer tensor, got {x.dtype}")
            x = x.to(self.device, torch.int64)
            if tuple(x.shape) != zero.shape:
                raise ValueError(f"input {i} has shape {tuple(x.shape)}, the circuit expects "
                                 f"{zero.shape}")
            lo, hi = crt.signed_range(zero.moduli)
            if x.numel() and (int(x.min()) < lo or int(x.max()) > hi):
                raise ValueError(f"input {i} leaves the representable range [{lo}, {hi}]")
            out.append(CrtTensor({q: w.add_scaled(self._delta[q], x % q)
                                  for q, w in zero.parts.items()}))
        self._encoded = True
        return out

    def output(self, a: CrtTensor) -> None:
        self._outputs.append(a)
        return None

    def decode(self, outputs) -> list[torch.Tensor]:
        """Active output labels -> signed int64 values; raises IntegrityError on any label
        that is not ``W0 + x*delta``."""
        outputs = list(outputs)
        if len(outputs) != len(self._outputs):
            raise IntegrityError(f"expected {len(self._outputs)} output tensors, got "
                                 f"{len(outputs)}")
        result = []
        for i, (active, zero) in enumerate(zip(outputs, self._outputs)):
            if set(active.moduli) != set(zero.moduli):
                raise IntegrityError(f"output {i} has moduli {active.moduli}, expected "
                                     f"{zero.moduli}")
            residues = {}
            for q, w0 in zero.parts.items():
                residues[q] = self._decode_part(i, active[q], w0)
            result.append(crt.from_residues(residues, zero.moduli))
        return result

    def _decode_part(self, i: int, active, w0: LabelTensor) -> torch.Tensor:
        q = w0.q
        digits = active.digits if isinstance(active, LabelTensor) else torch.as_tensor(active)
        digits = digits.to(self.device)
        if tuple(digits.shape) != tuple(w0.digits.shape):
            raise IntegrityError(f"output {i} mod {q}: labels of shape "
                                 f"{tuple(digits.shape)}, expected {tuple(w0.digits.shape)}")
        if digits.dtype.is_floating_point:
            raise IntegrityError(f"output {i} mod {q}: labels must be integers")
        digits = digits.to(torch.int64)
        x = (digits[..., 0] - w0.digits[..., 0]) % q
        expected = w0.add_scaled(self._delta[q], x).digits
        bad = (digits != expected).any(dim=-1)
        if bool(bad.any()):
            raise IntegrityError(f"output {i} mod {q}: {int(bad.sum())} of {bad.numel()} labels "
                                 f"are not valid labels (forged or corrupted garbled material)")
        return x

    # -- free operations that differ from the evaluator -----------------------------------
    def add_const(self, a: LabelTensor, c) -> LabelTensor:
        """Public constant: shift the zero label, ``W0' = W0 - c*delta``."""
        c = torch.as_tensor(np.asarray(c, dtype=np.int64) if not isinstance(c, torch.Tensor)
                            else c).to(self.device, torch.int64)
        return a.add_scaled(self.delta(a.q), -c)

    # -- gates -----------------------------------------------------------------------------
    def _next_gate(self) -> int:
        gid = self.gate_id
        self.gate_id += 1
        return gid

    def proj(self, a: LabelTensor, q: int, table) -> LabelTensor:
        return self.proj_many(a, [(q, table)])[0]

    def proj_many(self, a: LabelTensor, targets) -> list[LabelTensor]:
        """One projection gate into every ``(q, table)`` of ``targets`` (one gate id, one
        record with one row array per target).

        Security: it is the garbling of ``T`` separate projections of the same wire, except
        that target ``t`` hashes the key under the tweak element field ``elem * T + t``
        (gate id and role unchanged) and that ``pi(key)`` is computed once.  Sharing
        ``pi(key)`` changes no output: ``H(x, tw) = pi(pi(x) ^ tw) ^ pi(x)`` is the same
        function evaluated at several tweaks, exactly as the output blocks of one hash are.
        All ``(gate, element, target, block)`` tweaks are distinct (the gate id is unique
        per call and ``elem * T + t`` is injective for ``t < T``), so every pad is an
        evaluation of the correlation-robust hash at a fresh tweak and the argument for one
        projection applies to each target: the evaluator opens one row per target with its
        own label, every other row is masked by a pad keyed by ``own + k*delta_p``
        (``k != 0``), and each target's row reduction and output zero label are
        independent (its own ``delta_q`` and pad)."""
        p = a.q
        checked = []
        for q, table in targets:
            q = check_modulus(q)
            table = np.asarray(table, dtype=np.int64).reshape(-1)
            if table.shape[0] != p:
                raise ValueError(f"projection table has {table.shape[0]} entries, modulus is "
                                 f"{p}")
            if table.size and (table.min() < 0 or table.max() >= q):
                raise ValueError(f"projection table entries must lie in [0, {q})")
            checked.append((q, self.delta(q), torch.from_numpy(table)))
        if not checked:
            raise ValueError("proj_many needs at least one target")
        gid = self._next_gate()
        res = gates.garble_proj_many(_flat(a), p, self.delta(p), checked, gid)
        wires = a.digits.numel() // a.n
        self.tables.append(make_record(gid, wires * (p - 1) * len(checked),
                                       [(gates.row_modulus(q), rows) for (q, _, _), (_, rows)
                                        in zip(checked, res)]))
        return [LabelTensor(c0.reshape(*a.shape, -1), q)
                for (q, _, _), (c0, _) in zip(checked, res)]

    def mixed_mul(self, a: LabelTensor, b: LabelTensor) -> LabelTensor:
        if a.shape != b.shape:
            raise ValueError(f"mixed_mul operands have shapes {a.shape} and {b.shape}")
        p, q = a.q, b.q
        gid = self._next_gate()
        r = self.rng.residues(p, a.shape, self.device).reshape(a.batch, -1)
        out0, (rows_g, rows_e, digits) = gates.garble_mixed_mul(
            _flat(a), p, self.delta(p), _flat(b), q, self.delta(q), r, gid)
        wires = rows_g.shape[0] * rows_g.shape[1]
        m = gates.row_modulus(p)
        self.tables.append(make_record(gid, wires * gates.mixed_mul_rows(p, q),
                                       [(m, t) for t in (rows_g, rows_e, digits)]))
        return LabelTensor(out0.reshape(*a.shape, -1), p)
