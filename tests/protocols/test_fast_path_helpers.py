"""Engine helpers. ``_merge_tables``: fast-path tables and ``parse()`` tables of one event type, merged
by position, give exactly the rows a stable sort by position gives (as slices when runs are few, else a
gather). ``unique_ids`` gives exactly what ``np.unique(ids, return_inverse=True)`` gives. The compiled
``gather_heads`` and ``binary_array`` of the fast paths give what their numpy formulations gave."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
from hypothesis import given, settings
from hypothesis import strategies as st

from fieldward.protocols.base import binary_array, gather_heads
from fieldward.protocols.engine import MAX_MERGE_SLICES, _merge_tables, unique_ids


def _reference(parts: list[tuple[np.ndarray, pa.Table]]) -> pa.Table:
    order = np.argsort(np.concatenate([p for p, _ in parts]), kind="stable")
    return pa.concat_tables([t for _, t in parts]).take(order)


def _part(positions: list[int], tag: str) -> tuple[np.ndarray, pa.Table]:
    where = np.array(sorted(positions), dtype=np.intp)
    table = pa.table(
        {
            "position": pa.array(where.tolist(), pa.int64()),
            "tag": pa.array([f"{tag}{i}" for i in range(len(where))], pa.string()),
            "blob": pa.array([bytes([i % 256]) * (i % 5) for i in range(len(where))], pa.binary()),
        }
    )
    return where, table


@settings(max_examples=200, deadline=None)
@given(st.lists(st.lists(st.integers(0, 40), max_size=30), min_size=2, max_size=4))
def test_merge_equals_stable_sort(positions: list[list[int]]) -> None:
    parts = [_part(p, chr(ord("a") + k)) for k, p in enumerate(positions)]
    merged = _merge_tables(parts)
    assert merged.equals(_reference(parts))


def test_few_runs_are_slices_and_many_runs_a_gather() -> None:
    fast = _part(list(range(0, 100)), "f")
    parsed = _part([10, 50], "p")  # two rows in the middle of the fast path's rows: 5 runs
    merged = _merge_tables([fast, parsed])
    assert merged.equals(_reference([fast, parsed]))
    assert merged["tag"].to_pylist()[10:13] == ["f10", "p0", "f11"]  # same position: fast path first
    assert merged.column("tag").num_chunks == 5
    interleaved = [
        _part(list(range(0, 2 * MAX_MERGE_SLICES, 2)), "x"),
        _part(list(range(1, 2 * MAX_MERGE_SLICES, 2)), "y"),
    ]
    many = _merge_tables(interleaved)
    assert many.equals(_reference(interleaved))
    assert many["tag"].to_pylist()[:3] == ["x0", "y0", "x1"]


@settings(max_examples=200, deadline=None)
@given(st.lists(st.integers(0, 3000), max_size=200), st.integers(0, 10**9))
def test_unique_ids_equals_numpy_unique(ids: list[int], shift: int) -> None:
    for values in (ids, [i + shift for i in ids], [*ids, 10**12]):  # close together, shifted, sparse
        array = np.array(values, dtype=np.int64)
        flows, inverse = unique_ids(array)
        expected, expected_inverse = np.unique(array, return_inverse=True)
        assert flows.tolist() == expected.tolist()
        assert inverse.tolist() == expected_inverse.reshape(-1).tolist()
        assert flows.dtype == np.int64


def _heads_reference(buffer: np.ndarray, start: np.ndarray, length: np.ndarray, width: int) -> np.ndarray:
    """The numpy formulation gather_heads replaced (sliding windows over a zero-padded buffer)."""
    heads = np.zeros((start.shape[0], width), dtype=np.uint8)
    if start.shape[0] == 0 or buffer.shape[0] == 0 or width == 0:
        return heads
    padded = buffer
    if buffer.shape[0] < width or int(start.max()) > buffer.shape[0] - width:
        padded = np.concatenate([buffer, np.zeros(width, dtype=np.uint8)])
    windows = np.lib.stride_tricks.sliding_window_view(padded, width)
    heads[:] = windows[np.clip(start, 0, windows.shape[0] - 1)]
    heads[np.arange(width)[None, :] >= length[:, None]] = 0
    return heads


@settings(max_examples=300, deadline=None)
@given(
    st.binary(max_size=60),
    st.lists(st.tuples(st.integers(-3, 70), st.integers(-2, 40)), max_size=20),
    st.integers(0, 24),
)
def test_gather_heads_equals_the_numpy_formulation(
    data: bytes, ranges: list[tuple[int, int]], width: int
) -> None:
    buffer = np.frombuffer(data, dtype=np.uint8)
    start = np.array([s for s, _ in ranges], dtype=np.int64)
    length = np.array([n for _, n in ranges], dtype=np.int64)
    heads = gather_heads(buffer, start, length, width)
    assert heads.shape == (len(ranges), width)
    assert heads.tolist() == _heads_reference(buffer, start, length, width).tolist()


def test_binary_array_copies_each_range() -> None:
    buffer = np.frombuffer(bytes(range(50)), dtype=np.uint8)
    array = binary_array(
        buffer, np.array([5, 0, 40, 49], dtype=np.int64), np.array([3, 0, 10, 1], dtype=np.int64)
    )
    assert array.to_pylist() == [bytes([5, 6, 7]), b"", bytes(range(40, 50)), bytes([49])]
    assert binary_array(buffer, np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64)).to_pylist() == []
