"""The garbler as a client of an evaluator server.

Offline it garbles circuits of the plan (one per future inference, batch 1 each) and uploads
their tables; it keeps each circuit's secrets (global offsets, input and output zero labels)
in memory only.  Online, one inference is exactly one INFER frame (circuit id and packed input
labels) and one RESULT frame (packed output labels); the client then decodes every output
label and raises :class:`dashc.errors.IntegrityError` unless each is a valid label of its
circuit.  A circuit is spent as soon as its input labels are handed to the socket: it is
never sent twice, whether the answer came back or not.
"""
from __future__ import annotations

import asyncio
import hashlib
import io
import secrets as pysecrets
import statistics
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Callable

import numpy as np
import torch

from dashc.errors import CircuitReuseError, IntegrityError
from dashc.ir import Plan
from dashc.runtime import execute
from dashc.runtime.garbler import Garbler
from dashc.runtime.tables import TableWriter

from . import protocol as P
from . import wire
from .errors import NetworkError, ProtocolError
from .exclusive import RUNTIME
from .server import plan_digest

Progress = Callable[[str], None]


@dataclass
class Circuit:
    """One garbled circuit held by the garbler: its id, secrets and table bytes."""

    id: str
    garbler: Garbler
    tables: bytes
    garble_s: float


def garble_circuit(plan: Plan, device: str = "cpu") -> Circuit:
    """A fresh circuit of ``plan`` for one inference."""
    with RUNTIME:
        t0 = time.perf_counter()
        buf = io.BytesIO()
        with TableWriter(buf) as writer:
            garbler = Garbler(1, writer, device=device)
            execute.run(plan, garbler)
    return Circuit(pysecrets.token_hex(16), garbler, buf.getvalue(),
                   time.perf_counter() - t0)


@dataclass
class Answer:
    """One decoded inference with what it cost on the wire."""

    circuit: str
    logits: np.ndarray        # signed integer logits of the one input
    request_bytes: int
    response_bytes: int
    latency_s: float          # encode, round trip, decode
    round_trip_s: float


_REFUSALS = {P.REPLAY: CircuitReuseError}


