"""Composite RESCALE and fused RELU_RESCALE nodes in a whole plan: the simulator against
int64 numpy, garbled == simulated, the cost predictor against the garbler's tables, plan
files and verification."""
from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from dashc import bounds, planfile, spec
from dashc.errors import PlanFileError
from dashc.ir import Node, Op, Plan
from dashc.runtime import gadgets
from dashc.runtime.counter import CountingBackend, predict
from dashc.runtime.evaluator import Evaluator
from dashc.runtime.execute import run, run_plain
from dashc.runtime.garbler import Garbler
from dashc.runtime.rng import insecure_seeded_random

#: (base, divisor of the fused ReLU rescale, divisor of the plain rescale)
CASES = [((2, 3, 5, 7, 11, 13), 3 * 5, 3 * 7), ((31, 101, 103), 31, 31),
         ((3, 5, 7, 11, 13, 17), 3 * 7, 3 * 5), ((2, 3, 5, 7, 11, 13), 13, 5)]


def mlp_plan(moduli, d_relu: int, d_out: int, seed: int = 0) -> Plan:
    """INPUT 8 -> DENSE 6 -> RELU_RESCALE -> DENSE 4 -> RESCALE -> OUTPUT, bounds from
    worst-case interval propagation."""
    rng = np.random.default_rng(seed)
    t = {"d1.weight": rng.integers(-3, 4, size=(6, 8)), "d1.bias": rng.integers(-5, 6, size=6),
         "d2.weight": rng.integers(-4, 5, size=(4, 6)), "d2.bias": rng.integers(-9, 10, size=4)}
    t = {k: v.astype(np.int64) for k, v in t.items()}
    nodes = [Node("x", Op.INPUT, (), (8,)),
             Node("d1", Op.DENSE, ("x",), (6,)),
             Node("r1", Op.RELU_RESCALE, ("d1",), (6,), {"divisor": d_relu}),
             Node("d2", Op.DENSE, ("r1",), (4,)),
             Node("s2", Op.RESCALE, ("d2",), (4,), {"divisor": d_out}),
             Node("y", Op.OUTPUT, ("s2",), (4,))]
    iv = bounds.worst_case(nodes, t, (-8, 8))
    assert not bounds.base_violations(nodes, iv, tuple(moduli))
    nodes = [dataclasses.replace(n, bound=bounds.magnitude(iv[n.name])) for n in nodes]
    return spec.verify(Plan(moduli=tuple(moduli), nodes=tuple(nodes), tensors=t,
                            input_scale=1.0, input_clip=(-8, 8), output_scale=1.0))


def reference(plan: Plan, x: np.ndarray) -> np.ndarray:
    t = plan.tensors
    d1, d2 = (int(plan.node(n).attr("divisor")) for n in ("r1", "s2"))
    h = x @ t["d1.weight"].T + t["d1.bias"]
    h = np.maximum(np.floor_divide(h + d1 // 2, d1), 0)
    h = h @ t["d2.weight"].T + t["d2.bias"]
    return np.floor_divide(h + d2 // 2, d2)


def inputs(n: int = 64, seed: int = 1) -> np.ndarray:
    x = np.random.default_rng(seed).integers(-8, 9, size=(n, 8))
    x[0], x[1] = 8, -8
    return x.astype(np.int64)


@pytest.mark.parametrize("moduli,d_relu,d_out", CASES)
def test_simulated_plan_matches_numpy(moduli, d_relu, d_out):
    plan = mlp_plan(moduli, d_relu, d_out)
    x = inputs()
    out, report = run_plain(plan, x)
    assert report.ok
    np.testing.assert_array_equal(out.numpy(), reference(plan, x))
    assert (reference(plan, x) != 0).any()


@pytest.mark.parametrize("moduli,d_relu,d_out", CASES)
def test_garbled_equals_simulated_and_predicted_cost(moduli, d_relu, d_out):
    plan = mlp_plan(moduli, d_relu, d_out)
    x = torch.as_tensor(inputs(4, seed=2))
    want, _ = run_plain(plan, x)
    g = Garbler(4, rng=insecure_seeded_random(3))
    counted = CountingBackend(g)
    run(plan, counted)
    labels = g.encode([x])
    g.tables.rewind()
    got = g.decode([run(plan, Evaluator(labels, g.tables), batch=4)])[0]
    assert torch.equal(got, want)
    pred = predict(plan)
    assert 4 * pred.ciphertexts == g.tables.stats.ciphertexts == counted.total.ciphertexts
    per_node = {n.name: n.ciphertexts for n in pred.nodes}
    assert per_node["r1"] == 6 * gadgets.rescale_cost(moduli, d_relu, relu=True)
    assert per_node["s2"] == 4 * gadgets.rescale_cost(moduli, d_out)


def test_plan_file_round_trip(tmp_path):
    plan = mlp_plan(*CASES[0])
    back = planfile.load(planfile.save(plan, tmp_path / "m.plan"))
    assert back.nodes == plan.nodes
    assert back.node("r1").op is Op.RELU_RESCALE and back.node("r1").attr("divisor") == 15
    x = inputs(8)
    assert torch.equal(run_plain(back, x)[0], run_plain(plan, x)[0])


def test_verify_rejects_bad_fused_rescales():
    plan = mlp_plan(*CASES[1])  # no 2 in the base: the fused range ends short of -M/2

    def swap(name, **changes):
        nodes = tuple(dataclasses.replace(n, **changes) if n.name == name else n
                      for n in plan.nodes)
        return dataclasses.replace(plan, nodes=nodes)

    lo, hi = gadgets.rescale_input_range(plan.moduli, 31, relu=True)
    assert -lo < hi
    spec.verify(swap("d1", bound=-lo))
    with pytest.raises(PlanFileError, match="is exact"):
        spec.verify(swap("d1", bound=-lo + 1))
    with pytest.raises(PlanFileError, match="uses every modulus"):
        spec.verify(swap("r1", attrs={"divisor": 31 * 101 * 103}))
    with pytest.raises(PlanFileError, match="method"):
        spec.verify(swap("r1", attrs={"divisor": 31, "method": "sign"}))
