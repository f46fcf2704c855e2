"""Ingest: the DIMSE listener (C-ECHO, C-STORE) that writes into the durable spool."""
