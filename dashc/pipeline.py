"""``dashc eval``: the whole ladder in one process, float -> simulated -> garbled.

For each batch of ``batch`` samples the garbler garbles ``batch`` fresh circuits (one per
sample, streamed to a temporary table file), encodes the inputs, the evaluator evaluates the
circuits from the file, and the garbler decodes and authenticates the outputs.  The decoded
logits are compared element by element with the exact integer simulation.
"""
from __future__ import annotations

import tempfile
import time
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from .compiler import encode_input, float_logits
from .ir import Plan
from .runtime import execute
from .runtime.evaluator import Evaluator
from .runtime.garbler import Garbler
from .runtime.hashing import HASH
from .runtime.tables import TableReader, TableWriter, digit_bytes

Progress = Callable[[str], None]


def label_bytes(t) -> int:
    """Bytes of a CrtTensor of labels as stored (compact digits)."""
    return sum(lab.digits.numel() * digit_bytes(q) for q, lab in t.parts.items())


def _sync(device) -> None:
    """Wait for queued device work, so that wall-clock phases are honest on CUDA."""
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize(device)


def garbled_logits(plan: Plan, xi, device: str = "cpu", workdir: str | None = None,
                   on_garble=None, on_evaluate=None) -> tuple[np.ndarray, dict]:
    """Garble ``len(xi)`` circuits, evaluate them on ``xi``, decode; logits and costs.

    ``on_garble`` / ``on_evaluate`` are passed to :func:`execute.run` as ``on_node`` hooks
    (the benchmark times layers with them); each is first called with ``(None, None)`` when
    its run starts."""
    batch = len(xi)
    with tempfile.TemporaryDirectory(dir=workdir, prefix="dashc-") as tmp:
        path = Path(tmp) / "tables.dgt"
        b0, t0 = HASH.aes_blocks, time.perf_counter()
        with TableWriter(path) as writer:
            garbler = Garbler(batch, writer, device=device)
            if on_garble:
                on_garble(None, None)
            execute.run(plan, garbler, on_node=on_garble, batch=batch)
            _sync(device)
        b1, t1 = HASH.aes_blocks, time.perf_counter()
        inputs = garbler.encode([torch.as_tensor(xi, dtype=torch.int64)])
        _sync(device)
        t2 = time.perf_counter()
        with TableReader(path, lazy=True) as reader:
            evaluator = Evaluator(inputs, reader, device=device)
            if on_evaluate:
                on_evaluate(None, None)
            outputs = execute.run(plan, evaluator, on_node=on_evaluate, batch=batch)
            reader.finish()
        _sync(device)
        b2, t3 = HASH.aes_blocks, time.perf_counter()
        (logits,) = garbler.decode([outputs])
        t4 = time.perf_counter()
        costs = {"garble_s": t1 - t0, "encode_s": t2 - t1, "evaluate_s": t3 - t2,
                 "decode_s": t4 - t3, "tables": path.stat().st_size,
                 "input_labels": label_bytes(inputs[0]), "output_labels": label_bytes(outputs),
                 "ciphertexts": writer.stats.ciphertexts,
                 "garble_aes_blocks": b1 - b0, "evaluate_aes_blocks": b2 - b1}
    return logits.cpu().numpy(), costs


def eval_plan(plan: Plan, x: np.ndarray, y: np.ndarray | None, batch: int = 32,
              device: str = "cpu", progress: Progress | None = None) -> dict:
    """Float, simulated and garbled accuracy side by side, with timings and bytes."""
    n = len(x)
    xi = encode_input(plan, x)
    float_pred = float_logits(plan.float_model, x).reshape(n, -1).argmax(1)
    sim_pred, garbled_pred, exact = [], [], []
    totals = {"garble_s": 0.0, "encode_s": 0.0, "evaluate_s": 0.0, "decode_s": 0.0,
              "tables": 0, "input_labels": 0, "output_labels": 0, "ciphertexts": 0}
    overflow = 0
    for i in range(0, n, batch):
        chunk = xi[i:i + batch]
        sim, report = execute.run_plain(plan, chunk, device=device)
        sim = sim.cpu().numpy()
        overflow += report.n_samples
        logits, costs = garbled_logits(plan, chunk, device=device)
        for k in totals:
            totals[k] += costs[k]
        sim_pred.append(sim.reshape(len(chunk), -1).argmax(1))
        garbled_pred.append(logits.reshape(len(chunk), -1).argmax(1))
        exact.append((logits.reshape(len(chunk), -1) == sim.reshape(len(chunk), -1)).all(1))
        if progress:
            done = min(i + batch, n)
            progress(f"  garbled {done}/{n}  (garble {totals['garble_s']:.2f}s, "
                     f"evaluate {totals['evaluate_s']:.2f}s)")
    sim_pred, garbled_pred = np.concatenate(sim_pred), np.concatenate(garbled_pred)
    exact = np.concatenate(exact)

    def acc(pred):
        return None if y is None else float((pred == y[:n]).mean())

    return {
        "n": int(n), "batch": int(batch), "device": str(device),
        "moduli": [int(q) for q in plan.moduli],
        "float_accuracy": acc(float_pred), "simulated_accuracy": acc(sim_pred),
        "garbled_accuracy": acc(garbled_pred),
        "agreement": float((sim_pred == float_pred).mean()),
        "exact_match": float(exact.mean()),
        "overflow_samples": int(overflow),
        "timings": {k: totals[k] for k in ("garble_s", "encode_s", "evaluate_s", "decode_s")},
        "timings_per_inference": {k: totals[k] / n for k in
                                  ("garble_s", "encode_s", "evaluate_s", "decode_s")},
        "bytes": {k: int(totals[k]) for k in ("tables", "input_labels", "output_labels")},
        "bytes_per_inference": {k: int(totals[k]) // n
                                for k in ("tables", "input_labels", "output_labels")},
        "ciphertexts_per_inference": int(totals["ciphertexts"]) // n,
    }
