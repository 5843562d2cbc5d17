"""Tests of the zero-trust device plane (fieldward.trust)."""
