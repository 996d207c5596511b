"""Float-graph rewrites run after import, before calibration and quantization.

* ``drop_identity``: Identity / inference-mode Dropout disappear.
* ``fold_bias``: a per-channel constant added after a dense/conv layer joins its bias.
* ``fold_batchnorm``: BatchNormalization after a dense/conv layer is folded into it.
* ``merge_reshapes``: consecutive reshapes collapse; a reshape to the same shape vanishes.
* ``prune``: nodes that do not reach the output are removed.

What a pass cannot fold (a BatchNorm or constant add with no layer before it) is refused with
one :class:`UnsupportedModelError` listing every such node.
"""
from __future__ import annotations

import numpy as np

from .errors import UnsupportedModelError
from .frontend.graph import FloatGraph, FloatNode


def _rewire(graph: FloatGraph, old: str, new: str) -> None:
    for n in graph.nodes:
        n.inputs = [new if i == old else i for i in n.inputs]
    if graph.output == old:
        graph.output = new


def _remove(graph: FloatGraph, node: FloatNode) -> None:
    """Drop a single-input node, its consumers read its input instead."""
    graph.nodes.remove(node)
    _rewire(graph, node.name, node.inputs[0])


def _absorb(graph: FloatGraph, layer: FloatNode, node: FloatNode) -> None:
    """``node`` (consumed into ``layer``) disappears; ``layer`` takes over its name."""
    graph.nodes.remove(node)
    old = layer.name
    layer.name = node.name
    layer.source = f"{layer.source} + {node.source}"
    for n in graph.nodes:
        n.inputs = [layer.name if i == old else i for i in n.inputs]
    if graph.output == old:
        graph.output = layer.name


def drop_identity(graph: FloatGraph) -> None:
    for node in [n for n in graph.nodes if n.kind == "identity"]:
        _remove(graph, node)


def _foldable_layer(graph: FloatGraph, node: FloatNode) -> FloatNode | None:
    prev = graph.by_name().get(node.inputs[0])
    if prev is None or prev.kind not in ("linear", "conv"):
        return None
    if len(graph.consumers(prev.name)) != 1 or graph.output == prev.name:
        return None
    return prev


def fold_bias(graph: FloatGraph) -> list[FloatNode]:
    refused = []
    for node in [n for n in graph.nodes if n.kind == "bias"]:
        layer = _foldable_layer(graph, node)
        if layer is None:
            refused.append(node)
            continue
        layer.params["bias"] = layer.params["bias"] + node.params["bias"]
        _absorb(graph, layer, node)
    return refused


def fold_batchnorm(graph: FloatGraph) -> list[FloatNode]:
    refused = []
    for node in [n for n in graph.nodes if n.kind == "batchnorm"]:
        layer = _foldable_layer(graph, node)
        if layer is None:
            refused.append(node)
            continue
        scale, shift = node.params["scale"], node.params["shift"]
        w = layer.params["weight"]
        layer.params["weight"] = w * scale.reshape((-1,) + (1,) * (w.ndim - 1))
        layer.params["bias"] = layer.params["bias"] * scale + shift
        _absorb(graph, layer, node)
    return refused


def merge_reshapes(graph: FloatGraph) -> None:
    for node in [n for n in graph.nodes if n.kind == "reshape"]:
        src = graph.by_name()[node.inputs[0]]
        if tuple(src.shape) == tuple(node.shape) and graph.output != node.name:
            _remove(graph, node)
        elif src.kind == "reshape" and len(graph.consumers(src.name)) == 1:
            node.inputs = [src.inputs[0]]
            graph.nodes.remove(src)


def prune(graph: FloatGraph) -> None:
    live = {graph.output}
    for n in reversed(graph.nodes):
        if n.name in live:
            live.update(n.inputs)
    graph.nodes = [n for n in graph.nodes if n.name in live or n.kind == "input"]


def run_passes(graph: FloatGraph) -> FloatGraph:
    drop_identity(graph)
    prune(graph)
    refused = fold_bias(graph) + fold_batchnorm(graph)
    if refused:
        listed = "; ".join(f"{n.source or n.name}: no dense or conv layer to fold into"
                           for n in refused)
        raise UnsupportedModelError(f"{len(refused)} unsupported node(s): {listed}")
    merge_reshapes(graph)
    prune(graph)
    if graph.output == graph.input.name:
        raise UnsupportedModelError("model output is its input (no layers)")
    for n in graph.nodes:
        for key, value in n.params.items():
            n.params[key] = np.asarray(value, dtype=np.float64)
    return graph
