"""multipart/related parsing for STOW-RS: boundaries, media type checks, part ranges."""
from __future__ import annotations

import io

import pytest

from node.web.multipart import MediaTypeError, MultipartError, PartReader, find_parts, stow_boundary


def _body(parts: list[tuple[dict[str, str], bytes]], boundary: str = "b0undary", close: bool = True,
          preamble: bytes = b"") -> bytes:
    out = preamble
    for headers, content in parts:
        out += b"--" + boundary.encode() + b"\r\n"
        out += b"".join(f"{k}: {v}\r\n".encode() for k, v in headers.items()) + b"\r\n"
        out += content + b"\r\n"
    if close:
        out += b"--" + boundary.encode() + b"--\r\n"
    return out


def test_stow_boundary_accepts_quoted_and_unquoted() -> None:
    assert stow_boundary('multipart/related; type="application/dicom"; boundary="abc"') == "abc"
    assert stow_boundary("Multipart/Related; boundary=xyz; type=application/dicom") == "xyz"


@pytest.mark.parametrize("value", [
    None,
    "application/dicom",
    'multipart/form-data; boundary="abc"',
    'multipart/related; type="application/dicom+json"; boundary=abc',
    "multipart/related; boundary=abc",
])
def test_stow_boundary_refuses_other_media_types(value: str | None) -> None:
    with pytest.raises(MediaTypeError):
        stow_boundary(value)


def test_stow_boundary_needs_boundary() -> None:
    with pytest.raises(MultipartError):
        stow_boundary('multipart/related; type="application/dicom"')


def test_find_parts_ranges_and_headers() -> None:
    # a part body that contains CRLF and a near-miss of the boundary must be kept intact
    payload1 = b"\x00\x01\r\n--b0undar\r\nDICM" * 1000
    payload2 = b"second"
    data = _body([({"Content-Type": "application/dicom"}, payload1),
                  ({"Content-Type": "application/dicom; transfer-syntax=1.2.840.10008.1.2.1"}, payload2)],
                 preamble=b"ignored preamble\r\n")
    fh = io.BytesIO(data)
    parts = find_parts(fh, "b0undary")
    assert [p.content_type for p in parts] == ["application/dicom",
                                              "application/dicom; transfer-syntax=1.2.840.10008.1.2.1"]
    assert PartReader(fh, parts[0].start, parts[0].end).read() == payload1
    reader = PartReader(fh, parts[1].start, parts[1].end)
    assert reader.read(3) == b"sec" and reader.read() == b"ond" and reader.read() == b""
    reader.seek(1)
    assert reader.read(2) == b"ec"


def test_find_parts_spanning_chunk_borders(tmp_path) -> None:
    big = bytes(range(256)) * 9000  # > 2 MiB: delimiters fall across 1 MiB read chunks
    data = _body([({"Content-Type": "application/dicom"}, big)] * 3)
    path = tmp_path / "body"
    path.write_bytes(data)
    with open(path, "rb") as fh:
        parts = find_parts(fh, "b0undary")
        assert len(parts) == 3
        assert all(PartReader(fh, p.start, p.end).read() == big for p in parts)


@pytest.mark.parametrize("data", [
    b"no boundary at all",
    _body([({"Content-Type": "application/dicom"}, b"x")], close=False),  # truncated upload
    b"--b0undary\r\nContent-Type: application/dicom\r\nno blank line" + b"\r\n--b0undary--",
    b"--b0undary--\r\n",  # no parts
])
def test_find_parts_refuses_malformed(data: bytes) -> None:
    with pytest.raises(MultipartError):
        find_parts(io.BytesIO(data), "b0undary")
