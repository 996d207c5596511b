"""Garbling and evaluation of the gates that cost ciphertexts, over whole tensors of wires.

Shapes: wires come as ``(B, E, n)`` digit tensors (batch element, wire element, label digit);
global offsets as ``(B, n)``, one per batch element (each inference is its own circuit).
Point-and-permute: digit 0 of every offset is 1, so the colour of a label (its digit 0)
equals ``value + colour(W0)`` and tells the evaluator which row to open.  Hash tweaks are
derived from the gate id, the flat element index ``b * E + e`` and a role number, so every
(gate, wire, use) gets its own pad even when two gates are keyed by the same label.

Projection ``Z_p -> Z_q`` (garbled row reduction)
-------------------------------------------------
With input zero label ``A0`` (colour ``s``) the label of colour ``r`` is
``A_{x_r} = A0 + x_r * delta_p`` with ``x_r = r - s mod p``.  A pad ``H(A)`` is read in two
ways (:mod:`dashc.runtime.hashing`): *expanded*, as ``n(q)`` digits mod ``q`` (``D(H)``,
statistically uniform, a long division of the 256-bit hash output), or as *fields*, ``n(q)``
values of ``b = bits(q - 1)`` bits (``F(H)``, exactly uniform in ``[0, 2^b)``: bits cut out).
The garbler sets the output zero label ``C0 = -D(H(A_{x_0})) - f(x_0) * delta_q`` so the row
of colour 0 is empty and is not sent, and sends ``row_r = (C0 + f(x_r) * delta_q) ^ F(H(A_{x_r}))``
(digit by digit) for ``r = 1..p-1``.  The evaluator holding ``A_x`` of colour ``r`` computes
``row_r ^ F(H(A_x))``, or ``-D(H(A_x))`` for colour 0, which is ``C0 + f(x) * delta_q``.  Each
row entry is a digit below ``q`` under a one-time pad of ``b`` uniform bits, so an unopened row
is uniform in ``[0, 2^b)^n(q)``, and it is stored in the ``b`` bits a digit mod ``q`` takes;
only one pad per wire needs the costly expansion.  An opened entry above ``q - 1`` can only
come from a damaged table or a forged label: the evaluation refuses it.  Cost: ``p - 1`` rows
of ``n(q)`` entries of ``b`` bits.

Mixed-modulus half gate ``x * y mod p`` (x mod p, y mod q read as an integer in [0, q))
---------------------------------------------------------------------------------------
The garbler draws a fresh mask ``r`` uniform in ``Z_p`` per wire from the CSPRNG (never a
colour) and uses ``x*y = x*(y + r) - x*r (mod p)``.

* Garbler half: a projection of ``x`` by ``t -> r*t mod p`` (role 0) gives a label
  ``G = G0 + r*x*delta_p``; ``p - 1`` rows.
* Evaluator half (role 1): for each colour ``s`` of ``y``'s label (value ``y_s = s - colour(B0)
  mod q``), with key ``B_{y_s} = B0 + y_s*delta_q`` and pad ``H(B_{y_s})`` read as ``n(p) + 1``
  values (digit part ``h_s``, label part ``P_s``; expanded digits mod ``p`` for ``s = 0``,
  fields of ``bits(p - 1)`` bits otherwise, as in the projection), the garbler sends
  ``d_0 = c_0 + h_0`` and ``d_s = c_s ^ h_s`` where ``c_s = y_s + r mod p``, and
  ``e_s = (Z0 - c_s*A0) ^ P_s`` where ``Z0 = c_0*A0 - P_0`` (``e_0`` would be zero and is not
  sent).  The evaluator of colour ``s`` recovers ``c = d_s ^ h_s`` and
  ``K = e_s ^ P_s = Z0 - c*A0`` (for ``s = 0``: ``c = d_0 - h_0`` and ``K = -P_0``) and forms
  ``E = c*A_x + K = Z0 + c*x*delta_p``.
* Output ``E - G``, zero label ``Z0 - G0``: its value is ``(c - r)*x = y*x mod p``.

Cost: ``(p - 1) + (q - 1)`` rows of ``n(p)`` entries plus ``q`` single entries, each in the
``bits(p - 1)`` bits of a digit mod ``p``.

Security (sketch).  The evaluator holds one label per wire.  Every pad other than the one
keyed by its own label is keyed by ``own + k*delta`` with ``k != 0`` under a tweak used for
no other (gate, element, role); by circular correlation robustness of ``H`` those pads are
pseudo-random, so all unopened rows are.  What it opens: in the garbler half a label of
``r*x`` (a label, independent of the value without ``delta_p``); in the evaluator half
``c = y + r mod p``, uniform and independent of ``y`` because ``r`` is fresh, uniform and
enters nothing else the evaluator sees in the clear; and ``K = (c_0 - c)*A0 - P_0``, masked by
the pseudo-random ``P_0`` unless ``c = c_0``, in which case ``K = -P_s`` is its own pad.  So
the view is simulatable from the output label alone.  Correctness is the identity above, and
authenticity follows because any change to a row moves the result off ``Z0 - G0 + v*delta_p``
except with the probability of guessing ``delta_p``.  Using ``y``'s own zero-label colour
would also be sound; using ``x``'s colour as the mask would reveal ``x - y`` (a flaw found in a
reference implementation), hence a separate random ``r``.

The generalized half gate (``x * y``, same modulus) is the case ``q = p``.
"""
from __future__ import annotations

