"""Micro-benchmark of the garbling runtime against the raw AES bound (not a test).

    .venv/bin/python benchmarks/bench_runtime.py [--wires 100000] [--torch-wires 10000]
        [--repeat 3] [--threads 1] [--gate-threads N] [--model A] [--batches 1,32]
        [--impl compiled,torch]

Prints the raw fixed-key AES-128-ECB throughput through OpenSSL (the physical floor), then
for each gate implementation (``compiled``: numba kernels around OpenSSL, the CPU default;
``torch``: the tensor path that CUDA uses) the garbling and evaluation time of a projection
layer Z3 -> Z2 and Z17 -> Z19, of a multi-target projection Z13 -> (Z2, Z17, Z19, Z23)
against four single projections, and of a layer of mixed half gates (x mod 17 times a bit),
each with its AES block count and the share of the AES bound: (blocks / raw AES rate) /
time.  With ``--model`` it also garbles and evaluates a zoo model end to end (tables
streamed to a file, as the pipeline does) at each batch size and reports the time per
inference.  Times are the best of ``--repeat`` runs after a warm-up; wall time and process
CPU time are both shown (on a shared machine the CPU time is the steadier of the two), with
the load average at the start.
"""
from __future__ import annotations

import argparse
import os
import tempfile
import time

import numpy as np
import torch

from dashc import crt
from dashc.runtime import cpu_kernels, gates, workers
from dashc.runtime.aes import OpenSSLAES
from dashc.runtime.hashing import HASH
from dashc.runtime.rng import insecure_seeded_random


def best(fn, repeat):
    """(best wall seconds, best CPU seconds) over ``repeat`` runs."""
    walls, cpus = [], []
    for _ in range(repeat):
        c0, t0 = time.process_time(), time.perf_counter()
        fn()
        walls.append(time.perf_counter() - t0)
        cpus.append(time.process_time() - c0)
    return min(walls), min(cpus)


def raw_aes_rate(repeat: int, blocks: int = 1 << 20) -> float:
    aes = OpenSSLAES()
    data = np.random.default_rng(0).integers(0, 256, size=(blocks, 16), dtype=np.uint8)
    buf = bytearray(data.size + 16)
    return blocks / best(lambda: aes.encrypt_into(data, buf), max(repeat, 5))[1]


class Table:
    def __init__(self, aes_rate: float):
        self.aes_rate = aes_rate
        self.rows = []

    def measure(self, name, fn, repeat, per=1):
        before = HASH.aes_blocks
        fn()  # warm-up (and compilation); counts the blocks of one run
        blocks = HASH.aes_blocks - before
        wall, cpu = best(fn, repeat)
        self.rows.append((name, wall / per, cpu / per, blocks / per,
                          (blocks / self.aes_rate) / cpu if cpu else float("nan")))

    def print(self):
        print(f"{'operation':52s} {'wall s':>9s} {'CPU s':>9s} {'AES blocks':>11s} "
              f"{'of AES bound':>12s}")
        for name, wall, cpu, blocks, ratio in self.rows:
            print(f"{name:52s} {wall:9.4f} {cpu:9.4f} {blocks:11.0f} {100 * ratio:11.2f}%")


def gate_rows(table: Table, impl: str, W: int, repeat: int):
    rng = insecure_seeded_random(0)
    for p, q in [(3, 2), (17, 19)]:
        a0 = rng.labels(p, (1, W))
        dp, dq = rng.delta(p, 1), rng.delta(q, 1)
        tab = torch.from_numpy(np.arange(p) % q)
        _, tt = gates.garble_proj(a0, p, dp, q, dq, tab, 7, impl=impl)
        active = (a0 + dp[:, None, :]) % p
        table.measure(f"[{impl}] garble proj {W} wires Z{p} -> Z{q}",
                      lambda: gates.garble_proj(a0, p, dp, q, dq, tab, 7, impl=impl), repeat)
        table.measure(f"[{impl}] evaluate proj {W} wires Z{p} -> Z{q}",
                      lambda: gates.eval_proj(active, p, q, tt, 7, impl=impl), repeat)
    p, qs = 13, (2, 17, 19, 23)
    a0, dp = rng.labels(p, (1, W)), rng.delta(p, 1)
    targets = [(q, rng.delta(q, 1), torch.from_numpy(np.arange(p) % q)) for q in qs]
    active = (a0 + dp[:, None, :]) % p
    res = gates.garble_proj_many(a0, p, dp, targets, 7, impl=impl)
    spec = [(q, rows) for (q, _, _), (_, rows) in zip(targets, res)]
    table.measure(f"[{impl}] garble proj_many {W} wires Z{p} -> {len(qs)} targets",
                  lambda: gates.garble_proj_many(a0, p, dp, targets, 7, impl=impl), repeat)
    table.measure(f"[{impl}] garble {len(qs)} x proj {W} wires Z{p} (same targets)",
                  lambda: [gates.garble_proj(a0, p, dp, q, dq, tab, 7 + i, impl=impl)
                           for i, (q, dq, tab) in enumerate(targets)], repeat)
    table.measure(f"[{impl}] evaluate proj_many {W} wires Z{p} -> {len(qs)} targets",
                  lambda: gates.eval_proj_many(active, p, spec, 7, impl=impl), repeat)
    p, q = 17, 2
    a0, b0 = rng.labels(p, (1, W)), rng.labels(q, (1, W))
    dp, dq = rng.delta(p, 1), rng.delta(q, 1)
    r = rng.residues(p, (1, W))
    _, tt = gates.garble_mixed_mul(a0, p, dp, b0, q, dq, r, 9, impl=impl)
    xa, yb = (a0 + 5 * dp[:, None, :]) % p, (b0 + dq[:, None, :]) % q
    table.measure(f"[{impl}] garble mixed half gate {W} wires Z{p} x Z{q}",
                  lambda: gates.garble_mixed_mul(a0, p, dp, b0, q, dq, r, 9, impl=impl),
                  repeat)
    table.measure(f"[{impl}] evaluate mixed half gate {W} wires Z{p} x Z{q}",
                  lambda: gates.eval_mixed_mul(xa, p, yb, q, *tt, 9, impl=impl), repeat)


