"""The console's own tables (they live in :mod:`fieldward.store.console_models`, with every table of
the store's single migration history); re-exported here for the console's code."""

from __future__ import annotations

from fieldward.store.console_models import IngestBatch, UploadJobRow

__all__ = ["IngestBatch", "UploadJobRow"]
