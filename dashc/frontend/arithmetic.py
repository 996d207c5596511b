"""Add: residual sum of two tensors, or a per-channel constant (folded into a bias)."""
from __future__ import annotations

import numpy as np

from .graph import FloatNode
from .registry import NotSupported, converter


def _per_channel(const: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    """A constant broadcast against ``(N, *shape)`` that varies along the channel axis only."""
    channels = shape[0]
    full = np.broadcast_to(const, (1,) + tuple(shape)) if const.ndim <= len(shape) + 1 else None
    if full is None:
        raise NotSupported(f"constant of shape {const.shape}")
    flat = full.reshape(channels, -1)
    if not np.all(flat == flat[:, :1]):
        raise NotSupported(f"constant of shape {const.shape} varies within a channel")
    return flat[:, 0].astype(np.float64)


@converter("Add", since=7)
def add(ctx, node):
    a, b = node.input[0], node.input[1]
    ca, cb = ctx.const(a), ctx.const(b)
    if ca is not None and cb is not None:
        ctx.set_const(node.output[0], ca + cb)
        return []
    if ca is None and cb is None:
        sa, sb = ctx.shape(a), ctx.shape(b)
        if sa != sb:
            raise NotSupported(f"broadcasting add of shapes {sa} and {sb}")
        return [FloatNode(node.output[0], "add", [a, b], sa)]
    x, c = (a, cb) if cb is not None else (b, ca)
    shape = ctx.shape(x)
    try:
        bias = _per_channel(c, shape)
    except ValueError:
        raise NotSupported(f"constant of shape {c.shape} does not broadcast to {shape}") from None
    return [FloatNode(node.output[0], "bias", [x], shape, params={"bias": bias})]
