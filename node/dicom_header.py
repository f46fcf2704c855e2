"""The DICOM header walker: File Meta and the identifying attributes of a Part 10 file, validated in one pass.

The spool (:mod:`node.spool`) must refuse a truncated or malformed instance
before it answers success, without decoding pixel data and without reading
the file twice.  :func:`read_header` walks the encoded dataset structurally
(every element, item and fragment must lie inside the file, explicit VRs must
be DICOM VRs, an image must carry pixel data) and reads the few identifying
top-level values on the way.  pydicom alone reads a truncated file silently,
so it is used only for deflated datasets (which it inflates); its results are
the reference the walker is tested against (``tests/test_dicom_header.py``).
"""
from __future__ import annotations

import dataclasses
import os
import struct
import zlib
from pathlib import Path
from typing import Any, BinaryIO, Container

import pydicom
from pydicom.charset import convert_encodings, decode_bytes
from pydicom.uid import UID, DeflatedExplicitVRLittleEndian, ExplicitVRBigEndian, ImplicitVRLittleEndian

__all__ = ["InstanceHeader", "MalformedDatasetError", "read_header"]


class MalformedDatasetError(ValueError):
    """The file is not a well-formed Part 10 instance (truncated, bad VR, no DICM prefix...)."""


_HEADER_TAGS = [
    "SOPClassUID", "SOPInstanceUID", "StudyInstanceUID", "SeriesInstanceUID", "Modality",
    "SeriesDescription", "SeriesNumber", "InstanceNumber",
]
_LONG_VRS = {b"OB", b"OW", b"OF", b"OD", b"OL", b"OV", b"SQ", b"UC", b"UN", b"UR", b"UT", b"SV", b"UV"}
_COPY_CHUNK = 1 << 20


def _int_or_none(value: Any) -> int | None:
    try:
        return int(value) if value not in (None, "") else None
    except (TypeError, ValueError):
        return None


_PIXEL_TAGS = {(0x7FE0, 0x0010), (0x7FE0, 0x0008), (0x7FE0, 0x0009)}  # Pixel / Float / Double Float Pixel Data
_UNDEFINED = 0xFFFFFFFF
_VRS = {b"AE", b"AS", b"AT", b"CS", b"DA", b"DS", b"DT", b"FL", b"FD", b"IS", b"LO", b"LT", b"OB", b"OD", b"OF",
        b"OL", b"OV", b"OW", b"PN", b"SH", b"SL", b"SQ", b"SS", b"ST", b"SV", b"TM", b"UC", b"UI", b"UL", b"UN",
        b"UR", b"US", b"UT", b"UV"}
_WINDOW = 64 * 1024  # one read covers the header of a typical instance
_MAX_VALUE = 1024  # identifying values longer than this are not read (a UID is at most 64 bytes)
# top-level attributes read while walking: (group, element) -> name
_HEADER_ELEMENTS = {
    (0x0008, 0x0005): "charset",
    (0x0008, 0x0016): "sop_class",
    (0x0008, 0x0018): "sop_instance",
    (0x0008, 0x0060): "modality",
    (0x0008, 0x103E): "series_description",
    (0x0020, 0x000D): "study",
    (0x0020, 0x000E): "series",
    (0x0020, 0x0011): "series_number",
    (0x0020, 0x0013): "instance_number",
}
# header values completeness judges a series by (node.completeness.HeaderFacts): (group, element) -> name
_FACT_ELEMENTS = {
    (0x0028, 0x0008): "frames",
    (0x0020, 0x0105): "temporal_positions",
    (0x0018, 0x1090): "cardiac_images",
    (0x0020, 0x1002): "images_in_acquisition",
    (0x0020, 0x0012): "acquisition_number",
    (0x0020, 0x0032): "image_position",
    (0x0020, 0x1041): "slice_location",
    (0x0018, 0x0020): "scanning_sequence",
    (0x0018, 0x0021): "sequence_variant",
    (0x0018, 0x0024): "sequence_name",
    (0x0018, 0x9005): "pulse_sequence_name",
    (0x0020, 0x9161): "concatenation_uid",
    (0x0020, 0x9162): "concatenation_number",  # US: binary
    (0x0020, 0x9163): "concatenation_total",  # US: binary
}
_FACT_KEYWORDS = {
    "frames": "NumberOfFrames", "temporal_positions": "NumberOfTemporalPositions",
    "cardiac_images": "CardiacNumberOfImages", "images_in_acquisition": "ImagesInAcquisition",
    "acquisition_number": "AcquisitionNumber", "image_position": "ImagePositionPatient",
    "slice_location": "SliceLocation", "scanning_sequence": "ScanningSequence",
    "sequence_variant": "SequenceVariant", "sequence_name": "SequenceName",
    "pulse_sequence_name": "PulseSequenceName", "concatenation_uid": "ConcatenationUID",
    "concatenation_number": "InConcatenationNumber", "concatenation_total": "InConcatenationTotalNumber",
}
_META_LENGTH = (0x0002, 0x0000)  # File Meta Information Group Length: the first element, at byte 132
_META_ELEMENTS = {(0x0002, 0x0002): "meta_sop_class", (0x0002, 0x0003): "meta_sop_instance",
                  (0x0002, 0x0010): "transfer_syntax"}


