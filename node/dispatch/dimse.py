"""DIMSE C-STORE SCU sender: one association per batch of result files.

Failures that a retry cannot fix are marked permanent at once (the delivery
fails with the reason, as the DICOMweb sender does): the peer accepts no
presentation context for the file's SOP class, or answers 0x0122 (SOP class not
supported), 0x0124 (not authorised) or 0xA9xx (data set does not match the SOP
class).  Everything else (no connection, association rejected, timeouts, other
failure statuses such as 0xA7xx or 0xCxxx) is retried with backoff.
"""
from __future__ import annotations

import logging
import ssl
from pathlib import Path
from typing import Sequence

import pydicom
from pydicom.pixels.utils import pack_bits
from pydicom.uid import UID, ExplicitVRLittleEndian, ImplicitVRLittleEndian
from pynetdicom import AE
from pynetdicom.association import Association

from ..config import DimseDestination, TLSSection
from .base import OutcomeCallback, SendOutcome, SenderError

__all__ = ["DimseSender", "SUCCESS_STATUSES", "PERMANENT_STATUSES", "permanent_reason"]

log = logging.getLogger("cardionode.dispatch.dimse")

#: Success and the C-STORE warning statuses (coercion, elements discarded, data set does not match):
#: the peer has stored the instance.
SUCCESS_STATUSES = {0x0000, 0x0001, 0xB000, 0xB006, 0xB007}
#: C-STORE failure statuses that sending the same object again cannot change.
PERMANENT_STATUSES = {0x0122: "SOP class not supported", 0x0124: "not authorised"}


def permanent_reason(status: int) -> str | None:
    """Why ``status`` is a permanent C-STORE failure, or None when a retry may succeed."""
    if 0xA900 <= status <= 0xA9FF:
        return "data set does not match SOP class"
    return PERMANENT_STATUSES.get(status)


def _tls_args(tls: TLSSection | None, host: str) -> tuple[ssl.SSLContext, str] | None:
    if tls is None:
        return None
    context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=tls.ca_certificates)
    context.load_cert_chain(tls.certificate, tls.private_key)
    return context, host


def _uncompressed(path: Path) -> pydicom.Dataset:
    """``path`` decoded to Explicit VR Little Endian, for a peer that accepts no compressed syntax."""
    ds = pydicom.dcmread(path)
    if ds.file_meta.TransferSyntaxUID.is_compressed:
        try:
            if ds.get("BitsAllocated") == 1:
                # pydicom's decompress() leaves 1-bit frames (BINARY SEG) unpacked at one byte per pixel
                frames = ds.pixel_array
                ds.PixelData = pack_bits(frames)
                ds["PixelData"].VR = "OB"
                ds["PixelData"].is_undefined_length = False
                ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
            else:
                ds.decompress(generate_instance_uid=False)  # same instance, another transfer syntax
        except Exception as exc:
            raise SenderError(f"{path.name}: peer accepts no {ds.file_meta.TransferSyntaxUID.name} "
                              f"and the pixel data cannot be decoded here: {exc}") from exc
    return ds


