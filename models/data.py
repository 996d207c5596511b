"""Data sets: readers for the standard on-disk formats and the ``.npz`` interchange format.

Every command that takes data accepts either

* an ``.npz`` file with ``x`` (float32, ``N x C x H x W``, already preprocessed as the model
  expects) and ``y`` (int64 labels, ``N``), or
* a built-in name: ``mnist``, ``fashion-mnist``, ``cifar10`` or ``digits``.  With a data
  directory (the ``data_dir`` argument, else the environment variable ``DASHC_DATA_DIR``) the
  name resolves to the full split found there; without one, to the small test sample shipped
  in ``dashc/models/samples``.

Preprocessing of the built-in sets (what the zoo models expect):

* MNIST, Fashion-MNIST: ``x = pixels / 255`` as ``1 x 28 x 28`` (no mean/std normalisation).
* CIFAR-10: ``x = (pixels / 255 - mean) / std`` per channel as ``3 x 32 x 32``, with the
  standard CIFAR-10 training-set statistics ``CIFAR10_MEAN`` and ``CIFAR10_STD``.
* digits (scikit-learn's 8x8 set, values 0..16): ``x = values / 16`` as ``1 x 8 x 8``; the
  last 360 of its 1797 images are the test split, the rest the training split.

Formats understood in a data directory:

* IDX (``train-images-idx3-ubyte``, ``t10k-labels-idx1-ubyte``, ... raw or ``.gz``) for MNIST
  and Fashion-MNIST, in ``DIR/mnist`` (``DIR/fashion-mnist``) or in ``DIR`` itself.
* CIFAR-10 as the python pickle batches (``data_batch_1..5``, ``test_batch``), as an image
  tree (``train/<class>/*.jpg``, ``test/<class>/*.jpg``) or as a ``.tar.gz`` of such a tree,
  read in place: ``DIR/cifar-10-batches-py``, ``DIR/cifar10``, ``DIR/cifar10-jpeg.tar.gz``,
  ``DIR`` itself, or ``DIR`` being the archive.
"""
from __future__ import annotations

import gzip
import io
import os
import pickle
import tarfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from dashc.errors import DataError

NAMES: tuple[str, ...] = ("mnist", "fashion-mnist", "cifar10", "digits")
SPLITS: tuple[str, ...] = ("train", "test")
CIFAR10_CLASSES: tuple[str, ...] = ("airplane", "automobile", "bird", "cat", "deer", "dog",
                                    "frog", "horse", "ship", "truck")
CIFAR10_MEAN: tuple[float, float, float] = (0.4914, 0.4822, 0.4465)
CIFAR10_STD: tuple[float, float, float] = (0.2470, 0.2435, 0.2616)
DIGITS_TEST = 360
SAMPLES_DIR = Path(__file__).resolve().parent / "samples"
ENV_DATA_DIR = "DASHC_DATA_DIR"

PREPROCESSING: dict[str, str] = {
    "mnist": "x = pixels/255, shape 1x28x28, no normalisation",
    "fashion-mnist": "x = pixels/255, shape 1x28x28, no normalisation",
    "cifar10": f"x = (pixels/255 - mean)/std per channel, mean={list(CIFAR10_MEAN)}, "
               f"std={list(CIFAR10_STD)}, shape 3x32x32",
    "digits": "x = values/16 (values 0..16), shape 1x8x8",
}

_IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp")
_ARCHIVE_SUFFIXES = (".tar.gz", ".tgz", ".tar")


@dataclass
class RawSplit:
    """One split of a built-in set before preprocessing: ``x`` uint8 ``N x C x H x W``."""

    x: np.ndarray
    y: np.ndarray
    files: list[Path] = field(default_factory=list)


# --------------------------------------------------------------------------- IDX

_IDX_DTYPES = {0x08: np.uint8, 0x09: np.int8, 0x0B: np.dtype(">i2"), 0x0C: np.dtype(">i4"),
               0x0D: np.dtype(">f4"), 0x0E: np.dtype(">f8")}


def read_idx(path: str | os.PathLike) -> np.ndarray:
    """The array stored in an IDX file (raw or gzip-compressed, by content)."""
    path = Path(path)
    try:
        with open(path, "rb") as fh:
            blob = fh.read()
        if blob[:2] == b"\x1f\x8b":
            blob = gzip.decompress(blob)
    except (OSError, EOFError, gzip.BadGzipFile) as exc:
        raise DataError(f"{path}: cannot read IDX file ({exc})") from None
    if len(blob) < 4 or blob[0] != 0 or blob[1] != 0 or blob[2] not in _IDX_DTYPES:
        raise DataError(f"{path}: not an IDX file (bad magic number)")
    dtype, ndim = np.dtype(_IDX_DTYPES[blob[2]]), blob[3]
    head = 4 + 4 * ndim
    if len(blob) < head:
        raise DataError(f"{path}: truncated IDX header")
    shape = tuple(int(d) for d in np.frombuffer(blob, ">u4", ndim, 4))
    count = int(np.prod(shape, dtype=np.int64))
    if len(blob) - head != count * dtype.itemsize:
        raise DataError(f"{path}: IDX payload has {len(blob) - head} bytes, "
                        f"shape {shape} needs {count * dtype.itemsize}")
    return np.frombuffer(blob, dtype, count, head).reshape(shape).astype(dtype.newbyteorder("="))


