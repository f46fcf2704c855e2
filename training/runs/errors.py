"""Errors of the training-run layer; each message is one line a user can act on."""
from __future__ import annotations

__all__ = ["RunError", "RunExistsError", "NonFiniteError"]


class RunError(RuntimeError):
    """A training run cannot start or go on (bad folder, options, device); the message says why."""


class RunExistsError(RunError):
    """The output folder already holds a run and neither ``--resume`` nor ``--overwrite`` was given."""


class NonFiniteError(RunError):
    """A loss or a weight became NaN/inf: training stops and nothing is saved from that state."""
