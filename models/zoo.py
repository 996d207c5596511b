"""The shipped, trained models: ``get(name)`` is the ONNX file, ``card(name)`` its model card.

Zoo names: A, B, C, D, E30, E100 (MNIST) and F, Fsmall (CIFAR-10).  Each card records the
architecture, data set and preprocessing, training settings, the float test accuracy measured
through onnxruntime on the full test set, and the sha256 of the data files and of the ONNX.
"""
from __future__ import annotations

import json
from pathlib import Path

from dashc.errors import UsageError

from .architectures import NAMES, check_name

ZOO_DIR = Path(__file__).resolve().parent / "zoo"

__all__ = ["NAMES", "ZOO_DIR", "available", "card", "get", "is_zoo_name"]


def is_zoo_name(name: str) -> bool:
    """Whether ``name`` is one of the zoo's model names (trained or not)."""
    return name in NAMES


def available() -> tuple[str, ...]:
    """The zoo names whose ONNX file and card ship with this installation."""
    return tuple(n for n in NAMES
                 if (ZOO_DIR / f"{n}.onnx").is_file() and (ZOO_DIR / f"{n}.json").is_file())


def _shipped(name: str, suffix: str) -> Path:
    check_name(name)
    path = ZOO_DIR / f"{name}{suffix}"
    if not path.is_file():
        raise UsageError(f"zoo model {name} is not trained yet (no {path.name} in {ZOO_DIR}); "
                         f"available: {', '.join(available()) or 'none'}")
    return path


def get(name: str) -> Path:
    """Path of the shipped ONNX file of the zoo model ``name``."""
    return _shipped(name, ".onnx")


def card(name: str) -> dict:
    """The model card of the zoo model ``name`` (a dict read from its JSON file)."""
    return json.loads(_shipped(name, ".json").read_text())