import numpy as np
import torch

from dashc import crt

from . import cpu_gates, cpu_kernels
from .bitpack import field_bits
from .hashing import HASH, fields, row_blocks, unpack
from .tables import Packed, digit_dtype

IMPLS = ("auto", "compiled", "torch")


def _compiled(impl: str, t: torch.Tensor) -> bool:
    """Whether to run the compiled CPU kernels (``auto``: CPU tensors and numba present)."""
    if impl == "auto":
        return cpu_kernels.AVAILABLE and t.device.type == "cpu"
    if impl == "compiled":
        if not cpu_kernels.AVAILABLE:
            raise RuntimeError("the compiled CPU kernels need numba, which is not installed")
        if t.device.type != "cpu":
            raise ValueError("the compiled kernels run on CPU tensors only")
        return True
    if impl == "torch":
        return False
    raise ValueError(f"unknown gate implementation {impl!r}; expected one of {IMPLS}")


def _np(t: torch.Tensor, shape: tuple[int, ...] | None = None) -> np.ndarray:
    """A C-contiguous numpy view (copy only when needed) of a CPU tensor."""
    a = t.detach().numpy()
    if shape is not None:
        a = a.reshape(shape)
    return np.ascontiguousarray(a)


def _np64(t: torch.Tensor, shape: tuple[int, ...] | None = None) -> np.ndarray:
    return _np(t.to(torch.int64), shape)


def _table(t, shape: tuple[int, ...]):
    """A gate's table array for the compiled kernels: packed digits stay packed (only the
    opened rows are read), a tensor becomes a numpy view."""
    return t if isinstance(t, Packed) else _np(t, shape)


def _dense(t, device) -> torch.Tensor:
    """A gate's table array as a tensor (packed digits are unpacked and checked)."""
    if isinstance(t, Packed):
        return torch.from_numpy(t.unpack()).to(device)
    return t


def _elements(B: int, E: int, device) -> torch.Tensor:
    return torch.arange(B * E, dtype=torch.int64, device=device)


def row_modulus(q: int) -> int:
    """The range ``2^bits(q - 1)`` of a projection row's entries into ``Z_q``: each is a
    label digit exclusive-or a ``bits(q - 1)``-bit field of a pad, stored in the same
    ``bits(q - 1)`` bits as a digit mod ``q``."""
    return 1 << field_bits(q)


