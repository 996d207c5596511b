"""ONNX model -> :class:`FloatGraph`, through the converter registry.

The model is checked (``onnx.checker``) and shape-inferred first.  Every node is looked up
in the registry; if any node has no converter or its converter refuses it, the import fails
once with :class:`UnsupportedModelError` listing every such node.
"""
from __future__ import annotations

import hashlib
import inspect
from pathlib import Path

import numpy as np
import onnx
from onnx import numpy_helper, shape_inference

from ..errors import (InvalidModelError, ModelInputError, ModelWeightsError,
                      UnsupportedModelError)
from . import registry
from .graph import FloatGraph, FloatNode
from .registry import NotSupported


def load_onnx(source) -> onnx.ModelProto:
    """Parse an ONNX file path, raw bytes or a ModelProto; errors are InvalidModelError."""
    if isinstance(source, onnx.ModelProto):
        return source
    what = "ONNX bytes"
    if isinstance(source, (str, Path)):
        path = Path(source)
        what = str(path)
        try:
            data = path.read_bytes()
        except OSError as e:
            raise InvalidModelError(f"cannot read model {path}: {e.strerror}") from None
    else:
        data = bytes(source)
    try:
        model = onnx.load_from_string(data)
    except Exception:  # protobuf DecodeError and friends
        raise InvalidModelError(f"{what} is not a valid ONNX model (truncated or corrupt)") \
            from None
    if not model.graph.node:
        raise InvalidModelError(f"{what} is not a valid ONNX model (empty graph)")
    return model


def normalize(model: onnx.ModelProto) -> onnx.ModelProto:
    try:
        onnx.checker.check_model(model)
    except Exception as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise InvalidModelError(f"ONNX checker rejected the model: {first}") from None
    try:
        return shape_inference.infer_shapes(model, strict_mode=True)
    except Exception as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise InvalidModelError(f"ONNX shape inference failed: {first}") from None


def opset_of(model: onnx.ModelProto) -> int:
    for op in model.opset_import:
        if op.domain in ("", "ai.onnx"):
            return int(op.version)
    raise InvalidModelError("model declares no default-domain opset")


def _dims(value_info) -> list:
    t = value_info.type.tensor_type
    if not t.HasField("shape"):
        return []
    return [d.dim_value if d.HasField("dim_value") else (d.dim_param or None)
            for d in t.shape.dim]


class ImportContext:
    """What converters see: constants, shapes (batch axis excluded), the opset."""

    def __init__(self, model: onnx.ModelProto):
        self.opset = opset_of(model)
        self.consts: dict[str, np.ndarray] = {}
        self.shapes: dict[str, tuple[int, ...]] = {}
        self.inferred: dict[str, tuple[int, ...]] = {}
        for vi in list(model.graph.value_info) + list(model.graph.output):
            dims = _dims(vi)
            if dims and all(isinstance(d, int) and d > 0 for d in dims[1:]):
                self.inferred[vi.name] = tuple(int(d) for d in dims[1:])

    def const(self, name: str) -> np.ndarray | None:
        return self.consts.get(name)

    def set_const(self, name: str, value: np.ndarray) -> None:
        self.consts[name] = np.asarray(value)

    def shape(self, name: str) -> tuple[int, ...]:
        if name in self.shapes:
            return self.shapes[name]
        if name in self.inferred:
            return self.inferred[name]
        raise NotSupported(f"tensor {name!r} of unknown shape")


def _attributes(node: onnx.NodeProto) -> dict:
    out = {}
    for a in node.attribute:
        v = onnx.helper.get_attribute_value(a)
        if isinstance(v, bytes):
            v = v.decode()
        out[a.name] = v
    return out


def _label(node: onnx.NodeProto) -> str:
    return f"{node.name or node.output[0]!r} ({node.op_type})"


