"""The Alembic history of the console's database (``env.py``, ``versions/``), shipped with the package."""