def proj_rows(p: int, q: int) -> int:
    """Ciphertext rows per wire of a projection Z_p -> Z_q."""
    return p - 1


def mixed_mul_rows(p: int, q: int) -> int:
    """Ciphertext rows (of ``n(p)`` digits) per wire of a mixed half gate, plus ``q`` digits."""
    return (p - 1) + (q - 1)


def garble_proj(a0: torch.Tensor, p: int, delta_p: torch.Tensor, q: int,
                delta_q: torch.Tensor, table: torch.Tensor, gate_id: int, role: int = 0,
                impl: str = "auto"):
    """Zero labels ``a0 (B, E, n(p))``, ``table`` ``(p,)`` or ``(B, E, p)`` with entries in
    ``[0, q)`` -> (output zero labels ``(B, E, n(q))``, rows ``(B, E, p-1, n(q))``; int64 on
    the torch path, the table storage type of ``q`` on the compiled one)."""
    return garble_proj_many(a0, p, delta_p, [(q, delta_q, table)], gate_id, role, impl)[0]


def garble_proj_many(a0: torch.Tensor, p: int, delta_p: torch.Tensor, targets, gate_id: int,
                     role: int = 0, impl: str = "auto") -> list:
    """One projection gate of ``a0`` into several targets ``(q, delta_q, table)``: a list of
    ``(output zero labels, rows)``, one per target, each as :func:`garble_proj` returns.
    The ``p`` keys of a wire are packed and put through ``pi`` once; target ``t`` of ``T``
    uses the tweak element field ``elem * T + t`` (see :mod:`dashc.runtime.hashing`), so with
    one target this is exactly :func:`garble_proj`."""
    B, E, n_p = a0.shape
    dev = a0.device
    targets = [(int(q), dq, tab) for q, dq, tab in targets]
    if _compiled(impl, a0):
        spec = []
        for q, dq, tab in targets:
            n_q = crt.label_length(q)
            spec.append((q, _np64(dq), _np64(tab, (p,) if tab.dim() == 1 else (B * E, p)),
                         row_blocks(q, n_q), digit_dtype(q)[1]))
        res = cpu_gates.garble_proj_many(_np64(a0, (B * E, n_p)), E, p, _np64(delta_p),
                                           spec, gate_id, role)
        HASH.aes_blocks += B * E * p * (1 + sum(t[3] for t in spec))
        return [(torch.from_numpy(c0).reshape(B, E, -1),
                 torch.from_numpy(rows).reshape(B, E, p - 1, -1)) for c0, rows in res]
    colours = torch.arange(p, dtype=torch.int64, device=dev)
    x = (colours - a0[..., :1]) % p  # (B, E, p): value of the label of colour r
    keys = (a0[:, :, None, :] + x[..., None] * delta_p[:, None, None, :]) % p
    elem = _elements(B, E, dev).repeat_interleave(p)
    hs = [row_blocks(q, crt.label_length(q)) for q, _, _ in targets]
    all_blocks = HASH.blocks(keys.reshape(-1, n_p), p, gate_id, elem, role, hs)
    result = []
    for (q, delta_q, table), blocks in zip(targets, all_blocks):
        n_q = crt.label_length(q)
        blocks = blocks.reshape(B, E, p, -1)
        pad0 = unpack(blocks[:, :, 0].reshape(B * E, -1), q, n_q).reshape(B, E, n_q)
        fld = fields(blocks[:, :, 1:].reshape(B * E * (p - 1), -1), q, n_q)
        table = table.to(dev, torch.int64)
        fx = table[x] if table.dim() == 1 else torch.gather(table, 2, x)
        dq = delta_q[:, None, None, :]
        c0 = (-pad0 - fx[:, :, :1] * dq[:, :, 0]) % q
        labels = (c0[:, :, None, :] + fx[:, :, 1:, None] * dq) % q
        result.append((c0, labels ^ fld.reshape(B, E, p - 1, n_q)))
    return result


