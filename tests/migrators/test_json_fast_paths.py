"""The backfill's fast JSON paths give what the standard library and json_util give:
``to_json`` (Extended JSON without the text in between), the diagram parser (orjson,
the standard library where orjson would differ) and the text staged for jsonb."""

from __future__ import annotations

import json
import math
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

from bson import Binary, Decimal128, Int64, ObjectId, Regex, json_util
from hypothesis import given, settings
from hypothesis import strategies as st

import migrators.entities.tree_fields as fields
from migrators.entities.common import _JSON_OPTIONS, to_json
from migrators.entities.tree_fields import contains_nul, parse_diagram
from strangler.jsonfast import JsonText, checked_json, dumps_json, encoded_json, jsonb_text


def _extended_json(value: Any) -> Any:
    """What to_json stood for before its fast path: a round trip through the text."""
    return json.loads(json_util.dumps(value, json_options=_JSON_OPTIONS))


def _same(a: Any, b: Any) -> bool:
    return repr(a) == repr(b)  # NaN, -0.0 and lone surrogates compare by how they print


_bson_scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(2**70), 2**70),
    st.floats(),
    st.text(max_size=5),
    st.datetimes(min_value=datetime(1, 1, 1), max_value=datetime(9999, 12, 31)),
    st.datetimes(timezones=st.sampled_from([UTC, timezone(timedelta(hours=-5))])),
    st.binary(min_size=12, max_size=12).map(ObjectId),
    st.integers(-5, 5).map(Int64),
    st.sampled_from([Decimal128("1.5"), Binary(b"x"), Regex("a.c", "i")]),
)
_bson_values = st.recursive(
    _bson_scalars,
    lambda inner: st.one_of(
        st.lists(inner, max_size=3),
        st.lists(inner, max_size=2).map(tuple),
        st.dictionaries(st.one_of(st.text(max_size=3), st.just("$date")), inner, max_size=3),
        st.dictionaries(st.integers(0, 3), inner, max_size=2),
    ),
    max_leaves=10,
)


@settings(max_examples=400, deadline=None)
@given(_bson_values)
def test_to_json_is_the_extended_json_round_trip(value: Any) -> None:
    try:
        expected: Any = _extended_json(value)
    except Exception as exc:
        expected = type(exc)
    try:
        got: Any = to_json(value)
    except Exception as exc:
        got = type(exc)
    assert _same(got, expected)


def test_to_json_keeps_dates_and_object_ids_as_extended_json() -> None:
    oid = ObjectId("65a1b2c3d4e5f60718293a4b")
    snapshot = {"at": datetime(2024, 5, 6, 7, 8, 9, 123000), "by": oid, "n": [1, 2.5, None]}
    assert to_json(snapshot) == {
        "at": {"$date": "2024-05-06T07:08:09.123Z"},
        "by": {"$oid": "65a1b2c3d4e5f60718293a4b"},
        "n": [1, 2.5, None],
    }


# JSON texts with what orjson and the standard library read differently: integers past
# 64 bits, numbers out of range, lone surrogate escapes, NaN, deep nesting, bad syntax.
_json_atoms = st.one_of(
    st.integers(-(2**80), 2**80).map(str),
    st.floats(allow_nan=False, allow_infinity=False).map(repr),
    st.sampled_from(["1e400", "-1e999", "NaN", "Infinity", "0.1e1", "-0", "1E2", "true", "null"]),
    st.text(max_size=4).map(json.dumps),
    st.sampled_from(['"\\ud800"', '"\\u0000"', '"\\udc00x"', '"\\ud83d\\ude00"', '"é"']),
)
_json_texts = st.recursive(
    _json_atoms,
    lambda inner: st.one_of(
        st.lists(inner, max_size=3).map(lambda items: "[" + ",".join(items) + "]"),
        st.lists(st.tuples(st.text(alphabet="ab", max_size=2), inner), max_size=3).map(
            lambda pairs: "{" + ",".join(f"{json.dumps(k)}: {v}" for k, v in pairs) + "}"
        ),
    ),
    max_leaves=8,
) | st.sampled_from(["", "  ", "{", "[1,]", "{'a': 1}", "[" * 1200 + "]" * 1200, "\ufeff{}"])


