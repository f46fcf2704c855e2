"""Small synthetic DICOM studies for tests and benchmarks (no patient data anywhere).

``write_ct_series`` / ``write_mr_series`` write classic single-frame images, ``write_enhanced_ct``
one Enhanced CT multi-frame instance, ``write_xa`` one XA cine.  All share the study of a
:class:`SyntheticStudy` so they can be combined into a :class:`pipelines.base.StudyView`.
"""
from __future__ import annotations

import dataclasses
import datetime
from pathlib import Path
from typing import Sequence

import numpy as np
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.sequence import Sequence as DicomSequence
from pydicom.uid import (
    CTImageStorage,
    EnhancedCTImageStorage,
    ExplicitVRLittleEndian,
    MRImageStorage,
    XRayAngiographicImageStorage,
    generate_uid,
)

__all__ = ["SyntheticStudy", "write_ct_series", "write_mr_series", "write_enhanced_ct", "write_xa"]

AXIAL = (1.0, 0.0, 0.0, 0.0, 1.0, 0.0)


@dataclasses.dataclass
class SyntheticStudy:
    """Patient/study identity shared by every synthetic series (Type 2 fields left out on purpose
    when ``sparse``: real archives often lack AccessionNumber, StudyID, birth date)."""

    study_instance_uid: str = dataclasses.field(default_factory=lambda: str(generate_uid()))
    frame_of_reference_uid: str = dataclasses.field(default_factory=lambda: str(generate_uid()))
    patient_id: str = "PHANTOM-001"
    patient_name: str = "Phantom^Synthetic"
    sparse: bool = True


def _base(study: SyntheticStudy, sop_class: str, modality: str, series_uid: str, series_number: int,
          description: str, instance_number: int) -> Dataset:
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.MediaStorageSOPClassUID = sop_class
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.SOPClassUID = sop_class
    ds.SOPInstanceUID = generate_uid()
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    ds.StudyInstanceUID = study.study_instance_uid
    ds.SeriesInstanceUID = series_uid
    ds.FrameOfReferenceUID = study.frame_of_reference_uid
    ds.PositionReferenceIndicator = ""
    ds.Modality = modality
    ds.SeriesNumber = series_number
    ds.InstanceNumber = instance_number
    ds.SeriesDescription = description
    ds.PatientName = study.patient_name
    ds.PatientID = study.patient_id
    today = datetime.date(2024, 1, 2).strftime("%Y%m%d")
    ds.StudyDate = ds.SeriesDate = ds.ContentDate = today
    ds.StudyTime = ds.SeriesTime = ds.ContentTime = "101010"
    ds.Manufacturer = "Synthetic"
    if not study.sparse:
        ds.PatientBirthDate = "19700101"
        ds.PatientSex = "O"
        ds.AccessionNumber = "ACC1"
        ds.StudyID = "1"
        ds.ReferringPhysicianName = ""
    return ds


def _pixels(ds: Dataset, arr: np.ndarray, signed: bool) -> None:
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.BitsAllocated = 16 if arr.dtype.itemsize == 2 else 8
    ds.BitsStored = ds.BitsAllocated
    ds.HighBit = ds.BitsStored - 1
    ds.PixelRepresentation = 1 if signed else 0
    ds.Rows, ds.Columns = arr.shape[-2:]
    ds.PixelData = np.ascontiguousarray(arr).tobytes()


def _single_frame_series(
    out_dir: Path, stored: np.ndarray, study: SyntheticStudy, *, sop_class: str, modality: str,
    spacing: tuple[float, float, float], origin: Sequence[float], orientation: Sequence[float],
    series_number: int, description: str, slope: float, intercept: float, order: Sequence[int] | None,
    extra: dict | None,
) -> list[Path]:
    out_dir.mkdir(parents=True, exist_ok=True)
    series_uid = str(generate_uid())
    o = np.asarray(orientation, dtype=float)
    normal = np.cross(o[:3], o[3:])
    paths = []
    n = stored.shape[0]
    write_order = list(order) if order is not None else list(range(n))
    for file_idx, k in enumerate(write_order):
        ds = _base(study, sop_class, modality, series_uid, series_number, description, file_idx + 1)
        ds.ImageType = ["ORIGINAL", "PRIMARY", "AXIAL"]
        pos = np.asarray(origin, dtype=float) + k * spacing[0] * normal
        ds.ImagePositionPatient = [round(float(v), 4) for v in pos]
        ds.ImageOrientationPatient = [float(v) for v in orientation]
        ds.PixelSpacing = [spacing[1], spacing[2]]
        ds.SliceThickness = spacing[0] * 2  # deliberately not the spacing: loaders must use positions
        if modality == "CT":
            ds.RescaleSlope = slope
            ds.RescaleIntercept = intercept
            ds.RescaleType = "HU"
            ds.KVP = 120
        ds.PatientPosition = "HFS"
        for key, val in (extra or {}).items():
            setattr(ds, key, val)
        _pixels(ds, stored[k], signed=stored.dtype.kind == "i")
        p = out_dir / f"{modality.lower()}_{file_idx:04d}.dcm"
        ds.save_as(p, enforce_file_format=True)
        paths.append(p)
    return paths


