"""``Ranges``: the calibrated value range of every tensor of a float model, as JSON."""
from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from dashc.errors import DataError

FORMAT = "dashc-ranges"
VERSION = 1


@dataclass
class Ranges:
    """``tensors[name] = (min, max)`` over the calibration set."""

    tensors: dict[str, tuple[float, float]]
    method: str
    n: int
    meta: dict[str, Any] = field(default_factory=dict)

    def __getitem__(self, name: str) -> tuple[float, float]:
        return self.tensors[name]

    def __contains__(self, name: str) -> bool:
        return name in self.tensors

    def get(self, name: str, default=None):
        return self.tensors.get(name, default)

    def amax(self, name: str) -> float:
        lo, hi = self.tensors[name]
        return max(abs(lo), abs(hi))

    def summary(self) -> dict[str, Any]:
        return {"method": self.method, "n": self.n, "tensors": len(self.tensors), **self.meta}

    def to_json(self) -> str:
        return json.dumps({"format": FORMAT, "version": VERSION, "method": self.method,
                           "n": self.n, "meta": self.meta,
                           "tensors": {k: [lo, hi] for k, (lo, hi) in self.tensors.items()}},
                          indent=1, sort_keys=True)

    @classmethod
    def from_json(cls, text: str, where: str = "ranges") -> "Ranges":
        try:
            d = json.loads(text)
            if d.get("format") != FORMAT:
                raise ValueError("not a dashc ranges file")
            if int(d["version"]) > VERSION:
                raise ValueError(f"version {d['version']} is newer than supported ({VERSION})")
            tensors = {str(k): (float(v[0]), float(v[1])) for k, v in d["tensors"].items()}
            if not all(math.isfinite(a) and math.isfinite(b) and a <= b
                       for a, b in tensors.values()):
                raise ValueError("ranges must be finite with min <= max")
            return cls(tensors, str(d["method"]), int(d["n"]), dict(d.get("meta", {})))
        except (ValueError, KeyError, TypeError, IndexError) as e:
            raise DataError(f"{where}: invalid calibration ranges ({e})") from None

    def save(self, path) -> Path:
        path = Path(path)
        path.write_text(self.to_json())
        return path

    @classmethod
    def load(cls, path) -> "Ranges":
        try:
            text = Path(path).read_text()
        except OSError as e:
            raise DataError(f"{path}: cannot read ranges ({e.strerror})") from None
        return cls.from_json(text, str(path))
