"""Gates cut into parts on worker threads: the parts cover every wire once, errors surface,
and the tables and outputs are the same bit for bit with one thread or several."""
import numpy as np
import pytest
import torch

from dashc import api
from dashc.compiler import encode_input
from dashc.runtime import cpu_kernels, execute, workers
from dashc.runtime.evaluator import Evaluator
from dashc.runtime.garbler import Garbler
from dashc.runtime.rng import insecure_seeded_random


@pytest.fixture
def threads():
    """Set the thread count (and the part size) for one test, then restore them."""
    old, old_min, old_digits = workers.threads(), workers.MIN_PART_WORK, workers.MIN_PART_DIGITS

    def use(n, min_work=old_min, min_digits=old_digits):
        workers.set_threads(n)
        workers.MIN_PART_WORK = min_work
        workers.MIN_PART_DIGITS = min_digits

    yield use
    workers.set_threads(old)
    workers.MIN_PART_WORK = old_min
    workers.MIN_PART_DIGITS = old_digits


def test_split_covers_every_item_once(threads):
    threads(3, min_work=10)
    for W, work in [(0, 5), (1, 5), (2, 100), (7, 100), (1000, 1), (1000, 100)]:
        parts = workers.split(W, work)
        assert len(parts) <= 3
        assert [w for a, b in parts for w in range(a, b)] == list(range(W))
    assert len(workers.split(1000, 100)) == 3
    assert len(workers.split(4, 1)) == 1  # too little work to hand out


def test_run_parts_raises_a_worker_error_after_all_parts(threads):
    threads(2, min_work=1)
    done = []

    def part(w0, w1):
        done.append((w0, w1))
        if w0 > 0:
            raise RuntimeError("part failed")

    with pytest.raises(RuntimeError, match="part failed"):
        workers.run_parts(10, 1, part)
    assert sorted(done) == [(0, 5), (5, 10)]


@pytest.mark.parametrize("value", ["0", "x", "-2"])
def test_bad_thread_setting_is_refused(monkeypatch, value):
    monkeypatch.setenv("DASHC_THREADS", value)
    with pytest.raises(ValueError, match="DASHC_THREADS"):
        workers.default_threads()
    with pytest.raises(ValueError, match="at least 1"):
        workers.set_threads(0)


def _garble_and_evaluate(plan, xi):
    g = Garbler(len(xi), rng=insecure_seeded_random(7))
    execute.run(plan, g, batch=len(xi))
    tables = g.tables.to_bytes()
    e = Evaluator(g.encode([xi]), g.tables)
    out = execute.run(plan, e, batch=len(xi))
    return tables, g.decode([out])[0], out


@pytest.mark.skipif(not cpu_kernels.AVAILABLE, reason="numba missing")
@pytest.mark.parametrize("model", ["A", "C"])
def test_model_garbled_on_several_threads_is_bit_identical(threads, model):
    plan = api.compile_model(model, "mnist", calib_size=64, progress=None)
    x, _ = api.load_data("mnist", limit=3)
    xi = torch.as_tensor(encode_input(plan, x))
    threads(1)
    t1, logits1, out1 = _garble_and_evaluate(plan, xi)
    threads(3, min_work=64, min_digits=64)  # every gate and free op of A: three parts
    t3, logits3, out3 = _garble_and_evaluate(plan, xi)
    assert t1 == t3
    for q in out1.parts:
        assert torch.equal(out1[q].digits, out3[q].digits)
    sim, _ = execute.run_plain(plan, xi, monitor=False)
    np.testing.assert_array_equal(logits3.cpu().numpy(), sim.numpy())
    np.testing.assert_array_equal(logits1.cpu().numpy(), sim.numpy())


def test_allocator_setting_is_made_once_and_can_be_declined(monkeypatch):
    monkeypatch.setattr(workers, "_allocator_tuned", None)
    monkeypatch.setenv("DASHC_KEEP_FREED_MEMORY", "0")
    assert workers.keep_freed_memory() is False
    assert workers.keep_freed_memory() is False  # decided once
    monkeypatch.setattr(workers, "_allocator_tuned", None)
    monkeypatch.delenv("DASHC_KEEP_FREED_MEMORY")
    first = workers.keep_freed_memory()
    assert isinstance(first, bool) and workers.keep_freed_memory() is first


def test_map_items_keeps_order_and_runs_parts_inline(threads):
    threads(2, min_work=1, min_digits=1)
    seen = []

    def fn(x):
        workers.run_parts(4, 1, lambda a, b: seen.append((x, a, b)), min_work=1)
        return x * x

    assert workers.map_items(fn, [1, 2, 3, 4, 5]) == [1, 4, 9, 16, 25]
    assert sorted(seen) == [(x, 0, 4) for x in range(1, 6)]  # one inline part each
    with pytest.raises(ZeroDivisionError):
        workers.map_items(lambda x: 1 // x, [1, 0, 2])
