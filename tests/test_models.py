"""Zoo architectures (shapes, parameter counts, layer lists), the sign activation, training,
ONNX export and the shipped models."""
import gzip
import hashlib
import json
import math

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from torch import nn

from dashc.errors import UsageError
from dashc.models import architectures, data, train, zoo

# (in_channels, out_channels, kernel, stride) of every conv, in order, from the design brief
CONVS = {
    "A": [], "C": [(1, 5, 4, 2)], "E30": [], "E100": [],
    "B": [(1, 5, 5, 1), (5, 5, 3, 3), (5, 10, 3, 1), (10, 10, 3, 3)],
    "D": [(1, 16, 6, 2), (16, 16, 6, 2)],
    "F": [(3, 64, 3, 1), (64, 64, 3, 1), (64, 64, 2, 2), (64, 64, 3, 1), (64, 64, 3, 1),
          (64, 64, 2, 2), (64, 64, 3, 1), (64, 64, 1, 1), (64, 16, 1, 1)],
    "Fsmall": [(3, 32, 3, 1), (32, 32, 3, 1), (32, 32, 2, 2), (32, 64, 3, 1), (64, 64, 3, 1),
               (64, 64, 2, 2), (64, 128, 3, 1), (128, 128, 3, 1)],
}
LINEARS = {
    "A": [(784, 128), (128, 128), (128, 10)], "B": [(40, 100), (100, 10)],
    "C": [(845, 100), (100, 10)], "D": [(256, 100), (100, 10)],
    "E30": [(784, 30), (30, 10)], "E100": [(784, 100), (100, 10)],
    "F": [(144, 10)], "Fsmall": [(128, 10)],
}
RELUS = {"A": 2, "B": 4, "C": 2, "D": 3, "E30": 0, "E100": 0, "F": 7, "Fsmall": 6}


def _count_params(name):
    convs = sum(co * (ci * k * k + 1) for ci, co, k, _ in CONVS[name])
    return convs + sum(o * (i + 1) for i, o in LINEARS[name])


@pytest.mark.parametrize("name", architectures.NAMES)
def test_architecture_matches_design(name):
    model = architectures.build(name)
    convs = [m for m in model.modules() if isinstance(m, nn.Conv2d)]
    linears = [m for m in model.modules() if isinstance(m, nn.Linear)]
    assert [(c.in_channels, c.out_channels, c.kernel_size[0], c.stride[0]) for c in convs] \
        == CONVS[name]
    assert all(c.padding == (0, 0) and c.kernel_size[0] == c.kernel_size[1] for c in convs)
    assert [(m.in_features, m.out_features) for m in linears] == LINEARS[name]
    assert sum(isinstance(m, nn.ReLU) for m in model.modules()) == RELUS[name]
    assert sum(isinstance(m, architectures.Sign) for m in model.modules()) == \
        (1 if name.startswith("E") else 0)
    assert not any(isinstance(m, (nn.BatchNorm2d, nn.MaxPool2d, nn.AvgPool2d, nn.Dropout))
                   for m in model.modules())
    assert sum(p.numel() for p in model.parameters()) == _count_params(name)
    x = torch.zeros(3, *architectures.input_shape(name))
    assert model(x).shape == (3, 10)


@pytest.mark.parametrize("name", ["F", "Fsmall"])
def test_no_activation_after_pooling_convs(name):
    layers = list(architectures.build(name))
    strided = [i for i, layer in enumerate(layers)
               if isinstance(layer, nn.Conv2d) and layer.stride[0] > 1]
    assert len(strided) == 2 and all(isinstance(layers[i + 1], nn.Conv2d) for i in strided)


def test_unknown_architecture():
    with pytest.raises(UsageError, match="unknown zoo model 'G'.*A, B, C"):
        architectures.build("G")


def test_sign_forward_exact_backward_tanh():
    sign = architectures.Sign()
    x = torch.tensor([-2.0, -0.1, 0.0, 0.3, 5.0], requires_grad=True)
    sign.train()
    out = sign(x)
    assert out.tolist() == [-1.0, -1.0, 0.0, 1.0, 1.0]
    out.sum().backward()
    assert torch.allclose(x.grad, 1 - torch.tanh(x.detach()) ** 2)
    sign.eval()
    assert sign(x).tolist() == [-1.0, -1.0, 0.0, 1.0, 1.0]


