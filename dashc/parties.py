"""The four party steps on files: garble, encode, evaluate, decode.

A garbling directory ``DIR`` (``dashc garble PLAN -o DIR --count N``)::

    DIR/evaluator/plan.dashc     the plan (public: structure and quantized weights)
    DIR/evaluator/circuit.json   circuit id, count, plan checksum (public)
    DIR/evaluator/tables.dgt     garbled tables of the N circuits (checksummed stream)
    DIR/garbler/plan.dashc       the garbler's copy of the plan (input and output scales)
    DIR/garbler/secrets.dgs      global offsets, input and output zero labels (owner-only)
    DIR/garbler/encoded          marker written when the circuits served their inference

``DIR/evaluator`` is everything the evaluator receives offline; nothing in it is secret.
Online, ``encode`` (garbler) writes ``inputs.dgl`` (active input labels), ``evaluate``
(evaluator) writes ``outputs.dgl`` (active output labels) and ``decode`` (garbler) checks
every output label's authenticity and returns logits and classes.  The N circuits are one
batch: each has its own global offsets and serves exactly one input.
"""
from __future__ import annotations

import hashlib
import json
import os
import secrets as pysecrets
import time
from pathlib import Path

import numpy as np
import torch

from . import bundle, planfile
from .errors import CircuitReuseError, DataError, IntegrityError, PlanFileError, UsageError
from .ir import Plan
from .runtime import execute
from .runtime.backend import CrtTensor
from .runtime.evaluator import Evaluator
from .runtime.garbler import Garbler
from .runtime.labels import LabelTensor
from .runtime.tables import TableReader, TableWriter, digit_dtype

FORMAT = 1
PLAN, CIRCUIT, TABLES = "plan.dashc", "circuit.json", "tables.dgt"
SECRETS, ENCODED = "secrets.dgs", "encoded"
INPUTS, OUTPUTS = "inputs.dgl", "outputs.dgl"


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


# -- label files -----------------------------------------------------------------------------
def labels_to_arrays(tensors: list[CrtTensor]) -> tuple[list, dict[str, np.ndarray]]:
    layout, arrays = [], {}
    for i, t in enumerate(tensors):
        layout.append([int(q) for q in t.moduli])
        for q, lab in t.parts.items():
            arrays[f"t{i}_q{q}"] = lab.digits.cpu().numpy().astype(digit_dtype(q)[1])
    return layout, arrays


def arrays_to_labels(layout, arrays, where: str) -> list[CrtTensor]:
    out = []
    try:
        for i, moduli in enumerate(layout):
            out.append(CrtTensor({int(q): LabelTensor(
                torch.from_numpy(arrays[f"t{i}_q{q}"].astype(np.int64)), int(q))
                for q in moduli}))
    except (KeyError, TypeError, ValueError) as e:
        raise IntegrityError(f"{where}: inconsistent label file ({e})") from None
    return out


def write_labels(path, circuit_id: str, role: str, tensors: list[CrtTensor]) -> int:
    layout, arrays = labels_to_arrays(tensors)
    data = bundle.dumps("labels", {"circuit": circuit_id, "role": role, "layout": layout,
                                   "format": FORMAT}, arrays)
    bundle.write(path, data)
    return len(data)


def read_labels(path, circuit_id: str, role: str) -> list[CrtTensor]:
    header, arrays = bundle.loads(bundle.read(path, IntegrityError), "labels", str(path),
                                  IntegrityError)
    if header.get("role") != role:
        raise IntegrityError(f"{path}: holds {header.get('role')} labels, expected {role}")
    if header.get("circuit") != circuit_id:
        raise IntegrityError(f"{path}: labels of circuit {header.get('circuit')}, not of "
                             f"circuit {circuit_id}")
    return arrays_to_labels(header.get("layout", []), arrays, str(path))


