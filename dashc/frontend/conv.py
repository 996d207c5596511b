"""2-D convolution (dilation 1, one group)."""
from __future__ import annotations

import numpy as np

from .graph import FloatNode
from .registry import NotSupported, converter
from .window import output_size, pair, require_unit, resolve_pads


@converter("Conv")
def conv(ctx, node, strides=None, pads=None, auto_pad="NOTSET", dilations=None, group=1,
         kernel_shape=None):
    shape = ctx.shape(node.input[0])
    if len(shape) != 3:
        raise NotSupported(f"input of rank {len(shape) + 1} (only 2-D images N×C×H×W)")
    require_unit(dilations, "dilations")
    if int(group) != 1:
        raise NotSupported(f"group={group} (only 1 is supported)")
    weight = ctx.const(node.input[1])
    if weight is None:
        raise NotSupported("non-constant weight")
    if weight.ndim != 4 or weight.shape[1] != shape[0]:
        raise NotSupported(f"weight shape {weight.shape} does not match {shape[0]} channels")
    kernel = tuple(weight.shape[2:])
    if kernel_shape is not None and tuple(kernel_shape) != kernel:
        raise NotSupported(f"kernel_shape {list(kernel_shape)} differs from the weight")
    stride = pair(strides, 1, "strides")
    pad4 = resolve_pads(shape[1:], kernel, stride, pads, auto_pad)
    h, w = output_size(shape[1:], kernel, stride, pad4)
    out = weight.shape[0]
    bias = np.zeros(out)
    if len(node.input) > 2 and node.input[2]:
        b = ctx.const(node.input[2])
        if b is None:
            raise NotSupported("non-constant bias")
        bias = b.reshape(-1)
    return [FloatNode(node.output[0], "conv", [node.input[0]], (out, h, w),
                      attrs={"stride": stride, "pads": pad4},
                      params={"weight": weight.astype(np.float64),
                              "bias": bias.astype(np.float64)})]
