"""Per-layer tables and cost predictions for ``dashc inspect`` and the strategy search.

Costs per node: ciphertexts of its gadget (``dashc.runtime.counter`` when available, else
:func:`dashc.quantize.placeholder_gadget_cost`), garbled bytes (16 per ciphertext: a label
packs into 128 bits) and, for linear layers, the label digits touched: multiply-accumulates times the total label
length ``sum_q n(q)``.
"""
from __future__ import annotations

import math
from typing import Any

from . import quantize
from .ir import FREE_OPS, Op, Plan

_GADGET = {Op.RELU: "relu", Op.SIGN: "sign", Op.RESCALE: "rescale",
           Op.RELU_RESCALE: "relu_rescale", Op.MAXPOOL: "max"}
_RESCALES = (Op.RESCALE, Op.RELU_RESCALE)


def _macs(plan: Plan, node) -> int:
    if node.op in (Op.DENSE, Op.CONV):
        w = plan.weight(node)
        return math.prod(node.shape) * math.prod(w.shape[1:])
    if node.op is Op.SUMPOOL:
        return math.prod(node.shape) * math.prod(node.attr("kernel"))
    return 0


def _ciphertexts(plan: Plan, node, cost) -> int:
    name = _GADGET.get(node.op)
    if name is None:
        return 0
    elements = math.prod(node.shape)
    if node.op is Op.MAXPOOL:  # (area - 1) max gadgets per output
        return elements * (math.prod(node.attr("kernel")) - 1) * cost("max", plan.moduli)
    attrs = {"divisor": int(node.attr("divisor"))} if node.op in _RESCALES else {}
    return elements * cost(name, plan.moduli, **attrs)


def _predicted(plan: Plan) -> dict[str, Any] | None:
    """Per-node costs from ``dashc.runtime.counter.predict`` (None where it is missing)."""
    try:
        from .runtime.counter import predict
    except ImportError:
        return None
    return {n.name: n for n in predict(plan).nodes}


def layer_rows(plan: Plan) -> list[dict[str, Any]]:
    cost, _ = quantize.gadget_cost_fn()
    digits = quantize.label_digits(plan.moduli)
    predicted = _predicted(plan)
    seen = plan.meta.get("seen", {})
    rows = []
    for node in plan.nodes:
        if predicted is not None:
            p = predicted[node.name]
            ct, macs = p.ciphertexts, p.label_macs
        else:
            ct = _ciphertexts(plan, node, cost)
            macs = _macs(plan, node) * digits if node.op in FREE_OPS else 0
        rng = seen.get(node.name)
        rows.append({
            "node": node.name, "op": node.op.value, "shape": list(node.shape),
            "scale": node.scale, "bound": int(node.bound),
            "bits": int(node.bound).bit_length() + 1,
            "seen": [round(rng[0], 3), round(rng[1], 3)] if rng else None,
            "divisor": int(node.attr("divisor")) if node.op in _RESCALES else None,
            "ciphertexts": int(ct), "bytes": int(ct) * 16, "label_digits": int(macs),
        })
    return rows


def plan_cost(plan: Plan, digit_weight: float = 0.02) -> dict[str, Any]:
    rows = layer_rows(plan)
    ct = sum(r["ciphertexts"] for r in rows)
    digits = sum(r["label_digits"] for r in rows)
    return {"ciphertexts": ct, "bytes": ct * 16, "label_digits": digits,
            "score": ct + digit_weight * digits}


def summary(plan: Plan) -> dict[str, Any]:
    rows = layer_rows(plan)
    _, cost_model = quantize.gadget_cost_fn()
    totals = plan_cost(plan, plan.meta.get("config", {}).get("digit_weight", 0.02))
    return {
        "moduli": list(plan.moduli), "M_bits": round(math.log2(plan.M), 2),
        "label_digits_per_value": quantize.label_digits(plan.moduli),
        "input_scale": plan.input_scale, "input_clip": list(plan.input_clip),
        "output_scale": plan.output_scale,
        "strategy": plan.meta.get("strategy"), "bounds": plan.meta.get("bounds"),
        "cost_model": cost_model, "layers": rows, "totals": totals,
        "meta": {k: v for k, v in plan.meta.items() if k not in ("seen", "origin")},
    }


def format_table(info: dict[str, Any]) -> str:
    lines = [f"moduli {tuple(info['moduli'])}  (M ≈ 2^{info['M_bits']}, "
             f"{info['label_digits_per_value']} label digits per value)",
             f"strategy {info['strategy']}, bounds {info['bounds']}, input scale "
             f"{info['input_scale']:.6g} clip {tuple(info['input_clip'])}, output scale "
             f"{info['output_scale']:.6g}", ""]
    head = f"{'node':<28} {'op':<12} {'shape':<14} {'bits':>4} {'div':>6} " \
           f"{'seen range':<22} {'ciphertexts':>12} {'label digits':>14}"
    lines += [head, "-" * len(head)]
    for r in info["layers"]:
        seen = f"[{r['seen'][0]:g}, {r['seen'][1]:g}]" if r["seen"] else ""
        lines.append(f"{r['node'][:28]:<28} {r['op']:<12} {'×'.join(map(str, r['shape'])):<14} "
                     f"{r['bits']:>4} {r['divisor'] or '':>6} {seen:<22} "
                     f"{r['ciphertexts']:>12,} {r['label_digits']:>14,}")
    t = info["totals"]
    lines += ["-" * len(head),
              f"total per inference: {t['ciphertexts']:,} ciphertexts "
              f"(≈ {t['bytes'] / 2**20:.2f} MiB garbled), {t['label_digits']:,} label digits "
              f"in linear layers [{info['cost_model']}]"]
    return "\n".join(lines)
