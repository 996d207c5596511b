"""The plan loop and the simulator on a hand-built plan, against plain int64 numpy."""
from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from dashc import crt
from dashc.ir import Node, Op, Plan
from dashc.runtime.execute import last_uses, run, run_plain
from dashc.runtime.kernels import KERNELS
from dashc.runtime.plain import PlainBackend, to_signed

BASE = crt.first_primes(8)


# -- reference semantics in int64 numpy (loops are fine at this size) -------------------


def ref_pad(x, pads, value=0):
    top, left, bottom, right = pads
    return np.pad(x, ((0, 0), (0, 0), (top, bottom), (left, right)), constant_values=value)


def ref_windows(x, kernel, stride):
    B, C, H, W = x.shape
    kh, kw = kernel
    sh, sw = stride
    Ho, Wo = (H - kh) // sh + 1, (W - kw) // sw + 1
    out = np.empty((B, C, Ho, Wo, kh * kw), dtype=np.int64)
    for i in range(Ho):
        for j in range(Wo):
            out[:, :, i, j] = x[:, :, i * sh:i * sh + kh, j * sw:j * sw + kw].reshape(B, C, -1)
    return out


def ref_conv(x, w, b, stride, pads):
    x = ref_pad(x, pads)
    O, C, kh, kw = w.shape
    win = ref_windows(x, (kh, kw), stride)  # B, C, Ho, Wo, kh*kw
    y = np.einsum("bchwk,ock->bohw", win, w.reshape(O, C, kh * kw))
    return y + b.reshape(1, O, 1, 1)


