"""The byte lookup tables of the S7comm fast path give the texts of the per-PDU helpers."""

from __future__ import annotations

import numpy as np
import pyarrow as pa

from fieldward.protocols.s7comm import (
    _AREA_NAMES,
    _ERROR_CLASS_NAMES,
    _HEX8_ARRAY,
    _RETURN_CODE_NAMES,
    _TRANSPORT_SIZE_NAMES,
    AREAS,
    ITEM_TRANSPORT_SIZES,
    RETURN_CODES,
    _error_class_name,
    _hex8,
    _hex8_array,
    _Item,
    _texts,
    _variable_columns,
)


def test_lookup_tables_hold_the_per_pdu_texts() -> None:
    for value in range(256):
        assert _HEX8_ARRAY[value].as_py() == _hex8(value)
        assert _TRANSPORT_SIZE_NAMES[value].as_py() == ITEM_TRANSPORT_SIZES.get(value)
        assert _AREA_NAMES[value].as_py() == AREAS.get(value)
        assert _RETURN_CODE_NAMES[value].as_py() == RETURN_CODES.get(value, "Unknown")
        assert _ERROR_CLASS_NAMES[value].as_py() == _error_class_name(value)


def test_texts_keep_nulls_and_fall_back_outside_a_byte() -> None:
    values = pa.array([0x10, None, 0xFF, 0], pa.int64())
    assert _hex8_array(values).to_pylist() == ["0x10", None, "0xff", "0x00"]
    wide = pa.array([0x1FF, None, 7, -1], pa.int64())
    assert _hex8_array(wide).to_pylist() == [_hex8(0x1FF), None, "0x07", _hex8(-1)]
    assert _texts(_AREA_NAMES, wide, AREAS.get).to_pylist() == [None, None, AREAS.get(7), None]
    assert _hex8_array(pa.array([], pa.int64())).to_pylist() == []


def test_variable_columns_of_a_job_and_an_answer_without_its_job() -> None:
    job = [_Item(0x10, 0x02, 4, 1, 0x84, 0x50), _Item(0x10, 0x01, 1, 0, 0x1C, 9)]  # DB, then a counter
    matched = {0: job, 1: []}  # row 1: an ACK-Data whose job was not seen
    codes = np.array([[0xFF, 0x0A]], dtype=np.int64)
    sizes = np.array([[0x04, 0x03]], dtype=np.int64)
    value_bytes = np.array([[4, 1]], dtype=np.int64)
    result = _variable_columns(
        np.array([0, 1]),
        np.array([2, 2], dtype=np.int64),
        np.array([False, True]),
        np.array([7, 7], dtype=np.int64),
        matched,
        np.array([-1, 0], dtype=np.int64),
        codes,
        sizes,
        value_bytes,
    )
    columns = {name: pa.array(column).to_pylist() for name, column in result.columns.items()}
    assert result.rows.tolist() == [0, 0, 1, 1]
    assert columns["item_number"] == [1, 2, 1, 2]
    assert columns["syntax_id"] == ["0x10", "0x10", None, None]
    assert columns["area"] == ["0x84", "0x1c", None, None]
    assert columns["area_name"] == [AREAS[0x84], AREAS[0x1C], None, None]
    assert columns["byte_address"] == [0x50 >> 3, None, None, None]  # a counter has no byte.bit address
    assert columns["bit_address"] == [0x50 & 7, None, None, None]
    assert columns["return_code"] == [None, None, "0xff", "0x0a"]
    assert columns["return_code_name"] == [None, None, RETURN_CODES[0xFF], RETURN_CODES.get(0x0A, "Unknown")]
    assert columns["data_transport_size"] == [None, None, "0x04", "0x03"]
    assert columns["data_length"] == [None, None, 4, 1]
