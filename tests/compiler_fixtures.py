"""Small models and helpers shared by the compiler tests."""
from __future__ import annotations

import numpy as np
import onnx
import torch
from onnx import TensorProto, helper, numpy_helper
from torch import nn


def onnx_model(nodes, inputs, outputs, inits=(), opset=17) -> bytes:
    g = helper.make_graph(nodes, "g", inputs, outputs, list(inits))
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", opset)])
    m.ir_version = 8
    return m.SerializeToString()


def vinfo(name, shape):
    return helper.make_tensor_value_info(name, TensorProto.FLOAT, list(shape))


def init(name, value):
    return numpy_helper.from_array(np.asarray(value), name)


class ResidualNet(nn.Module):
    """Padding, BatchNorm, a residual block, average pooling and global pooling."""

    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(1, 8, 3, padding=1)
        self.bn1 = nn.BatchNorm2d(8)
        self.conv2 = nn.Conv2d(8, 8, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(8)
        self.pool = nn.AvgPool2d(2)
        self.conv3 = nn.Conv2d(8, 16, 3, padding=1)
        self.gap = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(16, 10)
        for bn in (self.bn1, self.bn2):  # non-trivial statistics
            bn.running_mean.uniform_(-0.2, 0.2)
            bn.running_var.uniform_(0.5, 2.0)
            bn.weight.data.uniform_(0.5, 1.5)
            bn.bias.data.uniform_(-0.2, 0.2)

    def forward(self, x):
        y = torch.relu(self.bn1(self.conv1(x)))
        y = torch.relu(y + self.bn2(self.conv2(y)))
        y = self.pool(y)
        y = torch.relu(self.conv3(y))
        y = self.gap(y).flatten(1)
        return self.fc(y)


class MaxPadNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(1, 4, 3, padding=1)
        self.pool = nn.MaxPool2d(3, stride=2, padding=1)
        self.fc = nn.Linear(4 * 4 * 4, 10)

    def forward(self, x):
        return self.fc(self.pool(self.conv(x)).flatten(1))


def digits(n: int = 200) -> tuple[np.ndarray, np.ndarray]:
    from dashc.models import data

    x, y = data.load("digits")
    return x[:n], y[:n]


def mnist(n: int = 200) -> tuple[np.ndarray, np.ndarray]:
    from dashc.models import data

    x, y = data.load("mnist")
    return x[:n], y[:n]


def ort_run(model_bytes: bytes, x: np.ndarray) -> np.ndarray:
    import onnxruntime as ort

    sess = ort.InferenceSession(model_bytes, providers=["CPUExecutionProvider"])
    return sess.run(None, {sess.get_inputs()[0].name: x})[0]


def seeded(module_fn, seed: int = 0):
    torch.manual_seed(seed)
    return module_fn().eval()


__all__ = ["MaxPadNet", "ResidualNet", "digits", "init", "mnist", "onnx", "onnx_model",
           "ort_run", "seeded", "vinfo"]
