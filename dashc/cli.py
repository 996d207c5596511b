"""The ``dashc`` command line: parse arguments, call one :mod:`dashc.api` function, report.

Every command prints progress on stderr, can write a JSON report (``--json PATH``), and maps
:class:`~dashc.errors.DashcError` to ``error: <message>`` on one line and its exit code.
New commands register with ``@main.command()`` and ``@handles_errors``.
"""
from __future__ import annotations

import functools
import json
import os
import sys
from pathlib import Path

import click

from . import api
from .errors import DashcError, IntegrityError

DATA_DIR = click.option("--data-dir", type=click.Path(file_okay=False), envvar="DASHC_DATA_DIR",
                        default=None, help="Where built-in data sets live "
                        "(default: $DASHC_DATA_DIR, else the shipped samples).")
JSON_OUT = click.option("--json", "json_path", type=click.Path(dir_okay=False), default=None,
                        help="Write a machine-readable report to this file.")


def progress(msg: str) -> None:
    click.echo(msg, err=True)


def handles_errors(fn):
    """Map user errors to one line on stderr and their exit code; never a traceback."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except DashcError as e:
            click.echo(f"error: {e}", err=True)
            sys.exit(e.exit_code)
        except KeyboardInterrupt:
            click.echo("error: interrupted", err=True)
            sys.exit(130)
        except Exception as e:  # a bug: still one line unless asked for details
            if os.environ.get("DASHC_DEBUG"):
                raise
            click.echo(f"error: internal error: {type(e).__name__}: {e} "
                       "(set DASHC_DEBUG=1 for a traceback)", err=True)
            sys.exit(1)

    return wrapper


def write_json(path, payload) -> None:
    if path:
        Path(path).write_text(json.dumps(payload, indent=1, default=str) + "\n")
        progress(f"wrote {path}")


def _moduli(ctx, param, value):
    if value is None:
        return None
    try:
        return tuple(int(v) for v in value.replace(" ", "").split(",") if v)
    except ValueError:
        raise click.BadParameter("expected comma-separated integers, e.g. 31,167,173") \
            from None


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="dashc")
@click.option("--threads", type=click.IntRange(min=1), default=None, envvar="DASHC_THREADS",
              help="Threads per gate for garbling and evaluation (env DASHC_THREADS; "
              "default: the cores available, at most 8).")
@click.option("--torch-threads", type=click.IntRange(min=1), default=1,
              envvar="DASHC_TORCH_THREADS", show_default=True,
              help="Torch intra-op threads for the linear layers and the simulation (env "
              "DASHC_TORCH_THREADS).")
def main(threads, torch_threads):
    """dashc: private CNN inference with arithmetic garbled circuits."""
    import torch

    from .runtime import workers

    torch.set_num_threads(torch_threads)
    if threads is not None:
        workers.set_threads(threads)


@main.command("compile")
@click.argument("model")
@click.option("--calib", required=True, help="Calibration data: .npz or built-in name.")
@click.option("-o", "--output", required=True, type=click.Path(dir_okay=False),
              help="Plan file to write.")
@click.option("--strategy", type=click.Choice(["dash", "redash", "auto"]), default="dash",
              show_default=True, help="Rescaling strategy and CRT base choice.")
@click.option("--bits", "weight_bits", type=int, default=8, show_default=True,
              help="Weight bits (signed).")
@click.option("--act-bits", type=int, default=8, show_default=True,
              help="Activation bits kept after each rescale.")
@click.option("--input-bits", type=int, default=8, show_default=True, help="Input bits.")
@click.option("--moduli", callback=_moduli, default=None,
              help="Explicit CRT base (comma-separated primes).")
@click.option("--scale-prime", type=int, default=31, show_default=True,
              help="Scaling prime of the redash strategy.")
@click.option("--bound", type=click.Choice(["auto", "worst", "calibrated"]), default="auto",
              show_default=True, help="Worst-case or calibrated value bounds.")
@click.option("--margin", type=float, default=2.0, show_default=True,
              help="Safety factor on calibrated ranges.")
@click.option("--calib-method", type=click.Choice(["minmax", "percentile", "entropy"]),
              default="minmax", show_default=True)
@click.option("--calib-size", type=int, default=512, show_default=True,
              help="Calibration samples used.")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--max-drop", type=float, default=0.5, show_default=True,
              help="Accuracy points the auto strategy may lose on the calibration set.")
@click.option("--ranges", "ranges_out", type=click.Path(dir_okay=False), default=None,
              help="Also save the calibrated ranges as JSON.")
@DATA_DIR
@JSON_OUT
@handles_errors
def compile_cmd(model, calib, output, strategy, weight_bits, act_bits, input_bits, moduli,
                scale_prime, bound, margin, calib_method, calib_size, seed, max_drop,
                ranges_out, data_dir, json_path):
    """Compile MODEL (.onnx file or zoo name) into a verified integer plan."""
    plan = api.compile_model(model, calib, output, strategy=strategy, weight_bits=weight_bits,
                             act_bits=act_bits, input_bits=input_bits, moduli=moduli,
                             scale_prime=scale_prime, bound=bound, margin=margin,
                             calib_method=calib_method, calib_size=calib_size, seed=seed,
                             max_drop=max_drop, data_dir=data_dir, ranges_out=ranges_out,
                             progress=progress)
    if json_path:
        write_json(json_path, {"plan": str(output), **api.inspect_plan(plan)})


@main.command("inspect")
@click.argument("plan", type=click.Path(dir_okay=False))
@JSON_OUT
@handles_errors
def inspect_cmd(plan, json_path):
    """Per-layer table of PLAN: shapes, ranges, bits, rescales, predicted costs."""
    from .report import format_table

    info = api.inspect_plan(plan)
    click.echo(format_table(info))
    write_json(json_path, info)


@main.command("simulate")
@click.argument("plan", type=click.Path(dir_okay=False))
@click.option("--data", required=True, help="Data: .npz or built-in name.")
@click.option("--limit", type=click.IntRange(min=1), default=None, help="Use the first N.")
@DATA_DIR
@JSON_OUT
@handles_errors
def simulate_cmd(plan, data, limit, data_dir, json_path):
    """Exact integer simulation of PLAN on DATA, against the float model."""
    res = api.simulate(plan, data, limit, data_dir=data_dir, progress=progress)

    def pct(v):
        return "n/a" if v is None else f"{100 * v:.2f}%"

    click.echo(f"n={res['n']}  float {pct(res['float_accuracy'])}  simulated "
               f"{pct(res['simulated_accuracy'])}  agreement {pct(res['agreement'])}  "
               f"overflow {res['overflow_count']}")
    for name, count in res["overflow"].items():
        click.echo(f"  overflow at {name}: {count} values")
    write_json(json_path, res)


def pct(v) -> str:
    return "n/a" if v is None else f"{100 * v:.2f}%"


DEVICE = click.option("--device", type=click.Choice(["cpu", "cuda"]), default="cpu",
                      show_default=True, help="Where label arithmetic runs.")


@main.command("garble")
@click.argument("plan", type=click.Path(dir_okay=False))
@click.option("-o", "--output", required=True, type=click.Path(file_okay=False),
              help="Directory for the evaluator's material and the garbler's secrets.")
@click.option("--count", type=click.IntRange(min=1), default=1, show_default=True,
              help="Circuits to garble (one per future inference).")
@DEVICE
@JSON_OUT
@handles_errors
def garble_cmd(plan, output, count, device, json_path):
    """Garbler, offline: garble COUNT fresh circuits of PLAN into OUTPUT."""
    res = api.garble(plan, output, count, device=device, progress=progress)
    click.echo(f"circuit {res['circuit']}: {res['count']} circuit(s), "
               f"{res['ciphertexts_per_inference']} ciphertexts each, "
               f"{res['table_bytes']} table bytes, {res['garble_s']:.2f} s")
    write_json(json_path, res)


@main.command("encode")
@click.argument("directory", type=click.Path(file_okay=False, exists=True))
@click.option("--data", required=True, help="Inputs: .npz or built-in name (one per circuit).")
@click.option("--offset", type=click.IntRange(min=0), default=0, show_default=True,
              help="First sample to use.")
@click.option("-o", "--output", type=click.Path(dir_okay=False), default=None,
              help="Input label file (default DIRECTORY/evaluator/inputs.dgl).")
@DATA_DIR
@JSON_OUT
@handles_errors
def encode_cmd(directory, data, offset, output, data_dir, json_path):
    """Garbler, online: active input labels for the circuits in DIRECTORY (single use)."""
    res = api.encode(directory, data, offset=offset, data_dir=data_dir, output=output,
                     progress=progress)
    write_json(json_path, res)


@main.command("evaluate")
@click.argument("directory", type=click.Path(file_okay=False, exists=True))
@click.option("--inputs", type=click.Path(dir_okay=False), default=None,
              help="Input label file (default DIRECTORY/inputs.dgl).")
@click.option("-o", "--output", type=click.Path(dir_okay=False), default=None,
              help="Output label file (default DIRECTORY/outputs.dgl).")
@DEVICE
@JSON_OUT
@handles_errors
def evaluate_cmd(directory, inputs, output, device, json_path):
    """Evaluator: run the garbled circuits in DIRECTORY (an evaluator directory)."""
    res = api.evaluate(directory, inputs, output, device=device, progress=progress)
    click.echo(f"evaluated in {res['evaluate_s']:.2f} s")
    write_json(json_path, res)


@main.command("decode")
@click.argument("directory", type=click.Path(file_okay=False, exists=True))
@click.option("--outputs", type=click.Path(dir_okay=False), default=None,
              help="Output label file (default DIRECTORY/evaluator/outputs.dgl).")
@JSON_OUT
@handles_errors
def decode_cmd(directory, outputs, json_path):
    """Garbler: authenticate the output labels and print the predicted classes."""
    res = api.decode(directory, outputs, progress=progress)
    for i, c in enumerate(res["classes"]):
        click.echo(f"{i}: class {c}")
    write_json(json_path, res)


@main.command("eval")
@click.argument("plan", type=click.Path(dir_okay=False))
@click.option("--data", required=True, help="Data: .npz or built-in name.")
@click.option("--limit", type=click.IntRange(min=1), default=None, help="Use the first N.")
@click.option("--offset", type=click.IntRange(min=0), default=0, show_default=True,
              help="Skip the first K samples (with --limit: samples K to K+N-1).")
@click.option("--batch", type=click.IntRange(min=1), default=16, show_default=True,
              help="Circuits garbled and evaluated together.")
@DEVICE
@DATA_DIR
@JSON_OUT
@handles_errors
def eval_cmd(plan, data, limit, offset, batch, device, data_dir, json_path):
    """Whole pipeline in one process: float, simulated and garbled accuracy side by side."""
    res = api.eval_plan(plan, data, limit, batch=batch, device=device, data_dir=data_dir,
                        offset=offset, progress=progress)
    t, b = res["timings_per_inference"], res["bytes_per_inference"]
    click.echo(f"n={res['n']}  moduli {tuple(res['moduli'])}")
    click.echo(f"  accuracy   float {pct(res['float_accuracy'])}   simulated "
               f"{pct(res['simulated_accuracy'])}   garbled {pct(res['garbled_accuracy'])}")
    click.echo(f"  garbled == simulated on {pct(res['exact_match'])} of samples "
               f"(every logit, bit for bit)")
    click.echo(f"  per inference: garble {t['garble_s'] * 1e3:.1f} ms, encode "
               f"{t['encode_s'] * 1e3:.1f} ms, evaluate {t['evaluate_s'] * 1e3:.1f} ms, "
               f"decode {t['decode_s'] * 1e3:.1f} ms")
    click.echo(f"  per inference: {res['ciphertexts_per_inference']} ciphertexts, tables "
               f"{b['tables']} B, input labels {b['input_labels']} B, output labels "
               f"{b['output_labels']} B")
    write_json(json_path, res)
    if res["exact_match"] != 1.0:
        click.echo("error: garbled logits differ from the simulation", err=True)
        sys.exit(IntegrityError.exit_code)


# -- two parties over the network -------------------------------------------------------------
@main.command("serve")
@click.argument("plan", type=click.Path(dir_okay=False))
@click.option("--host", default="127.0.0.1", show_default=True,
              help="Address to listen on (0.0.0.0 for every interface).")
@click.option("--port", type=click.IntRange(0, 65535), default=7000, show_default=True,
              help="TCP port (0 picks a free one).")
@click.option("--port-file", type=click.Path(dir_okay=False), default=None,
              help="Also write the port actually bound to this file.")
@click.option("--store", type=click.Path(file_okay=False), default=None,
              help="Directory for uploaded tables (default: a temporary one).")
@click.option("--max-message", type=click.IntRange(min=1024), default=None,
              help="Largest message accepted, in bytes (default 8 MiB).")
@click.option("--max-upload", type=click.IntRange(min=1), default=None,
              help="Largest garbled tables of one circuit, in bytes (default 4 GiB).")
@click.option("--timeout", type=click.FloatRange(min=0, min_open=True), default=None,
              help="Seconds allowed to finish a message once it started (default 30).")
@DEVICE
@JSON_OUT
@handles_errors
def serve_cmd(plan, host, port, port_file, store, max_message, max_upload, timeout, device,
              json_path):
    """Evaluator: serve garbled evaluations of PLAN until interrupted."""

    def ready(h, p):
        click.echo(f"listening on {h}:{p}")
        sys.stdout.flush()
        if port_file:
            Path(port_file).write_text(f"{p}\n")

    res = api.serve(plan, host, port, store=store, max_message=max_message,
                    max_upload=max_upload, timeout=timeout, device=device, ready=ready,
                    progress=progress)
    write_json(json_path, res)


@main.command("infer")
@click.argument("plan", type=click.Path(dir_okay=False))
@click.option("--server", required=True, help="The evaluator's address, HOST:PORT.")
@click.option("--data", required=True, help="Inputs: .npz or built-in name.")
@click.option("--limit", type=click.IntRange(min=1), default=None, help="Use the first N.")
@click.option("--offset", type=click.IntRange(min=0), default=0, show_default=True,
              help="First sample to use.")
@click.option("--pool", type=click.IntRange(min=1), default=16, show_default=True,
              help="Circuits garbled and uploaded ahead of the inferences they serve.")
@click.option("--retries", type=click.IntRange(min=0), default=0, show_default=True,
              help="Reconnect this often after a network failure (fresh circuits each time).")
@click.option("--retry-wait", type=click.FloatRange(min=0), default=1.0, show_default=True,
              help="Seconds between reconnection attempts.")
@click.option("--timeout", type=click.FloatRange(min=0, min_open=True), default=None,
              help="Seconds to wait for a reply (default 600).")
@DEVICE
@DATA_DIR
@JSON_OUT
@handles_errors
def infer_cmd(plan, server, data, limit, offset, pool, retries, retry_wait, timeout, device,
              data_dir, json_path):
    """Garbler client: private inference of DATA on the evaluator at --server."""
    res = api.infer(plan, server, data, limit, pool=pool, offset=offset, retries=retries,
                    retry_wait=retry_wait, timeout=timeout, device=device, data_dir=data_dir,
                    progress=progress)
    for i, c in enumerate(res["classes"]):
        click.echo(f"{offset + i}: class {c}")
    progress(f"n={res['n']}  accuracy {pct(res['accuracy'])}  offline "
             f"{res['offline_bytes']} B ({res['offline_bytes_per_inference']} B per "
             f"inference)  online request {res['online_request_bytes']} B, response "
             f"{res['online_response_bytes']} B, median latency "
             f"{res['online_latency_s'] * 1e3:.1f} ms")
    write_json(json_path, res)


@main.command("bench")
@click.argument("model")
@click.option("--batch", type=click.IntRange(min=1), default=1, show_default=True,
              help="Circuits garbled and evaluated together.")
@click.option("--repeat", type=click.IntRange(min=1), default=3, show_default=True,
              help="Measured runs after one warm-up (medians are reported).")
@click.option("--calib", default=None, help="Calibration data for an .onnx MODEL.")
@click.option("--strategy", type=click.Choice(["dash", "redash", "auto"]), default="dash",
              show_default=True)
@DEVICE
@DATA_DIR
@JSON_OUT
@handles_errors
def bench_cmd(model, batch, repeat, calib, strategy, device, data_dir, json_path):
    """Benchmark MODEL (plan file, .onnx or zoo name): timings per layer and in total."""
    res = api.bench(model, batch=batch, device=device, repeat=repeat, calib=calib,
                    strategy=strategy, data_dir=data_dir, progress=progress)
    click.echo(f"{res['model']}  batch {res['batch']}  {res['device']}  moduli "
               f"{tuple(res['moduli'])}  threads {res['threads']} (torch "
               f"{res['torch_threads']})")
    click.echo(f"{'layer':28s} {'op':13s} {'ciphertexts':>12s} {'garble ms':>10s} "
               f"{'evaluate ms':>12s}")
    for layer in res["layers"]:
        click.echo(f"{layer['node'][-28:]:28s} {layer['op']:13s} {layer['ciphertexts']:12d} "
                   f"{layer['garble_s'] * 1e3:10.2f} {layer['evaluate_s'] * 1e3:12.2f}")
    ratio = res["aes_bound_ratio"]
    click.echo(f"total: garble {res['garble_s']:.4f} s, encode {res['encode_s']:.4f} s, "
               f"evaluate {res['evaluate_s']:.4f} s, decode {res['decode_s']:.4f} s "
               f"(per batch of {res['batch']})")
    click.echo(f"{res['ciphertexts']} ciphertexts, {res['table_bytes']} table bytes, peak "
               f"memory {res['peak_memory_bytes'] / 2**20:.0f} MiB, AES bound "
               f"{100 * ratio['garble']:.2f}% (garble) / {100 * ratio['evaluate']:.2f}% "
               f"(evaluate) of {(res['device_aes_blocks_per_s'] or res['aes_blocks_per_s']) / 1e6:.0f}"
               f" M blocks/s")
    if res["device_name"]:
        click.echo(f"device {res['device_name']}: peak device memory "
                   f"{res['peak_device_memory_bytes'] / 2**20:.0f} MiB")
    write_json(json_path, res)
    if not res["exact_match"]:
        click.echo("error: garbled logits differ from the simulation", err=True)
        sys.exit(IntegrityError.exit_code)


if __name__ == "__main__":  # pragma: no cover
    main()
