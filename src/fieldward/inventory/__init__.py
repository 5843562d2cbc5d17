"""Device inventory: devices built from protocol evidence, fingerprint data files (issue 4)."""
