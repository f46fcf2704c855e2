"""Write synthetic phantom arrays as DICOM studies (CT, MR, XA).

Tests, benchmarks and the bundled-model tooling turn phantoms into the same
kind of files a modality sends, so that the node and the pipelines read them
through exactly the code paths real studies take.  Only numpy and pydicom are
needed here (no torch), so tests of the base install can use it too.

The patient is always a phantom: PatientName ``PHANTOM^...`` and a
``PatientIdentityRemoved``-style comment make that obvious in any viewer.

All series of one :class:`StudyIdentity` share its FrameOfReferenceUID (the
series of one session are in one patient coordinate system) unless a writer is
given another.  ``new_study(sparse=True)`` leaves the Type 2 attributes that
real archives often lack (AccessionNumber, StudyID, PatientBirthDate,
PatientSex, ReferringPhysicianName) out of the files, so that readers and
output builders are tested against them too.
"""
from __future__ import annotations

import dataclasses
import datetime as _dt
import random
from pathlib import Path
from typing import Any, Literal, Mapping, Sequence

import numpy as np
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.encaps import encapsulate
from pydicom.sequence import Sequence as DicomSequence
from pydicom.uid import (
    CTImageStorage,
    EnhancedCTImageStorage,
    ExplicitVRLittleEndian,
    JPEGBaseline8Bit,
    MRImageStorage,
    UID,
    XRayAngiographicImageStorage,
    generate_uid,
)
from pydicom.valuerep import format_number_as_ds

#: how the writers name their files: by InstanceNumber (``CT001_0001.dcm``) or by SOP Instance UID
FileNames = Literal["instance", "uid"]

__all__ = [
    "StudyIdentity",
    "new_study",
    "write_ct_series",
    "write_mr_series",
    "write_xa_cine",
    "write_enhanced_ct",
]

_IMPLEMENTATION_UID = UID("1.2.826.0.1.3680043.10.1446.1")  # pydicom-derived root for CardioNode tooling
_IMPLEMENTATION_NAME = "CARDIONODE_SYN"


@dataclasses.dataclass(frozen=True)
class StudyIdentity:
    """Patient and study attributes shared by every series of one synthetic study.

    The Type 2 fields (accession number, study ID, birth date, sex, referring
    physician) may be ``None``: the writers then leave the attribute out of the
    files, as in many real archives; ``""`` writes it present but empty.
    ``frame_of_reference_uid`` is shared by every series written for the study.
    """

    patient_id: str
    patient_name: str
    study_instance_uid: str
    accession_number: str | None
    study_id: str | None
    study_date: str
    study_time: str
    study_description: str = "Synthetic phantom study"
    patient_birth_date: str | None = "19700101"
    patient_sex: str | None = "O"
    referring_physician_name: str | None = ""
    frame_of_reference_uid: str = dataclasses.field(default_factory=lambda: str(generate_uid()))


SPARSE_FIELDS = ("accession_number", "study_id", "patient_birth_date", "patient_sex", "referring_physician_name")


def new_study(seed: int | None = None, *, sparse: bool = False, **overrides: str | None) -> StudyIdentity:
    """A new phantom study identity; ``seed`` makes the UIDs reproducible.

    ``sparse=True`` sets the Type 2 fields in :data:`SPARSE_FIELDS` to ``None``
    so those attributes are omitted from the files (``overrides`` still win).
    """
    rng = random.Random(seed)
    token = f"{rng.getrandbits(48):012x}"
    uid = generate_uid(entropy_srcs=[f"cardionode-study-{seed}"]) if seed is not None else generate_uid()
    for_uid = generate_uid(entropy_srcs=[f"cardionode-for-{seed}"]) if seed is not None else generate_uid()
    now = _dt.datetime(2026, 1, 1, 12, 0, 0) if seed is not None else _dt.datetime.now()
    fields: dict[str, str | None] = dict(
        patient_id=f"PHANTOM-{token[:8].upper()}",
        patient_name=f"PHANTOM^{token[:6].upper()}",
        study_instance_uid=str(uid),
        accession_number=f"SYN{token[:9].upper()}",
        study_id=token[:8].upper(),
        study_date=now.strftime("%Y%m%d"),
        study_time=now.strftime("%H%M%S"),
        frame_of_reference_uid=str(for_uid),
    )
    if sparse:
        fields.update({name: None for name in SPARSE_FIELDS})
    fields.update(overrides)
    return StudyIdentity(**fields)  # type: ignore[arg-type]


