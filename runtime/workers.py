"""Worker threads for the compiled CPU kernels.

A gate over many wires is cut into contiguous parts, one per thread; each part hashes and
garbles (or evaluates) its own wires with its own OpenSSL context and scratch buffers, and
writes disjoint slices of the outputs.  The compiled kernels and OpenSSL release the GIL, so
the parts run on separate cores.  Tweaks depend on a wire's absolute index only, so the
tables are the same bit for bit whatever the number of threads.

The number of threads is :func:`threads`: ``DASHC_THREADS`` if set, else the cores this
process may run on (at most :data:`MAX_THREADS`); :func:`set_threads` changes it (the CLI's
``--threads``).  :func:`keep_freed_memory` sets up glibc's allocator so that the gates'
large output arrays reuse memory instead of faulting fresh pages on every call.
"""
from __future__ import annotations

import os
import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Callable

MAX_THREADS = 8
#: below this much work per part (AES blocks of a gate), one thread does the whole call:
#: handing a part to a worker costs tens of microseconds
MIN_PART_WORK = 1 << 15
#: the same for the free operations, in label digits per part
MIN_PART_DIGITS = 1 << 18

#: allocations up to this size come from the heap, and freed heap memory is kept (see
#: :func:`keep_freed_memory`)
HEAP_ALLOC_MAX = 1 << 30
HEAP_KEEP = (1 << 31) - 1

_lock = threading.Lock()
_allocator_tuned: bool | None = None
_pool: ThreadPoolExecutor | None = None
_threads: int | None = None


def keep_freed_memory() -> bool:
    """Ask glibc's malloc to serve large arrays from the heap and keep freed memory instead
    of unmapping it (``mallopt``), once per process; False where that is not glibc.

    Every gate allocates fresh output arrays of tens of megabytes.  By default glibc maps
    each one anew and unmaps it on release, so every call pays the page faults of its
    outputs again, and threads faulting pages of one array side by side (transparent huge
    pages on) run several times slower than one thread alone.  Kept memory is reused
    instead; the peak resident size is what the run needs at its largest either way.
    ``DASHC_KEEP_FREED_MEMORY=0`` leaves the allocator as it is."""
    global _allocator_tuned
    if _allocator_tuned is None:
        _allocator_tuned = _tune_allocator()
    return _allocator_tuned


def _tune_allocator() -> bool:
    if os.environ.get("DASHC_KEEP_FREED_MEMORY", "1").strip() == "0":
        return False
    try:
        import ctypes

        libc = ctypes.CDLL("libc.so.6")
        M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3
        return (libc.mallopt(M_MMAP_THRESHOLD, ctypes.c_int(HEAP_ALLOC_MAX)) == 1
                and libc.mallopt(M_TRIM_THRESHOLD, ctypes.c_int(HEAP_KEEP)) == 1)
    except (OSError, AttributeError):
        return False


def default_threads() -> int:
    env = os.environ.get("DASHC_THREADS", "").strip()
    if env:
        try:
            n = int(env)
        except ValueError:
            raise ValueError(f"DASHC_THREADS must be a positive integer, got {env!r}") from None
        if n < 1:
            raise ValueError(f"DASHC_THREADS must be a positive integer, got {env!r}")
        return n
    try:
        cores = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        cores = os.cpu_count() or 1
    return max(1, min(MAX_THREADS, cores))


def threads() -> int:
    """Threads a gate may use."""
    global _threads
    if _threads is None:
        _threads = default_threads()
    return _threads


def set_threads(n: int) -> None:
    """Use ``n`` threads per gate from now on (1: the calling thread only)."""
    global _threads, _pool
    n = int(n)
    if n < 1:
        raise ValueError(f"thread count must be at least 1, got {n}")
    with _lock:
        _threads = n
        if _pool is not None:
            _pool.shutdown(wait=True)
            _pool = None


def _workers() -> ThreadPoolExecutor:
    global _pool
    with _lock:
        if _pool is None:
            _pool = ThreadPoolExecutor(max_workers=max(1, threads() - 1),
                                       thread_name_prefix="dashc-gate")
        return _pool


def split(W: int, work_per_item: int, min_work: int | None = None) -> list[tuple[int, int]]:
    """``[0, W)`` cut into contiguous parts, one per thread, each worth at least
    ``min_work`` (default :data:`MIN_PART_WORK`; a single part when the call is small)."""
    least = MIN_PART_WORK if min_work is None else min_work
    n = min(threads(), max(1, (W * max(1, work_per_item)) // max(1, least)), max(1, W))
    bounds = [W * i // n for i in range(n + 1)]
    return [(bounds[i], bounds[i + 1]) for i in range(n)]


_inline = threading.local()  # set while a thread runs one item of map_items


def _run_all(calls: list[Callable[[], object]]) -> list:
    """Run the calls, the first on the calling thread and the others on the pool; wait for
    all and re-raise the first error."""
    futures = [_workers().submit(c) for c in calls[1:]]
    results, error = [None] * len(calls), None
    try:
        results[0] = calls[0]()
    except BaseException as e:  # noqa: BLE001 - wait for the others before raising
        error = e
    for i, f in enumerate(futures, 1):
        try:
            results[i] = f.result()
        except BaseException as e:  # noqa: BLE001
            error = error or e
    if error is not None:
        raise error
    return results


def map_items(fn: Callable, items: list) -> list:
    """``[fn(x) for x in items]`` with the items spread over the threads (the linear layer
    of each modulus on its own core); inside, :func:`run_parts` runs inline."""
    if threads() < 2 or len(items) < 2 or getattr(_inline, "on", False):
        return [fn(x) for x in items]
    n = min(threads(), len(items))
    groups = [items[i::n] for i in range(n)]

    def run(group):
        _inline.on = True
        try:
            return [fn(x) for x in group]
        finally:
            _inline.on = False

    done = _run_all([lambda g=g: run(g) for g in groups])
    out = [None] * len(items)
    for i, res in enumerate(done):
        out[i::n] = res
    return out


def run_parts(W: int, work_per_item: int, part: Callable[[int, int], None],
              min_work: int | None = None) -> None:
    """``part(w0, w1)`` over a split of ``[0, W)``: the first part on the calling thread,
    the others on the pool; waits for all and re-raises the first error."""
    keep_freed_memory()
    parts = split(W, work_per_item, min_work)
    if getattr(_inline, "on", False):
        parts = [(0, W)]
    if len(parts) == 1:
        if W:
            part(0, W)
        return
    _run_all([lambda w0=w0, w1=w1: part(w0, w1) for w0, w1 in parts])
