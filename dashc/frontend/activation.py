"""Activations: ReLU and the sign activation (Sign, or Tanh standing for it)."""
from __future__ import annotations

from .graph import FloatNode
from .registry import converter


@converter("Relu")
def relu(ctx, node):
    return [FloatNode(node.output[0], "relu", [node.input[0]], ctx.shape(node.input[0]))]


@converter("Tanh")
def tanh(ctx, node):
    return [FloatNode(node.output[0], "sign", [node.input[0]], ctx.shape(node.input[0]),
                      attrs={"source": "tanh"})]


@converter("Sign", since=9)
def sign(ctx, node):
    return [FloatNode(node.output[0], "sign", [node.input[0]], ctx.shape(node.input[0]),
                      attrs={"source": "sign"})]
