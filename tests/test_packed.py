"""The evaluator reads the opened rows of packed tables in place: the same labels as from
unpacked tables, on every digit width, and damage is still caught."""
import io

import numpy as np
import pytest
import torch

from dashc import api
from dashc.compiler import encode_input
from dashc.errors import IntegrityError
from dashc.runtime import bitpack, cpu_kernels, execute
from dashc.runtime.evaluator import Evaluator
from dashc.runtime.garbler import Garbler
from dashc.runtime.rng import insecure_seeded_random
from dashc.runtime.tables import MemoryTables, Packed, TableReader, TableWriter

COMPILED = pytest.mark.skipif(not cpu_kernels.AVAILABLE, reason="numba missing")


@COMPILED
@pytest.mark.parametrize("q", [2, 3, 5, 17, 251, 257, 65537, 2 ** 31 - 1])
def test_select_rows_reads_packed_digits_exactly(q):
    rng = np.random.default_rng(q % 1000)
    W, r, n = 37, 4, 9
    dt = np.uint8 if q <= 256 else np.uint16 if q <= 65536 else np.uint32
    rows = rng.integers(0, q, size=(W, r, n)).astype(dt)
    lab = rng.integers(0, r + 1, size=(W, 3)).astype(np.int64)  # colour in column 0
    packed = bitpack.pack(rows, q)
    dense = np.empty((W - 5, n), np.int64)
    lazy = np.empty((W - 5, n), np.int64)
    cpu_kernels.select_rows(rows, np.zeros(1, np.uint8), 0, r, lab, 5, W, dense)
    cpu_kernels.select_rows(np.zeros((1, 1, 1), np.uint8), packed, bitpack.field_bits(q), r,
                            lab, 5, W, lazy)
    expect = np.where(lab[5:, :1] == 0, 0, rows[np.arange(5, W), np.maximum(lab[5:, 0] - 1, 0)])
    assert np.array_equal(dense, expect) and np.array_equal(lazy, expect)
    cols = np.empty(W, np.int64)
    cpu_kernels.select_cols(np.zeros((1, 1), np.uint8), bitpack.pack(rows[:, :, 0], q),
                            bitpack.field_bits(q), r, lab % r, 0, W, cols)
    assert np.array_equal(cols, rows[np.arange(W), lab[:, 0] % r, 0])


def test_packed_unpacks_and_checks():
    d = np.array([[2, 1, 0], [1, 2, 2]], np.uint8)
    p = Packed(bitpack.pack(d, 3), 3, (2, 3))
    assert p.size == 6 and p.ndim == 2 and p.bits == 2 and np.array_equal(p.unpack(), d)
    bad = Packed(np.full(2, 0xFF, np.uint8), 3, (2, 3), "t: ")
    with pytest.raises(IntegrityError, match="t: digit out of range for modulus 3"):
        bad.unpack()


def _garbled_file(tmp_path, name="C"):
    plan = api.compile_model(name, "mnist", calib_size=64, progress=None)
    x, _ = api.load_data("mnist", limit=2)
    xi = torch.as_tensor(encode_input(plan, x))
    path = tmp_path / "t.dgt"
    with TableWriter(path) as w:
        g = Garbler(len(xi), w, rng=insecure_seeded_random(3))
        execute.run(plan, g, batch=len(xi))
    return plan, xi, g, path


def _evaluate(plan, inputs, source, lazy):
    with TableReader(source, lazy=lazy) as reader:
        out = execute.run(plan, Evaluator(inputs, reader), batch=inputs[0].shape[0])
        reader.finish()
    return out


@pytest.mark.parametrize("compiled", [True, False])
def test_lazy_tables_give_the_same_labels(tmp_path, monkeypatch, compiled):
    plan, xi, g, path = _garbled_file(tmp_path)
    inputs = g.encode([xi])
    kinds = {type(a) for r in TableReader(path, lazy=True).records() for _, a in r.arrays}
    assert kinds == {Packed, np.ndarray}  # wide tables stay packed, narrow ones do not
    ref = _evaluate(plan, inputs, path, lazy=False)
    if not compiled:  # packed arrays are unpacked for the torch gates
        monkeypatch.setattr(cpu_kernels, "AVAILABLE", False)
    got = _evaluate(plan, inputs, path, lazy=True)
    for q in ref.parts:
        assert torch.equal(ref[q].digits, got[q].digits)
    sim, _ = execute.run_plain(plan, xi, monitor=False)
    np.testing.assert_array_equal(g.decode([got])[0].cpu().numpy(), sim.numpy())


def test_lazy_tables_still_catch_damage(tmp_path):
    plan, xi, g, path = _garbled_file(tmp_path, "A")
    inputs = g.encode([xi])
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x10  # one digit bit of some row
    with pytest.raises(IntegrityError, match="checksum"):
        _evaluate(plan, inputs, io.BytesIO(bytes(data)), lazy=True)
    # every row of the first packed gate forged, no checksum involved: the opened rows give
    # digits out of range, which the evaluation refuses
    records = list(TableReader(path, lazy=True).records())
    first = next(r for r in records if any(isinstance(a, Packed) for _, a in r.arrays))
    for _, a in first.arrays:
        if isinstance(a, Packed):
            a.data[:] ^= 0xFF
    e = Evaluator(inputs, MemoryTables(records))
    with pytest.raises(IntegrityError, match=f"gate {first.gate_id}: .*out of range"):
        execute.run(plan, e, batch=len(xi))


def test_lazy_records_write_back_the_same_stream(tmp_path):
    _, _, _, path = _garbled_file(tmp_path, "A")
    records = list(TableReader(path, lazy=True).records())
    assert any(isinstance(a, Packed) for r in records for _, a in r.arrays)
    assert MemoryTables(records).to_bytes() == path.read_bytes()
