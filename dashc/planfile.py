"""Plan files: a versioned, checksummed container loaded without pickle.

Layout (all integers little-endian)::

    b"DASHCPLN"  u32 version  u64 header_length  header (UTF-8 JSON)
    npz bytes (int64 arrays t0, t1, ...)  ONNX bytes (the float model)
    sha256 of everything before it (32 bytes)

The header holds the moduli, scales, nodes, metadata, the tensor table (name -> array key)
and the byte lengths of the two blobs.  ``load`` checks magic, version, lengths and checksum
before parsing, loads arrays with ``allow_pickle=False`` and runs :func:`spec.verify`.
"""
from __future__ import annotations

import hashlib
import io
import json
import os
import struct
from pathlib import Path

import numpy as np

from . import __version__, spec
from .errors import PlanFileError
from .ir import Node, Op, Plan

MAGIC = b"DASHCPLN"
VERSION = 1
_PREFIX = struct.Struct("<8sIQ")
_DIGEST = 32


def _jsonable(value):
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, (np.integer,)):
        return int(value)
    if isinstance(value, (np.floating,)):
        return float(value)
    return value


def _node_json(n: Node) -> dict:
    return {"name": n.name, "op": n.op.value, "inputs": list(n.inputs), "shape": list(n.shape),
            "attrs": _jsonable(dict(n.attrs)), "bound": int(n.bound), "scale": float(n.scale)}


def _node_from(d: dict) -> Node:
    attrs = {k: tuple(v) if isinstance(v, list) else v for k, v in d["attrs"].items()}
    return Node(name=str(d["name"]), op=Op(d["op"]), inputs=tuple(d["inputs"]),
                shape=tuple(int(s) for s in d["shape"]), attrs=attrs, bound=int(d["bound"]),
                scale=float(d["scale"]))


def dumps(plan: Plan) -> bytes:
    spec.verify(plan)
    names = sorted(plan.tensors)
    keys = {name: f"t{i}" for i, name in enumerate(names)}
    buf = io.BytesIO()
    np.savez(buf, **{keys[n]: np.ascontiguousarray(plan.tensors[n], dtype=np.int64)
                     for n in names})
    npz = buf.getvalue()
    header = {
        "format": "dashc-plan", "dashc_version": __version__,
        "moduli": [int(q) for q in plan.moduli],
        "input_scale": float(plan.input_scale), "input_clip": [int(c) for c in plan.input_clip],
        "output_scale": float(plan.output_scale),
        "nodes": [_node_json(n) for n in plan.nodes],
        "tensors": keys, "meta": _jsonable(dict(plan.meta)),
        "blobs": {"npz": len(npz), "onnx": len(plan.float_model)},
    }
    head = json.dumps(header, sort_keys=True).encode()
    body = _PREFIX.pack(MAGIC, VERSION, len(head)) + head + npz + bytes(plan.float_model)
    return body + hashlib.sha256(body).digest()


def loads(data: bytes, where: str = "plan") -> Plan:
    if not data[:len(MAGIC)] == MAGIC[:len(data)] or not data:
        raise PlanFileError(f"{where}: not a dashc plan file")
    if len(data) < _PREFIX.size:
        raise PlanFileError(f"{where}: truncated plan file ({len(data)} bytes)")
    magic, version, head_len = _PREFIX.unpack_from(data)
    if magic != MAGIC:
        raise PlanFileError(f"{where}: not a dashc plan file")
    if version > VERSION:
        raise PlanFileError(f"{where}: plan format version {version} is newer than this "
                            f"dashc supports ({VERSION}); upgrade dashc")
    if version < 1:
        raise PlanFileError(f"{where}: unknown plan format version {version}")
    start = _PREFIX.size
    if len(data) < start + head_len + _DIGEST:
        raise PlanFileError(f"{where}: truncated plan file (header cut off)")
    try:
        header = json.loads(data[start:start + head_len])
        sizes = header["blobs"]
        n_npz, n_onnx = int(sizes["npz"]), int(sizes["onnx"])
    except (ValueError, KeyError, TypeError):
        raise PlanFileError(f"{where}: corrupted plan file (unreadable header)") from None
    end = start + head_len + n_npz + n_onnx
    if len(data) < end + _DIGEST:
        raise PlanFileError(f"{where}: truncated plan file ({len(data)} of {end + _DIGEST} "
                            "bytes)")
    if len(data) > end + _DIGEST:
        raise PlanFileError(f"{where}: corrupted plan file (trailing bytes)")
    if hashlib.sha256(data[:end]).digest() != data[end:]:
        raise PlanFileError(f"{where}: corrupted plan file (checksum mismatch)")
    npz_bytes = data[start + head_len:start + head_len + n_npz]
    try:
        with np.load(io.BytesIO(npz_bytes), allow_pickle=False) as npz:
            arrays = {k: npz[k] for k in npz.files}
        tensors = {}
        for name, key in header["tensors"].items():
            arr = arrays[key]
            if arr.dtype != np.int64:
                raise ValueError(f"tensor {name} is {arr.dtype}, not int64")
            tensors[name] = arr
        plan = Plan(moduli=tuple(int(q) for q in header["moduli"]),
                    nodes=tuple(_node_from(d) for d in header["nodes"]), tensors=tensors,
                    input_scale=float(header["input_scale"]),
                    input_clip=tuple(int(c) for c in header["input_clip"]),
                    output_scale=float(header["output_scale"]),
                    meta=header.get("meta", {}), float_model=bytes(data[end - n_onnx:end]))
    except (ValueError, KeyError, TypeError, OSError) as e:
        raise PlanFileError(f"{where}: inconsistent plan file ({e})") from None
    return spec.verify(plan)


def save(plan: Plan, path) -> Path:
    path = Path(path)
    data = dumps(plan)
    tmp = path.with_name(path.name + ".tmp")
    try:
        tmp.write_bytes(data)
        os.replace(tmp, path)
    except OSError as e:
        raise PlanFileError(f"{path}: cannot write plan ({e.strerror})") from None
    return path


def load(path) -> Plan:
    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as e:
        raise PlanFileError(f"{path}: cannot read plan ({e.strerror})") from None
    return loads(data, str(path))
