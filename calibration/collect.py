"""Range collection: run the float model with onnxruntime's calibrators on a calibration set.

``method`` is one of ``minmax``, ``percentile`` and ``entropy`` (onnxruntime's MinMax,
Percentile and Entropy calibrators); every float tensor of the model gets a range.
"""
from __future__ import annotations

import contextlib
import sys
import tempfile
from pathlib import Path

import numpy as np
import onnx
from onnxruntime.quantization import CalibrationMethod, create_calibrator

from dashc.errors import UsageError

from .readers import ArrayReader
from .ranges import Ranges

METHODS = {"minmax": CalibrationMethod.MinMax, "percentile": CalibrationMethod.Percentile,
           "entropy": CalibrationMethod.Entropy}


def collect_ranges(model_bytes: bytes, x: np.ndarray, method: str = "minmax",
                   batch: int = 64, percentile: float = 99.999) -> Ranges:
    if method not in METHODS:
        raise UsageError(f"unknown calibration method {method!r}; choose one of "
                         f"{', '.join(METHODS)}")
    model = onnx.shape_inference.infer_shapes(onnx.load_from_string(model_bytes))
    input_name = model.graph.input[0].name
    extra = {"percentile": percentile} if method == "percentile" else {}
    with tempfile.TemporaryDirectory(prefix="dashc-calib-") as tmp:
        path = Path(tmp) / "model.onnx"
        onnx.save(model, path)
        calibrator = create_calibrator(path, [], augmented_model_path=str(Path(tmp) / "aug.onnx"),
                                       calibrate_method=METHODS[method],
                                       providers=["CPUExecutionProvider"], extra_options=extra)
        # histogram calibrators stack batches: every batch must have the same size
        size = max(d for d in range(1, min(batch, len(x)) + 1) if len(x) % d == 0)
        with contextlib.redirect_stdout(sys.stderr):
            calibrator.collect_data(ArrayReader(input_name, x, size))
            data = calibrator.compute_data()
    tensors = {}
    for name, td in data.data.items():
        lo, hi = td.range_value
        tensors[name] = (float(np.asarray(lo).min()), float(np.asarray(hi).max()))
    # the input's range is exact whatever the method
    tensors[input_name] = (float(x.min()), float(x.max()))
    meta = {"percentile": percentile} if method == "percentile" else {}
    return Ranges(tensors, method, int(len(x)), meta)
