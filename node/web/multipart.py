"""multipart/related parsing for STOW-RS, over a request body already spooled to a file.

Why not in memory: STOW bodies can be gigabytes.  The body is written to a
temporary file first (:func:`copy_limited`), then :func:`find_parts` scans it
for the boundary delimiters and returns each part's header fields and the byte
range of its body; :class:`PartReader` reads one such range as a file object,
so a part is never copied again before the spool writes it.

The whole body is scanned before anything is stored, so a malformed message
(no boundary, no closing delimiter, a part without a header/body separator)
is refused as a whole and nothing of it is stored.
"""
from __future__ import annotations

import dataclasses
import io
from email.message import Message
from typing import BinaryIO, Protocol

__all__ = [
    "MultipartError",
    "MediaTypeError",
    "Part",
    "ByteStream",
    "PartReader",
    "parse_content_type",
    "stow_boundary",
    "find_parts",
]

_CHUNK = 1 << 20
_MAX_PART_HEADER = 16 * 1024


class MultipartError(ValueError):
    """The body is not a well-formed multipart message (HTTP 400)."""


class MediaTypeError(ValueError):
    """The request's media type is not multipart/related; type="application/dicom" (HTTP 415)."""


def parse_content_type(value: str) -> tuple[str, dict[str, str]]:
    """Split a Content-Type value into (lower-case media type, {lower-case param: value})."""
    msg = Message()
    msg["content-type"] = value
    mime = msg.get_content_type().lower()  # falls back to text/plain when unparseable
    params = {k.lower(): v for k, v in (msg.get_params() or [])[1:]}
    if "/" not in value.split(";", 1)[0]:
        mime = ""
    return mime, params


def stow_boundary(content_type: str | None) -> str:
    """The boundary of a STOW-RS request, checking the media type PS3.18 requires.

    Raises :class:`MediaTypeError` unless the request is multipart/related with
    ``type`` application/dicom (the only instance payload CardioNode accepts),
    and :class:`MultipartError` when the boundary parameter is missing or invalid.
    """
    if not content_type:
        raise MediaTypeError("missing Content-Type; expected multipart/related; type=\"application/dicom\"")
    mime, params = parse_content_type(content_type)
    if mime != "multipart/related":
        raise MediaTypeError(f"Content-Type {mime or content_type!r} not supported; expected multipart/related")
    root_type = params.get("type", "").strip().lower()
    if root_type != "application/dicom":
        raise MediaTypeError(
            f"multipart/related type={root_type or '(missing)'!r} not supported; only type=\"application/dicom\""
        )
    boundary = params.get("boundary", "")
    if not boundary or len(boundary) > 70 or boundary.endswith(" "):
        raise MultipartError("multipart/related without a valid boundary parameter")
    return boundary


@dataclasses.dataclass(frozen=True)
class Part:
    """One body part: header fields (lower-case names) and the byte range of its content."""

    index: int
    headers: dict[str, str]
    start: int
    end: int

    @property
    def size(self) -> int:
        return self.end - self.start

    @property
    def content_type(self) -> str:
        return self.headers.get("content-type", "")


def _delimiter_positions(fh: BinaryIO, delimiter: bytes) -> list[int]:
    """Offsets of every ``delimiter`` in the file (non-overlapping), reading it chunk by chunk."""
    positions: list[int] = []
    fh.seek(0)
    offset = 0  # file offset of buf[0]
    buf = b""
    keep = len(delimiter) - 1
    while True:
        chunk = fh.read(_CHUNK)
        if not chunk:
            break
        buf += chunk
        search_from = 0
        while True:
            i = buf.find(delimiter, search_from)
            if i < 0:
                break
            positions.append(offset + i)
            search_from = i + len(delimiter)
        cut = max(search_from, len(buf) - keep)
        offset += cut
        buf = buf[cut:]
    return positions


def _read_at(fh: BinaryIO, pos: int, size: int) -> bytes:
    fh.seek(pos)
    return fh.read(size)


