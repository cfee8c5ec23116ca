"""The comparator on crafted response pairs: one test per cause of the taxonomy."""

from __future__ import annotations

import json
from typing import Any

import pytest

from shadow_compare.compare import compare_responses
from shadow_compare.model import Cause, Kind, Verdict
from shadow_compare.rules import parse_rules
from strangler.exchange import RecordedResponse

RULES = parse_rules({}).for_entity("connectors")
ENDPOINT = "GET /connectors/getConnector"


def respond(
    body: Any, status: int = 200, content_type: str = "application/json"
) -> RecordedResponse:
    raw = body if isinstance(body, bytes) else json.dumps(body).encode()
    return RecordedResponse(status, (("Content-Type", content_type),), raw)


def differences(legacy: Any, new: Any, **kwargs: Any) -> list[tuple[str, Cause]]:
    result = compare_responses(respond(legacy), respond(new), RULES, endpoint=ENDPOINT, **kwargs)
    return [(d.path, d.cause) for d in result.differences]


def test_identical_bodies_are_equal() -> None:
    body = {"status": True, "message": "ok", "data": {"connector_id": "cn_1", "port": 5432}}
    result = compare_responses(respond(body), respond(body), RULES, endpoint=ENDPOINT)
    assert result.kind is Kind.EQUAL and result.differences == ()


def test_key_order_and_whitespace_are_not_differences() -> None:
    legacy = b'{"a": 1, "b": [1, 2]}'
    new = b'{"b":[1,2],"a":1}'
    assert differences(legacy, new) == []


def test_status() -> None:
    result = compare_responses(
        respond({"status": True, "data": {}}),
        respond({"status": False, "message": "boom"}, status=500),
        RULES,
        endpoint=ENDPOINT,
    )
    (difference,) = result.differences
    assert (difference.path, difference.cause, difference.legacy, difference.new) == (
        "@status",
        Cause.STATUS,
        200,
        500,
    )
    assert "boom" in difference.detail
    assert result.kind is Kind.REGRESSION


def test_missing_field() -> None:
    assert differences({"data": {"a": 1, "b": 2}}, {"data": {"a": 1}}) == [
        ("$.data.b", Cause.MISSING_FIELD)
    ]


def test_extra_field() -> None:
    assert differences({"data": {"a": 1}}, {"data": {"a": 1, "c": "x"}}) == [
        ("$.data.c", Cause.EXTRA_FIELD)
    ]


def test_null_versus_missing_either_way() -> None:
    assert differences({"data": {"photo_url": None}}, {"data": {}}) == [
        ("$.data.photo_url", Cause.NULL_VS_MISSING)
    ]
    assert differences({"data": {}}, {"data": {"photo_url": None}}) == [
        ("$.data.photo_url", Cause.NULL_VS_MISSING)
    ]


@pytest.mark.parametrize(
    ("legacy", "new"),
    [(2, "2"), (None, "x"), ("", None), (True, 1), (1, True), ({"a": 1}, [1]), ("5", 5.0)],
)
def test_type(legacy: Any, new: Any) -> None:
    assert differences({"v": legacy}, {"v": new}) == [("$.v", Cause.TYPE)]


@pytest.mark.parametrize(("legacy", "new"), [(1, 1.0), (2.5, 2.50001), (0.1 + 0.2, 0.3)])
def test_number_precision(legacy: float, new: float) -> None:
    assert differences({"v": legacy}, {"v": new}) == [("$.v", Cause.NUMBER_PRECISION)]


def test_datetime_format_same_instant() -> None:
    found = compare_responses(
        respond({"created_at": "2024-03-01 10:00:00"}),
        respond({"created_at": "2024-03-01T10:00:00Z"}),
        RULES,
        endpoint=ENDPOINT,
    ).differences
    assert [(d.path, d.cause) for d in found] == [("$.created_at", Cause.DATETIME_FORMAT)]
    assert "same instant" in found[0].detail


