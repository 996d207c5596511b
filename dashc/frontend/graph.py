"""The float graph: what the ONNX importer produces and the quantizer consumes.

A :class:`FloatGraph` is a topologically ordered list of :class:`FloatNode` with float64
parameters.  Node kinds are dashc's own vocabulary (ONNX op strings stay in the converters):

=========  =================================================================
input      the model input; ``shape`` excludes the batch axis
linear     y = x @ weight.T + bias; params ``weight`` [out, in], ``bias`` [out]
conv       2-D convolution; params ``weight`` [O, C, kh, kw], ``bias`` [O];
           attrs ``stride`` (sh, sw), ``pads`` (top, left, bottom, right)
relu       max(x, 0)
sign       sign activation (attrs ``source``: "tanh" or "sign", the float op)
maxpool    attrs ``kernel``, ``stride``, ``pads``
avgpool    attrs ``kernel``, ``stride``, ``pads`` (zero padding counted in the area)
reshape    attrs ``shape`` (without batch axis)
add        sum of two tensors of the same shape
bias       x + per-channel constant (param ``bias``); folded by the passes
batchnorm  per-channel affine (params ``scale``, ``shift``); folded by the passes
identity   y = x; removed by the passes
=========  =================================================================

Every node is named after the ONNX tensor it produces, so calibrated ranges (keyed by
tensor name) map onto nodes directly.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

KINDS = frozenset({"input", "linear", "conv", "relu", "sign", "maxpool", "avgpool", "reshape",
                   "add", "bias", "batchnorm", "identity"})


@dataclass
class FloatNode:
    name: str
    kind: str
    inputs: list[str]
    shape: tuple[int, ...]
    attrs: dict[str, Any] = field(default_factory=dict)
    params: dict[str, np.ndarray] = field(default_factory=dict)
    source: str = ""  # the ONNX node (name and op type) it came from, for messages

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"unknown float node kind {self.kind!r}")


@dataclass
class FloatGraph:
    nodes: list[FloatNode]
    output: str
    opset: int
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def input(self) -> FloatNode:
        return next(n for n in self.nodes if n.kind == "input")

    def node(self, name: str) -> FloatNode:
        for n in self.nodes:
            if n.name == name:
                return n
        raise KeyError(name)

    def consumers(self, name: str) -> list[FloatNode]:
        return [n for n in self.nodes if name in n.inputs]

    def by_name(self) -> dict[str, FloatNode]:
        return {n.name: n for n in self.nodes}
