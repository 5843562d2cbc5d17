"""Vulnerabilities, insecure configurations and risk scoring (issue 6)."""
