"""Model import: ONNX (and torch.nn via ONNX export) -> float graph, via a converter registry."""
from . import (activation, arithmetic, batchnorm, constfold, conv, linear,  # noqa: F401
               pooling, reshape, structural)
from .graph import FloatGraph, FloatNode
from .onnx_import import import_onnx, load_onnx
from .registry import converter, lookup, supported_ops

__all__ = ["FloatGraph", "FloatNode", "converter", "import_onnx", "load_onnx", "lookup",
           "supported_ops"]
