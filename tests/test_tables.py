"""The garbled-table stream: compact storage, counts, file and byte round trips."""
import io

import numpy as np
import pytest
import torch

from dashc.errors import IntegrityError
from dashc.runtime import bitpack, tables
from dashc.runtime.tables import (MAGIC, MemoryTables, TableReader, TableWriter, digit_bytes,
                                  make_record)


def _records():
    g = torch.Generator().manual_seed(0)
    return [make_record(0, 12, [(3, torch.randint(0, 3, (2, 3, 2, 80), generator=g))]),
            make_record(1, 5, [(251, torch.randint(0, 251, (1, 5, 1, 16), generator=g)),
                               (251, torch.randint(0, 251, (1, 5, 2), generator=g))]),
            make_record(2, 4, [(257, torch.randint(0, 257, (4, 15), generator=g))])]


def _same(a, b):
    assert a.gate_id == b.gate_id and a.ciphertexts == b.ciphertexts
    assert len(a.arrays) == len(b.arrays)
    for (qa, xa), (qb, xb) in zip(a.arrays, b.arrays):
        assert qa == qb and xa.dtype == xb.dtype and np.array_equal(xa, xb)


def test_compact_digit_storage():
    recs = _records()
    assert recs[0].arrays[0][1].dtype == np.uint8 and recs[2].arrays[0][1].dtype == np.uint16
    assert digit_bytes(251) == 1 and digit_bytes(257) == 2 and digit_bytes(70001) == 4
    assert recs[0].nbytes == 2 * 3 * 2 * 80 * 2 // 8  # stored: two bits per digit mod 3
    assert recs[2].nbytes == -(-4 * 15 * 9 // 8)  # nine bits per digit mod 257


def test_counts():
    t = MemoryTables()
    for r in _records():
        t.append(r)
    assert t.stats.as_dict() == {"gates": 3, "ciphertexts": 21,
                                 "bytes": 240 + 80 + 10 + 68}


def test_bytes_round_trip_and_ordered_reads():
    t = MemoryTables(_records())
    back = MemoryTables.from_bytes(t.to_bytes())
    for a, b in zip(t.records, back.records):
        _same(a, b)
    assert back.stats.as_dict() == t.stats.as_dict()
    back.read(0, 1)
    with pytest.raises(IntegrityError, match="out of order"):
        back.read(2, 1)


def test_file_streams_record_by_record(tmp_path):
    path = tmp_path / "tables.bin"
    recs = _records()
    with TableWriter(path) as w:
        w.append(recs[0])
        w.flush()
        size_after_first = path.stat().st_size  # written before the next layer exists
        for r in recs[1:]:
            w.append(r)
    assert size_after_first > recs[0].nbytes
    reader = TableReader(path)
    for i, r in enumerate(recs):
        _same(reader.read(i, len(r.arrays)), r)
    reader.finish()
    assert reader.stats.gates == 3


def test_corruption_and_truncation_detected():
    data = MemoryTables(_records()).to_bytes()
    for offset in (100, 40):  # a digit of the first record, a byte of its header
        flipped = bytearray(data)
        flipped[offset] ^= 1
        with pytest.raises(IntegrityError, match="checksum|range|truncated|modulus"):
            list(TableReader(io.BytesIO(bytes(flipped))).records())
    with pytest.raises(IntegrityError, match="truncated"):
        list(TableReader(io.BytesIO(data[:-50])).records())
    with pytest.raises(IntegrityError, match="magic"):
        TableReader(io.BytesIO(b"NOTTABLE" + data[8:]))
    with pytest.raises(IntegrityError, match="another format version .'2'.*garble them again"):
        TableReader(io.BytesIO(b"DASHCGT2" + data[8:]))
    reader = TableReader(io.BytesIO(data))
    reader.read(0, 1)
    with pytest.raises(IntegrityError, match="unread"):
        reader.finish()
    with pytest.raises(IntegrityError, match="end before"):
        MemoryTables().read(0, 1)


@pytest.mark.parametrize("q", [2, 3, 5, 7, 11, 13, 17, 19, 127, 251, 257, 65537])
def test_bitpack_round_trip_every_length(q):
    rng = np.random.default_rng(q)
    dt = np.uint8 if q <= 256 else np.uint16 if q <= 65536 else np.uint32
    for count in (0, 1, 7, 8, 9, 15, 16, 17, 1000, 4099):
        d = rng.integers(0, q, count).astype(dt)
        d[: min(count, 3)] = q - 1  # the largest digit is kept whole
        packed = bitpack.pack(d, q)
        assert packed.dtype == np.uint8 and packed.size == bitpack.packed_size(count, q)
        back = bitpack.unpack(bytearray(packed.tobytes()), count, q, dt)
        assert back is not None and back.dtype == dt and np.array_equal(back, d)


@pytest.mark.parametrize("q", [2, 3, 5, 19, 257])
def test_bitpack_refuses_out_of_range_digits_and_padding(q):
    count = 13  # leaves padding bits in the last byte for every width here
    d = np.full(count, q - 1, dtype=np.uint16)
    packed = bytearray(bitpack.pack(d, q).tobytes())
    packed[-1] |= 0x80  # a padding bit
    assert bitpack.unpack(packed, count, q, np.uint16) is None
    if q & (q - 1):  # not a power of two: all-ones fields are digits >= q
        ones = bytearray(b"\xff" * bitpack.packed_size(count, q))
        assert bitpack.unpack(ones, count, q, np.uint16) is None
    assert bitpack.unpack(bytearray(len(packed) + 1), count, q, np.uint16) is None


def test_stream_refuses_a_digit_out_of_range():
    rec = make_record(0, 1, [(3, np.array([[2, 1, 0, 2, 2, 1, 0, 1]], dtype=np.uint8))])
    data = bytearray(MemoryTables([rec]).to_bytes())
    body = len(MAGIC) + 18 + 5 + 16  # record head, array head, two dims
    data[body] |= 0b11  # digit 0 becomes 3
    with pytest.raises(IntegrityError, match="out of range for modulus 3"):
        list(TableReader(io.BytesIO(bytes(data))).records())


@pytest.mark.parametrize("background", [True, False])
def test_background_writer_and_prefetching_reader_give_the_same_stream(monkeypatch,
                                                                        background):
    recs = _records()
    buf = io.BytesIO()
    monkeypatch.setattr(tables, "BATCH_BYTES", 300)  # batches of one and of two records
    with TableWriter(buf, background=background) as w:
        for r in recs:
            w.append(r)
    assert buf.getvalue() == MemoryTables(recs).to_bytes()
    for prefetch in (True, False):
        reader = TableReader(io.BytesIO(buf.getvalue()), prefetch=prefetch)
        for i, r in enumerate(recs):
            _same(reader.read(i, len(r.arrays)), r)
        reader.finish()
        assert reader.stats.gates == len(recs)


def test_prefetching_reader_raises_at_the_damaged_record_and_stays_failed():
    recs = _records()
    data = MemoryTables(recs).to_bytes()
    cut = len(MemoryTables(recs[:1]).to_bytes()) - 40 + 30  # inside the second record
    reader = TableReader(io.BytesIO(data[:cut]), prefetch=True)
    _same(reader.read(0, len(recs[0].arrays)), recs[0])  # the intact record still comes first
    for _ in range(2):
        with pytest.raises(IntegrityError, match="truncated"):
            reader.read(1, len(recs[1].arrays))
    reader.close()


@pytest.mark.parametrize("batch", [0, 1 << 20])
def test_writer_worker_error_reaches_the_garbler(monkeypatch, batch):
    monkeypatch.setattr(tables, "BATCH_BYTES", batch)  # 0: every record on its own

    class Broken(io.BytesIO):
        def write(self, data):
            if len(data) > 100:
                raise OSError(28, "No space left on device")
            return super().write(data)

    w = TableWriter(Broken())
    with pytest.raises(OSError, match="No space"):
        for r in _records() * 50:
            w.append(r)
        w.close()


def test_reader_close_stops_reading_ahead(tmp_path):
    path = tmp_path / "t.dgt"
    with TableWriter(path) as w:
        for r in _records() * 20:
            w.append(r)
    reader = TableReader(path, prefetch=True)
    reader.read(0, len(_records()[0].arrays))
    reader.close()
    reader.close()  # idempotent


def test_prefetch_is_chosen_by_stream_size(tmp_path):
    small = MemoryTables(_records()).to_bytes()
    assert TableReader(io.BytesIO(small))._ahead is None
    path = tmp_path / "big.dgt"
    path.write_bytes(small + b"\0" * tables.PREFETCH_MIN_BYTES)  # size only: never read
    with TableReader(path) as reader:
        assert reader._ahead is not None
