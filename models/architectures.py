"""Torch definitions of the zoo's eight networks.

The layer lists follow the garbled-inference literature (MiniONN, BCM+19, Dash): valid padding
everywhere, pooling replaced by strided convolutions that have no activation after them, and
no normalisation layers, so every layer maps onto integer CRT arithmetic.

MNIST models take ``N x 1 x 28 x 28`` (A, E30 and E100 flatten inside the module); CIFAR-10
models take ``N x 3 x 32 x 32``.  The E models use a sign activation: the forward pass is
exactly ``torch.sign`` (exported to ONNX as ``Sign``, so the exported float model is the
deployed one), and the backward pass uses the derivative of ``tanh`` (a straight-through
estimator), which is how the sign network is trained.
"""
from __future__ import annotations

import torch
from torch import nn

#: zoo name -> (data set, input shape without the batch axis)
INPUTS: dict[str, tuple[str, tuple[int, int, int]]] = {
    "A": ("mnist", (1, 28, 28)),
    "B": ("mnist", (1, 28, 28)),
    "C": ("mnist", (1, 28, 28)),
    "D": ("mnist", (1, 28, 28)),
    "E30": ("mnist", (1, 28, 28)),
    "E100": ("mnist", (1, 28, 28)),
    "F": ("cifar10", (3, 32, 32)),
    "Fsmall": ("cifar10", (3, 32, 32)),
}

#: one-line description of each architecture, recorded in the model cards
DESCRIPTIONS: dict[str, str] = {
    "A": "Linear 784-128, ReLU, Linear 128-128, ReLU, Linear 128-10",
    "B": "Conv 1-5 5x5, ReLU, Conv 5-5 3x3/s3, ReLU, Conv 5-10 3x3, ReLU, Conv 10-10 3x3/s3, "
         "Linear 40-100, ReLU, Linear 100-10",
    "C": "Conv 1-5 4x4/s2, ReLU, Linear 845-100, ReLU, Linear 100-10",
    "D": "Conv 1-16 6x6/s2, ReLU, Conv 16-16 6x6/s2, ReLU, Linear 256-100, ReLU, Linear 100-10",
    "E30": "Linear 784-30, Sign, Linear 30-10",
    "E100": "Linear 784-100, Sign, Linear 100-10",
    "F": "Conv 3-64 3x3, ReLU, Conv 64-64 3x3, ReLU, Conv 64-64 2x2/s2, Conv 64-64 3x3, ReLU, "
         "Conv 64-64 3x3, ReLU, Conv 64-64 2x2/s2, Conv 64-64 3x3, ReLU, Conv 64-64 1x1, ReLU, "
         "Conv 64-16 1x1, ReLU, Linear 144-10",
    "Fsmall": "Conv 3-32 3x3, ReLU, Conv 32-32 3x3, ReLU, Conv 32-32 2x2/s2, Conv 32-64 3x3, "
              "ReLU, Conv 64-64 3x3, ReLU, Conv 64-64 2x2/s2, Conv 64-128 3x3, ReLU, "
              "Conv 128-128 3x3, ReLU, Linear 128-10",
}

NAMES: tuple[str, ...] = tuple(INPUTS)


class _SignTanhGrad(torch.autograd.Function):
    """sign(x) forward, d tanh(x)/dx = 1 - tanh(x)^2 backward."""

    @staticmethod
    def forward(ctx, x):
        ctx.save_for_backward(x)
        return torch.sign(x)

    @staticmethod
    def backward(ctx, grad):
        (x,) = ctx.saved_tensors
        return grad * (1.0 - torch.tanh(x) ** 2)


