"""Cost accounting: a counting wrapper around any backend and a shape-only cost predictor.

:class:`CountingBackend` forwards every protocol op to an inner backend and tallies, per gate
type and per plan node, the gates (one per wire element), the ciphertexts (table rows) and
the nominal bytes (16 per ciphertext), plus the label digits touched by linear layers
(output elements times ``n(q)``, summed over moduli) and their multiply-accumulates.

:func:`predict` runs a plan on :class:`ShapeBackend` (shapes only, no arithmetic) behind a
CountingBackend; :func:`gadget_cost` does the same for one gadget on one element.  The
compiler uses both for ``dashc inspect`` and to choose a CRT base by cost.

Rows per gate come from :func:`gate_rows` unless the inner backend has its own
``gate_rows(kind, p, q)``; they follow the constructions in :mod:`dashc.runtime.gates`:
projection ``p -> q`` ``p - 1`` rows (garbled row reduction); mixed-modulus half gate
(``x mod p`` times ``y mod q``) ``(p - 1) + (q - 1)`` rows (garbler half and evaluator half;
the ``q`` single masked digits it also sends are not counted as ciphertexts); the
generalized half gate is its case ``q = p``, ``2(p - 1)``.  The garbled test suite checks
these counts against the ciphertexts the garbler actually writes.  A multi-target projection
(``proj_many``) counts as one projection per target (one gate id, the same ciphertexts).
"""
from __future__ import annotations

import math
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any, Sequence

import numpy as np

from dashc import crt
from dashc.ir import Node, Plan
from dashc.runtime import gadgets
from dashc.runtime.backend import CrtTensor

BYTES_PER_CIPHERTEXT = 16
GATE_KINDS = ("proj", "mul", "mixed_mul")


def gate_rows(kind: str, p: int, q: int) -> int:
    """Ciphertexts of one gate of ``kind`` with input modulus ``p`` and second modulus ``q``
    (the output modulus for ``proj``, the other factor's modulus for the half gates)."""
    if kind == "proj":
        return p - 1
    if kind in ("mul", "mixed_mul"):
        return (p - 1) + (q - 1)
    raise ValueError(f"unknown gate kind {kind!r}")


@dataclass
class Tally:
    """Counts for one gate type or one node."""

    gates: int = 0
    ciphertexts: int = 0
    label_digits: int = 0
    label_macs: int = 0

    @property
    def bytes(self) -> int:
        return BYTES_PER_CIPHERTEXT * self.ciphertexts

    def add(self, other: "Tally") -> None:
        self.gates += other.gates
        self.ciphertexts += other.ciphertexts
        self.label_digits += other.label_digits
        self.label_macs += other.label_macs

    def to_dict(self) -> dict:
        return {"gates": self.gates, "ciphertexts": self.ciphertexts, "bytes": self.bytes,
                "label_digits": self.label_digits, "label_macs": self.label_macs}


def _numel(shape: Sequence[int]) -> int:
    return math.prod(int(s) for s in shape)


