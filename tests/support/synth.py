"""Synthetic DICOM for ingest tests and the ingest benchmark (pydicom; dcmtk for compression).

Pixel content is cheap noise-free ramps: the point is realistic sizes and
encodings (multi-frame XA cine, JPEG/JPEG-LS/RLE), not image content.  CT
series come from :func:`tests.fixtures.studies.write_ct_study` (the one CT
writer, :func:`synth.dicom.write_ct_series`).
"""
from __future__ import annotations

import subprocess
from pathlib import Path

import numpy as np
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import (
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    XRayAngiographicImageStorage,
    generate_uid,
)

__all__ = ["xa_cine", "compress", "base_dataset"]


def base_dataset(sop_class: str, study_uid: str, series_uid: str, modality: str,
                 transfer_syntax: str = ExplicitVRLittleEndian, patient_name: str = "Synthetic^Ingest",
                 patient_id: str = "INGEST-TEST") -> Dataset:
    """File Meta and the patient/study/series attributes common to the generated instances."""
    sop_uid = generate_uid()
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = sop_class
    meta.MediaStorageSOPInstanceUID = sop_uid
    meta.TransferSyntaxUID = transfer_syntax
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID = sop_class
    ds.SOPInstanceUID = sop_uid
    ds.StudyInstanceUID = study_uid
    ds.SeriesInstanceUID = series_uid
    ds.PatientName = patient_name
    ds.PatientID = patient_id
    ds.PatientBirthDate = ""
    ds.PatientSex = "O"
    ds.StudyDate = "20260101"
    ds.StudyTime = "120000"
    ds.AccessionNumber = ""
    ds.ReferringPhysicianName = ""
    ds.StudyID = "1"
    ds.Modality = modality
    ds.SeriesNumber = 1
    return ds


def _save(ds: Dataset, path: Path) -> Path:
    implicit = ds.file_meta.TransferSyntaxUID == ImplicitVRLittleEndian
    ds.save_as(path, enforce_file_format=True, implicit_vr=implicit, little_endian=True)
    return path


def xa_cine(path: Path, frames: int = 30, size: int = 256, study_uid: str | None = None) -> Path:
    """One multi-frame XA cine (8-bit, ``frames`` x ``size`` x ``size``), Explicit VR Little Endian."""
    path.parent.mkdir(parents=True, exist_ok=True)
    study_uid = study_uid or generate_uid()
    ds = base_dataset(XRayAngiographicImageStorage, study_uid, generate_uid(), "XA")
    ds.SeriesDescription = "synthetic XA cine"
    ds.InstanceNumber = 1
    ds.ImageType = ["ORIGINAL", "PRIMARY", "SINGLE PLANE"]
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.Rows = size
    ds.Columns = size
    ds.NumberOfFrames = frames
    ds.FrameIncrementPointer = 0x00181063
    ds.FrameTime = 66.7
    ds.BitsAllocated = 8
    ds.BitsStored = 8
    ds.HighBit = 7
    ds.PixelRepresentation = 0
    ds.KVP = 80
    ds.PositionerPrimaryAngle = 30
    ds.PositionerSecondaryAngle = 20
    ds.RadiationSetting = "GR"
    ds.PixelIntensityRelationship = "LIN"
    yy, xx = np.mgrid[0:size, 0:size]
    cine = np.stack([((xx + yy + 4 * f) % 256) for f in range(frames)]).astype(np.uint8)
    ds.PixelData = cine.tobytes()
    return _save(ds, path)


_DCMTK_COMPRESS = {
    "jpeg-baseline": ["dcmcjpeg", "+eb"],
    "jpeg-lossless": ["dcmcjpeg", "+e1"],  # process 14 SV1 (.70)
    "jpeg-ls": ["dcmcjpls", "+el"],
    "rle": ["dcmcrle"],
}


def compress(src: Path, dst: Path, kind: str) -> Path:
    """Compress one file with dcmtk (``kind``: jpeg-baseline, jpeg-lossless, jpeg-ls, rle)."""
    args = _DCMTK_COMPRESS[kind]
    dst.parent.mkdir(parents=True, exist_ok=True)
    r = subprocess.run([*args, str(src), str(dst)], capture_output=True, text=True, timeout=120)
    if r.returncode != 0:
        raise RuntimeError(f"{args[0]} failed on {src}: {r.stderr.strip()}")
    return dst