@pytest.mark.parametrize("name", ["B", "E30", "Fsmall"])
def test_onnx_export_matches_torch(tmp_path, name):
    torch.manual_seed(0)
    model = architectures.build(name).eval()
    path = tmp_path / f"{name}.onnx"
    shape = architectures.input_shape(name)
    train.export_onnx(model, shape, path)
    graph = onnx.load(str(path)).graph
    assert [i.name for i in graph.input] == ["input"] and [o.name for o in graph.output] == ["logits"]
    assert graph.input[0].type.tensor_type.shape.dim[0].dim_param  # dynamic batch
    ops = {n.op_type for n in graph.node}
    assert ("Sign" in ops) == name.startswith("E")
    x = torch.randn(5, *shape)
    got = train.run_onnx(path, x.numpy(), threads=1)
    np.testing.assert_allclose(got, model(x).detach().numpy(), atol=1e-4)


def test_augment_crops_and_flips():
    x = torch.arange(2 * 3 * 32 * 32, dtype=torch.float32).reshape(2, 3, 32, 32)
    gen = torch.Generator().manual_seed(1)
    out = train.augment(x, gen)
    assert out.shape == x.shape
    padded = nn.functional.pad(x, (4, 4, 4, 4))
    for n in range(2):
        windows = [padded[n, :, dy:dy + 32, dx:dx + 32] for dy in range(9) for dx in range(9)]
        assert any(torch.equal(out[n], w) or torch.equal(out[n], w.flip(-1)) for w in windows)


def test_augment_shift_never_flips():
    x = torch.arange(4 * 28 * 28, dtype=torch.uint8).reshape(4, 1, 28, 28)
    out = train.augment(x, torch.Generator().manual_seed(0), pad=2, flip=False)
    padded = nn.functional.pad(x, (2, 2, 2, 2))
    for n in range(4):
        assert any(torch.equal(out[n], padded[n, :, dy:dy + 28, dx:dx + 28])
                   for dy in range(5) for dx in range(5))


# --------------------------------------------------------------------------- training

def _idx(arr):
    arr = np.ascontiguousarray(arr, np.uint8)
    return gzip.compress(bytes([0, 0, 8, arr.ndim]) + np.array(arr.shape, ">u4").tobytes()
                         + arr.tobytes())


@pytest.fixture
def tiny_mnist(tmp_path):
    """A learnable toy set in IDX form: the label is drawn as a bright row."""
    rng = np.random.default_rng(0)
    folder = tmp_path / "mnist"
    folder.mkdir()
    for prefix, n in (("train", 120), ("t10k", 40)):
        y = rng.integers(0, 10, n).astype(np.uint8)
        x = rng.integers(0, 40, (n, 28, 28)).astype(np.uint8)
        x[np.arange(n), 2 + 2 * y, :] = 255
        (folder / f"{prefix}-images-idx3-ubyte.gz").write_bytes(_idx(x))
        (folder / f"{prefix}-labels-idx1-ubyte.gz").write_bytes(_idx(y))
    return tmp_path


def test_train_exports_and_writes_card(tiny_mnist, tmp_path):
    out = tmp_path / "out"
    card = train.train("C", tiny_mnist, epochs=2, seed=3, out=out, batch_size=16, val_size=20,
                       threads=1)
    onnx_path = out / "C.onnx"
    assert sorted(p.name for p in out.iterdir()) == ["C.json", "C.onnx"]
    assert json.loads((out / "C.json").read_text()) == card
    assert card["onnx"]["sha256"] == hashlib.sha256(onnx_path.read_bytes()).hexdigest()
    assert card["onnx"]["opset"] == 17 and card["onnx"]["argmax_agreement_vs_torch"] == 1.0
    assert card["splits"] == {"train": 100, "validation": 20, "test": 40,
                              "validation_selection": "20 training images drawn with the seed"}
    assert set(card["data_files"]) == {"train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz",
                                       "t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"}
    assert card["data_files"]["t10k-labels-idx1-ubyte.gz"] == hashlib.sha256(
        (tiny_mnist / "mnist" / "t10k-labels-idx1-ubyte.gz").read_bytes()).hexdigest()
    assert card["training"]["seed"] == 3 and len(card["history"]) == 2
    assert card["training"]["augmentation"] == "none"
    x, y = data.load("mnist", data_dir=tiny_mnist)
    logits = train.run_onnx(onnx_path, x, threads=1)
    assert card["accuracy"]["test_float"] == round(float((logits.argmax(1) == y).mean()), 5)
    assert card["accuracy"]["test_float"] > 0.5          # the toy task is learnable
    assert card["accuracy"]["shipped_sample"]["images"] == 500


