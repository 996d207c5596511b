"""The garbled-table stream: one record per gate, in gate order.

The garbler appends a record per gate call (its gate id, the ciphertext count and the digit
arrays with their modulus); the evaluator reads the records back in the same order and checks
that each one is the gate it expects.  In memory digits are ``uint8`` for moduli up to 256,
``uint16`` up to 65536, ``uint32`` otherwise; in a stream each digit takes ``bits(q - 1)``
bits (:mod:`dashc.runtime.bitpack`: a row mod 19 of 30 digits is 19 bytes, not 30).

Containers:

* :class:`MemoryTables`: a list of records (sink and source at once), convertible to and from
  bytes; for tests and in-process pipelines.
* :class:`TableWriter` / :class:`TableReader`: the same stream on a file, written record by
  record (a big model streams layer by layer) and read back lazily.

Byte format (little-endian)::

    magic  b"DASHCGT3"
    record*:  u64 gate_id, u64 ciphertexts, u16 n_arrays,
              n_arrays x (u32 modulus, u8 ndim, ndim x u64 dim, packed digits)
    trailer:  u64 0xFFFF_FFFF_FFFF_FFFF, 32-byte SHA-256 of every byte before the trailer

A reader raises :class:`dashc.errors.IntegrityError` on a bad magic, a truncated stream, a
checksum mismatch, a digit out of range, or a record that is not the gate the evaluator asks
for.
"""
from __future__ import annotations

import hashlib
import io
import os
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import numpy as np
import torch

from dashc.errors import IntegrityError

from . import bitpack
from .pipe import Prefetch, Sink

MAGIC = b"DASHCGT3"  # 3: projection rows are label digits exclusive-or pad fields
TRAILER = 0xFFFF_FFFF_FFFF_FFFF
MAX_DIGITS = 1 << 40  # per array; larger shapes can only come from a corrupted header
#: small records go to the writer's worker in batches of about this many digit bytes
#: (handing over one small record costs more than writing it)
BATCH_BYTES = 1 << 20
#: a lazy reader keeps gate tables of at least this many rows per wire packed (the evaluator
#: opens one row of each wire; fewer rows are cheaper to unpack whole, ahead, on the
#: reader's thread)
LAZY_MIN_ROWS = 4
#: streams below this size are read without a worker thread
PREFETCH_MIN_BYTES = 16 << 20
_HEAD = struct.Struct("<QQH")
_ARRAY = struct.Struct("<IB")


def digit_dtype(q: int) -> tuple[int, type]:
    if q <= 1 << 8:
        return 1, np.uint8
    if q <= 1 << 16:
        return 2, np.uint16
    return 3, np.uint32


def digit_bytes(q: int) -> int:
    """Bytes per stored digit modulo ``q``."""
    return np.dtype(digit_dtype(q)[1]).itemsize


class Packed:
    """Digits mod ``q`` of one table array still in their stream packing
    (:mod:`dashc.runtime.bitpack`), as a lazy reader hands them out: the evaluator's compiled
    kernels read the one row each wire opens in place, so the other ``p - 2`` rows of a
    projection are never unpacked.  :meth:`unpack` gives (and checks) them all."""

    __slots__ = ("data", "q", "shape", "bits", "dtype", "_where")

    def __init__(self, data: np.ndarray, q: int, shape: tuple[int, ...], where: str = ""):
        self.data = data
        self.q = int(q)
        self.shape = tuple(int(d) for d in shape)
        self.bits = bitpack.field_bits(self.q)
        self.dtype = np.dtype(digit_dtype(self.q)[1])
        self._where = where

    @property
    def size(self) -> int:
        n = 1
        for d in self.shape:
            n *= d
        return n

    @property
    def ndim(self) -> int:
        return len(self.shape)

    @property
    def nbytes(self) -> int:
        """Bytes held (the packed digits)."""
        return int(self.data.nbytes)

    def unpack(self) -> np.ndarray:
        a = bitpack.unpack(self.data, self.size, self.q, self.dtype)
        if a is None:
            raise IntegrityError(f"{self._where}digit out of range for modulus {self.q}")
        return a.reshape(self.shape)


@dataclass
class Record:
    gate_id: int
    ciphertexts: int
    arrays: list[tuple[int, np.ndarray]]  # (modulus, digits)

    @property
    def nbytes(self) -> int:
        """Bytes of the packed digits (as stored in a stream)."""
        return sum(bitpack.packed_size(a.size, q) for q, a in self.arrays)


def make_record(gate_id: int, ciphertexts: int,
                arrays: list[tuple[int, torch.Tensor]]) -> Record:
    out = []
    for q, t in arrays:
        _, dt = digit_dtype(q)
        if isinstance(t, torch.Tensor):
            t = t.detach()
            if t.device.type != "cpu" or t.dtype != torch.from_numpy(np.empty(0, dt)).dtype:
                t = t.to("cpu", torch.int64)
            t = t.numpy()
        out.append((q, np.ascontiguousarray(t, dtype=dt)))  # no copy when already stored so
    return Record(gate_id, ciphertexts, out)


