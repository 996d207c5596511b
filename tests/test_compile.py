"""Compilation end to end: paper architectures, residual/BN/pooling models, strategies,
bounds, and accuracy against the float model."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from compiler_fixtures import MaxPadNet, ResidualNet, digits, seeded
from dashc import compiler, crt, spec
from dashc.ir import Op
from dashc.quantize import Config, candidate_bases, choose_divisor, divisor_moduli
from dashc.runtime import gadgets
from dashc.runtime.execute import run_plain

QUIET = {"progress": lambda m: None}


def _compile_and_check(module, shape, x, cfg=Config(), n_calib=128):
    imported = compiler.load_model(module, input_shape=shape)
    plan = compiler.compile_graph(imported, x[:n_calib], cfg, **QUIET)
    spec.verify(plan)
    test = x[n_calib:]
    logits, reports = compiler.simulate_logits(plan, test)
    ref = compiler.float_logits(plan.float_model, test.reshape((len(test),) + tuple(
        imported.graph.input.shape)))
    overflow = sum(sum(r.counts.values()) for r in reports)
    got = logits * plan.output_scale
    rel = np.abs(got - ref).max() / (np.abs(ref).max() + 1e-12)
    agree = float((logits.argmax(1) == ref.argmax(1)).mean())
    return plan, overflow, rel, agree


def _paper(name: str, n: int):
    from dashc.models import architectures as arch
    from dashc.models import data

    x, _ = data.load(arch.dataset_of(name))
    return seeded(lambda: arch.build(name)), arch.input_shape(name), x[:128 + n]


@pytest.mark.parametrize("name", ["A", "C", "E30", "E100"])
def test_paper_architecture_random_weights(name):
    module, shape, x = _paper(name, 24)
    plan, overflow, rel, agree = _compile_and_check(module, shape, x)
    assert overflow == 0
    assert all(crt.is_prime(q) for q in plan.moduli)
    if name.startswith("E"):  # sign activations: logits agree up to sign flips near zero
        assert agree >= 0.8
    else:
        assert rel < 0.05 and agree >= 0.9, (rel, agree)


@pytest.mark.slow
@pytest.mark.parametrize("name", ["B", "D", "F", "Fsmall"])
def test_paper_architecture_random_weights_heavy(name):
    module, shape, x = _paper(name, 32)
    plan, overflow, rel, agree = _compile_and_check(module, shape, x)
    assert overflow == 0
    assert rel < 0.05 and agree >= 0.9, (rel, agree)


def _train_digits(net: torch.nn.Module, epochs: int = 40) -> torch.nn.Module:
    from sklearn.datasets import load_digits

    d = load_digits()
    x = torch.tensor(d.images[:-360] / 16.0, dtype=torch.float32).unsqueeze(1)
    y = torch.tensor(d.target[:-360])
    torch.manual_seed(0)
    opt = torch.optim.Adam(net.parameters(), lr=3e-3)
    net.train()
    for _ in range(epochs):
        perm = torch.randperm(len(x))
        for i in range(0, len(x), 64):
            idx = perm[i:i + 64]
            opt.zero_grad()
            torch.nn.functional.cross_entropy(net(x[idx]), y[idx]).backward()
            opt.step()
    return net.eval()


@pytest.mark.parametrize("strategy", ["dash", "redash"])
def test_residual_bn_pool_model_close_to_float(strategy):
    x, _ = digits(144)
    plan, overflow, rel, agree = _compile_and_check(seeded(ResidualNet), (1, 8, 8), x,
                                                    Config(strategy=strategy), n_calib=112)
    assert {Op.SUMPOOL, Op.ADD, Op.CONV, Op.DENSE} <= {n.op for n in plan.nodes}
    assert overflow == 0
    assert rel < 0.05 and agree >= 0.9, (rel, agree)


@pytest.mark.slow
@pytest.mark.parametrize("strategy", ["dash", "redash"])
def test_trained_residual_bn_pool_model_matches_float(strategy):
    net = _train_digits(seeded(ResidualNet))
    x, y = digits(360)
    plan = compiler.compile_graph(compiler.load_model(net, input_shape=(1, 8, 8)), x[:160],
                                  Config(strategy=strategy), **QUIET)
    test_x, test_y = x[160:], y[160:]
    logits, reports = compiler.simulate_logits(plan, test_x)
    ref = compiler.float_logits(plan.float_model, test_x)
    float_acc = (ref.argmax(1) == test_y).mean() * 100
    sim_acc = (logits.argmax(1) == test_y).mean() * 100
    assert float_acc > 80
    # within half a point of float, or better
    assert sim_acc >= float_acc - 0.5, (float_acc, sim_acc)
    assert (logits.argmax(1) == ref.argmax(1)).mean() >= 0.97
    assert all(r.ok for r in reports)


def test_strategies_use_prime_bases_and_base_divisors():
    x, y = digits(200)
    imported = compiler.load_model(seeded(MaxPadNet), input_shape=(1, 8, 8))
    plans = {}
    for strategy in ("dash", "redash", "auto"):
        plan = compiler.compile_graph(imported, x[:64], Config(strategy=strategy),
                                      calib_y=y[:64], **QUIET)
        plans[strategy] = plan
        assert all(crt.is_prime(q) for q in plan.moduli)
        for n in plan.nodes:
            if n.op in (Op.RESCALE, Op.RELU_RESCALE):
                assert 2 not in gadgets.rescale_subset(plan.moduli, n.attr("divisor"))
        for key in ("source_sha256", "opset", "dashc_version", "strategy", "calibration",
                    "bounds", "cost_model"):
            assert key in plan.meta, key
    assert plans["dash"].moduli == crt.first_primes(len(plans["dash"].moduli))
    assert plans["redash"].moduli[0] == 31 and min(plans["redash"].moduli[1:]) > 100
    chosen = plans["auto"].meta["auto"]
    assert len(chosen["candidates"]) >= 3 and plans["auto"].meta["strategy"].startswith("auto")


def test_explicit_moduli_and_refusal():
    from dashc.errors import UsageError

    x, _ = digits(100)
    imported = compiler.load_model(seeded(MaxPadNet), input_shape=(1, 8, 8))
    base = (31, 167, 173, 179, 181)
    plan = compiler.compile_graph(imported, x, Config(strategy="redash", moduli=base), **QUIET)
    assert plan.moduli == base
    with pytest.raises(UsageError, match="do not fit"):
        compiler.compile_graph(imported, x, Config(strategy="redash", moduli=(31, 37)),
                               **QUIET)
    with pytest.raises(UsageError, match="not prime"):
        compiler.compile_graph(imported, x, Config(moduli=(2, 3, 32)), **QUIET)


def test_worst_case_bounds_hold_on_extreme_inputs():
    x, _ = digits(100)
    imported = compiler.load_model(seeded(MaxPadNet), input_shape=(1, 8, 8))
    plan = compiler.compile_graph(imported, x, Config(bound="worst"), **QUIET)
    assert plan.meta["bounds"] == "worst-case"
    lo, hi = plan.input_clip
    rng = np.random.default_rng(1)
    xi = rng.choice([lo, hi], size=(64, 1, 8, 8)).astype(np.int64)
    xi[:32] = rng.integers(lo, hi + 1, size=(32, 1, 8, 8))
    _, report = run_plain(plan, xi)
    assert report.ok, str(report)


def test_calibrated_bounds_are_smaller_and_recorded():
    x, _ = digits(100)
    imported = compiler.load_model(seeded(MaxPadNet), input_shape=(1, 8, 8))
    worst = compiler.compile_graph(imported, x, Config(bound="worst"), **QUIET)
    cal = compiler.compile_graph(imported, x, Config(bound="calibrated", margin=2.0), **QUIET)
    assert cal.meta["bounds"] == "calibrated" and cal.meta["margin"] == 2.0
    assert cal.meta["bound_required"] <= worst.meta["bound_required"]
    assert cal.M <= worst.M


def test_divisor_choice():
    P = crt.first_primes(8)
    assert divisor_moduli(P) == P[1:]
    assert divisor_moduli((31, 101, 103)) == (31, 101, 103)
    assert choose_divisor(1.0, P) == 1 and choose_divisor(2.9, P) == 1
    assert choose_divisor(3.0, P) == 3 and choose_divisor(14.9, P, tolerance_bits=0) == 13
    assert choose_divisor(14.9, P) == 11  # a quarter bit below 13, and cheaper
    assert choose_divisor(4200, P, tolerance_bits=0) == 19 * 17 * 13
    assert choose_divisor(4198, P, tolerance_bits=0) == 3 * 7 * 11 * 17
    for ratio in (7.5, 100.0, 4199.0, 5e4, 3e5):
        for relu in (False, True):
            d = choose_divisor(ratio, P, relu)
            s = gadgets.rescale_subset(P, d)
            assert 2 not in s and d <= ratio
            exact = choose_divisor(ratio, P, relu, tolerance_bits=0)
            assert exact <= ratio and math.log2(exact / d) <= 0.25
            assert gadgets.rescale_cost(P, d, relu=relu) <= gadgets.rescale_cost(
                P, exact, relu=relu)
    # no 2 in the base: every modulus may divide, but never all of them
    assert choose_divisor(31 * 101 * 1.01, (31, 101, 103)) == 31 * 101
    assert choose_divisor(1e9, (31, 101, 103)) == 101 * 103


def test_candidate_bases():
    dash = candidate_bases(Config(strategy="dash"))
    assert [g[0] for g in dash[:3]] == [(2, 3), (2, 3, 5), (2, 3, 5, 7)]
    redash = candidate_bases(Config(strategy="redash", scale_prime=37))
    assert all(b[0] == 37 and min(b[1:]) > 100 for g in redash for b in g)
    assert [len(g[0]) for g in redash] == sorted(len(g[0]) for g in redash)
    for g in redash:
        assert [math.prod(b) for b in g] == sorted(math.prod(b) for b in g)
    assert candidate_bases(Config(moduli=(31, 101))) == [[(31, 101)]]


def test_one_fused_rescale_per_layer():
    """Each linear layer followed by a ReLU gets one RELU_RESCALE whose divisor is a
    product of base moduli without 2, and no separate RESCALE or RELU is left."""
    module, shape, x = _paper("C", 24)
    for strategy in ("dash", "redash"):
        plan = compiler.compile_graph(compiler.load_model(module, input_shape=shape), x[:128],
                                      Config(strategy=strategy), **QUIET)
        ops = [n.op for n in plan.nodes]
        assert ops.count(Op.RELU_RESCALE) == 2 and Op.RELU not in ops
        assert Op.RESCALE not in ops
        for n in plan.nodes:
            if n.op is Op.RELU_RESCALE:
                s = gadgets.rescale_subset(plan.moduli, n.attr("divisor"))
                assert 2 not in s
        assert plan.meta["fused_relu_rescales"] == 2


@pytest.mark.slow
@pytest.mark.parametrize("name", ["A", "B", "C", "D", "E30", "E100", "F", "Fsmall"])
def test_trained_zoo_models_within_half_a_point(name):
    from dashc.models import architectures as arch
    from dashc.models import data, zoo

    if name not in zoo.available():
        pytest.skip(f"zoo model {name} not shipped")
    x, y = data.load(arch.dataset_of(name))
    imported = compiler.load_model(str(zoo.get(name)))
    plan = compiler.compile_graph(imported, x, Config(), **QUIET)
    logits, reports = compiler.simulate_logits(plan, x)
    ref = compiler.float_logits(plan.float_model, x.reshape((len(x),) + tuple(
        imported.graph.input.shape)))
    float_acc = (ref.argmax(1) == y).mean() * 100
    sim_acc = (logits.argmax(1) == y).mean() * 100
    assert all(r.ok for r in reports)
    assert abs(float_acc - sim_acc) <= 0.5, (float_acc, sim_acc)


@pytest.mark.parametrize("method", ["minmax", "percentile", "entropy"])
def test_calibration_methods_cover_every_tensor(method, tmp_path):
    from dashc.calibration import Ranges, collect_ranges

    x, _ = digits(64)
    imported = compiler.load_model(seeded(MaxPadNet), input_shape=(1, 8, 8))
    ranges = collect_ranges(imported.float_model, x, method)
    assert {n.name for n in imported.graph.nodes} <= set(ranges.tensors)
    assert ranges.method == method and ranges.n == 64
    for lo, hi in ranges.tensors.values():
        assert lo <= hi
    back = Ranges.load(ranges.save(tmp_path / "r.json"))
    assert back.tensors == ranges.tensors and back.method == method
    plan = compiler.compile_graph(imported, x, Config(calib_method=method), ranges=ranges,
                                  **QUIET)
    assert plan.meta["calibration"]["method"] == method
