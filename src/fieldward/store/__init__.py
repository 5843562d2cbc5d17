"""Persistence: SQLAlchemy models and columnar Parquet/DuckDB storage for flows and events (issue 7)."""

from fieldward.store.base import Base
from fieldward.store.vulndb import ImportReport, Mark, VulnerabilityDatabase, VulnerabilityStoreError

__all__ = ["Base", "ImportReport", "Mark", "VulnerabilityDatabase", "VulnerabilityStoreError"]
