"""The compile / inspect / simulate commands through click's CliRunner, and their errors."""
from __future__ import annotations

import json

import numpy as np
import pytest
from click.testing import CliRunner
from onnx import helper

from compiler_fixtures import MaxPadNet, digits, init, onnx_model, seeded, vinfo
from dashc import api
from dashc.cli import main
from dashc.errors import (DataError, InvalidModelError, ModelInputError, ModelWeightsError,
                          PlanFileError, UnsupportedModelError,
                          UsageError)


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    from dashc.frontend.torch_export import export_torch

    root = tmp_path_factory.mktemp("cli")
    model = root / "net.onnx"
    model.write_bytes(export_torch(seeded(MaxPadNet), (1, 8, 8)))
    x, y = digits(120)
    data = root / "digits.npz"
    np.savez(data, x=x, y=y)
    return root, model, data


def _invoke(args):
    return CliRunner().invoke(main, [str(a) for a in args])


def test_compile_inspect_simulate(files):
    root, model, data = files
    plan, report = root / "net.plan", root / "compile.json"
    r = _invoke(["compile", model, "--calib", data, "-o", plan, "--json", report,
                 "--calib-size", 64])
    assert r.exit_code == 0, r.output
    info = json.loads(report.read_text())
    assert info["moduli"] and info["totals"]["ciphertexts"] > 0
    r = _invoke(["inspect", plan, "--json", root / "inspect.json"])
    assert r.exit_code == 0, r.output
    assert "total per inference" in r.output and "rescale" in r.output
    r = _invoke(["simulate", plan, "--data", data, "--limit", 24, "--json", root / "sim.json"])
    assert r.exit_code == 0, r.output
    sim = json.loads((root / "sim.json").read_text())
    for key in ("n", "float_accuracy", "simulated_accuracy", "agreement", "overflow_count"):
        assert key in sim
    assert sim["n"] == 24 and sim["overflow_count"] == 0 and sim["agreement"] >= 0.9


def test_every_command_has_help():
    for cmd in ([], ["compile"], ["inspect"], ["simulate"]):
        r = _invoke(cmd + ["--help"])
        assert r.exit_code == 0 and "Usage" in r.output


def _bad_models(root):
    x4 = vinfo("x", ["N", 1, 8, 8])
    unsupported = onnx_model([helper.make_node("Sigmoid", ["x"], ["a"], name="s1"),
                              helper.make_node("Erf", ["a"], ["y"], name="e1")],
                             [x4], [vinfo("y", ["N", 1, 8, 8])])
    rank = onnx_model([helper.make_node("Relu", ["x"], ["y"])], [vinfo("x", ["N", 8, 8])],
                      [vinfo("y", ["N", 8, 8])])
    w = np.ones((10, 64), np.float32)
    w[0, 0] = np.nan
    nan = onnx_model([helper.make_node("Flatten", ["x"], ["f"]),
                      helper.make_node("Gemm", ["f", "w"], ["y"], transB=1)],
                     [x4], [vinfo("y", ["N", 10])], [init("w", w)])
    good = onnx_model([helper.make_node("Relu", ["x"], ["y"])], [x4],
                      [vinfo("y", ["N", 1, 8, 8])])
    out = {}
    for name, blob in (("unsupported", unsupported), ("rank", rank), ("nan", nan),
                       ("truncated", good[: len(good) - 20])):
        out[name] = root / f"{name}.onnx"
        out[name].write_bytes(blob)
    return out


def test_bad_inputs_give_one_line_errors_and_exit_codes(files):
    root, model, data = files
    bad = _bad_models(root)
    plan = root / "ok.plan"
    assert _invoke(["compile", model, "--calib", data, "-o", plan,
                    "--calib-size", 32]).exit_code == 0
    corrupt = root / "corrupt.plan"
    blob = bytearray(plan.read_bytes())
    blob[len(blob) // 3] ^= 1
    corrupt.write_bytes(bytes(blob))
    cases = [
        (["compile", bad["unsupported"], "--calib", data, "-o", root / "x.plan"],
         UnsupportedModelError.exit_code, "'s1' (Sigmoid)"),
        (["compile", bad["truncated"], "--calib", data, "-o", root / "x.plan"],
         InvalidModelError.exit_code, "truncated"),
        (["compile", bad["rank"], "--calib", data, "-o", root / "x.plan"],
         ModelInputError.exit_code, "rank 3"),
        (["compile", bad["nan"], "--calib", data, "-o", root / "x.plan"],
         ModelWeightsError.exit_code, "NaN"),
        (["inspect", corrupt], PlanFileError.exit_code, "checksum"),
        (["simulate", root / "ok.plan", "--data", root / "none.npz"], DataError.exit_code,
         "no such data file"),
        (["compile", model, "--calib", data, "-o", root / "x.plan", "--moduli", "2,3,4"],
         UsageError.exit_code, "not prime"),
        (["compile", "nosuchmodel", "--calib", data, "-o", root / "x.plan"],
         UsageError.exit_code, "zoo"),
    ]
    for args, code, needle in cases:
        r = _invoke(args)
        assert r.exit_code == code, (args, r.output)
        errors = [line for line in r.output.splitlines() if line.startswith("error:")]
        assert len(errors) == 1 and needle in errors[0], r.output
        assert "Traceback" not in r.output
    assert "'e1' (Erf)" in _invoke(cases[0][0]).output  # every unsupported node listed
    codes = {UnsupportedModelError.exit_code, InvalidModelError.exit_code,
             ModelInputError.exit_code, ModelWeightsError.exit_code,
             PlanFileError.exit_code, UsageError.exit_code, DataError.exit_code}
    assert len(codes) == 7 and 0 not in codes


def test_api_raises_the_same_errors(files):
    root, model, data = files
    bad = _bad_models(root)
    with pytest.raises(UnsupportedModelError, match="'e1' \\(Erf\\)"):
        api.compile_model(bad["unsupported"], data, progress=None)
    with pytest.raises(InvalidModelError, match="truncated"):
        api.compile_model(bad["truncated"], data, progress=None)
    with pytest.raises(InvalidModelError, match="rank"):
        api.compile_model(bad["nan"].with_name("rank.onnx"), data, progress=None)
    with pytest.raises(InvalidModelError, match="NaN"):
        api.compile_model(bad["nan"], data, progress=None)
    blob = (root / "corrupt.plan").read_bytes() if (root / "corrupt.plan").exists() else b"x"
    with pytest.raises(PlanFileError):
        api.inspect_plan(_write(root / "c2.plan", blob[:50]))
    x, y = digits(40)
    plan = api.compile_model(model, (x, y), calib_size=32, progress=None)
    with pytest.raises(DataError, match="do not match"):
        api.simulate(plan, (x[:, :, :4, :4], y), progress=None)


def _write(path, blob):
    path.write_bytes(blob)
    return path
