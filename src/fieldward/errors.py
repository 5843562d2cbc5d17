"""The small exception tree of FieldWard (HTTPX style).

Third-party errors are mapped to these at the boundary so that callers (the CLI, the console) catch
one family and print one clear line.
"""


class FieldWardError(Exception):
    """Base class of every error FieldWard raises on purpose."""


class CaptureFormatError(FieldWardError):
    """The input is not a packet capture FieldWard can read (bad magic, corrupt file header)."""


class CaptureIOError(FieldWardError):
    """The capture cannot be opened or read (missing file, permission denied)."""


class ConfigError(FieldWardError):
    """A setting or command-line option is invalid."""
