"""The paper table on this machine: ``dashc bench`` on every paper model (not a test).

    .venv/bin/python benchmarks/bench_models.py [--models A,B,C,D,E30,E100,Fsmall,F,relu16k]
        [--batch 1] [--repeat 3] [--out benchmarks/results.md]

Each model runs in its own ``dashc bench`` process (so peak memory is per model) with the
zoo's trained weights where shipped, else seeded random weights of the same architecture.
``relu16k`` is a plan of 16 384 ReLUs over the first 8 primes, built directly in the IR.
The table lists medians per inference next to the authors' C++ reference measured on a
2-core machine (design brief §8), the load average and the raw AES rate of each run.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DASHC = [sys.executable, "-m", "dashc.cli"]

#: garble s / evaluate s of the authors' C++ reference, 2 threads, batch 1 (design §8)
REFERENCE = {"A": (0.28, 0.068), "B": (4.4, 0.53), "C": (1.1, 0.145), "D": (2.5, 0.515),
             "E30": (0.04, 0.012), "E100": (0.08, 0.043), "Fsmall": (98.0, 5.0),
             "F": (125.0, 11.3), "relu16k": (13.7, 1.1)}


def relu_plan(path: Path, count: int = 16384) -> Path:
    from dashc import crt, save_plan
    from dashc.ir import Node, Op, Plan

    moduli = crt.first_primes(8)
    nodes = (Node("input", Op.INPUT, (), (count,), bound=255),
             Node("relu", Op.RELU, ("input",), (count,), bound=255),
             Node("output", Op.OUTPUT, ("relu",), (count,), bound=255))
    plan = Plan(moduli=moduli, nodes=nodes, tensors={}, input_scale=1.0,
                input_clip=(-255, 255), output_scale=1.0,
                meta={"source": f"{count} ReLUs", "strategy": "none"})
    save_plan(plan, path)
    return path


def run(model: str, batch: int, repeat: int, tmp: Path, device: str = "cpu") -> dict:
    target = str(relu_plan(tmp / "relu16k.dashc")) if model == "relu16k" else model
    out = tmp / f"{model}.json"
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    proc = subprocess.run(DASHC + ["bench", target, "--batch", str(batch), "--repeat",
                                   str(repeat), "--device", device, "--json", str(out)],
                          cwd=ROOT, env=env, capture_output=True, text=True)
    if proc.returncode != 0:
        print(f"{model}: dashc bench failed (exit {proc.returncode}):\n{proc.stderr[-3000:]}",
              file=sys.stderr, flush=True)
        return None
    res = json.loads(out.read_text())
    res["load_average"] = os.getloadavg()[0]
    if model == "relu16k":
        res["model"] = "16 384 ReLUs"
    return res


def peak(r: dict) -> str:
    """Peak resident memory in MiB, with the peak device memory after it on CUDA."""
    text = f"{r['peak_memory_bytes'] / 2**20:.0f}"
    if r.get("peak_device_memory_bytes") is not None:
        text += f" (+{r['peak_device_memory_bytes'] / 2**20:.0f} on device)"
    return text


def table(rows: list[tuple[str, dict]]) -> str:
    head = ("| model | moduli | ciphertexts / inf. | garble s / inf. | evaluate s / inf. | "
            "reference garble / evaluate s | speed-up garble / evaluate | peak MiB | "
            "AES bound (garble) | load |")
    lines = [head, "|---" * 10 + "|"]
    for name, r in rows:
        b = r["batch"]
        g, e = r["garble_s"] / b, r["evaluate_s"] / b
        rg, re_ = REFERENCE.get(name, (float("nan"), float("nan")))
        lines.append(f"| {r['model']} | {','.join(map(str, r['moduli']))} | "
                     f"{r['ciphertexts'] // b} | {g:.4f} | {e:.4f} | {rg} / {re_} | "
                     f"{rg / g:.1f}x / {re_ / e:.1f}x | {peak(r)} | "
                     f"{100 * r['aes_bound_ratio']['garble']:.2f}% | "
                     f"{r['load_average']:.1f} |")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", default="A,B,C,D,E30,E100,Fsmall,F,relu16k")
    ap.add_argument("--batch", type=int, default=1)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    ap.add_argument("--out", default=None, help="Also write the markdown table here.")
    args = ap.parse_args()
    rows, failed = [], []
    with tempfile.TemporaryDirectory(prefix="dashc-bench-") as tmp:
        for model in args.models.split(","):
            print(f"benchmarking {model} ...", file=sys.stderr, flush=True)
            res = run(model, args.batch, args.repeat, Path(tmp), args.device)
            if res is None:
                failed.append(model)
                continue
            rows.append((model, res))
            text = report(rows, args)
            if args.out:  # after every model, so a run cut short keeps what it measured
                Path(args.out).write_text(text)
    if rows:
        print(report(rows, args))
    if failed:
        raise SystemExit(f"dashc bench failed for {', '.join(failed)}")


def report(rows: list[tuple[str, dict]], args) -> str:
    first = rows[0][1]
    where = (f"CUDA, {first['device_name']}, tensor AES "
             f"{first['device_aes_blocks_per_s'] / 1e6:.0f} M blocks/s"
             if args.device == "cuda" else
             f"CPU, {os.cpu_count()} cores, {first['threads']} gate thread(s), "
             f"{first['torch_threads']} torch thread(s), raw AES "
             f"{first['aes_blocks_per_s'] / 1e6:.0f} M blocks/s")
    return (f"batch {args.batch}, median of {args.repeat} runs, {where}\n\n"
            + table(rows) + "\n")


if __name__ == "__main__":
    main()
