"""Pooling: MaxPool, AveragePool, GlobalAveragePool."""
from __future__ import annotations

from .graph import FloatNode
from .registry import NotSupported, converter
from .window import output_size, pair, require_unit, resolve_pads


def _image(ctx, node) -> tuple[int, int, int]:
    shape = ctx.shape(node.input[0])
    if len(shape) != 3:
        raise NotSupported(f"input of rank {len(shape) + 1} (only N×C×H×W)")
    return shape


def _window(ctx, node, kernel_shape, strides, pads, auto_pad, ceil_mode):
    shape = _image(ctx, node)
    if int(ceil_mode):
        raise NotSupported("ceil_mode=1")
    kernel = pair(kernel_shape, 1, "kernel_shape")
    stride = pair(strides, 1, "strides")
    pad4 = resolve_pads(shape[1:], kernel, stride, pads, auto_pad)
    return shape, kernel, stride, pad4, output_size(shape[1:], kernel, stride, pad4)


@converter("MaxPool")
def maxpool(ctx, node, kernel_shape=None, strides=None, pads=None, auto_pad="NOTSET",
            ceil_mode=0, dilations=None, storage_order=0):
    require_unit(dilations, "dilations")
    if len(node.output) > 1 and node.output[1]:
        raise NotSupported("the indices output")
    shape, kernel, stride, pad4, (h, w) = _window(ctx, node, kernel_shape, strides, pads,
                                                  auto_pad, ceil_mode)
    return [FloatNode(node.output[0], "maxpool", [node.input[0]], (shape[0], h, w),
                      attrs={"kernel": kernel, "stride": stride, "pads": pad4})]


@converter("AveragePool")
def avgpool(ctx, node, kernel_shape=None, strides=None, pads=None, auto_pad="NOTSET",
            ceil_mode=0, count_include_pad=0, dilations=None):
    require_unit(dilations, "dilations")
    shape, kernel, stride, pad4, (h, w) = _window(ctx, node, kernel_shape, strides, pads,
                                                  auto_pad, ceil_mode)
    if any(pad4) and not int(count_include_pad):
        raise NotSupported("padding with count_include_pad=0 (the divisor varies at borders)")
    return [FloatNode(node.output[0], "avgpool", [node.input[0]], (shape[0], h, w),
                      attrs={"kernel": kernel, "stride": stride, "pads": pad4})]


@converter("GlobalAveragePool")
def global_avgpool(ctx, node):
    c, h, w = _image(ctx, node)
    return [FloatNode(node.output[0], "avgpool", [node.input[0]], (c, 1, 1),
                      attrs={"kernel": (h, w), "stride": (1, 1), "pads": (0, 0, 0, 0)})]


def _spatial_mean(ctx, node, axes, keepdims):
    c, h, w = _image(ctx, node)
    axes = sorted(int(a) % 4 for a in axes) if axes is not None else None
    if axes != [2, 3]:
        raise NotSupported(f"mean over axes {axes} (only the spatial axes 2, 3)")
    out = [FloatNode(node.output[0] if keepdims else f"{node.output[0]}::pooled", "avgpool",
                     [node.input[0]], (c, 1, 1),
                     attrs={"kernel": (h, w), "stride": (1, 1), "pads": (0, 0, 0, 0)})]
    if not keepdims:
        out.append(FloatNode(node.output[0], "reshape", [out[0].name], (c,),
                             attrs={"shape": (c,)}))
    return out


@converter("ReduceMean")
def reduce_mean(ctx, node, axes=None, keepdims=1):
    return _spatial_mean(ctx, node, axes, int(keepdims))


@converter("ReduceMean", since=18)
def reduce_mean_18(ctx, node, keepdims=1, noop_with_empty_axes=0):
    axes = ctx.const(node.input[1]) if len(node.input) > 1 and node.input[1] else None
    if axes is None:
        raise NotSupported("axes not given as a constant")
    return _spatial_mean(ctx, node, axes.reshape(-1).tolist(), int(keepdims))
