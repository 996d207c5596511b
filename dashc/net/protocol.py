"""The wire protocol between the garbler (client) and the evaluator (server), version 1.

Built on the standard library's asyncio streams: the protocol has eight message types and one
round per inference, so an RPC framework (gRPC, HTTP/2) would add a dependency, code
generation and its own framing without buying anything; asyncio gives non-blocking sockets,
many connections in one process and cancellable reads (every read below has a timeout).

Every message is one frame (little-endian)::

    b"DSHN"  u16 version  u16 type  u32 length  u32 crc32     (16-byte header)
    payload (length bytes):  u32 meta_length  meta (UTF-8 JSON object)  body (raw bytes)

``crc32`` covers the first 12 header bytes and the payload; it catches damage in transit
(authenticity of the garbled computation is the garbler's label check, not this checksum).
A frame longer than the receiver's ``max_message`` is refused from its header alone.

Messages (C = garbler client, S = evaluator server)::

    C->S HELLO    {plan_sha256, dashc}                 the plan both sides must share
    S->C WELCOME  {plan_sha256, dashc, max_message, max_upload}
    C->S UPLOAD   {circuit, size, sha256}              offline: tables of one circuit follow
    C->S CHUNK    {}  + up to max_message bytes         ... as CHUNK frames, ``size`` in all
    S->C STORED   {circuit, size}
    C->S INFER    {circuit, labels: layout} + packed input labels     the online request
    S->C RESULT   {circuit, labels: layout} + packed output labels    the online response
    S->C ERROR    {code, message}                      then the server closes the connection

A circuit id (32 hex digits, drawn by the garbler) is accepted once: a second UPLOAD or a
second INFER naming it is refused (code ``replay``).  Labels travel packed, 16 bytes each
(:mod:`dashc.net.wire`).  Nothing secret crosses the wire: no global offset, no zero label.
"""
from __future__ import annotations

import asyncio
import json
import re
import struct
import zlib
from dataclasses import dataclass, field
from enum import IntEnum

from .errors import NetworkError, ProtocolError

MAGIC = b"DSHN"
VERSION = 1
HEADER = struct.Struct("<4sHHII")
_META_LEN = struct.Struct("<I")
_CIRCUIT_ID = re.compile(r"[0-9a-f]{32}")


class Msg(IntEnum):
    HELLO = 1
    WELCOME = 2
    UPLOAD = 3
    CHUNK = 4
    STORED = 5
    INFER = 6
    RESULT = 7
    ERROR = 8


# error codes of ERROR replies
VERSION_MISMATCH, MALFORMED, TOO_LARGE, TRUNCATED = "version", "malformed", "too-large", \
    "truncated"
TIMEOUT, CHECKSUM, PLAN_MISMATCH, REPLAY = "timeout", "checksum", "plan-mismatch", "replay"
UNKNOWN_CIRCUIT, UNEXPECTED, STORE_FULL, EVALUATION = "unknown-circuit", "unexpected", \
    "store-full", "evaluation-failed"


@dataclass(frozen=True)
class Limits:
    """Sizes and timeouts (seconds) of one side of a connection."""

    max_message: int = 8 << 20      # any one frame, header included
    max_upload: int = 4 << 30       # the garbled tables of one circuit
    chunk: int = 1 << 20            # CHUNK body size the client sends
    read_timeout: float = 30.0      # for the rest of a message once its header arrived
    idle_timeout: float = 600.0     # server: for the next message of a connection
    reply_timeout: float = 600.0    # client: for a reply (the evaluation runs meanwhile)
    connect_timeout: float = 10.0

    def __post_init__(self):
        if self.max_message < 1024:
            raise ValueError(f"max_message must be at least 1024 bytes, got {self.max_message}")
        if not 0 < self.chunk <= self.max_message - HEADER.size - _META_LEN.size - 2:
            raise ValueError(f"chunk ({self.chunk}) must be positive and fit in a message "
                             f"({self.max_message} bytes)")
        for name in ("read_timeout", "idle_timeout", "reply_timeout", "connect_timeout"):
            if not getattr(self, name) > 0:
                raise ValueError(f"{name} must be positive")


class FrameError(ProtocolError):
    """A received frame is malformed; ``code`` goes into the error reply."""


@dataclass
class Frame:
    type: Msg
    meta: dict = field(default_factory=dict)
    body: bytes = b""
    size: int = 0  # bytes on the wire, header included


def encode(kind: Msg, meta: dict | None = None, body: bytes = b"",
           version: int = VERSION) -> bytes:
    """One frame; its length is the number of bytes it takes on the wire."""
    head = json.dumps(meta or {}, separators=(",", ":")).encode() if meta else b""
    payload = b"".join((_META_LEN.pack(len(head)), head, body))
    prefix = struct.pack("<4sHHI", MAGIC, version, int(kind), len(payload))
    crc = zlib.crc32(payload, zlib.crc32(prefix))
    return prefix + struct.pack("<I", crc) + payload


