"""An evaluator server process that dies (SIGKILL) as soon as a request arrives.

Usage: python net_hostile_server.py PLAN PORT_FILE   (listens on 127.0.0.1, a free port)
"""
import asyncio
import os
import signal
import sys
from pathlib import Path

from dashc import planfile
from dashc.net.server import Hooks, run_server


class DieOnRequest(Hooks):
    def on_infer(self, circuit):
        os.kill(os.getpid(), signal.SIGKILL)


def main():
    plan = planfile.load(sys.argv[1])

    def ready(host, port):
        Path(sys.argv[2]).write_text(f"{port}\n")

    asyncio.run(run_server(plan, "127.0.0.1", 0, ready, hooks=DieOnRequest()))


if __name__ == "__main__":
    main()
