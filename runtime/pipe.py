"""Background threads that move table records between the gates and a byte stream.

Packing digits, hashing and writing (the garbler) or reading, hashing and unpacking (the
evaluator) need no result of the gate that comes next, so they run beside the gates on a
second core: the compiled kernels, OpenSSL's hashes and file I/O release the GIL.  Both
directions keep order and bound the bytes in flight, so memory stays flat on large models.

* :class:`Sink` applies a function to each item put, in order, on one worker thread;
  :meth:`Sink.drain` waits for everything put so far, :meth:`Sink.close` for the end.
* :class:`Prefetch` calls a producer on one worker thread and hands its items out in
  order; an exception of the producer is raised by :meth:`Prefetch.get` at the position
  where it occurred, and again on every later call.

An exception in a worker is never lost: a sink raises it on the next ``put``, ``drain`` or
``close``.
"""
from __future__ import annotations

import collections
import threading
from typing import Any, Callable

#: bytes of records in flight between the gates and the stream
LIMIT = 64 << 20


class Sink:
    """Apply ``fn(item)`` on a worker thread, in order, at most ``limit`` bytes pending."""

    def __init__(self, fn: Callable[[Any], None], limit: int = LIMIT, name: str = "sink"):
        self._fn = fn
        self._limit = int(limit)
        self._items: collections.deque = collections.deque()
        self._pending = 0
        self._cv = threading.Condition()
        self._error: BaseException | None = None
        self._closed = False
        self._thread = threading.Thread(target=self._run, name=f"dashc-{name}", daemon=True)
        self._thread.start()

    def _raise(self) -> None:
        if self._error is not None:
            raise self._error

    def put(self, item: Any, size: int) -> None:
        with self._cv:
            if self._closed:
                raise ValueError("put on a closed sink")
            while (self._items and self._pending + size > self._limit
                   and self._error is None):
                self._cv.wait()
            self._raise()
            self._items.append((item, int(size)))
            self._pending += int(size)
            self._cv.notify_all()

    def _run(self) -> None:
        while True:
            with self._cv:
                while not self._items and not self._closed:
                    self._cv.wait()
                if not self._items:
                    return
                item, size = self._items[0]
            try:
                self._fn(item)
            except BaseException as e:  # noqa: BLE001 - handed to the producing thread
                with self._cv:
                    self._error = e
                    self._items.clear()
                    self._pending = 0
                    self._cv.notify_all()
                return
            with self._cv:
                self._items.popleft()
                self._pending -= size
                self._cv.notify_all()

    def drain(self) -> None:
        """Wait until every item put so far has been applied."""
        with self._cv:
            while self._items and self._error is None:
                self._cv.wait()
            self._raise()

    def close(self) -> None:
        """Apply what is pending, stop the worker; raises a worker's exception."""
        with self._cv:
            self._closed = True
            self._cv.notify_all()
        self._thread.join()
        self._raise()


class Prefetch:
    """Items of ``produce()`` (``(item, size)``, or None at the end) computed ahead on a
    worker thread, at most ``limit`` bytes ahead of the consumer."""

    def __init__(self, produce: Callable[[], tuple[Any, int] | None], limit: int = LIMIT,
                 name: str = "prefetch"):
        self._produce = produce
        self._limit = int(limit)
        self._items: collections.deque = collections.deque()
        self._pending = 0
        self._cv = threading.Condition()
        self._stop = False
        self._last: tuple[str, Any] | None = None  # the end marker or the error, sticky
        self._thread = threading.Thread(target=self._run, name=f"dashc-{name}", daemon=True)
        self._thread.start()

    def _push(self, entry: tuple[str, Any, int]) -> None:
        with self._cv:
            self._items.append(entry)
            self._pending += entry[2]
            self._cv.notify_all()

    def _run(self) -> None:
        while True:
            with self._cv:
                while self._pending > self._limit and not self._stop:
                    self._cv.wait()
                if self._stop:
                    return
            try:
                got = self._produce()
            except BaseException as e:  # noqa: BLE001 - raised in the consumer, in order
                self._push(("error", e, 0))
                return
            if got is None:
                self._push(("end", None, 0))
                return
            self._push(("item", got[0], int(got[1])))

    def get(self) -> Any:
        """The next item; None after the end; raises the producer's exception in order."""
        if self._last is not None:
            kind, value = self._last
            if kind == "error":
                raise value
            return None
        with self._cv:
            while not self._items:
                self._cv.wait()
            kind, value, size = self._items.popleft()
            self._pending -= size
            self._cv.notify_all()
        if kind == "item":
            return value
        self._last = (kind, value)
        if kind == "error":
            raise value
        return None

    def close(self) -> None:
        """Stop producing (what was produced is dropped) and wait for the worker."""
        with self._cv:
            self._stop = True
            self._cv.notify_all()
        self._thread.join()