def error_frame(code: str, message: str) -> bytes:
    return encode(Msg.ERROR, {"code": code, "message": message})


def parse_header(data: bytes, max_message: int) -> tuple[Msg, int, int]:
    """``(type, payload length, crc)`` of a 16-byte header, or :class:`FrameError`."""
    magic, version, kind, length, crc = HEADER.unpack(data)
    if magic != MAGIC:
        raise FrameError("not a dashc message (bad magic)", MALFORMED)
    if version != VERSION:
        raise FrameError(f"protocol version {version} is not supported (this dashc speaks "
                         f"version {VERSION})", VERSION_MISMATCH)
    if HEADER.size + length > max_message:
        raise FrameError(f"message of {HEADER.size + length} bytes exceeds the limit of "
                         f"{max_message} bytes", TOO_LARGE)
    try:
        kind = Msg(kind)
    except ValueError:
        raise FrameError(f"unknown message type {kind}", MALFORMED) from None
    if length < _META_LEN.size:
        raise FrameError(f"payload of {length} bytes is shorter than its meta length field",
                         MALFORMED)
    return kind, length, crc


def parse_payload(kind: Msg, header: bytes, payload: bytes, crc: int) -> Frame:
    if zlib.crc32(payload, zlib.crc32(header[:12])) != crc:
        raise FrameError("checksum mismatch (the message was damaged)", CHECKSUM)
    (meta_len,) = _META_LEN.unpack_from(payload)
    if meta_len > len(payload) - _META_LEN.size:
        raise FrameError(f"meta length {meta_len} exceeds the payload", MALFORMED)
    raw = payload[_META_LEN.size:_META_LEN.size + meta_len]
    meta: dict = {}
    if meta_len:
        try:
            meta = json.loads(raw.decode("utf-8"))
        except (UnicodeDecodeError, ValueError):
            raise FrameError("meta is not valid JSON", MALFORMED) from None
        if not isinstance(meta, dict):
            raise FrameError("meta is not a JSON object", MALFORMED)
    body = payload[_META_LEN.size + meta_len:]
    return Frame(kind, meta, body, HEADER.size + len(payload))


async def read_frame(reader: asyncio.StreamReader, max_message: int, first_timeout: float,
                     read_timeout: float, peer: str = "peer") -> Frame | None:
    """The next frame, or ``None`` if the peer closed the connection between frames.

    ``first_timeout`` bounds the wait for the header, ``read_timeout`` the rest.  Raises
    :class:`FrameError` (malformed, too large, wrong version, damaged, truncated, timed out
    mid-message) or :class:`NetworkError` (no message within ``first_timeout``, reset)."""
    try:
        header = await asyncio.wait_for(reader.readexactly(HEADER.size), first_timeout)
    except asyncio.IncompleteReadError as e:
        if not e.partial:
            return None
        raise FrameError(f"truncated message header from {peer} ({len(e.partial)} of "
                         f"{HEADER.size} bytes)", TRUNCATED) from None
    except asyncio.TimeoutError:
        raise NetworkError(f"no message from {peer} within {first_timeout:g} s") from None
    except (ConnectionError, OSError) as e:
        raise NetworkError(f"connection to {peer} lost ({_reason(e)})") from None
    kind, length, crc = parse_header(header, max_message)
    try:
        payload = await asyncio.wait_for(reader.readexactly(length), read_timeout)
    except asyncio.IncompleteReadError as e:
        raise FrameError(f"truncated {kind.name} message from {peer} ({len(e.partial)} of "
                         f"{length} payload bytes)", TRUNCATED) from None
    except asyncio.TimeoutError:
        raise FrameError(f"{kind.name} message from {peer} not complete within "
                         f"{read_timeout:g} s", TIMEOUT) from None
    except (ConnectionError, OSError) as e:
        raise NetworkError(f"connection to {peer} lost ({_reason(e)})") from None
    return parse_payload(kind, header, payload, crc)


async def send(writer: asyncio.StreamWriter, data: bytes, timeout: float,
               peer: str = "peer") -> None:
    try:
        writer.write(data)
        await asyncio.wait_for(writer.drain(), timeout)
    except asyncio.TimeoutError:
        raise NetworkError(f"{peer} did not accept data within {timeout:g} s") from None
    except (ConnectionError, OSError) as e:
        raise NetworkError(f"connection to {peer} lost ({_reason(e)})") from None


def _reason(e: BaseException) -> str:
    return getattr(e, "strerror", None) or type(e).__name__


# -- meta fields ------------------------------------------------------------------------------
def meta_field(frame: Frame, name: str, kind: type):
    value = frame.meta.get(name)
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        raise FrameError(f"{frame.type.name}: field {name!r} missing or not a "
                         f"{kind.__name__}", MALFORMED)
    return value


def circuit_id(frame: Frame) -> str:
    cid = meta_field(frame, "circuit", str)
    if not _CIRCUIT_ID.fullmatch(cid):
        raise FrameError(f"{frame.type.name}: circuit id must be 32 lowercase hex digits",
                         MALFORMED)
    return cid
