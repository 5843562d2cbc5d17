"""Property tests: on any bytes, the reader raises CaptureFormatError or yields well-formed batches, and
it always terminates (a watchdog thread catches a hang, which a deadline alone could not).
"""

from __future__ import annotations

import gzip
import itertools
import threading
from datetime import timedelta
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fieldward.capture.reader import open_capture
from fieldward.errors import CaptureFormatError
from tests.capture.test_pcap import (
    check_batches,
    expected_packets,
    packets,
    pcap_file,
    pcap_header,
    record_offsets,
    synthetic_records,
)
from tests.capture.test_pcapng import T0, block_offsets, epb, frame, idb, pb, shb, spb

HANG_SECONDS = 30
_names = itertools.count()


def valid_captures() -> list[bytes]:
    records = synthetic_records(12)
    ng = shb() + idb(1, 128) + idb(101, tsresol=9)
    ng += b"".join(epb(i % 2, (T0 + i) * 10**6, frame(i, 40 + i)) for i in range(8))
    ng += spb(frame(8)) + pb(0, T0 * 10**6, frame(9))
    ng += shb(big=True) + idb(113, big=True) + epb(0, T0 * 10**6, frame(10), big=True)
    return [
        pcap_file(records),
        pcap_file(records, big=True, nano=True),
        ng,
        gzip.compress(pcap_file(records[:6])),
    ]


VALID = valid_captures()


@pytest.fixture(scope="module")
def scratch(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("fuzz")
    for i, data in enumerate(VALID):  # compile the kernels before the deadlines start
        (path / f"warm{i}").write_bytes(data)
        with open_capture(path / f"warm{i}") as reader:
            list(reader)
    return path


def exercise(scratch: Path, data: bytes, batch_packets: int, batch_bytes: int) -> None:
    """Read ``data`` in a watchdog thread; check what comes out."""
    path = scratch / f"case{next(_names)}"
    path.write_bytes(data)
    failure: list[BaseException] = []

    def run() -> None:
        try:
            try:
                reader = open_capture(path, batch_packets=batch_packets, batch_bytes=batch_bytes)
            except CaptureFormatError as exc:
                message = str(exc)
                assert "\n" not in message
                return
            with reader:
                batches = list(reader)
                check_batches(batches, str(path))
                assert all(len(b) <= batch_packets for b in batches)
                assert reader.packets_read == sum(len(b) for b in batches)
                assert reader.position <= reader.size == len(data)
                assert all(s.layer == "capture" for s in reader.weird.samples)
                assert all(name.startswith(("pcap_", "pcapng_")) for name in reader.weird.counts)
        except BaseException as exc:
            failure.append(exc)

    worker = threading.Thread(target=run, daemon=True)
    worker.start()
    worker.join(HANG_SECONDS)
    assert not worker.is_alive(), f"reader hung on {len(data)} bytes"
    path.unlink()
    if failure:
        raise failure[0]


FUZZ = settings(
    max_examples=250,
    deadline=timedelta(seconds=5),
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
batch_packets = st.sampled_from([1, 3, 64, 65536])
batch_bytes = st.sampled_from([1, 13, 100, 4096, 16 << 20])


@FUZZ
@given(data=st.binary(max_size=3000), bp=batch_packets, bb=batch_bytes)
def test_any_bytes(scratch: Path, data: bytes, bp: int, bb: int) -> None:
    exercise(scratch, data, bp, bb)


magics = st.sampled_from(
    [pcap_header(), pcap_header(big=True), pcap_header(nano=True), pcap_header(big=True, nano=True), shb()]
)


@FUZZ
@given(head=magics, body=st.binary(max_size=3000), bp=batch_packets, bb=batch_bytes)
def test_any_bytes_after_a_valid_header(scratch: Path, head: bytes, body: bytes, bp: int, bb: int) -> None:
    exercise(scratch, head + body, bp, bb)


mutation = st.one_of(
    st.tuples(st.just("flip"), st.integers(0, 1 << 20), st.integers(1, 255)),
    st.tuples(st.just("truncate"), st.integers(0, 1 << 20), st.just(0)),
    st.tuples(st.just("insert"), st.integers(0, 1 << 20), st.binary(min_size=1, max_size=40)),
    st.tuples(st.just("delete"), st.integers(0, 1 << 20), st.integers(1, 40)),
)


def mutate(data: bytes, mutations: list[tuple[str, int, object]]) -> bytes:
    out = bytearray(data)
    for kind, where, arg in mutations:
        if not out:
            break
        at = where % len(out)
        if kind == "flip":
            assert isinstance(arg, int)
            out[at] ^= arg
        elif kind == "truncate":
            del out[at:]
        elif kind == "insert":
            assert isinstance(arg, bytes)
            out[at:at] = arg
        else:
            assert isinstance(arg, int)
            del out[at : at + arg]
    return bytes(out)


@FUZZ
@given(
    base=st.sampled_from(range(len(VALID))),
    mutations=st.lists(mutation, min_size=1, max_size=6),
    bp=batch_packets,
    bb=batch_bytes,
)
def test_mutated_valid_captures(
    scratch: Path, base: int, mutations: list[tuple[str, int, object]], bp: int, bb: int
) -> None:
    exercise(scratch, mutate(VALID[base], mutations), bp, bb)


RECORDS = synthetic_records(30)
PCAP = pcap_file(RECORDS)
PCAP_ENDS = [*record_offsets(PCAP)[1:], len(PCAP)]
PCAPNG = shb() + idb(1) + b"".join(epb(0, T0 * 10**6 + i, frame(i, 30 + i)) for i in range(30))
PCAPNG_ENDS = [*block_offsets(PCAPNG)[3:], len(PCAPNG)]


@FUZZ
@given(ng=st.booleans(), change=mutation, bb=batch_bytes)
def test_damage_leaves_earlier_packets_intact(
    scratch: Path, ng: bool, change: tuple[str, int, object], bb: int
) -> None:
    """Whatever one change does to a capture, the packets recorded entirely before it come out intact."""
    data, ends = (PCAPNG, PCAPNG_ENDS) if ng else (PCAP, PCAP_ENDS)
    damaged = mutate(data, [change])
    at = change[1] % len(data)
    intact = sum(1 for end in ends if end <= at)
    path = scratch / f"damaged{next(_names)}"
    path.write_bytes(damaged)
    try:
        with open_capture(path, batch_bytes=bb) as reader:
            got = packets(list(reader))
    except CaptureFormatError:
        assert at < (28 if ng else 24)  # only a damaged file header is an error
        return
    if ng:
        assert [p[1] for p in got[:intact]] == [frame(i, 30 + i) for i in range(intact)]
    else:
        assert got[:intact] == expected_packets(RECORDS)[:intact]


def test_valid_captures_read_cleanly(scratch: Path) -> None:
    """The seeds of the mutations are themselves clean."""
    for i, data in enumerate(VALID):
        path = scratch / f"valid{i}"
        path.write_bytes(data)
        with open_capture(path) as reader:
            assert sum(len(b) for b in reader) > 0
            assert reader.weird.total == 0, reader.weird.counts
