"""The console: FastAPI REST API, web UI and exports (issue 7)."""
