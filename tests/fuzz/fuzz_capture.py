"""Coverage-guided fuzzing of the capture readers with atheris (not collected by pytest).

    pip install atheris
    python tests/fuzz/fuzz_capture.py -max_total_time=600 [corpus_dir]

Each input is written to a file and read with small, input-chosen batch sizes; the harness fails on
any exception other than CaptureFormatError and on a batch whose offsets leave its buffer. A hang
shows up as libFuzzer's timeout (-timeout=N). Seed it with files from ../shared/corpus.
"""

from __future__ import annotations

import os
import sys
import tempfile

import numpy as np

try:
    import atheris
except ImportError:  # pragma: no cover - only for running the harness
    atheris = None

if atheris is not None:
    with atheris.instrument_imports():
        from fieldward.capture.reader import open_capture
        from fieldward.errors import CaptureFormatError
else:
    from fieldward.capture.reader import open_capture
    from fieldward.errors import CaptureFormatError

_FD, _PATH = tempfile.mkstemp(prefix="fieldward-fuzz-")
os.close(_FD)
BATCH_PACKETS = (1, 3, 64, 65536)
BATCH_BYTES = (1, 13, 100, 4096, 16 << 20)


def one_input(data: bytes) -> None:
    """Read ``data`` as a capture file; raise AssertionError on a broken promise."""
    if not data:
        return
    knob, body = data[0], data[1:]
    with open(_PATH, "wb") as f:
        f.write(body)
    try:
        reader = open_capture(
            _PATH,
            batch_packets=BATCH_PACKETS[knob % len(BATCH_PACKETS)],
            batch_bytes=BATCH_BYTES[(knob >> 2) % len(BATCH_BYTES)],
        )
    except CaptureFormatError:
        return
    with reader:
        first = 0
        for batch in reader:
            assert batch.first_index == first
            assert (batch.offsets >= 0).all()
            assert (batch.offsets + batch.caplen.astype(np.int64) <= batch.buffer.shape[0]).all()
            first += len(batch)
        assert reader.packets_read == first


def main() -> None:
    if atheris is None:
        sys.exit("atheris is not installed: pip install atheris")
    atheris.Setup(sys.argv, one_input)
    try:
        atheris.Fuzz()
    finally:
        os.unlink(_PATH)


if __name__ == "__main__":
    main()
