"""Result dispatch: persistent per-destination delivery queue and senders (DIMSE and DICOMweb STOW-RS)."""
from .base import OutcomeCallback, SendOutcome, Sender, SenderError
from .senders import build_sender

__all__ = ["OutcomeCallback", "SendOutcome", "Sender", "SenderError", "build_sender"]
