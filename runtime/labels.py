"""LabelTensor: the labels of a tensor of wires modulo one prime, and their free operations.

A label modulo ``q`` is a vector of ``n(q)`` digits in ``[0, q)``; a tensor of wires with
value shape ``(B, *shape)`` has labels ``digits`` of shape ``(B, *shape, n(q))`` (int64, any
torch device).  Every operation here is linear over ``Z_q``, so it maps zero labels to zero
labels and active labels to active labels alike (``W0 + x*delta`` stays of that form).

Linear maps with public integer weights (dense, conv2d, sumpool) fold the digit axis into the
batch and run one float matmul/convolution, then reduce mod ``q``.  Exactness: weights (or, where
their size would need float64, their centred representatives mod ``q``) and the float type
are chosen from the bound ``fan_in * (q - 1) * max|w|`` on any partial sum (float32 below 2^24, float64 below
2^53); when even float64 is not exact the reduction axis is split into exact pieces, each
reduced mod ``q`` before summing.  TF32 is switched off on CUDA for these calls.
"""
from __future__ import annotations

import contextlib

import numpy as np
import torch
import torch.nn.functional as F

from dashc import crt

from . import cpu_kernels, layout_kernels, workers

FLOAT32_EXACT = 1 << 24
FLOAT64_EXACT = 1 << 53

_PRIME_CHECKED: set[int] = set()


def check_modulus(q: int) -> int:
    """Refuse composite moduli (a multiple of delta by a zero divisor is guessable)."""
    q = int(q)
    if q not in _PRIME_CHECKED:
        if not crt.is_prime(q):
            raise ValueError(f"wire modulus {q} is not prime: a composite label modulus lets "
                             f"the evaluator guess c*delta for a zero divisor c")
        _PRIME_CHECKED.add(q)
    return q


