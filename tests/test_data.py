"""Data readers (IDX, CIFAR-10 pickles, image trees and archives, digits) and the npz
interchange format, on tiny synthetic files."""
import gzip
import io
import pickle
import tarfile

import numpy as np
import pytest
from PIL import Image

from dashc.errors import DataError
from dashc.models import data


def _idx_bytes(arr: np.ndarray) -> bytes:
    arr = np.ascontiguousarray(arr, dtype=np.uint8)
    head = bytes([0, 0, 0x08, arr.ndim]) + np.array(arr.shape, ">u4").tobytes()
    return head + arr.tobytes()


def _write_idx_set(folder, n_train=12, n_test=7, seed=0, gz=True):
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    out = {}
    for prefix, n in (("train", n_train), ("t10k", n_test)):
        x = rng.integers(0, 256, (n, 28, 28), dtype=np.uint8)
        y = rng.integers(0, 10, n, dtype=np.uint8)
        for kind, arr, nd in (("images", x, 3), ("labels", y, 1)):
            blob = _idx_bytes(arr)
            name = f"{prefix}-{kind}-idx{nd}-ubyte"
            if gz:
                (folder / (name + ".gz")).write_bytes(gzip.compress(blob))
            else:
                (folder / name).write_bytes(blob)
        out[prefix] = (x, y)
    return out


# --------------------------------------------------------------------------- IDX

@pytest.mark.parametrize("gz", [True, False])
def test_idx_round_trip(tmp_path, gz):
    arr = np.arange(2 * 3 * 4, dtype=np.uint8).reshape(2, 3, 4)
    path = tmp_path / ("a.idx.gz" if gz else "a.idx")
    path.write_bytes(gzip.compress(_idx_bytes(arr)) if gz else _idx_bytes(arr))
    out = data.read_idx(path)
    assert out.dtype == np.uint8 and np.array_equal(out, arr)


def test_idx_big_endian_int32(tmp_path):
    arr = np.array([1, -2, 70000], dtype=">i4")
    path = tmp_path / "i.idx"
    path.write_bytes(bytes([0, 0, 0x0C, 1]) + np.array([3], ">u4").tobytes() + arr.tobytes())
    assert data.read_idx(path).tolist() == [1, -2, 70000]


def test_idx_bad_magic_and_truncation(tmp_path):
    bad = tmp_path / "bad.idx"
    bad.write_bytes(b"\x01\x02\x08\x01" + b"\0" * 8)
    with pytest.raises(DataError, match="bad.idx.*magic"):
        data.read_idx(bad)
    short = tmp_path / "short.idx"
    short.write_bytes(_idx_bytes(np.zeros((4, 4), np.uint8))[:-3])
    with pytest.raises(DataError, match="short.idx.*payload"):
        data.read_idx(short)


@pytest.mark.parametrize("gz", [True, False])
def test_load_mnist_from_idx(tmp_path, gz):
    sets = _write_idx_set(tmp_path / "mnist", gz=gz)
    x, y = data.load("mnist", data_dir=tmp_path)
    xt, yt = sets["t10k"]
    assert x.dtype == np.float32 and x.shape == (7, 1, 28, 28)
    assert y.dtype == np.int64 and np.array_equal(y, yt)
    assert np.array_equal(x[:, 0], xt.astype(np.float32) / 255)
    x, y = data.load("mnist", data_dir=tmp_path / "mnist", split="train", limit=5)
    assert x.shape == (5, 1, 28, 28) and np.array_equal(y, sets["train"][1][:5])


def test_load_fashion_mnist_from_env(tmp_path, monkeypatch):
    sets = _write_idx_set(tmp_path / "fashion-mnist", seed=3)
    monkeypatch.setenv(data.ENV_DATA_DIR, str(tmp_path))
    x, y = data.load("fashion-mnist")
    assert len(y) == 7 and np.array_equal(y, sets["t10k"][1])


def test_missing_idx_files(tmp_path):
    with pytest.raises(DataError, match="no mnist IDX files"):
        data.load("mnist", data_dir=tmp_path)
    with pytest.raises(DataError, match="does not exist"):
        data.load("mnist", data_dir=tmp_path / "nowhere")


# --------------------------------------------------------------------------- CIFAR-10 pickles

def _write_cifar_batches(folder, per_batch=4, seed=0):
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True)
    batches = {}
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        x = rng.integers(0, 256, (per_batch, 3072), dtype=np.uint8)
        y = rng.integers(0, 10, per_batch).tolist()
        with open(folder / name, "wb") as fh:
            pickle.dump({b"batch_label": name.encode(), b"data": x, b"labels": y,
                         b"filenames": [b"f.png"] * per_batch}, fh)
        batches[name] = (x, y)
    return batches


