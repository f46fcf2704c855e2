"""The text log keeps one physical line per record whatever a peer puts in a value."""
from __future__ import annotations

import json
import logging

from node.logging_setup import JsonFormatter, TextFormatter, clean


def _record(msg: str, *args: object, exc: bool = False, **extra: object) -> logging.LogRecord:
    exc_info = None
    if exc:
        try:
            raise ValueError("bad value\nINFO forged: from the exception")
        except ValueError:
            import sys

            exc_info = sys.exc_info()
    record = logging.LogRecord("cardionode.test", logging.WARNING, __file__, 1, msg, args, exc_info)
    record.__dict__.update(extra)
    return record


def test_text_formatter_escapes_control_characters_in_message_extras_and_traceback() -> None:
    text = TextFormatter().format(_record("refused %s", "1.2\r\nINFO forged", exc=True,
                                          calling_ae="AE\x1b[31m", study="1.2.3\n4"))
    first, *rest = text.split("\n")
    assert "1.2\\r\\nINFO forged" in first and "calling_ae=AE\\x1b[31m" in first and "study=1.2.3\\n4" in first
    assert rest and all(line.startswith("    | ") for line in rest)
    assert any("INFO forged: from the exception" in line for line in rest)


def test_json_formatter_one_line_per_record() -> None:
    line = JsonFormatter().format(_record("refused %s", "1.2\nX", sop_instance="1.2\n3"))
    assert "\n" not in line
    assert json.loads(line)["sop_instance"] == "1.2\n3"


def test_clean_leaves_plain_text_alone() -> None:
    assert clean("1.2.840.10008 Herz fünf") == "1.2.840.10008 Herz fünf"
    assert clean("a\u2028b\x00") == "a\\u2028b\\x00"
