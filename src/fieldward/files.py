"""Small file helpers every layer may use (a base module, like ``errors`` and ``weird``)."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

__all__ = ["atomic_write"]


def atomic_write(path: Path, data: bytes, *, mode: int | None = None, prefix: str = ".tmp-") -> None:
    """Replace ``path`` with a file holding ``data``, atomically: readers see the old file or the new
    one, never a part. The bytes go to a temporary file in the same folder (``prefix`` names it),
    which ``os.replace`` then moves over ``path``; on any failure the temporary file is removed and
    ``path`` is untouched. ``mode`` sets the file's permissions before anything is written (default:
    ``mkstemp``'s 0600). ``OSError`` propagates.
    """
    fd, temporary = tempfile.mkstemp(dir=path.parent, prefix=prefix)
    try:
        if mode is not None:
            os.fchmod(fd, mode)
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