def test_training_is_reproducible(tiny_mnist, tmp_path):
    cards = [train.train("E30", tiny_mnist, epochs=2, seed=7, out=tmp_path / str(i),
                         batch_size=16, val_size=20, threads=1, augmentation="shift")
             for i in range(2)]
    assert cards[0]["training"]["augmentation"] == train.AUGMENTATIONS["shift"]
    assert cards[0]["onnx"]["sha256"] == cards[1]["onnx"]["sha256"]
    assert cards[0]["history"][-1]["train_loss"] == cards[1]["history"][-1]["train_loss"]
    other = train.train("E30", tiny_mnist, epochs=2, seed=8, out=tmp_path / "2",
                        batch_size=16, val_size=20, threads=1)
    assert other["onnx"]["sha256"] != cards[0]["onnx"]["sha256"]


def test_fine_tune_starts_from_onnx_weights(tiny_mnist, tmp_path):
    first = train.train("C", tiny_mnist, epochs=1, seed=3, out=tmp_path / "a", batch_size=16,
                        val_size=20, threads=1)
    start = tmp_path / "a" / "C.onnx"
    # a learning rate of zero keeps the starting weights: the export must equal them
    card = train.train("C", tiny_mnist, epochs=1, seed=4, out=tmp_path / "b", batch_size=16,
                       val_size=20, threads=1, lr=0.0, start_from=start)
    assert card["history"][0] == {"epoch": 0,
                                  "validation_accuracy": first["accuracy"]["validation"]}
    assert first["onnx"]["sha256"] in card["training"]["initialisation"]
    lineage = card["training"]["started_from"]
    assert lineage["sha256"] == first["onnx"]["sha256"] and lineage["file"] == "C.onnx"
    assert lineage["card"] == {"training": first["training"], "accuracy": first["accuracy"]}
    a = {i.name: onnx.numpy_helper.to_array(i) for i in onnx.load(str(start)).graph.initializer}
    b = {i.name: onnx.numpy_helper.to_array(i)
         for i in onnx.load(str(tmp_path / "b" / "C.onnx")).graph.initializer}
    assert a.keys() == b.keys() and all(np.array_equal(a[k], b[k]) for k in a)
    assert card["accuracy"]["test_float"] == first["accuracy"]["test_float"]
    with pytest.raises(UsageError, match="initializer"):
        train.train("A", tiny_mnist, epochs=1, seed=3, out=tmp_path / "c", batch_size=16,
                    val_size=20, threads=1, start_from=start)
    (tmp_path / "junk.onnx").write_bytes(b"not onnx")
    assert train.main(["C", "--data-dir", str(tiny_mnist), "--epochs", "1", "--out",
                       str(tmp_path / "d"), "--start-from", str(tmp_path / "junk.onnx")]
                      ) == UsageError.exit_code


def test_train_cli_errors(tiny_mnist, tmp_path, capsys, monkeypatch):
    monkeypatch.delenv(data.ENV_DATA_DIR, raising=False)
    assert train.main(["C", "--epochs", "1", "--out", str(tmp_path)]) == UsageError.exit_code
    assert "pass --data-dir" in capsys.readouterr().err
    assert train.main(["Q", "--data-dir", str(tiny_mnist), "--epochs", "1",
                       "--out", str(tmp_path)]) == UsageError.exit_code
    assert "unknown zoo model 'Q'" in capsys.readouterr().err
    assert train.main(["F", "--data-dir", str(tiny_mnist), "--epochs", "1",
                       "--out", str(tmp_path)]) == 8   # DataError: no CIFAR-10 there
    assert "no CIFAR-10 data" in capsys.readouterr().err


# --------------------------------------------------------------------------- the zoo

def test_zoo_names_and_errors(tmp_path, monkeypatch):
    assert zoo.NAMES == ("A", "B", "C", "D", "E30", "E100", "F", "Fsmall")
    with pytest.raises(UsageError, match="unknown zoo model 'Z'"):
        zoo.get("Z")
    monkeypatch.setattr(zoo, "ZOO_DIR", tmp_path)
    with pytest.raises(UsageError, match="zoo model D is not trained yet"):
        zoo.get("D")
    with pytest.raises(UsageError, match="not trained yet"):
        zoo.card("F")


