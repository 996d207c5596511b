"""Ops that carry no computation: Identity, Dropout (inference), Constant."""
from __future__ import annotations

import onnx.numpy_helper as nh

from .graph import FloatNode
from .registry import NotSupported, converter


@converter("Identity")
def identity(ctx, node):
    c = ctx.const(node.input[0])
    if c is not None:
        ctx.set_const(node.output[0], c)
        return []
    return [FloatNode(node.output[0], "identity", [node.input[0]], ctx.shape(node.input[0]))]


@converter("Dropout")
def dropout(ctx, node, ratio=0.5, is_test=1, seed=None, consumed_inputs=None):
    if len(node.input) > 2 and node.input[2]:
        mode = ctx.const(node.input[2])
        if mode is None or bool(mode.reshape(-1)[0]):
            raise NotSupported("training_mode input")
    if len(node.output) > 1 and node.output[1]:
        raise NotSupported("the mask output")
    return [FloatNode(node.output[0], "identity", [node.input[0]], ctx.shape(node.input[0]))]


@converter("Constant")
def constant(ctx, node, value=None, value_float=None, value_floats=None, value_int=None,
             value_ints=None, sparse_value=None, value_string=None, value_strings=None):
    if value is not None:
        ctx.set_const(node.output[0], nh.to_array(value))
    elif value_float is not None:
        ctx.set_const(node.output[0], nh.np.array(value_float, dtype="float32"))
    elif value_floats is not None:
        ctx.set_const(node.output[0], nh.np.array(value_floats, dtype="float32"))
    elif value_int is not None:
        ctx.set_const(node.output[0], nh.np.array(value_int, dtype="int64"))
    elif value_ints is not None:
        ctx.set_const(node.output[0], nh.np.array(value_ints, dtype="int64"))
    else:
        raise NotSupported("sparse or string constant")
    return []
