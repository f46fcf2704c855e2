"""What the node takes in, C-STORE and STOW-RS alike.

* The SOP classes and transfer syntaxes it stores: the listener offers exactly these presentation
  contexts; STOW-RS refuses a part of any other SOP class with FailureReason 0x0122, as C-STORE does
  with status 0x0122.
* Its own results coming back (recognised by the spool, :class:`node.spool.OwnResultError`): answered
  as stored, not stored, not processed, and recorded by :func:`own_result_returned`.  The listener
  also negotiates the SOP classes of those results (:data:`RESULT_SOP_CLASSES`) for this alone, so
  that a PACS forwarding whole studies back does not see its association refused; any other instance
  of those classes gets 0x0122.
"""
from __future__ import annotations

import logging
from typing import Protocol

from ..spool import OwnResultError

__all__ = ["STORAGE_SOP_CLASSES", "RESULT_SOP_CLASSES", "TRANSFER_SYNTAXES", "IngestMetrics", "is_accepted",
           "own_result_returned"]


class IngestMetrics(Protocol):
    """What ingest counts: :class:`node.web.metrics.Metrics` in the node's process, the events to
    the main process in an ingest process (:class:`node.ingest.worker.EventWriter`)."""

    def instance_received(self, source: str, nbytes: int) -> None: ...

    def own_result_returned(self, source: str) -> None: ...

STORAGE_SOP_CLASSES = {
    "1.2.840.10008.5.1.4.1.1.12.1": "X-Ray Angiographic Image Storage",
    "1.2.840.10008.5.1.4.1.1.12.1.1": "Enhanced XA Image Storage",
    "1.2.840.10008.5.1.4.1.1.2": "CT Image Storage",
    "1.2.840.10008.5.1.4.1.1.2.1": "Enhanced CT Image Storage",
    "1.2.840.10008.5.1.4.1.1.4": "MR Image Storage",
    "1.2.840.10008.5.1.4.1.1.4.1": "Enhanced MR Image Storage",
}

#: What the node writes (pipelines.outputs): negotiated by the listener only to answer its own results
#: sent back as stored (not stored, not processed); never stored from anyone else.
RESULT_SOP_CLASSES = {
    "1.2.840.10008.5.1.4.1.1.88.34": "Comprehensive 3D SR Storage",
    "1.2.840.10008.5.1.4.1.1.66.4": "Segmentation Storage",
    "1.2.840.10008.5.1.4.1.1.7": "Secondary Capture Image Storage",
}

TRANSFER_SYNTAXES = [
    "1.2.840.10008.1.2.1",  # Explicit VR Little Endian
    "1.2.840.10008.1.2",  # Implicit VR Little Endian
    "1.2.840.10008.1.2.1.99",  # Deflated Explicit VR Little Endian
    "1.2.840.10008.1.2.4.50",  # JPEG Baseline (Process 1)
    "1.2.840.10008.1.2.4.57",  # JPEG Lossless (Process 14)
    "1.2.840.10008.1.2.4.70",  # JPEG Lossless SV1
    "1.2.840.10008.1.2.4.80",  # JPEG-LS Lossless
    "1.2.840.10008.1.2.4.81",  # JPEG-LS Near-Lossless
    "1.2.840.10008.1.2.4.90",  # JPEG 2000 Lossless
    "1.2.840.10008.1.2.4.91",  # JPEG 2000
    "1.2.840.10008.1.2.5",  # RLE Lossless
]


def is_accepted(sop_class_uid: str) -> bool:
    """True for the SOP classes the node stores (cardiac XA, CT and MR images)."""
    return str(sop_class_uid).strip().rstrip("\x00") in STORAGE_SOP_CLASSES


def own_result_returned(logger: logging.Logger, metrics: IngestMetrics | None, own: OwnResultError, *, source: str,
                        calling_ae: str) -> None:
    """Record one of the node's own results sent back to it (answered as stored, not stored, not
    processed): a warning naming it and the sender, and ``cardionode_own_results_returned_total``."""
    logger.warning("own result sent back to the node: not stored, not processed (does the sender route "
                   "results back here?)", extra={"sop_instance": own.sop_instance_uid,
                                                 "series": own.series_instance_uid,
                                                 "study": own.study_instance_uid, "source": source,
                                                 "calling_ae": calling_ae})
    if metrics is not None:
        try:
            metrics.own_result_returned(source)
        except Exception:
            logger.exception("metrics update failed")
