"""Regenerate the zoo's accuracy table: float, simulated and garbled, side by side.

    python -m dashc.models.accuracy_table --data-dir DIR [--models A,C] [--garbled 1000]
        [--garbled-cifar 200] [--strategy dash] [--batch 16] [--threads 1] [--gate-threads N]
        [--out table.md] [--json rows.json]

For every shipped zoo model: compile it (calibrating on the training split of DIR), then the
float and simulated accuracy on the full test split and the garbled accuracy on the first
``--garbled`` test images (``--garbled-cifar`` for CIFAR-10 models), with the strategy and
moduli used and whether every garbled logit equalled the simulated one.  Without a data
directory the shipped samples are used (and the table says so).
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch

from dashc import api
from dashc.models import architectures, zoo
from dashc.models.data import default_data_dir
from dashc.runtime import workers


def row(name: str, data_dir, garbled: int, strategy: str, say, batch: int = 16) -> dict:
    dataset = architectures.dataset_of(name)
    plan = api.compile_model(name, dataset, strategy=strategy, data_dir=data_dir,
                             progress=None)
    sim = api.simulate(plan, dataset, data_dir=data_dir, progress=None)
    say(f"{name}: float {sim['float_accuracy']:.4f} simulated {sim['simulated_accuracy']:.4f}"
        f" on {sim['n']}")
    ev = api.eval_plan(plan, dataset, garbled, batch=batch, data_dir=data_dir, progress=say)
    return {"model": name, "dataset": dataset, "strategy": strategy,
            "moduli": list(plan.moduli), "n_test": sim["n"],
            "float_accuracy": sim["float_accuracy"],
            "simulated_accuracy": sim["simulated_accuracy"], "overflow": sim["overflow_count"],
            "n_garbled": ev["n"], "garbled_accuracy": ev["garbled_accuracy"],
            "simulated_accuracy_on_garbled": ev["simulated_accuracy"],
            "exact_match": ev["exact_match"],
            "ciphertexts_per_inference": ev["ciphertexts_per_inference"]}


def markdown(rows: list[dict], source: str) -> str:
    out = [f"Test data: {source}.", "",
           "| model | float | simulated | garbled (n) | simulated on those n | garbled == "
           "simulated | strategy, moduli | ciphertexts / inference |",
           "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        out.append(f"| {r['model']} | {100 * r['float_accuracy']:.2f} % | "
                   f"{100 * r['simulated_accuracy']:.2f} % | "
                   f"{100 * r['garbled_accuracy']:.2f} % ({r['n_garbled']}) | "
                   f"{100 * r['simulated_accuracy_on_garbled']:.2f} % | "
                   f"{100 * r['exact_match']:.0f} % | {r['strategy']}, "
                   f"{','.join(map(str, r['moduli']))} | {r['ciphertexts_per_inference']} |")
    return "\n".join(out) + "\n"


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data-dir", default=None)
    ap.add_argument("--models", default=None, help="Comma-separated (default: all shipped).")
    ap.add_argument("--garbled", type=int, default=1000)
    ap.add_argument("--garbled-cifar", type=int, default=200)
    ap.add_argument("--strategy", default="dash")
    ap.add_argument("--batch", type=int, default=16,
                    help="Circuits garbled together (lower it for the CIFAR-10 models: their "
                         "tables take about 0.6 GB per circuit on disk).")
    ap.add_argument("--threads", type=int, default=1,
                    help="torch threads (1 is fastest on a shared two-core machine)")
    ap.add_argument("--gate-threads", type=int, default=None,
                    help="threads per gate when garbling (default: the cores available; 1 "
                         "when several of these runs share the machine)")
    ap.add_argument("--out", default=None, help="Write the markdown table here too.")
    ap.add_argument("--json", default=None, help="Write the rows as JSON here.")
    args = ap.parse_args(argv)
    torch.set_num_threads(max(1, args.threads))
    if args.gate_threads is not None:
        workers.set_threads(max(1, args.gate_threads))
    names = args.models.split(",") if args.models else list(zoo.available())

    def say(msg):
        print(msg, file=sys.stderr, flush=True)

    root = default_data_dir(args.data_dir)
    source = f"full test splits under {root}" if root else "the shipped samples"
    rows = []
    for name in names:
        n = args.garbled_cifar if architectures.dataset_of(name) == "cifar10" else args.garbled
        rows.append(row(name, args.data_dir, n, args.strategy, say, args.batch))
        text = markdown(rows, source)  # written after every model: long runs keep results
        if args.out:
            Path(args.out).write_text(text)
        if args.json:
            Path(args.json).write_text(json.dumps(rows, indent=1) + "\n")
    print(text)


if __name__ == "__main__":
    main()