def _idx_file(folder: Path, prefix: str, kind: str) -> Path | None:
    ndim = 3 if kind == "images" else 1
    for stem in (f"{prefix}-{kind}-idx{ndim}-ubyte", f"{prefix}-{kind}.idx{ndim}-ubyte"):
        for suffix in ("", ".gz"):
            if (folder / (stem + suffix)).is_file():
                return folder / (stem + suffix)
    return None


def read_idx_split(folder: str | os.PathLike, split: str) -> RawSplit:
    """An MNIST-style split (``train``/``t10k`` IDX image and label files) from ``folder``."""
    folder, prefix = Path(folder), {"train": "train", "test": "t10k"}[split]
    images, labels = _idx_file(folder, prefix, "images"), _idx_file(folder, prefix, "labels")
    if images is None or labels is None:
        raise DataError(f"{folder}: no {prefix}-images-idx3-ubyte[.gz] / "
                        f"{prefix}-labels-idx1-ubyte[.gz] pair")
    x, y = read_idx(images), read_idx(labels)
    if x.ndim != 3 or x.dtype != np.uint8:
        raise DataError(f"{images}: expected uint8 images N x H x W, got {x.dtype} {x.shape}")
    if y.ndim != 1 or len(y) != len(x):
        raise DataError(f"{labels}: expected {len(x)} labels, got shape {y.shape}")
    return RawSplit(x[:, None], y.astype(np.int64), [images, labels])


# --------------------------------------------------------------------------- CIFAR-10 pickles

class _ArrayUnpickler(pickle.Unpickler):
    """Unpickles plain containers and numpy arrays only: a CIFAR batch cannot run code."""

    _ALLOWED = {("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
                ("numpy", "ndarray"), ("numpy", "dtype"), ("_codecs", "encode")}

    def find_class(self, module, name):
        if (module, name) not in self._ALLOWED:
            raise pickle.UnpicklingError(f"refusing to load {module}.{name}")
        return super().find_class(module, name)


def read_cifar_batch(path: str | os.PathLike) -> tuple[np.ndarray, np.ndarray]:
    """One CIFAR-10 python batch: uint8 ``N x 3 x 32 x 32`` images and int64 labels."""
    path = Path(path)
    try:
        with open(path, "rb") as fh:
            batch = _ArrayUnpickler(fh, encoding="bytes").load()
    except (OSError, EOFError, pickle.UnpicklingError, ValueError, TypeError) as exc:
        raise DataError(f"{path}: not a CIFAR-10 python batch ({exc})") from None
    if not isinstance(batch, dict):
        raise DataError(f"{path}: not a CIFAR-10 python batch (no dictionary)")
    batch = {k.decode() if isinstance(k, bytes) else k: v for k, v in batch.items()}
    if "data" not in batch or "labels" not in batch:
        raise DataError(f"{path}: CIFAR-10 batch lacks 'data' or 'labels'")
    data, labels = np.asarray(batch["data"]), np.asarray(batch["labels"], dtype=np.int64)
    if data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3 * 32 * 32:
        raise DataError(f"{path}: 'data' must be uint8 N x 3072, got {data.dtype} {data.shape}")
    if labels.shape != (len(data),):
        raise DataError(f"{path}: 'labels' must hold {len(data)} entries, got {labels.shape}")
    return data.reshape(-1, 3, 32, 32), labels


def read_cifar_batches(folder: str | os.PathLike, split: str) -> RawSplit:
    """The CIFAR-10 ``train`` (``data_batch_1..5``) or ``test`` (``test_batch``) split."""
    folder = Path(folder)
    names = [f"data_batch_{i}" for i in range(1, 6)] if split == "train" else ["test_batch"]
    files = [folder / n for n in names]
    missing = [f.name for f in files if not f.is_file()]
    if missing:
        raise DataError(f"{folder}: missing CIFAR-10 batch file(s) {', '.join(missing)}")
    parts = [read_cifar_batch(f) for f in files]
    return RawSplit(np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts]),
                    files)


# --------------------------------------------------------------------------- image trees

def _class_order(names: set[str]) -> list[str]:
    if names == set(CIFAR10_CLASSES):
        return list(CIFAR10_CLASSES)
    return sorted(names)


