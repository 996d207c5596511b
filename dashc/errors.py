"""Errors a user can cause, each with its own process exit code.

The CLI prints ``error: <message>`` on one line and exits with ``exit_code``; it never shows a
traceback for these.  Messages name the offending file, node or field.
"""
from __future__ import annotations


class DashcError(Exception):
    """Base class of every error meant for the user."""

    exit_code = 1


class UsageError(DashcError):
    """Bad arguments or options (click's own usage errors also exit with 2)."""

    exit_code = 2


class UnsupportedModelError(DashcError):
    """The model uses operators or attributes dashc cannot compile."""

    exit_code = 3


class InvalidModelError(DashcError):
    """The model file is unreadable or malformed (truncated ONNX, NaN weights, bad rank)."""

    exit_code = 4


class ModelInputError(InvalidModelError):
    """The model's input has an unsupported type, rank or dynamic dimensions."""

    exit_code = 10


class ModelWeightsError(InvalidModelError):
    """A weight of the model holds NaN or infinite values."""

    exit_code = 11


class PlanFileError(DashcError):
    """A plan or party file is truncated, corrupted, of a future version or inconsistent."""

    exit_code = 5


class IntegrityError(DashcError):
    """Garbled material or labels failed an authenticity or checksum check."""

    exit_code = 6


class OverflowDetected(DashcError):
    """A value left the range the plan was compiled for."""

    exit_code = 7


class DataError(DashcError):
    """A data set (npz or built-in name) is missing or malformed."""

    exit_code = 8


class CircuitReuseError(DashcError):
    """A garbled circuit was asked to serve a second inference."""

    exit_code = 9