def ref_floor_div(x, d):
    return np.floor_divide(x + d // 2, d)


def tiny_plan(rng: np.random.Generator, bound_override: dict | None = None) -> Plan:
    t = {
        "c1.weight": rng.integers(-3, 4, size=(2, 1, 3, 3)),
        "c1.bias": rng.integers(-5, 6, size=(2,)),
        "d1.weight": rng.integers(-4, 5, size=(5, 8)),
        "d1.bias": rng.integers(-9, 10, size=(5,)),
        "d2.weight": rng.integers(-6, 7, size=(3, 5)),
    }
    t = {k: v.astype(np.int64) for k, v in t.items()}
    nodes = [
        Node("x", Op.INPUT, (), (1, 6, 6), bound=8),
        Node("c1", Op.CONV, ("x",), (2, 3, 3), {"stride": (2, 2), "pads": (1, 1, 1, 1)},
             bound=230),
        Node("r1", Op.RELU, ("c1",), (2, 3, 3), bound=230),
        Node("s1", Op.RESCALE, ("r1",), (2, 3, 3), {"divisor": 3}, bound=77),
        Node("m1", Op.MAXPOOL, ("s1",), (2, 3, 3),
             {"kernel": (2, 2), "stride": (1, 1), "pads": (0, 0, 1, 1), "pad_value": -5},
             bound=77),
        Node("p1", Op.SUMPOOL, ("m1",), (2, 2, 2), {"kernel": (2, 2), "stride": (1, 1)},
             bound=308),
        Node("k1", Op.CMUL, ("p1",), (2, 2, 2), {"factor": -3}, bound=924),
        Node("a1", Op.ADD, ("k1", "p1"), (2, 2, 2), bound=1232),
        Node("h1", Op.RESHAPE, ("a1",), (8,), {"shape": (8,)}, bound=1232),
        Node("d1", Op.DENSE, ("h1",), (5,), bound=40000),
        Node("s2", Op.RESCALE, ("d1",), (5,), {"divisor": 2}, bound=20000),
        Node("g1", Op.SIGN, ("s2",), (5,), bound=1),
        Node("d2", Op.DENSE, ("g1",), (3,), bound=30),
        Node("y", Op.OUTPUT, ("d2",), (3,), bound=30),
    ]
    if bound_override:
        nodes = [dataclasses.replace(n, bound=bound_override.get(n.name, n.bound)) for n in nodes]
    return Plan(moduli=BASE, nodes=tuple(nodes), tensors=t, input_scale=1.0,
                input_clip=(-8, 8), output_scale=1.0)


def tiny_reference(plan: Plan, x: np.ndarray) -> dict[str, np.ndarray]:
    t = plan.tensors
    v = {"x": x}
    v["c1"] = ref_conv(x, t["c1.weight"], t["c1.bias"], (2, 2), (1, 1, 1, 1))
    v["r1"] = np.maximum(v["c1"], 0)
    v["s1"] = ref_floor_div(v["r1"], 3)
    v["m1"] = ref_windows(ref_pad(v["s1"], (0, 0, 1, 1), -5), (2, 2), (1, 1)).max(-1)
    v["p1"] = ref_windows(v["m1"], (2, 2), (1, 1)).sum(-1)
    v["k1"] = -3 * v["p1"]
    v["a1"] = v["k1"] + v["p1"]
    v["h1"] = v["a1"].reshape(len(x), 8)
    v["d1"] = v["h1"] @ t["d1.weight"].T + t["d1.bias"]
    v["s2"] = ref_floor_div(v["d1"], 2)
    v["g1"] = np.where(v["s2"] >= 0, 1, -1)
    v["d2"] = v["g1"] @ t["d2.weight"].T
    return v


def test_every_op_has_a_kernel():
    assert set(KERNELS) == set(Op)


def test_tiny_plan_matches_int64_reference():
    rng = np.random.default_rng(7)
    plan = tiny_plan(rng)
    x = rng.integers(-8, 9, size=(6, 1, 6, 6)).astype(np.int64)
    ref = tiny_reference(plan, x)
    logits, report = run_plain(plan, x)
    assert logits.dtype == torch.int64
    np.testing.assert_array_equal(logits.numpy(), ref["d2"])
    # every intermediate agrees as well (the hook sees each node's value)
    seen = {}
    run(plan, PlainBackend([torch.as_tensor(x)]),
        on_node=lambda n, val: seen.__setitem__(n.name, to_signed(val).numpy()))
    for name, want in ref.items():
        np.testing.assert_array_equal(seen[name], want, err_msg=name)
    assert report.ok, str(report)
    assert report.n_samples == 0


def test_overflow_report_flags_value_beyond_bound():
    rng = np.random.default_rng(7)
    x = rng.integers(-8, 9, size=(6, 1, 6, 6)).astype(np.int64)
    plan = tiny_plan(np.random.default_rng(7), bound_override={"k1": 5})
    ref = tiny_reference(plan, x)
    _, report = run_plain(plan, x)
    expected = int((np.abs(ref["k1"]) > 5).sum())
    assert expected > 0
    assert report.flagged == [("k1", expected)]
    assert report.sizes["k1"] == ref["k1"].size
    assert report.n_samples == int((np.abs(ref["k1"]) > 5).reshape(6, -1).any(1).sum())
    assert "k1" in str(report) and report.to_dict()["ok"] is False


def test_wrapped_input_flagged_at_input_node():
    plan = tiny_plan(np.random.default_rng(7))
    x = np.zeros((2, 1, 6, 6), dtype=np.int64)
    x[1, 0, 2, 2] = 9  # beyond the input bound 8
    _, report = run_plain(plan, x)
    assert ("x", 1) in report.flagged
    assert report.samples.tolist() == [False, True]


def test_monitor_off_and_shape_errors():
    plan = tiny_plan(np.random.default_rng(7))
    _, report = run_plain(plan, np.zeros((1, 1, 6, 6), dtype=np.int64), monitor=False)
    assert report.counts == {} and report.ok
    with pytest.raises(ValueError, match="expects"):
        run_plain(plan, np.zeros((1, 1, 5, 6), dtype=np.int64))


def test_values_are_freed_after_last_use():
    plan = tiny_plan(np.random.default_rng(7))
    last = last_uses(plan)
    assert last["p1"] == [n.name for n in plan.nodes].index("a1")
    assert "y" not in last  # the output is read by nobody


def test_rescale_kernel_rejects_bound_beyond_its_range():
    plan = tiny_plan(np.random.default_rng(7), bound_override={"r1": plan_max(BASE)})
    with pytest.raises(ValueError, match="rescale by 3"):
        run_plain(plan, np.zeros((1, 1, 6, 6), dtype=np.int64))


def plan_max(moduli) -> int:
    return crt.signed_range(moduli)[1]