def model_rows(table: Table, model: str, batches: list[int], repeat: int):
    from dashc import api
    from dashc.compiler import encode_input
    from dashc.runtime import execute
    from dashc.runtime.evaluator import Evaluator
    from dashc.runtime.garbler import Garbler
    from dashc.runtime.tables import TableReader, TableWriter

    plan = api.compile_model(model, "mnist", progress=None)
    print(f"model {model}: moduli {tuple(plan.moduli)}")
    with tempfile.TemporaryDirectory(prefix="dashc-bench-") as tmp:
        path = os.path.join(tmp, "tables.dgt")
        for B in batches:
            x, _ = api.load_data("mnist", limit=B)
            xi = torch.as_tensor(encode_input(plan, x), dtype=torch.int64)
            state = {}

            def garble():
                with TableWriter(path) as writer:
                    g = Garbler(B, writer)
                    execute.run(plan, g)
                state["g"] = g
                state["inputs"] = g.encode([xi])

            def evaluate():
                with TableReader(path, lazy=True) as reader:
                    state["out"] = execute.run(plan, Evaluator(state["inputs"], reader),
                                               batch=B)
                    reader.finish()

            table.measure(f"model {model} batch {B}: garble, per inference", garble, repeat,
                          per=B)
            table.measure(f"model {model} batch {B}: evaluate, per inference", evaluate,
                          repeat, per=B)
            (logits,) = state["g"].decode([state["out"]])
            sim, _ = execute.run_plain(plan, xi)
            assert torch.equal(logits.cpu(), sim.cpu()), "garbled logits differ from plain"


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--wires", type=int, default=100_000, help="wires per gate layer")
    ap.add_argument("--torch-wires", type=int, default=10_000,
                    help="wires per layer for the (slow) torch path")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--threads", type=int, default=1, help="torch intra-op threads")
    ap.add_argument("--gate-threads", type=int, default=None,
                    help="threads per gate (default: the cores available)")
    ap.add_argument("--impl", default=None,
                    help="comma-separated gate implementations (default: compiled,torch)")
    ap.add_argument("--model", default=None, help="also run a zoo model end to end (e.g. A)")
    ap.add_argument("--batches", default="1,32")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    if args.gate_threads is not None:
        workers.set_threads(args.gate_threads)
    impls = (args.impl.split(",") if args.impl else
             (["compiled", "torch"] if cpu_kernels.AVAILABLE else ["torch"]))
    load = os.getloadavg()
    aes_rate = raw_aes_rate(args.repeat)
    print(f"gate threads: {workers.threads()}; torch threads: {torch.get_num_threads()}; "
          f"load average {load[0]:.2f} "
          f"{load[1]:.2f} {load[2]:.2f} on {os.cpu_count()} CPUs; raw AES-128-ECB "
          f"(OpenSSL, preallocated buffer, CPU time): {aes_rate / 1e6:.1f} M blocks/s")
    table = Table(aes_rate)
    for impl in impls:
        gate_rows(table, impl, args.wires if impl == "compiled" else args.torch_wires,
                  args.repeat)
    table.print()
    if args.model:
        table.rows = []
        model_rows(table, args.model, [int(b) for b in args.batches.split(",")], args.repeat)
        table.print()
    print("share of AES bound = (AES blocks / raw AES rate) / CPU time")


if __name__ == "__main__":
    main()
