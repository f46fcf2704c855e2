"""Logging for the node: plain text or JSON lines, no pixel data, no patient names.

Log records carry UIDs, AE titles, states and error texts only.  Modules
pass structured context with ``extra={"study": uid, ...}``; the JSON
formatter writes those keys as fields, the text formatter appends them as
``key=value``.  Keys that could carry PHI (patient name/id/birth date) are
dropped by :class:`PhiFilter` even if a caller passes them by mistake.

Values in log records often come from the network (AE titles, UIDs, URL path
parts, error texts quoting them).  The text formatter escapes every control
character in the message and in the extra fields (:func:`clean`), and indents
the continuation lines of a traceback, so no line of the text log that does not
start a record begins at column 0: a newline sent by a peer cannot forge a log
line.  The JSON formatter escapes them by construction.  Python warnings go
through logging (``logging.captureWarnings``); pydicom's per-value validation
warnings are switched off and pynetdicom's are dropped (:class:`ValueNoiseFilter`):
the node validates the values it uses and logs one line per refused instance
instead of several per invalid element.
"""
from __future__ import annotations

import json
import logging
import re
import sys
import time
from typing import Any, TextIO

from pydicom import config as pydicom_config

__all__ = ["setup_logging", "JsonFormatter", "TextFormatter", "PhiFilter", "ValueNoiseFilter", "clean"]

_STANDARD_ATTRS = set(vars(logging.LogRecord("x", 0, "x", 0, "x", None, None))) | {"message", "asctime"}
#: Extras other libraries attach that are not context: uvicorn's ANSI-coloured copy of its message.
_IGNORED_EXTRAS = {"color_message"}
_PHI_KEYS = {"patient_name", "patientname", "patient_id", "patientid", "patient_birth_date", "pixel_data", "pixeldata"}


_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029]")
_CONTINUATION = "    | "


def clean(value: Any) -> str:
    """``value`` as one line of text: control characters (newline, carriage return, escape ...)
    written as ``\\n``, ``\\r``, ``\\x1b`` so that a value from the network cannot start a new line."""
    text = value if isinstance(value, str) else str(value)
    if not _CONTROL.search(text):
        return text
    return _CONTROL.sub(lambda m: m.group().encode("unicode_escape").decode("ascii"), text)


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


class ValueNoiseFilter(logging.Filter):
    """Drop pydicom's and pynetdicom's per-element warnings about non-conformant values (an invalid
    UID from a peer is logged every time pynetdicom touches it: 4-8 lines per C-STORE).  The node
    validates the values it uses and logs one refusal line per instance."""

    _PREFIXES = ("Invalid value for VR", "Non-conformant ")

    def filter(self, record: logging.LogRecord) -> bool:
        if not record.name.startswith(("pydicom", "pynetdicom", "py.warnings")):
            return True
        message = record.getMessage()
        return not any(p in message[:200] for p in self._PREFIXES)


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
    """``time level logger: message key=value ...``; one line per record, control characters
    escaped (:func:`clean`); a traceback follows on lines starting with ``"    | "``."""

    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)s %(name)s: %(message)s")

    def format(self, record: logging.LogRecord) -> str:
        record.message = clean(record.getMessage())
        record.asctime = self.formatTime(record, self.datefmt)
        text = self.formatMessage(record)
        extras = _extras(record)
        if extras:
            text += " " + " ".join(f"{clean(k)}={clean(v)}" for k, v in extras.items())
        tail = []
        if record.exc_info:
            if not record.exc_text:
                record.exc_text = self.formatException(record.exc_info)
        if record.exc_text:
            tail.append(record.exc_text)
        if record.stack_info:
            tail.append(self.formatStack(record.stack_info))
        for block in tail:
            text += "".join(f"\n{_CONTINUATION}{clean(line)}" for line in block.splitlines())
        return text


def setup_logging(fmt: str = "text", level: str = "INFO", stream: TextIO | None = None) -> None:
    """Configure the root logger once for the process (replaces existing handlers)."""
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(JsonFormatter() if fmt == "json" else TextFormatter())
    handler.addFilter(PhiFilter())
    handler.addFilter(ValueNoiseFilter())
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level)
    # Warnings (pydicom, numpy ...) through the same handler: escaped, one line each.
    logging.captureWarnings(True)
    # pydicom warns (twice: log + warnings) for every access of an invalid value, e.g. ~8 lines per
    # C-STORE naming an invalid UID; the spool validates the UIDs it uses and logs one refusal line.
    pydicom_config.settings.reading_validation_mode = pydicom_config.IGNORE
    # pynetdicom logs every PDU at DEBUG and dataset summaries at INFO; keep it quiet.
    logging.getLogger("pynetdicom").setLevel(max(logging.WARNING, logging.getLevelName(level)))
    logging.getLogger("apscheduler").setLevel(logging.WARNING)
