"""Train a zoo model reproducibly on the CPU, export it to ONNX and write its model card.

    python -m dashc.models.train NAME --data-dir DIR --epochs E --seed S --out DIR

Trains with Adam and cross-entropy on the training split minus a held-out validation split
(drawn with the seed), keeps the weights of the epoch with the best validation accuracy,
exports ONNX (opset 17, dynamic batch, input ``input``, output ``logits``), checks the ONNX
against torch on the whole test set through onnxruntime, and writes ``NAME.onnx`` and
``NAME.json`` (the model card) into the output folder.  CIFAR-10 training uses the usual
augmentation: random 32x32 crop of the image zero-padded by 4, and a random horizontal flip;
MNIST-style sets can use random shifts of up to 2 pixels (``--augmentation shift``).
"""
from __future__ import annotations

import argparse
import hashlib
import json
import math
import os
import platform
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import onnx
import onnx.numpy_helper
import torch
from torch import nn

from dashc.errors import DashcError, UsageError

from . import architectures, data

OPSET = 17
INPUT_NAME = "input"
OUTPUT_NAME = "logits"
INITS = {"default": "torch defaults",
         "he": "He normal (fan-in, ReLU gain) weights, zero biases"}


# --------------------------------------------------------------------------- helpers

def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def sha256_source(path: Path) -> str:
    """Digest of a data file, or of every file under a data folder (path + content, sorted)."""
    if path.is_file():
        return sha256_file(path)
    digest = hashlib.sha256()
    for f in sorted(p for p in path.rglob("*") if p.is_file()):
        digest.update(f.relative_to(path).as_posix().encode() + b"\0")
        digest.update(bytes.fromhex(sha256_file(f)))
    return digest.hexdigest()


AUGMENTATIONS = {
    "none": "none",
    "crop-flip": "random crop of the image zero-padded by 4, random horizontal flip",
    "shift": "random crop of the image zero-padded by 2 (shifts of up to 2 pixels), no flip",
}


def augment(xb: torch.Tensor, gen: torch.Generator, pad: int = 4,
            flip: bool = True) -> torch.Tensor:
    """Random crop of the zero-padded batch and, if ``flip``, a random horizontal flip."""
    n, c, h, w = xb.shape
    padded = nn.functional.pad(xb, (pad, pad, pad, pad))
    oy = torch.randint(0, 2 * pad + 1, (n,), generator=gen)
    ox = torch.randint(0, 2 * pad + 1, (n,), generator=gen)
    rows = (oy[:, None] + torch.arange(h))[:, None, :, None]
    cols = (ox[:, None] + torch.arange(w))[:, None, None, :]
    out = padded[torch.arange(n)[:, None, None, None], torch.arange(c)[None, :, None, None],
                 rows, cols]
    if flip:
        flipped = torch.rand(n, generator=gen) < 0.5
        out[flipped] = out[flipped].flip(-1)
    return out


def to_input(dataset: str, xb: torch.Tensor) -> torch.Tensor:
    """Raw uint8 batch -> float32 model input, same preprocessing as :func:`data.preprocess`."""
    return torch.from_numpy(data.preprocess(dataset, xb.numpy()))


@torch.no_grad()
def predict(model: nn.Module, dataset: str, x_raw: torch.Tensor, batch: int = 1000) -> np.ndarray:
    model.eval()
    return np.concatenate([model(to_input(dataset, x_raw[i:i + batch])).numpy()
                           for i in range(0, len(x_raw), batch)])


def export_onnx(model: nn.Module, shape: tuple[int, ...], path: Path) -> None:
    model.eval()
    dummy = torch.zeros((1, *shape), dtype=torch.float32)
    with warnings.catch_warnings():       # the TorchScript exporter is deprecated, not broken
        warnings.simplefilter("ignore", DeprecationWarning)
        torch.onnx.export(model, (dummy,), str(path), dynamo=False, opset_version=OPSET,
                          input_names=[INPUT_NAME], output_names=[OUTPUT_NAME],
                          dynamic_axes={INPUT_NAME: {0: "batch"}, OUTPUT_NAME: {0: "batch"}})


def run_onnx(path: Path, x: np.ndarray, threads: int, batch: int = 1000) -> np.ndarray:
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    sess = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
    return np.concatenate([sess.run([OUTPUT_NAME], {INPUT_NAME: x[i:i + batch]})[0]
                           for i in range(0, len(x), batch)])