class Sign(nn.Module):
    """Sign activation.  Training uses the tanh straight-through estimator; inference and ONNX
    export use plain ``torch.sign`` (the ONNX ``Sign`` op)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.training and torch.is_grad_enabled() and not torch.jit.is_tracing():
            return _SignTanhGrad.apply(x)
        return torch.sign(x)


def _conv(cin: int, cout: int, k: int, s: int = 1) -> nn.Conv2d:
    return nn.Conv2d(cin, cout, kernel_size=k, stride=s, padding=0)


def _build_a() -> nn.Sequential:
    return nn.Sequential(nn.Flatten(), nn.Linear(784, 128), nn.ReLU(), nn.Linear(128, 128),
                         nn.ReLU(), nn.Linear(128, 10))


def _build_b() -> nn.Sequential:
    return nn.Sequential(
        _conv(1, 5, 5), nn.ReLU(),          # 24x24
        _conv(5, 5, 3, 3), nn.ReLU(),       # 8x8
        _conv(5, 10, 3), nn.ReLU(),         # 6x6
        _conv(10, 10, 3, 3),                # 2x2
        nn.Flatten(), nn.Linear(40, 100), nn.ReLU(), nn.Linear(100, 10))


def _build_c() -> nn.Sequential:
    return nn.Sequential(
        _conv(1, 5, 4, 2), nn.ReLU(),       # 13x13
        nn.Flatten(), nn.Linear(845, 100), nn.ReLU(), nn.Linear(100, 10))


def _build_d() -> nn.Sequential:
    return nn.Sequential(
        _conv(1, 16, 6, 2), nn.ReLU(),      # 12x12
        _conv(16, 16, 6, 2), nn.ReLU(),     # 4x4
        nn.Flatten(), nn.Linear(256, 100), nn.ReLU(), nn.Linear(100, 10))


def _build_e(hidden: int) -> nn.Sequential:
    return nn.Sequential(nn.Flatten(), nn.Linear(784, hidden), Sign(), nn.Linear(hidden, 10))


def _build_f() -> nn.Sequential:
    return nn.Sequential(
        _conv(3, 64, 3), nn.ReLU(),         # 30
        _conv(64, 64, 3), nn.ReLU(),        # 28
        _conv(64, 64, 2, 2),                # 14
        _conv(64, 64, 3), nn.ReLU(),        # 12
        _conv(64, 64, 3), nn.ReLU(),        # 10
        _conv(64, 64, 2, 2),                # 5
        _conv(64, 64, 3), nn.ReLU(),        # 3
        _conv(64, 64, 1), nn.ReLU(),        # 3
        _conv(64, 16, 1), nn.ReLU(),        # 3
        nn.Flatten(), nn.Linear(144, 10))


def _build_fsmall() -> nn.Sequential:
    return nn.Sequential(
        _conv(3, 32, 3), nn.ReLU(),         # 30
        _conv(32, 32, 3), nn.ReLU(),        # 28
        _conv(32, 32, 2, 2),                # 14
        _conv(32, 64, 3), nn.ReLU(),        # 12
        _conv(64, 64, 3), nn.ReLU(),        # 10
        _conv(64, 64, 2, 2),                # 5
        _conv(64, 128, 3), nn.ReLU(),       # 3
        _conv(128, 128, 3), nn.ReLU(),      # 1
        nn.Flatten(), nn.Linear(128, 10))


_BUILDERS = {
    "A": _build_a, "B": _build_b, "C": _build_c, "D": _build_d,
    "E30": lambda: _build_e(30), "E100": lambda: _build_e(100),
    "F": _build_f, "Fsmall": _build_fsmall,
}


def he_init(model: nn.Module) -> nn.Module:
    """Re-initialise every conv and linear layer with He (Kaiming) normal weights for ReLU,
    fan-in mode, and zero biases; keeps the signal scale through deep plain ReLU stacks."""
    for m in model.modules():
        if isinstance(m, (nn.Conv2d, nn.Linear)):
            nn.init.kaiming_normal_(m.weight, mode="fan_in", nonlinearity="relu")
            nn.init.zeros_(m.bias)
    return model


def check_name(name: str) -> str:
    """``name`` itself if it is a zoo architecture, else a :class:`UsageError` listing them."""
    from dashc.errors import UsageError

    if name not in _BUILDERS:
        raise UsageError(f"unknown zoo model {name!r}; known: {', '.join(NAMES)}")
    return name


def build(name: str) -> nn.Module:
    """A freshly initialised network of the zoo architecture ``name`` (torch's default init)."""
    return _BUILDERS[check_name(name)]()


def dataset_of(name: str) -> str:
    """The built-in data set the zoo model ``name`` is trained on."""
    return INPUTS[check_name(name)][0]


def input_shape(name: str) -> tuple[int, int, int]:
    """``(C, H, W)`` of one input of the zoo model ``name``."""
    return INPUTS[check_name(name)][1]


def with_batchnorm(model: nn.Sequential) -> nn.Sequential:
    """A copy of ``model`` with a BatchNorm2d after every convolution, for training only:
    :func:`fold_batchnorm` turns the trained network back into the plain architecture."""
    layers = []
    for m in model:
        layers.append(m)
        if isinstance(m, nn.Conv2d):
            layers.append(nn.BatchNorm2d(m.out_channels))
    return nn.Sequential(*layers)


@torch.no_grad()
def fold_batchnorm(trained: nn.Sequential, name: str) -> nn.Sequential:
    """The zoo architecture ``name`` computing what ``trained`` (built by
    :func:`with_batchnorm`) computes in eval mode: each BatchNorm's affine map with its
    running statistics is folded into the convolution before it,
    ``w' = w * g / s`` and ``b' = (b - mu) * g / s + beta`` with ``s = sqrt(var + eps)``."""
    plain = build(name)
    folded = []
    layers = list(trained)
    for i, m in enumerate(layers):
        if isinstance(m, nn.Conv2d):
            bn = layers[i + 1]
            if not isinstance(bn, nn.BatchNorm2d):
                raise ValueError(f"layer {i + 1} after a convolution is not a BatchNorm2d")
            scale = bn.weight / torch.sqrt(bn.running_var + bn.eps)
            folded.append((m.weight * scale[:, None, None, None],
                           (m.bias - bn.running_mean) * scale + bn.bias))
        elif isinstance(m, nn.Linear):
            folded.append((m.weight.clone(), m.bias.clone()))
    targets = [m for m in plain if isinstance(m, (nn.Conv2d, nn.Linear))]
    if len(targets) != len(folded):
        raise ValueError(f"{name}: {len(folded)} trained layers for {len(targets)} in the "
                         f"architecture")
    for m, (w, b) in zip(targets, folded):
        if m.weight.shape != w.shape:
            raise ValueError(f"{name}: weight shape {tuple(w.shape)} does not fit "
                             f"{tuple(m.weight.shape)}")
        m.weight.copy_(w)
        m.bias.copy_(b)
    return plain.eval()
