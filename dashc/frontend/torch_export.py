"""torch.nn.Module -> ONNX bytes through ``torch.onnx.export`` with an explicit exporter."""
from __future__ import annotations

import contextlib
import io
import sys
import warnings

from ..errors import InvalidModelError, UsageError

DEFAULT_OPSET = 18


def export_torch(module, input_shape: tuple[int, ...], *, opset: int = DEFAULT_OPSET,
                 dynamo: bool = False) -> bytes:
    """Export ``module`` in eval mode for inputs of shape ``(1, *input_shape)``.

    ``dynamo=False`` uses the TorchScript exporter, ``dynamo=True`` the ``torch.export``
    based one (which needs opset 18 or newer)."""
    import torch

    if not isinstance(module, torch.nn.Module):
        raise UsageError(f"expected a torch.nn.Module, got {type(module).__name__}")
    if dynamo and opset < 18:
        raise UsageError(f"the dynamo exporter needs opset >= 18, got {opset}")
    module = module.eval()
    example = torch.zeros((1,) + tuple(int(d) for d in input_shape))
    with warnings.catch_warnings(), torch.no_grad(), contextlib.redirect_stdout(sys.stderr):
        warnings.simplefilter("ignore")
        try:
            if dynamo:
                program = torch.onnx.export(module, (example,), dynamo=True,
                                            opset_version=opset, verbose=False)
                return program.model_proto.SerializeToString()
            buffer = io.BytesIO()
            torch.onnx.export(module, (example,), buffer, dynamo=False, opset_version=opset,
                              input_names=["input"], output_names=["logits"],
                              dynamic_axes={"input": {0: "N"}, "logits": {0: "N"}})
            return buffer.getvalue()
        except Exception as e:  # exporter failures are model problems
            first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            raise InvalidModelError(f"torch.onnx.export failed: {first}") from None
