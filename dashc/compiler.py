"""The compile pipeline: model -> float graph -> ranges -> integer plan.

``load_model`` accepts an ``.onnx`` path, ONNX bytes or ModelProto, a zoo name or a
``torch.nn.Module``; ``compile_graph`` calibrates, quantizes, lowers, bounds and verifies;
the ``auto`` strategy compiles several candidates and keeps the cheapest accurate one.
"""
from __future__ import annotations

import hashlib
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np

from . import __version__, lower, quantize, report, spec
from .errors import InvalidModelError, UsageError
from .frontend import import_onnx
from .frontend.emit import to_onnx
from .frontend.graph import FloatGraph
from .passes import run_passes
from .quantize import Config

Progress = Callable[[str], None]


def _stderr(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


@dataclass
class Imported:
    graph: FloatGraph
    float_model: bytes
    source: str


def load_model(model, *, input_shape=None, opset: int = 18, dynamo: bool = False
               ) -> Imported:
    """Import and normalize any supported model form."""
    from .frontend.torch_export import export_torch

    source = "onnx"
    if hasattr(model, "state_dict") and callable(getattr(model, "forward", None)):
        if input_shape is None:
            raise UsageError("a torch.nn.Module needs input_shape (without the batch axis)")
        data = export_torch(model, tuple(input_shape), opset=opset, dynamo=dynamo)
        source = f"torch ({'dynamo' if dynamo else 'torchscript'} exporter, opset {opset})"
    elif isinstance(model, (str, Path)) and not str(model).endswith(".onnx") \
            and not Path(model).exists():
        data = zoo_path(str(model)).read_bytes()
        source = f"zoo {model}"
    else:
        data = model
    graph = run_passes(import_onnx(data))
    return Imported(graph, to_onnx(graph), source)


def zoo_path(name: str) -> Path:
    try:
        from .models import zoo
    except ImportError:
        raise UsageError(f"model {name!r} is not a file and the model zoo is not "
                         "installed") from None
    if not zoo.is_zoo_name(name):
        raise UsageError(f"model {name!r} is neither an .onnx file nor a zoo name "
                         f"({', '.join(zoo.NAMES)})")
    return Path(zoo.get(name))


def calibrate(imported: Imported, x: np.ndarray, cfg: Config, progress: Progress = _stderr):
    from .calibration import check_input, collect_ranges

    x = check_input(x, imported.graph.input.shape, "calibration data")
    rng = np.random.default_rng(cfg.seed)
    if len(x) > cfg.calib_size:
        x = x[np.sort(rng.choice(len(x), cfg.calib_size, replace=False))]
    progress(f"calibrating on {len(x)} samples ({cfg.calib_method})")
    return collect_ranges(imported.float_model, x, cfg.calib_method), x


def _build(imported: Imported, ranges, cfg: Config, meta: dict):
    return spec.verify(lower.build_plan(imported.graph, ranges.tensors, cfg,
                                        imported.float_model, meta))


def float_logits(float_model: bytes, x: np.ndarray) -> np.ndarray:
    import onnxruntime as ort

    sess = ort.InferenceSession(float_model, providers=["CPUExecutionProvider"])
    name = sess.get_inputs()[0].name
    outs = [sess.run(None, {name: x[i:i + 256]})[0] for i in range(0, len(x), 256)]
    return np.concatenate(outs)


def encode_input(plan, x: np.ndarray) -> np.ndarray:
    """``xi = clip(round(x / input_scale), *input_clip)`` as int64."""
    xi = np.round(np.asarray(x, dtype=np.float64) / plan.input_scale)
    return np.clip(xi, *plan.input_clip).astype(np.int64)


def simulate_logits(plan, x: np.ndarray, batch: int = 128):
    from .runtime.execute import run_plain

    logits, reports = [], []
    for i in range(0, len(x), batch):
        out, rep = run_plain(plan, encode_input(plan, x[i:i + batch]))
        logits.append(out.numpy())
        reports.append(rep)
    return np.concatenate(logits), reports


AUTO_CANDIDATES = (
    {"strategy": "dash", "act_bits": 6},
    {"strategy": "dash", "act_bits": 8},
    {"strategy": "redash", "scale_prime": 31, "act_bits": 6},
    {"strategy": "redash", "scale_prime": 37, "act_bits": 7},
    {"strategy": "redash", "scale_prime": 31, "act_bits": 8},
)


def _auto(imported: Imported, ranges, cfg: Config, x: np.ndarray, y: np.ndarray | None,
          meta: dict, progress: Progress):
    sub = x[:256]
    ref = float_logits(imported.float_model, sub).argmax(1)
    float_acc = float((ref == y[:256]).mean()) if y is not None else None
    tried = []
    for cand in AUTO_CANDIDATES:
        c = cfg.with_(**cand)
        try:
            plan = _build(imported, ranges, c, meta)
        except UsageError:
            continue
        logits, reps = simulate_logits(plan, sub)
        pred = logits.argmax(1)
        overflow = sum(sum(r.counts.values()) for r in reps)
        drop = (float_acc - float((pred == y[:256]).mean())) * 100 if y is not None else \
            (1.0 - float((pred == ref).mean())) * 100
        cost = report.plan_cost(plan, c.digit_weight)["score"]
        ok = drop <= cfg.max_drop and overflow == 0
        tried.append({**cand, "moduli": list(plan.moduli), "cost": round(cost),
                      "drop_points": round(drop, 3), "overflow": overflow, "accepted": ok})
        progress(f"  auto: {cand} moduli {plan.moduli} cost {cost:,.0f} drop {drop:.2f} "
                 f"points{'' if ok else ' (rejected)'}")
        if ok:
            tried[-1]["_plan"] = plan
    if not tried:
        raise UsageError("no automatic candidate fits below 2**62; lower the bit widths")
    accepted = [t for t in tried if t["accepted"]]
    best = min(accepted, key=lambda t: (t["cost"], t["drop_points"])) if accepted else \
        min(tried, key=lambda t: (t["drop_points"], t["cost"]))
    if "_plan" not in best:
        c = cfg.with_(**{k: best[k] for k in ("strategy", "act_bits", "scale_prime")
                         if k in best})
        best["_plan"] = _build(imported, ranges, c, meta)
    plan = best.pop("_plan")
    for t in tried:
        t.pop("_plan", None)
    plan.meta["auto"] = {"candidates": tried, "chosen": {k: v for k, v in best.items()}}
    plan.meta["strategy"] = f"auto -> {best['strategy']}"
    return plan


def compile_graph(imported: Imported, calib_x: np.ndarray, cfg: Config,
                  calib_y: np.ndarray | None = None, ranges=None,
                  progress: Progress = _stderr):
    quantize.check_config(cfg)
    if ranges is None:
        ranges, calib_x = calibrate(imported, calib_x, cfg, progress)
    else:
        from .calibration import check_input
        calib_x = check_input(calib_x, imported.graph.input.shape, "calibration data")
    missing = [n.name for n in imported.graph.nodes if n.name not in ranges]
    if missing:
        raise InvalidModelError(f"calibration recorded no range for {missing}")
    _, cost_model = quantize.gadget_cost_fn()
    meta = {"source_sha256": imported.graph.meta.get("source_sha256"),
            "float_sha256": hashlib.sha256(imported.float_model).hexdigest(),
            "opset": imported.graph.meta.get("opset"), "source": imported.source,
            "dashc_version": __version__, "calibration": ranges.summary(),
            "cost_model": cost_model}
    if cfg.strategy == "auto":
        progress("choosing a strategy")
        return _auto(imported, ranges, cfg, calib_x, calib_y, meta, progress)
    return _build(imported, ranges, cfg, meta)