def test_load_cifar_pickles(tmp_path):
    batches = _write_cifar_batches(tmp_path / "cifar-10-batches-py")
    x, y = data.load("cifar10", data_dir=tmp_path)
    raw, labels = batches["test_batch"]
    assert x.shape == (4, 3, 32, 32) and x.dtype == np.float32
    assert y.tolist() == labels
    pixel = raw[1].reshape(3, 32, 32)[2, 5, 7] / 255
    expected = (pixel - data.CIFAR10_MEAN[2]) / data.CIFAR10_STD[2]
    assert x[1, 2, 5, 7] == pytest.approx(expected, rel=1e-6)
    raw_train = data.read_raw("cifar10", tmp_path, "train")
    assert raw_train.x.shape == (20, 3, 32, 32) and len(raw_train.files) == 5


def test_cifar_pickle_refuses_code(tmp_path):
    class Evil:
        def __reduce__(self):
            return (print, ("should never run",))

    folder = tmp_path / "cifar-10-batches-py"
    folder.mkdir()
    (folder / "test_batch").write_bytes(pickle.dumps({b"data": Evil(), b"labels": []}))
    with pytest.raises(DataError, match="test_batch.*refusing"):
        data.load("cifar10", data_dir=tmp_path)


def test_cifar_pickle_wrong_shape(tmp_path):
    folder = tmp_path / "cifar-10-batches-py"
    folder.mkdir()
    with open(folder / "test_batch", "wb") as fh:
        pickle.dump({b"data": np.zeros((2, 100), np.uint8), b"labels": [0, 1]}, fh)
    with pytest.raises(DataError, match="uint8 N x 3072"):
        data.load("cifar10", data_dir=tmp_path)


# --------------------------------------------------------------------------- image trees

def _write_tree(root, classes, per_class=2, seed=0):
    """Lossless PNG images in split/class/NNNN.png; returns {split: (x uint8 NCHW, y)}."""
    rng = np.random.default_rng(seed)
    out = {}
    for split in ("train", "test"):
        xs, ys = [], []
        for label, cls in enumerate(classes):
            (root / split / cls).mkdir(parents=True)
            for i in range(per_class):
                img = rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)
                Image.fromarray(img).save(root / split / cls / f"{i:04d}.png")
                xs.append(img.transpose(2, 0, 1))
                ys.append(label)
        out[split] = (np.stack(xs), np.array(ys))
    return out


def test_image_tree_standard_class_order(tmp_path):
    # written in alphabetical order; CIFAR-10's own order must come back
    sets = _write_tree(tmp_path / "cifar10", sorted(data.CIFAR10_CLASSES), per_class=1)
    raw = data.read_raw("cifar10", tmp_path, "test")
    order = [sorted(data.CIFAR10_CLASSES).index(c) for c in data.CIFAR10_CLASSES]
    assert raw.y.tolist() == list(range(10))
    assert np.array_equal(raw.x, sets["test"][0][order])


def test_image_tree_other_classes_alphabetical(tmp_path):
    sets = _write_tree(tmp_path, ["b", "a"], per_class=2)
    raw = data.read_image_tree(tmp_path, "train")
    x, y = sets["train"]
    assert raw.y.tolist() == [0, 0, 1, 1]
    assert np.array_equal(raw.x[:2], x[2:]) and np.array_equal(raw.x[2:], x[:2])


def test_image_archive_matches_tree(tmp_path):
    tree = tmp_path / "tree"
    _write_tree(tree, list(data.CIFAR10_CLASSES[:3]), per_class=2)
    archive = tmp_path / "data" / "cifar10-jpeg.tar.gz"
    archive.parent.mkdir()
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(tree / "train", arcname="train")
        tar.add(tree / "test", arcname="test")
    for split in ("train", "test"):
        a, b = data.read_raw("cifar10", tmp_path / "data", split), data.read_image_tree(tree, split)
        assert np.array_equal(a.x, b.x) and np.array_equal(a.y, b.y)
    # the archive itself may be given as the data location, with a top folder inside
    nested = tmp_path / "nested.tgz"
    with tarfile.open(nested, "w:gz") as tar:
        tar.add(tree, arcname="cifar")
    x, y = data.load("cifar10", data_dir=nested, split="test")
    assert x.shape == (6, 3, 32, 32) and y.tolist() == [0, 0, 1, 1, 2, 2]


def test_image_archive_reads_jpeg(tmp_path):
    buf = io.BytesIO()
    Image.fromarray(np.full((32, 32, 3), 200, np.uint8)).save(buf, format="JPEG")
    archive = tmp_path / "c.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        info = tarfile.TarInfo("test/cat/0000.jpg")
        info.size = len(buf.getvalue())
        tar.addfile(info, io.BytesIO(buf.getvalue()))
    raw = data.read_image_archive(archive, "test")
    assert raw.x.shape == (1, 3, 32, 32) and abs(int(raw.x.mean()) - 200) <= 2


def test_image_archive_errors(tmp_path):
    bad = tmp_path / "bad.tar.gz"
    bad.write_bytes(b"not an archive at all")
    with pytest.raises(DataError, match="bad.tar.gz"):
        data.read_image_archive(bad, "test")
    corrupt = tmp_path / "corrupt.tar.gz"
    with tarfile.open(corrupt, "w:gz") as tar:
        info = tarfile.TarInfo("test/cat/0000.jpg")
        info.size = 5
        tar.addfile(info, io.BytesIO(b"hello"))
    with pytest.raises(DataError, match="cannot decode image"):
        data.read_image_archive(corrupt, "test")


