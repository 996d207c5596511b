"""Shape arithmetic on constants (Shape, Gather, Unsqueeze, Concat, Cast, Squeeze).

Exporters emit these to compute reshape targets; with static shapes they are constants and
produce no float node.  The batch axis of a ``Shape`` is 1.
"""
from __future__ import annotations

import numpy as np
import onnx

from .registry import NotSupported, converter


def _consts(ctx, node) -> list[np.ndarray]:
    values = [ctx.const(n) for n in node.input if n]
    if any(v is None for v in values):
        raise NotSupported("shape arithmetic on a non-constant tensor")
    return values


@converter("Shape")
def shape(ctx, node, start=0, end=None):
    full = np.array((1,) + tuple(ctx.shape(node.input[0])), dtype=np.int64)
    ctx.set_const(node.output[0], full[int(start):None if end is None else int(end)])
    return []


@converter("Gather")
def gather(ctx, node, axis=0):
    data, index = _consts(ctx, node)
    ctx.set_const(node.output[0], np.take(data, index, axis=int(axis)))
    return []


@converter("Unsqueeze")
def unsqueeze(ctx, node, axes=None):
    values = _consts(ctx, node)
    axes = values[1] if len(values) > 1 else axes
    ctx.set_const(node.output[0], np.expand_dims(values[0], tuple(int(a) for a in axes)))
    return []


@converter("Squeeze")
def squeeze(ctx, node, axes=None):
    values = _consts(ctx, node)
    axes = values[1] if len(values) > 1 else axes
    ctx.set_const(node.output[0], np.squeeze(values[0], None if axes is None else
                                             tuple(int(a) for a in axes)))
    return []


@converter("Concat")
def concat(ctx, node, axis=0):
    ctx.set_const(node.output[0], np.concatenate(_consts(ctx, node), axis=int(axis)))
    return []


@converter("Cast")
def cast(ctx, node, to=1, saturate=1, round_mode=None):
    (value,) = _consts(ctx, node)
    dtype = onnx.helper.tensor_dtype_to_np_dtype(int(to))
    ctx.set_const(node.output[0], value.astype(dtype))
    return []
