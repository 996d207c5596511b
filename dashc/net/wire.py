"""Labels on the wire: every label packed into 16 bytes.

A label mod ``q`` is ``n(q)`` digits with ``q^n(q) <= 2^128``; it travels as the integer
``sum_i d_i q^i`` in 16 little-endian bytes (the packing the hash uses,
:func:`dashc.runtime.hashing.pack`).  A tensor list is described by its layout, a JSON list
of ``{"moduli": [...], "shape": [...]}`` (shape without the digit axis); the body is the
tensors one after the other, each modulus in layout order, elements in C order.

:func:`unpack` refuses a layout that is not the expected one, a body of the wrong length and
any 16-byte value that is not a canonical packing (``>= q^n(q)``), raising the error class
its caller names: the server answers a malformed request, the garbler treats a malformed
response as an integrity failure.
"""
from __future__ import annotations

import numpy as np
import torch

from dashc import crt
from dashc.errors import DashcError
from dashc.runtime import hashing
from dashc.runtime.backend import CrtTensor
from dashc.runtime.labels import LabelTensor

LABEL_BYTES = 16
_LIMBS = np.dtype("<u4")


def layout(tensors: list[CrtTensor]) -> list[dict]:
    """The JSON description of a list of label tensors (or of zero labels of that shape)."""
    return [{"moduli": [int(q) for q in t.moduli], "shape": [int(s) for s in t.shape]}
            for t in tensors]


def body_size(lay: list[dict]) -> int:
    """Bytes of the packed labels described by ``lay``."""
    total = 0
    for entry in lay:
        count = 1
        for s in entry["shape"]:
            count *= int(s)
        total += count * len(entry["moduli"]) * LABEL_BYTES
    return total


def pack(tensors: list[CrtTensor]) -> tuple[list[dict], bytes]:
    """``(layout, body)`` of a list of label tensors."""
    parts = []
    for t in tensors:
        for q, lab in t.parts.items():
            digits = lab.digits.reshape(-1, lab.n).to("cpu", torch.int64)
            limbs = hashing.pack(digits, int(q)) if len(digits) else \
                torch.zeros(0, 4, dtype=torch.int64)
            parts.append(limbs.numpy().astype(_LIMBS).tobytes())
    return layout(tensors), b"".join(parts)


def unpack(lay, body: bytes, expected: list[dict], error: type[DashcError],
           what: str = "labels") -> list[CrtTensor]:
    """Label tensors from a layout and a packed body; ``lay`` must equal ``expected``."""
    if lay != expected:
        raise error(f"{what}: layout {_short(lay)} is not the expected {_short(expected)}")
    need = body_size(expected)
    if len(body) != need:
        raise error(f"{what}: {len(body)} bytes of packed labels, expected {need}")
    out, offset = [], 0
    for entry in expected:
        shape = tuple(int(s) for s in entry["shape"])
        count = int(np.prod(shape, dtype=np.int64))
        parts = {}
        for q in entry["moduli"]:
            q = int(q)
            n = crt.label_length(q)
            raw = np.frombuffer(body, dtype=_LIMBS, count=4 * count, offset=offset)
            offset += count * LABEL_BYTES
            limbs = torch.from_numpy(raw.astype(np.int64).reshape(count, 4))
            digits = hashing.unpack(limbs, q, n) if count else \
                torch.zeros(0, n, dtype=torch.int64)
            if count and not torch.equal(hashing.pack(digits, q), limbs):
                raise error(f"{what}: a label mod {q} is not a canonical packing "
                            f"(value of {q}^{n} or more)")
            parts[q] = LabelTensor(digits.reshape(*shape, n), q)
        out.append(CrtTensor(parts))
    return out


def _short(lay) -> str:
    text = str(lay)
    return text if len(text) <= 200 else text[:197] + "..."