def _uid(seed_parts: Sequence[object] | None) -> UID:
    if seed_parts is None:
        return generate_uid()
    return generate_uid(entropy_srcs=[repr(tuple(seed_parts))])


def _ds_str(value: float) -> str:
    """A DS string: short (``%.6g``) when that is exact, else the most precise 16-character form."""
    short = f"{value:.6g}"
    return short if float(short) == float(value) else format_number_as_ds(float(value))


def _set_optional(ds: Dataset, keyword: str, value: str | None) -> None:
    """Set a Type 2 attribute unless ``value`` is None (then it stays absent)."""
    if value is not None:
        setattr(ds, keyword, value)


def _base_dataset(study: StudyIdentity, sop_class: str, sop_uid: str, modality: str, series_uid: str,
                  series_number: int, series_description: str, instance_number: int) -> Dataset:
    ds = Dataset()
    ds.SOPClassUID = sop_class
    ds.SOPInstanceUID = sop_uid
    ds.SpecificCharacterSet = "ISO_IR 100"
    ds.PatientName = study.patient_name
    ds.PatientID = study.patient_id
    _set_optional(ds, "PatientBirthDate", study.patient_birth_date)
    _set_optional(ds, "PatientSex", study.patient_sex)
    ds.PatientIdentityRemoved = "YES"
    ds.DeidentificationMethod = "Synthetic phantom, no patient data"
    ds.StudyInstanceUID = study.study_instance_uid
    _set_optional(ds, "StudyID", study.study_id)
    ds.StudyDate = study.study_date
    ds.StudyTime = study.study_time
    _set_optional(ds, "AccessionNumber", study.accession_number)
    _set_optional(ds, "ReferringPhysicianName", study.referring_physician_name)
    ds.StudyDescription = study.study_description
    ds.Modality = modality
    ds.SeriesInstanceUID = series_uid
    ds.SeriesNumber = series_number
    ds.SeriesDescription = series_description
    ds.SeriesDate = study.study_date
    ds.SeriesTime = study.study_time
    ds.ContentDate = study.study_date
    ds.ContentTime = study.study_time
    ds.InstanceNumber = instance_number
    ds.Manufacturer = "CardioNode synthetic phantom"
    ds.ManufacturerModelName = "phantom"
    ds.InstitutionName = "Synthetic"
    ds.PatientPosition = "HFS"
    ds.BodyPartExamined = "HEART" if modality != "CT" else "CHEST"
    ds.AcquisitionNumber = 1
    return ds


def _file_meta(ds: Dataset, transfer_syntax: str) -> FileMetaDataset:
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = ds.SOPClassUID
    meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    meta.TransferSyntaxUID = UID(transfer_syntax)
    meta.ImplementationClassUID = _IMPLEMENTATION_UID
    meta.ImplementationVersionName = _IMPLEMENTATION_NAME
    return meta


def _save(ds: Dataset, path: Path, transfer_syntax: str = ExplicitVRLittleEndian) -> Path:
    ds.file_meta = _file_meta(ds, transfer_syntax)
    path.parent.mkdir(parents=True, exist_ok=True)
    ds.save_as(path, enforce_file_format=True)
    return path


def _set_plane_geometry(ds: Dataset, position: np.ndarray, row_dir: np.ndarray, col_dir: np.ndarray,
                        pixel_spacing_rc: tuple[float, float], thickness: float) -> None:
    ds.ImagePositionPatient = [_ds_str(v) for v in position]
    ds.ImageOrientationPatient = [_ds_str(v) for v in (*row_dir, *col_dir)]
    ds.PixelSpacing = [f"{pixel_spacing_rc[0]:.6g}", f"{pixel_spacing_rc[1]:.6g}"]
    ds.SliceThickness = f"{thickness:.6g}"
    ds.FrameOfReferenceUID = ds.get("FrameOfReferenceUID")


def _set_pixels_mono(ds: Dataset, image: np.ndarray, *, signed: bool, bits: int) -> None:
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.Rows, ds.Columns = int(image.shape[-2]), int(image.shape[-1])
    ds.BitsAllocated = 16 if bits > 8 else 8
    ds.BitsStored = bits
    ds.HighBit = bits - 1
    ds.PixelRepresentation = 1 if signed else 0
    dtype = {(True, 16): "<i2", (False, 16): "<u2", (False, 8): "u1"}[(signed, ds.BitsAllocated)]
    ds.PixelData = np.ascontiguousarray(image.astype(dtype)).tobytes()


