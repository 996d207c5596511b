"""ONNX import: one-node graphs against onnxruntime, both torch exporters, refusals."""
from __future__ import annotations

import numpy as np
import pytest
from onnx import helper

from compiler_fixtures import MaxPadNet, ResidualNet, init, onnx_model, ort_run, seeded, vinfo
from dashc import compiler
from dashc.errors import InvalidModelError, UnsupportedModelError
from dashc.frontend import import_onnx, lookup, supported_ops
from dashc.frontend.emit import to_onnx
from dashc.passes import run_passes
from dashc.quantize import Config

RNG = np.random.default_rng(0)


def _w(*shape):
    return RNG.normal(0, 0.5, shape).astype(np.float32)


def _cases():
    x4 = vinfo("x", ["N", 2, 6, 6])
    x2 = vinfo("x", ["N", 12])
    return {
        "gemm": onnx_model([helper.make_node("Gemm", ["x", "w", "b"], ["y"], transB=1, alpha=0.5)],
                           [x2], [vinfo("y", ["N", 5])], [init("w", _w(5, 12)), init("b", _w(5))]),
        "matmul_add": onnx_model(
            [helper.make_node("MatMul", ["x", "w"], ["t"]),
             helper.make_node("Add", ["t", "b"], ["y"])],
            [x2], [vinfo("y", ["N", 4])], [init("w", _w(12, 4)), init("b", _w(4))]),
        "conv_pads": onnx_model(
            [helper.make_node("Conv", ["x", "w", "b"], ["y"], pads=[1, 0, 2, 1], strides=[2, 1])],
            [x4], [vinfo("y", ["N", 3, 4, 5])], [init("w", _w(3, 2, 3, 3)), init("b", _w(3))]),
        "conv_same": onnx_model(
            [helper.make_node("Conv", ["x", "w"], ["y"], auto_pad="SAME_UPPER", strides=[2, 2])],
            [x4], [vinfo("y", ["N", 3, 3, 3])], [init("w", _w(3, 2, 2, 2))]),
        "relu": onnx_model([helper.make_node("Relu", ["x"], ["y"])], [x4],
                           [vinfo("y", ["N", 2, 6, 6])]),
        "maxpool": onnx_model(
            [helper.make_node("MaxPool", ["x"], ["y"], kernel_shape=[3, 3], strides=[2, 2],
                              pads=[1, 1, 1, 1])], [x4], [vinfo("y", ["N", 2, 3, 3])]),
        "avgpool": onnx_model(
            [helper.make_node("AveragePool", ["x"], ["y"], kernel_shape=[2, 2], strides=[2, 2])],
            [x4], [vinfo("y", ["N", 2, 3, 3])]),
        "global_avgpool": onnx_model([helper.make_node("GlobalAveragePool", ["x"], ["y"])],
                                     [x4], [vinfo("y", ["N", 2, 1, 1])]),
        "flatten": onnx_model([helper.make_node("Flatten", ["x"], ["y"])], [x4],
                              [vinfo("y", ["N", 72])]),
        "reshape": onnx_model([helper.make_node("Reshape", ["x", "s"], ["y"])], [x4],
                              [vinfo("y", ["N", 8, 9])],
                              [init("s", np.array([-1, 8, 9], dtype=np.int64))]),
        "conv_batchnorm": onnx_model(
            [helper.make_node("Conv", ["x", "w"], ["c"]),
             helper.make_node("BatchNormalization", ["c", "g", "be", "m", "v"], ["y"])],
            [x4], [vinfo("y", ["N", 3, 4, 4])],
            [init("w", _w(3, 2, 3, 3)), init("g", np.abs(_w(3)) + 0.5), init("be", _w(3)),
             init("m", _w(3)), init("v", np.abs(_w(3)) + 0.5)]),
        "residual_add": onnx_model(
            [helper.make_node("Conv", ["x", "w"], ["c"], pads=[1, 1, 1, 1]),
             helper.make_node("Add", ["c", "x"], ["y"])],
            [x4], [vinfo("y", ["N", 2, 6, 6])], [init("w", _w(2, 2, 3, 3))]),
        "identity_dropout": onnx_model(
            [helper.make_node("Identity", ["x"], ["a"]), helper.make_node("Dropout", ["a"], ["b"]),
             helper.make_node("Relu", ["b"], ["y"])], [x4], [vinfo("y", ["N", 2, 6, 6])]),
    }


CASES = _cases()


@pytest.mark.parametrize("case", sorted(CASES))
def test_one_node_graph_matches_onnxruntime(case):
    model = CASES[case]
    x = RNG.normal(0, 1, (32,) + (12,) if "gemm" in case or "matmul" in case
                   else (32, 2, 6, 6)).astype(np.float32)
    ref = ort_run(model, x)
    imported = compiler.load_model(model)
    # the canonical float model computes the same function
    np.testing.assert_allclose(ort_run(imported.float_model, x), ref, rtol=1e-4, atol=1e-5)
    plan = compiler.compile_graph(imported, x, Config(strategy="dash"), progress=lambda m: None)
    out, reports = compiler.simulate_logits(plan, x)
    assert all(r.ok for r in reports)
    got = out.reshape(ref.shape) * plan.output_scale
    err = np.abs(got - ref).max()
    # quantization error: input step plus weight and rescale rounding, relative to the range
    assert err <= 0.03 * np.abs(ref).max() + 2 * plan.input_scale, (case, err)


