"""Alembic revisions of the console's database, oldest first by ``down_revision``."""