def sample_check(onnx_path: Path, dataset: str, threads: int = 2) -> dict | None:
    """Accuracy through onnxruntime on the shipped test sample of ``dataset`` (if one ships)."""
    path = data.sample_path(dataset)
    if not path.is_file():
        return None
    x, y = data.read_npz(path)
    acc = float((run_onnx(onnx_path, x, threads).argmax(1) == y).mean())
    return {"file": f"samples/{path.name}", "sha256": sha256_file(path), "images": len(y),
            "accuracy": round(acc, 5)}


def _card_summary(onnx_path: Path) -> dict:
    """The training and accuracy of the model card beside ``onnx_path`` (``NAME.json``)
    when it describes that very file, so that a fine-tuned card keeps its lineage."""
    card_path = onnx_path.with_suffix(".json")
    try:
        card = json.loads(card_path.read_text())
    except (OSError, ValueError):
        return {}
    if card.get("onnx", {}).get("sha256") != sha256_file(onnx_path):
        return {}
    return {"card": {"training": card.get("training"), "accuracy": card.get("accuracy")}}


def load_onnx_weights(model: nn.Module, path: str | Path) -> None:
    """Copy the initializers of an ONNX export of ``model``'s architecture into ``model``
    (matched by parameter name and shape; every parameter must be found)."""
    path = Path(path)
    try:
        graph = onnx.load(str(path)).graph
    except Exception as exc:  # noqa: BLE001 - any unreadable file is the same user error
        raise UsageError(f"{path}: not a readable ONNX model ({exc})") from None
    found = {i.name: onnx.numpy_helper.to_array(i) for i in graph.initializer}
    state = model.state_dict()
    for key, value in state.items():
        if key not in found:
            raise UsageError(f"{path}: no initializer {key!r} for this architecture")
        if tuple(found[key].shape) != tuple(value.shape):
            raise UsageError(f"{path}: initializer {key!r} has shape {found[key].shape}, "
                             f"the architecture needs {tuple(value.shape)}")
        state[key] = torch.from_numpy(np.array(found[key], dtype=np.float32))
    model.load_state_dict(state)


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


# --------------------------------------------------------------------------- training

