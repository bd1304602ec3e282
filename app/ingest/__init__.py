"""Pilot-set ingest: safe archive extraction, NIfTI checks and PHI stripping, layout detection."""

from app.ingest.errors import IngestError, Problem

__all__ = ["IngestError", "Problem"]