# --------------------------------------------------------------------------- digits

def test_digits(tmp_path):
    x, y = data.load("digits", data_dir=tmp_path)
    assert x.shape == (data.DIGITS_TEST, 1, 8, 8) and x.dtype == np.float32
    assert 0 <= x.min() and x.max() <= 1 and x.max() == 1
    xs, ys = data.load("digits")       # shipped sample == the whole test split
    assert np.array_equal(x, xs) and np.array_equal(y, ys)
    xt, _ = data.load("digits", data_dir=tmp_path, split="train")
    assert len(xt) == 1797 - data.DIGITS_TEST


# --------------------------------------------------------------------------- npz interchange

def _npz(path, **fields):
    np.savez(path, **fields)
    return path


def test_npz_round_trip_and_limit(tmp_path):
    x = np.random.default_rng(0).standard_normal((5, 2, 3, 3)).astype(np.float32)
    y = np.arange(5, dtype=np.int64)
    path = data.save_npz(tmp_path / "d.npz", x, y)
    xl, yl = data.load(path)
    assert np.array_equal(xl, x) and np.array_equal(yl, y)
    xl, yl = data.load(str(path), limit=2)
    assert xl.shape == (2, 2, 3, 3) and yl.tolist() == [0, 1]


@pytest.mark.parametrize("fields, message", [
    (dict(x=np.zeros((2, 1, 2, 2), np.float32)), "missing field.*y"),
    (dict(x=np.zeros((2, 1, 2, 2)), y=np.zeros(2, np.int64)), "field x must be float32.*float64"),
    (dict(x=np.zeros((2, 4), np.float32), y=np.zeros(2, np.int64)), "field x must be N x C x H x W"),
    (dict(x=np.zeros((2, 1, 2, 2), np.float32), y=np.zeros(2, np.int32)), "field y must be int64"),
    (dict(x=np.zeros((2, 1, 2, 2), np.float32), y=np.zeros(3, np.int64)), "field y must have shape"),
    (dict(x=np.full((2, 1, 2, 2), np.nan, np.float32), y=np.zeros(2, np.int64)), "NaN"),
    (dict(x=np.zeros((2, 1, 2, 2), np.float32), y=np.array([0, -1])), "negative"),
])
def test_npz_invalid(tmp_path, fields, message):
    path = _npz(tmp_path / "bad.npz", **fields)
    with pytest.raises(DataError, match=f"bad.npz.*{message}"):
        data.load(path)


def test_npz_unreadable(tmp_path):
    junk = tmp_path / "junk.npz"
    junk.write_bytes(b"garbage")
    with pytest.raises(DataError, match="junk.npz.*not a readable"):
        data.load(junk)
    with pytest.raises(DataError, match="missing.npz: no such data file"):
        data.load(tmp_path / "missing.npz")
    obj = tmp_path / "obj.npz"
    np.savez(obj, x=np.array([object()], dtype=object), y=np.zeros(1, np.int64))
    with pytest.raises(DataError, match="obj.npz"):
        data.load(obj)


def test_load_argument_errors(tmp_path):
    with pytest.raises(DataError, match="unknown data set 'imagenet'"):
        data.load("imagenet")
    with pytest.raises(DataError, match="unknown split"):
        data.load("mnist", split="validation")
    with pytest.raises(DataError, match="limit must be a positive integer"):
        data.load("mnist", limit=0)


# --------------------------------------------------------------------------- shipped samples

@pytest.mark.parametrize("name, shape, size", [
    ("mnist", (1, 28, 28), 500), ("cifar10", (3, 32, 32), 200),
    ("fashion-mnist", (1, 28, 28), 500), ("digits", (1, 8, 8), 360)])
def test_shipped_samples(monkeypatch, name, shape, size):
    monkeypatch.delenv(data.ENV_DATA_DIR, raising=False)
    x, y = data.load(name)
    assert x.dtype == np.float32 and x.shape == (size, *shape)
    assert y.dtype == np.int64 and y.min() >= 0 and y.max() == 9
    assert len(np.unique(y)) == 10
    if name == "cifar10":     # normalised per channel: roughly zero mean, unit spread
        assert np.all(np.abs(x.mean(axis=(0, 2, 3))) < 0.3)
        assert np.all(np.abs(x.std(axis=(0, 2, 3)) - 1) < 0.3)
    else:
        assert x.min() == 0 and x.max() <= 1
    x5, _ = data.load(name, limit=5)
    assert np.array_equal(x5, x[:5])


def test_sample_has_no_train_split(monkeypatch):
    monkeypatch.delenv(data.ENV_DATA_DIR, raising=False)
    with pytest.raises(DataError, match="only the mnist test sample ships"):
        data.load("mnist", split="train")


def test_samples_stay_small():
    total = sum(p.stat().st_size for p in data.SAMPLES_DIR.glob("*.npz"))
    assert total < 4 * 2**20
