"""Logging for the node: plain text or JSON lines, no pixel data, no patient names.

Log records carry UIDs, AE titles, states and error texts only.  Modules
pass structured context with ``extra={"study": uid, ...}``; the JSON
formatter writes those keys as fields, the text formatter appends them as
``key=value``.  Keys that could carry PHI (patient name/id/birth date) are
dropped by :class:`PhiFilter` even if a caller passes them by mistake.
"""
from __future__ import annotations

import json
import logging
import sys
import time
from typing import Any, TextIO

__all__ = ["setup_logging", "JsonFormatter", "TextFormatter", "PhiFilter"]

_STANDARD_ATTRS = set(vars(logging.LogRecord("x", 0, "x", 0, "x", None, None))) | {"message", "asctime"}
#: Extras other libraries attach that are not context: uvicorn's ANSI-coloured copy of its message.
_IGNORED_EXTRAS = {"color_message"}
_PHI_KEYS = {"patient_name", "patientname", "patient_id", "patientid", "patient_birth_date", "pixel_data", "pixeldata"}


def _extras(record: logging.LogRecord) -> dict[str, Any]:
    return {k: v for k, v in vars(record).items()
            if k not in _STANDARD_ATTRS and k not in _IGNORED_EXTRAS and not k.startswith("_")}


class PhiFilter(logging.Filter):
    """Remove extra fields whose names denote PHI or pixel data."""

    def filter(self, record: logging.LogRecord) -> bool:
        for key in list(vars(record)):
            if key.lower() in _PHI_KEYS:
                delattr(record, key)
        return True


class JsonFormatter(logging.Formatter):
    """One JSON object per line: ts, level, logger, msg, extra fields, exc."""

    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, Any] = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created)) + f".{int(record.msecs):03d}Z",
            "level": record.levelname,
            "logger": record.name,
            "msg": record.getMessage(),
        }
        for key, value in _extras(record).items():
            out[key] = value if isinstance(value, (str, int, float, bool, type(None))) else str(value)
        if record.exc_info:
            out["exc"] = self.formatException(record.exc_info)
        return json.dumps(out, ensure_ascii=False)


class TextFormatter(logging.Formatter):
    """``time level logger: message key=value ...``"""

    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)s %(name)s: %(message)s")

    def format(self, record: logging.LogRecord) -> str:
        text = super().format(record)
        extras = _extras(record)
        if extras:
            tail = " ".join(f"{k}={v}" for k, v in extras.items())
            first, sep, rest = text.partition("\n")
            text = f"{first} {tail}{sep}{rest}"
        return text


def setup_logging(fmt: str = "text", level: str = "INFO", stream: TextIO | None = None) -> None:
    """Configure the root logger once for the process (replaces existing handlers)."""
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(JsonFormatter() if fmt == "json" else TextFormatter())
    handler.addFilter(PhiFilter())
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level)
    # pynetdicom logs every PDU at DEBUG and dataset summaries at INFO; keep it quiet.
    logging.getLogger("pynetdicom").setLevel(max(logging.WARNING, logging.getLevelName(level)))
    logging.getLogger("apscheduler").setLevel(logging.WARNING)
