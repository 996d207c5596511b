"""Converter registry: ONNX op type (and opset) -> converter function.

A converter is registered with ``@converter("Conv")`` (optionally ``since=`` the first opset
it handles) and is called as ``fn(ctx, node, **attributes)``, the ONNX attributes of the node
passed by name.  It returns the float nodes it produces (possibly none) or raises
:class:`NotSupported` naming what it cannot handle.
"""
from __future__ import annotations

from typing import Callable

ConverterFn = Callable[..., list]

_REGISTRY: dict[str, list[tuple[int, ConverterFn]]] = {}


class NotSupported(Exception):
    """Raised by a converter for a node whose attributes or inputs dashc cannot compile."""


def converter(op_type: str, since: int = 1) -> Callable[[ConverterFn], ConverterFn]:
    """Register ``fn`` for ``op_type`` in the default ONNX domain from opset ``since`` on."""

    def register(fn: ConverterFn) -> ConverterFn:
        entries = _REGISTRY.setdefault(op_type, [])
        if any(s == since for s, _ in entries):
            raise ValueError(f"converter for {op_type} since opset {since} registered twice")
        entries.append((since, fn))
        entries.sort(key=lambda e: e[0])
        return fn

    return register


def lookup(op_type: str, opset: int, domain: str = "") -> ConverterFn | None:
    """The converter for ``op_type`` at ``opset`` (the newest one not newer than it)."""
    if domain not in ("", "ai.onnx"):
        return None
    best = None
    for since, fn in _REGISTRY.get(op_type, []):
        if since <= opset:
            best = fn
    return best


def supported_ops() -> list[str]:
    return sorted(_REGISTRY)
