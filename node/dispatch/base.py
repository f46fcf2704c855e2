"""The sender interface every destination type implements, and the type -> class map.

A sender gets a list of result files and sends them in one session (one
association, one HTTP request batch...).  It returns one
:class:`SendOutcome` per file, in the same order; a file counts as delivered
only when the peer reported success for it.  When the peer cannot be reached
at all the sender raises :class:`SenderError` (every file stays pending).

Every sender takes ``on_outcome``: a callable it calls with each file's
outcome as soon as the peer answered, in order (a DIMSE sender after each
C-STORE response, a STOW-RS sender after the one response of the batch).  The
dispatcher commits each outcome at once, so a crash mid-batch can re-send at
most the one instance whose success had not been committed yet.

The senders are :class:`node.dispatch.dimse.DimseSender` and
:class:`node.dispatch.dicomweb.DicomwebSender`; :func:`node.dispatch.senders.build_sender`
picks one by destination type.
"""
from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Callable, Protocol, Sequence

__all__ = ["OutcomeCallback", "SendOutcome", "Sender", "SenderError"]


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


OutcomeCallback = Callable[[SendOutcome], None]


class Sender(Protocol):
    """Sends files to one destination."""

    def send(self, paths: Sequence[Path], on_outcome: OutcomeCallback | None = None) -> list[SendOutcome]:
        """One outcome per path, in order; ``on_outcome`` sees each as soon as the peer answered."""
        ...