class GarblerClient:
    """One connection to an evaluator server, with a pool of uploaded circuits."""

    def __init__(self, plan: Plan, host: str, port: int, limits: P.Limits | None = None,
                 device: str = "cpu"):
        self.plan, self.host, self.port = plan, host, int(port)
        self.peer = f"evaluator {host}:{port}"
        self.limits = limits or P.Limits()
        self.device = device
        self.digest = plan_digest(plan)
        self.pool: deque[Circuit] = deque()
        self.spent: set[str] = set()
        self.offline_bytes = 0
        self.garble_s = 0.0
        self.server_limits: dict = {}
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None

    # -- connection --------------------------------------------------------------------------
    async def connect(self) -> None:
        lim = self.limits
        try:
            self._reader, self._writer = await asyncio.wait_for(
                asyncio.open_connection(self.host, self.port), lim.connect_timeout)
        except asyncio.TimeoutError:
            raise NetworkError(f"cannot reach {self.peer}: no answer within "
                               f"{lim.connect_timeout:g} s") from None
        except OSError as e:
            raise NetworkError(f"cannot reach {self.peer} "
                               f"({e.strerror or type(e).__name__})") from None
        await self._send(P.encode(P.Msg.HELLO, {"plan_sha256": self.digest,
                                                "dashc": _version()}))
        welcome = await self._reply(P.Msg.WELCOME, lim.reply_timeout)
        if welcome.meta.get("plan_sha256") != self.digest:
            raise ProtocolError(f"{self.peer} evaluates another plan", P.PLAN_MISMATCH)
        self.server_limits = dict(welcome.meta)

    @property
    def connected(self) -> bool:
        return self._writer is not None

    async def close(self) -> None:
        if self._writer is not None:
            self._writer.close()
            try:
                await asyncio.wait_for(self._writer.wait_closed(), 2.0)
            except (asyncio.TimeoutError, ConnectionError, OSError):
                pass
        self._reader = self._writer = None

    async def __aenter__(self):
        await self.connect()
        return self

    async def __aexit__(self, *exc):
        await self.close()

    async def _send(self, data: bytes) -> None:
        if self._writer is None:
            raise NetworkError(f"not connected to {self.peer}")
        await P.send(self._writer, data, self.limits.read_timeout, self.peer)

    async def _reply(self, kind: P.Msg, timeout: float) -> P.Frame:
        lim = self.limits
        try:
            frame = await P.read_frame(self._reader, lim.max_message, timeout,
                                       lim.read_timeout, self.peer)
        except NetworkError as e:
            raise NetworkError(f"{e} while waiting for {kind.name}") from None
        if frame is None:
            raise NetworkError(f"{self.peer} closed the connection while we waited for "
                               f"{kind.name}")
        if frame.type is P.Msg.ERROR:
            code = str(frame.meta.get("code", "?"))
            message = str(frame.meta.get("message", ""))[:500]
            error = _REFUSALS.get(code)
            if error is not None:
                raise error(f"{self.peer} refused: {message}")
            raise ProtocolError(f"{self.peer} refused: {code}: {message}", code)
        if frame.type is not kind:
            raise ProtocolError(f"{self.peer} sent {frame.type.name}, expected {kind.name}",
                                P.UNEXPECTED)
        return frame

    # -- offline: garble and upload ----------------------------------------------------------
    async def stock(self, count: int, progress: Progress | None = None) -> None:
        """Garble and upload circuits until ``count`` are waiting in the pool."""
        while len(self.pool) < count:
            circuit = await asyncio.to_thread(garble_circuit, self.plan, self.device)
            self.garble_s += circuit.garble_s
            await self.upload(circuit)
            self.pool.append(circuit)
            if progress:
                progress(f"  circuit {circuit.id[:8]} garbled in {circuit.garble_s:.2f} s, "
                         f"{len(circuit.tables)} table bytes uploaded")

    async def upload(self, circuit: Circuit) -> None:
        size = len(circuit.tables)
        limit = int(self.server_limits.get("max_upload", size))
        if size > limit:
            raise ProtocolError(f"tables of {size} bytes exceed the server's upload limit of "
                                f"{limit} bytes", P.TOO_LARGE)
        sent = P.encode(P.Msg.UPLOAD, {"circuit": circuit.id, "size": size,
                                       "sha256": hashlib.sha256(circuit.tables).hexdigest()})
        await self._send(sent)
        total = len(sent)
        step = min(self.limits.chunk, int(self.server_limits.get("max_message", 1 << 62))
                   - P.HEADER.size - 64)
        view = memoryview(circuit.tables)
        for start in range(0, size, step):
            frame = P.encode(P.Msg.CHUNK, None, view[start:start + step])
            await self._send(frame)
            total += len(frame)
        stored = await self._reply(P.Msg.STORED, self.limits.reply_timeout)
        if stored.meta.get("circuit") != circuit.id or stored.meta.get("size") != size:
            raise ProtocolError(f"{self.peer} acknowledged another upload", P.UNEXPECTED)
        self.offline_bytes += total + stored.size

    def discard_pool(self) -> None:
        """Forget every pooled circuit (after a reconnection the server may not hold them)."""
        self.spent.update(c.id for c in self.pool)
        self.pool.clear()

    # -- online: one request, one response ---------------------------------------------------
    async def infer(self, xi: np.ndarray) -> Answer:
        """Signed integer input of one sample (the plan's input shape) -> decoded logits."""
        if not self.pool:
            raise CircuitReuseError("no garbled circuit left in the pool; stock fresh ones")
        circuit = self.pool.popleft()
        if circuit.id in self.spent:  # cannot happen through this class; kept as a guard
            raise CircuitReuseError(f"circuit {circuit.id} was already used")
        t0 = time.perf_counter()
        self.spent.add(circuit.id)  # spent before any label leaves
        labels = circuit.garbler.encode([torch.as_tensor(np.asarray(xi, dtype=np.int64)[None])])
        lay, body = wire.pack(labels)
        request = P.encode(P.Msg.INFER, {"circuit": circuit.id, "labels": lay}, body)
        limit = int(self.server_limits.get("max_message", len(request)))
        if len(request) > limit:
            raise ProtocolError(f"a request of {len(request)} bytes exceeds the server's "
                                f"message limit of {limit} bytes", P.TOO_LARGE)
        t1 = time.perf_counter()
        try:
            await self._send(request)
            response = await self._reply(P.Msg.RESULT, self.limits.reply_timeout)
        except NetworkError as e:
            raise NetworkError(f"{e}; circuit {circuit.id[:8]} is discarded, retry with a "
                               "fresh circuit") from None
        t2 = time.perf_counter()
        if response.meta.get("circuit") != circuit.id:
            raise IntegrityError(f"{self.peer} answered for circuit "
                                 f"{str(response.meta.get('circuit'))[:32]!r}, not "
                                 f"{circuit.id}")
        outputs = wire.unpack(response.meta.get("labels"), response.body,
                              wire.layout(circuit.garbler.state()["outputs"]), IntegrityError,
                              "output labels")
        (logits,) = circuit.garbler.decode(outputs)
        t3 = time.perf_counter()
        return Answer(circuit.id, logits.cpu().numpy()[0], len(request), response.size,
                      (t1 - t0) + (t3 - t1), t2 - t1)