def _slice_series(
    image: np.ndarray,
    spacing_zyx: Sequence[float],
    out_dir: Path,
    study: StudyIdentity,
    *,
    sop_class: str,
    modality: str,
    series_number: int,
    series_description: str,
    origin_xyz: Sequence[float],
    row_dir: Sequence[float],
    col_dir: Sequence[float],
    slice_thickness: float | None,
    seed: int | None,
    prefix: str,
    extra: dict[str, Any],
    signed: bool,
    bits: int,
    rescale: tuple[float, float] | None,
    order: Sequence[int] | None = None,
    frame_of_reference_uid: str | None = None,
    images_in_acquisition: bool = True,
    file_names: FileNames = "instance",
    tags: Mapping[str, object] | None = None,
) -> list[Path]:
    """Write one file per slice; file i (InstanceNumber i+1) holds z index ``order[i]``; ``tags`` last."""
    if image.ndim != 3:
        raise ValueError(f"expected a (z, y, x) array, got shape {image.shape}")
    row = np.asarray(row_dir, dtype=float)
    col = np.asarray(col_dir, dtype=float)
    normal = np.cross(row, col)
    origin = np.asarray(origin_xyz, dtype=float)
    dz, dy, dx = (float(v) for v in spacing_zyx)
    series_uid = _uid(None if seed is None else (seed, prefix, "series", series_number))
    frame_uid = frame_of_reference_uid or study.frame_of_reference_uid
    write_order = _check_order(order, image.shape[0])
    out_dir = Path(out_dir)
    paths = []
    for i, k in enumerate(write_order):
        sop_uid = _uid(None if seed is None else (seed, prefix, "sop", series_number, k))
        ds = _base_dataset(study, sop_class, sop_uid, modality, series_uid, series_number, series_description, i + 1)
        ds.FrameOfReferenceUID = frame_uid
        ds.PositionReferenceIndicator = ""
        ds.ImageType = ["ORIGINAL", "PRIMARY", "AXIAL"] if modality == "CT" else ["ORIGINAL", "PRIMARY", "OTHER"]
        pos = origin + k * dz * normal
        _set_plane_geometry(ds, pos, row, col, (dy, dx), slice_thickness if slice_thickness is not None else dz)
        ds.SliceLocation = _ds_str(float(np.dot(pos, normal)))
        if images_in_acquisition:  # as most scanners write it: receivers can tell the series is complete
            ds.ImagesInAcquisition = image.shape[0]
        for key, value in extra.items():
            setattr(ds, key, value)
        if rescale is not None:
            ds.RescaleSlope, ds.RescaleIntercept = f"{rescale[0]:g}", f"{rescale[1]:g}"
        _set_pixels_mono(ds, image[k], signed=signed, bits=bits)
        for key, value in (tags or {}).items():
            setattr(ds, key, value)
        name = f"{sop_uid}.dcm" if file_names == "uid" else f"{prefix}{series_number:03d}_{i + 1:04d}.dcm"
        paths.append(_save(ds, out_dir / name))
    return paths


def _check_order(order: Sequence[int] | None, n: int) -> list[int]:
    """``order`` as a list, checked to be a permutation of range(n); None is the identity."""
    if order is None:
        return list(range(n))
    out = [int(k) for k in order]
    if sorted(out) != list(range(n)):
        raise ValueError(f"order must be a permutation of 0..{n - 1}, got {out}")
    return out


def _stored_ct(hu: np.ndarray, slope: float, intercept: float, unsigned: bool) -> np.ndarray:
    """HU -> stored values (HU = stored * slope + intercept), int16 or uint16, range-checked.

    Converted one slice at a time, so that a large series (300 x 512 x 512) needs no float64 copy of
    the whole volume."""
    if slope == 0:
        raise ValueError("rescale_slope must not be 0")
    hu = np.asarray(hu)
    dtype = np.uint16 if unsigned else np.int16
    info = np.iinfo(dtype)
    out = np.empty(hu.shape, dtype=dtype)
    for k in range(hu.shape[0] if hu.ndim else 0):
        stored = np.rint((hu[k].astype(np.float64) - intercept) / slope)
        if stored.size and (stored.min() < info.min or stored.max() > info.max):
            what = "HU values" if (slope, intercept) == (1.0, 0.0) else "stored values (HU - intercept) / slope"
            raise ValueError(f"{what} outside the {np.dtype(dtype).name} range")
        out[k] = stored
    return out


