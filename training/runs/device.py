"""``--device`` and ``--precision``: where a run computes and in which number format.

Mixed precision is allowed only where it is numerically safe:

- ``32`` (alias ``32-true``): float32 everywhere, on any device.
- ``16-mixed``: CUDA only; float16 autocast with a :class:`torch.amp.GradScaler` (without one, small
  gradients underflow to zero and large ones overflow).
- ``bf16-mixed``: CUDA devices with bfloat16 support only.  **Refused on CPU**: CPU bf16 autocast of
  the 3D convolutions gave different losses run to run with the same seed here, and NaN losses in 3
  of 6 runs in a user report; fp32 is the CPU path.
"""
from __future__ import annotations

import contextlib
import dataclasses
from typing import Any, ContextManager

import torch

from .errors import RunError

__all__ = ["DeviceError", "PrecisionError", "Precision", "resolve_device", "resolve_precision", "PRECISIONS"]

PRECISIONS = ("32", "32-true", "16-mixed", "bf16-mixed")


class DeviceError(RunError):
    """The requested device does not exist here."""


class PrecisionError(RunError):
    """The requested precision is not numerically safe (or not available) on this device."""


def _cuda_absent_reason() -> str:
    if torch.version.cuda is None:
        return f"this torch ({torch.__version__}) is a CPU-only build"
    return f"this torch ({torch.__version__}, CUDA {torch.version.cuda}) finds no CUDA device or driver"


def resolve_device(text: str | None) -> torch.device:
    """``cpu``, ``cuda`` or ``cuda:N`` (also a bare ``N`` as the card's ``--devices 0``) -> a device that exists.

    Raises :class:`DeviceError` with one line saying what is missing instead of torch's driver traceback."""
    t = (text or "cpu").strip().lower()
    if t.isdigit():
        t = f"cuda:{t}"
    if t == "cpu":
        return torch.device("cpu")
    if t == "cuda" or (t.startswith("cuda:") and t[5:].isdigit()):
        if not torch.cuda.is_available():
            raise DeviceError(f"--device {text}: no CUDA device available ({_cuda_absent_reason()}); use --device cpu")
        index = int(t[5:]) if ":" in t else 0
        count = torch.cuda.device_count()
        if index >= count:
            raise DeviceError(f"--device {text}: only {count} CUDA device(s) here (cuda:0..cuda:{count - 1})")
        return torch.device("cuda", index)
    raise DeviceError(f"--device {text}: expected cpu, cuda or cuda:N")


@dataclasses.dataclass(frozen=True)
class Precision:
    """Autocast settings and the gradient scaler of one run."""

    name: str
    device: torch.device
    dtype: torch.dtype | None  # autocast dtype; None = float32, no autocast

    def autocast(self) -> ContextManager[Any]:
        if self.dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=self.dtype)

    def scaler(self) -> "torch.amp.GradScaler | None":
        """A GradScaler for float16 (loss scaling), None otherwise."""
        if self.dtype is torch.float16:
            return torch.amp.GradScaler(self.device.type)
        return None


def resolve_precision(name: str | None, device: torch.device) -> Precision:
    n = (name or "32").strip()
    if n in ("32", "32-true"):
        return Precision("32", device, None)
    if n not in PRECISIONS:
        raise PrecisionError(f"--precision {name}: expected one of {', '.join(PRECISIONS)}")
    if device.type != "cuda":
        raise PrecisionError(
            f"--precision {n} on {device}: refused, mixed precision is only numerically safe here on CUDA "
            "(CPU bf16 autocast gave non-reproducible and NaN losses); use --precision 32 on CPU")
    if n == "bf16-mixed":
        if not torch.cuda.is_bf16_supported():
            raise PrecisionError(f"--precision bf16-mixed: {torch.cuda.get_device_name(device)} has no bfloat16 "
                                 "support; use 16-mixed or 32")
        return Precision(n, device, torch.bfloat16)
    return Precision(n, device, torch.float16)
