"""The wire protocol without a network: frames, their refusals, timeouts, packed labels."""
import asyncio
import struct
import zlib

import numpy as np
import pytest
import torch

from dashc import crt
from dashc.errors import IntegrityError
from dashc.net import protocol as P
from dashc.net import wire
from dashc.net.errors import NetworkError, ProtocolError
from dashc.runtime.backend import CrtTensor
from dashc.runtime.labels import LabelTensor

LIMIT = 1 << 16


def _read(data: bytes, eof: bool = True, first=1.0, rest=1.0, limit=LIMIT):
    async def go():
        reader = asyncio.StreamReader()
        reader.feed_data(data)
        if eof:
            reader.feed_eof()
        return await P.read_frame(reader, limit, first, rest)
    return asyncio.run(go())


def _refused(data: bytes, code: str, **kw):
    with pytest.raises(P.FrameError) as err:
        _read(data, **kw)
    assert err.value.code == code, str(err.value)
    return err.value


@pytest.mark.parametrize("kind", list(P.Msg))
def test_frame_round_trip(kind):
    meta = {"circuit": "ab" * 16, "n": 3} if kind is not P.Msg.CHUNK else None
    body = bytes(range(256)) * 3
    data = P.encode(kind, meta, body)
    frame = _read(data)
    assert frame.type is kind and frame.body == body and frame.meta == (meta or {})
    assert frame.size == len(data)


def test_clean_close_between_frames_is_none():
    assert _read(b"") is None


def _patch(data: bytes, offset: int, fmt: str, value, recrc: bool = True) -> bytes:
    b = bytearray(data)
    struct.pack_into(fmt, b, offset, value)
    if recrc:
        struct.pack_into("<I", b, 12, zlib.crc32(bytes(b[16:]), zlib.crc32(bytes(b[:12]))))
    return bytes(b)


def _raw(kind, payload: bytes) -> bytes:
    """A frame with a valid header and checksum around an arbitrary payload."""
    prefix = struct.pack("<4sHHI", P.MAGIC, P.VERSION, int(kind), len(payload))
    return prefix + struct.pack("<I", zlib.crc32(payload, zlib.crc32(prefix))) + payload


def test_refusals_name_their_cause():
    good = P.encode(P.Msg.HELLO, {"plan_sha256": "0" * 64}, b"xyz")
    assert "magic" in str(_refused(b"GET / HTTP/1.1\r\n\r\n", P.MALFORMED))
    e = _refused(_patch(good, 4, "<H", 2), P.VERSION_MISMATCH)
    assert "version 2" in str(e)
    _refused(_patch(good, 6, "<H", 99), P.MALFORMED)                      # unknown type
    _refused(_patch(good, 8, "<I", LIMIT), P.TOO_LARGE)                   # oversized
    _refused(good[:-1] + bytes([good[-1] ^ 1]), P.CHECKSUM)               # damaged body
    _refused(good[:10], P.TRUNCATED)                                      # header cut off
    _refused(good[:-2], P.TRUNCATED)                                      # body cut off
    _refused(_raw(P.Msg.HELLO, struct.pack("<I", 99) + b"{}"), P.MALFORMED)  # meta overruns
    _refused(_raw(P.Msg.HELLO, struct.pack("<I", 2) + b"{x"), P.MALFORMED)   # not JSON
    _refused(_raw(P.Msg.HELLO, struct.pack("<I", 2) + b"[]"), P.MALFORMED)   # not an object
    _refused(_raw(P.Msg.HELLO, b"\0\0"), P.MALFORMED)                        # no meta length


def test_oversized_is_refused_from_the_header_alone():
    big = P.encode(P.Msg.CHUNK, None, bytes(LIMIT))
    # only the header is available: the body is never waited for
    _refused(big[:16], P.TOO_LARGE, eof=False)


def test_every_read_has_a_timeout():
    good = P.encode(P.Msg.HELLO, {"x": 1}, b"abc")
    with pytest.raises(NetworkError, match="no message"):
        _read(b"", eof=False, first=0.05)
    _refused(good[:-1], P.TIMEOUT, eof=False, rest=0.05)   # stalls mid-message