def _decode(blob: bytes, where: str) -> np.ndarray:
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(io.BytesIO(blob)) as im:
            return np.asarray(im.convert("RGB"), dtype=np.uint8)
    except (UnidentifiedImageError, OSError) as exc:
        raise DataError(f"{where}: cannot decode image ({exc})") from None


def _stack(entries: dict[tuple[str, str], bytes], origin: Path) -> tuple[np.ndarray, np.ndarray]:
    """Images keyed by (class, file name) -> uint8 N x C x H x W in (class, name) order."""
    classes = _class_order({c for c, _ in entries})
    index = {c: i for i, c in enumerate(classes)}
    keys = sorted(entries, key=lambda k: (index[k[0]], k[1]))
    images = [_decode(entries[k], f"{origin}:{k[0]}/{k[1]}") for k in keys]
    shapes = {im.shape for im in images}
    if len(shapes) != 1:
        raise DataError(f"{origin}: images of different sizes {sorted(shapes)[:3]}")
    x = np.stack(images).transpose(0, 3, 1, 2).copy()
    return x, np.array([index[c] for c, _ in keys], dtype=np.int64)


def read_image_tree(folder: str | os.PathLike, split: str) -> RawSplit:
    """A ``<split>/<class>/*.jpg`` tree (class order: CIFAR-10's if the names match, else
    alphabetical)."""
    root = Path(folder) / split
    files = [p for p in root.glob("*/*") if p.suffix.lower() in _IMAGE_SUFFIXES]
    if not files:
        raise DataError(f"{root}: no images in {split}/<class>/")
    x, y = _stack({(p.parent.name, p.name): p.read_bytes() for p in files}, root)
    return RawSplit(x, y, [Path(folder)])


def read_image_archive(archive: str | os.PathLike, split: str) -> RawSplit:
    """The same tree read directly from a ``.tar``/``.tar.gz`` archive (an optional top
    folder above ``<split>/`` is allowed)."""
    archive = Path(archive)
    entries: dict[tuple[str, str], bytes] = {}
    try:
        with tarfile.open(archive, "r:*") as tar:
            for member in tar:
                parts = member.name.split("/")
                if (member.isfile() and len(parts) >= 3 and parts[-3] == split
                        and Path(parts[-1]).suffix.lower() in _IMAGE_SUFFIXES):
                    entries[(parts[-2], parts[-1])] = tar.extractfile(member).read()
    except (OSError, tarfile.TarError, EOFError) as exc:
        raise DataError(f"{archive}: cannot read archive ({exc})") from None
    if not entries:
        raise DataError(f"{archive}: no images under {split}/<class>/")
    x, y = _stack(entries, archive)
    return RawSplit(x, y, [archive])


# --------------------------------------------------------------------------- digits

def read_digits(split: str) -> RawSplit:
    """scikit-learn's 8x8 digits; values 0..16 as uint8 ``N x 1 x 8 x 8``."""
    from sklearn.datasets import load_digits

    bunch = load_digits()
    x = bunch.images.astype(np.uint8)[:, None]
    y = bunch.target.astype(np.int64)
    cut = len(x) - DIGITS_TEST
    part = slice(0, cut) if split == "train" else slice(cut, None)
    return RawSplit(x[part], y[part], [])


# --------------------------------------------------------------------------- resolution

def _is_archive(path: Path) -> bool:
    return path.is_file() and path.name.lower().endswith(_ARCHIVE_SUFFIXES)


def read_raw(name: str, data_dir: str | os.PathLike, split: str = "test") -> RawSplit:
    """The unpreprocessed ``split`` of the built-in set ``name`` found under ``data_dir``."""
    _check_name_split(name, split)
    if name == "digits":
        return read_digits(split)
    root = Path(data_dir)
    if not root.exists():
        raise DataError(f"data directory {root} does not exist")
    if name in ("mnist", "fashion-mnist"):
        subdirs = [root / name, root / name.replace("-", "_"), root]
        for folder in subdirs:
            if folder.is_dir() and _idx_file(folder, "t10k" if split == "test" else "train",
                                             "images"):
                return read_idx_split(folder, split)
        raise DataError(f"{root}: no {name} IDX files (looked in "
                        f"{', '.join(str(d) for d in subdirs)})")
    # cifar10
    candidates = [root] if root.is_file() else [
        root / "cifar-10-batches-py", root / "cifar10", root / "cifar-10",
        root / "cifar10-jpeg.tar.gz", root / "cifar10.tar.gz", root]
    for cand in candidates:
        if _is_archive(cand):
            return read_image_archive(cand, split)
        if cand.is_dir() and ((cand / "test_batch").is_file() or
                              (cand / "data_batch_1").is_file()):
            return read_cifar_batches(cand, split)
        if cand.is_dir() and (cand / split).is_dir():
            return read_image_tree(cand, split)
    raise DataError(f"{root}: no CIFAR-10 data (python batches, {split}/<class>/ image tree "
                    "or .tar.gz of one)")


