"""The plan: dashc's single intermediate representation.

A plan is plain data: a topologically ordered tuple of integer ops over CRT values, the
integer weights they use, the CRT moduli, the input/output scales and metadata.  The three
interpreters (plain simulation, garbler, evaluator) all run the same plan through
``dashc.runtime.execute``.

Conventions
-----------
* Every tensor has an implicit leading batch axis; ``Node.shape`` excludes it.
* Every value lives in ``[-M/2, M/2)`` with ``M = prod(moduli)``; ``Node.bound`` is the
  compiler's proven bound on ``|value|`` of the node's output (``verify`` checks
  ``bound < M/2``).
* ``Node.scale`` is metadata only: the real number a value stands for is ``value * scale``.
* Weights live in ``Plan.tensors`` under ``"<node>.weight"`` and ``"<node>.bias"`` as int64
  arrays.  Biases are public constants.

Ops and their exact integer semantics (``PlainBackend`` is the executable definition):

=============  ======================================================================
INPUT          the encoded input, shape (C, H, W) or (F,); no inputs
DENSE          y = x @ weight.T + bias; weight [out, in], bias [out] (optional)
CONV           2-D convolution, weight [O, C, kh, kw], bias [O] (optional);
               attrs ``stride`` (sh, sw), ``pads`` (top, left, bottom, right), zero padding
SUMPOOL        window sums (average pooling times the window area); attrs ``kernel``,
               ``stride``, ``pads`` (zero padding)
RESHAPE        attrs ``shape`` (new shape without batch axis), row-major
ADD            y = a + b, two inputs of the same shape
CMUL           y = factor * x, attrs ``factor`` (int)
RELU           y = max(x, 0)
SIGN           y = +1 if x >= 0 else -1
RESCALE        y = floor((x + divisor // 2) / divisor), i.e. round half up (``ceil(x/2)``
               for divisor 2); attrs ``divisor``: a product of distinct moduli of the base
               that leaves at least one out (one mixed-radix conversion whatever their
               number), optional ``method`` (``"extend"``, default, or ``"sign"`` for
               divisor 2).  The input must lie in
               ``dashc.runtime.gadgets.rescale_input_range(moduli, divisor)``: all of Z_M
               when M / divisor is odd, else ``x + divisor // 2 < M/2``
RELU_RESCALE   y = max(floor((x + divisor // 2) / divisor), 0), RELU after RESCALE in one
               gadget (the two commute); attrs ``divisor`` as for RESCALE; input range
               ``rescale_input_range(moduli, divisor, relu=True)``: as RESCALE when 2 is in
               the base and not in the divisor, else about ``M/(2p)`` short of ``-M/2``
               (``p`` the largest modulus outside the divisor)
MAXPOOL        window maxima; attrs ``kernel``, ``stride``, ``pads`` (padded cells hold
               ``pad_value``, an int attr, default 0 and only used when pads are non-zero)
OUTPUT         marks the plan output (logits); one input
=============  ======================================================================
"""
from __future__ import annotations

import enum
import math
from dataclasses import dataclass, field
from typing import Any, Mapping

import numpy as np


class Op(str, enum.Enum):
    INPUT = "input"
    DENSE = "dense"
    CONV = "conv"
    SUMPOOL = "sumpool"
    RESHAPE = "reshape"
    ADD = "add"
    CMUL = "cmul"
    RELU = "relu"
    SIGN = "sign"
    RESCALE = "rescale"
    RELU_RESCALE = "relu_rescale"
    MAXPOOL = "maxpool"
    OUTPUT = "output"


#: ops whose cost is zero ciphertexts (label arithmetic only)
FREE_OPS = frozenset({Op.INPUT, Op.DENSE, Op.CONV, Op.SUMPOOL, Op.RESHAPE, Op.ADD, Op.CMUL,
                      Op.OUTPUT})


@dataclass(frozen=True)
class Node:
    name: str
    op: Op
    inputs: tuple[str, ...]
    shape: tuple[int, ...]
    attrs: Mapping[str, Any] = field(default_factory=dict)
    bound: int = 0
    scale: float = 1.0

    def attr(self, key: str, default: Any = None) -> Any:
        return self.attrs.get(key, default)


@dataclass(frozen=True)
class Plan:
    moduli: tuple[int, ...]
    nodes: tuple[Node, ...]
    tensors: Mapping[str, np.ndarray]
    input_scale: float
    input_clip: tuple[int, int]
    output_scale: float
    meta: Mapping[str, Any] = field(default_factory=dict)
    float_model: bytes = b""

    @property
    def M(self) -> int:
        return math.prod(self.moduli)

    @property
    def input_node(self) -> Node:
        return next(n for n in self.nodes if n.op is Op.INPUT)

    @property
    def output_node(self) -> Node:
        return next(n for n in self.nodes if n.op is Op.OUTPUT)

    def node(self, name: str) -> Node:
        for n in self.nodes:
            if n.name == name:
                return n
        raise KeyError(name)

    def weight(self, node: Node) -> np.ndarray:
        return self.tensors[f"{node.name}.weight"]

    def bias(self, node: Node) -> np.ndarray | None:
        return self.tensors.get(f"{node.name}.bias")