def _pieces(rec: Record) -> list:
    """The bytes of one record as a list of buffers (headers and packed digits)."""
    parts = [_HEAD.pack(rec.gate_id, rec.ciphertexts, len(rec.arrays))]
    for q, a in rec.arrays:
        parts.append(_ARRAY.pack(q, a.ndim) + struct.pack(f"<{a.ndim}Q", *a.shape))
        parts.append(memoryview(a.data if isinstance(a, Packed) else bitpack.pack(a, q)))
    return parts


class TableStats:
    """Counts of gates, ciphertexts and table bytes seen so far."""

    def __init__(self):
        self.gates = 0
        self.ciphertexts = 0
        self.bytes = 0

    def add(self, rec: Record) -> None:
        self.gates += 1
        self.ciphertexts += rec.ciphertexts
        self.bytes += rec.nbytes

    def as_dict(self) -> dict[str, int]:
        return {"gates": self.gates, "ciphertexts": self.ciphertexts, "bytes": self.bytes}


def _check(rec: Record | None, gate_id: int, narrays: int) -> Record:
    if rec is None:
        raise IntegrityError(f"garbled tables end before gate {gate_id}")
    if rec.gate_id != gate_id or len(rec.arrays) != narrays:
        raise IntegrityError(f"garbled tables out of order: expected gate {gate_id} with "
                             f"{narrays} arrays, found gate {rec.gate_id} with "
                             f"{len(rec.arrays)}")
    return rec


class MemoryTables:
    """In-memory table stream: the garbler appends, the evaluator reads in order."""

    def __init__(self, records: list[Record] | None = None):
        self.records: list[Record] = list(records or [])
        self.stats = TableStats()
        for rec in self.records:
            self.stats.add(rec)
        self._pos = 0

    def append(self, rec: Record) -> None:
        self.records.append(rec)
        self.stats.add(rec)

    def read(self, gate_id: int, narrays: int) -> Record:
        rec = self.records[self._pos] if self._pos < len(self.records) else None
        self._pos += 1
        return _check(rec, gate_id, narrays)

    def rewind(self) -> None:
        self._pos = 0

    def to_bytes(self) -> bytes:
        buf = io.BytesIO()
        writer = TableWriter(buf)
        for rec in self.records:
            writer.append(rec)
        writer.close()
        return buf.getvalue()

    @classmethod
    def from_bytes(cls, data: bytes) -> "MemoryTables":
        return cls(list(TableReader(io.BytesIO(data)).records()))


class TableWriter:
    """Streams records to a file (path or binary file object) as they are appended.

    With ``background`` (the default) a worker thread packs, hashes and writes each record
    while the garbler goes on with the next gate (:class:`dashc.runtime.pipe.Sink`); small
    records are handed over in batches of about :data:`BATCH_BYTES`.
    :meth:`flush` waits until everything appended is in the file.  A record's arrays must
    not change after it is appended."""

    def __init__(self, target: str | Path | BinaryIO, background: bool = True):
        self._own = not hasattr(target, "write")
        self._f = open(target, "wb") if self._own else target
        self._sha = hashlib.sha256()
        self.stats = TableStats()
        self._write(MAGIC)
        self._sink = Sink(self._emit_all, name="table-writer") if background else None
        self._batch: list[Record] = []
        self._batch_bytes = 0

    def _write(self, data: bytes) -> None:
        self._sha.update(data)
        self._f.write(data)

    def _emit(self, rec: Record) -> None:
        for piece in _pieces(rec):
            self._write(piece)
        self._f.flush()  # each gate's tables leave memory as soon as they are garbled

    def _emit_all(self, recs: list[Record]) -> None:
        for rec in recs:
            self._emit(rec)

    def _hand_over(self) -> None:
        if self._batch:
            self._sink.put(self._batch, self._batch_bytes)
            self._batch, self._batch_bytes = [], 0

    def append(self, rec: Record) -> None:
        self.stats.add(rec)
        if self._sink is None:
            self._emit(rec)
            return
        self._batch.append(rec)
        self._batch_bytes += 64 + sum(a.nbytes for _, a in rec.arrays)
        if self._batch_bytes >= BATCH_BYTES:
            self._hand_over()

    def flush(self) -> None:
        """Wait until every appended record is written (and flushed to the file)."""
        if self._sink is not None:
            self._hand_over()
            self._sink.drain()

    def close(self) -> None:
        if self._f is None:
            return
        try:
            if self._sink is not None:
                self._hand_over()
                self._sink.close()
            self._f.write(struct.pack("<Q", TRAILER) + self._sha.digest())
            self._f.flush()
        finally:
            if self._own:
                self._f.close()
            self._f = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def _size(f) -> int | None:
    """Bytes of a file object, when it can tell without reading."""
    try:
        return os.fstat(f.fileno()).st_size
    except (AttributeError, OSError, io.UnsupportedOperation):
        pass
    try:
        pos = f.tell()
        end = f.seek(0, io.SEEK_END)
        f.seek(pos)
        return end
    except (AttributeError, OSError, io.UnsupportedOperation):
        return None