def write_ct_series(
    hu: np.ndarray,
    spacing_zyx: Sequence[float],
    out_dir: str | Path,
    study: StudyIdentity,
    *,
    series_number: int = 1,
    series_description: str = "Phantom chest CT",
    origin_xyz: Sequence[float] = (0.0, 0.0, 0.0),
    slice_thickness: float | None = None,
    convolution_kernel: str = "STANDARD",
    seed: int | None = None,
    row_dir: Sequence[float] = (1.0, 0.0, 0.0),
    col_dir: Sequence[float] = (0.0, 1.0, 0.0),
    order: Sequence[int] | None = None,
    rescale_slope: float = 1.0,
    rescale_intercept: float = 0.0,
    unsigned: bool = False,
    frame_of_reference_uid: str | None = None,
    images_in_acquisition: bool = True,
    tags: Mapping[str, object] | None = None,
    file_names: FileNames = "instance",
) -> list[Path]:
    """Write a (z, y, x) HU volume as a single-frame CT series.

    By default pixels are stored as signed 16-bit with RescaleIntercept 0, so
    stored value == HU, and slices are axial: slice k sits at ``origin + k * dz``
    along the normal row_dir x col_dir (+z, patient head).  ``rescale_slope`` /
    ``rescale_intercept`` / ``unsigned`` give the scanner-style encoding
    (e.g. uint16 with intercept -1024); ``order`` shuffles the files (file i,
    InstanceNumber i+1, holds z index ``order[i]``) so readers must sort by
    position; ``row_dir`` / ``col_dir`` tilt the plane.  ``images_in_acquisition=False`` leaves
    ImagesInAcquisition out (as some scanners do: the receiver cannot tell when the series is complete);
    ``tags`` sets further attributes on every slice, last (keyword -> value; e.g. a wrong
    ImagesInAcquisition); ``file_names="uid"`` names the files ``<SOPInstanceUID>.dcm``, as many archives
    export them, instead of ``CT<series>_<instance>.dcm``.
    """
    stored = _stored_ct(hu, float(rescale_slope), float(rescale_intercept), unsigned)
    return _slice_series(
        stored, spacing_zyx, Path(out_dir), study,
        sop_class=CTImageStorage, modality="CT", series_number=series_number,
        series_description=series_description, origin_xyz=origin_xyz,
        row_dir=row_dir, col_dir=col_dir, slice_thickness=slice_thickness, seed=seed, prefix="CT",
        extra=dict(KVP="120", ConvolutionKernel=convolution_kernel, RescaleType="HU"), tags=tags,
        signed=not unsigned, bits=16, rescale=(float(rescale_slope), float(rescale_intercept)),
        order=order, frame_of_reference_uid=frame_of_reference_uid,
        images_in_acquisition=images_in_acquisition, file_names=file_names,
    )


def write_mr_series(
    image: np.ndarray,
    spacing_zyx: Sequence[float],
    out_dir: str | Path,
    study: StudyIdentity,
    *,
    series_description: str,
    protocol_name: str = "",
    sequence_name: str = "",
    series_number: int = 1,
    origin_xyz: Sequence[float] = (0.0, 0.0, 0.0),
    row_dir: Sequence[float] = (1.0, 0.0, 0.0),
    col_dir: Sequence[float] = (0.0, 1.0, 0.0),
    slice_thickness: float | None = None,
    scanning_sequence: str = "GR",
    seed: int | None = None,
    frame_of_reference_uid: str | None = None,
    attributes: dict[str, Any] | None = None,
) -> list[Path]:
    """Write a (z, y, x) non-negative image as a single-frame MR series (unsigned 16-bit).

    The series of one study share ``study.frame_of_reference_uid`` (one MR
    session) unless ``frame_of_reference_uid`` says otherwise.  ``attributes``
    (keyword -> value) override the sequence attributes written by default
    (SequenceVariant, EchoTime, RepetitionTime, InversionTime, ...).
    """
    image = np.asarray(image)
    if image.min() < 0 or image.max() > 65535:
        raise ValueError("MR phantom values must lie in 0..65535")
    return _slice_series(
        np.rint(image).astype(np.uint16), spacing_zyx, Path(out_dir), study,
        sop_class=MRImageStorage, modality="MR", series_number=series_number,
        series_description=series_description, origin_xyz=origin_xyz,
        row_dir=row_dir, col_dir=col_dir, slice_thickness=slice_thickness, seed=seed, prefix="MR",
        extra=dict(
            ProtocolName=protocol_name, SequenceName=sequence_name, ScanningSequence=scanning_sequence,
            SequenceVariant="NONE", ScanOptions="", MRAcquisitionType="2D", EchoTime="1.5",
            RepetitionTime="3.0", EchoTrainLength="1", MagneticFieldStrength="1.5",
        ) | dict(attributes or {}),
        signed=False, bits=16, rescale=None, frame_of_reference_uid=frame_of_reference_uid,
    )


