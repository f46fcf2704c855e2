"""Checkpoint files of a run: atomic writes, a finiteness check before every save, RNG states."""
from __future__ import annotations

import os
import random
from pathlib import Path
from typing import Any, Mapping

import numpy as np
import torch

from .errors import NonFiniteError

__all__ = ["nonfinite_tensors", "check_finite", "save_atomic", "read_checkpoint", "capture_rng", "restore_rng"]


def nonfinite_tensors(state: Mapping[str, Any]) -> list[str]:
    """Names of the floating-point tensors of ``state`` that hold NaN or inf."""
    return [k for k, v in state.items()
            if isinstance(v, torch.Tensor) and v.is_floating_point() and not bool(torch.isfinite(v).all())]


def check_finite(state: Mapping[str, Any], what: str) -> None:
    """Raise :class:`NonFiniteError` naming the tensors when any weight is NaN/inf."""
    bad = nonfinite_tensors(state)
    if bad:
        raise NonFiniteError(f"{what}: {len(bad)} of {len(state)} tensors hold NaN/inf (first: {bad[0]}); "
                             "not saved")


def save_atomic(obj: Any, path: Path) -> Path:
    """``torch.save`` to a temporary name, fsync, rename: a crash never leaves half a checkpoint."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    with open(tmp, "wb") as fh:
        torch.save(obj, fh)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)
    return path


def read_checkpoint(path: Path) -> dict[str, Any]:
    """The dict saved in a checkpoint file, on the CPU; ``path`` may be a run folder (its best.pt is read).

    Raises FileNotFoundError naming what to give when there is no such file."""
    path = Path(path)
    if path.is_dir():
        path = path / "best.pt"
    if not path.is_file():
        raise FileNotFoundError(f"{path}: checkpoint not found (give a run folder or its best.pt / last.pt)")
    return torch.load(path, map_location="cpu", weights_only=False)


def capture_rng(extra: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """The global RNG states (python, numpy legacy, torch, CUDA) and those of ``extra`` generators
    (``np.random.Generator`` or ``torch.Generator``, by name) so a resumed run draws the same numbers."""
    out: dict[str, Any] = {"python": random.getstate(), "numpy": np.random.get_state(),
                           "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        out["cuda"] = torch.cuda.get_rng_state_all()
    gens: dict[str, Any] = {}
    for name, g in (extra or {}).items():
        if isinstance(g, np.random.Generator):
            gens[name] = ("numpy", g.bit_generator.state)
        elif isinstance(g, torch.Generator):
            gens[name] = ("torch", g.get_state())
        else:
            raise TypeError(f"RNG {name!r}: unsupported generator type {type(g).__name__}")
    out["generators"] = gens
    return out


def restore_rng(state: Mapping[str, Any], extra: Mapping[str, Any] | None = None) -> None:
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
    saved = state.get("generators", {})
    for name, g in (extra or {}).items():
        if name not in saved:
            raise KeyError(f"checkpoint has no state for generator {name!r}")
        kind, s = saved[name]
        if kind == "numpy":
            g.bit_generator.state = s
        else:
            g.set_state(s)