def _stdlib_diagram(text: str) -> tuple[Any, Any]:
    """parse_diagram's answer with the standard library alone reading the text."""
    original = fields.checked_json
    try:
        fields.checked_json = lambda _text: None  # type: ignore[assignment]
        return parse_diagram(text)
    finally:
        fields.checked_json = original  # type: ignore[assignment]


def _value(parsed: Any) -> Any:
    return parsed.value() if isinstance(parsed, JsonText) else parsed


@settings(max_examples=400, deadline=None)
@given(_json_texts)
def test_the_diagram_check_keeps_what_the_standard_library_would_parse(text: str) -> None:
    (fast, fast_note), (slow, slow_note) = parse_diagram(text), _stdlib_diagram(text)
    assert _same(_value(fast), slow)
    assert _same(fast_note, slow_note)


def test_a_valid_diagram_is_kept_as_its_text_for_postgresql_to_parse() -> None:
    text = '{"nodes": [{"id": "n1", "x": 1.10}], "edges": []}'
    value, note = parse_diagram(text)
    assert note is None and value == JsonText(text) and jsonb_text(value) == text


def test_an_integer_past_64_bits_stays_whole() -> None:
    value, note = parse_diagram('{"id": 123456789012345678901234567890}')
    assert note is None and _value(value) == {"id": 123456789012345678901234567890}


def test_what_jsonb_refuses_or_reads_otherwise_is_not_passed_as_text() -> None:
    for text in ('{"a": "\\u0000"}', '"\\ud800"', '[1e400]', "\ufeff{}", "[" * 1100 + "]" * 1100,
                 '{"s": "\ud800"}', "[18446744073709551616]"):  # fmt: skip
        assert checked_json(text) is None, text
    assert checked_json('{"a": "\\\\u0000"}') is None  # an escaped backslash: read slowly
    assert _value(parse_diagram('{"a": "\\\\u0000"}')[0]) == {"a": "\\u0000"}


_plain = st.recursive(
    st.one_of(
        st.none(),
        st.booleans(),
        st.integers(-(2**63), 2**63 - 1),
        st.floats(allow_nan=False, allow_infinity=False),
        st.text(max_size=5),
    ),
    lambda inner: st.one_of(
        st.lists(inner, max_size=3), st.dictionaries(st.text(max_size=3), inner, max_size=3)
    ),
    max_leaves=10,
)


@settings(max_examples=300, deadline=None)
@given(_plain)
def test_jsonb_text_reads_back_as_the_value(value: Any) -> None:
    assert _same(json.loads(jsonb_text(value)), value)
    assert _same(json.loads(dumps_json(value)), value)


def test_values_orjson_refuses_are_written_as_json_dumps_writes_them() -> None:
    for value in ({1: "a"}, [2**64], {"s": "\ud800"}, (1, 2), {"i": Int64(3)}):
        assert jsonb_text(value) == json.dumps(value, separators=(",", ":"))
    assert math.isnan(json.loads(json.dumps(float("nan"))))  # the one accepted difference:
    assert jsonb_text([float("nan")]) == "[null]"  # documented in strangler.jsonfast


def test_a_nul_anywhere_in_a_row_is_found() -> None:
    assert contains_nul([{"a": "x", "b": {"deep": ["ok", "bad\x00"]}}]) == "b"
    assert contains_nul([{"a": "x\x00"}]) == "a"
    assert contains_nul([{"a": {"k": "\\u0000 as text is fine"}}]) is None
    assert contains_nul([{"a": {"k": "\\\x00"}}]) == "a"  # a backslash, then a NUL
    assert contains_nul([{"a": {1: "\x00"}}]) == "a"  # a key orjson refuses: json.dumps


def test_a_snapshot_is_written_once_unless_its_checks_must_see_the_value() -> None:
    snapshot = {
        "workflow_name": "Load é",
        "n": [1, 2.5, None],
        "at": {"$date": "2024-01-01T00:00:00Z"},
    }
    written = encoded_json(snapshot)
    assert isinstance(written, JsonText) and written.value() == snapshot
    assert encoded_json({"s": "nul \x00 inside"}) is None  # contains_nul must see it
    assert encoded_json({1: "a"}) is None and encoded_json({"s": "\ud800"}) is None