def write_xa_cine(
    frames: np.ndarray,
    out_path: str | Path,
    study: StudyIdentity,
    *,
    series_number: int = 1,
    series_description: str = "Phantom coronary angiography",
    primary_angle: float = 0.0,
    secondary_angle: float = 0.0,
    frame_time_ms: float = 66.7,
    jpeg: bool = False,
    seed: int | None = None,
) -> Path:
    """Write a (t, h, w) uint8 cine as one multi-frame XA instance.

    ``jpeg=True`` stores it JPEG Baseline compressed (as many angiography
    systems do), using pydicom's pylibjpeg/Pillow encoders.  A uint16 cine
    (values 0..4095) is stored uncompressed as 12-bit, as on flat-panel systems.
    """
    frames = np.asarray(frames)
    if frames.ndim != 3 or frames.dtype not in (np.uint8, np.uint16):
        raise ValueError(f"expected a (t, h, w) uint8 or uint16 array, got {frames.dtype} {frames.shape}")
    bits = 8 if frames.dtype == np.uint8 else 12
    if bits == 12 and frames.size and int(frames.max()) > 4095:
        raise ValueError("uint16 XA frames must lie in 0..4095 (12 bits stored)")
    if bits == 12 and jpeg:
        raise ValueError("JPEG Baseline needs uint8 frames")
    series_uid = _uid(None if seed is None else (seed, "XA", "series", series_number))
    sop_uid = _uid(None if seed is None else (seed, "XA", "sop", series_number))
    ds = _base_dataset(study, XRayAngiographicImageStorage, sop_uid, "XA", series_uid, series_number,
                       series_description, 1)
    ds.ImageType = ["ORIGINAL", "PRIMARY", "SINGLE PLANE"]
    ds.NumberOfFrames = int(frames.shape[0])
    ds.FrameIncrementPointer = 0x00181063  # FrameTime
    ds.FrameTime = f"{frame_time_ms:.4g}"
    ds.CineRate = int(round(1000.0 / frame_time_ms))
    ds.PositionerPrimaryAngle = f"{primary_angle:.4g}"
    ds.PositionerSecondaryAngle = f"{secondary_angle:.4g}"
    ds.PositionerMotion = "STATIC"
    ds.KVP = "80"
    ds.RadiationSetting = "GR"
    ds.DistanceSourceToDetector = "1000"
    ds.DistanceSourceToPatient = "750"
    ds.ImagerPixelSpacing = ["0.2", "0.2"]
    ds.IntensifierSize = "250"
    ds.FieldOfViewShape = "RECTANGLE"
    ds.PixelIntensityRelationship = "LIN"
    ds.PatientOrientation = ["L", "F"]
    ds.XRayTubeCurrent = 500
    ds.ExposureTime = 5
    ds.Exposure = 3
    ds.LossyImageCompression = "00"
    _set_pixels_mono(ds, frames, signed=False, bits=bits)
    out_path = Path(out_path)
    if not jpeg:
        return _save(ds, out_path)
    ds.PixelData = encapsulate([_jpeg_frame(f) for f in frames])
    ds["PixelData"].VR = "OB"
    ds.LossyImageCompression = "01"
    ds.LossyImageCompressionRatio = "10"
    ds.LossyImageCompressionMethod = "ISO_10918_1"
    return _save(ds, out_path, JPEGBaseline8Bit)