@dataclasses.dataclass(frozen=True)
class InstanceHeader:
    """What the spool needs from a Part 10 file: File Meta UIDs and the identifying attributes."""

    transfer_syntax: str
    meta_sop_class: str
    meta_sop_instance: str
    sop_class: str
    sop_instance: str
    study: str
    series: str
    modality: str
    series_description: str
    series_number: int | None
    instance_number: int | None
    size: int
    facts: str | None = None  # completeness header values as JSON (node.completeness.HeaderFacts.extra_json)


class _Window:
    """Positional reads (``os.pread``) through one buffered window: a header walk costs one or
    two system calls instead of a seek and a read per element."""

    def __init__(self, fd: int, size: int) -> None:
        self.fd, self.size = fd, size
        self.base, self.buf = 0, b""

    def get(self, at: int, n: int, what: str) -> tuple[bytes, int]:
        """(buffer, offset in it) holding bytes ``at .. at+n``; raises when the file ends first."""
        off = at - self.base
        if off < 0 or off + n > len(self.buf):
            if at + n > self.size:
                raise MalformedDatasetError(f"dataset truncated in {what} at byte {at}")
            self.buf, self.base, off = os.pread(self.fd, max(n, _WINDOW), at), at, 0
            if len(self.buf) < n:
                raise MalformedDatasetError(f"dataset truncated in {what} at byte {at}")
        return self.buf, off


class _Walker:
    """Structural walk over an encoded (not deflated) dataset: every element, item and
    delimiter must lie wholly inside the file, explicit VRs must be DICOM VRs.  Values are
    skipped, never read (except the few identifying top-level ones asked for), so a
    multi-frame instance costs a read per window of headers, not its size."""

    def __init__(self, window: _Window, implicit: bool, little_endian: bool) -> None:
        self.w, self.size, self.implicit = window, window.size, implicit
        e = "<" if little_endian else ">"
        self.tag, self.u16, self.u32 = struct.Struct(e + "HH"), struct.Struct(e + "H"), struct.Struct(e + "I")
        self.item = struct.Struct(e + "HHI")
        self.values: dict[tuple[int, int], bytes] = {}

    def _skip(self, at: int, length: int, what: str) -> int:
        if at + length > self.size:
            raise MalformedDatasetError(f"dataset truncated: {what} at byte {at} needs {at + length - self.size}"
                                       " more bytes")
        return at + length

    def dataset(self, at: int, implicit: bool, in_item: bool = False, wanted: Container[tuple[int, int]] = (),
                stop_group: int | None = None) -> tuple[int, set[tuple[int, int]]]:
        """Walk elements from ``at`` to the end of the file (top level) or to the item delimiter
        (``in_item``); returns the position after it and the tags seen at this level.  Values of
        ``wanted`` tags are kept in ``values``; ``stop_group`` ends the walk before the first
        element of another group (File Meta)."""
        tags: set[tuple[int, int]] = set()
        get, tag_s, u16, u32 = self.w.get, self.tag, self.u16, self.u32
        while at < self.size or in_item:
            buf, off = get(at, 4, "an element tag")
            group, elem = tag_s.unpack_from(buf, off)
            if stop_group is not None and group != stop_group:
                return at, tags
            if group == 0xFFFE:
                if in_item and elem == 0xE00D:
                    self._skip(at, 8, "an item delimiter")
                    return at + 8, tags
                raise MalformedDatasetError(f"unexpected item/delimiter (FFFE,{elem:04X}) at byte {at}")
            tags.add((group, elem))
            if implicit:
                buf, off = get(at + 4, 4, "an element length")
                (length,) = u32.unpack_from(buf, off)
                vr, at = b"", at + 8
            else:
                buf, off = get(at + 4, 4, "an element VR")
                vr = bytes(buf[off:off + 2])
                if vr not in _VRS:
                    raise MalformedDatasetError(f"invalid VR {vr!r} of ({group:04X},{elem:04X}) at byte {at}")
                if vr in _LONG_VRS:
                    buf, off = get(at + 8, 4, "an element length")
                    (length,) = u32.unpack_from(buf, off)
                    at += 12
                else:
                    (length,) = u16.unpack_from(buf, off + 2)
                    at += 8
            if length == _UNDEFINED:  # sequence, encapsulated pixel data, or UN (then implicit VR inside)
                at = self.items(at, implicit or vr == b"UN")
            else:
                if (group, elem) in wanted and length <= _MAX_VALUE:
                    buf, off = get(at, length, f"element ({group:04X},{elem:04X})")
                    self.values[(group, elem)] = bytes(buf[off:off + length])
                at = self._skip(at, length, f"element ({group:04X},{elem:04X})")
        return at, tags

    def items(self, at: int, implicit: bool) -> int:
        """Items of an undefined-length element up to and including its sequence delimiter."""
        while True:
            buf, off = self.w.get(at, 8, "an item header")
            group, elem, length = self.item.unpack_from(buf, off)
            if (group, elem) == (0xFFFE, 0xE0DD):
                return at + 8
            if (group, elem) != (0xFFFE, 0xE000):
                raise MalformedDatasetError(f"malformed sequence or encapsulated pixel data at byte {at}")
            at += 8
            if length == _UNDEFINED:
                at, _tags = self.dataset(at, implicit, in_item=True)
            else:
                at = self._skip(at, length, "an item or fragment")


