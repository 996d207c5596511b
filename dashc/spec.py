"""``verify(plan)``: the structural and numeric rules every plan obeys.

Checked: the base (distinct primes, product below 2**62), unique names, topological order,
one INPUT and one final OUTPUT, arity and attributes per op, output shapes recomputed from
the inputs, integer weights of the right shape, rescale divisors that are products of
distinct moduli of the base, and every node's bound representable (``bound < M/2``, and a
rescale's input bound within the range on which its gadget is exact).  Any violation
raises :class:`PlanFileError` naming the node.
"""
from __future__ import annotations

import math

import numpy as np

from . import crt
from .errors import PlanFileError
from .ir import Node, Op, Plan
from .runtime import gadgets

ARITY = {Op.INPUT: 0, Op.ADD: 2}
RESCALE_OPS = (Op.RESCALE, Op.RELU_RESCALE)
WINDOW_OPS = (Op.SUMPOOL, Op.MAXPOOL)


class _Fail(Exception):
    pass


def _ints(node: Node, key: str, n: int) -> tuple[int, ...]:
    v = node.attrs.get(key)
    try:
        t = tuple(int(x) for x in v)
    except TypeError:
        raise _Fail(f"attribute {key!r} must be {n} integers, got {v!r}") from None
    if len(t) != n or any(int(x) != x for x in v):
        raise _Fail(f"attribute {key!r} must be {n} integers, got {v!r}")
    return t


def _window(shape, kernel, stride, pads) -> tuple[int, int, int]:
    if len(shape) != 3:
        raise _Fail(f"needs a C×H×W input, got {shape}")
    if min(kernel) < 1 or min(stride) < 1 or min(pads) < 0:
        raise _Fail("kernel and stride must be positive and pads non-negative")
    h = (shape[1] + pads[0] + pads[2] - kernel[0]) // stride[0] + 1
    w = (shape[2] + pads[1] + pads[3] - kernel[1]) // stride[1] + 1
    if h < 1 or w < 1:
        raise _Fail(f"window {kernel} does not fit the input {shape}")
    return shape[0], h, w


def _tensor(plan: Plan, key: str, shape: tuple[int, ...]) -> None:
    t = plan.tensors.get(key)
    if t is None:
        raise _Fail(f"missing tensor {key!r}")
    if not isinstance(t, np.ndarray) or t.dtype != np.int64:
        raise _Fail(f"tensor {key!r} must be an int64 array")
    if tuple(t.shape) != tuple(shape):
        raise _Fail(f"tensor {key!r} has shape {tuple(t.shape)}, expected {tuple(shape)}")


def _expected_shape(plan: Plan, node: Node, ins: list[tuple[int, ...]]) -> tuple[int, ...]:
    op = node.op
    if op is Op.INPUT:
        if len(node.shape) not in (1, 3) or min(node.shape) < 1:
            raise _Fail(f"input shape {node.shape} must be (F,) or (C, H, W)")
        return node.shape
    x = ins[0]
    if op is Op.DENSE:
        if len(x) != 1:
            raise _Fail(f"dense input must be a vector, got {x}")
        out = node.shape[0] if len(node.shape) == 1 else -1
        _tensor(plan, f"{node.name}.weight", (out, x[0]))
        if f"{node.name}.bias" in plan.tensors:
            _tensor(plan, f"{node.name}.bias", (out,))
        return (out,)
    if op is Op.CONV:
        w = plan.tensors.get(f"{node.name}.weight")
        if w is None or w.ndim != 4:
            raise _Fail("conv needs a 4-D weight tensor")
        _tensor(plan, f"{node.name}.weight", (w.shape[0], x[0] if x else -1) + w.shape[2:])
        if f"{node.name}.bias" in plan.tensors:
            _tensor(plan, f"{node.name}.bias", (w.shape[0],))
        _, h, wd = _window(x, tuple(w.shape[2:]), _ints(node, "stride", 2),
                           _ints(node, "pads", 4))
        return (w.shape[0], h, wd)
    if op in WINDOW_OPS:
        if op is Op.MAXPOOL and "pad_value" in node.attrs:
            int(node.attrs["pad_value"])
        return _window(x, _ints(node, "kernel", 2), _ints(node, "stride", 2),
                       _ints(node, "pads", 4))
    if op is Op.RESHAPE:
        shape = tuple(int(s) for s in node.attrs.get("shape", ()))
        if math.prod(shape) != math.prod(x) or min(shape, default=0) < 1:
            raise _Fail(f"cannot reshape {x} to {shape}")
        return shape
    if op is Op.ADD:
        if ins[0] != ins[1]:
            raise _Fail(f"adds shapes {ins[0]} and {ins[1]}")
        return x
    if op is Op.CMUL:
        f = node.attrs.get("factor")
        if not isinstance(f, (int, np.integer)) or isinstance(f, bool):
            raise _Fail(f"factor must be an integer, got {f!r}")
        return x
    if op in RESCALE_OPS:
        d = node.attrs.get("divisor")
        if not isinstance(d, (int, np.integer)) or isinstance(d, bool):
            raise _Fail(f"divisor {d!r} is not an integer")
        try:
            gadgets.rescale_subset(plan.moduli, int(d))
        except ValueError as e:
            raise _Fail(str(e)) from None
        method = node.attrs.get("method", "extend")
        if method not in gadgets.RESCALE_METHODS or (method == "sign" and (
                int(d) != 2 or op is Op.RELU_RESCALE)):
            raise _Fail(f"rescale method {method!r} does not apply to divisor {d}")
        return x
    return x  # RELU, SIGN, OUTPUT


