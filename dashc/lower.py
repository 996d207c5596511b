"""Float graph + calibrated ranges -> integer plan nodes, bounds and the CRT base.

The base and the rescale divisors depend on each other: a divisor is a product of moduli
of the base (:func:`dashc.quantize.choose_divisor`), and the base must hold the bounds
that the divisors produce.  :func:`build_plan` therefore lowers the graph once per
candidate base (:func:`dashc.quantize.candidate_bases`), bounds every node
(:mod:`dashc.bounds`) and keeps the smallest base that holds them
(:func:`dashc.bounds.base_violations`).  :func:`lower_graph` fixes every scale and
rescale for one base.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from typing import Mapping

import numpy as np

from . import bounds, crt, quantize
from .errors import UsageError
from .frontend.graph import FloatGraph, FloatNode
from .ir import Node, Op, Plan
from .quantize import Config


@dataclass
class Lowered:
    nodes: list[Node]
    tensors: dict[str, np.ndarray]
    input_scale: float
    input_clip: tuple[int, int]
    output_scale: float
    base: tuple[int, ...]
    #: calibrated range of a node's value in integer units (float range / scale)
    seen: dict[str, tuple[float, float]] = field(default_factory=dict)
    #: IR node -> float tensor it stands for
    origin: dict[str, str] = field(default_factory=dict)


class _Unrepresentable(ValueError):
    """A lowering whose integers cannot fit any base (its rescales are too coarse)."""


class _Builder:
    def __init__(self, graph: FloatGraph, ranges: Mapping[str, tuple[float, float]],
                 cfg: Config, base: tuple[int, ...], weights: dict | None = None):
        self.graph, self.ranges, self.cfg, self.base = graph, ranges, cfg, base
        self.weights = {} if weights is None else weights  # float node -> (int weight, scale)
        self.fused: dict[str, tuple[str, float]] = {}  # float ReLU -> its fused rescale
        self.nodes: list[Node] = []
        self.tensors: dict[str, np.ndarray] = {}
        self.value: dict[str, tuple[str, float]] = {}  # float tensor -> (IR node, scale)
        self.seen: dict[str, tuple[float, float]] = {}
        self.origin: dict[str, str] = {}

    def emit(self, node: Node, source: str | None = None) -> str:
        self.nodes.append(node)
        if source is not None and source in self.ranges:
            lo, hi = self.ranges[source]
            self.seen[node.name] = (lo / node.scale, hi / node.scale)
            self.origin[node.name] = source
        return node.name

    def magnitude(self, tensor: str) -> float:
        lo, hi = self.ranges.get(tensor, (0.0, 0.0))
        return max(abs(lo), abs(hi))

    def requantize(self, f: FloatNode, name: str, scale: float) -> tuple[str, float]:
        """Append the rescale that brings ``f``'s value back to ``act_bits`` bits: one
        RESCALE by a product of moduli of the base, or a RELU_RESCALE standing for the
        ReLU when that ReLU is ``f``'s only consumer."""
        consumers = self.graph.consumers(f.name)
        if f.name == self.graph.output or (consumers and all(c.kind == "sign"
                                                             for c in consumers)):
            return name, scale
        top = (1 << (self.cfg.act_bits - 1)) - 1
        ratio = self.magnitude(f.name) / (scale * top)
        relu = consumers[0] if len(consumers) == 1 and consumers[0].kind == "relu" else None
        d = quantize.choose_divisor(ratio, self.base, relu is not None)
        if d == 1:
            return name, scale
        scale *= d
        if relu is not None:
            name = self.emit(Node(relu.name, Op.RELU_RESCALE, (name,), f.shape,
                                  {"divisor": int(d)}, scale=scale), relu.name)
            self.fused[relu.name] = (name, scale)
            return name, scale
        name = self.emit(Node(f"{f.name}/rescale", Op.RESCALE, (name,), f.shape,
                              {"divisor": int(d)}, scale=scale))
        lo, hi = self.ranges.get(f.name, (0.0, 0.0))
        self.seen[name] = (lo / scale, hi / scale)
        self.origin[name] = f.name
        return name, scale

    def layer(self, f: FloatNode) -> tuple[str, float]:
        x, sx = self.value[f.inputs[0]]
        if f.name not in self.weights:
            self.weights[f.name] = quantize.integer_weights(f.params["weight"],
                                                            self.cfg.weight_bits)
        w, sw = self.weights[f.name]
        scale = sx * sw
        self.tensors[f"{f.name}.weight"] = w
        bias = np.round(f.params["bias"] / scale)
        if not np.all(np.abs(bias) < crt.MAX_M):
            raise _Unrepresentable(f"bias of {f.name!r} exceeds 2**62 at scale {scale:.3g}")
        self.tensors[f"{f.name}.bias"] = bias.astype(np.int64)
        if f.kind == "linear":
            node = Node(f.name, Op.DENSE, (x,), f.shape, {}, scale=scale)
        else:
            node = Node(f.name, Op.CONV, (x,), f.shape,
                        {"stride": tuple(f.attrs["stride"]), "pads": tuple(f.attrs["pads"])},
                        scale=scale)
        return self.requantize(f, self.emit(node, f.name), scale)

    def add(self, f: FloatNode) -> tuple[str, float]:
        (a, sa), (b, sb) = (self.value[i] for i in f.inputs)
        ca, cb, scale = quantize.align_factors(sa, sb)
        if ca != 1:
            a = self.emit(Node(f"{f.name}/align0", Op.CMUL, (a,), f.shape, {"factor": ca},
                               scale=sa / ca))
        if cb != 1:
            b = self.emit(Node(f"{f.name}/align1", Op.CMUL, (b,), f.shape, {"factor": cb},
                               scale=sb / cb))
        name = self.emit(Node(f.name, Op.ADD, (a, b), f.shape, {}, scale=scale), f.name)
        return self.requantize(f, name, scale)

    def convert(self, f: FloatNode) -> tuple[str, float]:
        if f.kind == "input":
            return self.emit(Node(f.name, Op.INPUT, (), f.shape, {}, scale=self.input_scale),
                             f.name), self.input_scale
        if f.kind in ("linear", "conv"):
            return self.layer(f)
        if f.kind == "add":
            return self.add(f)
        x, sx = self.value[f.inputs[0]]
        if f.kind == "relu" and f.name in self.fused:
            return self.fused[f.name]
        if f.kind == "relu":
            return self.emit(Node(f.name, Op.RELU, (x,), f.shape, {}, scale=sx), f.name), sx
        if f.kind == "sign":
            return self.emit(Node(f.name, Op.SIGN, (x,), f.shape, {}, scale=1.0)), 1.0
        if f.kind == "maxpool":
            attrs = {k: tuple(f.attrs[k]) for k in ("kernel", "stride", "pads")}
            if any(attrs["pads"]):
                attrs["pad_value"] = 0  # set from the input bound in build_plan
            return self.emit(Node(f.name, Op.MAXPOOL, (x,), f.shape, attrs, scale=sx),
                             f.name), sx
        if f.kind == "avgpool":
            attrs = {k: tuple(f.attrs[k]) for k in ("kernel", "stride", "pads")}
            scale = sx / math.prod(attrs["kernel"])
            name = self.emit(Node(f.name, Op.SUMPOOL, (x,), f.shape, attrs, scale=scale),
                             f.name)
            return self.requantize(f, name, scale)
        if f.kind == "reshape":
            return self.emit(Node(f.name, Op.RESHAPE, (x,), f.shape,
                                  {"shape": tuple(f.attrs["shape"])}, scale=sx)), sx
        raise ValueError(f"float node {f.name!r} of kind {f.kind!r} cannot be lowered")

    def run(self) -> Lowered:
        inp = self.graph.input
        lo, hi = self.ranges.get(inp.name, (0.0, 1.0))
        self.input_scale, self.input_clip = quantize.input_encoding(lo, hi,
                                                                    self.cfg.input_bits)
        for f in self.graph.nodes:
            self.value[f.name] = self.convert(f)
        out, scale = self.value[self.graph.output]
        out_shape = self.graph.node(self.graph.output).shape
        self.emit(Node("output", Op.OUTPUT, (out,), out_shape, {}, scale=scale))
        return Lowered(self.nodes, self.tensors, self.input_scale, self.input_clip, scale,
                       self.base, self.seen, self.origin)


