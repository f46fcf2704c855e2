"""Write synthetic phantom arrays as DICOM studies (CT, MR, XA).

Tests, benchmarks and the bundled-model tooling turn phantoms into the same
kind of files a modality sends, so that the node and the pipelines read them
through exactly the code paths real studies take.  Only numpy and pydicom are
needed here (no torch), so tests of the base install can use it too.

The patient is always a phantom: PatientName ``PHANTOM^...`` and a
``PatientIdentityRemoved``-style comment make that obvious in any viewer.
"""
from __future__ import annotations

import dataclasses
import datetime as _dt
import random
from pathlib import Path
from typing import Sequence

import numpy as np
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.encaps import encapsulate
from pydicom.uid import (
    CTImageStorage,
    ExplicitVRLittleEndian,
    JPEGBaseline8Bit,
    MRImageStorage,
    UID,
    XRayAngiographicImageStorage,
    generate_uid,
)

__all__ = [
    "StudyIdentity",
    "new_study",
    "write_ct_series",
    "write_mr_series",
    "write_xa_cine",
]

_IMPLEMENTATION_UID = UID("1.2.826.0.1.3680043.10.1446.1")  # pydicom-derived root for CardioNode tooling
_IMPLEMENTATION_NAME = "CARDIONODE_SYN"


@dataclasses.dataclass(frozen=True)
class StudyIdentity:
    """Patient and study attributes shared by every series of one synthetic study."""

    patient_id: str
    patient_name: str
    study_instance_uid: str
    accession_number: str
    study_id: str
    study_date: str
    study_time: str
    study_description: str = "Synthetic phantom study"
    patient_birth_date: str = "19700101"
    patient_sex: str = "O"
    referring_physician_name: str = ""


def new_study(seed: int | None = None, **overrides: str) -> StudyIdentity:
    """A new phantom study identity; ``seed`` makes the UIDs reproducible."""
    rng = random.Random(seed)
    token = f"{rng.getrandbits(48):012x}"
    uid = generate_uid(entropy_srcs=[f"cardionode-study-{seed}"]) if seed is not None else generate_uid()
    now = _dt.datetime(2026, 1, 1, 12, 0, 0) if seed is not None else _dt.datetime.now()
    fields: dict[str, str] = dict(
        patient_id=f"PHANTOM-{token[:8].upper()}",
        patient_name=f"PHANTOM^{token[:6].upper()}",
        study_instance_uid=str(uid),
        accession_number=f"SYN{token[:9].upper()}",
        study_id=token[:8].upper(),
        study_date=now.strftime("%Y%m%d"),
        study_time=now.strftime("%H%M%S"),
    )
    fields.update(overrides)
    return StudyIdentity(**fields)


def _uid(seed_parts: Sequence[object] | None) -> UID:
    if seed_parts is None:
        return generate_uid()
    return generate_uid(entropy_srcs=[repr(tuple(seed_parts))])


def _base_dataset(study: StudyIdentity, sop_class: str, sop_uid: str, modality: str, series_uid: str,
                  series_number: int, series_description: str, instance_number: int) -> Dataset:
    ds = Dataset()
    ds.SOPClassUID = sop_class
    ds.SOPInstanceUID = sop_uid
    ds.SpecificCharacterSet = "ISO_IR 100"
    ds.PatientName = study.patient_name
    ds.PatientID = study.patient_id
    ds.PatientBirthDate = study.patient_birth_date
    ds.PatientSex = study.patient_sex
    ds.PatientIdentityRemoved = "YES"
    ds.DeidentificationMethod = "Synthetic phantom, no patient data"
    ds.StudyInstanceUID = study.study_instance_uid
    ds.StudyID = study.study_id
    ds.StudyDate = study.study_date
    ds.StudyTime = study.study_time
    ds.AccessionNumber = study.accession_number
    ds.ReferringPhysicianName = study.referring_physician_name
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
    meta.TransferSyntaxUID = transfer_syntax
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
    ds.ImagePositionPatient = [f"{v:.6g}" for v in position]
    ds.ImageOrientationPatient = [f"{v:.6g}" for v in (*row_dir, *col_dir)]
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
    extra: dict,
    signed: bool,
    bits: int,
    rescale: tuple[float, float] | None,
) -> list[Path]:
    if image.ndim != 3:
        raise ValueError(f"expected a (z, y, x) array, got shape {image.shape}")
    row = np.asarray(row_dir, dtype=float)
    col = np.asarray(col_dir, dtype=float)
    normal = np.cross(row, col)
    origin = np.asarray(origin_xyz, dtype=float)
    dz, dy, dx = (float(v) for v in spacing_zyx)
    series_uid = _uid(None if seed is None else (seed, prefix, "series", series_number))
    frame_uid = _uid(None if seed is None else (seed, prefix, "for", series_number))
    out_dir = Path(out_dir)
    paths = []
    for k in range(image.shape[0]):
        sop_uid = _uid(None if seed is None else (seed, prefix, "sop", series_number, k))
        ds = _base_dataset(study, sop_class, sop_uid, modality, series_uid, series_number, series_description, k + 1)
        ds.FrameOfReferenceUID = frame_uid
        ds.PositionReferenceIndicator = ""
        ds.ImageType = ["ORIGINAL", "PRIMARY", "AXIAL"] if modality == "CT" else ["ORIGINAL", "PRIMARY", "OTHER"]
        pos = origin + k * dz * normal
        _set_plane_geometry(ds, pos, row, col, (dy, dx), slice_thickness if slice_thickness is not None else dz)
        ds.SliceLocation = f"{float(np.dot(pos, normal)):.6g}"
        for key, value in extra.items():
            setattr(ds, key, value)
        if rescale is not None:
            ds.RescaleSlope, ds.RescaleIntercept = f"{rescale[0]:g}", f"{rescale[1]:g}"
        _set_pixels_mono(ds, image[k], signed=signed, bits=bits)
        paths.append(_save(ds, out_dir / f"{prefix}{series_number:03d}_{k + 1:04d}.dcm"))
    return paths


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
) -> list[Path]:
    """Write a (z, y, x) HU volume as an axial single-frame CT series.

    Pixels are stored as signed 16-bit with RescaleIntercept 0, so stored
    value == HU; slice k sits at ``origin + k * dz`` along +z (patient head).
    """
    hu = np.asarray(hu)
    if hu.min() < -32768 or hu.max() > 32767:
        raise ValueError("HU values outside the int16 range")
    return _slice_series(
        np.rint(hu).astype(np.int16), spacing_zyx, Path(out_dir), study,
        sop_class=CTImageStorage, modality="CT", series_number=series_number,
        series_description=series_description, origin_xyz=origin_xyz,
        row_dir=(1, 0, 0), col_dir=(0, 1, 0), slice_thickness=slice_thickness, seed=seed, prefix="CT",
        extra=dict(KVP="120", ConvolutionKernel=convolution_kernel, RescaleType="HU"),
        signed=True, bits=16, rescale=(1.0, 0.0),
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
) -> list[Path]:
    """Write a (z, y, x) non-negative image as a single-frame MR series (unsigned 16-bit)."""
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
        ),
        signed=False, bits=16, rescale=None,
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
    systems do), using pydicom's pylibjpeg/Pillow encoders.
    """
    frames = np.asarray(frames)
    if frames.ndim != 3 or frames.dtype != np.uint8:
        raise ValueError(f"expected a (t, h, w) uint8 array, got {frames.dtype} {frames.shape}")
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
    _set_pixels_mono(ds, frames, signed=False, bits=8)
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
