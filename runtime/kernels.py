"""``KERNELS[op]``: one function per plan op, written once against the backend protocol.

A kernel is ``fn(bk, plan, node, inputs) -> CrtTensor`` and implements the semantics
documented in :mod:`dashc.ir`.  Weights are passed to the backend as int64 arrays; the
backend reduces them modulo each wire modulus.  INPUT and OUTPUT are handled here too, so the
plan loop in :mod:`dashc.runtime.execute` is a plain loop over nodes.
"""
from __future__ import annotations

from typing import Callable

import numpy as np
import torch

from dashc.ir import Node, Op, Plan
from dashc.runtime import gadgets, workers
from dashc.runtime.backend import CrtTensor

Kernel = Callable[[object, Plan, Node, list], object]


def _ints(values, n: int, name: str, node: Node) -> tuple[int, ...]:
    out = tuple(int(v) for v in values)
    if len(out) != n:
        raise ValueError(f"node {node.name!r}: attribute {name!r} needs {n} integers, got {out}")
    return out


def _pads(node: Node) -> tuple[int, int, int, int]:
    return _ints(node.attr("pads", (0, 0, 0, 0)), 4, "pads", node)


def _weight(plan: Plan, node: Node) -> np.ndarray:
    """The node's int64 weights; the plan's own array is made read-only, which lets the
    label backends keep its float form between runs."""
    w = plan.weight(node)
    weight = np.asarray(w, dtype=np.int64)
    if weight is w:
        weight.flags.writeable = False
    return weight


def _add_bias(bk, plan: Plan, node: Node, y: CrtTensor, channel_shape: tuple[int, ...]) -> CrtTensor:
    bias = plan.bias(node)
    if bias is None:
        return y
    b = np.asarray(bias, dtype=np.int64).reshape(channel_shape)
    return y.map(lambda w: bk.add_const(w, b))


def k_input(bk, plan: Plan, node: Node, inputs: list) -> CrtTensor:
    """The backend's ``batch`` attribute gives the leading axis."""
    batch = getattr(bk, "batch", None)
    if batch is None:
        raise TypeError(f"{type(bk).__name__} does not expose the batch size "
                        f"(a 'batch' attribute) that INPUT needs")
    return bk.input(tuple(plan.moduli), (int(batch), *node.shape))


def _per_modulus(bk, x: CrtTensor, fn) -> CrtTensor:
    """``x.map(fn)`` for a linear layer; on the CPU the moduli are spread over the worker
    threads (each modulus is independent).  Elsewhere in order: a CUDA backend toggles
    process-wide TF32 flags around each product."""
    device = getattr(bk, "device", None)
    if device is None or torch.device(device).type != "cpu":
        return x.map(fn)
    qs = list(x.parts)
    return CrtTensor(dict(zip(qs, workers.map_items(lambda q: fn(x[q]), qs))))


def k_dense(bk, plan: Plan, node: Node, inputs: list) -> CrtTensor:
    weight = _weight(plan, node)
    y = _per_modulus(bk, inputs[0], lambda w: bk.dense(w, weight))
    return _add_bias(bk, plan, node, y, (weight.shape[0],))


def k_conv(bk, plan: Plan, node: Node, inputs: list) -> CrtTensor:
    weight = _weight(plan, node)
    stride = _ints(node.attr("stride", (1, 1)), 2, "stride", node)
    pads = _pads(node)
    y = _per_modulus(bk, inputs[0], lambda w: bk.conv2d(w, weight, stride, pads))
    return _add_bias(bk, plan, node, y, (weight.shape[0], 1, 1))


def k_sumpool(bk, plan: Plan, node: Node, inputs: list) -> CrtTensor:
    kernel = _ints(node.attr("kernel"), 2, "kernel", node)
    stride = _ints(node.attr("stride", kernel), 2, "stride", node)
    pads = _pads(node)
    return inputs[0].map(lambda w: bk.sumpool(w, kernel, stride, pads))


def k_reshape(bk, plan: Plan, node: Node, inputs: list) -> CrtTensor:
    shape = tuple(int(s) for s in node.attr("shape", node.shape))
    x = inputs[0]
    return x.map(lambda w: bk.reshape(w, (x.shape[0], *shape)))


def k_add(bk, plan: Plan, node: Node, inputs: list) -> CrtTensor:
    a, b = inputs
    if a.shape != b.shape:
        raise ValueError(f"node {node.name!r}: ADD of shapes {a.shape} and {b.shape}")
    return a.zip(b, bk.add)


def k_cmul(bk, plan: Plan, node: Node, inputs: list) -> CrtTensor:
    factor = int(node.attr("factor"))
    return inputs[0].map(lambda w: bk.cmul(w, factor))


def k_relu(bk, plan: Plan, node: Node, inputs: list) -> CrtTensor:
    return gadgets.relu(bk, inputs[0])


def k_sign(bk, plan: Plan, node: Node, inputs: list) -> CrtTensor:
    return gadgets.sign(bk, inputs[0])


def _input_bound(plan: Plan, node: Node) -> int | None:
    bound = plan.node(node.inputs[0]).bound
    return int(bound) if bound > 0 else None


def k_rescale(bk, plan: Plan, node: Node, inputs: list) -> CrtTensor:
    return gadgets.rescale(bk, inputs[0], int(node.attr("divisor")),
                           bound=_input_bound(plan, node),
                           method=node.attr("method", "extend"))


def k_relu_rescale(bk, plan: Plan, node: Node, inputs: list) -> CrtTensor:
    return gadgets.relu_rescale(bk, inputs[0], int(node.attr("divisor")),
                                bound=_input_bound(plan, node))


def k_maxpool(bk, plan: Plan, node: Node, inputs: list) -> CrtTensor:
    kernel = _ints(node.attr("kernel"), 2, "kernel", node)
    stride = _ints(node.attr("stride", kernel), 2, "stride", node)
    bound = _input_bound(plan, node)
    if bound is not None and 4 * bound > plan.M:
        raise ValueError(f"node {node.name!r}: MAXPOOL needs |x| <= M/4 = {plan.M // 4}, "
                         f"its input bound is {bound}")
    return gadgets.maxpool(bk, inputs[0], kernel, stride, _pads(node),
                           int(node.attr("pad_value", 0)))


def k_output(bk, plan: Plan, node: Node, inputs: list):
    return bk.output(inputs[0])


KERNELS: dict[Op, Kernel] = {
    Op.INPUT: k_input,
    Op.DENSE: k_dense,
    Op.CONV: k_conv,
    Op.SUMPOOL: k_sumpool,
    Op.RESHAPE: k_reshape,
    Op.ADD: k_add,
    Op.CMUL: k_cmul,
    Op.RELU: k_relu,
    Op.SIGN: k_sign,
    Op.RESCALE: k_rescale,
    Op.RELU_RESCALE: k_relu_rescale,
    Op.MAXPOOL: k_maxpool,
    Op.OUTPUT: k_output,
}
