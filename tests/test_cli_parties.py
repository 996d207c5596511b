"""The party commands and ``dashc eval`` through click, with their exit codes."""
import json

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from dashc import api
from dashc.cli import main
from dashc.compiler import encode_input
from dashc.errors import CircuitReuseError, IntegrityError, PlanFileError
from dashc.planfile import load
from dashc.runtime.execute import run_plain


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("cli")
    torch.manual_seed(1)
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(16, 5), torch.nn.ReLU(),
                                torch.nn.Linear(5, 3))
    rng = np.random.default_rng(1)
    x = rng.random((40, 1, 4, 4), dtype=np.float32)
    y = rng.integers(0, 3, 40).astype(np.int64)
    np.savez(tmp / "data.npz", x=x, y=y)
    api.compile_model(model, str(tmp / "data.npz"), tmp / "tiny.dashc", input_shape=(1, 4, 4),
                      progress=None)
    return tmp


def run(*args):
    return CliRunner().invoke(main, [str(a) for a in args], catch_exceptions=False)


def test_party_commands_round_trip(files, tmp_path):
    d = tmp_path / "g"
    r = run("garble", files / "tiny.dashc", "-o", d, "--count", 4)
    assert r.exit_code == 0, r.output
    assert run("encode", d, "--data", files / "data.npz", "--offset", 2).exit_code == 0
    assert run("evaluate", d / "evaluator").exit_code == 0
    r = run("decode", d, "--json", tmp_path / "dec.json")
    assert r.exit_code == 0, r.output
    dec = json.loads((tmp_path / "dec.json").read_text())
    plan = load(files / "tiny.dashc")
    logits, _ = run_plain(plan, encode_input(plan, np.load(files / "data.npz")["x"][2:6]))
    assert dec["n"] == 4
    assert dec["logits_int"] == logits.tolist()
    assert dec["classes"] == logits.argmax(1).tolist()


def test_second_encode_is_refused(files, tmp_path):
    d = tmp_path / "g"
    run("garble", files / "tiny.dashc", "-o", d)
    assert run("encode", d, "--data", files / "data.npz").exit_code == 0
    r = run("encode", d, "--data", files / "data.npz", "--offset", 1)
    assert r.exit_code == CircuitReuseError.exit_code
    assert r.output.startswith("error:") and "Traceback" not in r.output


@pytest.mark.parametrize("target", ["tables", "inputs", "outputs"])
def test_tampering_exits_with_the_integrity_code(files, tmp_path, target):
    d = tmp_path / "g"
    run("garble", files / "tiny.dashc", "-o", d)
    run("encode", d, "--data", files / "data.npz")
    path = {"tables": d / "evaluator" / "tables.dgt",
            "inputs": d / "evaluator" / "inputs.dgl",
            "outputs": d / "evaluator" / "outputs.dgl"}[target]
    if target == "outputs":
        assert run("evaluate", d / "evaluator").exit_code == 0
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x10
    path.write_bytes(bytes(data))
    r = run("evaluate", d / "evaluator") if target != "outputs" else run("decode", d)
    assert r.exit_code == IntegrityError.exit_code, r.output
    assert "Traceback" not in r.output


def test_corrupt_secrets_exit_with_the_file_code(files, tmp_path):
    d = tmp_path / "g"
    run("garble", files / "tiny.dashc", "-o", d)
    (d / "garbler" / "secrets.dgs").write_bytes(b"DASHCBND garbage")
    r = run("encode", d, "--data", files / "data.npz")
    assert r.exit_code == PlanFileError.exit_code


def test_eval_reports_the_ladder(files, tmp_path):
    out = tmp_path / "eval.json"
    r = run("eval", files / "tiny.dashc", "--data", files / "data.npz", "--limit", 6,
            "--batch", 3, "--json", out)
    assert r.exit_code == 0, r.output
    rep = json.loads(out.read_text())
    for key in ("n", "float_accuracy", "simulated_accuracy", "garbled_accuracy",
                "exact_match", "timings", "bytes", "ciphertexts_per_inference"):
        assert key in rep
    assert rep["n"] == 6 and rep["exact_match"] == 1.0
    assert set(rep["bytes"]) == {"tables", "input_labels", "output_labels"}
    assert "garbled" in r.output and "float" in r.output


def test_eval_offset_selects_later_samples(files, tmp_path):
    out = tmp_path / "eval.json"
    r = run("eval", files / "tiny.dashc", "--data", files / "data.npz", "--offset", 30,
            "--limit", 20, "--batch", 5, "--json", out)
    assert r.exit_code == 0, r.output
    rep = json.loads(out.read_text())
    assert rep["n"] == 10 and rep["offset"] == 30 and rep["exact_match"] == 1.0
    d = np.load(files / "data.npz")
    plan = load(files / "tiny.dashc")
    sim, _ = run_plain(plan, encode_input(plan, d["x"][30:]))
    want = float((sim.numpy().reshape(10, -1).argmax(1) == d["y"][30:]).mean())
    assert rep["simulated_accuracy"] == want
    r = run("eval", files / "tiny.dashc", "--data", files / "data.npz", "--offset", 40)
    assert r.exit_code == 8 and "past the end" in r.output
