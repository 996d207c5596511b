"""Sliding-window geometry shared by convolution and pooling converters."""
from __future__ import annotations

from .registry import NotSupported


def resolve_pads(size: tuple[int, int], kernel: tuple[int, int], stride: tuple[int, int],
                 pads, auto_pad) -> tuple[int, int, int, int]:
    """ONNX ``pads``/``auto_pad`` -> (top, left, bottom, right)."""
    if isinstance(auto_pad, bytes):
        auto_pad = auto_pad.decode()
    auto_pad = auto_pad or "NOTSET"
    if auto_pad == "NOTSET":
        if pads is None:
            return (0, 0, 0, 0)
        pads = tuple(int(p) for p in pads)
        if len(pads) != 4:
            raise NotSupported(f"pads {pads} (only 2-D windows are supported)")
        return (pads[0], pads[1], pads[2], pads[3])
    if auto_pad == "VALID":
        return (0, 0, 0, 0)
    if auto_pad in ("SAME_UPPER", "SAME_LOWER"):
        begin, end = [], []
        for n, k, s in zip(size, kernel, stride):
            total = max((-(-n // s) - 1) * s + k - n, 0)
            small, large = total // 2, total - total // 2
            begin.append(small if auto_pad == "SAME_UPPER" else large)
            end.append(large if auto_pad == "SAME_UPPER" else small)
        return (begin[0], begin[1], end[0], end[1])
    raise NotSupported(f"auto_pad={auto_pad!r}")


def output_size(size: tuple[int, int], kernel: tuple[int, int], stride: tuple[int, int],
                pads: tuple[int, int, int, int]) -> tuple[int, int]:
    h = (size[0] + pads[0] + pads[2] - kernel[0]) // stride[0] + 1
    w = (size[1] + pads[1] + pads[3] - kernel[1]) // stride[1] + 1
    if h < 1 or w < 1:
        raise NotSupported(f"window {kernel} does not fit the input {size}")
    return (h, w)


def pair(value, default: int, what: str) -> tuple[int, int]:
    if value is None:
        return (default, default)
    value = tuple(int(v) for v in value)
    if len(value) != 2:
        raise NotSupported(f"{what} {value} (only 2-D windows are supported)")
    return value


def require_unit(values, what: str) -> None:
    if values is not None and any(int(v) != 1 for v in values):
        raise NotSupported(f"{what}={list(values)} (only 1 is supported)")