def eval_proj(a: torch.Tensor, p: int, q: int, rows: torch.Tensor, gate_id: int,
              role: int = 0, impl: str = "auto") -> torch.Tensor:
    """Active labels ``a (B, E, n(p))`` and rows ``(B, E, p-1, n(q))`` -> ``(B, E, n(q))``."""
    return eval_proj_many(a, p, [(q, rows)], gate_id, role, impl)[0]


def eval_proj_many(a: torch.Tensor, p: int, targets, gate_id: int, role: int = 0,
                   impl: str = "auto") -> list:
    """Active labels ``a (B, E, n(p))`` and, per target, ``(q, rows (B, E, p-1, n(q)))`` ->
    one ``(B, E, n(q))`` active label tensor per target (see :func:`garble_proj_many`)."""
    B, E, n_p = a.shape
    targets = [(int(q), rows) for q, rows in targets]
    if _compiled(impl, a):
        spec = [(q, _table(rows, (B * E, p - 1, crt.label_length(q))),
                 row_blocks(q, crt.label_length(q))) for q, rows in targets]
        res = cpu_gates.eval_proj_many(_np64(a, (B * E, n_p)), p, spec, gate_id, role)
        HASH.aes_blocks += B * E * (1 + sum(t[2] for t in spec))
        return [torch.from_numpy(out).reshape(B, E, -1) for out in res]
    hs = [row_blocks(q, crt.label_length(q)) for q, _ in targets]
    all_blocks = HASH.blocks(a.reshape(-1, n_p), p, gate_id, _elements(B, E, a.device), role,
                             hs)
    colour = a[..., 0]
    result = []
    for (q, rows), blocks in zip(targets, all_blocks):
        n_q = crt.label_length(q)
        pad0 = unpack(blocks, q, n_q).reshape(B, E, n_q)
        fld = fields(blocks, q, n_q).reshape(B, E, n_q)
        idx = (colour - 1).clamp(min=0)[..., None, None].expand(B, E, 1, n_q)
        row = torch.gather(_dense(rows, a.device).to(torch.int64), 2, idx)[:, :, 0] ^ fld
        if bool(((row >= q) & (colour != 0)[..., None]).any()):
            raise cpu_gates.forged(gate_id, f"a projection into Z{q}", "digit")
        result.append(torch.where((colour == 0)[..., None], (-pad0) % q, row))
    return result


