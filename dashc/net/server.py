"""The evaluator as a server: stores uploaded garbled tables, answers one request per circuit.

It holds the public plan, the garbled tables it was sent and, during a request, active labels:
nothing from which a global offset or a zero label follows.  Connections are served
concurrently by one asyncio loop; evaluations run one at a time in a worker thread (one
evaluation already keeps the cores busy through torch, and the runtime's hash keeps
per-process buffers: :mod:`dashc.net.exclusive`), so uploads and requests of other clients
keep flowing meanwhile.

Every protocol error (malformed, oversized, truncated, wrong version, damaged, replayed,
unknown circuit) is answered with an ERROR frame, after which that connection alone is
closed.  A circuit id is accepted once: it is remembered from its UPLOAD on, and its tables
are deleted as soon as its INFER arrives, whatever the outcome.
"""
from __future__ import annotations

import asyncio
import hashlib
import re
import shutil
import tempfile
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Callable

from dashc import planfile
from dashc.errors import IntegrityError
from dashc.ir import Plan
from dashc.runtime import execute
from dashc.runtime.evaluator import Evaluator
from dashc.runtime.tables import TableReader

from . import protocol as P
from . import wire
from .errors import NetworkError, ProtocolError
from .exclusive import RUNTIME

Log = Callable[[str], None]
_SHA256 = re.compile(r"[0-9a-f]{64}")


def plan_digest(plan: Plan) -> str:
    """The plan's identity on the wire: SHA-256 of its canonical file bytes."""
    return hashlib.sha256(planfile.dumps(plan)).hexdigest()


def input_layout(plan: Plan) -> list[dict]:
    """Layout of the input labels of one inference (batch 1) of ``plan``."""
    return [{"moduli": [int(q) for q in plan.moduli],
             "shape": [1, *(int(s) for s in plan.input_node.shape)]}]


class Hooks:
    """Deviations of a malicious evaluator, for tests only (the CLI never installs any):
    the default methods are the honest behaviour."""

    def on_infer(self, circuit: str) -> None:
        """Called when a request for ``circuit`` arrived, before it is evaluated."""

    def tables(self, circuit: str, own: Path, store: "CircuitStore") -> Path:
        """The table file evaluated for ``circuit`` (honest: its own)."""
        return own

    def outputs(self, circuit: str, body: bytes) -> bytes:
        """The packed output labels sent back (honest: unchanged)."""
        return body


class CircuitStore:
    """Uploaded table files by circuit id; every id is accepted once."""

    def __init__(self, directory=None, max_circuits: int = 4096,
                 max_bytes: int = 64 << 30):
        self._own = directory is None
        self.directory = Path(tempfile.mkdtemp(prefix="dashc-serve-")) if self._own \
            else Path(directory)
        self.directory.mkdir(parents=True, exist_ok=True)
        self.max_circuits, self.max_bytes = int(max_circuits), int(max_bytes)
        self.seen: set[str] = set()
        self.ready: dict[str, Path] = {}
        self._sizes: dict[str, int] = {}
        self._lock = threading.Lock()

    def path(self, circuit: str) -> Path:
        return self.directory / f"{circuit}.dgt"

    def begin(self, circuit: str, size: int) -> Path:
        with self._lock:
            if circuit in self.seen:
                raise ProtocolError(f"circuit {circuit} was already uploaded; an id is "
                                    "accepted once", P.REPLAY)
            if len(self._sizes) >= self.max_circuits or \
                    sum(self._sizes.values()) + size > self.max_bytes:
                raise ProtocolError(f"the server stores at most {self.max_circuits} circuits "
                                    f"and {self.max_bytes} bytes; use the stored ones first",
                                    P.STORE_FULL)
            self.seen.add(circuit)
            self._sizes[circuit] = size
        return self.path(circuit)

    def commit(self, circuit: str) -> None:
        with self._lock:
            self.ready[circuit] = self.path(circuit)

    def drop(self, circuit: str) -> None:
        """Forget the tables of ``circuit`` (the id stays spent)."""
        with self._lock:
            self.ready.pop(circuit, None)
            self._sizes.pop(circuit, None)
        self.path(circuit).unlink(missing_ok=True)

    def take(self, circuit: str) -> Path:
        """The tables of a stored circuit, which is spent from now on."""
        with self._lock:
            if circuit in self.ready:
                return self.ready.pop(circuit)
            if circuit in self.seen:
                raise ProtocolError(f"circuit {circuit} already served its inference (or "
                                    "its upload failed); garble a fresh one", P.REPLAY)
        raise ProtocolError(f"circuit {circuit} is unknown to this server", P.UNKNOWN_CIRCUIT)

    def close(self) -> None:
        for circuit in list(self._sizes):
            self.drop(circuit)
        if self._own:
            shutil.rmtree(self.directory, ignore_errors=True)