def test_zoo_ships_models():
    assert "A" in zoo.available()
    total = sum(p.stat().st_size for p in zoo.ZOO_DIR.iterdir())
    assert total < 20 * 2**20


@pytest.mark.parametrize("name", zoo.available())
def test_shipped_model_runs_on_sample(name, monkeypatch):
    monkeypatch.delenv(data.ENV_DATA_DIR, raising=False)
    path, card = zoo.get(name), zoo.card(name)
    assert card["name"] == name and card["architecture"] == architectures.DESCRIPTIONS[name]
    assert card["onnx"]["sha256"] == hashlib.sha256(path.read_bytes()).hexdigest()
    dataset = architectures.dataset_of(name)
    assert card["dataset"] == dataset and card["preprocessing"] == data.PREPROCESSING[dataset]
    x, y = data.load(dataset)
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    logits = sess.run(["logits"], {"input": x})[0]
    acc = float((logits.argmax(1) == y).mean())
    sample = card["accuracy"]["shipped_sample"]
    assert sample["images"] == len(y)
    assert abs(acc - sample["accuracy"]) <= 1 / len(y) + 1e-9
    full = card["accuracy"]["test_float"]
    assert abs(acc - full) <= 4 * math.sqrt(full * (1 - full) / len(y)) + 0.01


def test_he_init():
    torch.manual_seed(0)
    model = architectures.he_init(architectures.build("F"))
    conv = model[2]                          # Conv 64->64 3x3: fan-in 576
    assert torch.count_nonzero(conv.bias) == 0
    assert float(conv.weight.detach().std()) == pytest.approx(math.sqrt(2 / 576), rel=0.05)


@pytest.mark.parametrize("name", ["B", "Fsmall"])
def test_batchnorm_folds_into_the_plain_architecture(name):
    """Trained-with-BatchNorm network == folded plain network, to float rounding."""
    torch.manual_seed(0)
    bn = architectures.with_batchnorm(architectures.build(name))
    assert sum(isinstance(m, torch.nn.BatchNorm2d) for m in bn) == sum(
        isinstance(m, torch.nn.Conv2d) for m in bn)
    x = torch.randn(8, *architectures.input_shape(name))
    bn.train()
    for _ in range(3):  # non-trivial running statistics
        bn(x * 3 + 1)
    for m in bn:
        if isinstance(m, torch.nn.BatchNorm2d):
            torch.nn.init.uniform_(m.weight, 0.5, 2.0)
            torch.nn.init.uniform_(m.bias, -1.0, 1.0)
    bn.eval()
    plain = architectures.fold_batchnorm(bn, name)
    assert [type(m) for m in plain] == [type(m) for m in architectures.build(name)]
    with torch.no_grad():
        want, got = bn(x), plain(x)
    assert torch.allclose(want, got, rtol=1e-4, atol=1e-4 * float(want.abs().max()))


def test_fold_batchnorm_refuses_a_plain_network():
    with pytest.raises(ValueError, match="not a BatchNorm2d"):
        architectures.fold_batchnorm(architectures.build("C"), "C")


def test_train_with_batchnorm_exports_plain_onnx(tiny_mnist, tmp_path):
    card = train.train("C", tiny_mnist, epochs=2, seed=3, out=tmp_path, batch_size=16,
                       val_size=20, threads=1, batchnorm=True)
    assert card["training"]["normalisation"].startswith("BatchNorm2d")
    import onnx
    ops = {n.op_type for n in onnx.load(str(tmp_path / "C.onnx")).graph.node}
    assert "BatchNormalization" not in ops and "Conv" in ops
    assert card["onnx"]["argmax_agreement_vs_torch"] == 1.0


def test_accuracy_table_on_shipped_samples(tmp_path, monkeypatch, capsys):
    from dashc.models import accuracy_table

    monkeypatch.delenv("DASHC_DATA_DIR", raising=False)
    out, js = tmp_path / "table.md", tmp_path / "rows.json"
    accuracy_table.main(["--models", "E30", "--garbled", "6", "--batch", "4",
                         "--out", str(out), "--json", str(js)])
    (r,) = json.loads(js.read_text())
    assert r["model"] == "E30" and r["n_garbled"] == 6 and r["exact_match"] == 1.0
    assert r["n_test"] > 6 and 0.5 < r["simulated_accuracy"] <= 1.0
    assert r["garbled_accuracy"] == r["simulated_accuracy_on_garbled"]
    assert "| E30 |" in out.read_text() and "shipped samples" in out.read_text()