def centred(w: np.ndarray | torch.Tensor, q: int):
    """Representatives of ``w mod q`` in ``(-q/2, q/2]``."""
    r = w % q
    return r - q * (r > q // 2)


@contextlib.contextmanager
def _no_tf32():
    old_mm = torch.backends.cuda.matmul.allow_tf32
    old_cudnn = torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    try:
        yield
    finally:
        torch.backends.cuda.matmul.allow_tf32 = old_mm
        torch.backends.cudnn.allow_tf32 = old_cudnn


def exact_float_plan(fan_in: int, q: int, wmax: int) -> tuple[torch.dtype, int]:
    """Float type and the largest reduction length whose partial sums stay exact."""
    per_term = max(1, (q - 1) * max(1, wmax))
    if fan_in * per_term < FLOAT32_EXACT:
        return torch.float32, fan_in
    if fan_in * per_term < FLOAT64_EXACT:
        return torch.float64, fan_in
    return torch.float64, max(1, (FLOAT64_EXACT - 1) // per_term)


def _weight_tensor(weight, q: int, device, fan_in: int) -> tuple[torch.Tensor, int]:
    """Integer weights for a linear map mod ``q`` and their largest magnitude: the weights
    themselves when every partial sum with them is exact in float32 (the result mod ``q``
    is the same, and reducing a large weight array mod every modulus costs more than the
    matmul), else their centred representatives mod ``q``."""
    w = np.asarray(weight, dtype=np.int64)
    wmax = max(int(w.max(initial=0)), -int(w.min(initial=0)))
    if fan_in * (q - 1) * max(1, wmax) >= FLOAT32_EXACT:
        w = centred(w, q)
        wmax = int(np.abs(w).max(initial=0))
    return torch.from_numpy(np.require(w, np.int64, ["C", "W"])).to(device), wmax


#: prepared float weights of read-only weight arrays (a plan's), keyed by the array's id;
#: each entry keeps the array alive, so the id cannot be reused while the entry exists
_PREPARED: dict[tuple, tuple] = {}
_PREPARED_MAX = 512


def _float_weights(weight, q: int, device, fan_in: int) -> tuple[torch.Tensor, torch.dtype,
                                                                  int]:
    """``(weights as floats, float type, exact reduction length)`` for a linear map mod
    ``q`` (see :func:`exact_float_plan`); memoised for read-only numpy weight arrays, which
    a plan's are, since preparing them costs as much as a small layer's matmul."""
    key = (id(weight), q, str(device), fan_in)
    hit = _PREPARED.get(key)
    if hit is not None and hit[0] is weight:
        return hit[1:]
    w, wmax = _weight_tensor(weight, q, device, fan_in)
    dtype, step = exact_float_plan(fan_in, q, wmax)
    prepared = (w.to(dtype), dtype, step)
    if isinstance(weight, np.ndarray) and not weight.flags.writeable:
        if len(_PREPARED) >= _PREPARED_MAX:
            _PREPARED.clear()
        _PREPARED[key] = (weight, *prepared)
    return prepared


def exact_conv2d(x: torch.Tensor, w: torch.Tensor, stride: tuple[int, int]) -> torch.Tensor:
    """``F.conv2d`` without padding, exact on integer-valued floats on any device.  On the
    CPU that is ``F.conv2d`` itself.  Elsewhere it is one matrix product over unfolded
    windows: CUDA's convolution library may pick Winograd or FFT algorithms, whose
    transforms round even on integer data, while a matrix product (TF32 off) only adds
    exact integer products."""
    if x.device.type == "cpu":
        return F.conv2d(x, w, stride=stride)
    return conv2d_gemm(x, w, stride)


def conv2d_gemm(x: torch.Tensor, w: torch.Tensor, stride: tuple[int, int]) -> torch.Tensor:
    """``F.conv2d`` without padding as ``weights @ unfold(x)``."""
    N, _, H, W = x.shape
    O, C, kh, kw = w.shape
    Ho, Wo = (H - kh) // stride[0] + 1, (W - kw) // stride[1] + 1
    cols = F.unfold(x, (kh, kw), stride=stride)  # (N, C*kh*kw, Ho*Wo)
    return (w.reshape(O, C * kh * kw) @ cols).reshape(N, O, Ho, Wo)


_LENGTH: dict[int, int] = {}


def label_length(q: int) -> int:
    """``crt.label_length`` memoised (it is asked for on every label tensor made)."""
    n = _LENGTH.get(q)
    if n is None:
        n = _LENGTH[q] = crt.label_length(q)
    return n


def _compiled(*tensors: torch.Tensor) -> bool:
    """Whether the compiled kernels can take these digit tensors: contiguous int64 CPU
    tensors (of one shape, for two operands) and numba present."""
    t = tensors[0]
    return (cpu_kernels.AVAILABLE and t.device.type == "cpu" and t.dtype == torch.int64
            and all(u.device.type == "cpu" and u.dtype == torch.int64 and u.is_contiguous()
                    and u.shape == t.shape for u in tensors)
            and not any(u.requires_grad for u in tensors))


def in_parts(n: int, fn) -> None:
    """``fn(i0, i1)`` over ``[0, n)`` label digits, cut into parts on the worker threads
    when there are enough of them (:data:`dashc.runtime.workers.MIN_PART_DIGITS`)."""
    workers.run_parts(n, 1, fn, min_work=workers.MIN_PART_DIGITS)


def _binary(kernel, a: torch.Tensor, b: torch.Tensor, q: int) -> torch.Tensor:
    out = torch.empty_like(a)
    av, bv, ov = a.view(-1).numpy(), b.view(-1).numpy(), out.view(-1).numpy()
    in_parts(av.shape[0], lambda i0, i1: kernel(av[i0:i1], bv[i0:i1], q, ov[i0:i1]))
    return out


def _rows_in_parts(a: np.ndarray, fn) -> None:
    """``fn(e0, e1)`` over the elements ``a[:, e0:e1]`` of a ``(B, E, n)`` digit array."""
    B, E, n = a.shape
    workers.run_parts(E, B * n, fn, min_work=workers.MIN_PART_DIGITS)


class LabelTensor:
    """Labels modulo prime ``q``: ``digits`` of shape ``(B, *shape, n(q))``."""

    __slots__ = ("digits", "q")

    def __init__(self, digits: torch.Tensor, q: int):
        check_modulus(q)
        n = label_length(q)
        if digits.shape[-1] != n:
            raise ValueError(f"labels mod {q} need {n} digits, got {digits.shape[-1]}")
        self.digits = digits
        self.q = q

    # -- description ---------------------------------------------------------------------
    @property
    def shape(self) -> tuple[int, ...]:
        """Value shape (batch axis included, digit axis excluded)."""
        return tuple(self.digits.shape[:-1])

    @property
    def n(self) -> int:
        return self.digits.shape[-1]

    @property
    def device(self) -> torch.device:
        return self.digits.device

    @property
    def batch(self) -> int:
        return self.digits.shape[0]

    def colour(self) -> torch.Tensor:
        """Point-and-permute colour (digit 0), shape ``self.shape``."""
        return self.digits[..., 0]

    def flat(self) -> torch.Tensor:
        """``(B * elements, n)`` view of the digits."""
        return self.digits.reshape(-1, self.n)

    def __repr__(self) -> str:
        return f"LabelTensor(q={self.q}, shape={self.shape}, device={self.device})"

    def _new(self, digits: torch.Tensor) -> "LabelTensor":
        """A label tensor of the same (already checked) modulus; ``digits`` keep the
        digit axis of ``self``."""
        out = LabelTensor.__new__(LabelTensor)
        out.digits = digits
        out.q = self.q
        return out

    def _check(self, other: "LabelTensor") -> None:
        if other.q != self.q:
            raise ValueError(f"moduli differ: {self.q} and {other.q}")

    # -- ring operations ------------------------------------------------------------------
    def add(self, other: "LabelTensor") -> "LabelTensor":
        self._check(other)
        if _compiled(self.digits, other.digits):
            return self._new(_binary(cpu_kernels.add_mod, self.digits, other.digits, self.q))
        return self._new((self.digits + other.digits) % self.q)

    def sub(self, other: "LabelTensor") -> "LabelTensor":
        self._check(other)
        if _compiled(self.digits, other.digits):
            return self._new(_binary(cpu_kernels.sub_mod, self.digits, other.digits, self.q))
        return self._new((self.digits - other.digits) % self.q)

    def neg(self) -> "LabelTensor":
        return self.cmul(-1)

    def cmul(self, c: int | torch.Tensor) -> "LabelTensor":
        """Multiply by a public integer (or an integer tensor broadcast over value shape)."""
        if isinstance(c, torch.Tensor):
            c = (c.to(self.device, torch.int64) % self.q).unsqueeze(-1)
        else:
            c = int(c) % self.q
            if _compiled(self.digits):
                out = torch.empty_like(self.digits)
                av, ov, q = self.digits.view(-1).numpy(), out.view(-1).numpy(), self.q
                in_parts(av.shape[0],
                         lambda i0, i1: cpu_kernels.cmul_mod(av[i0:i1], c, q, ov[i0:i1]))
                return self._new(out)
        return self._new((self.digits * c) % self.q)

    def add_scaled(self, delta: torch.Tensor, c) -> "LabelTensor":
        """``self + c * delta`` with ``delta`` of shape ``(B, n)`` and ``c`` an int or an
        integer tensor/array broadcast against the value shape (garbler only)."""
        c = torch.as_tensor(np.asarray(c) if not isinstance(c, torch.Tensor) else c)
        c = (c.to(self.device, torch.int64) % self.q)
        d = delta.reshape(self.batch, *([1] * (len(self.shape) - 1)), self.n)
        if c.dim() == 0:  # one constant: c*delta once per batch element, then one add
            cd = (c * delta) % self.q
            if _compiled(self.digits) and _compiled(cd):
                a = self.digits.reshape(self.batch, -1, self.n)
                out = torch.empty_like(a)
                an, dn, on, q = a.numpy(), cd.numpy(), out.numpy(), self.q
                _rows_in_parts(an, lambda e0, e1: cpu_kernels.add_rows(
                    an[:, e0:e1], dn, q, on[:, e0:e1]))
                return self._new(out.reshape(self.digits.shape))
            return self._new((self.digits + cd.reshape(d.shape)) % self.q)
        c = c.expand(self.shape) if c.dim() <= len(self.shape) else c
        if _compiled(self.digits) and _compiled(delta) and tuple(c.shape) == self.shape:
            a = self.digits.reshape(self.batch, -1, self.n)
            out = torch.empty_like(a)
            an, on, q = a.numpy(), out.numpy(), self.q
            cn = c.reshape(self.batch, -1).contiguous().numpy()
            dn = delta.contiguous().numpy()
            _rows_in_parts(an, lambda e0, e1: cpu_kernels.add_scaled_rows(
                an[:, e0:e1], cn[:, e0:e1], dn, q, on[:, e0:e1]))
            return self._new(out.reshape(self.digits.shape))
        return self._new((self.digits + c.unsqueeze(-1) * d) % self.q)

    # -- shape operations ----------------------------------------------------------------
    def reshape(self, shape: tuple[int, ...]) -> "LabelTensor":
        """New value shape, batch axis included."""
        return self._new(self.digits.reshape(*shape, self.n))

    def take(self, index: np.ndarray | torch.Tensor) -> "LabelTensor":
        """``out[b, *i] = self.flatten(1)[b, index[*i]]``."""
        idx = torch.as_tensor(np.asarray(index, dtype=np.int64)).to(self.device)
        flat = self.digits.reshape(self.batch, -1, self.n)
        if idx.numel() and (int(idx.min()) < 0 or int(idx.max()) >= flat.shape[1]):
            raise IndexError(f"take index out of range for {flat.shape[1]} elements")
        out = flat.index_select(1, idx.reshape(-1))
        return self._new(out.reshape(self.batch, *idx.shape, self.n))

    # -- linear maps with public integer weights -----------------------------------------
    def _residues(self, y: torch.Tensor, acc: torch.Tensor | None, unfold: bool
                  ) -> torch.Tensor:
        """Residues mod ``q`` of the integer-valued float result ``y`` of one piece of a
        linear map, added to ``acc`` (the earlier pieces).  ``unfold``: ``y`` is
        ``(B * n, O, H, W)`` and the result ``(B, O, H, W, n)``; else the layouts agree."""
        q = self.q
        if _compiled(self.digits) and y.device.type == "cpu" and y.is_contiguous():
            if unfold:
                _, O, H, W = y.shape
                out = torch.empty((self.batch, O, H, W, self.n), dtype=torch.int64)
                src = y.view(self.batch, self.n, -1).numpy()
                dst = out.view(self.batch, -1, self.n).numpy()
                _rows_in_parts(dst, lambda e0, e1: layout_kernels.residues_unfold(
                    src[:, :, e0:e1], q, dst[:, e0:e1]))
                return out if acc is None else _binary(cpu_kernels.add_mod, acc, out, q)
            out = torch.empty(y.shape, dtype=torch.int64)
            yv, ov = y.view(-1).numpy(), out.view(-1).numpy()
            if acc is None:
                in_parts(yv.shape[0], lambda i0, i1: layout_kernels.residues(
                    yv[i0:i1], q, ov[i0:i1]))
            else:
                av = acc.view(-1).numpy()
                in_parts(yv.shape[0], lambda i0, i1: layout_kernels.add_residues(
                    av[i0:i1], yv[i0:i1], q, ov[i0:i1]))
            return out
        r = y.to(torch.int64) % q
        if unfold:
            _, O, H, W = y.shape
            r = r.reshape(self.batch, self.n, O, H, W).permute(0, 2, 3, 4, 1).contiguous()
        return r if acc is None else (acc + r) % q

    def dense(self, weight) -> "LabelTensor":
        """``(B, in) -> (B, out)``: ``y = x @ weight.T`` with ``weight [out, in]``, as one
        matrix product ``weight @ digits[b]`` per batch element (digits ``(in, n)``), which
        keeps the label layout ``(B, out, n)``."""
        B, fan_in = self.shape
        if np.shape(weight)[1:] != (fan_in,):
            raise ValueError(f"dense weight {np.shape(weight)} does not match input {fan_in}")
        w, dtype, step = _float_weights(weight, self.q, self.device, fan_in)
        x = self.digits.to(dtype)
        acc = None
        with _no_tf32():
            for s in range(0, fan_in, step):
                part = torch.matmul(w[:, s:s + step], x[:, s:s + step]).contiguous()
                acc = self._residues(part, acc, unfold=False)
        return self._new(acc)

    def _fold(self) -> torch.Tensor:
        """``(B, C, H, W, n) -> (B * n, C, H, W)``."""
        B, C, H, W = self.shape
        return self.digits.permute(0, 4, 1, 2, 3).reshape(B * self.n, C, H, W)

    def _fold_padded(self, pads: tuple[int, int, int, int], dtype) -> torch.Tensor:
        """``(B * n, C, H', W')`` floats of the digits, zero padded (one pass on the CPU)."""
        top, left, bottom, right = pads
        if _compiled(self.digits):
            B, C, H, W = self.shape
            x = torch.zeros((B * self.n, C, H + top + bottom, W + left + right), dtype=dtype)
            src, dst = self.digits.numpy(), x.numpy()
            _rows_in_parts(src.reshape(B, C, -1), lambda c0, c1: layout_kernels.fold_pad(
                src[:, c0:c1], top, left, dst[:, c0:c1]))
            return x
        return F.pad(self._fold(), (left, right, top, bottom)).to(dtype)

    def conv2d(self, weight, stride=(1, 1), pads=(0, 0, 0, 0)) -> "LabelTensor":
        """``(B, C, H, W) -> (B, O, H', W')``, weight ``[O, C, kh, kw]``, zero padding
        ``pads = (top, left, bottom, right)``."""
        if len(self.shape) != 4:
            raise ValueError(f"conv2d needs (B, C, H, W) values, got {self.shape}")
        shape = np.shape(weight)
        w, dtype, step = _float_weights(weight, self.q, self.device, int(np.prod(shape[1:])))
        O, C, kh, kw = w.shape
        if C != self.shape[1]:
            raise ValueError(f"conv weight has {C} input channels, input has {self.shape[1]}")
        pads = tuple(int(p) for p in pads)
        cstep = max(1, step // (kh * kw))
        if cstep * kh * kw > step and step < C * kh * kw:
            raise ValueError("conv kernel window too large for exact float arithmetic")
        x = self._fold_padded(pads, dtype)
        stride = tuple(int(v) for v in stride)
        acc = None
        with _no_tf32():
            for s in range(0, C, cstep):
                part = exact_conv2d(x[:, s:s + cstep], w[:, s:s + cstep], stride)
                acc = self._residues(part.contiguous(), acc, unfold=True)
        return self._new(acc)

    def sumpool(self, kernel, stride, pads=(0, 0, 0, 0)) -> "LabelTensor":
        """Window sums over the two last value axes (integer arithmetic, exact)."""
        if len(self.shape) != 4:
            raise ValueError(f"sumpool needs (B, C, H, W) values, got {self.shape}")
        kh, kw = (int(k) for k in kernel)
        sh, sw = (int(s) for s in stride)
        top, left, bottom, right = (int(p) for p in pads)
        x = F.pad(self.digits, (0, 0, left, right, top, bottom))  # (B, C, H, W, n)
        win = x.unfold(2, kh, sh).unfold(3, kw, sw)  # (B, C, H', W', n, kh, kw)
        return self._new(win.sum(dim=(-1, -2)) % self.q)


class LabelOps:
    """The free operations of the Backend protocol on LabelTensors, shared by the garbler
    (on zero labels) and the evaluator (on active labels): both apply the same linear map."""

    def add(self, a: LabelTensor, b: LabelTensor) -> LabelTensor:
        return a.add(b)

    def sub(self, a: LabelTensor, b: LabelTensor) -> LabelTensor:
        return a.sub(b)

    def neg(self, a: LabelTensor) -> LabelTensor:
        return a.neg()

    def mul(self, a: LabelTensor, b: LabelTensor) -> LabelTensor:
        """Generalized half gate: the mixed-modulus half gate with equal moduli."""
        if a.q != b.q:
            raise ValueError(f"mul needs one modulus, got {a.q} and {b.q} (use mixed_mul)")
        return self.mixed_mul(a, b)

    def cmul(self, a: LabelTensor, c: int) -> LabelTensor:
        return a.cmul(int(c))

    def dense(self, a: LabelTensor, weight) -> LabelTensor:
        return a.dense(weight)

    def conv2d(self, a: LabelTensor, weight, stride, pads) -> LabelTensor:
        return a.conv2d(weight, stride, pads)

    def sumpool(self, a: LabelTensor, kernel, stride, pads) -> LabelTensor:
        return a.sumpool(kernel, stride, pads)

    def reshape(self, a: LabelTensor, shape) -> LabelTensor:
        return a.reshape(tuple(shape))

    def take(self, a: LabelTensor, index) -> LabelTensor:
        return a.take(index)
