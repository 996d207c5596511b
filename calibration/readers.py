"""Calibration data: arrays from an ``.npz`` or a built-in data set, batched for onnxruntime."""
from __future__ import annotations

import numpy as np
from onnxruntime.quantization import CalibrationDataReader

from dashc.errors import DataError


def load_data(spec, data_dir=None, split: str = "test", limit: int | None = None
              ) -> tuple[np.ndarray, np.ndarray]:
    """``(x float32, y int64)`` from an ``.npz`` path or a built-in data set name."""
    from dashc.models import data

    return data.load(spec, data_dir=data_dir, split=split, limit=limit)


def check_input(x: np.ndarray, shape: tuple[int, ...], what: str = "data") -> np.ndarray:
    """``x`` as float32 ``(N, *shape)``; vector models accept images and flatten them."""
    x = np.asarray(x)
    if x.dtype != np.float32:
        x = x.astype(np.float32)
    if x.ndim < 2 or x.shape[0] == 0:
        raise DataError(f"{what}: expected a non-empty batch, got shape {x.shape}")
    if tuple(x.shape[1:]) == tuple(shape):
        return x
    if len(shape) == 1 and int(np.prod(x.shape[1:])) == shape[0]:
        return x.reshape(x.shape[0], shape[0])
    raise DataError(f"{what}: samples of shape {tuple(x.shape[1:])} do not match the model "
                    f"input {tuple(shape)}")


class ArrayReader(CalibrationDataReader):
    """Feeds ``x`` to onnxruntime in batches under the model's input name."""

    def __init__(self, input_name: str, x: np.ndarray, batch: int = 64):
        self.input_name, self.x, self.batch, self.pos = input_name, x, batch, 0

    def get_next(self):
        if self.pos >= len(self.x):
            return None
        chunk = self.x[self.pos:self.pos + self.batch]
        self.pos += self.batch
        return {self.input_name: chunk}

    def rewind(self):
        self.pos = 0
