"""Persistence: SQLAlchemy models and columnar Parquet/DuckDB storage for flows and events (issue 7)."""