def test_datetime_zone_shift() -> None:
    found = compare_responses(
        respond({"created_at": "2024-03-01 10:00:00"}),
        respond({"created_at": "2024-03-01 15:30:00"}),
        RULES,
        endpoint=ENDPOINT,
    ).differences
    assert [(d.cause, d.detail) for d in found] == [
        (Cause.DATETIME_FORMAT, "new is +05:30 from legacy: a time zone shift?")
    ]


def test_datetimes_at_different_instants_are_a_value_difference() -> None:
    assert differences({"t": "2024-03-01 10:00:00"}, {"t": "2024-03-01 10:00:07"}) == [
        ("$.t", Cause.VALUE)
    ]


def test_list_order_of_identified_items_then_their_fields() -> None:
    legacy = {"data": [{"connector_id": "cn_1", "n": "a"}, {"connector_id": "cn_2", "n": "b"}]}
    new = {"data": [{"connector_id": "cn_2", "n": "b"}, {"connector_id": "cn_1", "n": "z"}]}
    assert differences(legacy, new) == [
        ("$.data", Cause.LIST_ORDER),
        ("$.data[connector_id=cn_1].n", Cause.VALUE),
    ]


def test_list_order_of_scalars() -> None:
    assert differences({"tags": ["a", "b", "c"]}, {"tags": ["c", "a", "b"]}) == [
        ("$.tags", Cause.LIST_ORDER)
    ]


def test_list_order_does_not_hide_true_versus_one() -> None:
    assert differences({"v": [1, True]}, {"v": [True, True]}) == [("$.v[0]", Cause.TYPE)]


def test_list_length_of_identified_items() -> None:
    legacy = {"data": [{"connector_id": "cn_1"}, {"connector_id": "cn_2"}]}
    new = {"data": [{"connector_id": "cn_1"}]}
    result = compare_responses(respond(legacy), respond(new), RULES, endpoint=ENDPOINT)
    (difference,) = result.differences
    assert (difference.path, difference.cause, difference.legacy, difference.new) == (
        "$.data",
        Cause.LIST_LENGTH,
        2,
        1,
    )
    assert "cn_2" in difference.detail


def test_list_length_positional() -> None:
    assert differences({"logs": ["a", "b"]}, {"logs": ["a", "b", "c"]}) == [
        ("$.logs", Cause.LIST_LENGTH)
    ]


def test_replaced_item_of_the_same_length_is_missing_and_extra() -> None:
    legacy = {"data": [{"connector_id": "cn_1"}, {"connector_id": "cn_2"}]}
    new = {"data": [{"connector_id": "cn_1"}, {"connector_id": "cn_3"}]}
    assert differences(legacy, new) == [
        ("$.data[connector_id=cn_2]", Cause.MISSING_FIELD),
        ("$.data[connector_id=cn_3]", Cause.EXTRA_FIELD),
    ]


def test_value() -> None:
    assert differences({"data": {"name": "a"}}, {"data": {"name": "b"}}) == [
        ("$.data.name", Cause.VALUE)
    ]
    assert differences({"ok": True}, {"ok": False}) == [("$.ok", Cause.VALUE)]


def test_compared_header_differs_but_charset_spelling_does_not() -> None:
    legacy = respond({"a": 1})
    same_media = respond({"a": 1}, content_type="application/json; charset=utf-8")
    html = respond({"a": 1}, content_type="text/html")
    assert compare_responses(legacy, same_media, RULES, endpoint=ENDPOINT).equal
    (difference,) = compare_responses(legacy, html, RULES, endpoint=ENDPOINT).differences
    assert (difference.path, difference.cause) == ("@header.content-type", Cause.VALUE)


def test_a_body_that_is_not_json_on_one_side() -> None:
    assert differences({"a": 1}, b"<html>oops</html>") == [("$", Cause.TYPE)]


def test_every_difference_starts_as_a_regression() -> None:
    result = compare_responses(respond({"a": 1}), respond({"a": 2}), RULES, endpoint=ENDPOINT)
    assert [d.verdict for d in result.differences] == [Verdict.REGRESSION]
