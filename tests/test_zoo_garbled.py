"""Every shipped zoo model garbled and evaluated on real sample images equals the integer
simulation bit for bit, on CPU and (when present) CUDA.  The CIFAR-10 models run on CUDA
only (on the CPU they are covered by the slow marker)."""
import numpy as np
import pytest
import torch

from dashc import api
from dashc.compiler import encode_input
from dashc.models import architectures, zoo
from dashc.pipeline import garbled_logits
from dashc.runtime import execute

SMALL = [m for m in zoo.available() if architectures.dataset_of(m) == "mnist"]
LARGE = [m for m in zoo.available() if architectures.dataset_of(m) == "cifar10"]
CUDA = pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")


def _check(name, device, n):
    dataset = architectures.dataset_of(name)
    plan = api.compile_model(name, dataset, calib_size=64, progress=None)
    x, _ = api.load_data(dataset, limit=n)
    xi = torch.as_tensor(encode_input(plan, x))
    logits, costs = garbled_logits(plan, xi, device)
    sim, _ = execute.run_plain(plan, xi, monitor=False)
    np.testing.assert_array_equal(logits, sim.cpu().numpy())
    assert costs["ciphertexts"] > 0


@pytest.mark.parametrize("device", ["cpu", pytest.param("cuda", marks=[pytest.mark.gpu, CUDA])])
@pytest.mark.parametrize("name", SMALL)
def test_mnist_zoo_model_garbled_equals_simulated(name, device):
    _check(name, device, 2)


@pytest.mark.gpu
@CUDA
@pytest.mark.parametrize("name", LARGE)
def test_cifar_zoo_model_garbled_equals_simulated_on_cuda(name):
    _check(name, "cuda", 1)


@pytest.mark.slow
@pytest.mark.parametrize("name", LARGE)
def test_cifar_zoo_model_garbled_equals_simulated_on_cpu(name):
    _check(name, "cpu", 1)
