"""Garbler client and evaluator server over loopback TCP (server on a thread of this process):
answers equal the simulator's, replays and malformed messages are refused, a malicious
evaluator is caught every time, nothing secret is sent, a dropped request is retried on a
fresh circuit."""
import asyncio
import hashlib
import socket
import struct

import numpy as np
import pytest
from net_support import HOST, RawConnection, ThreadServer, raw_frame, tiny_plan

from dashc import planfile
from dashc.compiler import encode_input
from dashc.errors import CircuitReuseError, IntegrityError
from dashc.runtime.counter import predict
from dashc.net import protocol as P
from dashc.net import wire
from dashc.net.client import GarblerClient, run_inferences
from dashc.net.errors import NetworkError, ProtocolError
from dashc.net.server import Hooks
from dashc.runtime import hashing
from dashc.runtime.execute import run_plain

LIMITS = P.Limits(max_message=1 << 20, max_upload=1 << 22, chunk=1 << 16, read_timeout=2.0,
                  idle_timeout=30.0, reply_timeout=30.0)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    plan_path, data_path = tiny_plan(tmp_path_factory.mktemp("net"))
    plan = planfile.load(plan_path)
    data = np.load(data_path)
    return plan, encode_input(plan, data["x"])


def _expected(plan, xi):
    logits, _ = run_plain(plan, xi)
    return logits.numpy()


class Recording(GarblerClient):
    """An honest client that keeps every byte it sends and every circuit it garbled."""

    def __init__(self, *a, **kw):
        super().__init__(*a, **kw)
        self.sent: list[bytes] = []
        self.garbled = []

    async def _send(self, data):
        self.sent.append(bytes(data))
        await super()._send(data)

    async def stock(self, count, progress=None):
        before = set(c.id for c in self.pool)
        await super().stock(count, progress)
        self.garbled += [c for c in self.pool if c.id not in before]


def _client(plan, srv, cls=Recording):
    return cls(plan, *srv.addr, limits=LIMITS)


def test_inferences_equal_simulation(tiny):
    plan, xi = tiny
    with ThreadServer(plan, limits=LIMITS) as srv:
        session = asyncio.run(run_inferences(plan, *srv.addr, xi[:12], pool=5, limits=LIMITS))
        assert srv.server.served == 12
        assert not srv.server.store.ready and not any(srv.server.store.directory.iterdir())
    assert np.array_equal(np.stack(session.logits), _expected(plan, xi[:12]))
    s = session.summary()
    assert s["n"] == 12 and s["circuits_garbled"] == 12 and s["reconnects"] == 0
    labels = 16 * 16 * len(plan.moduli)  # 16 packed input labels per modulus, 16 bytes each
    assert labels < s["online_request_bytes"] < labels + 400
    assert 3 * 16 * len(plan.moduli) < s["online_response_bytes"] < 3 * 16 * len(plan.moduli) + 400
    # every stored row holds a label's n(q) digits in bits(q - 1) bits each: over 15 bytes
    ciphertexts = sum(n.ciphertexts for n in predict(plan).nodes)
    assert s["offline_bytes"] > 12 * 15 * ciphertexts and s["online_latency_s"] > 0


def test_replayed_request_and_upload_are_refused(tiny):
    plan, xi = tiny

    async def go(srv):
        async with _client(plan, srv) as client:
            await client.stock(2)
            first = client.pool[0].id
            await client.infer(xi[0])
            infer = [f for f in client.sent if f"\"{first}\"".encode() in f
                     and f[6] == P.Msg.INFER][0]
            upload = [f for f in client.sent if f"\"{first}\"".encode() in f
                      and f[6] == P.Msg.UPLOAD][0]
            # the same request again, on the same connection
            await client._send(infer)
            with pytest.raises(CircuitReuseError, match="already served"):
                await client._reply(P.Msg.RESULT, 5)
        return infer, upload

    with ThreadServer(plan, limits=LIMITS) as srv:
        infer, upload = asyncio.run(go(srv))
        for frame, what in ((infer, "already served"), (upload, "already uploaded")):
            conn = RawConnection(srv.addr)  # and on a fresh connection
            conn.hello(plan)
            conn.send(frame)
            code, message = conn.error_then_close()
            assert code == P.REPLAY and what in message
        assert srv.server.served == 1


