"""Plan files: round trip, verification on save and load, clear errors on bad files."""
from __future__ import annotations

import dataclasses
import struct

import numpy as np
import pytest

from compiler_fixtures import MaxPadNet, digits, seeded
from dashc import compiler, planfile, spec
from dashc.errors import PlanFileError
from dashc.ir import Node, Op
from dashc.quantize import Config


@pytest.fixture(scope="module")
def plan():
    x, _ = digits(64)
    imported = compiler.load_model(seeded(MaxPadNet), input_shape=(1, 8, 8))
    return compiler.compile_graph(imported, x, Config(), progress=lambda m: None)


def test_round_trip(plan, tmp_path):
    path = planfile.save(plan, tmp_path / "p.plan")
    back = planfile.load(path)
    assert back.moduli == plan.moduli and back.nodes == plan.nodes
    assert back.input_clip == plan.input_clip and back.input_scale == plan.input_scale
    assert back.float_model == plan.float_model and len(back.float_model) > 0
    assert set(back.tensors) == set(plan.tensors)
    for k in plan.tensors:
        np.testing.assert_array_equal(back.tensors[k], plan.tensors[k])
    for key in ("source_sha256", "opset", "dashc_version", "strategy", "calibration"):
        assert back.meta[key] == plan.meta[key] or key == "calibration"
    assert planfile.dumps(back) == planfile.dumps(plan)


def test_truncated_corrupted_future(plan):
    data = planfile.dumps(plan)
    for cut in (4, 30, len(data) // 2, len(data) - 1):  # cut after the magic too
        with pytest.raises(PlanFileError, match="truncated"):
            planfile.loads(data[:cut])
    flipped = bytearray(data)
    flipped[len(data) // 2] ^= 0x40
    with pytest.raises(PlanFileError, match="checksum"):
        planfile.loads(bytes(flipped))
    future = bytearray(data)
    struct.pack_into("<I", future, 8, planfile.VERSION + 1)
    with pytest.raises(PlanFileError, match="newer"):
        planfile.loads(bytes(future))
    with pytest.raises(PlanFileError, match="not a dashc plan"):
        planfile.loads(b"PK\x03\x04" + data[4:])
    for err in (PlanFileError,):
        try:
            planfile.loads(data[:100])
        except err as e:
            assert "\n" not in str(e)


def _swap(plan, name, **changes):
    nodes = tuple(dataclasses.replace(n, **changes) if n.name == name else n for n in plan.nodes)
    return dataclasses.replace(plan, nodes=nodes)


def test_verify_rejects_broken_plans(plan):
    spec.verify(plan)
    dense = next(n for n in plan.nodes if n.op is Op.DENSE)
    cases = {
        "not prime": dataclasses.replace(plan, moduli=plan.moduli[:-1] + (4,)),
        "repeat": dataclasses.replace(plan, moduli=plan.moduli + (plan.moduli[0],)),
        "does not fit": _swap(plan, dense.name, bound=plan.M),
        "expected \\(11": _swap(plan, dense.name, shape=(dense.shape[0] + 1,)),
        "before they are computed": dataclasses.replace(
            plan, nodes=(plan.nodes[0], plan.nodes[2], plan.nodes[1]) + plan.nodes[3:]),
        "int64": dataclasses.replace(plan, tensors={**plan.tensors, f"{dense.name}.weight":
                                                    plan.weight(dense).astype(np.float64)}),
        "belong to no node": dataclasses.replace(
            plan, tensors={**plan.tensors, "ghost.weight": np.zeros(1, np.int64)}),
        "takes 2 input": _swap(plan, dense.name, op=Op.ADD),
    }
    for match, bad in cases.items():
        with pytest.raises(PlanFileError, match=match):
            spec.verify(bad)
        with pytest.raises(PlanFileError):
            planfile.dumps(bad)


def test_rescale_divisor_must_be_in_base(plan):
    from dashc.runtime import gadgets

    resc = [n for n in plan.nodes if n.op in (Op.RESCALE, Op.RELU_RESCALE)]
    assert resc and 2 in plan.moduli
    for n in resc:
        assert 2 not in gadgets.rescale_subset(plan.moduli, int(n.attr("divisor")))
    for d in (4, 2 * 23, plan.M):
        bad = _swap(plan, resc[0].name, attrs={"divisor": d})
        with pytest.raises(PlanFileError, match=f"divisor {d}"):
            spec.verify(bad)
    with pytest.raises(PlanFileError, match="not an integer"):
        spec.verify(_swap(plan, resc[0].name, attrs={"divisor": "15"}))
    with pytest.raises(PlanFileError, match="method 'sign'"):
        spec.verify(_swap(plan, resc[0].name, attrs={**resc[0].attrs, "method": "sign"}))
    # with 2 outside the divisor, x + d // 2 must stay below M/2
    d = int(resc[0].attr("divisor"))
    hi = gadgets.rescale_input_range(plan.moduli, d)[1]
    assert hi == (plan.M - 1) // 2 - d // 2
    huge = _swap(plan, resc[0].inputs[0], bound=hi + 1)
    with pytest.raises(PlanFileError, match="is exact"):
        spec.verify(huge)
    spec.verify(_swap(plan, resc[0].inputs[0], bound=hi))


def test_relu_rescale_round_trip(plan, tmp_path):
    """A plan whose rescale is fused with a ReLU, composite divisor, survives the file."""
    resc = next(n for n in plan.nodes if n.op is Op.RESCALE)
    fused = _swap(plan, resc.name, op=Op.RELU_RESCALE)
    back = planfile.load(planfile.save(fused, tmp_path / "f.plan"))
    node = back.node(resc.name)
    assert node.op is Op.RELU_RESCALE and node.attrs == resc.attrs
    assert back.nodes == fused.nodes
    assert planfile.dumps(back) == planfile.dumps(fused)


def test_every_node_is_representable(plan):
    for n in plan.nodes:
        assert 0 < n.bound < plan.M / 2
    assert isinstance(plan.nodes[0], Node)