def test_tanh_becomes_sign():
    model = onnx_model([helper.make_node("Gemm", ["x", "w"], ["t"], transB=1),
                        helper.make_node("Tanh", ["t"], ["y"])],
                       [vinfo("x", ["N", 12])], [vinfo("y", ["N", 6])], [init("w", _w(6, 12))])
    x = RNG.normal(0, 1, (64, 12)).astype(np.float32)
    imported = compiler.load_model(model)
    kinds = [n.kind for n in imported.graph.nodes]
    assert kinds == ["input", "linear", "sign"]
    plan = compiler.compile_graph(imported, x, Config(), progress=lambda m: None)
    out, _ = compiler.simulate_logits(plan, x)
    ref = ort_run(model, x)
    clear = np.abs(ref) > 0.05  # away from zero the signs must agree exactly
    assert set(np.unique(out.numpy() if hasattr(out, "numpy") else out)) <= {-1, 1}
    np.testing.assert_array_equal(np.sign(ref[clear]), out[clear])


@pytest.mark.parametrize("dynamo", [False, True])
def test_both_torch_exporters_import(dynamo):
    from dashc.frontend.torch_export import export_torch

    nets = (ResidualNet,) if dynamo else (ResidualNet, MaxPadNet)  # dynamo export is slow
    for net in nets:
        shape = (1, 8, 8)
        module = seeded(net)
        data = export_torch(module, shape, dynamo=dynamo)
        graph = run_passes(import_onnx(data))
        assert not [n for n in graph.nodes if n.kind in ("batchnorm", "identity", "bias")]
        x = RNG.normal(0, 1, (4,) + shape).astype(np.float32)
        import torch
        with torch.no_grad():
            ref = module(torch.from_numpy(x)).numpy()
        np.testing.assert_allclose(ort_run(to_onnx(graph), x), ref, rtol=1e-4, atol=1e-4)


def test_unsupported_model_lists_every_node():
    model = onnx_model(
        [helper.make_node("Sigmoid", ["x"], ["a"], name="sig"),
         helper.make_node("Softmax", ["a"], ["b"], name="soft"),
         helper.make_node("Relu", ["b"], ["y"], name="ok")],
        [vinfo("x", ["N", 4])], [vinfo("y", ["N", 4])])
    with pytest.raises(UnsupportedModelError) as err:
        import_onnx(model)
    msg = str(err.value)
    assert "'sig' (Sigmoid)" in msg and "'soft' (Softmax)" in msg and "'ok'" not in msg
    assert "Conv" in msg and "Gemm" in msg  # the supported set
    assert "\n" not in msg


def test_unsupported_attributes_are_listed_together():
    x4 = vinfo("x", ["N", 4, 6, 6])
    model = onnx_model(
        [helper.make_node("Conv", ["x", "w"], ["a"], group=2, name="grouped"),
         helper.make_node("Conv", ["a", "w2"], ["y"], dilations=[2, 2], name="dilated")],
        [x4], [vinfo("y", ["N", 4, 2, 2])],
        [init("w", _w(4, 2, 1, 1)), init("w2", _w(4, 4, 3, 3))])
    with pytest.raises(UnsupportedModelError) as err:
        import_onnx(model)
    assert "grouped" in str(err.value) and "group=2" in str(err.value)
    assert "dilated" in str(err.value) and "dilations" in str(err.value)


def test_bad_models_are_invalid(tmp_path):
    good = CASES["gemm"]
    with pytest.raises(InvalidModelError, match="truncated or corrupt"):
        import_onnx(good[: len(good) // 2])
    rank3 = onnx_model([helper.make_node("Relu", ["x"], ["y"])], [vinfo("x", ["N", 3, 4])],
                       [vinfo("y", ["N", 3, 4])])
    with pytest.raises(InvalidModelError, match="rank 3"):
        import_onnx(rank3)
    w = _w(5, 12)
    w[1, 2] = np.nan
    nan = onnx_model([helper.make_node("Gemm", ["x", "w"], ["y"], transB=1)],
                     [vinfo("x", ["N", 12])], [vinfo("y", ["N", 5])], [init("w", w)])
    with pytest.raises(InvalidModelError, match="'w' holds 1 NaN"):
        import_onnx(nan)
    with pytest.raises(InvalidModelError, match="cannot read"):
        import_onnx(tmp_path / "missing.onnx")


def test_registry_is_keyed_by_opset():
    assert lookup("Reshape", 4) is not lookup("Reshape", 13)
    assert lookup("Sign", 8) is None and lookup("Sign", 9) is not None
    assert lookup("Conv", 13, domain="com.microsoft") is None
    assert {"Conv", "Gemm", "MatMul", "BatchNormalization", "GlobalAveragePool"} <= \
        set(supported_ops())


def test_batchnorm_without_layer_is_refused():
    x4 = vinfo("x", ["N", 2, 3, 3])
    model = onnx_model(
        [helper.make_node("BatchNormalization", ["x", "g", "b", "m", "v"], ["y"], name="bn0")],
        [x4], [vinfo("y", ["N", 2, 3, 3])],
        [init("g", np.ones(2, np.float32)), init("b", np.zeros(2, np.float32)),
         init("m", np.zeros(2, np.float32)), init("v", np.ones(2, np.float32))])
    with pytest.raises(UnsupportedModelError, match="bn0"):
        run_passes(import_onnx(model))