def _bad_frames(plan, srv, stored: str):
    """(name, needs HELLO first, bytes, expected error code)."""
    good = P.encode(P.Msg.HELLO, {"plan_sha256": "0" * 64})
    wrong_version = bytearray(good)
    wrong_version[4] = 7
    damaged = bytearray(P.encode(P.Msg.UPLOAD, {"circuit": "1" * 32, "size": 5,
                                                "sha256": "0" * 64}))
    damaged[-3] ^= 0x20
    oversized = P.HEADER.pack(P.MAGIC, P.VERSION, P.Msg.CHUNK, LIMITS.max_message, 0)
    lay = [{"moduli": list(plan.moduli), "shape": [1, 1, 4, 4]}]
    bad_labels = P.encode(P.Msg.INFER, {"circuit": stored, "labels": lay},
                          b"\xff" * wire.body_size(lay))
    return [
        ("http", False, b"GET / HTTP/1.1\r\nHost: x\r\n\r\n", P.MALFORMED),
        ("version", False, bytes(wrong_version), P.VERSION_MISMATCH),
        ("oversized", False, oversized, P.TOO_LARGE),
        ("plan", False, good, P.PLAN_MISMATCH),
        ("no hello", False, P.encode(P.Msg.INFER, {"circuit": "2" * 32}), P.UNEXPECTED),
        ("damaged", True, bytes(damaged), P.CHECKSUM),
        ("not json", True, raw_frame(P.Msg.UPLOAD, struct.pack("<I", 3) + b"{x}"),
         P.MALFORMED),
        ("unknown circuit", True, P.encode(P.Msg.INFER, {"circuit": "3" * 32}),
         P.UNKNOWN_CIRCUIT),
        ("bad id", True, P.encode(P.Msg.INFER, {"circuit": "../../etc/passwd"}), P.MALFORMED),
        ("server message", True, P.encode(P.Msg.STORED, {"circuit": "4" * 32}), P.UNEXPECTED),
        ("huge upload", True, P.encode(P.Msg.UPLOAD, {"circuit": "5" * 32,
                                                      "size": LIMITS.max_upload + 1,
                                                      "sha256": "0" * 64}), P.TOO_LARGE),
        ("upload sha", True, P.encode(P.Msg.UPLOAD, {"circuit": "6" * 32, "size": 3,
                                                     "sha256": "0" * 64})
         + P.encode(P.Msg.CHUNK, None, b"abc"), P.CHECKSUM),
        ("upload overrun", True, P.encode(P.Msg.UPLOAD, {"circuit": "7" * 32, "size": 3,
                                                         "sha256": "0" * 64})
         + P.encode(P.Msg.CHUNK, None, b"abcd"), P.MALFORMED),
        ("bad labels", True, bad_labels, P.MALFORMED),
    ]


def test_malformed_messages_close_only_their_connection(tiny):
    plan, xi = tiny

    async def go(srv):
        async with _client(plan, srv) as client:   # connected before, served after
            await client.stock(3)
            stored = client.pool.popleft()          # its id is sent with malformed labels
            client.spent.add(stored.id)
            for name, hello, data, code in _bad_frames(plan, srv, stored.id):
                conn = RawConnection(srv.addr)
                if hello:
                    conn.hello(plan)
                conn.send(data)
                got, message = await asyncio.to_thread(conn.error_then_close)
                assert got == code, (name, got, message)
                conn.close()
            # truncated: half a frame, then the client hangs up (or stalls past the timeout)
            for shut in (True, False):
                conn = RawConnection(srv.addr)
                conn.hello(plan)
                conn.send(P.encode(P.Msg.INFER, {"circuit": "8" * 32}, bytes(100))[:60])
                if shut:
                    conn.sock.shutdown(socket.SHUT_WR)
                got, _ = await asyncio.to_thread(conn.error_then_close)
                assert got == (P.TRUNCATED if shut else P.TIMEOUT)
                conn.close()
            answers = [await client.infer(xi[i]) for i in range(2)]
        return answers

    with ThreadServer(plan, limits=LIMITS) as srv:
        answers = asyncio.run(go(srv))
        assert srv.server.served == 2
        assert not any(srv.server.store.directory.iterdir())  # failed uploads left nothing
    assert np.array_equal(np.stack([a.logits for a in answers]), _expected(plan, xi[:2]))


