"""``dashc bench`` reports every documented key, per layer and in total, on a real plan."""
import json

import numpy as np
import torch
from click.testing import CliRunner

from dashc import api, load_plan
from dashc.bench import PeakRSS, bench_plan
from dashc.cli import main


def _plan(tmp_path):
    torch.manual_seed(2)
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(16, 6), torch.nn.ReLU(),
                                torch.nn.Linear(6, 3))
    x = np.random.default_rng(2).random((32, 1, 4, 4), dtype=np.float32)
    path = tmp_path / "tiny.dashc"
    api.compile_model(model, x, path, input_shape=(1, 4, 4), progress=None)
    return path


def test_bench_plan_keys_and_consistency(tmp_path):
    plan = load_plan(_plan(tmp_path))
    res = bench_plan(plan, batch=2, repeat=1)
    for key in ("batch", "device", "garble_s", "encode_s", "evaluate_s", "decode_s",
                "peak_memory_bytes", "ciphertexts", "aes_bound_ratio", "layers"):
        assert key in res
    assert res["exact_match"] is True
    assert res["batch"] == 2 and res["peak_memory_bytes"] > 0
    assert res["aes_blocks"]["garble"] > res["aes_blocks"]["evaluate"] > 0
    assert [layer["node"] for layer in res["layers"]] == [n.name for n in plan.nodes]
    # the counter's prediction, per layer, adds up to the ciphertexts actually garbled
    assert sum(layer["ciphertexts"] for layer in res["layers"]) == res["ciphertexts"]


def test_bench_command_writes_json(tmp_path):
    out = tmp_path / "bench.json"
    r = CliRunner().invoke(main, ["bench", str(_plan(tmp_path)), "--repeat", "1", "--json",
                                  str(out)], catch_exceptions=False)
    assert r.exit_code == 0, r.output
    rep = json.loads(out.read_text())
    assert rep["model"].endswith("tiny.dashc") and rep["layers"]
    assert "total: garble" in r.output


def test_peak_rss_sees_an_allocation():
    with PeakRSS() as mem:
        block = np.ones(64 * 2**20 // 8)
        block.sum()
    assert mem.peak >= 64 * 2**20