def _jpeg_frame(frame: np.ndarray, quality: int = 95) -> bytes:
    """One greyscale frame as a baseline JPEG bitstream (Pillow's encoder)."""
    import io

    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(frame, mode="L").save(buf, format="JPEG", quality=quality, optimize=False, progressive=False)
    return buf.getvalue()


def _item(**attrs: object) -> Dataset:
    """A sequence item with the given attributes."""
    ds = Dataset()
    for key, value in attrs.items():
        setattr(ds, key, value)
    return ds


def _seq(**attrs: object) -> DicomSequence:
    """A one-item sequence."""
    return DicomSequence([_item(**attrs)])


def write_enhanced_ct(
    hu: np.ndarray,
    spacing_zyx: Sequence[float],
    out_path: str | Path,
    study: StudyIdentity,
    *,
    series_number: int = 1,
    series_description: str = "Phantom enhanced chest CT",
    origin_xyz: Sequence[float] = (0.0, 0.0, 0.0),
    row_dir: Sequence[float] = (1.0, 0.0, 0.0),
    col_dir: Sequence[float] = (0.0, 1.0, 0.0),
    slice_thickness: float | None = None,
    frame_order: Sequence[int] | None = None,
    rescale_slope: float = 1.0,
    rescale_intercept: float = 0.0,
    unsigned: bool = False,
    convolution_kernel: str = "STANDARD",
    frame_of_reference_uid: str | None = None,
    seed: int | None = None,
) -> Path:
    """Write a (z, y, x) HU volume as one Enhanced CT multi-frame instance.

    Geometry and rescale sit in the shared functional groups, the slice
    position and stack position in the per-frame groups; ``frame_order[i]`` is
    the z index stored as frame i+1 (so readers must sort frames by position).
    Encoding options as in :func:`write_ct_series`.
    """
    hu = np.asarray(hu)
    if hu.ndim != 3:
        raise ValueError(f"expected a (z, y, x) array, got shape {hu.shape}")
    n = int(hu.shape[0])
    order = _check_order(frame_order, n)
    stored = _stored_ct(hu, float(rescale_slope), float(rescale_intercept), unsigned)[order]
    row = np.asarray(row_dir, dtype=float)
    col = np.asarray(col_dir, dtype=float)
    normal = np.cross(row, col)
    origin = np.asarray(origin_xyz, dtype=float)
    dz, dy, dx = (float(v) for v in spacing_zyx)
    thickness = slice_thickness if slice_thickness is not None else dz
    series_uid = _uid(None if seed is None else (seed, "ECT", "series", series_number))
    sop_uid = _uid(None if seed is None else (seed, "ECT", "sop", series_number))
    ds = _base_dataset(study, EnhancedCTImageStorage, sop_uid, "CT", series_uid, series_number, series_description, 1)
    del ds.AcquisitionNumber  # frame-level in Enhanced CT (Frame Content)
    ds.FrameOfReferenceUID = frame_of_reference_uid or study.frame_of_reference_uid
    ds.PositionReferenceIndicator = ""
    acq_dt = f"{study.study_date}{study.study_time}"
    # Enhanced General Equipment, Enhanced CT Image
    ds.DeviceSerialNumber = "PHANTOM-0001"
    ds.SoftwareVersions = "cardionode-synth"
    ds.ImageType = ["ORIGINAL", "PRIMARY", "VOLUME", "NONE"]
    ds.PixelPresentation = "MONOCHROME"
    ds.VolumetricProperties = "VOLUME"
    ds.VolumeBasedCalculationTechnique = "NONE"
    ds.AcquisitionDateTime = acq_dt
    ds.AcquisitionDuration = 1.0
    ds.ContentQualification = "RESEARCH"
    ds.BurnedInAnnotation = "NO"
    ds.RecognizableVisualFeatures = "NO"
    ds.PresentationLUTShape = "IDENTITY"
    ds.LossyImageCompression = "00"
    ds.AcquisitionContextSequence = DicomSequence([])
    ds.NumberOfFrames = n
    # Multi-frame Dimension: (stack, position in stack)
    dim_uid = _uid(None if seed is None else (seed, "ECT", "dim", series_number))
    ds.DimensionOrganizationSequence = _seq(DimensionOrganizationUID=dim_uid)
    ds.DimensionIndexSequence = DicomSequence([
        _item(DimensionOrganizationUID=dim_uid, DimensionIndexPointer=0x00209056,
              FunctionalGroupPointer=0x00209111, DimensionDescriptionLabel="Stack ID"),
        _item(DimensionOrganizationUID=dim_uid, DimensionIndexPointer=0x00209057,
              FunctionalGroupPointer=0x00209111, DimensionDescriptionLabel="In-Stack Position Number"),
    ])
    centre = origin + normal * dz * (n - 1) / 2
    fov = max(dy * hu.shape[1], dx * hu.shape[2])
    shared = _item(
        PixelMeasuresSequence=_seq(PixelSpacing=[_ds_str(dy), _ds_str(dx)], SliceThickness=_ds_str(thickness)),
        PlaneOrientationSequence=_seq(ImageOrientationPatient=[_ds_str(v) for v in (*row, *col)]),
        PixelValueTransformationSequence=_seq(RescaleIntercept=f"{float(rescale_intercept):g}",
                                              RescaleSlope=f"{float(rescale_slope):g}", RescaleType="HU"),
        FrameAnatomySequence=_seq(
            AnatomicRegionSequence=_seq(CodeValue="51185008", CodingSchemeDesignator="SCT", CodeMeaning="Thorax"),
            FrameLaterality="U"),
        CTImageFrameTypeSequence=_seq(FrameType=["ORIGINAL", "PRIMARY", "VOLUME", "NONE"],
                                      PixelPresentation="MONOCHROME", VolumetricProperties="VOLUME",
                                      VolumeBasedCalculationTechnique="NONE"),
        IrradiationEventIdentificationSequence=_seq(
            IrradiationEventUID=_uid(None if seed is None else (seed, "ECT", "event", series_number))),
        CTAcquisitionTypeSequence=_seq(AcquisitionType="SPIRAL", ConstantVolumeFlag="NO", FluoroscopyFlag="NO"),
        CTAcquisitionDetailsSequence=_seq(
            DataCollectionDiameter=_ds_str(fov), GantryDetectorTilt="0", TableHeight="150", RotationDirection="CW",
            RevolutionTime=0.33, SingleCollimationWidth=0.6, TotalCollimationWidth=38.4),
        CTTableDynamicsSequence=_seq(TableSpeed=38.4 / 0.33, TableFeedPerRotation=38.4, SpiralPitchFactor=1.0),
        CTPositionSequence=_seq(TablePosition=float(centre[2]),
                                ReconstructionTargetCenterPatient=[float(v) for v in centre],
                                DataCollectionCenterPatient=[float(v) for v in centre]),
        CTGeometrySequence=_seq(DistanceSourceToDetector=1085.6, DistanceSourceToDataCollectionCenter=595.0),
        CTReconstructionSequence=_seq(
            ReconstructionAlgorithm="FILTER_BACK_PROJ", ConvolutionKernel=convolution_kernel,
            ConvolutionKernelGroup="SOFT_TISSUE", ReconstructionFieldOfView=[fov, fov],
            ReconstructionPixelSpacing=[dy, dx], ReconstructionAngle=0.0, ImageFilter="NONE"),
        CTExposureSequence=_seq(ExposureTimeInms=330.0, XRayTubeCurrentInmA=100.0, ExposureInmAs=33.0,
                                ExposureModulationType="NONE", CTDIvol=3.0,
                                CTDIPhantomTypeCodeSequence=_seq(CodeValue="113691", CodingSchemeDesignator="DCM",
                                                                 CodeMeaning="IEC Body Dosimetry Phantom")),
        CTXRayDetailsSequence=_seq(KVP="120", FocalSpots=["1.2"], FilterType="BODY", FilterMaterial=["ALUMINUM"]),
    )
    ds.SharedFunctionalGroupsSequence = DicomSequence([shared])
    ds.PerFrameFunctionalGroupsSequence = DicomSequence([
        _item(
            FrameContentSequence=_seq(
                FrameAcquisitionNumber=1, FrameReferenceDateTime=acq_dt, FrameAcquisitionDateTime=acq_dt,
                FrameAcquisitionDuration=1000.0, StackID="1", InStackPositionNumber=k + 1,
                DimensionIndexValues=[1, k + 1]),
            PlanePositionSequence=_seq(ImagePositionPatient=[_ds_str(v) for v in origin + k * dz * normal]),
        )
        for k in order
    ])
    _set_pixels_mono(ds, stored, signed=not unsigned, bits=16)
    return _save(ds, Path(out_path))