def _check_finite(name: str, value: np.ndarray) -> None:
    if value.dtype.kind == "f" and not np.all(np.isfinite(value)):
        bad = int(np.size(value) - np.count_nonzero(np.isfinite(value)))
        raise ModelWeightsError(f"weight {name!r} holds {bad} NaN or infinite value(s)")


def _input_node(model: onnx.ModelProto, ctx: ImportContext) -> FloatNode:
    initializers = {t.name for t in model.graph.initializer}
    inputs = [vi for vi in model.graph.input if vi.name not in initializers]
    if len(inputs) != 1:
        raise UnsupportedModelError(f"model has {len(inputs)} inputs; dashc needs exactly one")
    vi = inputs[0]
    elem = vi.type.tensor_type.elem_type
    if elem != onnx.TensorProto.FLOAT:
        raise ModelInputError(f"model input {vi.name!r} is not float32")
    dims = _dims(vi)
    if len(dims) not in (2, 4):
        raise ModelInputError(f"model input {vi.name!r} has rank {len(dims)}; dashc needs "
                                "N×F (rank 2) or N×C×H×W (rank 4)")
    if not all(isinstance(d, int) and d > 0 for d in dims[1:]):
        raise ModelInputError(f"model input {vi.name!r} has dynamic dimensions {dims[1:]}")
    shape = tuple(int(d) for d in dims[1:])
    ctx.shapes[vi.name] = shape
    return FloatNode(vi.name, "input", [], shape, source=f"{vi.name!r} (graph input)")


def import_onnx(source) -> FloatGraph:
    """Check, shape-infer and convert an ONNX model (path, bytes or ModelProto)."""
    raw = load_onnx(source)
    digest = hashlib.sha256(raw.SerializeToString()).hexdigest()
    model = normalize(raw)
    ctx = ImportContext(model)
    for t in model.graph.initializer:
        value = numpy_helper.to_array(t)
        _check_finite(t.name, value)
        ctx.set_const(t.name, value)
    for node in model.graph.node:
        if node.op_type == "Constant":
            for a in node.attribute:
                if a.type == onnx.AttributeProto.TENSOR:
                    _check_finite(node.output[0], numpy_helper.to_array(a.t))

    missing = [(node, "no converter") for node in model.graph.node
               if registry.lookup(node.op_type, ctx.opset, node.domain) is None]
    if missing:
        _refuse(missing)

    nodes = [_input_node(model, ctx)]
    refused: list[tuple[onnx.NodeProto, str]] = []
    for node in model.graph.node:
        fn = registry.lookup(node.op_type, ctx.opset, node.domain)
        attrs = _attributes(node)
        params = inspect.signature(fn).parameters
        unknown = sorted(set(attrs) - set(params))
        try:
            if unknown:
                raise NotSupported(f"attribute(s) {', '.join(unknown)}")
            produced = fn(ctx, node, **attrs)
        except NotSupported as e:
            refused.append((node, str(e)))
            continue
        for f in produced:
            f.source = _label(node)
            ctx.shapes[f.name] = f.shape
        nodes.extend(produced)
    if refused:
        _refuse(refused)

    if len(model.graph.output) != 1:
        raise UnsupportedModelError(f"model has {len(model.graph.output)} outputs; dashc "
                                    "needs exactly one")
    output = model.graph.output[0].name
    if output not in ctx.shapes:
        raise UnsupportedModelError(f"model output {output!r} is a constant")
    return FloatGraph(nodes, output, ctx.opset,
                      meta={"source_sha256": digest, "opset": ctx.opset,
                            "producer": f"{raw.producer_name} {raw.producer_version}".strip()})


def _refuse(items: list[tuple[onnx.NodeProto, str]]) -> None:
    listed = "; ".join(f"{_label(n)}: {why}" for n, why in items)
    raise UnsupportedModelError(
        f"{len(items)} unsupported node(s): {listed}. Supported ops: "
        f"{', '.join(registry.supported_ops())}")