def _text(value: bytes | None) -> str:
    return value.decode("ascii", "replace").strip(" \x00") if value else ""


def _number(value: bytes | None) -> int | None:
    text = _text(value)
    try:
        return int(text) if text else None
    except ValueError:
        try:
            number = float(text)
        except ValueError:
            return None
        return int(number) if number.is_integer() else None


def _check_deflated(fp: BinaryIO, offset: int) -> None:
    """Stream the deflated dataset through zlib: it must end cleanly."""
    fp.seek(offset)
    z = zlib.decompressobj(-zlib.MAX_WBITS)
    try:
        while chunk := fp.read(_COPY_CHUNK):
            z.decompress(chunk, 0)
            if z.eof:
                break
    except zlib.error as exc:
        raise MalformedDatasetError(f"deflated dataset corrupt: {exc}") from None
    if not z.eof:
        raise MalformedDatasetError("deflated dataset truncated")


def _read_deflated(fp: BinaryIO, header: dict[str, Any], start: int) -> dict[str, Any]:
    """Identifying attributes of a Deflated Explicit VR Little Endian file (pydicom inflates), checked whole."""
    fp.seek(0)
    try:
        ds = pydicom.dcmread(fp, stop_before_pixels=True, specific_tags=_HEADER_TAGS + list(_FACT_KEYWORDS.values()))
    except Exception as exc:  # pydicom raises several types on garbage
        raise MalformedDatasetError(f"unreadable dataset: {type(exc).__name__}: {exc}") from None
    _check_deflated(fp, start)
    try:  # values are converted on access
        for key, keyword in (("sop_class", "SOPClassUID"), ("sop_instance", "SOPInstanceUID"),
                             ("study", "StudyInstanceUID"), ("series", "SeriesInstanceUID"),
                             ("modality", "Modality"), ("series_description", "SeriesDescription")):
            header[key] = str(ds.get(keyword, "") or "")
        header["series_number"] = _int_or_none(ds.get("SeriesNumber"))
        header["instance_number"] = _int_or_none(ds.get("InstanceNumber"))
        raw = {name: ds.get(keyword) for name, keyword in _FACT_KEYWORDS.items()}
        header["facts"] = _facts_json({k: (None if v is None else "\\".join(map(str, v)) if isinstance(v, (list, tuple))
                                           or type(v).__name__ == "MultiValue" else str(v)) for k, v in raw.items()})
    except Exception as exc:
        raise MalformedDatasetError(f"unreadable dataset: {type(exc).__name__}: {exc}") from None
    return header


