"""Protocol dissectors: one module per protocol, registered through a registry (issue 3)."""