def preprocess(name: str, x: np.ndarray) -> np.ndarray:
    """Raw uint8 images of the built-in set ``name`` -> float32 model input (see module doc)."""
    x = np.asarray(x, dtype=np.float32)
    if name == "digits":
        return x / np.float32(16.0)
    x = x / np.float32(255.0)
    if name == "cifar10":
        mean = np.array(CIFAR10_MEAN, np.float32).reshape(1, 3, 1, 1)
        std = np.array(CIFAR10_STD, np.float32).reshape(1, 3, 1, 1)
        x = (x - mean) / std
    return x.astype(np.float32, copy=False)


def _check_name_split(name: str, split: str) -> None:
    if name not in NAMES:
        raise DataError(f"unknown data set {name!r}; built-in names: {', '.join(NAMES)}, "
                        "or an .npz file with x and y")
    if split not in SPLITS:
        raise DataError(f"unknown split {split!r}; expected one of {', '.join(SPLITS)}")


# --------------------------------------------------------------------------- npz interchange

def read_npz(path: str | os.PathLike) -> tuple[np.ndarray, np.ndarray]:
    """``x`` float32 ``N x C x H x W`` and ``y`` int64 ``N`` from an interchange ``.npz``."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: no such data file")
    try:
        with np.load(path, allow_pickle=False) as npz:
            keys = set(npz.files)
            missing = [k for k in ("x", "y") if k not in keys]
            if missing:
                raise DataError(f"{path}: missing field(s) {', '.join(missing)} "
                                f"(found: {', '.join(sorted(keys)) or 'none'})")
            x, y = npz["x"], npz["y"]
    except DataError:
        raise
    except (OSError, ValueError, EOFError) as exc:
        raise DataError(f"{path}: not a readable .npz file ({exc})") from None
    if x.dtype != np.float32:
        raise DataError(f"{path}: field x must be float32, got {x.dtype}")
    if x.ndim != 4:
        raise DataError(f"{path}: field x must be N x C x H x W, got shape {x.shape}")
    if y.dtype != np.int64:
        raise DataError(f"{path}: field y must be int64, got {y.dtype}")
    if y.shape != (x.shape[0],):
        raise DataError(f"{path}: field y must have shape ({x.shape[0]},) to match x, "
                        f"got {y.shape}")
    if not np.isfinite(x).all():
        raise DataError(f"{path}: field x contains NaN or infinite values")
    if (y < 0).any():
        raise DataError(f"{path}: field y contains negative labels")
    return x, y


def save_npz(path: str | os.PathLike, x: np.ndarray, y: np.ndarray) -> Path:
    """Write the interchange format (compressed)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(path, x=np.ascontiguousarray(x, dtype=np.float32),
                        y=np.ascontiguousarray(y, dtype=np.int64))
    return path


def sample_path(name: str) -> Path:
    """The shipped test sample of the built-in set ``name``."""
    _check_name_split(name, "test")
    return SAMPLES_DIR / f"{name}.npz"


def default_data_dir(data_dir: str | os.PathLike | None = None) -> Path | None:
    """``data_dir`` if given, else ``$DASHC_DATA_DIR`` if set, else ``None``."""
    if data_dir is not None:
        return Path(data_dir)
    env = os.environ.get(ENV_DATA_DIR)
    return Path(env) if env else None


def load(spec: str | os.PathLike, data_dir: str | os.PathLike | None = None,
         split: str = "test", limit: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Preprocessed ``(x float32 N x C x H x W, y int64 N)`` from an ``.npz`` path or a
    built-in name (full split under the data directory, else the shipped test sample)."""
    if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int) or limit < 1):
        raise DataError(f"limit must be a positive integer, got {limit!r}")
    spec_str = os.fspath(spec)
    if spec_str in NAMES:
        _check_name_split(spec_str, split)
        root = default_data_dir(data_dir)
        if root is not None:
            raw = read_raw(spec_str, root, split)
            x, y = preprocess(spec_str, raw.x[:limit]), raw.y[:limit]
        else:
            if split != "test":
                raise DataError(f"only the {spec_str} test sample ships with dashc; pass a data "
                                f"directory (or set {ENV_DATA_DIR}) for the {split} split")
            x, y = read_npz(sample_path(spec_str))
    elif spec_str.endswith(".npz") or Path(spec_str).is_file():
        x, y = read_npz(spec_str)
    else:
        raise DataError(f"unknown data set {spec_str!r}; built-in names: {', '.join(NAMES)}, "
                        "or an .npz file with x and y")
    if limit is not None:
        x, y = x[:limit], y[:limit]
    return x, y