class DimseSender:
    """C-STORE result files to a DIMSE destination (AE title, host, port, optional TLS)."""

    def __init__(self, name: str, destination: DimseDestination, calling_ae: str, timeout_s: float = 30.0) -> None:
        self.name = name
        self.destination = destination
        self.calling_ae = calling_ae
        self.timeout_s = timeout_s

    def send(self, paths: Sequence[Path],
             on_outcome: OutcomeCallback | None = None) -> list[SendOutcome]:
        """C-STORE ``paths`` over one association; ``on_outcome`` sees each outcome right after the response."""
        if not paths:
            return []
        headers = []
        contexts: dict[str, set[str]] = {}
        for path in paths:
            meta = pydicom.dcmread(path, stop_before_pixels=True)
            sop_class = str(meta.SOPClassUID)
            ts = str(meta.file_meta.TransferSyntaxUID)
            headers.append((path, sop_class, ts))
            contexts.setdefault(sop_class, set()).update({ts, ExplicitVRLittleEndian, ImplicitVRLittleEndian})
        if len(contexts) > 128:
            raise SenderError(f"{self.name}: {len(contexts)} SOP classes in one batch (max 128)")

        ae = AE(ae_title=self.calling_ae)
        ae.acse_timeout = self.timeout_s
        ae.dimse_timeout = self.timeout_s
        ae.network_timeout = self.timeout_s
        ae.connection_timeout = self.timeout_s
        for sop_class, syntaxes in contexts.items():
            ae.add_requested_context(sop_class, sorted(syntaxes))
        dest = self.destination
        try:
            assoc = ae.associate(dest.host, dest.port, ae_title=dest.ae_title, tls_args=_tls_args(dest.tls, dest.host))
        except (OSError, ssl.SSLError) as exc:
            raise SenderError(f"{self.name}: cannot connect to {dest.host}:{dest.port}: {exc}") from exc
        if not assoc.is_established:
            if _no_context_accepted(assoc):
                names = ", ".join(sorted(UID(c).name for c in contexts))
                reason = (f"{self.name}: {dest.ae_title}@{dest.host}:{dest.port} accepted no presentation context"
                          f" for {names}: permanent failure, not retried")
                refused = [SendOutcome(path, ok=False, error=reason, permanent=True) for path, _c, _t in headers]
                for outcome in refused:
                    if on_outcome is not None:
                        on_outcome(outcome)
                return refused
            if assoc.is_rejected:
                raise SenderError(f"{self.name}: association rejected by {dest.ae_title}@{dest.host}:{dest.port}")
            raise SenderError(f"{self.name}: cannot associate with {dest.ae_title}@{dest.host}:{dest.port} "
                              "(down, unreachable or timed out)")
        outcomes: list[SendOutcome] = []

        def record(outcome: SendOutcome) -> None:
            outcomes.append(outcome)
            if on_outcome is not None:
                on_outcome(outcome)

        try:
            for path, sop_class, ts in headers:
                if not assoc.is_established:
                    record(SendOutcome(path, ok=False, error="association lost before sending"))
                    continue
                accepted = [cx for cx in assoc.accepted_contexts if cx.abstract_syntax == sop_class]
                if not accepted:
                    record(SendOutcome(path, ok=False, permanent=True,
                                       error=f"peer accepted no presentation context for {UID(sop_class).name}:"
                                             " permanent failure, not retried"))
                    continue
                try:
                    if ts in {cx.transfer_syntax[0] for cx in accepted}:
                        status = assoc.send_c_store(path)
                    else:
                        # The peer refused the file's (compressed) transfer syntax: send it uncompressed.
                        status = assoc.send_c_store(_uncompressed(path))
                except SenderError as exc:
                    record(SendOutcome(path, ok=False, error=str(exc)))
                    continue
                except Exception as exc:  # network error mid-batch: this and later files stay pending
                    record(SendOutcome(path, ok=False, error=f"C-STORE error: {exc}"))
                    continue
                code = getattr(status, "Status", None)
                if code is None:
                    record(SendOutcome(path, ok=False, error="no C-STORE response (timeout or abort)"))
                elif int(code) in SUCCESS_STATUSES:
                    record(SendOutcome(path, ok=True, status=int(code)))
                else:
                    why = permanent_reason(int(code))
                    error = f"C-STORE status 0x{int(code):04X}"
                    if why is not None:
                        error += f" ({why}): permanent failure, not retried"
                    record(SendOutcome(path, ok=False, status=int(code), error=error, permanent=why is not None))
        finally:
            if assoc.is_established:
                assoc.release()
            else:
                assoc.abort()
        return outcomes


def _no_context_accepted(assoc: Association) -> bool:
    """The peer accepted the association but none of its presentation contexts (pynetdicom then
    aborts it): retrying the same SOP classes cannot succeed."""
    primitive = assoc.acceptor.primitive
    return (primitive is not None and getattr(primitive, "result", None) == 0x00
            and not assoc.accepted_contexts and bool(assoc.rejected_contexts))
