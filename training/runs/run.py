"""A training run: folder policy, logging, device/precision, per-epoch metrics and checkpoints, resume.

A family's loop uses it like this (see training/calcium/train.py, training/myops/train.py,
training/syntax/train.py)::

    run = TrainingRun(RunOptions(out, resume=..., overwrite=..., device=..., precision=...),
                      family="calcium", config=vars(args), logger_names=["cardionode.training.calcium"])
    model.to(run.device)
    start = run.restore(model, optimizer, scheduler, rngs={"sampler": rng})
    for epoch in range(start + 1, epochs + 1):
        for batch in ...:
            with run.autocast():
                loss = ...
            run.backward_step(loss, optimizer, where=f"epoch {epoch} step {i}")
        run.end_epoch(epoch, {"train_loss": ..., "val_loss": ...}, model, optimizer, scheduler, rngs, extra={...})
    run.finish()
"""
from __future__ import annotations

import dataclasses
import datetime as dt
import json
import logging
import math
import shutil
import sys
import time
from pathlib import Path
from typing import Any, ContextManager, Mapping, Sequence

import torch

from .checkpoint import capture_rng, check_finite, restore_rng, save_atomic
from .config import to_yaml_dict, write_config
from .device import Precision, resolve_device, resolve_precision
from .errors import NonFiniteError, RunError, RunExistsError
from .metrics import MetricsLog

__all__ = ["RunOptions", "TrainingRun", "RUN_FILES", "code_version"]

#: files that make a folder "a run" (and that --overwrite replaces)
RUN_FILES = ("config.yaml", "run.json", "last.pt", "best.pt", "metrics.csv", "curves.png", "train.log")
FORMAT = "cardionode-run/1"


def code_version() -> str:
    """``git describe`` of the checkout the code runs from, else the installed package version."""
    import subprocess

    here = Path(__file__).resolve().parent
    try:
        out = subprocess.run(["git", "describe", "--always", "--dirty"], capture_output=True, text=True,
                             cwd=here, timeout=10)
        if out.returncode == 0 and out.stdout.strip():
            return out.stdout.strip()
    except (OSError, subprocess.SubprocessError):
        pass
    try:
        from importlib.metadata import version

        return f"cardionode {version('cardionode')}"
    except Exception:  # noqa: BLE001 - not installed as a distribution
        return "unknown"


@dataclasses.dataclass(frozen=True)
class RunOptions:
    """Where and how a run trains.  ``monitor``/``mode``: the per-epoch value that picks best.pt."""

    out: Path
    resume: bool = False
    overwrite: bool = False
    device: str = "cpu"
    precision: str = "32"
    progress: bool = True
    monitor: str = "val_loss"
    mode: str = "min"

    @classmethod
    def from_args(cls, args: Any, out: Path, **kw: Any) -> "RunOptions":
        return cls(out=Path(out), resume=bool(getattr(args, "resume", False)),
                   overwrite=bool(getattr(args, "overwrite", False)), device=getattr(args, "device", None) or "cpu",
                   precision=str(getattr(args, "precision", "32") or "32"),
                   progress=not getattr(args, "no_progress", False), **kw)


