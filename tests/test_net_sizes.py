"""Model A on the wire: the online request and response of one inference are each below
150 KB (labels packed to 16 bytes), measured as framed messages."""
import asyncio

import numpy as np
import pytest
import torch
from net_support import ThreadServer

from dashc import api
from dashc.compiler import encode_input
from dashc.models import data as zoo_data
from dashc.net import protocol as P
from dashc.net import wire
from dashc.net.client import run_inferences
from dashc.net.server import input_layout
from dashc.runtime.execute import run_plain
from dashc.runtime.garbler import Garbler

LIMIT_BYTES = 150_000


@pytest.fixture(scope="module")
def model_a():
    plan = api.compile_model("A", "mnist", progress=None, calib_size=128)
    x, y = zoo_data.load("mnist")
    return plan, x[:4], y[:4]


def _active_labels(moduli, shape, values):
    """Active labels of fresh circuits for ``values`` (what the garbler sends or receives)."""
    g = Garbler(1)
    g.input(moduli, shape)
    return g.encode([torch.as_tensor(values)])


def test_model_a_online_messages_below_150_kb(model_a):
    plan, x, _ = model_a
    xi = encode_input(plan, x[:1])
    request_labels = _active_labels(plan.moduli, xi.shape, xi)
    lay, body = wire.pack(request_labels)
    assert lay == input_layout(plan)
    request = P.encode(P.Msg.INFER, {"circuit": "0" * 32, "labels": lay}, body)

    logits = run_plain(plan, xi)[0]
    response_labels = _active_labels(plan.moduli, tuple(logits.shape), logits)
    lay, body = wire.pack(response_labels)
    response = P.encode(P.Msg.RESULT, {"circuit": "0" * 32, "labels": lay}, body)

    labels = 784 * len(plan.moduli)
    assert len(request) - 16 * labels < 300   # framing and meta are a few hundred bytes
    assert len(request) < LIMIT_BYTES and len(response) < LIMIT_BYTES, \
        (len(request), len(response))
    # unpacked (one byte per digit and more) it would not fit
    digits = sum(lab.digits.numel() for lab in request_labels[0].parts.values())
    assert digits > LIMIT_BYTES


def test_model_a_over_loopback(model_a):
    plan, x, y = model_a
    xi = encode_input(plan, x[:1])
    with ThreadServer(plan) as srv:
        session = asyncio.run(run_inferences(plan, *srv.addr, xi, pool=1))
    s = session.summary()
    assert np.array_equal(np.stack(session.logits), run_plain(plan, xi)[0].numpy())
    assert s["online_request_bytes"] < LIMIT_BYTES and s["online_response_bytes"] < LIMIT_BYTES
    print(f"model A: request {s['online_request_bytes']} B, response "
          f"{s['online_response_bytes']} B, offline {s['offline_bytes']} B, online "
          f"{s['online_latency_s'] * 1e3:.0f} ms, garble {s['garble_s']:.1f} s")