def train(name: str, data_dir: str | Path, epochs: int, seed: int, out: str | Path, *,
          dataset: str | None = None, batch_size: int = 128, lr: float = 1e-3,
          schedule: str = "constant", val_size: int = 5000, threads: int = 2,
          augmentation: str | None = None, init: str = "default",
          limit_train: int | None = None, batchnorm: bool = False,
          start_from: str | Path | None = None) -> dict:
    """Train the zoo model ``name``; returns the model card (also written to ``out``).

    ``start_from`` names an ONNX export of the same architecture (a zoo file, say) whose
    weights replace the initialisation: training then fine-tunes it, and the starting
    weights count as epoch 0 in the choice of the best validation epoch."""
    architectures.check_name(name)
    if epochs < 1:
        raise UsageError(f"epochs must be at least 1, got {epochs}")
    if init not in INITS:
        raise UsageError(f"unknown initialisation {init!r}; expected {' or '.join(INITS)}")
    if schedule not in ("constant", "onecycle", "cosine"):
        raise UsageError(f"unknown schedule {schedule!r}; expected constant, onecycle or cosine")
    dataset = dataset or architectures.dataset_of(name)
    shape = architectures.input_shape(name)
    if augmentation is None:
        augmentation = "crop-flip" if dataset == "cifar10" else "none"
    if augmentation not in AUGMENTATIONS:
        raise UsageError(f"unknown augmentation {augmentation!r}; expected "
                         f"{', '.join(AUGMENTATIONS)}")
    torch.set_num_threads(threads)
    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(seed)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    started = time.time()

    log(f"{name}: reading {dataset} from {data_dir}")
    train_raw = data.read_raw(dataset, data_dir, "train")
    test_raw = data.read_raw(dataset, data_dir, "test")
    if train_raw.x.shape[1:] != shape:
        raise UsageError(f"model {name} takes {shape} inputs, {dataset} has {train_raw.x.shape[1:]}")
    order = np.random.default_rng(seed).permutation(len(train_raw.x))
    if not 0 < val_size < len(order):
        raise UsageError(f"validation size {val_size} must be between 1 and {len(order) - 1}")
    val_idx, fit_idx = order[:val_size], order[val_size:]
    if limit_train is not None:
        fit_idx = fit_idx[:limit_train]
    x_fit = torch.from_numpy(train_raw.x[np.sort(fit_idx)])
    y_fit = torch.from_numpy(train_raw.y[np.sort(fit_idx)])
    x_val, y_val = torch.from_numpy(train_raw.x[np.sort(val_idx)]), train_raw.y[np.sort(val_idx)]
    x_test, y_test = torch.from_numpy(test_raw.x), test_raw.y
    log(f"{name}: {len(x_fit)} training, {len(x_val)} validation, {len(x_test)} test images")

    model = architectures.build(name)
    if init == "he":
        architectures.he_init(model)
    start = None
    if start_from is not None:
        start = {"file": Path(start_from).name, "sha256": sha256_file(Path(start_from))}
        load_onnx_weights(model, start_from)
        start.update(_card_summary(Path(start_from)))
    if batchnorm:
        model = architectures.with_batchnorm(model)
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    steps_per_epoch = math.ceil(len(x_fit) / batch_size)
    if schedule == "onecycle":
        scheduler = torch.optim.lr_scheduler.OneCycleLR(
            optimizer, max_lr=lr, epochs=epochs, steps_per_epoch=steps_per_epoch)
    elif schedule == "cosine":
        scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, epochs * steps_per_epoch)
    else:
        scheduler = None
    loss_fn = nn.CrossEntropyLoss()

    history, best_val, best_state, best_epoch = [], -1.0, None, 0
    if start is not None:
        best_val = float((predict(model, dataset, x_val).argmax(1) == y_val).mean())
        best_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
        history.append({"epoch": 0, "validation_accuracy": round(best_val, 5)})
        log(f"{name}: starting weights from {start_from}: val {best_val:.4f}")
    for epoch in range(1, epochs + 1):
        t0 = time.time()
        model.train()
        perm = torch.randperm(len(x_fit), generator=gen)
        total_loss, correct = 0.0, 0
        for step in range(steps_per_epoch):
            idx = perm[step * batch_size:(step + 1) * batch_size]
            xb = x_fit[idx]
            if augmentation == "crop-flip":
                xb = augment(xb, gen, pad=4, flip=True)
            elif augmentation == "shift":
                xb = augment(xb, gen, pad=2, flip=False)
            xb, yb = to_input(dataset, xb), y_fit[idx]
            logits = model(xb)
            loss = loss_fn(logits, yb)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            if scheduler is not None:
                scheduler.step()
            total_loss += float(loss.detach()) * len(idx)
            correct += int((logits.argmax(1) == yb).sum())
        val_acc = float((predict(model, dataset, x_val).argmax(1) == y_val).mean())
        row = {"epoch": epoch, "train_loss": round(total_loss / len(x_fit), 5),
               "train_accuracy": round(correct / len(x_fit), 5),
               "validation_accuracy": round(val_acc, 5), "seconds": round(time.time() - t0, 1)}
        history.append(row)
        log(f"{name}: epoch {epoch}/{epochs} loss {row['train_loss']:.4f} "
            f"train {row['train_accuracy']:.4f} val {val_acc:.4f} ({row['seconds']} s)")
        if val_acc > best_val:
            best_val, best_epoch = val_acc, epoch
            best_state = {k: v.detach().clone() for k, v in model.state_dict().items()}

    model.load_state_dict(best_state)
    model.eval()
    fold_diff = None
    if batchnorm:  # back to the plain architecture, computing the same function
        bn_logits = predict(model, dataset, x_val)
        model = architectures.fold_batchnorm(model, name)
        fold_diff = float(np.abs(predict(model, dataset, x_val) - bn_logits).max())
        if fold_diff > 1e-3 * max(1.0, float(np.abs(bn_logits).max())):
            raise DashcError(f"{name}: folding the batch normalisation changed the logits by "
                             f"{fold_diff:.2e}")
        log(f"{name}: batch normalisation folded into the convolutions (max |logit change| "
            f"{fold_diff:.2e} on the validation set)")
    torch_logits = predict(model, dataset, x_test)
    torch_acc = float((torch_logits.argmax(1) == y_test).mean())

    # checked under a temporary name; the pair replaces a previous NAME.onnx/NAME.json at the end
    onnx_path = out / f".{name}.onnx.tmp"
    export_onnx(model, shape, onnx_path)
    x_test_in = data.preprocess(dataset, test_raw.x)
    ort_logits = run_onnx(onnx_path, x_test_in, threads)
    ort_acc = float((ort_logits.argmax(1) == y_test).mean())
    agreement = float((ort_logits.argmax(1) == torch_logits.argmax(1)).mean())
    max_diff = float(np.abs(ort_logits - torch_logits).max())
    if agreement < 0.999 or max_diff > 1e-3:
        raise DashcError(f"{onnx_path}: onnxruntime disagrees with torch (argmax agreement "
                         f"{agreement:.4f}, max |logit difference| {max_diff:.2e})")
    log(f"{name}: test accuracy {ort_acc:.4f} (onnxruntime), {torch_acc:.4f} (torch); "
        f"best validation {best_val:.4f} at epoch {best_epoch}")

    sources = sorted({Path(f) for f in train_raw.files + test_raw.files})
    card = {
        "name": name,
        "architecture": architectures.DESCRIPTIONS[name],
        "parameters": sum(p.numel() for p in model.parameters()),
        "input_shape": ["N", *shape],
        "input_name": INPUT_NAME,
        "output_name": OUTPUT_NAME,
        "dataset": dataset,
        "preprocessing": data.PREPROCESSING[dataset],
        "data_files": {f.name: sha256_source(f) for f in sources} or
                      {"scikit-learn digits": "bundled with scikit-learn"},
        "splits": {"train": len(x_fit), "validation": len(x_val), "test": len(x_test),
                   "validation_selection": f"{val_size} training images drawn with the seed"},
        "training": {
            "optimizer": "Adam", "learning_rate": lr, "schedule": schedule,
            "batch_size": batch_size, "epochs": epochs, "seed": seed,
            "loss": "cross-entropy",
            "augmentation": AUGMENTATIONS[augmentation],
            "activation_training": ("sign forward, tanh derivative backward (straight-through)"
                                    if name.startswith("E") else "n/a"),
            "weights_kept": f"epoch {best_epoch} (best validation accuracy)",
            "initialisation": (f"the weights of {start['file']} (sha256 {start['sha256']})"
                               if start else INITS[init]),
            "normalisation": ("BatchNorm2d after every convolution while training, folded "
                              "into the convolution weights and biases at export (max |logit "
                              f"change| {fold_diff:.1e} on the validation set)"
                              if batchnorm else "none"),
            "threads": threads, "torch": torch.__version__, "python": platform.python_version(),
            "wall_seconds": round(time.time() - started, 1),
            **({"started_from": start} if start else {}),
        },
        "history": history,
        "accuracy": {"test_float": round(ort_acc, 5), "test_float_measured_with": "onnxruntime",
                     "test_torch": round(torch_acc, 5), "validation": round(best_val, 5),
                     "shipped_sample": sample_check(onnx_path, dataset, threads)},
        "onnx": {"file": f"{name}.onnx", "sha256": sha256_file(onnx_path), "opset": OPSET,
                 "max_abs_logit_difference_vs_torch": max_diff,
                 "argmax_agreement_vs_torch": agreement},
    }
    card_tmp = out / f".{name}.json.tmp"
    card_tmp.write_text(json.dumps(card, indent=2) + "\n")
    os.replace(onnx_path, out / f"{name}.onnx")
    os.replace(card_tmp, out / f"{name}.json")
    log(f"{name}: wrote {out / f'{name}.onnx'} and {out / f'{name}.json'}")
    return card


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m dashc.models.train", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("name", help=f"zoo model: {', '.join(architectures.NAMES)}")
    ap.add_argument("--data-dir", help="folder with the data set (default: $DASHC_DATA_DIR)")
    ap.add_argument("--dataset", choices=data.NAMES,
                    help="train on another set of the same input shape (default: the model's)")
    ap.add_argument("--epochs", type=int, required=True)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", required=True, help="output folder for NAME.onnx and NAME.json")
    ap.add_argument("--batch-size", type=int, default=128)
    ap.add_argument("--lr", type=float, default=1e-3, help="Adam learning rate (peak for onecycle)")
    ap.add_argument("--schedule", default="constant", choices=("constant", "onecycle", "cosine"))
    ap.add_argument("--val-size", type=int, default=5000)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--augmentation", choices=tuple(AUGMENTATIONS),
                    help="default: crop-flip for CIFAR-10, none otherwise")
    ap.add_argument("--init", default="default", choices=tuple(INITS),
                    help="weight initialisation (default: torch's)")
    ap.add_argument("--batchnorm", action="store_true",
                    help="train with batch normalisation after every convolution, folded "
                         "into the convolutions at export (CNN models only)")
    ap.add_argument("--start-from", metavar="ONNX",
                    help="fine-tune the weights of this ONNX export of the same architecture")
    args = ap.parse_args(argv)
    data_dir = data.default_data_dir(args.data_dir)
    try:
        if data_dir is None:
            raise UsageError(f"no data: pass --data-dir or set {data.ENV_DATA_DIR}")
        train(args.name, data_dir, args.epochs, args.seed, args.out, dataset=args.dataset,
              batch_size=args.batch_size, lr=args.lr, schedule=args.schedule,
              val_size=args.val_size, threads=args.threads,
              augmentation=args.augmentation, init=args.init, batchnorm=args.batchnorm,
              start_from=args.start_from)
    except DashcError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return exc.exit_code
    return 0


if __name__ == "__main__":
    sys.exit(main())
