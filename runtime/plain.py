"""PlainBackend: the exact integer simulator and the executable definition of every op.

A wire tensor is a :class:`Residues`: a torch int64 tensor of residues in ``[0, q)`` with a
leading batch axis.  Every op of :class:`dashc.runtime.backend.Backend` is implemented here
exactly as the garbled backends must realise it on labels; the garbled test suites compare
their decoded outputs with this backend bit for bit.

Linear maps (dense, conv, sum pooling) are computed in float64 whenever the exact result is
below ``2**53`` (true for every practical modulus and fan-in) and otherwise by splitting the
residues into 16-bit limbs, so results are exact on any device.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F

from dashc import crt
from dashc.runtime import cpu_kernels
from dashc.runtime.backend import CrtTensor
from dashc.runtime.labels import _binary, _compiled, exact_conv2d

#: wire moduli must stay below this so that a product of two residues fits in int64
MAX_WIRE_MODULUS = 1 << 31
_EXACT_FLOAT = 1 << 53
_EXACT_FLOAT32 = 1 << 24
_LIMB_BITS = 16


def check_modulus(q: int) -> int:
    """Return ``q`` as int, or raise ValueError if it is not a usable wire modulus."""
    q = int(q)
    if not crt.is_prime(q):
        raise ValueError(f"wire modulus {q} is not prime: every wire modulus must be prime")
    if q >= MAX_WIRE_MODULUS:
        raise ValueError(f"wire modulus {q} exceeds 2**31, the exact int64 limit")
    return q


class Residues:
    """One plain wire tensor: residues mod ``q`` (int64), shape ``(B, *shape)``."""

    __slots__ = ("v", "q")

    def __init__(self, v: torch.Tensor, q: int):
        self.v = v
        self.q = q

    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(self.v.shape)

    def __repr__(self) -> str:
        return f"Residues(q={self.q}, shape={self.shape})"


def _centered(w: np.ndarray | torch.Tensor, q: int) -> torch.Tensor:
    """Weights reduced mod q into ``(-q/2, q/2]`` (smaller float products)."""
    if isinstance(w, np.ndarray):
        w = np.require(w, np.int64, ["C", "W"])  # a writable copy of a read-only plan array
    t = torch.as_tensor(w, dtype=torch.int64) % q
    return torch.where(t > q // 2, t - q, t)


def _limbs(v: torch.Tensor, q: int) -> list[tuple[int, torch.Tensor]]:
    """Split residues in ``[0, q)`` into ``(shift, limb)`` pairs of ``_LIMB_BITS`` bits."""
    bits = max(1, (q - 1).bit_length())
    out = []
    for shift in range(0, bits, _LIMB_BITS):
        out.append((shift, (v >> shift) & ((1 << _LIMB_BITS) - 1)))
    return out


def _exact_linear(v: torch.Tensor, q: int, fan_in: int, wmax: int, fn) -> torch.Tensor:
    """``fn(float input, dtype) mod q`` computed exactly; ``fn`` is linear with integer
    weights bounded by ``wmax`` in absolute value and sums ``fan_in`` terms per output.
    float32 when every partial sum stays below 2**24, float64 below 2**53, else 16-bit
    limbs of the input in float64."""
    bound = fan_in * (q - 1) * max(wmax, 1)
    if bound < _EXACT_FLOAT32 and v.device.type == "cpu":  # no TF32 risk on CPU
        return torch.round(fn(v.float(), torch.float32)).long() % q
    if bound < _EXACT_FLOAT:
        return torch.round(fn(v.double(), torch.float64)).long() % q
    if fan_in * ((1 << _LIMB_BITS) - 1) * max(wmax, 1) >= _EXACT_FLOAT:
        raise ValueError(f"linear map with fan-in {fan_in} and weights up to {wmax} "
                         f"cannot be computed exactly mod {q}")
    acc = None
    for shift, limb in _limbs(v, q):
        part = torch.round(fn(limb.double(), torch.float64)).long() % q
        part = (part * pow(2, shift, q)) % q
        acc = part if acc is None else (acc + part) % q
    return acc


class PlainBackend:
    """Exact integer simulation of the backend protocol.

    ``inputs`` are the signed integer tensors (int64, batch first) that :meth:`input`
    consumes in call order.  Gates count their calls in ``gate_id`` exactly like the garbled
    backends, so a plain run also tells how many gate ids a plan consumes.
    """

    def __init__(self, inputs: Sequence[torch.Tensor | np.ndarray], device: str | torch.device = "cpu"):
        self.device = torch.device(device)
        self._inputs = [torch.as_tensor(np.asarray(x) if not torch.is_tensor(x) else x)
                        .to(self.device, torch.int64) for x in inputs]
        self._next_input = 0
        self.gate_id = 0
        self.batch = int(self._inputs[0].shape[0]) if self._inputs else 0

    # -- helpers ------------------------------------------------------------------------
    def _wrap(self, v: torch.Tensor, q: int) -> Residues:
        return Residues(v, q)

    def _const(self, c, q: int) -> torch.Tensor:
        return torch.as_tensor(np.asarray(c, dtype=np.int64) % q, device=self.device)

    def _gate(self) -> None:
        self.gate_id += 1

    # -- inputs and outputs -------------------------------------------------------------
    def input(self, moduli: tuple[int, ...], shape: tuple[int, ...]) -> CrtTensor:
        if self._next_input >= len(self._inputs):
            raise ValueError(f"input #{self._next_input} requested but only "
                             f"{len(self._inputs)} input tensor(s) were given")
        crt.check_base(moduli)
        for q in moduli:
            check_modulus(q)
        x = self._inputs[self._next_input]
        if tuple(x.shape) != tuple(shape):
            raise ValueError(f"input #{self._next_input} has shape {tuple(x.shape)}, "
                             f"the plan expects {tuple(shape)}")
        self._next_input += 1
        return CrtTensor({q: self._wrap(x % q, q) for q in moduli})

    def output(self, a: CrtTensor) -> CrtTensor:
        return a

    # -- free operations ----------------------------------------------------------------
    def add(self, a: Residues, b: Residues) -> Residues:
        _same_modulus(a, b)
        if _compiled(a.v, b.v):
            return self._wrap(_binary(cpu_kernels.add_mod, a.v, b.v, a.q), a.q)
        return self._wrap((a.v + b.v) % a.q, a.q)

    def sub(self, a: Residues, b: Residues) -> Residues:
        _same_modulus(a, b)
        if _compiled(a.v, b.v):
            return self._wrap(_binary(cpu_kernels.sub_mod, a.v, b.v, a.q), a.q)
        return self._wrap((a.v - b.v) % a.q, a.q)

    def neg(self, a: Residues) -> Residues:
        return self.cmul(a, -1)

    def cmul(self, a: Residues, c: int) -> Residues:
        c = int(c) % a.q
        if _compiled(a.v):
            out = torch.empty_like(a.v)
            cpu_kernels.cmul_mod(a.v.view(-1).numpy(), c, a.q, out.view(-1).numpy())
            return self._wrap(out, a.q)
        return self._wrap((a.v * c) % a.q, a.q)

    def add_const(self, a: Residues, c) -> Residues:
        c = self._const(c, a.q)
        try:
            shape = torch.broadcast_shapes(a.v.shape, c.shape)
        except RuntimeError:
            shape = None
        if shape != a.v.shape:
            raise ValueError(f"constant of shape {tuple(c.shape)} does not broadcast to "
                             f"{a.shape}")
        if _compiled(a.v):
            return self._wrap(_binary(cpu_kernels.add_mod, a.v, c.expand(shape).contiguous(),
                                      a.q), a.q)
        return self._wrap((a.v + c) % a.q, a.q)

    def dense(self, a: Residues, weight: np.ndarray) -> Residues:
        q = a.q
        w = _centered(weight, q).to(self.device)
        if w.ndim != 2 or a.v.ndim != 2 or w.shape[1] != a.v.shape[1]:
            raise ValueError(f"dense weight {tuple(w.shape)} does not fit input {a.shape}")
        wmax = int(w.abs().max()) if w.numel() else 0
        out = _exact_linear(a.v, q, w.shape[1], wmax, lambda x, dt: x @ w.to(dt).T)
        return self._wrap(out, q)

    def conv2d(self, a: Residues, weight: np.ndarray, stride: tuple[int, int],
               pads: tuple[int, int, int, int]) -> Residues:
        q = a.q
        w = _centered(weight, q).to(self.device)
        if w.ndim != 4 or a.v.ndim != 4 or w.shape[1] != a.v.shape[1]:
            raise ValueError(f"conv weight {tuple(w.shape)} does not fit input {a.shape}")
        top, left, bottom, right = (int(p) for p in pads)
        fan_in = w.shape[1] * w.shape[2] * w.shape[3]
        wmax = int(w.abs().max()) if w.numel() else 0

        def fn(x: torch.Tensor, dt: torch.dtype) -> torch.Tensor:
            x = F.pad(x, (left, right, top, bottom))
            return exact_conv2d(x, w.to(dt), tuple(int(s) for s in stride))

        return self._wrap(_exact_linear(a.v, q, fan_in, wmax, fn), q)

    def sumpool(self, a: Residues, kernel: tuple[int, int], stride: tuple[int, int],
                pads: tuple[int, int, int, int]) -> Residues:
        q = a.q
        top, left, bottom, right = (int(p) for p in pads)
        kh, kw = (int(k) for k in kernel)

        def fn(x: torch.Tensor, dt: torch.dtype) -> torch.Tensor:
            x = F.pad(x, (left, right, top, bottom))
            return F.avg_pool2d(x, (kh, kw), tuple(int(s) for s in stride),
                                divisor_override=1)

        return self._wrap(_exact_linear(a.v, q, kh * kw, 1, fn), q)

    def reshape(self, a: Residues, shape: tuple[int, ...]) -> Residues:
        return self._wrap(a.v.reshape(tuple(shape)), a.q)

    def take(self, a: Residues, index: np.ndarray) -> Residues:
        idx = torch.as_tensor(np.asarray(index, dtype=np.int64), device=self.device)
        flat = a.v.reshape(a.v.shape[0], -1)
        if idx.numel() and (int(idx.min()) < 0 or int(idx.max()) >= flat.shape[1]):
            raise ValueError(f"take index out of range for {flat.shape[1]} elements")
        out = flat[:, idx.reshape(-1)].reshape(flat.shape[0], *idx.shape)
        return self._wrap(out, a.q)

    # -- gates --------------------------------------------------------------------------
    def proj(self, a: Residues, q: int, table: np.ndarray) -> Residues:
        return self.proj_many(a, [(q, table)])[0]

    def proj_many(self, a: Residues, targets) -> list[Residues]:
        checked = [_proj_table(a.q, q, table) for q, table in targets]
        if not checked:
            raise ValueError("proj_many needs at least one target")
        self._gate()
        if _compiled(a.v):
            v = a.v.numpy()
            return [self._wrap(torch.from_numpy(np.take(t, v)), q) for q, t in checked]
        return [self._wrap(torch.as_tensor(t, device=self.device)[a.v], q) for q, t in checked]

    def mul(self, a: Residues, b: Residues) -> Residues:
        _same_modulus(a, b)
        self._gate()
        return self._wrap((a.v * b.v) % a.q, a.q)

    def mixed_mul(self, a: Residues, b: Residues) -> Residues:
        if a.shape != b.shape:
            raise ValueError(f"mixed_mul shapes differ: {a.shape} vs {b.shape}")
        self._gate()
        return self._wrap((a.v * b.v) % a.q, a.q)


def _proj_table(p: int, q, table) -> tuple[int, np.ndarray]:
    """``(q, table)`` checked for a projection ``Z_p -> Z_q``."""
    q = check_modulus(q)
    t = np.asarray(table, dtype=np.int64)
    if t.shape != (p,):
        raise ValueError(f"projection table has shape {t.shape}, expected ({p},)")
    if t.size and (t.min() < 0 or t.max() >= q):
        raise ValueError(f"projection table entries must lie in [0, {q})")
    return q, t


def _same_modulus(a: Residues, b: Residues) -> None:
    if a.q != b.q:
        raise ValueError(f"moduli differ: {a.q} vs {b.q}")


def to_signed(x: CrtTensor) -> torch.Tensor:
    """Reconstruct a plain CrtTensor (residue wires) into signed int64 in ``[-M/2, M/2)``."""
    moduli = tuple(x.moduli)
    res = [x[q].v for q in moduli]
    if _compiled(*res):
        inv = np.array([[crt.inverse(p, q) if p != q else 0 for q in moduli] for p in moduli],
                       dtype=np.int64)
        out = torch.empty_like(res[0])
        cpu_kernels.crt_signed(torch.stack(res).reshape(len(moduli), -1).numpy(),
                               np.array(moduli, dtype=np.int64), inv, out.view(-1).numpy())
        return out
    return crt.from_residues(dict(zip(moduli, res)), moduli)


def from_signed(xi: torch.Tensor, moduli: Sequence[int]) -> CrtTensor:
    """Signed int64 tensor -> plain CrtTensor of residues."""
    return CrtTensor({int(q): Residues(xi % int(q), int(q)) for q in moduli})