class FlipBits(Hooks):
    """A malicious evaluator: flips one bit of the packed output labels."""

    def __init__(self):
        self.rng = np.random.default_rng(0)
        self.calls = 0

    def outputs(self, circuit, body):
        self.calls += 1
        data = bytearray(body)
        bit = int(self.rng.integers(0, 8 * len(data)))
        data[bit // 8] ^= 1 << (bit % 8)
        return bytes(data)


class OtherTables(Hooks):
    """A malicious evaluator: evaluates a request with the tables of another circuit."""

    def __init__(self):
        self.calls = 0

    def tables(self, circuit, own, store):
        self.calls += 1
        return next(path for cid, path in store.ready.items() if cid != circuit)


@pytest.mark.parametrize("hooks", [FlipBits, OtherTables])
def test_malicious_evaluator_is_caught_every_time(tiny, hooks):
    plan, xi = tiny
    hook = hooks()
    tries = 8

    async def go(srv):
        for i in range(tries):  # a connection per try: a refused evaluation closes it
            async with _client(plan, srv) as client:
                await client.stock(2)  # the other circuit is left on the server
                with pytest.raises((IntegrityError, ProtocolError)) as err:
                    await client.infer(xi[i])
                if err.type is ProtocolError:  # the evaluator's own range check refused
                    assert hooks is OtherTables and "out of range" in str(err.value)

    with ThreadServer(plan, hooks=hook, limits=LIMITS) as srv:
        asyncio.run(go(srv))
    assert hook.calls == tries


def test_answer_for_another_circuit_is_refused(tiny):
    """A malicious evaluator replays the labels (and id) of an earlier answer."""
    plan, xi = tiny

    class Replay(Hooks):
        first = None

        def outputs(self, circuit, body):
            self.first = self.first or body
            return self.first

    async def go(srv):
        async with _client(plan, srv) as client:
            await client.stock(2)
            await client.infer(xi[0])
            with pytest.raises(IntegrityError, match="not valid labels"):
                await client.infer(xi[1])

    with ThreadServer(plan, hooks=Replay(), limits=LIMITS) as srv:
        asyncio.run(go(srv))


def test_client_never_sends_a_secret(tiny):
    plan, xi = tiny

    async def go(srv):
        async with _client(plan, srv) as client:
            await client.stock(3)
            for i in range(3):
                await client.infer(xi[i])
        return client

    with ThreadServer(plan, limits=LIMITS) as srv:
        client = asyncio.run(go(srv))
    sent = b"".join(client.sent)
    assert len(client.garbled) == 3
    for circuit, x in zip(client.garbled, xi):
        state = circuit.garbler.state()
        for q, delta in state["delta"].items():
            row = delta[0]
            assert row.numpy().astype(np.uint8 if q < 256 else np.uint16).tobytes() not in sent
            packed = hashing.pack(row[None], q).numpy().astype("<u4").tobytes()
            assert packed not in sent
        # zero labels: of the outputs none, of the inputs only where the value is 0 (there
        # the zero label is the active one)
        for tensor in state["outputs"] + state["inputs"]:
            for q, lab in tensor.parts.items():
                keep = np.ones(lab.digits.shape[:-1], bool) if tensor is state["outputs"][0] \
                    else (x[None] % q != 0)
                _, body = wire.pack([type(tensor)({q: lab})])
                labels = np.frombuffer(body, np.uint8).reshape(-1, 16)[keep.reshape(-1)]
                assert len(labels) > 0
                for label in labels:
                    assert label.tobytes() not in sent


class DropOnce(Hooks):
    """The server goes away mid-request once: the request arrives, no answer leaves."""

    def __init__(self):
        self.ids = []

    def on_infer(self, circuit):
        self.ids.append(circuit)
        if len(self.ids) == 1:
            raise NetworkError("simulated crash")


def test_dropped_request_is_retried_on_a_fresh_circuit(tiny):
    plan, xi = tiny
    hook = DropOnce()
    with ThreadServer(plan, hooks=hook, limits=LIMITS) as srv:
        with pytest.raises(NetworkError, match="closed the connection.*fresh circuit"):
            asyncio.run(run_inferences(plan, *srv.addr, xi[:3], pool=2, limits=LIMITS))
        hook.ids.clear()
        session = asyncio.run(run_inferences(plan, *srv.addr, xi[:5], pool=2, limits=LIMITS,
                                             retries=1, retry_wait=0.05))
    assert np.array_equal(np.stack(session.logits), _expected(plan, xi[:5]))
    assert session.reconnects == 1
    assert len(hook.ids) == 6 and len(set(hook.ids)) == 6  # one more circuit, none twice


def test_plan_mismatch_and_unreachable_server(tiny, tmp_path):
    plan, xi = tiny
    other_path, _ = tiny_plan(tmp_path, seed=2)
    other = planfile.load(other_path)
    assert hashlib.sha256(planfile.dumps(other)).digest() != \
        hashlib.sha256(planfile.dumps(plan)).digest()
    with ThreadServer(plan, limits=LIMITS) as srv:
        with pytest.raises(ProtocolError, match="plan-mismatch") as err:
            asyncio.run(run_inferences(other, *srv.addr, xi[:1], limits=LIMITS))
        assert err.value.code == P.PLAN_MISMATCH
        port = srv.addr[1]
    with pytest.raises(NetworkError, match="cannot reach"):
        asyncio.run(run_inferences(plan, HOST, port, xi[:1], limits=LIMITS, retries=1,
                                   retry_wait=0.01))


def test_uploads_stream_in_chunks_under_the_message_limit(tiny):
    plan, xi = tiny
    small = P.Limits(max_message=32 << 10, chunk=4 << 10, max_upload=1 << 22,
                     read_timeout=2.0)
    with ThreadServer(plan, limits=small) as srv:
        client = Recording(plan, *srv.addr, limits=small)

        async def go():
            async with client:
                await client.stock(1)
                return await client.infer(xi[0])

        answer = asyncio.run(go())
    assert np.array_equal(answer.logits, _expected(plan, xi[:1])[0])
    chunks = [f for f in client.sent if f[6] == P.Msg.CHUNK]
    assert len(chunks) > 10 and max(len(f) for f in client.sent) <= small.max_message