class CountingBackend:
    """Forwards to ``inner`` and counts gates, ciphertexts and bytes per gate type and per
    plan node (the plan loop calls :meth:`begin_node`).  Any attribute it does not define
    (``batch``, ``device``, ...) is the inner backend's."""

    def __init__(self, inner: Any):
        self.inner = inner
        self._rows = getattr(inner, "gate_rows", gate_rows)
        self.by_kind: dict[str, Tally] = defaultdict(Tally)
        self.by_node: dict[str | None, Tally] = defaultdict(Tally)
        self.node: str | None = None
        self.node_order: list[str] = []

    def __getattr__(self, name: str) -> Any:
        return getattr(self.__dict__["inner"], name)

    def begin_node(self, node: Node | None) -> None:
        self.node = None if node is None else node.name
        if node is not None:
            self.node_order.append(node.name)
            self.by_node[node.name]  # every node appears, free ones with zero counts
        hook = getattr(self.inner, "begin_node", None)
        if hook is not None:
            hook(node)

    @property
    def total(self) -> Tally:
        out = Tally()
        for t in self.by_kind.values():
            out.add(t)
        out.label_digits = sum(t.label_digits for t in self.by_node.values())
        out.label_macs = sum(t.label_macs for t in self.by_node.values())
        return out

    def _gate(self, kind: str, shape, p: int, q: int) -> None:
        n = _numel(shape)
        t = Tally(gates=n, ciphertexts=n * self._rows(kind, p, q))
        self.by_kind[kind].add(t)
        self.by_node[self.node].add(t)

    def _linear(self, out, fan_in: int) -> None:
        digits = _numel(out.shape) * crt.label_length(out.q)
        self.by_node[self.node].add(Tally(label_digits=digits, label_macs=digits * fan_in))

    # -- protocol -----------------------------------------------------------------------
    def input(self, moduli, shape):
        return self.inner.input(moduli, shape)

    def output(self, a: CrtTensor):
        return self.inner.output(a)

    def add(self, a, b):
        return self.inner.add(a, b)

    def sub(self, a, b):
        return self.inner.sub(a, b)

    def neg(self, a):
        return self.inner.neg(a)

    def cmul(self, a, c):
        return self.inner.cmul(a, c)

    def add_const(self, a, c):
        return self.inner.add_const(a, c)

    def dense(self, a, weight):
        out = self.inner.dense(a, weight)
        self._linear(out, int(np.shape(weight)[1]))
        return out

    def conv2d(self, a, weight, stride, pads):
        out = self.inner.conv2d(a, weight, stride, pads)
        self._linear(out, _numel(np.shape(weight)[1:]))
        return out

    def sumpool(self, a, kernel, stride, pads):
        out = self.inner.sumpool(a, kernel, stride, pads)
        self._linear(out, _numel(kernel))
        return out

    def reshape(self, a, shape):
        return self.inner.reshape(a, shape)

    def take(self, a, index):
        return self.inner.take(a, index)

    def proj(self, a, q, table):
        self._gate("proj", a.shape, a.q, int(q))
        return self.inner.proj(a, q, table)

    def proj_many(self, a, targets):
        targets = list(targets)
        for q, _ in targets:  # counted as separate projections (same ciphertexts)
            self._gate("proj", a.shape, a.q, int(q))
        return self.inner.proj_many(a, targets)

    def mul(self, a, b):
        self._gate("mul", a.shape, a.q, b.q)
        return self.inner.mul(a, b)

    def mixed_mul(self, a, b):
        self._gate("mixed_mul", a.shape, a.q, b.q)
        return self.inner.mixed_mul(a, b)


class Shape:
    """A shape-only wire tensor: modulus and value shape, no data."""

    __slots__ = ("q", "shape")

    def __init__(self, q: int, shape: Sequence[int]):
        self.q = int(q)
        self.shape = tuple(int(s) for s in shape)

    def __repr__(self) -> str:
        return f"Shape(q={self.q}, shape={self.shape})"


class ShapeBackend:
    """The protocol on shapes only: every op returns the output shape, nothing is computed.
    Cheap enough to run a whole CIFAR plan in milliseconds."""

    def __init__(self, batch: int = 1):
        self.batch = int(batch)

    def input(self, moduli, shape) -> CrtTensor:
        return CrtTensor({int(q): Shape(q, shape) for q in moduli})

    def output(self, a: CrtTensor) -> CrtTensor:
        return a

    def add(self, a: Shape, b: Shape) -> Shape:
        if a.q != b.q or a.shape != b.shape:
            raise ValueError(f"add of {a} and {b}")
        return Shape(a.q, a.shape)

    sub = add

    def neg(self, a: Shape) -> Shape:
        return Shape(a.q, a.shape)

    def cmul(self, a: Shape, c: int) -> Shape:
        return Shape(a.q, a.shape)

    def add_const(self, a: Shape, c) -> Shape:
        if np.broadcast_shapes(a.shape, np.shape(c)) != a.shape:
            raise ValueError(f"constant of shape {np.shape(c)} does not broadcast to {a.shape}")
        return Shape(a.q, a.shape)

    def dense(self, a: Shape, weight) -> Shape:
        out, fan_in = np.shape(weight)
        if a.shape[1:] != (fan_in,):
            raise ValueError(f"dense weight {np.shape(weight)} does not fit input {a.shape}")
        return Shape(a.q, (a.shape[0], out))

    def conv2d(self, a: Shape, weight, stride, pads) -> Shape:
        O, C, kh, kw = np.shape(weight)
        B, C_in, H, W = a.shape
        if C != C_in:
            raise ValueError(f"conv weight {np.shape(weight)} does not fit input {a.shape}")
        return Shape(a.q, (B, O, *_window_out((H, W), (kh, kw), stride, pads)))

    def sumpool(self, a: Shape, kernel, stride, pads) -> Shape:
        B, C, H, W = a.shape
        return Shape(a.q, (B, C, *_window_out((H, W), kernel, stride, pads)))

    def reshape(self, a: Shape, shape) -> Shape:
        if _numel(shape) != _numel(a.shape):
            raise ValueError(f"cannot reshape {a.shape} to {tuple(shape)}")
        return Shape(a.q, shape)

    def take(self, a: Shape, index) -> Shape:
        return Shape(a.q, (a.shape[0], *np.shape(index)))

    def proj(self, a: Shape, q: int, table) -> Shape:
        if np.shape(table) != (a.q,):
            raise ValueError(f"projection table of shape {np.shape(table)} for modulus {a.q}")
        return Shape(q, a.shape)

    def proj_many(self, a: Shape, targets) -> list[Shape]:
        targets = list(targets)
        if not targets:
            raise ValueError("proj_many needs at least one target")
        return [ShapeBackend.proj(self, a, q, table) for q, table in targets]

    def mul(self, a: Shape, b: Shape) -> Shape:
        return Shape(a.q, a.shape)

    def mixed_mul(self, a: Shape, b: Shape) -> Shape:
        return Shape(a.q, a.shape)


