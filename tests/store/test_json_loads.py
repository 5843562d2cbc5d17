"""``fieldward.store.database.json_loads``: orjson's speed with ``json``'s values."""

from __future__ import annotations

import json
import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from fieldward.store.database import json_loads

CASES = [
    '{"vendor": 0.9, "facts": [1, 2.5, "x"]}',
    "18446744073709551615",  # 2**64 - 1: orjson reads it as an int
    "18446744073709551616",  # 2**64: orjson would read a float
    '{"a": -9223372036854775809}',
    "[123456789012345678901234567890, 1.5e300]",
    '{"serial": "123456789012345678901234567890"}',  # digits in a string: json, same value
    '{"x": 1.00000000000000000000001}',  # a long fraction is a float either way
    "[NaN, Infinity]",  # orjson refuses: json
    '"\\ud800"',  # a lone surrogate: json
]


@pytest.mark.parametrize("text", CASES)
def test_same_values_as_json(text: str) -> None:
    for given_text in (text, text.encode()):
        got, expected = json_loads(given_text), json.loads(text)
        assert repr(got) == repr(expected)  # repr: nan == nan, and int vs float told apart


def test_big_integers_stay_integers() -> None:
    assert json_loads(str(2**70)) == 2**70
    assert type(json_loads(str(2**70))) is int


def test_not_text_is_a_type_error_as_in_json() -> None:
    """SQLAlchemy's SQLite JSON type hands over a number SQLite stored as one and expects this."""
    for value in (0, 1.5, None):
        with pytest.raises(TypeError):
            json_loads(value)  # type: ignore[arg-type]


def test_errors_are_value_errors() -> None:
    for bad in ("{", b"\xff\xfe", "[1,]", ""):
        with pytest.raises(ValueError):  # noqa: PT011 - json's errors: JSONDecodeError or UnicodeDecodeError
            json_loads(bad)


@given(
    st.recursive(
        st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(),
        lambda children: st.lists(children) | st.dictionaries(st.text(), children),
        max_leaves=20,
    )
)
def test_any_document_reads_as_json_reads_it(value: object) -> None:
    text = json.dumps(value)
    got = json_loads(text)
    assert got == json.loads(text)
    assert not isinstance(got, float) or not math.isnan(got)
