"""Every rule kind of shadow_rules.yaml on crafted pairs, the cost bound, and validation."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from shadow_compare.compare import compare_responses
from shadow_compare.errors import RulesError
from shadow_compare.model import Cause, CompareResult, Kind, Verdict
from shadow_compare.rules import load_rules, parse_rules
from strangler.exchange import RecordedRequest, RecordedResponse

REPO = Path(__file__).resolve().parents[2]


def respond(body: Any, status: int = 200) -> RecordedResponse:
    return RecordedResponse(
        status, (("content-type", "application/json"),), json.dumps(body).encode()
    )


def run(
    rules: dict[str, Any],
    legacy: Any,
    new: Any,
    *,
    endpoint: str = "GET /connectors/getConnectors",
    statuses: tuple[int, int] = (200, 200),
    request: RecordedRequest | None = None,
) -> CompareResult:
    compiled = parse_rules({"entities": {"connectors": rules}}).for_entity("connectors")
    return compare_responses(
        respond(legacy, statuses[0]),
        respond(new, statuses[1]),
        compiled,
        endpoint=endpoint,
        request=request,
    )


def test_ignore_skips_a_place_at_any_depth() -> None:
    rules = {"ignore": [{"path": "$..last_tested_at", "reason": "set by a clock per side"}]}
    legacy = {"data": [{"connector_id": "cn_1", "last_tested_at": "2024-01-01 00:00:00"}]}
    new = {"data": [{"connector_id": "cn_1", "last_tested_at": "2024-05-05 05:05:05"}]}
    assert run(rules, legacy, new).kind is Kind.EQUAL
    # ... and a field missing at an ignored place is not reported either
    assert run(rules, legacy, {"data": [{"connector_id": "cn_1"}]}).kind is Kind.EQUAL
    # ... but the rest is still compared
    assert (
        run(rules, legacy, {"data": [{"connector_id": "cn_9", "last_tested_at": None}]}).kind
        is Kind.REGRESSION
    )


def test_set_keyed_by_field_ignores_order_but_not_content() -> None:
    rules = {"sets": [{"path": "$.data", "key": "connector_id"}]}
    legacy = {"data": [{"connector_id": "cn_1", "n": 1}, {"connector_id": "cn_2", "n": 2}]}
    swapped = {"data": [{"connector_id": "cn_2", "n": 2}, {"connector_id": "cn_1", "n": 1}]}
    changed = {"data": [{"connector_id": "cn_2", "n": 2}, {"connector_id": "cn_1", "n": 5}]}
    assert run(rules, legacy, swapped).kind is Kind.EQUAL
    assert [(d.path, d.cause) for d in run(rules, legacy, changed).differences] == [
        ("$.data[connector_id=cn_1].n", Cause.VALUE)
    ]


def test_set_of_scalars() -> None:
    rules = {"sets": [{"path": "$.data.users"}]}
    assert run(rules, {"data": {"users": ["u1", "u2"]}}, {"data": {"users": ["u2", "u1"]}}).equal
    result = run(rules, {"data": {"users": ["u1", "u2"]}}, {"data": {"users": ["u2"]}})
    (difference,) = result.differences
    assert (difference.cause, difference.legacy, difference.new) == (Cause.LIST_LENGTH, ["u1"], [])


def test_number_tolerance() -> None:
    rules = {"numbers": [{"path": "$.data.rate", "absolute": 0.5}]}
    assert run(rules, {"data": {"rate": 10}}, {"data": {"rate": 10.4}}).equal
    assert [
        d.cause for d in run(rules, {"data": {"rate": 10}}, {"data": {"rate": 11}}).differences
    ] == [Cause.VALUE]
    relative = {"numbers": [{"path": "$..rows_processed", "relative": 0.01}]}
    assert run(relative, {"rows_processed": 1000}, {"rows_processed": 1009}).equal


def test_datetime_tolerance_still_reports_another_format() -> None:
    rules = {"datetimes": [{"path": "$..updated_at", "seconds": 2}]}
    legacy = {"updated_at": "2024-01-01 10:00:00"}
    assert run(rules, legacy, {"updated_at": "2024-01-01 10:00:01"}).equal
    assert [
        d.cause for d in run(rules, legacy, {"updated_at": "2024-01-01T10:00:01Z"}).differences
    ] == [Cause.DATETIME_FORMAT]
    assert [
        d.cause for d in run(rules, legacy, {"updated_at": "2024-01-01 10:00:09"}).differences
    ] == [Cause.VALUE]


STALE = {
    "id": "stale-version-409",
    "reason": "the new side rejects a stale version with 409; legacy overwrote it",
    "endpoints": ["POST /workflow/updateWorkflow"],
    "path": "@status",
    "legacy_status": 200,
    "new_status": 409,
    "request_has": ["version"],
}


def test_expected_status_divergence_is_reported_with_its_reason() -> None:
    request = RecordedRequest(
        "POST", "/workflow/updateWorkflow", body=b'{"workflow_id": "wf_1", "version": 2}'
    )
    result = run(
        {"expected": [STALE]},
        {"status": True, "data": {}},
        {"status": False, "message": "stale"},
        endpoint="POST /workflow/updateWorkflow",
        statuses=(200, 409),
        request=request,
    )
    assert result.kind is Kind.EXPECTED
    (difference,) = result.differences  # reported, not hidden
    assert difference.verdict is Verdict.EXPECTED
    assert difference.rule == "stale-version-409"
    assert "stale version" in (difference.reason or "")


def test_expected_divergence_conditions_must_all_hold() -> None:
    legacy, new = {"status": True, "data": {}}, {"status": False, "message": "stale"}
    without_version = RecordedRequest(
        "POST", "/workflow/updateWorkflow", body=b'{"workflow_id": "wf_1"}'
    )
    with_version = RecordedRequest("POST", "/workflow/updateWorkflow", body=b'{"version": 1}')
    # a 409 without a version in the request is not what the rule describes
    assert (
        run(
            {"expected": [STALE]},
            legacy,
            new,
            endpoint="POST /workflow/updateWorkflow",
            statuses=(200, 409),
            request=without_version,
        ).kind
        is Kind.REGRESSION
    )
    # another endpoint
    assert (
        run(
            {"expected": [STALE]},
            legacy,
            new,
            endpoint="POST /connectors/updateConnector",
            statuses=(200, 409),
            request=with_version,
        ).kind
        is Kind.REGRESSION
    )
    # another status
    assert (
        run(
            {"expected": [STALE]},
            legacy,
            new,
            endpoint="POST /workflow/updateWorkflow",
            statuses=(200, 500),
            request=with_version,
        ).kind
        is Kind.REGRESSION
    )


def test_expected_divergence_scoped_by_path_cause_and_values() -> None:
    rules = {
        "expected": [
            {
                "id": "masked-password",
                "reason": "new masks the password that legacy returned in clear",
                "path": "$..password",
                "causes": ["value"],
                "new": "********",
            },
            {
                "id": "order",
                "reason": "ties ordered by id on the new side",
                "path": "$.data",
                "causes": ["list_order"],
            },
        ]
    }
    legacy = {
        "data": [
            {"connector_id": "cn_1", "password": "hunter2"},
            {"connector_id": "cn_2", "password": "x"},
        ]
    }
    new = {
        "data": [
            {"connector_id": "cn_2", "password": "********"},
            {"connector_id": "cn_1", "password": "********"},
        ]
    }
    result = run(rules, legacy, new)
    assert result.kind is Kind.EXPECTED
    assert sorted((d.path, d.rule) for d in result.differences) == [
        ("$.data", "order"),
        ("$.data[connector_id=cn_1].password", "masked-password"),
        ("$.data[connector_id=cn_2].password", "masked-password"),
    ]
    # the value condition: another new value is a regression, not the expected masking
    leaked = {
        "data": [
            {"connector_id": "cn_1", "password": "hunter3"},
            {"connector_id": "cn_2", "password": "********"},
        ]
    }
    verdicts = {d.path: d.verdict for d in run(rules, legacy, leaked).differences}
    assert verdicts["$.data[connector_id=cn_1].password"] is Verdict.REGRESSION


def test_an_expected_divergence_does_not_cover_a_regression_elsewhere() -> None:
    rules = {
        "expected": [
            {
                "id": "order",
                "reason": "ties ordered by id on the new side",
                "path": "$.data",
                "causes": ["list_order"],
            }
        ]
    }
    legacy = {"data": [{"connector_id": "cn_1", "n": 1}, {"connector_id": "cn_2", "n": 2}]}
    new = {"data": [{"connector_id": "cn_2", "n": 2}, {"connector_id": "cn_1", "n": 9}]}
    result = run(rules, legacy, new)
    assert result.kind is Kind.REGRESSION
    assert [d.verdict for d in result.differences] == [Verdict.EXPECTED, Verdict.REGRESSION]


def big_list(count: int, changed_at: int | None = None) -> dict[str, Any]:
    items = [{"connector_id": f"cn_{n:012x}", "port": n} for n in range(count)]
    if changed_at is not None:
        items[changed_at]["port"] = -1
    return {"data": items}


def test_cost_bound_truncates_and_never_says_equal() -> None:
    compiled = parse_rules({"defaults": {"max_nodes": 100}}).for_entity("connectors")
    legacy, new = respond(big_list(500)), respond(big_list(500, changed_at=499))
    result = compare_responses(legacy, new, compiled, endpoint="GET /connectors/getConnectors")
    assert result.truncated and result.kind is Kind.TRUNCATED and not result.equal
    assert result.nodes <= 101
    assert "max_nodes" in result.notes[0]


def test_byte_bound_truncates_without_parsing() -> None:
    compiled = parse_rules({"defaults": {"max_bytes": 1000}}).for_entity("connectors")
    result = compare_responses(
        respond(big_list(100)), respond(big_list(100, 3)), compiled, endpoint="GET /x"
    )
    assert result.kind is Kind.TRUNCATED and result.nodes == 0


def test_identical_bytes_are_equal_even_past_the_byte_bound() -> None:
    compiled = parse_rules({"defaults": {"max_bytes": 10}}).for_entity("connectors")
    body = respond(big_list(50))
    assert compare_responses(body, body, compiled, endpoint="GET /x").kind is Kind.EQUAL


def test_difference_cap_truncates_but_keeps_the_regression_verdict() -> None:
    compiled = parse_rules({"defaults": {"max_differences": 3}}).for_entity("connectors")
    legacy = {f"k{n}": n for n in range(10)}
    new = {f"k{n}": n + 1 for n in range(10)}
    result = compare_responses(respond(legacy), respond(new), compiled, endpoint="GET /x")
    assert len(result.differences) == 3 and result.truncated
    assert result.kind is Kind.REGRESSION


def test_the_shipped_rules_file_loads_and_declares_the_known_divergences() -> None:
    rules = load_rules(REPO / "shadow_rules.yaml")
    assert "stale-version-409" in rules.expected_ids("workspaces")
    assert all(len(reason) > 20 for reason in rules.expected_ids("workspaces").values())
    assert "activity-tie-order" in rules.expected_ids("activity")


@pytest.mark.parametrize(
    ("yaml_text", "fragment"),
    [
        ("entities: {planets: {}}", "unknown entity 'planets'"),
        ("entities: {connectors: {expected: [{id: x1, path: $.a}]}}", "reason"),
        ("entities: {connectors: {ignore: [{path: $.a}]}}", "reason"),
        (
            "entities: {connectors: {ignore: [{path: 'data.a', reason: because}]}}",
            "must start with '$'",
        ),
        ("entities: {connectors: {numbers: [{path: $.a}]}}", "absolute"),
        (
            "entities: {connectors: {expected: [{id: x1, reason: 'a long enough reason',"
            " endpoints: [connectors]}]}}",
            "METHOD /path",
        ),
        (
            "entities: {connectors: {expected: [{id: x1, reason: 'a long enough reason',"
            " causes: [oops]}]}}",
            "causes",
        ),
        ("entities: {connectors: {sets: [{path: $.a, keyy: b}]}}", "keyy"),
        ("entities: [1, 2", "not valid YAML"),
    ],
)
def test_invalid_rules_name_the_file_the_place_and_the_fix(
    tmp_path: Path, yaml_text: str, fragment: str
) -> None:
    path = tmp_path / "shadow_rules.yaml"
    path.write_text(yaml_text)
    with pytest.raises(RulesError) as caught:
        load_rules(path)
    message = str(caught.value)
    assert str(path) in message and fragment in message
    assert "fix" in message


def test_missing_rules_file_is_a_rules_error(tmp_path: Path) -> None:
    with pytest.raises(RulesError, match="cannot be read"):
        load_rules(tmp_path / "nope.yaml")


def test_shipped_rules_know_masked_credentials_but_not_other_detail_changes() -> None:
    compiled = load_rules(REPO / "shadow_rules.yaml").for_entity("connectors")
    legacy = {"data": {"connection_detail": {"host": "db1", "api_key": "AKIA-plain"}}}
    masked = {"data": {"connection_detail": {"host": "db1", "api_key": "********"}}}
    result = compare_responses(
        respond(legacy), respond(masked), compiled, endpoint="GET /connectors/getConnector"
    )
    assert result.kind is Kind.EXPECTED
    assert [d.verdict for d in result.differences] == [Verdict.EXPECTED]

    moved = {"data": {"connection_detail": {"host": "db2", "api_key": "********"}}}
    result = compare_responses(
        respond(legacy), respond(moved), compiled, endpoint="GET /connectors/getConnector"
    )
    assert result.kind is Kind.REGRESSION
