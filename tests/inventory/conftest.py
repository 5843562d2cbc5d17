"""Fixtures shared with the protocol tests: a test PKI and a real TLS 1.2 session made with it."""

from tests.protocols.test_tls import pki, tls12_flights

__all__ = ["pki", "tls12_flights"]
