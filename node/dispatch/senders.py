"""The sender of each destination type: ``dimse`` -> :class:`DimseSender`, ``dicomweb`` -> :class:`DicomwebSender`."""
from __future__ import annotations

from ..config import DicomwebDestination, DimseDestination
from .base import Sender
from .dicomweb import DicomwebSender
from .dimse import DimseSender

__all__ = ["Destination", "build_sender"]

Destination = DimseDestination | DicomwebDestination


def build_sender(name: str, destination: Destination, calling_ae: str, timeout_s: float) -> Sender:
    """The sender for ``destination`` (a ``destinations:`` entry of the configuration)."""
    if isinstance(destination, DimseDestination):
        return DimseSender(name=name, destination=destination, calling_ae=calling_ae, timeout_s=timeout_s)
    return DicomwebSender(name=name, destination=destination, calling_ae=calling_ae, timeout_s=timeout_s)
