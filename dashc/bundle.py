"""Checksummed containers for the party files (secrets, labels), loaded without pickle.

Layout (little-endian)::

    b"DASHCBND"  u32 version  16-byte kind (ASCII, NUL-padded)
    u64 header_length  header (UTF-8 JSON)  u64 npz_length  npz bytes
    sha256 of everything before it (32 bytes)

``loads`` checks magic, kind, version, lengths and checksum before parsing and raises the
error class the caller names (a damaged secrets file is a file error; damaged labels are an
integrity failure).
"""
from __future__ import annotations

import hashlib
import io
import json
import os
import struct
from pathlib import Path

import numpy as np

from .errors import DashcError, PlanFileError

MAGIC = b"DASHCBND"
VERSION = 1
_PREFIX = struct.Struct("<8sI16sQ")
_LEN = struct.Struct("<Q")
_DIGEST = 32


def dumps(kind: str, header: dict, arrays: dict[str, np.ndarray]) -> bytes:
    buf = io.BytesIO()
    np.savez(buf, **{k: np.ascontiguousarray(v) for k, v in arrays.items()})
    npz = buf.getvalue()
    head = json.dumps(header, sort_keys=True).encode()
    body = (_PREFIX.pack(MAGIC, VERSION, kind.encode().ljust(16, b"\0"), len(head)) + head
            + _LEN.pack(len(npz)) + npz)
    return body + hashlib.sha256(body).digest()


def loads(data: bytes, kind: str, where: str, error: type[DashcError] = PlanFileError
          ) -> tuple[dict, dict[str, np.ndarray]]:
    if len(data) < _PREFIX.size + _LEN.size + _DIGEST:
        raise error(f"{where}: truncated file ({len(data)} bytes)")
    magic, version, raw_kind, head_len = _PREFIX.unpack_from(data)
    if magic != MAGIC:
        raise error(f"{where}: not a dashc party file")
    found = raw_kind.rstrip(b"\0").decode("ascii", "replace")
    if found != kind:
        raise error(f"{where}: holds {found!r}, expected {kind!r}")
    if version > VERSION:
        raise error(f"{where}: format version {version} is newer than this dashc supports "
                    f"({VERSION}); upgrade dashc")
    start = _PREFIX.size
    if len(data) < start + head_len + _LEN.size + _DIGEST:
        raise error(f"{where}: truncated file (header cut off)")
    (npz_len,) = _LEN.unpack_from(data, start + head_len)
    end = start + head_len + _LEN.size + npz_len
    if len(data) != end + _DIGEST:
        raise error(f"{where}: truncated or padded file ({len(data)} bytes, expected "
                    f"{end + _DIGEST})")
    if hashlib.sha256(data[:end]).digest() != data[end:]:
        raise error(f"{where}: checksum mismatch (the file was altered or damaged)")
    try:
        header = json.loads(data[start:start + head_len])
        with np.load(io.BytesIO(data[end - npz_len:end]), allow_pickle=False) as npz:
            arrays = {k: npz[k] for k in npz.files}
    except (ValueError, OSError) as e:
        raise error(f"{where}: unreadable content ({e})") from None
    return header, arrays


def write(path, data: bytes, private: bool = False) -> Path:
    """Write atomically; ``private`` files are readable by their owner only."""
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    flags = os.O_WRONLY | os.O_CREAT | os.O_TRUNC
    fd = os.open(tmp, flags, 0o600 if private else 0o644)
    with os.fdopen(fd, "wb") as f:
        f.write(data)
    os.replace(tmp, path)
    return path


def read(path, error: type[DashcError] = PlanFileError) -> bytes:
    try:
        return Path(path).read_bytes()
    except OSError as e:
        raise error(f"{path}: cannot read ({e.strerror})") from None