# -- garbler secrets -------------------------------------------------------------------------
def _write_secrets(path, circuit_id: str, plan_sha: str, garbler: Garbler) -> None:
    state = garbler.state()
    arrays = {f"delta_q{q}": d.cpu().numpy() for q, d in state["delta"].items()}
    in_layout, in_arrays = labels_to_arrays(state["inputs"])
    out_layout, out_arrays = labels_to_arrays(state["outputs"])
    arrays.update({f"in_{k}": v for k, v in in_arrays.items()})
    arrays.update({f"out_{k}": v for k, v in out_arrays.items()})
    header = {"circuit": circuit_id, "plan_sha256": plan_sha, "batch": state["batch"],
              "inputs": in_layout, "outputs": out_layout, "format": FORMAT}
    bundle.write(path, bundle.dumps("secrets", header, arrays), private=True)


def _garbler_plan(garbler_dir: Path, header: dict) -> Plan:
    data = bundle.read(garbler_dir / PLAN)
    if _sha(data) != header["plan_sha256"]:
        raise PlanFileError(f"{garbler_dir / PLAN}: plan does not match the secrets file")
    return planfile.loads(data, str(garbler_dir / PLAN))


def _read_secrets(garbler_dir: Path) -> tuple[dict, Garbler]:
    path = garbler_dir / SECRETS
    header, arrays = bundle.loads(bundle.read(path), "secrets", str(path))
    try:
        delta = {int(k[len("delta_q"):]): torch.from_numpy(v.astype(np.int64))
                 for k, v in arrays.items() if k.startswith("delta_q")}
        ins = arrays_to_labels(header["inputs"], {k[3:]: v for k, v in arrays.items()
                                                  if k.startswith("in_")}, str(path))
        outs = arrays_to_labels(header["outputs"], {k[4:]: v for k, v in arrays.items()
                                                    if k.startswith("out_")}, str(path))
        garbler = Garbler.from_state({"batch": int(header["batch"]), "delta": delta,
                                      "inputs": ins, "outputs": outs})
    except (KeyError, TypeError, ValueError, IntegrityError) as e:
        raise PlanFileError(f"{path}: inconsistent secrets file ({e})") from None
    return header, garbler


def _circuit(evaluator_dir: Path) -> dict:
    path = evaluator_dir / CIRCUIT
    try:
        info = json.loads(path.read_text())
        info["circuit"], info["count"], info["plan_sha256"]
    except OSError as e:
        raise PlanFileError(f"{path}: cannot read ({e.strerror})") from None
    except (ValueError, KeyError, TypeError):
        raise PlanFileError(f"{path}: corrupted circuit description") from None
    if int(info.get("format", 0)) > FORMAT:
        raise PlanFileError(f"{path}: format {info['format']} is newer than this dashc")
    return info


def _load_plan_checked(evaluator_dir: Path, info: dict) -> Plan:
    data = bundle.read(evaluator_dir / PLAN)
    if _sha(data) != info["plan_sha256"]:
        raise IntegrityError(f"{evaluator_dir / PLAN}: plan does not match the garbled "
                             "circuit (checksum differs)")
    return planfile.loads(data, str(evaluator_dir / PLAN))


def circuit_count(garble_dir) -> int:
    """How many circuits the garbling directory holds."""
    return int(_circuit(Path(garble_dir) / "evaluator")["count"])


# -- the four steps ---------------------------------------------------------------------------
def garble(plan, out_dir, count: int = 1, device: str = "cpu") -> dict:
    """Garble ``count`` circuits of ``plan`` into ``out_dir`` (see the module docstring)."""
    if int(count) < 1:
        raise UsageError(f"--count must be at least 1, got {count}")
    plan_bytes = planfile.dumps(plan if isinstance(plan, Plan) else planfile.load(plan))
    plan = planfile.loads(plan_bytes)
    out = Path(out_dir)
    ev_dir, ga_dir = out / "evaluator", out / "garbler"
    ev_dir.mkdir(parents=True, exist_ok=True)
    ga_dir.mkdir(parents=True, exist_ok=True)
    if (ga_dir / ENCODED).exists():
        (ga_dir / ENCODED).unlink()
    circuit_id = pysecrets.token_hex(16)
    t0 = time.perf_counter()
    with TableWriter(ev_dir / TABLES) as tables:
        garbler = Garbler(int(count), tables, device=device)
        execute.run(plan, garbler)
    elapsed = time.perf_counter() - t0
    bundle.write(ev_dir / PLAN, plan_bytes)
    bundle.write(ga_dir / PLAN, plan_bytes)
    info = {"circuit": circuit_id, "count": int(count), "plan_sha256": _sha(plan_bytes),
            "format": FORMAT}
    (ev_dir / CIRCUIT).write_text(json.dumps(info, indent=1) + "\n")
    _write_secrets(ga_dir / SECRETS, circuit_id, info["plan_sha256"], garbler)
    stats = tables.stats.as_dict()
    return {"circuit": circuit_id, "count": int(count), "garble_s": elapsed,
            "ciphertexts": stats["ciphertexts"], "table_bytes": (ev_dir / TABLES).stat().st_size,
            "ciphertexts_per_inference": stats["ciphertexts"] // int(count),
            "evaluator_dir": str(ev_dir), "garbler_dir": str(ga_dir)}