class TrainingRun:
    """One run folder (see the package docstring for its files)."""

    def __init__(self, opts: RunOptions, *, family: str, config: Mapping[str, Any],
                 logger_names: Sequence[str] = ("cardionode.training",), data: Mapping[str, Any] | None = None,
                 guard_files: Sequence[Path] = ()) -> None:
        self.opts = opts
        self.folder = Path(opts.out)
        self.family = family
        self.config = to_yaml_dict(config)  # plain values only: checkpoints load anywhere, config.yaml round-trips
        self.device = resolve_device(opts.device)
        self.precision: Precision = resolve_precision(opts.precision, self.device)
        self.scaler = self.precision.scaler()
        self.log = logging.getLogger(logger_names[0])
        self._prepare_folder(guard_files)
        self._handlers = self._attach_logging(logger_names)
        self.started = time.time()
        self.last_state: dict[str, Any] | None = None
        if opts.resume:
            self.last_state = torch.load(self.folder / "last.pt", map_location="cpu", weights_only=False)
        prior = self.last_state or {}
        self.history: list[dict[str, Any]] = list(prior.get("history", []))
        self.best: dict[str, Any] | None = prior.get("best")
        self.metrics = MetricsLog(self.folder, self.history)
        self.elapsed_before = float(prior.get("elapsed_s", 0.0))
        self.data = dict(data or {})
        self.nonfinite_skipped = 0
        self.code_version = code_version()
        if not opts.resume:
            write_config(self.folder / "config.yaml", self.config,
                         f"cardionode {family} training config ({dt.datetime.now().isoformat(timespec='seconds')}, "
                         f"code {self.code_version}).\nPass it back with --config; command-line options win.")
        self._write_status("running")
        self.log.info("%s run in %s on %s, precision %s%s", family, self.folder, self.device, self.precision.name,
                      f" (resumed after epoch {prior.get('epoch')})" if opts.resume else "")

    # -- folder --------------------------------------------------------------------------------------
    def _prepare_folder(self, guard_files: Sequence[Path]) -> None:
        f = self.folder
        present = [n for n in RUN_FILES if (f / n).exists()] if f.is_dir() else []
        if self.opts.resume:
            if not (f / "last.pt").is_file():
                raise RunError(f"{f}: nothing to resume (no last.pt); start a new run without --resume")
            return
        guarded = [Path(p) for p in guard_files if Path(p).exists()]
        if (present or guarded) and not self.opts.overwrite:
            what = present[0] if present else str(guarded[0])
            started = ""
            if (f / "run.json").is_file():
                try:
                    info = json.loads((f / "run.json").read_text())
                    started = f" (started {info.get('started')}, {info.get('status')}, epoch {info.get('epoch')})"
                except (OSError, ValueError):
                    pass
            raise RunExistsError(f"{f} already holds a training run{started} ({what}); pass --resume to continue "
                                 "it, --overwrite to replace it, or choose another output folder")
        if present or guarded:
            for n in present:
                (f / n).unlink()
            for p in guarded:
                p.unlink()
        f.mkdir(parents=True, exist_ok=True)

    def _attach_logging(self, names: Sequence[str]) -> list[tuple[logging.Logger, logging.Handler]]:
        """train.log (always) and stderr (unless the root logger already prints) at INFO for the family loggers."""
        fmt = logging.Formatter("%(asctime)s %(levelname)s %(message)s")
        fh = logging.FileHandler(self.folder / "train.log")
        fh.setFormatter(fmt)
        root_prints = any(isinstance(h, logging.StreamHandler) and not isinstance(h, logging.FileHandler)
                          for h in logging.getLogger().handlers)
        out: list[tuple[logging.Logger, logging.Handler]] = []
        self._levels: dict[str, int] = {}
        for name in names:
            lg = logging.getLogger(name)
            self._levels[name] = lg.level
            if lg.getEffectiveLevel() > logging.INFO:
                lg.setLevel(logging.INFO)
            handlers: list[logging.Handler] = [fh]
            if not root_prints:
                sh = logging.StreamHandler(sys.stderr)
                sh.setFormatter(fmt)
                handlers.append(sh)
            for h in handlers:
                lg.addHandler(h)
                out.append((lg, h))
        return out

    def close(self) -> None:
        for lg, h in self._handlers:
            lg.removeHandler(h)
            h.close()
        for name, level in getattr(self, "_levels", {}).items():
            logging.getLogger(name).setLevel(level)
        self._handlers = []

    def _write_status(self, status: str, **extra: Any) -> None:
        info = {"family": self.family, "status": status,
                "started": dt.datetime.fromtimestamp(self.started).isoformat(timespec="seconds"),
                "epoch": self.history[-1]["epoch"] if self.history else 0,
                "device": str(self.device), "precision": self.precision.name, "code_version": self.code_version,
                "best": self.best, "training_data": self.data, **extra}
        tmp = self.folder / ".run.json.tmp"
        tmp.write_text(json.dumps(info, indent=1, default=str))
        tmp.replace(self.folder / "run.json")

    # -- training ------------------------------------------------------------------------------------
    def autocast(self) -> ContextManager[Any]:
        return self.precision.autocast()

    def restore(self, model: torch.nn.Module, optimizer: torch.optim.Optimizer | None = None,
                scheduler: Any = None, rngs: Mapping[str, Any] | None = None) -> int:
        """Load last.pt into the given objects when resuming; returns the last finished epoch (0 for a new run)."""
        if self.last_state is None:
            return 0
        st = self.last_state
        model.load_state_dict(st["state_dict"])
        if optimizer is not None and st.get("optimizer") is not None:
            optimizer.load_state_dict(st["optimizer"])
        if scheduler is not None and st.get("scheduler") is not None:
            scheduler.load_state_dict(st["scheduler"])
        if self.scaler is not None and st.get("scaler") is not None:
            self.scaler.load_state_dict(st["scaler"])
        restore_rng(st["rng"], rngs)
        return int(st["epoch"])

    @property
    def elapsed_s(self) -> float:
        return self.elapsed_before + (time.time() - self.started)

    def backward_step(self, loss: torch.Tensor, optimizer: torch.optim.Optimizer, where: str) -> bool:
        """zero_grad, backward, (unscale,) step.  A non-finite loss stops the run (fp32/bf16) or, under the
        fp16 gradient scaler, is a skipped step as GradScaler intends.  Returns whether the step was taken."""
        optimizer.zero_grad(set_to_none=True)
        if not bool(torch.isfinite(loss.detach())):
            if self.scaler is None:
                raise NonFiniteError(f"loss is {float(loss.detach())} at {where} (precision {self.precision.name}); "
                                     "stopping: no checkpoint is written from this state"
                                     + self._last_good())
            self.nonfinite_skipped += 1
            self.scaler.update(self.scaler.get_scale() / 2)
            return False
        if self.scaler is None:
            loss.backward()
            optimizer.step()
            return True
        self.scaler.scale(loss).backward()
        scale = self.scaler.get_scale()
        self.scaler.step(optimizer)
        self.scaler.update()
        taken = self.scaler.get_scale() >= scale
        if not taken:
            self.nonfinite_skipped += 1
        return taken

    def _last_good(self) -> str:
        if (self.folder / "last.pt").is_file() and self.history:
            return f"; last good checkpoint: {self.folder / 'last.pt'} (epoch {self.history[-1]['epoch']})"
        return ""

    def _improved(self, value: float) -> bool:
        if self.best is None:
            return True
        b = float(self.best["value"])
        return value <= b if self.opts.mode == "min" else value >= b

    def end_epoch(self, epoch: int, metrics: Mapping[str, Any], model: torch.nn.Module,
                  optimizer: torch.optim.Optimizer | None = None, scheduler: Any = None,
                  rngs: Mapping[str, Any] | None = None, extra: Mapping[str, Any] | None = None) -> bool:
        """Record the epoch (CSV, PNG, log), write last.pt and, when the monitored value improved, best.pt.

        Raises :class:`NonFiniteError` (nothing written) when a weight or the monitored value is NaN/inf.
        Ties go to the later epoch.  Returns whether this epoch became best.pt."""
        state = {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}
        check_finite(state, f"{self.folder}: epoch {epoch} weights")
        value = metrics.get(self.opts.monitor)
        if value is None or not math.isfinite(float(value)):
            raise NonFiniteError(f"{self.folder}: epoch {epoch}: {self.opts.monitor} is {value}; stopping, nothing "
                                 "saved from this epoch" + self._last_good())
        row = {"epoch": epoch, **{k: (round(v, 6) if isinstance(v, float) else v) for k, v in metrics.items()},
               "seconds": round(self.elapsed_s, 1)}
        if self.nonfinite_skipped:
            row["skipped_steps"] = self.nonfinite_skipped
            self.nonfinite_skipped = 0
        self.history.append(row)
        is_best = self._improved(float(value))
        if is_best:
            self.best = {"epoch": epoch, "monitor": self.opts.monitor, "mode": self.opts.mode, "value": float(value)}
        common = {"format": FORMAT, "family": self.family, "epoch": epoch, "state_dict": state,
                  "config": dict(self.config), "history": list(self.history), "best": self.best,
                  "metrics": dict(metrics), "training_data": self.data, "code_version": self.code_version,
                  "device": str(self.device), "precision": self.precision.name, "elapsed_s": self.elapsed_s,
                  **dict(extra or {})}
        if is_best:
            save_atomic(common, self.folder / "best.pt")
        save_atomic({**common, "optimizer": optimizer.state_dict() if optimizer is not None else None,
                     "scheduler": scheduler.state_dict() if scheduler is not None else None,
                     "scaler": self.scaler.state_dict() if self.scaler is not None else None,
                     "rng": capture_rng(rngs)}, self.folder / "last.pt")
        self.metrics.add(row)
        self._write_status("running")
        shown = ", ".join(f"{k} {v:.4g}" if isinstance(v, float) else f"{k} {v}" for k, v in metrics.items())
        self.log.info("epoch %d: %s (%.0f s)%s", epoch, shown, self.elapsed_s, " *best*" if is_best else "")
        return is_best

    def best_state(self) -> dict[str, torch.Tensor]:
        """The state_dict of best.pt."""
        return torch.load(self.folder / "best.pt", map_location="cpu", weights_only=False)["state_dict"]

    def update_best(self, **fields: Any) -> Path:
        """Add fields (e.g. held-out test metrics computed after training) to best.pt."""
        path = self.folder / "best.pt"
        ck = torch.load(path, map_location="cpu", weights_only=False)
        ck.update(fields)
        return save_atomic(ck, path)

    def finish(self, **extra: Any) -> Path:
        self._write_status("finished", finished=dt.datetime.now().isoformat(timespec="seconds"), **extra)
        self.log.info("finished: best epoch %s (%s %.4g), %s", self.best and self.best["epoch"], self.opts.monitor,
                      self.best["value"] if self.best else float("nan"), self.folder / "best.pt")
        self.close()
        return self.folder / "best.pt"

    def fail(self, error: BaseException) -> None:
        """Record the failure in run.json and detach the log handlers (the checkpoints stay as they were)."""
        try:
            self._write_status("failed", error=str(error)[:500])
        finally:
            self.close()


def copy_best(run_folder: Path, target: Path) -> Path:
    """Copy best.pt somewhere else (e.g. a published-layout name)."""
    target.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(Path(run_folder) / "best.pt", target)
    return target
