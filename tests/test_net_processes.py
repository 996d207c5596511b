"""``dashc serve`` and its clients in separate processes on loopback: nine clients at once,
210 inferences, every answer equal to the simulator's; a server killed mid-request."""
import asyncio
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from net_support import HOST, tiny_plan

from dashc import planfile
from dashc.compiler import encode_input
from dashc.net.client import run_inferences
from dashc.net.errors import NetworkError
from dashc.runtime.execute import run_plain

CLIENTS, PER_CLIENT, CLI_SAMPLES = 8, 25, 10
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
DASHC = [sys.executable, "-m", "dashc.cli"]


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return tiny_plan(tmp_path_factory.mktemp("netproc"), n=CLIENTS * PER_CLIENT)


def _wait_port(proc, port_file: Path, timeout: float = 120.0) -> int:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if port_file.exists() and port_file.read_text().strip():
            return int(port_file.read_text())
        if proc.poll() is not None:
            raise AssertionError(f"server exited with {proc.returncode}: "
                                 f"{proc.stderr.read().decode()}")
        time.sleep(0.1)
    proc.kill()
    raise AssertionError("server did not report its port")


def _stop(proc, timeout: float = 60.0) -> int:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
    try:
        return proc.wait(timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        raise


def test_nine_clients_two_hundred_inferences(tiny, tmp_path):
    """``dashc serve`` in its own process; eight clients at once on their own connections
    from this process (25 inferences each) and a ninth, ``dashc infer``, in a third process."""
    plan_path, data_path = tiny
    plan = planfile.load(plan_path)
    x = np.load(data_path)["x"]
    xi = encode_input(plan, x)
    expected = run_plain(plan, xi)[0].numpy()
    server = subprocess.Popen(DASHC + ["serve", str(plan_path), "--host", HOST, "--port", "0",
                                       "--port-file", str(tmp_path / "port"),
                                       "--json", str(tmp_path / "server.json")],
                              env=ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    cli = None
    try:
        port = _wait_port(server, tmp_path / "port")
        cli = subprocess.Popen(DASHC + ["infer", str(plan_path), "--server", f"{HOST}:{port}",
                                        "--data", str(data_path), "--offset", "50",
                                        "--limit", str(CLI_SAMPLES), "--pool", "4",
                                        "--json", str(tmp_path / "client.json")],
                               env=ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE)

        async def clients():
            return await asyncio.gather(*(
                run_inferences(plan, HOST, port, xi[k * PER_CLIENT:(k + 1) * PER_CLIENT],
                               pool=10) for k in range(CLIENTS)))

        sessions = asyncio.run(asyncio.wait_for(clients(), 300))
        out, err = cli.communicate(timeout=300)
    finally:
        if cli is not None and cli.poll() is None:
            cli.kill()
        rc = _stop(server)
    assert rc == 0, server.stderr.read().decode()[-2000:]
    assert cli.returncode == 0, err.decode()[-2000:]
    served = json.loads((tmp_path / "server.json").read_text())["served"]
    assert served == CLIENTS * PER_CLIENT + CLI_SAMPLES >= 200

    for k, session in enumerate(sessions):
        assert np.array_equal(np.stack(session.logits),
                              expected[k * PER_CLIENT:(k + 1) * PER_CLIENT]), k
        assert session.summary()["n"] == PER_CLIENT
    rep = json.loads((tmp_path / "client.json").read_text())
    part = expected[50:50 + CLI_SAMPLES]
    assert rep["n"] == CLI_SAMPLES and rep["circuits_garbled"] == CLI_SAMPLES
    assert np.array_equal(np.asarray(rep["logits_int"]), part)
    assert rep["classes"] == part.argmax(1).tolist()
    printed = [line for line in out.decode().splitlines() if ": class " in line]
    assert printed == [f"{50 + i}: class {c}" for i, c in enumerate(rep["classes"])]
    y = np.load(data_path)["y"][50:50 + CLI_SAMPLES]
    assert rep["accuracy"] == float((part.argmax(1) == y).mean())
    for key in ("offline_bytes", "online_request_bytes", "online_response_bytes",
                "online_latency_s"):
        assert rep[key] > 0, key


def test_server_killed_mid_request(tiny, tmp_path):
    plan_path, data_path = tiny
    hostile = Path(__file__).with_name("net_hostile_server.py")
    server = subprocess.Popen([sys.executable, str(hostile), str(plan_path),
                               str(tmp_path / "port")], env=ENV, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE)
    try:
        port = _wait_port(server, tmp_path / "port")
        client = subprocess.run(DASHC + ["infer", str(plan_path), "--server", f"{HOST}:{port}",
                                         "--data", str(data_path), "--limit", "3",
                                         "--pool", "2"],
                                env=ENV, capture_output=True, timeout=120)
    finally:
        if server.poll() is None:
            server.kill()
        server.wait(30)
    assert server.returncode == -signal.SIGKILL        # it really died, mid-request
    assert client.returncode == NetworkError.exit_code
    err = client.stderr.decode().strip().splitlines()
    assert err[-1].startswith("error: ") and "Traceback" not in client.stderr.decode()
    assert "closed the connection" in err[-1] and "fresh circuit" in err[-1]
    assert not any(": class " in line for line in client.stdout.decode().splitlines())
