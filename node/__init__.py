"""CardioNode service: DIMSE and DICOMweb ingest, durable spool, study completion, routing, jobs, dispatch, CLI."""
