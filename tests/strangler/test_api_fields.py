"""The legacy contract's request-field readers: values kept, values refused, exact messages.

Both the emulator and the new side read requests through these functions, so the table
here is the one statement of which field values get a 400 and with what words.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from types import SimpleNamespace
from typing import Any

import httpx
import pytest
from starlette.applications import Starlette
from starlette.routing import Route

from legacy_emulator import http as emulator_http
from proxy.handlers import _pg as new_side_http
from strangler import api_fields
from strangler.api_fields import FieldError, FieldReaders
from strangler.contract import Page
from strangler.errors import DataError
from strangler.exchange import RecordedRequest
from strangler.tokens import mint_token

SECRET = "a-test-secret-long-enough-for-hs256-keys"

Reader = Callable[[Any, str], Any]

VALID_BODY_CASES: list[tuple[Reader, Any, Any]] = [
    (api_fields.text, "  Daily load ", "Daily load"),
    (api_fields.text, "x", "x"),
    (api_fields.optional_text, None, None),
    (api_fields.optional_text, "", ""),
    (api_fields.optional_text, "  kept as sent ", "  kept as sent "),
    (api_fields.optional_object, None, None),
    (api_fields.optional_object, {}, {}),
    (api_fields.optional_object, {"a": [1, 2]}, {"a": [1, 2]}),
    (api_fields.optional_list_of_text, None, None),
    (api_fields.optional_list_of_text, [], []),
    (api_fields.optional_list_of_text, ["etl", "nightly"], ["etl", "nightly"]),
    (api_fields.optional_flag, None, None),
    (api_fields.optional_flag, True, True),
    (api_fields.optional_flag, False, False),
]

INVALID_BODY_CASES: list[tuple[Reader, Any, str]] = [
    (api_fields.text, None, "name is required"),
    (api_fields.text, "", "name is required"),
    (api_fields.text, "   ", "name is required"),
    (api_fields.text, 7, "name is required"),
    (api_fields.text, ["a"], "name is required"),
    (api_fields.optional_text, 7, "name must be a string"),
    (api_fields.optional_text, False, "name must be a string"),
    (api_fields.optional_text, {"a": 1}, "name must be a string"),
    (api_fields.optional_object, "{}", "name must be an object"),
    (api_fields.optional_object, [], "name must be an object"),
    (api_fields.optional_object, 0, "name must be an object"),
    (api_fields.optional_list_of_text, "etl", "name must be a list of strings"),
    (api_fields.optional_list_of_text, ["etl", 3], "name must be a list of strings"),
    (api_fields.optional_list_of_text, [None], "name must be a list of strings"),
    (api_fields.optional_list_of_text, {"0": "etl"}, "name must be a list of strings"),
    (api_fields.optional_flag, 1, "name must be true or false"),
    (api_fields.optional_flag, 0, "name must be true or false"),
    (api_fields.optional_flag, "true", "name must be true or false"),
]


@pytest.mark.parametrize(("reader", "value", "expected"), VALID_BODY_CASES)
def test_a_body_field_within_the_contract_is_read(
    reader: Reader, value: Any, expected: Any
) -> None:
    assert reader({"name": value}, "name") == expected


@pytest.mark.parametrize(("reader", "value", "message"), INVALID_BODY_CASES)
def test_a_body_field_outside_the_contract_is_a_400_with_legacys_message(
    reader: Reader, value: Any, message: str
) -> None:
    with pytest.raises(FieldError) as caught:
        reader({"name": value}, "name")
    assert (caught.value.status, caught.value.message, str(caught.value)) == (400, message, message)


@pytest.mark.parametrize(
    ("reader", "expected"),
    [
        (api_fields.optional_text, None),
        (api_fields.optional_object, None),
        (api_fields.optional_list_of_text, None),
        (api_fields.optional_flag, None),
    ],
)
def test_an_optional_body_field_left_out_reads_as_none(reader: Reader, expected: Any) -> None:
    assert reader({"other": "x"}, "name") is expected


def test_a_missing_required_body_field_is_required() -> None:
    with pytest.raises(FieldError, match=r"^connector_name is required$"):
        api_fields.text({}, "connector_name")


def test_a_read_list_is_a_copy_the_caller_may_change() -> None:
    sent = ["etl"]
    read = api_fields.optional_list_of_text({"tags": sent}, "tags")
    assert read is not None
    read.append("more")
    assert sent == ["etl"]


def test_a_field_error_sits_in_the_permanent_branch_of_the_tree() -> None:
    assert isinstance(FieldError("x is required"), DataError)


# --- query parameters ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        ({"workspace_id": "ws_1"}, "ws_1"),
        ({"workspace_id": "  ws_1 "}, "ws_1"),
    ],
)
def test_a_required_query_id_is_read_stripped(query: dict[str, str], expected: str) -> None:
    assert api_fields.query_id(query, "workspace_id") == expected


@pytest.mark.parametrize("query", [{}, {"workspace_id": ""}, {"workspace_id": "   "}])
def test_a_missing_or_blank_query_id_is_required(query: dict[str, str]) -> None:
    with pytest.raises(FieldError) as caught:
        api_fields.query_id(query, "workspace_id")
    assert (caught.value.status, caught.value.message) == (400, "workspace_id is required")


@pytest.mark.parametrize(
    ("query", "expected"),
    [({}, None), ({"q": ""}, None), ({"q": "  "}, None), ({"q": " load "}, "load")],
)
def test_query_text_is_stripped_and_blank_is_not_given(
    query: dict[str, str], expected: str | None
) -> None:
    assert api_fields.query_text(query, "q") == expected


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        (None, None),
        ("", None),
        ("  ", None),
        ("2024-03-01 12:00:00", datetime(2024, 3, 1, 12, tzinfo=UTC)),
        (" 2024-03-01T12:00:00Z ", datetime(2024, 3, 1, 12, tzinfo=UTC)),
        ("1709294400000", datetime(2024, 3, 1, 12, tzinfo=UTC)),
    ],
)
def test_a_query_moment_is_read_in_legacys_shapes(raw: str | None, expected: Any) -> None:
    query = {} if raw is None else {"since": raw}
    assert api_fields.query_moment(query, "since") == expected


@pytest.mark.parametrize("raw", ["yesterday", "2024-13-45", "12:00"])
def test_an_unreadable_query_moment_is_a_400_quoting_the_expected_shape(raw: str) -> None:
    with pytest.raises(FieldError) as caught:
        api_fields.query_moment({"since": raw}, "since")
    assert (caught.value.status, caught.value.message) == (
        400,
        "since must be a datetime like 2024-03-01 12:00:00",
    )


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        ({}, Page(1, 20)),
        ({"page": "", "per_page": ""}, Page(1, 20)),
        ({"page": "3", "per_page": "50"}, Page(3, 50)),
        ({"per_page": "1000"}, Page(1, 100)),
    ],
)
def test_paging_defaults_and_caps_as_legacy(query: dict[str, str], expected: Page) -> None:
    assert api_fields.paging(query) == expected


@pytest.mark.parametrize(
    ("query", "message"),
    [
        ({"page": "0"}, "page must be a positive integer"),
        ({"page": "two"}, "page must be a positive integer"),
        ({"per_page": "-5"}, "per_page must be a positive integer"),
        ({"page": "1", "per_page": "1.5"}, "per_page must be a positive integer"),
    ],
)
def test_bad_paging_is_a_400_naming_the_parameter(query: dict[str, str], message: str) -> None:
    with pytest.raises(FieldError) as caught:
        api_fields.paging(query)
    assert (caught.value.status, caught.value.message) == (400, message)


# --- the readers as methods of a request ---------------------------------------------------


@dataclass(frozen=True)
class _Request(FieldReaders):
    raw_query: dict[str, str]
    body: dict[str, Any]

    @property
    def query(self) -> dict[str, str]:
        return self.raw_query


def test_a_request_inheriting_the_readers_reads_its_own_query_and_body() -> None:
    request = _Request({"workspace_id": " ws_1 ", "page": "2"}, {"name": " Daily ", "x": None})
    assert request.query_id("workspace_id") == "ws_1"
    assert request.page() == Page(2, 20)
    assert request.text("name") == "Daily"
    assert (request.given("x"), request.given("y")) == (True, False)
    with pytest.raises(FieldError, match=r"^tags must be a list of strings$"):
        _Request({}, {"tags": "etl"}).optional_list_of_text("tags")


# --- both sides answer a refused field with the same envelope -------------------------------

REFUSED_BODY = {"name": "Daily", "enabled": "yes"}
REFUSED_ENVELOPE_MESSAGE = "enabled must be true or false"


async def _new_side_answer(body: dict[str, Any]) -> tuple[int, Any]:
    async def handler(call: new_side_http.Call) -> Any:
        return new_side_http.ok("read", {"enabled": call.optional_flag("enabled")})

    serve = new_side_http.endpoint(SECRET, lambda: 1_700_000_000.0, handler)
    token = mint_token(SECRET, "usr_0123456789ab", "sub_0123456789ab")
    request = RecordedRequest(
        method="POST",
        path="/api/things",
        headers=(("authorization", f"Bearer {token}"),),
        body=json.dumps(body).encode(),
    )
    response = await serve(request)
    return response.status, json.loads(response.body)


async def _emulator_answer(body: dict[str, Any]) -> tuple[int, Any]:
    async def handler(call: emulator_http.Call) -> Any:
        return emulator_http.ok("read", {"enabled": call.optional_flag("enabled")})

    app = Starlette(
        routes=[Route("/api/things", emulator_http.endpoint(handler), methods=["POST"])]
    )
    # The endpoint reads only the signing secret from the emulator it serves.
    app.state.emulator = SimpleNamespace(jwt_secret=SECRET)
    token = mint_token(SECRET, "usr_0123456789ab", "sub_0123456789ab")
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://emulator") as client:
        response = await client.post(
            "/api/things", json=body, headers={"authorization": f"Bearer {token}"}
        )
    return response.status_code, response.json()


async def test_a_refused_field_gets_the_same_400_envelope_on_both_sides() -> None:
    emulator = await _emulator_answer(REFUSED_BODY)
    new_side = await _new_side_answer(REFUSED_BODY)
    assert emulator == new_side
    assert emulator[0] == 400
    assert REFUSED_ENVELOPE_MESSAGE in json.dumps(emulator[1])


async def test_an_accepted_field_reads_the_same_on_both_sides() -> None:
    body = {"enabled": False}
    emulator = await _emulator_answer(body)
    new_side = await _new_side_answer(body)
    assert emulator == new_side
    assert emulator[0] == 200
    assert '"enabled": false' in json.dumps(emulator[1])