class EvaluatorServer:
    """Serve garbled evaluations of ``plan``; see the module docstring."""

    def __init__(self, plan: Plan, limits: P.Limits | None = None, store_dir=None,
                 max_circuits: int = 4096, max_store_bytes: int = 64 << 30,
                 max_connections: int = 64, device: str = "cpu", hooks: Hooks | None = None,
                 log: Log | None = None):
        self.plan = plan
        self.digest = plan_digest(plan)
        self.limits = limits or P.Limits()
        self.store = CircuitStore(store_dir, max_circuits, max_store_bytes)
        self.device = device
        self.hooks = hooks or Hooks()
        self.log = log or (lambda msg: None)
        self.max_connections = int(max_connections)
        self.input_layout = input_layout(plan)
        self.served = 0
        self._active = 0
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="dashc-eval")
        self._server: asyncio.base_events.Server | None = None

    async def start(self, host: str = "127.0.0.1", port: int = 0) -> tuple[str, int]:
        """Listen; returns the address actually bound (port 0 picks a free one)."""
        self._server = await asyncio.start_server(self._connection, host, port)
        addr = self._server.sockets[0].getsockname()
        return addr[0], int(addr[1])

    async def serve_forever(self) -> None:
        assert self._server is not None, "call start() first"
        async with self._server:
            await self._server.serve_forever()

    def close(self) -> None:
        if self._server is not None:
            self._server.close()
        self._pool.shutdown(wait=True)
        self.store.close()

    # -- one connection -----------------------------------------------------------------------
    async def _connection(self, reader: asyncio.StreamReader,
                          writer: asyncio.StreamWriter) -> None:
        peer = "%s:%s" % writer.get_extra_info("peername")[:2]
        lim = self.limits
        self._active += 1
        try:
            if self._active > self.max_connections:
                raise ProtocolError(f"server busy ({self.max_connections} connections)",
                                    "busy")
            hello = await P.read_frame(reader, lim.max_message, lim.read_timeout,
                                       lim.read_timeout, peer)
            if hello is None:
                return
            self._hello(hello)
            await P.send(writer, P.encode(P.Msg.WELCOME, {
                "plan_sha256": self.digest, "dashc": _version(),
                "max_message": lim.max_message, "max_upload": lim.max_upload}),
                lim.read_timeout, peer)
            while True:
                frame = await P.read_frame(reader, lim.max_message, lim.idle_timeout,
                                           lim.read_timeout, peer)
                if frame is None:
                    return
                if frame.type is P.Msg.UPLOAD:
                    await self._upload(frame, reader, writer, peer)
                elif frame.type is P.Msg.INFER:
                    await self._infer(frame, writer, peer)
                else:
                    raise ProtocolError(f"unexpected {frame.type.name} message", P.UNEXPECTED)
        except ProtocolError as e:
            self.log(f"{peer}: refused: {e.code}: {e}")
            try:
                await P.send(writer, P.error_frame(e.code, str(e)), lim.read_timeout, peer)
            except NetworkError:
                pass
        except NetworkError as e:
            self.log(f"{peer}: {e}")
        except Exception as e:  # a bug must not take the other connections down
            self.log(f"{peer}: internal error: {type(e).__name__}: {e}")
            try:
                await P.send(writer, P.error_frame("internal", "internal server error"),
                             lim.read_timeout, peer)
            except NetworkError:
                pass
        finally:
            self._active -= 1
            writer.close()
            try:
                await asyncio.wait_for(writer.wait_closed(), lim.read_timeout)
            except (asyncio.TimeoutError, ConnectionError, OSError):
                pass

    def _hello(self, frame: P.Frame) -> None:
        if frame.type is not P.Msg.HELLO:
            raise ProtocolError(f"expected HELLO, got {frame.type.name}", P.UNEXPECTED)
        digest = P.meta_field(frame, "plan_sha256", str)
        if digest != self.digest:
            raise ProtocolError(f"this server evaluates plan {self.digest[:16]}..., the client "
                                f"garbles plan {digest[:16]}...", P.PLAN_MISMATCH)

    async def _upload(self, frame: P.Frame, reader, writer, peer: str) -> None:
        lim = self.limits
        circuit = P.circuit_id(frame)
        size = P.meta_field(frame, "size", int)
        digest = P.meta_field(frame, "sha256", str)
        if not _SHA256.fullmatch(digest):
            raise ProtocolError("UPLOAD: sha256 must be 64 lowercase hex digits", P.MALFORMED)
        if not 0 < size <= lim.max_upload:
            raise ProtocolError(f"UPLOAD: tables of {size} bytes; this server accepts 1 to "
                                f"{lim.max_upload} bytes per circuit", P.TOO_LARGE)
        path = self.store.begin(circuit, size)
        done = False
        try:
            sha, received = hashlib.sha256(), 0
            with open(path, "wb") as f:
                while received < size:
                    chunk = await P.read_frame(reader, lim.max_message, lim.read_timeout,
                                               lim.read_timeout, peer)
                    if chunk is None:
                        raise ProtocolError(f"upload of circuit {circuit} cut off after "
                                            f"{received} of {size} bytes", P.TRUNCATED)
                    if chunk.type is not P.Msg.CHUNK:
                        raise ProtocolError(f"expected CHUNK during an upload, got "
                                            f"{chunk.type.name}", P.UNEXPECTED)
                    if received + len(chunk.body) > size:
                        raise ProtocolError(f"upload of circuit {circuit} exceeds its "
                                            f"declared {size} bytes", P.MALFORMED)
                    f.write(chunk.body)
                    sha.update(chunk.body)
                    received += len(chunk.body)
            if sha.hexdigest() != digest:
                raise ProtocolError(f"tables of circuit {circuit} do not match their "
                                    "SHA-256", P.CHECKSUM)
            self.store.commit(circuit)
            done = True
        finally:
            if not done:
                self.store.drop(circuit)
        await P.send(writer, P.encode(P.Msg.STORED, {"circuit": circuit, "size": size}),
                     lim.read_timeout, peer)

    async def _infer(self, frame: P.Frame, writer, peer: str) -> None:
        circuit = P.circuit_id(frame)
        own = self.store.take(circuit)
        try:
            self.hooks.on_infer(circuit)
            labels = wire.unpack(frame.meta.get("labels"), frame.body, self.input_layout,
                                 ProtocolError, "INFER labels")
            tables = self.hooks.tables(circuit, own, self.store)
            loop = asyncio.get_running_loop()
            result = await loop.run_in_executor(self._pool, self._evaluate, tables, labels)
        finally:
            self.store.drop(circuit)
        lay, body = wire.pack([result])
        body = self.hooks.outputs(circuit, body)
        self.served += 1
        await P.send(writer, P.encode(P.Msg.RESULT, {"circuit": circuit, "labels": lay}, body),
                     self.limits.read_timeout, peer)

    def _evaluate(self, tables: Path, labels):
        try:
            with RUNTIME, open(tables, "rb") as f, TableReader(f, lazy=True) as reader:
                out = execute.run(self.plan, Evaluator(labels, reader, device=self.device),
                                  batch=1)
                reader.finish()
        except (IntegrityError, ValueError) as e:
            raise ProtocolError(f"evaluation failed: {e}", P.EVALUATION) from None
        except OSError as e:
            raise ProtocolError(f"tables unreadable: {e.strerror}", P.EVALUATION) from None
        return out


def _version() -> str:
    from dashc import __version__
    return __version__


async def run_server(plan: Plan, host: str, port: int, ready: Callable[[str, int], None],
                     stop: asyncio.Event | None = None, **kwargs) -> EvaluatorServer:
    """Start a server, report its address through ``ready`` and serve until ``stop``."""
    server = EvaluatorServer(plan, **kwargs)
    try:
        addr = await server.start(host, port)
        ready(*addr)
        if stop is None:
            await server.serve_forever()
        else:
            task = asyncio.ensure_future(server.serve_forever())
            await stop.wait()
            task.cancel()
            try:
                await task
            except asyncio.CancelledError:
                pass
    finally:
        server.close()
    return server
