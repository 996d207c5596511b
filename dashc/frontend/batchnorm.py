"""BatchNormalization in inference mode, as a per-channel affine map (folded later)."""
from __future__ import annotations

import numpy as np

from .graph import FloatNode
from .registry import NotSupported, converter


@converter("BatchNormalization")
def batchnorm(ctx, node, epsilon=1e-5, momentum=0.9, spatial=1, is_test=1,
              consumed_inputs=None, training_mode=0):
    if int(training_mode):
        raise NotSupported("training_mode=1")
    if int(spatial) != 1:
        raise NotSupported("spatial=0")
    if any(o for o in node.output[1:]):
        raise NotSupported("running statistics outputs")
    gamma, beta, mean, var = (ctx.const(n) for n in node.input[1:5])
    if any(v is None for v in (gamma, beta, mean, var)):
        raise NotSupported("non-constant statistics")
    scale = gamma / np.sqrt(var + float(epsilon))
    shift = beta - mean * scale
    return [FloatNode(node.output[0], "batchnorm", [node.input[0]], ctx.shape(node.input[0]),
                      params={"scale": scale.astype(np.float64),
                              "shift": shift.astype(np.float64)})]
