"""``dashc serve`` and ``dashc infer`` through click: usage errors, unreachable or busy
addresses, each a one-line error with its own exit code."""
import socket

import pytest
from click.testing import CliRunner
from net_support import HOST, tiny_plan

from dashc.cli import main
from dashc.errors import UsageError
from dashc.net.errors import NetworkError


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    return tiny_plan(tmp_path_factory.mktemp("netcli"), n=8)


def run(*args):
    return CliRunner().invoke(main, [str(a) for a in args], catch_exceptions=False)


def _one_line_error(result, code):
    assert result.exit_code == code, result.output
    lines = result.output.strip().splitlines()
    assert lines[-1].startswith("error: ") and "Traceback" not in result.output
    return lines[-1]


def test_help_names_the_options():
    assert "--port-file" in run("serve", "--help").output
    out = run("infer", "--help").output
    for option in ("--server", "--pool", "--retries", "--json"):
        assert option in out


@pytest.mark.parametrize("address", ["localhost", "host:port", ":7000", "h:70000"])
def test_bad_server_address_is_a_usage_error(files, address):
    plan, data = files
    line = _one_line_error(run("infer", plan, "--server", address, "--data", data),
                           UsageError.exit_code)
    assert "HOST:PORT" in line


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind((HOST, 0))
        return s.getsockname()[1]


def test_unreachable_server(files):
    plan, data = files
    line = _one_line_error(run("infer", plan, "--server", f"{HOST}:{_closed_port()}",
                               "--data", data, "--retries", 1, "--retry-wait", 0),
                           NetworkError.exit_code)
    assert "cannot reach" in line


def test_port_in_use(files):
    plan, _ = files
    with socket.socket() as busy:
        busy.bind((HOST, 0))
        busy.listen()
        line = _one_line_error(run("serve", plan, "--host", HOST, "--port",
                                   busy.getsockname()[1]), NetworkError.exit_code)
    assert "cannot listen" in line
