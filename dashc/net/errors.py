"""Errors of the network deployment, each with its own exit code.

A garbled circuit whose input labels left the garbler is spent whatever happens next; both
errors below say so, and the client retries (if asked to) with a fresh circuit.
"""
from __future__ import annotations

from dashc.errors import DashcError


class NetworkError(DashcError):
    """The peer cannot be reached, closed the connection, or did not answer in time."""

    exit_code = 12


class ProtocolError(DashcError):
    """The peer sent a malformed message or refused ours with an error reply."""

    exit_code = 13

    def __init__(self, message: str, code: str = "malformed"):
        super().__init__(message)
        self.code = code