def lower_graph(graph: FloatGraph, ranges: Mapping[str, tuple[float, float]], cfg: Config,
                base: tuple[int, ...], weights: dict | None = None) -> Lowered:
    """Lower ``graph`` for the CRT base ``base`` (its rescale divisors are products of
    moduli of ``base``).  ``weights`` caches the integer weights across calls."""
    return _Builder(graph, ranges, cfg, tuple(int(q) for q in base), weights).run()


@dataclass
class _Candidate:
    low: Lowered
    worst: dict
    cal: dict

    def intervals(self, mode: str) -> dict:
        return self.worst if mode == "worst-case" else self.cal

    def fits(self, mode: str) -> bool:
        return not bounds.base_violations(self.low.nodes, self.intervals(mode), self.low.base)


class _Search:
    """Lowers and bounds the graph once per base tried (memoized)."""

    def __init__(self, graph: FloatGraph, ranges, cfg: Config):
        self.graph, self.ranges, self.cfg = graph, ranges, cfg
        self.weights: dict = {}
        self.tried: dict[tuple[int, ...], _Candidate | None] = {}

    def candidate(self, base: tuple[int, ...]) -> _Candidate | None:
        """The lowering for ``base`` and its bounds; None when its integers cannot be
        represented at all."""
        if base not in self.tried:
            try:
                low = lower_graph(self.graph, self.ranges, self.cfg, base, self.weights)
            except _Unrepresentable:
                self.tried[base] = None
                return None
            worst = bounds.worst_case(low.nodes, low.tensors, low.input_clip)
            cal = bounds.calibrated(low.nodes, low.tensors, low.input_clip, low.seen,
                                    self.cfg.margin, worst)
            self.tried[base] = _Candidate(low, worst, cal)
        return self.tried[base]

    def smallest(self, groups: list[list[tuple[int, ...]]], mode: str,
                 max_len: int | None = None) -> _Candidate | None:
        """The first base, in group order, that holds the bounds of ``mode``: within a
        group (bases of one length by increasing product) the largest is tried first and
        a bisection finds the smallest that fits."""
        def fits(base: tuple[int, ...]) -> bool:
            cand = self.candidate(base)
            return cand is not None and cand.fits(mode)

        for group in groups:
            if max_len is not None and len(group[0]) > max_len:
                return None
            if not fits(group[-1]):
                continue
            lo, hi = 0, len(group) - 1  # group[hi] fits
            while lo < hi:
                mid = (lo + hi) // 2
                if fits(group[mid]):
                    hi = mid
                else:
                    lo = mid + 1
            return self.candidate(group[hi])
        return None