def write_ct_series(
    out_dir: Path, hu: np.ndarray, study: SyntheticStudy, *, spacing=(2.5, 0.7, 0.7), origin=(-22.0, -22.0, 100.0),
    orientation=AXIAL, series_number: int = 2, description: str = "CT calcium score 3.0",
    slope: float = 1.0, intercept: float = -1024.0, order: Sequence[int] | None = None,
) -> list[Path]:
    """Write ``hu`` (z, y, x) as CT slices (stored = (HU - intercept) / slope, uint16); ``order``
    permutes the file order (instance numbers follow it, positions follow z)."""
    stored = np.rint((hu.astype(np.float64) - intercept) / slope).astype(np.uint16)
    return _single_frame_series(out_dir, stored, study, sop_class=CTImageStorage, modality="CT", spacing=spacing,
                                origin=origin, orientation=orientation, series_number=series_number,
                                description=description, slope=slope, intercept=intercept, order=order, extra=None)


def write_mr_series(
    out_dir: Path, values: np.ndarray, study: SyntheticStudy, *, spacing=(8.0, 1.5, 1.5), origin=(-40.0, -40.0, 0.0),
    orientation=AXIAL, series_number: int = 5, description: str = "LGE PSIR SAX", sequence_name: str = "*tfl2d1",
    protocol_name: str | None = None,
) -> list[Path]:
    stored = np.clip(np.rint(values), 0, 65535).astype(np.uint16)
    extra = {"SequenceName": sequence_name, "ProtocolName": protocol_name or description,
             "ScanningSequence": "GR", "SequenceVariant": "SP", "MagneticFieldStrength": 1.5,
             "ImagingFrequency": 63.6, "EchoTrainLength": 1, "ScanOptions": ""}
    return _single_frame_series(out_dir, stored, study, sop_class=MRImageStorage, modality="MR", spacing=spacing,
                                origin=origin, orientation=orientation, series_number=series_number,
                                description=description, slope=1.0, intercept=0.0, order=None, extra=extra)


def write_enhanced_ct(
    path: Path, hu: np.ndarray, study: SyntheticStudy, *, spacing=(2.5, 0.7, 0.7), origin=(-22.0, -22.0, 100.0),
    series_number: int = 3, description: str = "Enhanced CT", frame_order: Sequence[int] | None = None,
    slope: float = 1.0, intercept: float = -1024.0,
) -> Path:
    """One Enhanced CT instance; ``frame_order[i]`` is the z index stored as frame i+1."""
    path.parent.mkdir(parents=True, exist_ok=True)
    n = hu.shape[0]
    order = list(frame_order) if frame_order is not None else list(range(n))
    ds = _base(study, EnhancedCTImageStorage, "CT", str(generate_uid()), series_number, description, 1)
    ds.ImageType = ["ORIGINAL", "PRIMARY", "AXIAL", "NONE"]
    ds.NumberOfFrames = n
    ds.ContentQualification = "PRODUCT"
    ds.AcquisitionDateTime = "20240102101010"
    ds.BurnedInAnnotation = "NO"
    ds.PresentationLUTShape = "IDENTITY"
    ds.LossyImageCompression = "00"
    shared = Dataset()
    pm = Dataset()
    pm.PixelSpacing = [spacing[1], spacing[2]]
    pm.SliceThickness = spacing[0]
    shared.PixelMeasuresSequence = DicomSequence([pm])
    po = Dataset()
    po.ImageOrientationPatient = list(AXIAL)
    shared.PlaneOrientationSequence = DicomSequence([po])
    pvt = Dataset()
    pvt.RescaleSlope = slope
    pvt.RescaleIntercept = intercept
    pvt.RescaleType = "HU"
    shared.PixelValueTransformationSequence = DicomSequence([pvt])
    ds.SharedFunctionalGroupsSequence = DicomSequence([shared])
    per_frame = []
    for k in order:
        item = Dataset()
        pp = Dataset()
        pp.ImagePositionPatient = [float(origin[0]), float(origin[1]), float(origin[2] + k * spacing[0])]
        item.PlanePositionSequence = DicomSequence([pp])
        fc = Dataset()
        fc.StackID = "1"
        fc.InStackPositionNumber = k + 1
        item.FrameContentSequence = DicomSequence([fc])
        per_frame.append(item)
    ds.PerFrameFunctionalGroupsSequence = DicomSequence(per_frame)
    stored = np.rint((hu[order].astype(np.float64) - intercept) / slope).astype(np.uint16)
    _pixels(ds, stored, signed=False)
    ds.save_as(path, enforce_file_format=True)
    return path


def write_xa(path: Path, frames: np.ndarray, study: SyntheticStudy, *, series_number: int = 1,
             description: str = "LCA RAO caudal", frame_time_ms: float = 66.7) -> Path:
    """One XA instance with ``frames`` (T, H, W) uint8 or uint16, uncompressed."""
    path.parent.mkdir(parents=True, exist_ok=True)
    ds = _base(study, XRayAngiographicImageStorage, "XA", str(generate_uid()), series_number, description, 1)
    ds.ImageType = ["ORIGINAL", "PRIMARY", "SINGLE PLANE"]
    ds.NumberOfFrames = frames.shape[0]
    ds.FrameIncrementPointer = (0x0018, 0x1063)
    ds.FrameTime = frame_time_ms
    ds.CineRate = int(round(1000 / frame_time_ms))
    ds.PositionerPrimaryAngle = -30
    ds.PositionerSecondaryAngle = -20
    ds.RadiationSetting = "GR"
    ds.KVP = 80
    ds.PixelIntensityRelationship = "LIN"
    ds.LossyImageCompression = "00"
    _pixels(ds, frames, signed=False)
    if frames.dtype == np.uint16:
        ds.BitsStored = 12
        ds.HighBit = 11
    ds.save_as(path, enforce_file_format=True)
    return path