class TableReader:
    """Reads a table stream lazily, record by record, verifying the trailer checksum.

    With ``prefetch`` (the default: True for streams of at least
    :data:`PREFETCH_MIN_BYTES`, or of unknown size) a worker thread reads, hashes and unpacks
    the records ahead of the evaluator (:class:`dashc.runtime.pipe.Prefetch`, a bounded
    number of bytes ahead); errors are raised at the record where they occur, as without
    it.  :meth:`close` stops the worker early (an evaluation that failed).

    With ``lazy`` the gate tables ``(B, E, rows, n)`` of at least :data:`LAZY_MIN_ROWS`
    rows stay :class:`Packed`: what the evaluator wants.  Their digits are not range-checked
    then; a damaged table still fails the checksum at :meth:`finish`, and a forged row the
    authentication of the outputs."""

    def __init__(self, source: str | Path | BinaryIO, prefetch: bool | None = None,
                 lazy: bool = False):
        self._own = not hasattr(source, "read")
        self._f = open(source, "rb") if self._own else source
        self._name = str(source) if self._own else "table stream"
        self._sha = hashlib.sha256()
        self.stats = TableStats()
        self._done = False
        self._lazy = bool(lazy)
        magic = self._take(len(MAGIC))
        if magic != MAGIC:
            if self._own:
                self._f.close()
            if magic[:7] == MAGIC[:7]:
                raise IntegrityError(f"{self._name}: garbled tables of another format version "
                                     f"({magic[7:].decode(errors='replace')!r}, this version "
                                     f"reads {MAGIC[7:].decode()!r}): garble them again")
            raise IntegrityError(f"{self._name}: not a garbled-table stream (bad magic)")
        if prefetch is None:
            size = _size(self._f)
            prefetch = size is None or size >= PREFETCH_MIN_BYTES
        self._ahead = Prefetch(self._produce, name="table-reader") if prefetch else None

    def _take(self, n: int, hashed: bool = True) -> bytes:
        data = self._f.read(n)
        if len(data) != n:
            raise IntegrityError(f"{self._name}: truncated garbled-table stream")
        if hashed:
            self._sha.update(data)
        return data

    def _take_into(self, n: int) -> bytearray:
        """``n`` bytes read straight into a fresh writable buffer (hashed)."""
        buf = bytearray(n)
        if self._f.readinto(buf) != n:
            raise IntegrityError(f"{self._name}: truncated garbled-table stream")
        self._sha.update(buf)
        return buf

    def _produce(self) -> tuple[Record, int] | None:
        rec = self._parse()
        # a record counts its header too, so a flood of empty records is bounded as well
        return None if rec is None else (rec, 64 + sum(a.nbytes for _, a in rec.arrays))

    def _next(self) -> Record | None:
        rec = self._parse() if self._ahead is None else self._ahead.get()
        if rec is not None:
            self.stats.add(rec)
        return rec

    def _parse(self) -> Record | None:
        if self._done:
            return None
        head = self._f.read(8)
        if len(head) != 8:
            raise IntegrityError(f"{self._name}: truncated garbled-table stream")
        (gate_id,) = struct.unpack("<Q", head)
        if gate_id == TRAILER:
            if self._take(32, hashed=False) != self._sha.digest():
                raise IntegrityError(f"{self._name}: garbled-table checksum mismatch")
            self._done = True
            if self._own:
                self._f.close()
            return None
        self._sha.update(head)
        ciphertexts, narrays = struct.unpack("<QH", self._take(10))
        arrays = []
        for _ in range(narrays):
            q, ndim = _ARRAY.unpack(self._take(_ARRAY.size))
            if q < 2:
                raise IntegrityError(f"{self._name}: invalid modulus {q}")
            shape = struct.unpack(f"<{ndim}Q", self._take(8 * ndim))
            count = 1
            for d in shape:
                count *= int(d)
            if count > MAX_DIGITS:
                raise IntegrityError(f"{self._name}: implausible table shape {shape}")
            data = self._take_into(bitpack.packed_size(count, q))
            if self._lazy and len(shape) == 4 and shape[2] >= LAZY_MIN_ROWS:
                arrays.append((q, Packed(np.frombuffer(data, np.uint8), q, shape,
                                         f"{self._name}: gate {gate_id}: ")))
                continue
            a = bitpack.unpack(data, count, q, digit_dtype(q)[1])
            if a is None:
                raise IntegrityError(f"{self._name}: digit out of range for modulus {q} "
                                     f"(gate {gate_id})")
            arrays.append((q, a.reshape(shape)))
        return Record(gate_id, ciphertexts, arrays)

    def records(self):
        while (rec := self._next()) is not None:
            yield rec

    def read(self, gate_id: int, narrays: int) -> Record:
        return _check(self._next(), gate_id, narrays)

    def finish(self) -> None:
        """Consume the trailer and verify the checksum (raises if records are left)."""
        try:
            if self._next() is not None:
                raise IntegrityError(f"{self._name}: unread garbled tables left in the stream")
        finally:
            self.close()

    def close(self) -> None:
        """Stop reading ahead and release the file (idempotent)."""
        if self._ahead is not None:
            self._ahead.close()
        if self._own and not self._f.closed:
            self._f.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
