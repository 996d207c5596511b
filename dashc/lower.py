"""Float graph + calibrated ranges -> integer plan nodes, bounds and the CRT base.

:func:`lower_graph` fixes every scale and rescale point (see :mod:`dashc.quantize`);
:func:`build_plan` then bounds every node (:mod:`dashc.bounds`), picks the base and returns
the :class:`~dashc.ir.Plan`.
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
    divisors: tuple[int, ...]
    #: calibrated range of a node's value in integer units (float range / scale)
    seen: dict[str, tuple[float, float]] = field(default_factory=dict)
    #: IR node -> float tensor it stands for
    origin: dict[str, str] = field(default_factory=dict)


class _Builder:
    def __init__(self, graph: FloatGraph, ranges: Mapping[str, tuple[float, float]],
                 cfg: Config, divisors: tuple[int, ...]):
        self.graph, self.ranges, self.cfg, self.divisors = graph, ranges, cfg, divisors
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
        """Append the rescale chain that brings ``f``'s value back to ``act_bits`` bits."""
        consumers = self.graph.consumers(f.name)
        if f.name == self.graph.output or (consumers and all(c.kind == "sign"
                                                             for c in consumers)):
            return name, scale
        top = (1 << (self.cfg.act_bits - 1)) - 1
        ratio = self.magnitude(f.name) / (scale * top)
        for i, d in enumerate(quantize.rescale_chain(ratio, self.divisors)):
            scale *= d
            name = self.emit(Node(f"{f.name}/rescale{i}", Op.RESCALE, (name,), f.shape,
                                  {"divisor": int(d)}, scale=scale))
        if name != f.name:
            lo, hi = self.ranges.get(f.name, (0.0, 0.0))
            self.seen[name] = (lo / scale, hi / scale)
            self.origin[name] = f.name
        return name, scale

    def layer(self, f: FloatNode) -> tuple[str, float]:
        x, sx = self.value[f.inputs[0]]
        w, sw = quantize.integer_weights(f.params["weight"], self.cfg.weight_bits)
        scale = sx * sw
        self.tensors[f"{f.name}.weight"] = w
        self.tensors[f"{f.name}.bias"] = np.round(f.params["bias"] / scale).astype(np.int64)
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
                       self.divisors, self.seen, self.origin)


def lower_graph(graph: FloatGraph, ranges: Mapping[str, tuple[float, float]], cfg: Config,
                divisors: tuple[int, ...]) -> Lowered:
    return _Builder(graph, ranges, cfg, divisors).run()


def _base(cfg: Config, need: int, divisors: tuple[int, ...]) -> tuple[int, ...] | None:
    if cfg.moduli:
        base = tuple(int(q) for q in cfg.moduli)
        return base if quantize.fits(base, need) else None
    if cfg.strategy == "dash":
        return quantize.dash_base(need)
    return quantize.redash_base(need, cfg.scale_prime)


def build_plan(low: Lowered, cfg: Config, float_model: bytes = b"",
               meta: Mapping | None = None) -> Plan:
    """Bound every node, choose the base and the bound mode, return the plan."""
    nodes = list(low.nodes)
    used = sorted({int(n.attr("divisor")) for n in nodes if n.op is Op.RESCALE})
    if cfg.moduli and set(used) - set(cfg.moduli):
        raise UsageError(f"moduli {tuple(cfg.moduli)} lack the rescale divisor(s) "
                         f"{sorted(set(used) - set(cfg.moduli))}")
    worst = bounds.worst_case(nodes, low.tensors, low.input_clip)
    cal = bounds.calibrated(nodes, low.tensors, low.input_clip, low.seen, cfg.margin, worst)
    need_w, need_c = bounds.requirement(nodes, worst), bounds.requirement(nodes, cal)
    base_w, base_c = _base(cfg, need_w, low.divisors), _base(cfg, need_c, low.divisors)
    if cfg.bound == "worst" or (cfg.bound == "auto" and base_w is not None and (
            base_c is None or len(base_w) <= len(base_c) + cfg.extra_moduli)):
        mode, intervals, base, need = "worst-case", worst, base_w, need_w
    else:
        mode, intervals, base, need = "calibrated", cal, base_c, need_c
    if base is None:
        where = f"moduli {tuple(cfg.moduli)}" if cfg.moduli else f"a {cfg.strategy} base"
        raise UsageError(f"values up to {need} ({mode} bound) do not fit {where} below 2**62;"
                         " lower --bits/--act-bits or pass larger --moduli")
    # max pooling pads with the smallest value its input can take
    for i, n in enumerate(nodes):
        if n.op is Op.MAXPOOL and "pad_value" in n.attrs:
            nodes[i] = replace(n, attrs={**n.attrs,
                                         "pad_value": min(0, intervals[n.inputs[0]][0])})
    nodes = [replace(n, bound=bounds.magnitude(intervals[n.name])) for n in nodes]
    info = {
        "strategy": cfg.strategy,
        "bounds": mode,
        "bound_required": int(need),
        "bound_worst_case": int(need_w),
        "bound_calibrated": int(need_c),
        "margin": cfg.margin if mode == "calibrated" else None,
        "config": cfg.to_dict(),
        "rescale_divisors": used,
        "origin": dict(low.origin),
        "seen": {k: [float(a), float(b)] for k, (a, b) in low.seen.items()},
    }
    info.update(meta or {})
    crt.check_base(base)
    return Plan(moduli=tuple(int(q) for q in base), nodes=tuple(nodes), tensors=low.tensors,
                input_scale=float(low.input_scale),
                input_clip=(int(low.input_clip[0]), int(low.input_clip[1])),
                output_scale=float(low.output_scale), meta=info, float_model=float_model)
