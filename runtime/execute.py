"""The single plan loop, shared by the simulator, the garbler and the evaluator.

:func:`run` walks the plan's nodes in order, applies ``KERNELS[node.op]`` on the backend,
frees every value after its last use and returns what the backend's ``output`` returned.
:func:`run_plain` is the simulator's entry point: signed logits plus an overflow report.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np
import torch

from dashc.ir import Node, Op, Plan
from dashc.runtime.backend import CrtTensor
from dashc.runtime.kernels import KERNELS
from dashc.runtime.plain import PlainBackend, to_signed

NodeHook = Callable[[Node, Any], None]


def last_uses(plan: Plan) -> dict[str, int]:
    """Index of the last node that reads each value."""
    last: dict[str, int] = {}
    for i, node in enumerate(plan.nodes):
        for name in node.inputs:
            last[name] = i
    return last


class _Batched:
    """A backend seen with an explicit batch size (for backends that do not keep one)."""

    def __init__(self, inner: Any, batch: int):
        self.inner = inner
        self.batch = int(batch)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.__dict__["inner"], name)


def run(plan: Plan, backend, on_node: NodeHook | None = None, batch: int | None = None) -> Any:
    """Run every node of ``plan`` on ``backend``; return the result of its OUTPUT node.

    ``batch`` (default ``backend.batch``) is the batch size of the inputs.  If the backend has a
    ``begin_node(node)`` method it is called before each node (the counting wrapper uses it
    to attribute gates to nodes); ``on_node(node, value)`` is called after each node."""
    if batch is not None and getattr(backend, "batch", None) != batch:
        backend = _Batched(backend, batch)
    begin = getattr(backend, "begin_node", None)
    last = last_uses(plan)
    values: dict[str, Any] = {}
    result: Any = None
    seen_output = False
    for i, node in enumerate(plan.nodes):
        try:
            kernel = KERNELS[node.op]
        except KeyError:
            raise ValueError(f"node {node.name!r}: no kernel for op {node.op!r}") from None
        missing = [n for n in node.inputs if n not in values]
        if missing:
            raise ValueError(f"node {node.name!r} reads {missing} before they are computed")
        if begin is not None:
            begin(node)
        out = kernel(backend, plan, node, [values[n] for n in node.inputs])
        if node.op is Op.OUTPUT:
            result, seen_output = out, True
        else:
            values[node.name] = out
        if on_node is not None:
            on_node(node, out)
        for name in node.inputs:
            if last[name] == i:
                del values[name]
    if begin is not None:
        begin(None)
    if not seen_output:
        raise ValueError("plan has no OUTPUT node")
    return result


@dataclass
class OverflowReport:
    """Per node, how many output elements exceed the node's proven bound ``|value| <= bound``.

    ``counts[name]`` is the number of offending elements (0 for clean nodes), ``sizes[name]``
    the number of elements checked; nodes with ``bound <= 0`` (no bound recorded) are not
    checked.  ``samples`` marks the batch entries that had an offending element anywhere."""

    counts: dict[str, int] = field(default_factory=dict)
    sizes: dict[str, int] = field(default_factory=dict)
    samples: torch.Tensor | None = None

    @property
    def ok(self) -> bool:
        return not any(self.counts.values())

    @property
    def flagged(self) -> list[tuple[str, int]]:
        """``(node, count)`` for every node with at least one offending element."""
        return [(n, c) for n, c in self.counts.items() if c]

    @property
    def n_samples(self) -> int:
        """Number of batch entries with an offending element."""
        return 0 if self.samples is None else int(self.samples.sum())

    def to_dict(self) -> dict:
        return {"ok": self.ok, "overflowing_samples": self.n_samples,
                "nodes": [{"node": n, "count": c, "size": self.sizes[n]}
                          for n, c in self.counts.items()]}

    def __str__(self) -> str:
        if self.ok:
            return "no overflow"
        parts = ", ".join(f"{n}: {c}/{self.sizes[n]}" for n, c in self.flagged)
        return f"overflow in {self.n_samples} sample(s): {parts}"

    def record(self, node: Node, signed: torch.Tensor) -> None:
        if node.bound <= 0:
            return
        bad = signed.abs() > int(node.bound)
        self.counts[node.name] = int(bad.sum())
        self.sizes[node.name] = int(bad.numel())
        per_sample = bad.reshape(bad.shape[0], -1).any(dim=1)
        self.samples = per_sample if self.samples is None else self.samples | per_sample


def run_plain(plan: Plan, xi, device: str | torch.device = "cpu",
              monitor: bool = True) -> tuple[torch.Tensor, OverflowReport]:
    """Simulate ``plan`` on the signed integer input ``xi`` (batch first, int64).

    Returns the signed int64 logits ``(B, ...)`` and an :class:`OverflowReport` (empty when
    ``monitor`` is off)."""
    x = torch.as_tensor(np.asarray(xi) if not torch.is_tensor(xi) else xi).to(torch.int64)
    expected = tuple(plan.input_node.shape)
    if tuple(x.shape[1:]) != expected:
        raise ValueError(f"input has shape {tuple(x.shape)}, the plan expects (B, *{expected})")
    backend = PlainBackend([x], device=device)
    report = OverflowReport()

    def watch(node: Node, value: Any) -> None:
        if isinstance(value, CrtTensor):
            report.record(node, to_signed(value))

    out = run(plan, backend, on_node=watch if monitor else None)
    return to_signed(out), report
