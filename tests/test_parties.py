"""The four party steps on files, and the in-process ``eval`` pipeline: garbled == simulated,
tampering detected, single use, nothing secret in the evaluator's directory."""
import numpy as np
import pytest
import torch

from dashc import api, bundle, parties
from dashc.compiler import encode_input
from dashc.errors import CircuitReuseError, IntegrityError, PlanFileError
from dashc.pipeline import eval_plan
from dashc.runtime.execute import run_plain


def _tiny_model():
    torch.manual_seed(0)
    return torch.nn.Sequential(
        torch.nn.Conv2d(1, 3, 3, stride=2), torch.nn.ReLU(), torch.nn.Flatten(),
        torch.nn.Linear(12, 6), torch.nn.ReLU(), torch.nn.Linear(6, 3))


@pytest.fixture(scope="module")
def tiny():
    rng = np.random.default_rng(0)
    x = rng.random((64, 1, 5, 5), dtype=np.float32)
    y = rng.integers(0, 3, 64)
    plan = api.compile_model(_tiny_model(), (x, y), input_shape=(1, 5, 5), progress=None)
    return plan, x, y


def _garble_run(plan, x, tmp_path, count):
    out = tmp_path / "g"
    rep = parties.garble(plan, out, count=count)
    parties.encode(out, x[:count])
    parties.evaluate(out / "evaluator")
    return out, rep


def test_files_round_trip_equals_simulation(tiny, tmp_path):
    plan, x, _ = tiny
    out, rep = _garble_run(plan, x, tmp_path, 3)
    result = parties.decode(out)
    expected, _ = run_plain(plan, encode_input(plan, x[:3]))
    assert np.array_equal(np.asarray(result["logits_int"]), expected.numpy())
    assert result["classes"] == expected.numpy().argmax(1).tolist()
    assert rep["ciphertexts_per_inference"] > 0


def test_evaluator_directory_holds_nothing_secret(tiny, tmp_path):
    plan, x, _ = tiny
    out, _ = _garble_run(plan, x, tmp_path, 1)
    names = sorted(p.name for p in (out / "evaluator").iterdir())
    assert names == sorted([parties.PLAN, parties.CIRCUIT, parties.TABLES, parties.INPUTS,
                            parties.OUTPUTS])
    header, arrays = bundle.loads((out / "garbler" / parties.SECRETS).read_bytes(), "secrets",
                                  "secrets")
    evaluator_bytes = b"".join(p.read_bytes() for p in (out / "evaluator").iterdir())
    for name, a in arrays.items():
        if name.startswith("delta_q"):
            for row in a:  # no global offset appears verbatim in the evaluator's files
                assert row.astype(np.uint8).tobytes() not in evaluator_bytes
    assert (out / "garbler" / parties.SECRETS).stat().st_mode & 0o077 == 0


def test_circuit_serves_one_inference(tiny, tmp_path):
    plan, x, _ = tiny
    out, _ = _garble_run(plan, x, tmp_path, 1)
    with pytest.raises(CircuitReuseError):
        parties.encode(out, x[1:2])


def _flip(path, offset_from_end=None, offset=None):
    data = bytearray(path.read_bytes())
    i = offset if offset is not None else len(data) - offset_from_end
    data[i] ^= 0x01
    path.write_bytes(bytes(data))


def test_flipped_table_byte_is_an_integrity_error(tiny, tmp_path):
    plan, x, _ = tiny
    out = tmp_path / "g"
    parties.garble(plan, out, count=1)
    parties.encode(out, x[:1])
    tables = out / "evaluator" / parties.TABLES
    _flip(tables, offset=len(tables.read_bytes()) // 2)
    with pytest.raises(IntegrityError):
        parties.evaluate(out / "evaluator")


@pytest.mark.parametrize("which", [parties.INPUTS, parties.OUTPUTS])
def test_flipped_label_file_byte_is_an_integrity_error(tiny, tmp_path, which):
    plan, x, _ = tiny
    out, _ = _garble_run(plan, x, tmp_path, 1)
    path = out / "evaluator" / which
    _flip(path, offset=len(path.read_bytes()) // 2)
    with pytest.raises(IntegrityError):
        if which == parties.INPUTS:
            parties.evaluate(out / "evaluator")
        parties.decode(out)


def _forge(path, circuit, role, tensor_index=0):
    """A malicious evaluator: change one label digit and re-seal the file."""
    labels = parties.read_labels(path, circuit, role)
    q = labels[tensor_index].moduli[-1]
    lab = labels[tensor_index].parts[q]
    flat = lab.digits.reshape(-1)
    flat[0] = (flat[0] + 1) % q
    parties.write_labels(path, circuit, role, labels)


def test_forged_output_label_is_refused(tiny, tmp_path):
    plan, x, _ = tiny
    out, rep = _garble_run(plan, x, tmp_path, 2)
    _forge(out / "evaluator" / parties.OUTPUTS, rep["circuit"], "outputs")
    with pytest.raises(IntegrityError, match="not valid labels"):
        parties.decode(out)


def test_forged_input_label_is_refused(tiny, tmp_path):
    plan, x, _ = tiny
    out = tmp_path / "g"
    rep = parties.garble(plan, out, count=1)
    parties.encode(out, x[:1])
    labels = parties.read_labels(out / "evaluator" / parties.INPUTS, rep["circuit"], "inputs")
    for lab in labels[0].parts.values():  # every modulus of the centre pixel
        lab.digits[0, 0, 2, 2, 1] = (lab.digits[0, 0, 2, 2, 1] + 1) % lab.q
    parties.write_labels(out / "evaluator" / parties.INPUTS, rep["circuit"], "inputs", labels)
    with pytest.raises(IntegrityError):  # at evaluation (a row opens out of range) or decoding
        parties.evaluate(out / "evaluator")
        parties.decode(out)


def test_labels_of_another_circuit_are_refused(tiny, tmp_path):
    plan, x, _ = tiny
    a, _ = _garble_run(plan, x, tmp_path / "a", 1)
    b = tmp_path / "b" / "g"
    parties.garble(plan, b, count=1)
    (b / "evaluator" / parties.INPUTS).write_bytes(
        (a / "evaluator" / parties.INPUTS).read_bytes())
    with pytest.raises(IntegrityError, match="circuit"):
        parties.evaluate(b / "evaluator")


def test_damaged_secrets_file_is_a_file_error(tiny, tmp_path):
    plan, x, _ = tiny
    out = tmp_path / "g"
    parties.garble(plan, out, count=1)
    path = out / "garbler" / parties.SECRETS
    path.write_bytes(path.read_bytes()[:-10])
    with pytest.raises(PlanFileError, match="truncated"):
        parties.encode(out, x[:1])


def test_eval_pipeline_matches_simulation(tiny):
    plan, x, y = tiny
    report = eval_plan(plan, x[:6], y[:6], batch=4)
    assert report["n"] == 6
    assert report["exact_match"] == 1.0
    assert report["garbled_accuracy"] == report["simulated_accuracy"]
    assert set(report["timings"]) == {"garble_s", "encode_s", "evaluate_s", "decode_s"}
    assert report["bytes"]["tables"] > 0 and report["ciphertexts_per_inference"] > 0
