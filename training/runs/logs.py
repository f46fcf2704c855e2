"""Root logging for a training command: INFO to the console and, given a folder, to ``<folder>/train.log``.

One definition for every family's command line (the per-run ``train.log`` of :class:`~training.runs.TrainingRun`
is separate: it is attached to the family loggers while a run is open)."""
from __future__ import annotations

import logging
import sys
from pathlib import Path
from typing import TextIO

__all__ = ["setup_logging"]


def setup_logging(logdir: Path | None = None, stream: TextIO | None = None) -> None:
    """Replace the root logger's handlers: ``stream`` (default stderr) and ``<logdir>/train.log`` when given."""
    handlers: list[logging.Handler] = [logging.StreamHandler(stream if stream is not None else sys.stderr)]
    if logdir is not None:
        Path(logdir).mkdir(parents=True, exist_ok=True)
        handlers.append(logging.FileHandler(Path(logdir) / "train.log"))
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s", handlers=handlers,
                        force=True)