def _parse_headers(raw: bytes, index: int) -> dict[str, str]:
    headers: dict[str, str] = {}
    for line in raw.split(b"\r\n"):
        if not line:
            continue
        if line[:1] in (b" ", b"\t") and headers:  # obsolete folding
            last = next(reversed(headers))
            headers[last] += " " + line.strip().decode("latin-1")
            continue
        name, sep, value = line.partition(b":")
        if not sep or not name.strip():
            raise MultipartError(f"part {index + 1}: malformed header line {line[:60]!r}")
        headers[name.strip().decode("latin-1").lower()] = value.strip().decode("latin-1")
    return headers


def find_parts(fh: BinaryIO, boundary: str) -> list[Part]:
    """Locate every body part of a multipart message stored in ``fh``.

    RFC 2046: delimiters are CRLF "--" boundary; the first may start the body;
    the last is followed by "--".  Raises :class:`MultipartError` when there
    is no part, no closing delimiter, or a part lacks its header terminator.
    """
    delim = b"\r\n--" + boundary.encode("latin-1")
    positions = _delimiter_positions(fh, delim)
    # A body that starts with the boundary line has no preceding CRLF.
    if _read_at(fh, 0, len(delim) - 2) == delim[2:]:
        positions.insert(0, -2)
    if not positions:
        raise MultipartError("no multipart boundary found in the body")
    parts: list[Part] = []
    closed = False
    for n, pos in enumerate(positions):
        after = pos + len(delim)
        tail = _read_at(fh, after, 2)
        if tail == b"--":
            closed = True
            break
        # transport padding (LWSP) then CRLF
        line = _read_at(fh, after, 256)
        eol = line.find(b"\r\n")
        if eol < 0 or line[:eol].strip(b" \t"):
            raise MultipartError(f"part {len(parts) + 1}: boundary line not followed by CRLF")
        start = after + eol + 2
        if n + 1 >= len(positions):
            raise MultipartError("multipart body has no closing boundary (truncated upload?)")
        end = positions[n + 1]
        head = _read_at(fh, start, min(_MAX_PART_HEADER, max(0, end - start)))
        if head.startswith(b"\r\n"):
            headers, body_start = {}, start + 2
        else:
            sep = head.find(b"\r\n\r\n")
            if sep < 0:
                raise MultipartError(f"part {len(parts) + 1}: no blank line after its header fields")
            headers = _parse_headers(head[:sep], len(parts))
            body_start = start + sep + 4
        parts.append(Part(index=len(parts), headers=headers, start=body_start, end=end))
    if not closed:
        raise MultipartError("multipart body has no closing boundary (truncated upload?)")
    if not parts:
        raise MultipartError("multipart body has no parts")
    return parts


class ByteStream(Protocol):
    """What a part is read from: an open binary file, or a :class:`PartReader` (a part within a part)."""

    def read(self, size: int = -1, /) -> bytes: ...

    def seek(self, offset: int, whence: int = io.SEEK_SET, /) -> int: ...

    def tell(self) -> int: ...


class PartReader(io.RawIOBase):
    """A read-only, seekable view of bytes [start, end) of an open file (offsets relative to start)."""

    def __init__(self, fh: ByteStream, start: int, end: int) -> None:
        super().__init__()
        self._fh = fh
        self._start = start
        self._end = end
        self._pos = 0

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self._pos

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        size = self._end - self._start
        if whence == io.SEEK_SET:
            pos = offset
        elif whence == io.SEEK_CUR:
            pos = self._pos + offset
        elif whence == io.SEEK_END:
            pos = size + offset
        else:
            raise ValueError(f"invalid whence {whence}")
        if pos < 0:
            raise ValueError("negative seek position")
        self._pos = pos
        return pos

    def readinto(self, buffer: bytearray | memoryview) -> int:  # type: ignore[override]
        size = self._end - self._start
        n = min(len(buffer), max(0, size - self._pos))
        if n == 0:
            return 0
        self._fh.seek(self._start + self._pos)
        data = self._fh.read(n)
        buffer[: len(data)] = data
        self._pos += len(data)
        return len(data)

    def read(self, size: int = -1) -> bytes:
        remaining = max(0, (self._end - self._start) - self._pos)
        n = remaining if size is None or size < 0 else min(size, remaining)
        if n == 0:
            return b""
        self._fh.seek(self._start + self._pos)
        data = self._fh.read(n)
        self._pos += len(data)
        return data
