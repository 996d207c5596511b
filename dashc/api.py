"""The Python API: one function per CLI command, same names and arguments.

``compile_model(model, calib, output=None, ...)`` -> Plan, ``inspect_plan(plan)`` -> dict,
``simulate(plan, data, limit=None, ...)`` -> dict.  ``model`` is an ``.onnx`` path, ONNX
bytes, a zoo name or a ``torch.nn.Module`` (with ``input_shape``); ``calib`` / ``data`` an
``.npz`` path, a built-in data set name, an array ``x`` or a pair ``(x, y)``.
"""
from __future__ import annotations

import sys
from pathlib import Path
from typing import Callable

import numpy as np

from . import compiler, planfile, report
from .errors import DataError, UsageError
from .ir import Plan
from .quantize import Config

Progress = Callable[[str], None]


def _stderr(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def _quiet(msg: str) -> None:
    pass


def load_data(data, data_dir=None, split: str = "test", limit: int | None = None,
              offset: int = 0) -> tuple[np.ndarray, np.ndarray | None]:
    """``(x, y)`` from an ``.npz`` path, a built-in name, an array or an ``(x, y)`` pair:
    ``limit`` samples (default all) from sample ``offset`` on."""
    if offset < 0:
        raise UsageError(f"offset must not be negative, got {offset}")
    if isinstance(data, tuple) and len(data) == 2:
        x, y = np.asarray(data[0]), (None if data[1] is None else np.asarray(data[1]))
    elif isinstance(data, np.ndarray):
        x, y = data, None
    else:
        from .calibration import load_data as read
        x, y = read(data, data_dir=data_dir, split=split,
                    limit=None if limit is None else offset + limit)
    if offset:
        if offset >= len(x):
            raise DataError(f"offset {offset} is past the end of the data ({len(x)} samples)")
        x, y = x[offset:], (None if y is None else y[offset:])
    if limit is not None:
        x, y = x[:limit], (None if y is None else y[:limit])
    if len(x) == 0:
        raise DataError("the data set is empty")
    return x, y


def _calibration_data(calib, data_dir, limit):
    """Built-in names calibrate on the training split when a data directory has it."""
    from .models import data as zoo_data

    if isinstance(calib, str) and calib in zoo_data.NAMES \
            and zoo_data.default_data_dir(data_dir) is not None:
        return load_data(calib, data_dir, split="train", limit=limit)
    return load_data(calib, data_dir, limit=None)


def _plan(plan) -> Plan:
    return plan if isinstance(plan, Plan) else planfile.load(plan)


def compile_model(model, calib, output=None, *, strategy: str = "dash",
                  weight_bits: int = 8, act_bits: int = 8, input_bits: int = 8,
                  moduli=None, scale_prime: int = 31, bound: str = "auto",
                  margin: float = 2.0, calib_method: str = "minmax", calib_size: int = 512,
                  seed: int = 0, max_drop: float = 0.5, input_shape=None, opset: int = 18,
                  dynamo: bool = False, data_dir=None, ranges_out=None,
                  progress: Progress | None = _stderr) -> Plan:
    """Import, calibrate, quantize and lower ``model``; save the plan to ``output`` if given."""
    progress = progress or _quiet
    cfg = Config(strategy=strategy, weight_bits=weight_bits, act_bits=act_bits,
                 input_bits=input_bits, moduli=tuple(moduli) if moduli else None,
                 scale_prime=scale_prime, bound=bound, margin=margin,
                 calib_method=calib_method, calib_size=calib_size, seed=seed,
                 max_drop=max_drop)
    from .quantize import check_config
    check_config(cfg)
    progress(f"importing {model if isinstance(model, (str, Path)) else type(model).__name__}")
    imported = compiler.load_model(model, input_shape=input_shape, opset=opset, dynamo=dynamo)
    x, y = _calibration_data(calib, data_dir, None)
    ranges, calib_x = compiler.calibrate(imported, x, cfg, progress)
    if ranges_out is not None:
        ranges.save(ranges_out)
    sel = None
    if y is not None and len(y) == len(x):
        rng = np.random.default_rng(cfg.seed)
        sel = np.sort(rng.choice(len(x), cfg.calib_size, replace=False)) \
            if len(x) > cfg.calib_size else np.arange(len(x))
    plan = compiler.compile_graph(imported, calib_x, cfg,
                                  calib_y=None if sel is None else y[sel], ranges=ranges,
                                  progress=progress)
    progress(f"plan: {len(plan.nodes)} nodes, moduli {plan.moduli}, {plan.meta['bounds']} "
             "bounds")
    if output is not None:
        planfile.save(plan, output)
        progress(f"wrote {output}")
    return plan


def inspect_plan(plan) -> dict:
    """Per-layer shapes, ranges, bits, rescales and predicted costs, plus totals."""
    return report.summary(_plan(plan))


def simulate(plan, data, limit: int | None = None, *, data_dir=None, batch: int = 128,
             progress: Progress | None = _stderr) -> dict:
    """Exact integer simulation against the float model on ``data``."""
    progress = progress or _quiet
    plan = _plan(plan)
    x, y = load_data(data, data_dir, limit=limit)
    from .calibration import check_input
    x = check_input(x, plan.input_node.shape, "data")
    progress(f"simulating {len(x)} samples")
    float_pred = compiler.float_logits(plan.float_model, x).argmax(1)
    counts: dict[str, int] = {}
    sim_pred, samples = [], 0
    for i in range(0, len(x), batch):
        logits, reps = compiler.simulate_logits(plan, x[i:i + batch], batch)
        sim_pred.append(logits.argmax(1))
        for rep in reps:
            samples += rep.n_samples
            for name, c in rep.counts.items():
                counts[name] = counts.get(name, 0) + c
        progress(f"  {min(i + batch, len(x))}/{len(x)}")
    sim = np.concatenate(sim_pred)
    out = {
        "n": int(len(x)),
        "float_accuracy": None if y is None else float((float_pred == y).mean()),
        "simulated_accuracy": None if y is None else float((sim == y).mean()),
        "agreement": float((sim == float_pred).mean()),
        "overflow_count": int(sum(counts.values())),
        "overflow_samples": int(samples),
        "overflow": {k: v for k, v in counts.items() if v},
        "moduli": list(plan.moduli),
    }
    return out


# -- garbled inference: the four party steps and the whole pipeline ---------------------------
def garble(plan, output, count: int = 1, *, device: str = "cpu",
           progress: Progress | None = _stderr) -> dict:
    """Garbler, offline: ``count`` fresh circuits of ``plan`` into directory ``output``
    (``output/evaluator`` is shipped to the evaluator, ``output/garbler`` stays)."""
    from . import parties

    progress = progress or _quiet
    progress(f"garbling {count} circuit(s)")
    res = parties.garble(_plan(plan), output, count=count, device=device)
    progress(f"wrote {res['evaluator_dir']} ({res['table_bytes']} table bytes) and "
             f"{res['garbler_dir']}")
    return res


def encode(directory, data, *, offset: int = 0, data_dir=None, output=None,
           progress: Progress | None = _stderr) -> dict:
    """Garbler, online: the active input labels of one sample per garbled circuit."""
    from . import parties

    progress = progress or _quiet
    count = parties.circuit_count(directory)
    x, _ = load_data(data, data_dir, limit=offset + count)
    if len(x) < offset + count:
        raise DataError(f"{count} circuits need {count} samples from offset {offset}; the "
                        f"data set has {len(x)}")
    res = parties.encode(directory, x[offset:offset + count], output=output)
    progress(f"wrote {res['inputs']} ({res['input_label_bytes']} bytes)")
    return res


def evaluate(directory, inputs=None, output=None, *, device: str = "cpu",
             progress: Progress | None = _stderr) -> dict:
    """Evaluator: garbled tables + input labels -> output labels."""
    from . import parties

    progress = progress or _quiet
    res = parties.evaluate(directory, inputs, output, device=device)
    progress(f"wrote {res['outputs']} ({res['output_label_bytes']} bytes)")
    return res


def decode(directory, outputs=None, *, progress: Progress | None = _stderr) -> dict:
    """Garbler: output labels -> logits and classes, every label authenticated."""
    from . import parties

    return parties.decode(directory, outputs)


def eval_plan(plan, data, limit: int | None = None, *, batch: int = 16, device: str = "cpu",
              data_dir=None, offset: int = 0, progress: Progress | None = _stderr) -> dict:
    """Float, simulated and garbled accuracy side by side (``dashc eval``)."""
    from .calibration import check_input
    from .pipeline import eval_plan as run

    progress = progress or _quiet
    plan = _plan(plan)
    x, y = load_data(data, data_dir, limit=limit, offset=offset)
    x = check_input(x, plan.input_node.shape, "data")
    progress(f"evaluating {len(x)} samples garbled (from sample {offset}), in batches of "
             f"{batch}")
    res = run(plan, x, y, batch=batch, device=device, progress=progress)
    res["offset"] = int(offset)
    return res


# -- two parties over the network -------------------------------------------------------------
def _address(server: str) -> tuple[str, int]:
    """``HOST:PORT`` (``[v6]:PORT`` for IPv6) -> (host, port)."""
    from .errors import UsageError

    host, sep, port = str(server).rpartition(":")
    host = host[1:-1] if host.startswith("[") and host.endswith("]") else host
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise UsageError(f"server address {server!r} is not HOST:PORT (e.g. 10.0.0.5:7000)")
    return host, int(port)


def _limits(max_message, max_upload, timeout):
    from .errors import UsageError
    from .net.protocol import Limits

    kw = {}
    if max_message is not None:
        kw["max_message"] = int(max_message)
    if max_upload is not None:
        kw["max_upload"] = int(max_upload)
    if timeout is not None:
        kw.update(read_timeout=float(timeout), reply_timeout=float(timeout))
    try:
        limits = Limits(**kw)
        if max_message is not None:  # keep chunks inside a smaller message limit
            limits = Limits(**{**kw, "chunk": min(limits.chunk, limits.max_message // 2)})
    except ValueError as e:
        raise UsageError(str(e)) from None
    return limits


def serve(plan, host: str = "127.0.0.1", port: int = 0, *, store=None,
          max_message: int | None = None, max_upload: int | None = None,
          timeout: float | None = None, device: str = "cpu", ready=None,
          progress: Progress | None = _stderr) -> dict:
    """Evaluator: serve garbled evaluations of ``plan`` on ``host:port`` until SIGINT or
    SIGTERM.  ``ready(host, port)`` is called once listening (port 0 picks a free port);
    ``store`` is the directory for uploaded tables (default: a temporary one)."""
    import asyncio
    import signal

    from .net.server import run_server

    progress = progress or _quiet
    plan = _plan(plan)
    limits = _limits(max_message, max_upload, timeout)
    info: dict = {}

    def on_ready(h, p):
        info.update(host=h, port=p)
        progress(f"evaluator listening on {h}:{p} (plan {len(plan.nodes)} nodes, moduli "
                 f"{plan.moduli})")
        if ready is not None:
            ready(h, p)

    async def main():
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            try:
                loop.add_signal_handler(sig, stop.set)
            except (NotImplementedError, RuntimeError, ValueError):
                pass  # not the main thread: the caller stops the loop
        return await run_server(plan, host, port, on_ready, stop=stop, limits=limits,
                                store_dir=store, device=device, log=progress)

    try:
        server = asyncio.run(main())
    except OSError as e:
        from .net.errors import NetworkError
        raise NetworkError(f"cannot listen on {host}:{port} ({e.strerror})") from None
    progress(f"evaluator stopped after {server.served} inference(s)")
    return {**info, "served": server.served}


def infer(plan, server: str, data, limit: int | None = None, *, pool: int = 16,
          offset: int = 0, retries: int = 0, retry_wait: float = 1.0,
          max_message: int | None = None, timeout: float | None = None, device: str = "cpu",
          data_dir=None, progress: Progress | None = _stderr) -> dict:
    """Garbler client: private inference of ``data`` on the evaluator at ``server``
    (``HOST:PORT``).  Circuits are garbled and uploaded ``pool`` at a time (offline); each
    inference is one request and one response (online), every output label authenticated."""
    import asyncio

    from .calibration import check_input
    from .compiler import encode_input
    from .errors import UsageError
    from .net.client import run_inferences

    progress = progress or _quiet
    if int(pool) < 1:
        raise UsageError(f"--pool must be at least 1, got {pool}")
    host, port = _address(server)
    limits = _limits(max_message, None, timeout)
    plan = _plan(plan)
    x, y = load_data(data, data_dir, limit=None if limit is None else offset + limit)
    x, y = x[offset:], (None if y is None else y[offset:])
    if len(x) == 0:
        raise DataError(f"no samples left from offset {offset}")
    x = check_input(x, plan.input_node.shape, "data")
    xi = encode_input(plan, x)
    progress(f"inferring {len(x)} samples on {host}:{port}, {pool} circuit(s) garbled ahead")
    session = asyncio.run(run_inferences(plan, host, port, xi, pool=int(pool), limits=limits,
                                         retries=int(retries), retry_wait=float(retry_wait),
                                         device=device, progress=progress))
    logits = np.stack(session.logits).reshape(len(x), -1)
    classes = logits.argmax(1)
    out = session.summary()
    out.update(server=f"{host}:{port}", offset=int(offset),
               accuracy=None if y is None else float((classes == y[:len(x)]).mean()),
               classes=classes.tolist(), logits_int=logits.tolist(),
               logits=(logits * plan.output_scale).tolist())
    return out


def bench(model, *, batch: int = 1, device: str = "cpu", repeat: int = 3, calib=None,
          strategy: str = "dash", data_dir=None, seed: int = 0,
          progress: Progress | None = _stderr) -> dict:
    """Per-layer and total garble/encode/evaluate/decode timings (``dashc bench``).

    ``model`` is a plan file, an ``.onnx`` file (with ``calib``) or a zoo name; a zoo name
    whose trained weights are not shipped is benchmarked with seeded random weights of the
    same architecture (costs and timings do not depend on the weights' values)."""
    import torch

    from .bench import bench_plan
    from .models import architectures, zoo

    progress = progress or _quiet
    source = str(model)
    if isinstance(model, Plan) or (Path(str(model)).is_file()
                                   and not str(model).endswith(".onnx")):
        plan = _plan(model)
    else:
        name = str(model)
        if zoo.is_zoo_name(name):
            calib = calib or architectures.dataset_of(name)
            if name not in zoo.available():
                torch.manual_seed(seed)
                net = architectures.he_init(architectures.build(name))
                progress(f"{name}: no trained weights shipped, using seeded random weights")
                source = f"{name} (random weights)"
                model = net
        if calib is None:
            raise UsageError("an ONNX model needs --calib to be compiled for the benchmark")
        shape = architectures.input_shape(name) if zoo.is_zoo_name(name) else None
        plan = compile_model(model, calib, strategy=strategy, data_dir=data_dir, seed=seed,
                             input_shape=shape, progress=progress)
    res = bench_plan(plan, batch=batch, device=device, repeat=repeat, seed=seed,
                     progress=progress)
    return {"model": source, **res}