def build_plan(graph: FloatGraph, ranges: Mapping[str, tuple[float, float]], cfg: Config,
               float_model: bytes = b"", meta: Mapping | None = None) -> Plan:
    """Lower, bound, choose the base and the bound mode, return the plan."""
    search = _Search(graph, ranges, cfg)
    groups = quantize.candidate_bases(cfg)
    cal = search.smallest(groups, "calibrated") if cfg.bound != "worst" else None
    if cfg.bound == "calibrated":
        worst = None
    else:
        limit = None if cal is None or cfg.bound == "worst" else \
            len(cal.low.base) + cfg.extra_moduli
        worst = search.smallest(groups, "worst-case", limit)
    if worst is not None:
        mode, chosen = "worst-case", worst
    else:
        mode, chosen = "calibrated", cal
    if chosen is None:
        mode_name = "worst-case" if cfg.bound == "worst" else "calibrated"
        tried = search.candidate(groups[-1][-1])
        need = "beyond 2**62" if tried is None else \
            bounds.requirement(tried.low.nodes, tried.intervals(mode_name))
        where = f"moduli {tuple(cfg.moduli)}" if cfg.moduli else f"a {cfg.strategy} base"
        raise UsageError(f"values up to {need} ({mode_name} bound) do not fit {where} below "
                         "2**62; lower --bits/--act-bits or pass larger --moduli")
    low, intervals = chosen.low, chosen.intervals(mode)
    nodes = list(low.nodes)
    # max pooling pads with the smallest value its input can take
    for i, n in enumerate(nodes):
        if n.op is Op.MAXPOOL and "pad_value" in n.attrs:
            nodes[i] = replace(n, attrs={**n.attrs,
                                         "pad_value": min(0, intervals[n.inputs[0]][0])})
    nodes = [replace(n, bound=bounds.magnitude(intervals[n.name])) for n in nodes]
    rescales = [n for n in nodes if n.op in bounds.RESCALE_OPS]
    info = {
        "strategy": cfg.strategy,
        "bounds": mode,
        "bound_required": int(bounds.requirement(nodes, intervals)),
        "bound_worst_case": int(bounds.requirement(nodes, chosen.worst)),
        "bound_calibrated": int(bounds.requirement(nodes, chosen.cal)),
        "margin": cfg.margin if mode == "calibrated" else None,
        "config": cfg.to_dict(),
        "rescale_divisors": sorted({int(n.attr("divisor")) for n in rescales}),
        "fused_relu_rescales": sum(n.op is Op.RELU_RESCALE for n in rescales),
        "bases_tried": len(search.tried),
        "origin": dict(low.origin),
        "seen": {k: [float(a), float(b)] for k, (a, b) in low.seen.items()},
    }
    info.update(meta or {})
    crt.check_base(low.base)
    return Plan(moduli=low.base, nodes=tuple(nodes), tensors=low.tensors,
                input_scale=float(low.input_scale),
                input_clip=(int(low.input_clip[0]), int(low.input_clip[1])),
                output_scale=float(low.output_scale), meta=info, float_model=float_model)