def test_meta_fields_are_checked():
    frame = _read(P.encode(P.Msg.INFER, {"circuit": "A" * 32, "n": True}))
    with pytest.raises(ProtocolError, match="32 lowercase hex"):
        P.circuit_id(frame)
    with pytest.raises(ProtocolError, match="'n' missing or not a int"):
        P.meta_field(frame, "n", int)
    frame = _read(P.encode(P.Msg.INFER, {"circuit": "0a" * 16}))
    assert P.circuit_id(frame) == "0a" * 16


def test_limits_are_validated():
    with pytest.raises(ValueError, match="chunk"):
        P.Limits(max_message=4096, chunk=8192)
    with pytest.raises(ValueError, match="read_timeout"):
        P.Limits(read_timeout=0)


# -- packed labels ---------------------------------------------------------------------------
PRIMES = [2, 3, 5, 7, 11, 13, 17, 31, 101, 107, 251, 257, 65521]


def _random_labels(shape, moduli, seed=0):
    g = torch.Generator().manual_seed(seed)
    return CrtTensor({q: LabelTensor(torch.randint(0, q, (*shape, crt.label_length(q)),
                                                   generator=g), q) for q in moduli})


def test_pack_round_trip_sixteen_bytes_per_label():
    tensors = [_random_labels((2, 3, 4), PRIMES), _random_labels((1, 5), [2, 31], seed=1)]
    lay, body = wire.pack(tensors)
    assert len(body) == 16 * (24 * len(PRIMES) + 5 * 2) == wire.body_size(lay)
    back = wire.unpack(lay, body, lay, IntegrityError)
    for a, b in zip(tensors, back):
        assert a.moduli == b.moduli
        for q in a.moduli:
            assert torch.equal(a[q].digits, b[q].digits)


def test_extreme_digits_survive_packing():
    for q in PRIMES:
        n = crt.label_length(q)
        digits = torch.tensor([[q - 1] * n, [0] * n, [0] * (n - 1) + [q - 1]])
        t = CrtTensor({q: LabelTensor(digits, q)})
        lay, body = wire.pack([t])
        (back,) = wire.unpack(lay, body, lay, IntegrityError)
        assert torch.equal(back[q].digits, digits)


@pytest.mark.parametrize("q", [3, 5, 31, 101])
def test_non_canonical_packing_is_refused(q):
    t = _random_labels((1, 2), [q])
    lay, body = wire.pack([t])
    forged = body[:16] + b"\xff" * 16   # 2^128 - 1 >= q^n(q)
    with pytest.raises(IntegrityError, match="not a canonical packing"):
        wire.unpack(lay, forged, lay, IntegrityError)


def test_wrong_layout_or_length_is_refused():
    t = _random_labels((1, 2), [2, 3])
    lay, body = wire.pack([t])
    with pytest.raises(ProtocolError, match="layout"):
        wire.unpack([{"moduli": [3, 2], "shape": [1, 2]}], body, lay, ProtocolError)
    with pytest.raises(ProtocolError, match="layout"):
        wire.unpack(None, body, lay, ProtocolError)
    with pytest.raises(ProtocolError, match="bytes of packed labels"):
        wire.unpack(lay, body[:-1], lay, ProtocolError)
    with pytest.raises(ProtocolError, match="bytes of packed labels"):
        wire.unpack(lay, body + bytes(16), lay, ProtocolError)


def test_packing_matches_the_hash_packing():
    """A label's 16 bytes are the integer sum d_i q^i, little-endian."""
    q = 7
    n = crt.label_length(q)
    rng = np.random.default_rng(3)
    digits = rng.integers(0, q, n)
    t = CrtTensor({q: LabelTensor(torch.as_tensor(digits)[None], q)})
    _, body = wire.pack([t])
    assert int.from_bytes(body, "little") == sum(int(d) * q ** i for i, d in enumerate(digits))