def garble_mixed_mul(a0: torch.Tensor, p: int, delta_p: torch.Tensor, b0: torch.Tensor,
                     q: int, delta_q: torch.Tensor, r: torch.Tensor, gate_id: int,
                     impl: str = "auto"):
    """``x`` zero labels ``a0 (B, E, n(p))``, ``y`` zero labels ``b0 (B, E, n(q))``, masks
    ``r (B, E)`` uniform in ``Z_p`` -> (output zero labels, (garbler-half rows
    ``(B, E, p-1, n(p))``, evaluator-half rows ``(B, E, q-1, n(p))``, digits ``(B, E, q)``))."""
    B, E, n_p = a0.shape
    n_q = b0.shape[-1]
    dev = a0.device
    r = r.to(dev, torch.int64) % p
    table = (r[..., None] * torch.arange(p, device=dev)) % p  # t -> r*t
    g0, rows_g = garble_proj(a0, p, delta_p, p, delta_p, table, gate_id, role=0, impl=impl)
    if _compiled(impl, a0):
        h = row_blocks(p, n_p + 1)
        W = B * E
        out0, rows_e, digits = cpu_gates.garble_mixed_half(
            _np64(a0, (W, n_p)), _np64(b0, (W, n_q)), E, p, q, _np64(delta_q), _np(r, (W,)),
            _np(g0, (W, n_p)), gate_id, h, digit_dtype(p)[1])
        HASH.aes_blocks += W * q * (1 + h)
        return (torch.from_numpy(out0).reshape(B, E, n_p),
                (rows_g, torch.from_numpy(rows_e).reshape(B, E, q - 1, n_p),
                 torch.from_numpy(digits).reshape(B, E, q)))

    colours = torch.arange(q, dtype=torch.int64, device=dev)
    y = (colours - b0[..., :1]) % q  # (B, E, q)
    keys = (b0[:, :, None, :] + y[..., None] * delta_q[:, None, None, :]) % q
    elem = _elements(B, E, dev).repeat_interleave(q)
    (blocks,) = HASH.blocks(keys.reshape(-1, n_q), q, gate_id, elem, 1, [row_blocks(p, n_p + 1)])
    blocks = blocks.reshape(B, E, q, -1)
    pad0 = unpack(blocks[:, :, 0].reshape(B * E, -1), p, n_p + 1).reshape(B, E, n_p + 1)
    fld = fields(blocks[:, :, 1:].reshape(B * E * (q - 1), -1), p, n_p + 1)
    fld = fld.reshape(B, E, q - 1, n_p + 1)
    c = (y + r[..., None]) % p  # (B, E, q)
    z0 = (c[..., :1] * a0 - pad0[..., 1:]) % p
    digits = torch.cat([(c[..., :1] + pad0[..., :1]) % p, c[..., 1:] ^ fld[..., 0]], dim=-1)
    labels = (z0[:, :, None, :] - c[:, :, 1:, None] * a0[:, :, None, :]) % p
    return (z0 - g0) % p, (rows_g, labels ^ fld[..., 1:], digits)


def eval_mixed_mul(a: torch.Tensor, p: int, b: torch.Tensor, q: int, rows_g: torch.Tensor,
                   rows_e: torch.Tensor, digits: torch.Tensor, gate_id: int,
                   impl: str = "auto") -> torch.Tensor:
    """Active labels of ``x`` and ``y`` and the gate's tables -> active label of ``x*y``."""
    B, E, n_p = a.shape
    n_q = b.shape[-1]
    g = eval_proj(a, p, p, rows_g, gate_id, role=0, impl=impl)
    if _compiled(impl, a):
        h = row_blocks(p, n_p + 1)
        W = B * E
        out = cpu_gates.eval_mixed_half(_np64(a, (W, n_p)), _np64(b, (W, n_q)),
                                        _np(g, (W, n_p)), p, q,
                                        _table(rows_e, (W, q - 1, n_p)),
                                        _table(digits, (W, q)), gate_id, h)
        HASH.aes_blocks += W * (1 + h)
        return torch.from_numpy(out).reshape(B, E, n_p)
    (blocks,) = HASH.blocks(b.reshape(-1, n_q), q, gate_id, _elements(B, E, a.device), 1,
                            [row_blocks(p, n_p + 1)])
    pad0 = unpack(blocks, p, n_p + 1).reshape(B, E, n_p + 1)
    fld = fields(blocks, p, n_p + 1).reshape(B, E, n_p + 1)
    s = b[..., 0]
    digits, rows_e = _dense(digits, a.device), _dense(rows_e, a.device)
    d = torch.gather(digits.to(torch.int64), 2, s[..., None])[..., 0]
    idx = (s - 1).clamp(min=0)[..., None, None].expand(B, E, 1, n_p)
    row = torch.gather(rows_e.to(torch.int64), 2, idx)[:, :, 0]
    c1, k1 = d ^ fld[..., 0], row ^ fld[..., 1:]
    opened = s != 0
    if bool(((c1 >= p) & opened).any() or ((k1 >= p) & opened[..., None]).any()):
        raise cpu_gates.forged(gate_id, f"a mixed half gate mod {p}")
    c = torch.where(opened, c1, (d - pad0[..., 0]) % p)
    k = torch.where(opened[..., None], k1, -pad0[..., 1:])
    return (c[..., None] * a + k - g) % p
