"""Regenerate the small test samples shipped in ``dashc/models/samples``.

    python -m dashc.models.make_samples DATA_DIR [--out DIR]

Each sample is a seeded random subset (indices sorted) of the full test split, preprocessed
and stored in the ``.npz`` interchange format; digits ships its whole test split.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

from dashc.errors import DataError

from . import data

SIZES = {"mnist": 500, "fashion-mnist": 500, "cifar10": 200, "digits": None}
SEED = 0


def make_sample(name: str, data_dir: str | Path, out: str | Path, size: int | None) -> Path:
    raw = data.read_raw(name, data_dir, "test")
    idx = np.arange(len(raw.y))
    if size is not None and size < len(idx):
        idx = np.sort(np.random.default_rng(SEED).choice(len(idx), size, replace=False))
    return data.save_npz(Path(out) / f"{name}.npz", data.preprocess(name, raw.x[idx]), raw.y[idx])


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m dashc.models.make_samples", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("data_dir", help="folder holding the full data sets")
    ap.add_argument("--out", default=str(data.SAMPLES_DIR))
    ap.add_argument("--fashion-dir", help="folder of Fashion-MNIST if not under data_dir")
    args = ap.parse_args(argv)
    for name, size in SIZES.items():
        where = args.fashion_dir if name == "fashion-mnist" and args.fashion_dir else args.data_dir
        try:
            path = make_sample(name, where, args.out, size)
        except DataError as exc:
            print(f"{name}: skipped ({exc})", file=sys.stderr)
            continue
        print(f"{name}: {path} ({path.stat().st_size} bytes)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