def _window_out(hw, kernel, stride, pads) -> tuple[int, int]:
    top, left, bottom, right = (int(p) for p in pads)
    H, W = hw
    kh, kw = (int(k) for k in kernel)
    sh, sw = (int(s) for s in stride)
    return (H + top + bottom - kh) // sh + 1, (W + left + right - kw) // sw + 1


@dataclass
class NodeCost:
    name: str
    op: str
    ciphertexts: int
    gates: int
    label_digits: int
    label_macs: int

    @property
    def bytes(self) -> int:
        return BYTES_PER_CIPHERTEXT * self.ciphertexts


@dataclass
class Prediction:
    """Cost of one inference (batch 1) of a plan."""

    moduli: tuple[int, ...]
    nodes: list[NodeCost] = field(default_factory=list)

    @property
    def ciphertexts(self) -> int:
        return sum(n.ciphertexts for n in self.nodes)

    @property
    def bytes(self) -> int:
        return BYTES_PER_CIPHERTEXT * self.ciphertexts

    @property
    def label_digits(self) -> int:
        return sum(n.label_digits for n in self.nodes)

    @property
    def label_macs(self) -> int:
        return sum(n.label_macs for n in self.nodes)

    def to_dict(self) -> dict:
        return {"moduli": list(self.moduli), "ciphertexts": self.ciphertexts,
                "bytes": self.bytes, "label_digits": self.label_digits,
                "label_macs": self.label_macs,
                "nodes": [{"name": n.name, "op": n.op, "ciphertexts": n.ciphertexts,
                           "gates": n.gates, "bytes": n.bytes, "label_digits": n.label_digits,
                           "label_macs": n.label_macs} for n in self.nodes]}


def predict(plan: Plan) -> Prediction:
    """Per-node ciphertexts, gates and linear-layer label digits of one inference of
    ``plan``, from a shape-only run (no arithmetic, no randomness)."""
    from dashc.runtime.execute import run  # execute imports the plain backend

    bk = CountingBackend(ShapeBackend(batch=1))
    run(plan, bk)
    pred = Prediction(tuple(plan.moduli))
    for node in plan.nodes:
        t = bk.by_node.get(node.name, Tally())
        pred.nodes.append(NodeCost(node.name, node.op.value, t.ciphertexts, t.gates,
                                   t.label_digits, t.label_macs))
    return pred


GADGETS = ("sign_bit", "relu", "sign", "rescale", "relu_rescale", "base_extend", "max",
           "maxpool")


def gadget_cost(name: str, moduli: Sequence[int], **attrs) -> int:
    """Ciphertexts per element of one gadget in base ``moduli``, measured by a shape-only run.

    ``rescale`` takes ``divisor`` (a product of distinct moduli, and ``method``);
    ``relu_rescale`` takes ``divisor``; ``base_extend`` takes ``target``
    (the source is ``moduli``); ``maxpool`` takes ``kernel`` (per output element)."""
    moduli = tuple(int(q) for q in moduli)
    bk = CountingBackend(ShapeBackend(batch=1))
    x = bk.input(moduli, (1, 1))
    if name == "sign_bit":
        gadgets.sign_bit(bk, x)
    elif name == "relu":
        gadgets.relu(bk, x)
    elif name == "sign":
        gadgets.sign(bk, x)
    elif name == "rescale":
        gadgets.rescale(bk, x, int(attrs["divisor"]), method=attrs.get("method", "extend"))
    elif name == "relu_rescale":
        gadgets.relu_rescale(bk, x, int(attrs["divisor"]))
    elif name == "base_extend":
        gadgets.base_extend(bk, x, moduli, int(attrs["target"]))
    elif name == "max":
        gadgets.maximum(bk, x, bk.input(moduli, (1, 1)))
    elif name == "maxpool":
        kh, kw = attrs.get("kernel", (2, 2))
        win = bk.input(moduli, (1, 1, kh, kw))
        gadgets.maxpool(bk, win, (kh, kw), (kh, kw))
    else:
        raise ValueError(f"unknown gadget {name!r}; expected one of {GADGETS}")
    return bk.total.ciphertexts
