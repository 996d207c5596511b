"""``dashc bench``: garble / encode / evaluate / decode timings per layer and in total.

Each run garbles ``batch`` fresh circuits (tables streamed to a temporary file, as in
deployment), encodes random valid inputs (gadgets never branch on values, so costs do not
depend on them), evaluates and decodes, and checks the decoded logits against the
simulation.  Reported figures are medians over ``repeat`` runs after one warm-up run (which
also compiles the CPU kernels).  The raw fixed-key AES throughput is measured in the same
process, and every phase is also given as the share of that bound its AES blocks represent.
"""
from __future__ import annotations

import statistics
import threading
import time
from typing import Callable

import numpy as np
import torch

from .ir import Plan
from .pipeline import garbled_logits
from .runtime import execute, workers

Progress = Callable[[str], None]


class PeakRSS:
    """Samples the process's resident set size in a background thread."""

    def __init__(self, interval: float = 0.005):
        self.interval = interval
        self.peak = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    @staticmethod
    def current() -> int:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * 4096

    def _run(self):
        while not self._stop.is_set():
            self.peak = max(self.peak, self.current())
            time.sleep(self.interval)

    def __enter__(self):
        self.peak = self.current()
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, self.current())


def raw_aes_rate(blocks: int = 1 << 20, repeat: int = 5) -> float:
    """Blocks per second of fixed-key AES-128-ECB through OpenSSL (CPU time, best run)."""
    from .runtime.aes import OpenSSLAES

    aes = OpenSSLAES()
    data = np.random.default_rng(0).integers(0, 256, size=(blocks, 16), dtype=np.uint8)
    buf = bytearray(data.size + 16)
    best = float("inf")
    for _ in range(repeat):
        c0 = time.process_time()
        aes.encrypt_into(data, buf)
        best = min(best, time.process_time() - c0)
    return blocks / best


def raw_device_aes_rate(device: str, blocks: int = 1 << 22, repeat: int = 5) -> float:
    """Blocks per second of the tensor AES-128 on ``device`` (wall time, best run)."""
    from .runtime.aes import TorchAES

    aes = TorchAES()
    data = torch.randint(0, 256, (blocks, 16), dtype=torch.uint8, device=device)
    aes.encrypt(data[:1024])
    best = float("inf")
    for _ in range(repeat):
        torch.cuda.synchronize(device)
        t0 = time.perf_counter()
        aes.encrypt(data)
        torch.cuda.synchronize(device)
        best = min(best, time.perf_counter() - t0)
    return blocks / best


class _LayerClock:
    """An ``on_node`` hook adding the wall time since the previous node (or since the start
    of the run, signalled by ``node is None``) to that node; on CUDA it waits for the
    node's queued kernels first."""

    def __init__(self, device: str = "cpu"):
        self.per_node: dict[str, float] = {}
        self.cuda = torch.device(device).type == "cuda"
        self.last = time.perf_counter()

    def __call__(self, node, _value):
        if self.cuda:
            torch.cuda.synchronize()
        now = time.perf_counter()
        if node is not None:
            self.per_node[node.name] = self.per_node.get(node.name, 0.0) + now - self.last
        self.last = now


def one_run(plan: Plan, xi: torch.Tensor, device: str, workdir: str | None = None) -> dict:
    garble_clock, evaluate_clock = _LayerClock(device), _LayerClock(device)
    logits, costs = garbled_logits(plan, xi, device, workdir, on_garble=garble_clock,
                                   on_evaluate=evaluate_clock)
    return {**costs, "table_bytes": costs["tables"], "garble_nodes": garble_clock.per_node,
            "evaluate_nodes": evaluate_clock.per_node, "logits": torch.from_numpy(logits)}


def bench_plan(plan: Plan, batch: int = 1, device: str = "cpu", repeat: int = 3,
               seed: int = 0, progress: Progress | None = None) -> dict:
    from .runtime.counter import predict

    say = progress or (lambda _msg: None)
    rng = np.random.default_rng(seed)
    lo, hi = plan.input_clip
    xi = torch.from_numpy(rng.integers(lo, hi + 1, size=(batch, *plan.input_node.shape)))
    expected, _ = execute.run_plain(plan, xi, monitor=False)
    say("measuring raw AES throughput")
    aes_rate = raw_aes_rate()
    cuda = torch.device(device).type == "cuda"
    device_aes_rate = raw_device_aes_rate(device) if cuda else None
    say("warm-up run")
    one_run(plan, xi, device)
    runs = []
    if cuda:
        torch.cuda.reset_peak_memory_stats(device)
    with PeakRSS() as mem:
        for i in range(repeat):
            runs.append(one_run(plan, xi, device))
            say(f"  run {i + 1}/{repeat}: garble {runs[-1]['garble_s']:.3f} s, evaluate "
                f"{runs[-1]['evaluate_s']:.3f} s")
    exact = all(torch.equal(r["logits"].cpu(), expected) for r in runs)

    def med(key):
        return statistics.median(r[key] for r in runs)

    costs = {c.name: c for c in predict(plan).nodes}
    layers = []
    for node in plan.nodes:
        g = statistics.median(r["garble_nodes"].get(node.name, 0.0) for r in runs)
        e = statistics.median(r["evaluate_nodes"].get(node.name, 0.0) for r in runs)
        c = costs.get(node.name)
        layers.append({"node": node.name, "op": node.op.value, "shape": list(node.shape),
                       "garble_s": g, "evaluate_s": e,
                       "ciphertexts": 0 if c is None else c.ciphertexts * batch,
                       "label_digits": 0 if c is None else c.label_digits * batch})
    garble_s, evaluate_s = med("garble_s"), med("evaluate_s")
    g_blocks, e_blocks = med("garble_aes_blocks"), med("evaluate_aes_blocks")
    bound = device_aes_rate or aes_rate  # the AES of the device that ran the gates
    return {
        "batch": batch, "device": device, "repeat": repeat, "moduli": list(plan.moduli),
        "threads": workers.threads(), "torch_threads": torch.get_num_threads(),
        "garble_s": garble_s, "encode_s": med("encode_s"), "evaluate_s": evaluate_s,
        "decode_s": med("decode_s"),
        "garble_s_per_inference": garble_s / batch,
        "evaluate_s_per_inference": evaluate_s / batch,
        "peak_memory_bytes": int(mem.peak),
        "peak_device_memory_bytes": int(torch.cuda.max_memory_allocated(device)) if cuda
        else None,
        "device_name": torch.cuda.get_device_name(device) if cuda else None,
        "device_aes_blocks_per_s": device_aes_rate,
        "ciphertexts": int(med("ciphertexts")),
        "table_bytes": int(med("table_bytes")),
        "aes_blocks": {"garble": int(g_blocks), "evaluate": int(e_blocks)},
        "aes_blocks_per_s": aes_rate,
        "aes_bound_ratio": {"garble": (g_blocks / bound) / garble_s if garble_s else 0.0,
                            "evaluate": (e_blocks / bound) / evaluate_s
                            if evaluate_s else 0.0},
        "exact_match": bool(exact),
        "layers": layers,
    }
