"""FloatGraph -> canonical ONNX model (batch axis symbolic), the plan's float reference.

The emitted model computes exactly what the float graph means (BatchNorm already folded,
Identity removed), so float accuracy and calibration ranges refer to the same graph the
quantizer lowers; its tensor names are the float nodes' names.
"""
from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from .graph import FloatGraph

OPSET = 17


def _f32(name: str, value: np.ndarray) -> onnx.TensorProto:
    return numpy_helper.from_array(np.asarray(value, dtype=np.float32), name)


def to_onnx(graph: FloatGraph) -> bytes:
    nodes, inits = [], []
    inp = graph.input
    for n in graph.nodes:
        if n.kind == "input":
            continue
        x = n.inputs
        if n.kind == "linear":
            inits += [_f32(f"{n.name}::weight", n.params["weight"]),
                      _f32(f"{n.name}::bias", n.params["bias"])]
            nodes.append(helper.make_node("Gemm", [x[0], f"{n.name}::weight", f"{n.name}::bias"],
                                          [n.name], transB=1))
        elif n.kind == "conv":
            inits += [_f32(f"{n.name}::weight", n.params["weight"]),
                      _f32(f"{n.name}::bias", n.params["bias"])]
            nodes.append(helper.make_node("Conv", [x[0], f"{n.name}::weight", f"{n.name}::bias"],
                                          [n.name], strides=list(n.attrs["stride"]),
                                          pads=list(n.attrs["pads"])))
        elif n.kind == "relu":
            nodes.append(helper.make_node("Relu", x, [n.name]))
        elif n.kind == "sign":
            op = "Sign" if n.attrs.get("source") == "sign" else "Tanh"
            nodes.append(helper.make_node(op, x, [n.name]))
        elif n.kind in ("maxpool", "avgpool"):
            extra = {"count_include_pad": 1} if n.kind == "avgpool" else {}
            nodes.append(helper.make_node("MaxPool" if n.kind == "maxpool" else "AveragePool",
                                          x, [n.name], kernel_shape=list(n.attrs["kernel"]),
                                          strides=list(n.attrs["stride"]),
                                          pads=list(n.attrs["pads"]), **extra))
        elif n.kind == "reshape":
            inits.append(numpy_helper.from_array(
                np.array((0,) + tuple(n.attrs["shape"]), dtype=np.int64), f"{n.name}::shape"))
            nodes.append(helper.make_node("Reshape", [x[0], f"{n.name}::shape"], [n.name]))
        elif n.kind == "add":
            nodes.append(helper.make_node("Add", x, [n.name]))
        else:
            raise ValueError(f"float node {n.name!r} of kind {n.kind!r} left after the passes")
    out = graph.node(graph.output)
    g = helper.make_graph(
        nodes, "dashc_float",
        [helper.make_tensor_value_info(inp.name, TensorProto.FLOAT, ["N", *inp.shape])],
        [helper.make_tensor_value_info(out.name, TensorProto.FLOAT, ["N", *out.shape])],
        inits)
    model = helper.make_model(g, opset_imports=[helper.make_opsetid("", OPSET)],
                              producer_name="dashc")
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model.SerializeToString()
