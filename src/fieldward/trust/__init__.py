"""The zero-trust device plane: CA, enrollment, attestation, policy, signed updates (issue 8)."""
