"""Value bounds of plan nodes: worst-case interval propagation and calibrated estimates.

``worst_case`` propagates one integer interval ``[lo, hi]`` per node from the clipped input
range through the integer weights: exact for every input in the clip range (Python integers,
no rounding).  ``calibrated`` starts from the float ranges seen on calibration data (divided
by the node's scale, times a safety ``margin``), never exceeding the worst case, and applies
the same rules where a node has no float tensor of its own (rescale chains, scale
alignment).
"""
from __future__ import annotations

import math
from typing import Mapping

import numpy as np

from . import crt
from .ir import Node, Op

Interval = tuple[int, int]


def _weight_sums(w: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per output row: sum of positive and of negative weights (Python ints)."""
    flat = w.reshape(w.shape[0], -1).astype(object)
    pos = np.where(flat > 0, flat, 0).sum(axis=1)
    neg = np.where(flat < 0, flat, 0).sum(axis=1)
    return pos, neg


def _affine(w: np.ndarray, b: np.ndarray | None, lo: int, hi: int) -> Interval:
    pos, neg = _weight_sums(w)
    bias = np.zeros(w.shape[0], dtype=object) if b is None else b.astype(object)
    top = pos * hi + neg * lo + bias
    bottom = pos * lo + neg * hi + bias
    return int(min(bottom)), int(max(top))


def _floor_div(a: int, d: int) -> int:
    return a // d


def step(node: Node, inputs: list[Interval], tensors: Mapping[str, np.ndarray]) -> Interval:
    """Interval of ``node``'s output from the intervals of its inputs."""
    op = node.op
    if op in (Op.DENSE, Op.CONV):
        lo, hi = inputs[0]
        if op is Op.CONV and any(node.attr("pads", (0, 0, 0, 0))):
            lo, hi = min(lo, 0), max(hi, 0)
        return _affine(tensors[f"{node.name}.weight"], tensors.get(f"{node.name}.bias"), lo, hi)
    if op is Op.SUMPOOL:
        lo, hi = inputs[0]
        area = math.prod(node.attr("kernel"))
        if any(node.attr("pads", (0, 0, 0, 0))):
            lo, hi = min(lo, 0), max(hi, 0)
        return area * lo, area * hi
    if op is Op.ADD:
        (a0, a1), (b0, b1) = inputs
        return a0 + b0, a1 + b1
    if op is Op.CMUL:
        f = int(node.attr("factor"))
        lo, hi = inputs[0]
        return min(f * lo, f * hi), max(f * lo, f * hi)
    if op is Op.RELU:
        lo, hi = inputs[0]
        return max(lo, 0), max(hi, 0)
    if op is Op.SIGN:
        return -1, 1
    if op in (Op.RESCALE, Op.RELU_RESCALE):
        d = int(node.attr("divisor"))
        lo, hi = inputs[0]
        lo, hi = _floor_div(lo + d // 2, d), _floor_div(hi + d // 2, d)
        return (max(lo, 0), max(hi, 0)) if op is Op.RELU_RESCALE else (lo, hi)
    if op is Op.MAXPOOL:
        lo, hi = inputs[0]
        if any(node.attr("pads", (0, 0, 0, 0))):
            pv = int(node.attr("pad_value", 0))
            lo, hi = min(lo, pv), max(hi, pv)
        return lo, hi
    if op in (Op.RESHAPE, Op.OUTPUT):
        return inputs[0]
    raise ValueError(f"no bound rule for op {op}")


def worst_case(nodes: list[Node], tensors: Mapping[str, np.ndarray],
               input_clip: tuple[int, int]) -> dict[str, Interval]:
    out: dict[str, Interval] = {}
    for node in nodes:
        if node.op is Op.INPUT:
            out[node.name] = (int(input_clip[0]), int(input_clip[1]))
        else:
            out[node.name] = step(node, [out[i] for i in node.inputs], tensors)
    return out


def calibrated(nodes: list[Node], tensors: Mapping[str, np.ndarray],
               input_clip: tuple[int, int], seen: Mapping[str, tuple[float, float]],
               margin: float, worst: Mapping[str, Interval]) -> dict[str, Interval]:
    """``seen[node]``: calibrated float range of the node's value (already divided by the
    node's scale) for the nodes that have one."""
    out: dict[str, Interval] = {}
    for node in nodes:
        if node.op is Op.INPUT:
            out[node.name] = (int(input_clip[0]), int(input_clip[1]))
            continue
        derived = step(node, [out[i] for i in node.inputs], tensors)
        if node.name in seen and node.op not in (Op.SIGN, Op.RESHAPE, Op.OUTPUT):
            lo, hi = seen[node.name]
            est = (math.floor(min(lo, 0.0) * margin) - 1, math.ceil(max(hi, 0.0) * margin) + 1)
            both = (max(est[0], derived[0]), min(est[1], derived[1]))
            derived = both if both[0] <= both[1] else est
        w = worst[node.name]
        out[node.name] = (max(derived[0], w[0]), min(derived[1], w[1]))
    return out


def magnitude(interval: Interval) -> int:
    return max(abs(interval[0]), abs(interval[1]))


RESCALE_OPS = (Op.RESCALE, Op.RELU_RESCALE)


def requirement(nodes: list[Node], intervals: Mapping[str, Interval]) -> int:
    """The largest ``|value|`` the base must represent, including the ``d // 2`` headroom a
    rescale by ``d`` needs on its input and twice the input of a max pooling (it subtracts
    two values).  A summary: :func:`base_violations` is the exact test for a given base."""
    need = 0
    for node in nodes:
        need = max(need, magnitude(intervals[node.name]))
        if node.op in RESCALE_OPS:
            src = intervals[node.inputs[0]]
            need = max(need, src[1] + int(node.attr("divisor")) // 2, -src[0])
        if node.op is Op.MAXPOOL:
            need = max(need, 2 * magnitude(intervals[node.inputs[0]]))
    return need


def base_violations(nodes: list[Node], intervals: Mapping[str, Interval],
                    moduli: tuple[int, ...]) -> list[str]:
    """Why the base ``moduli`` cannot hold the plan (empty when it can), on the symmetric
    bounds ``|value| <= magnitude`` that the plan records: every value in the signed
    range, every rescale input within the range on which its gadget is exact, every max
    pooling input within ``M/4``."""
    from .runtime import gadgets

    lo_m, hi_m = crt.signed_range(moduli)
    M = math.prod(moduli)
    out = []
    for node in nodes:
        b = magnitude(intervals[node.name])
        if b > hi_m or -b < lo_m:
            out.append(f"{node.name}: |value| <= {b} exceeds the signed range of M")
        if node.op in RESCALE_OPS:
            b = magnitude(intervals[node.inputs[0]])
            try:
                lo, hi = gadgets.rescale_input_range(moduli, int(node.attr("divisor")),
                                                     node.op is Op.RELU_RESCALE,
                                                     node.attr("method", "extend"))
            except ValueError as e:
                out.append(f"{node.name}: {e}")
                continue
            if b > hi or -b < lo:
                out.append(f"{node.name}: input |x| <= {b} outside [{lo}, {hi}]")
        if node.op is Op.MAXPOOL and 4 * magnitude(intervals[node.inputs[0]]) > M:
            out.append(f"{node.name}: max pooling input exceeds M/4")
    return out
