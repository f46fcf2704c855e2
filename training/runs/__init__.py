"""One training-run layer for every model family (calcium, MyoPS, SYNTAX).

A run lives in one folder: ``config.yaml`` (the resolved options, accepted back with ``--config``),
``train.log``, ``metrics.csv`` and ``curves.png`` (one row / point per epoch), ``last.pt`` (model,
optimizer, scheduler, scaler and RNG states: ``--resume`` continues from it) and ``best.pt`` (the
epoch with the best validation value), plus ``run.json`` (status, data, code version).  See
docs/training.md.
"""
from .device import DeviceError, Precision, PrecisionError, resolve_device, resolve_precision
from .errors import NonFiniteError, RunError, RunExistsError
from .run import RunOptions, TrainingRun

__all__ = ["DeviceError", "Precision", "PrecisionError", "resolve_device", "resolve_precision", "NonFiniteError",
           "RunError", "RunExistsError", "RunOptions", "TrainingRun"]