def verify(plan: Plan) -> Plan:
    """Raise :class:`PlanFileError` unless ``plan`` obeys every rule; return it."""
    try:
        crt.check_base(plan.moduli)
    except ValueError as e:
        raise PlanFileError(f"plan invalid: {e}") from None
    if not plan.nodes:
        raise PlanFileError("plan invalid: no nodes")
    lo_m, hi_m = crt.signed_range(plan.moduli)
    if not (math.isfinite(plan.input_scale) and plan.input_scale > 0
            and math.isfinite(plan.output_scale) and plan.output_scale > 0):
        raise PlanFileError("plan invalid: input and output scales must be positive numbers")
    shapes: dict[str, tuple[int, ...]] = {}
    by_name: dict[str, Node] = {}
    for i, node in enumerate(plan.nodes):
        try:
            if not isinstance(node.op, Op):
                raise _Fail(f"unknown op {node.op!r}")
            if node.name in shapes:
                raise _Fail("name used twice")
            arity = ARITY.get(node.op, 1)
            if len(node.inputs) != arity:
                raise _Fail(f"{node.op.value} takes {arity} input(s), got {len(node.inputs)}")
            missing = [n for n in node.inputs if n not in shapes]
            if missing:
                raise _Fail(f"reads {missing} before they are computed (not topological)")
            if (node.op is Op.INPUT) != (i == 0):
                raise _Fail("the INPUT node must come first, and only once")
            if (node.op is Op.OUTPUT) != (i == len(plan.nodes) - 1):
                raise _Fail("the OUTPUT node must come last, and only once")
            shape = _expected_shape(plan, node, [shapes[n] for n in node.inputs])
            if tuple(node.shape) != tuple(shape):
                raise _Fail(f"shape {tuple(node.shape)} should be {tuple(shape)}")
            if not isinstance(node.bound, (int, np.integer)) or node.bound < 0:
                raise _Fail(f"bound {node.bound!r} must be a non-negative integer")
            if node.bound > hi_m or -node.bound < lo_m:
                raise _Fail(f"bound {node.bound} does not fit the base (M = {plan.M})")
            if node.op in RESCALE_OPS:
                d, b = int(node.attrs["divisor"]), by_name[node.inputs[0]].bound
                lo, hi = gadgets.rescale_input_range(plan.moduli, d,
                                                     node.op is Op.RELU_RESCALE,
                                                     node.attrs.get("method", "extend"))
                if b > hi or -b < lo:
                    raise _Fail(f"input bound {b} exceeds the range [{lo}, {hi}] on which "
                                f"{node.op.value} by {d} is exact")
            if node.op is Op.INPUT:
                lo, hi = plan.input_clip
                if not lo <= hi or max(abs(lo), abs(hi)) > node.bound:
                    raise _Fail(f"input clip {plan.input_clip} exceeds the input bound")
        except _Fail as e:
            raise PlanFileError(f"plan invalid: node {node.name!r}: {e}") from None
        except (KeyError, TypeError, ValueError) as e:
            raise PlanFileError(f"plan invalid: node {node.name!r}: malformed ({e})") from None
        shapes[node.name] = tuple(node.shape)
        by_name[node.name] = node
    owners = {f"{n.name}.weight" for n in plan.nodes} | {f"{n.name}.bias" for n in plan.nodes}
    stray = sorted(set(plan.tensors) - owners)
    if stray:
        raise PlanFileError(f"plan invalid: tensors {stray} belong to no node")
    return plan
