"""The sender interface every destination type implements, and the type -> class map.

A sender gets a list of result files and sends them in one session (one
association, one HTTP request batch...).  It returns one
:class:`SendOutcome` per file, in the same order; a file counts as delivered
only when the peer reported success for it.  When the peer cannot be reached
at all the sender raises :class:`SenderError` (every file stays pending).

A sender may accept ``on_outcome``: a callable it calls with each file's
outcome as soon as the peer answered, in order.  The dispatcher commits each
outcome at once, so a crash mid-batch can re-send at most the one instance
whose success had not been committed yet.

The DICOMweb sender (``node.dispatch.dicomweb.DicomwebSender``) is written by
the web area and implements the same interface.
"""
from __future__ import annotations

import dataclasses
import importlib
from pathlib import Path
from typing import Any, Protocol, Sequence, runtime_checkable

__all__ = ["SendOutcome", "Sender", "SenderError", "build_sender", "register_sender_type", "SENDER_TYPES"]


class SenderError(Exception):
    """The destination could not be reached or refused the session; nothing was sent."""


@dataclasses.dataclass(frozen=True)
class SendOutcome:
    """Result of sending one file: ``ok`` only after the peer's success (or warning) status.

    ``permanent`` marks failures that retrying cannot fix (e.g. the peer does
    not accept the SOP class); they are recorded as failed at once.
    """

    path: Path
    ok: bool
    status: int | None = None
    error: str | None = None
    permanent: bool = False


@runtime_checkable
class Sender(Protocol):
    """Sends files to one destination."""

    def send(self, paths: Sequence[Path]) -> list[SendOutcome]:  # optionally also on_outcome=callable
        ...


#: destination ``type`` -> "module:Class"; the class takes (name, destination config, our AE title, timeout_s).
SENDER_TYPES: dict[str, str] = {
    "dimse": "node.dispatch.dimse:DimseSender",
    "dicomweb": "node.dispatch.dicomweb:DicomwebSender",
}


def register_sender_type(type_name: str, target: str) -> None:
    """Add or replace the sender class for a destination type ("module:Class")."""
    SENDER_TYPES[type_name] = target


def build_sender(name: str, destination: Any, calling_ae: str, timeout_s: float) -> Sender:
    """Instantiate the sender for ``destination`` (a config destination dataclass)."""
    target = SENDER_TYPES.get(destination.type)
    if target is None:
        raise SenderError(f"destination {name!r}: no sender for type {destination.type!r}")
    module_name, _, attr = target.partition(":")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise SenderError(f"destination {name!r}: sender for type {destination.type!r} unavailable: {exc}") from exc
    cls = getattr(module, attr)
    return cls(name=name, destination=destination, calling_ae=calling_ae, timeout_s=timeout_s)