def _version() -> str:
    from dashc import __version__
    return __version__


@dataclass
class Session:
    """What :func:`run_inferences` measured."""

    logits: list = field(default_factory=list)
    answers: list = field(default_factory=list)
    offline_bytes: int = 0
    garble_s: float = 0.0
    reconnects: int = 0
    circuits: int = 0

    def summary(self) -> dict:
        req = [a.request_bytes for a in self.answers]
        resp = [a.response_bytes for a in self.answers]
        lat = [a.latency_s for a in self.answers]
        rtt = [a.round_trip_s for a in self.answers]
        n = len(self.answers)
        return {
            "n": n,
            "offline_bytes": int(self.offline_bytes),
            "offline_bytes_per_inference": int(self.offline_bytes // max(n, 1)),
            "online_request_bytes": int(max(req)) if req else 0,
            "online_response_bytes": int(max(resp)) if resp else 0,
            "online_latency_s": statistics.median(lat) if lat else None,
            "online_round_trip_s": statistics.median(rtt) if rtt else None,
            "garble_s": self.garble_s,
            "circuits_garbled": int(self.circuits),
            "reconnects": int(self.reconnects),
        }


async def run_inferences(plan: Plan, host: str, port: int, xi: np.ndarray, pool: int = 16,
                         limits: P.Limits | None = None, retries: int = 0,
                         retry_wait: float = 1.0, device: str = "cpu",
                         progress: Progress | None = None) -> Session:
    """Infer every sample of ``xi`` (signed integer inputs) on the server at ``host:port``.

    Circuits are garbled and uploaded ``pool`` at a time ahead of the inferences they serve.
    On a network failure the client reconnects up to ``retries`` times (``retry_wait``
    seconds apart), discards every circuit the server held and repeats the failed inference
    on a fresh circuit; integrity failures and refusals are never retried."""
    if pool < 1:
        raise ValueError(f"pool must be at least 1, got {pool}")
    session = Session()
    client = GarblerClient(plan, host, port, limits, device)
    left = int(retries)
    i = 0
    try:
        while True:
            try:
                if not client.connected:
                    await client.connect()
                while i < len(xi):
                    if not client.pool:
                        before = client.garble_s
                        await client.stock(min(pool, len(xi) - i))
                        if progress:
                            progress(f"offline: {len(client.pool)} circuit(s) garbled in "
                                     f"{client.garble_s - before:.2f} s and uploaded")
                    answer = await client.infer(xi[i])
                    session.answers.append(answer)
                    session.logits.append(answer.logits)
                    i += 1
                    if progress:
                        progress(f"  {i}/{len(xi)}: class {int(answer.logits.argmax())} "
                                 f"({answer.latency_s * 1e3:.1f} ms online)")
                break
            except NetworkError as e:
                await client.close()
                client.discard_pool()
                if left <= 0:
                    raise
                left -= 1
                session.reconnects += 1
                if progress:
                    progress(f"warning: {e}; reconnecting in {retry_wait:g} s "
                             f"({left} retries left)")
                await asyncio.sleep(retry_wait)
    finally:
        await client.close()
        session.offline_bytes = client.offline_bytes
        session.garble_s = client.garble_s
        session.circuits = len(client.spent) + len(client.pool)
    return session