def read_header(path: Path) -> InstanceHeader:
    """File Meta and the identifying header attributes of a Part 10 file, validated.

    One structural walk over the encoded dataset (every element, item and
    fragment must lie inside the file, explicit VRs must be DICOM VRs, an
    image must carry pixel data) reads the identifying attributes on the way,
    so a truncated instance is refused without reading its pixels into
    memory, and the file is parsed once (pydicom alone reads a truncated
    file silently).  Deflated datasets are inflated by pydicom and checked
    with zlib.
    """
    with open(path, "rb", buffering=0) as fp:
        size = os.fstat(fp.fileno()).st_size
        window = _Window(fp.fileno(), size)
        buf, off = window.get(0, 132, "the preamble")
        if buf[off + 128:off + 132] != b"DICM":
            raise MalformedDatasetError("unreadable dataset: no DICM prefix (not a Part 10 file)")
        meta = _Walker(window, implicit=False, little_endian=True)  # File Meta: always explicit VR LE
        start, _tags = meta.dataset(132, False, wanted=_META_ELEMENTS | {_META_LENGTH: ""}, stop_group=0x0002)
        group_length = meta.values.get(_META_LENGTH, b"")
        if len(group_length) != 4 or 144 + struct.unpack("<I", group_length)[0] != start:
            raise MalformedDatasetError("File Meta Information group length missing or wrong")
        header: dict[str, Any] = {name: _text(meta.values.get(tag)) for tag, name in _META_ELEMENTS.items()}
        header["size"] = size
        ts = header["transfer_syntax"]
        if not ts:
            raise MalformedDatasetError("File Meta Information without a Transfer Syntax UID")
        if ts == DeflatedExplicitVRLittleEndian:
            return InstanceHeader(**_read_deflated(fp, header, start))
        implicit = ts == ImplicitVRLittleEndian
        walker = _Walker(window, implicit, little_endian=ts != ExplicitVRBigEndian)
        _end, tags = walker.dataset(start, implicit, wanted=_HEADER_ELEMENTS | _FACT_ELEMENTS)
    values = {name: walker.values.get(tag) for tag, name in _HEADER_ELEMENTS.items()}
    raw_facts = {name: walker.values.get(tag) for tag, name in _FACT_ELEMENTS.items()}
    facts: dict[str, str | None] = {k: None if v is None else _text(v) for k, v in raw_facts.items()}
    endian = ">" if ts == ExplicitVRBigEndian else "<"
    for name in ("concatenation_number", "concatenation_total"):  # US: binary in every transfer syntax
        value = raw_facts[name]
        facts[name] = str(struct.unpack(endian + "H", value[:2])[0]) if value and len(value) >= 2 else None
    header["facts"] = _facts_json(facts)
    for name in ("sop_class", "sop_instance", "study", "series", "modality"):
        header[name] = _text(values[name])
    header["series_description"] = _decode_text(values["series_description"], values["charset"])
    header["series_number"] = _number(values["series_number"])
    header["instance_number"] = _number(values["instance_number"])
    sop_class = header["sop_class"]
    if "Image Storage" in UID(sop_class).name and not tags & _PIXEL_TAGS:
        raise MalformedDatasetError("image dataset without pixel data (truncated?)")
    return InstanceHeader(**header)


def _position(value: str | None) -> str | None:
    """ImagePositionPatient (or SliceLocation) rounded to 0.01 mm: the key of a slice position."""
    if not value:
        return None
    try:
        return "\\".join(f"{round(float(v), 2):.2f}" for v in value.split("\\"))
    except ValueError:
        return None


def _facts_json(raw: dict[str, str | None]) -> str | None:
    """The completeness header values (:class:`node.completeness.HeaderFacts`) as compact JSON."""
    from .completeness import HeaderFacts

    def num(name: str) -> int | None:
        text = (raw.get(name) or "").split("\\")[0]
        return _number(text.encode("ascii", "replace")) if text else None

    def text(name: str) -> str | None:
        return (raw.get(name) or "").strip(" \x00") or None

    facts = HeaderFacts(
        series_instance_uid="", frames=num("frames"), temporal_positions=num("temporal_positions"),
        cardiac_images=num("cardiac_images"), images_in_acquisition=num("images_in_acquisition"),
        acquisition_number=num("acquisition_number"),
        position=_position(text("image_position")) or _position(text("slice_location")),
        scanning_sequence=text("scanning_sequence"), sequence_variant=text("sequence_variant"),
        sequence_name=text("sequence_name") or text("pulse_sequence_name"),
        concatenation_uid=text("concatenation_uid"), concatenation_number=num("concatenation_number"),
        concatenation_total=num("concatenation_total"),
    )
    return facts.extra_json()


def _decode_text(value: bytes | None, charset: bytes | None) -> str:
    """A text value (LO) in the dataset's Specific Character Set, as pydicom decodes it."""
    if not value:
        return ""
    terms = [t.strip(" \x00") for t in (charset or b"").decode("ascii", "replace").split("\\")] or [""]
    try:
        text = decode_bytes(value, convert_encodings(terms), set())
    except Exception:  # an unknown character set: keep what ASCII gives
        text = value.decode("ascii", "replace")
    return text.strip(" \x00")
