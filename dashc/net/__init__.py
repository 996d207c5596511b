"""Two-party deployment over the network: the evaluator as a server, the garbler as its client.

* :mod:`dashc.net.protocol`: the framed, versioned wire protocol on asyncio streams.
* :mod:`dashc.net.wire`: labels packed to 16 bytes each.
* :mod:`dashc.net.server`: :class:`EvaluatorServer` (``dashc serve``).
* :mod:`dashc.net.client`: :class:`GarblerClient` and :func:`run_inferences` (``dashc infer``).
"""
from .errors import NetworkError, ProtocolError
from .protocol import Limits

__all__ = ["Limits", "NetworkError", "ProtocolError"]
