"""Result dispatch: persistent per-destination delivery queue and senders (DIMSE now, DICOMweb by the web area)."""
from .base import SendOutcome, Sender, SenderError, build_sender, register_sender_type

__all__ = ["SendOutcome", "Sender", "SenderError", "build_sender", "register_sender_type"]
