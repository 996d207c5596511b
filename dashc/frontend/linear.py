"""Dense layers: Gemm and MatMul (a following constant Add becomes the bias)."""
from __future__ import annotations

import numpy as np

from .graph import FloatNode
from .registry import NotSupported, converter


def _vector_input(ctx, node) -> tuple[int, ...]:
    shape = ctx.shape(node.input[0])
    if len(shape) != 1:
        raise NotSupported(f"input of rank {len(shape) + 1}; flatten before a dense layer")
    return shape


@converter("Gemm")
def gemm(ctx, node, alpha=1.0, beta=1.0, transA=0, transB=0):
    if transA:
        raise NotSupported("transA=1")
    (features,) = _vector_input(ctx, node)
    b = ctx.const(node.input[1])
    if b is None:
        raise NotSupported("non-constant weight")
    weight = (b if transB else b.T) * float(alpha)
    if weight.ndim != 2 or weight.shape[1] != features:
        raise NotSupported(f"weight shape {b.shape} does not match {features} input features")
    out = weight.shape[0]
    bias = np.zeros(out)
    if len(node.input) > 2 and node.input[2]:
        c = ctx.const(node.input[2])
        if c is None:
            raise NotSupported("non-constant bias")
        try:
            bias = np.broadcast_to(c.reshape(-1) if c.size == out else c, (out,)) * float(beta)
        except ValueError:
            raise NotSupported(f"bias shape {c.shape}") from None
    return [FloatNode(node.output[0], "linear", [node.input[0]], (out,),
                      params={"weight": weight.astype(np.float64),
                              "bias": np.array(bias, dtype=np.float64)})]


@converter("MatMul")
def matmul(ctx, node):
    (features,) = _vector_input(ctx, node)
    b = ctx.const(node.input[1])
    if b is None:
        raise NotSupported("non-constant right operand")
    if b.ndim != 2 or b.shape[0] != features:
        raise NotSupported(f"weight shape {b.shape} does not match {features} input features")
    return [FloatNode(node.output[0], "linear", [node.input[0]], (b.shape[1],),
                      params={"weight": b.T.astype(np.float64),
                              "bias": np.zeros(b.shape[1])})]
