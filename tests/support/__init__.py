"""Shared test support: real DICOM peers (dcmtk, Orthanc, dciodvfy) and an ingest-only node runner."""
