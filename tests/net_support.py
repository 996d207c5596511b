"""Shared pieces of the network tests: a tiny plan, an in-process server on a thread, and a
raw socket that speaks frames by hand (to send what no honest client sends)."""
from __future__ import annotations

import asyncio
import socket
import struct
import threading
import zlib

import numpy as np
import torch

from dashc import api
from dashc.net import protocol as P
from dashc.net.server import EvaluatorServer, plan_digest

HOST = "127.0.0.1"


def tiny_plan(tmp, strategy: str = "redash", n: int = 200, seed: int = 1):
    """Linear 16->5, ReLU, Linear 5->3 compiled on random data; returns (plan path, npz path).

    The ``redash`` strategy keeps the circuit at a few gates, so hundreds of circuits garble
    in seconds."""
    torch.manual_seed(seed)
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(16, 5), torch.nn.ReLU(),
                                torch.nn.Linear(5, 3))
    rng = np.random.default_rng(seed)
    x = rng.random((n, 1, 4, 4), dtype=np.float32)
    y = rng.integers(0, 3, n).astype(np.int64)
    np.savez(tmp / "data.npz", x=x, y=y)
    api.compile_model(model, str(tmp / "data.npz"), tmp / f"tiny-{strategy}.dashc",
                      input_shape=(1, 4, 4), strategy=strategy, progress=None)
    return tmp / f"tiny-{strategy}.dashc", tmp / "data.npz"


def raw_frame(kind, payload: bytes) -> bytes:
    """A frame with a valid header and checksum around an arbitrary payload."""
    prefix = struct.pack("<4sHHI", P.MAGIC, P.VERSION, int(kind), len(payload))
    return prefix + struct.pack("<I", zlib.crc32(payload, zlib.crc32(prefix))) + payload


class ThreadServer:
    """An :class:`EvaluatorServer` on its own event loop in a daemon thread."""

    def __init__(self, plan, hooks=None, **kwargs):
        self.plan, self.hooks, self.kwargs = plan, hooks, kwargs
        self.log: list[str] = []
        self._ready = threading.Event()
        self._thread = threading.Thread(target=lambda: asyncio.run(self._main()), daemon=True)

    async def _main(self):
        self.loop = asyncio.get_running_loop()
        self._stop = asyncio.Event()
        self.server = EvaluatorServer(self.plan, hooks=self.hooks, log=self.log.append,
                                      **self.kwargs)
        try:
            self.addr = await self.server.start(HOST, 0)
            self._ready.set()
            task = asyncio.ensure_future(self.server.serve_forever())
            await self._stop.wait()
            task.cancel()
            try:
                await task
            except asyncio.CancelledError:
                pass
        finally:
            self.server.close()
            self._ready.set()

    def __enter__(self):
        self._thread.start()
        assert self._ready.wait(30), "server did not start"
        return self

    def __exit__(self, *exc):
        self.loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(30)


class RawConnection:
    """A blocking socket that sends arbitrary bytes and reads frames until the server closes."""

    def __init__(self, addr, timeout: float = 10.0):
        self.sock = socket.create_connection(addr, timeout=timeout)

    def hello(self, plan) -> P.Frame:
        self.send(P.encode(P.Msg.HELLO, {"plan_sha256": plan_digest(plan)}))
        frame = self.frame()
        assert frame is not None and frame.type is P.Msg.WELCOME, frame
        return frame

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def _exactly(self, n: int) -> bytes:
        out = b""
        while len(out) < n:
            chunk = self.sock.recv(n - len(out))
            if not chunk:
                break
            out += chunk
        return out

    def frame(self) -> P.Frame | None:
        """The next frame, or None once the server closed the connection."""
        head = self._exactly(P.HEADER.size)
        if not head:
            return None
        kind, length, crc = P.parse_header(head, 1 << 30)
        return P.parse_payload(kind, head, self._exactly(length), crc)

    def error_then_close(self) -> tuple[str, str]:
        """The server's ERROR reply (code, message), after which it must close."""
        frame = self.frame()
        assert frame is not None and frame.type is P.Msg.ERROR, frame
        assert self.frame() is None, "the server kept the connection open after an error"
        return frame.meta["code"], frame.meta["message"]

    def close(self):
        self.sock.close()