def encode(garble_dir, x: np.ndarray, output=None) -> dict:
    """Garbler, online: float inputs ``x`` (one per circuit, preprocessed as the model
    expects) -> active input labels for the evaluator."""
    from .calibration import check_input
    from .compiler import encode_input

    garble_dir = Path(garble_dir)
    header, garbler = _read_secrets(garble_dir / "garbler")
    plan = _garbler_plan(garble_dir / "garbler", header)
    xi = encode_input(plan, check_input(np.asarray(x), plan.input_node.shape, "data"))
    if len(xi) != header["batch"]:
        raise DataError(f"{len(xi)} inputs given for {header['batch']} garbled circuits; "
                        "give exactly one input per circuit")
    marker = garble_dir / "garbler" / ENCODED
    try:  # claim the circuits before any label leaves: a circuit serves one inference
        os.close(os.open(marker, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
    except FileExistsError:
        raise CircuitReuseError(f"{garble_dir}: these circuits already encoded an input; "
                                "garble fresh ones for every inference") from None
    t0 = time.perf_counter()
    labels = garbler.encode([torch.as_tensor(np.asarray(xi, dtype=np.int64))])
    elapsed = time.perf_counter() - t0
    output = Path(output) if output else garble_dir / "evaluator" / INPUTS
    nbytes = write_labels(output, header["circuit"], "inputs", labels)
    return {"n": int(len(xi)), "encode_s": elapsed, "input_label_bytes": nbytes,
            "inputs": str(output)}


def evaluate(evaluator_dir, inputs=None, output=None, device: str = "cpu") -> dict:
    """Evaluator: plan + tables + input labels -> output labels."""
    evaluator_dir = Path(evaluator_dir)
    info = _circuit(evaluator_dir)
    plan = _load_plan_checked(evaluator_dir, info)
    inputs = Path(inputs) if inputs else evaluator_dir / INPUTS
    labels = read_labels(inputs, info["circuit"], "inputs")
    t0 = time.perf_counter()
    with TableReader(evaluator_dir / TABLES, lazy=True) as reader:
        result = execute.run(plan, Evaluator(labels, reader, device=device),
                             batch=labels[0].shape[0])
        reader.finish()
    elapsed = time.perf_counter() - t0
    output = Path(output) if output else evaluator_dir / OUTPUTS
    nbytes = write_labels(output, info["circuit"], "outputs", [result])
    return {"evaluate_s": elapsed, "output_label_bytes": nbytes, "outputs": str(output)}


def decode(garble_dir, outputs=None) -> dict:
    """Garbler: output labels -> logits and classes; every label is authenticated."""
    garble_dir = Path(garble_dir)
    header, garbler = _read_secrets(garble_dir / "garbler")
    output_scale = _garbler_plan(garble_dir / "garbler", header).output_scale
    outputs = Path(outputs) if outputs else garble_dir / "evaluator" / OUTPUTS
    labels = read_labels(outputs, header["circuit"], "outputs")
    t0 = time.perf_counter()
    (logits,) = garbler.decode(labels)
    elapsed = time.perf_counter() - t0
    logits = logits.cpu().numpy()
    out = {"n": int(logits.shape[0]), "decode_s": elapsed,
           "classes": logits.reshape(len(logits), -1).argmax(1).tolist(),
           "logits_int": logits.tolist(), "logits": (logits * output_scale).tolist()}
    return out
