"""Expected divergences are granted per exchange, only when their condition holds."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import yaml

from shadow_compare.compare import compare_responses
from shadow_compare.model import Verdict
from shadow_compare.rules import parse_rules
from strangler.exchange import RecordedRequest, RecordedResponse

REPO = Path(__file__).resolve().parents[2]
SHIPPED = parse_rules(yaml.safe_load((REPO / "shadow_rules.yaml").read_text()))


def _connector(n: int, created_at: str) -> dict[str, Any]:
    return {"connector_id": f"cn_{n:012x}", "connector_name": f"c{n}", "created_at": created_at}


NEWEST_FIRST = [
    _connector(3, "2026-03-01T10:00:00.000Z"),
    _connector(2, "2026-02-01T10:00:00.000Z"),
    _connector(1, "2026-01-01T10:00:00.000Z"),
]


def _compare(legacy: Any, new: Any, endpoint: str = "GET /connectors/getConnectors") -> Any:
    def body(data: Any) -> bytes:
        return json.dumps({"status": True, "message": "ok", "data": data}).encode()

    return compare_responses(
        RecordedResponse(200, body=body(legacy)),
        RecordedResponse(200, body=body(new)),
        SHIPPED.for_entity("connectors"),
        endpoint=endpoint,
    )


def test_an_oldest_first_list_on_the_new_side_is_a_regression_naming_the_rule() -> None:
    result = _compare(NEWEST_FIRST, list(reversed(NEWEST_FIRST)))
    [difference] = result.differences
    assert difference.cause == "list_order"
    assert difference.verdict is Verdict.REGRESSION
    assert "not list-order-dirty-created-at (contract-order)" in difference.detail
    assert "the new side's order is not the contract's" in difference.detail


def test_out_of_place_only_where_legacy_dates_are_dirty_is_expected() -> None:
    dirty = [NEWEST_FIRST[1], NEWEST_FIRST[0], NEWEST_FIRST[2]]  # legacy's type-ordered dirt
    result = _compare(dirty, NEWEST_FIRST)
    [difference] = result.differences
    assert difference.verdict is Verdict.EXPECTED
    assert difference.rule == "list-order-dirty-created-at"


def test_ties_broken_by_id_ascending_are_the_contract() -> None:
    same = "2026-01-01T10:00:00.000Z"
    ordered = [_connector(1, same), _connector(2, same)]
    result = _compare(list(reversed(ordered)), ordered)
    assert [d.verdict for d in result.differences] == [Verdict.EXPECTED]
    result = _compare(ordered, list(reversed(ordered)))
    assert [d.verdict for d in result.differences] == [Verdict.REGRESSION]


def test_masking_is_expected_only_for_credential_keys() -> None:
    def detail(**fields: Any) -> dict[str, Any]:
        return {"connector_id": "cn_1", "connection_detail": {"host": "db", **fields}}

    endpoint = "GET /connectors/getConnector"
    secret = _compare(detail(api_key="k-1"), detail(api_key="********"), endpoint)
    assert [d.verdict for d in secret.differences] == [Verdict.EXPECTED]
    masked_host = _compare(detail(), {**detail(), "connection_detail": {"host": "********"}},
                           endpoint)  # fmt: skip
    [difference] = masked_host.differences
    assert difference.verdict is Verdict.REGRESSION
    assert "'host' is not a credential key" in difference.detail


def test_activity_ties_and_version_bumps_are_expected_only_as_declared() -> None:
    def activity(data: Any) -> RecordedResponse:
        return RecordedResponse(200, body=json.dumps({"status": True, "data": data}).encode())

    rules = SHIPPED.for_entity("activity")
    same, older = "2026-01-01T10:00:00.000Z", "2025-12-01T10:00:00.000Z"
    a, b = {"action": "a", "created_at": same}, {"action": "b", "created_at": same}
    c = {"action": "c", "created_at": older}
    endpoint = "GET /userActivity/getActivity"
    tie = compare_responses(activity([a, b, c]), activity([b, a, c]), rules, endpoint=endpoint)
    assert [d.verdict for d in tie.differences] == [Verdict.EXPECTED]
    moved = compare_responses(activity([a, b, c]), activity([c, a, b]), rules, endpoint=endpoint)
    assert [d.verdict for d in moved.differences] == [Verdict.REGRESSION]

    def updated(version: Any) -> RecordedResponse:
        data = {"workflow_id": "wf_1", "version": version}
        return RecordedResponse(200, body=json.dumps({"status": True, "data": data}).encode())

    rules = SHIPPED.for_entity("workspaces")
    endpoint = "POST /workflow/updateWorkflow"
    bumped = compare_responses(updated(3), updated(4), rules, endpoint=endpoint)
    assert [d.verdict for d in bumped.differences] == [Verdict.EXPECTED]
    jumped = compare_responses(updated(3), updated(7), rules, endpoint=endpoint)
    assert [d.verdict for d in jumped.differences] == [Verdict.REGRESSION]
    assert "not legacy's 3 + 1" in jumped.differences[0].detail


def _update(version: Any, legacy: Any, new_status: int, message: str = "refused") -> Any:
    request = RecordedRequest(
        "POST",
        "/workflow/updateWorkflow",
        body=json.dumps({"workflow_id": "wf_1", "version": version}).encode(),
    )
    data = {"workflow_id": "wf_1", "version": legacy}
    return compare_responses(
        RecordedResponse(200, body=json.dumps({"status": True, "data": data}).encode()),
        RecordedResponse(
            new_status, body=json.dumps({"status": False, "message": message}).encode()
        ),
        SHIPPED.for_entity("workspaces"),
        endpoint="POST /workflow/updateWorkflow",
        request=request,
    )


def test_a_409_is_expected_only_for_a_version_legacy_shows_to_be_stale() -> None:
    stale = _update(2, legacy=5, new_status=409)
    assert [(d.verdict, d.rule) for d in stale.differences] == [
        (Verdict.EXPECTED, "stale-version-409")
    ]
    current = _update(5, legacy=5, new_status=409)  # the version legacy stores: a wrong 409
    [difference] = current.differences
    assert difference.verdict is Verdict.REGRESSION
    assert "not stale-version-409 (stale-version)" in difference.detail
    assert "nothing was stale" in difference.detail
    # Ahead of legacy by its own bump: stale from where the new side stands.
    refusal = "Workflow was changed by someone else: version 5 is not the current version {}"
    ahead = _update(5, legacy=5, new_status=409, message=refusal.format(6))
    assert [d.verdict for d in ahead.differences] == [Verdict.EXPECTED]
    behind = _update(5, legacy=5, new_status=409, message=refusal.format(4))
    assert [d.verdict for d in behind.differences] == [Verdict.REGRESSION]


def test_a_400_is_expected_only_for_a_version_that_is_not_a_whole_number() -> None:
    for malformed in ("three", 2.5, True, [1]):
        result = _update(malformed, legacy=5, new_status=400)
        assert [d.verdict for d in result.differences] == [Verdict.EXPECTED], malformed
    whole = _update("5", legacy=5, new_status=400)
    [difference] = whole.differences
    assert difference.verdict is Verdict.REGRESSION
    assert "not version-not-a-number (version-not-whole)" in difference.detail


def test_dependencies_shorter_on_the_new_side_only_by_removed_workflow_ids() -> None:
    def workspace(dependencies: list[Any]) -> RecordedResponse:
        job = {"job_id": "jb_1", "workflow_dependency": dependencies}
        data = {"workspace_id": "ws_1", "folders": [{"folder_id": "fd_1", "jobs": [job]}]}
        return RecordedResponse(200, body=json.dumps({"status": True, "data": data}).encode())

    def verdicts(legacy: list[Any], new: list[Any]) -> list[Verdict]:
        result = compare_responses(
            workspace(legacy),
            workspace(new),
            SHIPPED.for_entity("workspaces"),
            endpoint="GET /workspace/getWorkspace",
        )
        return [d.verdict for d in result.differences]

    # The deleted wf_b taken out: the length and the items that moved up, all expected.
    removed = verdicts(["wf_a", "wf_b", "wf_c", "wf_d"], ["wf_a", "wf_c", "wf_d"])
    assert removed and set(removed) == {Verdict.EXPECTED}
    # A dependency the new side invented, or one it reordered, is no removal.
    assert Verdict.REGRESSION in verdicts(["wf_a", "wf_b", "wf_c"], ["wf_c", "wf_a"])
    assert Verdict.REGRESSION in verdicts(["wf_a", "wf_b"], ["wf_x"])
    # Something other than a workflow id gone is not the delete's cleanup either.
    assert Verdict.REGRESSION in verdicts(["wf_a", "jb_9"], ["wf_a"])


def test_every_shipped_expected_divergence_names_its_condition() -> None:
    document = yaml.safe_load((REPO / "shadow_rules.yaml").read_text())
    sections = {"defaults": document["defaults"], **document["entities"]}
    rules = [
        (entity, rule["id"], rule.get("when"))
        for entity, section in sections.items()
        for rule in section.get("expected", [])
    ]
    assert rules
    assert [r for r in rules if not r[2]] == []


def test_two_stamps_of_one_write_are_expected_only_within_that_write() -> None:
    sent = datetime(2026, 12, 7, 3, 34, 35, 990000, tzinfo=UTC)
    window = (sent, sent + timedelta(milliseconds=30))
    earlier = (sent - timedelta(minutes=5), sent - timedelta(minutes=5) + timedelta(seconds=0.03))

    def workspace(stamp: str) -> RecordedResponse:
        data = {"workspace_id": "ws_1", "workspace_name": "n", "updated_at": stamp}
        return RecordedResponse(200, body=json.dumps({"status": True, "data": data}).encode())

    def compare(method: str, legacy: str, new: str, windows: Any = (window,)) -> list[Any]:
        path = "/workspace/updateWorkspace" if method == "POST" else "/workspace/getWorkspace"
        result = compare_responses(
            workspace(legacy),
            workspace(new),
            SHIPPED.for_entity("workspaces"),
            endpoint=f"{method} {path}",
            request=RecordedRequest(method, path, body=b"{}" if method == "POST" else b""),
            windows=windows,
        )
        return [(d.verdict, d.rule) for d in result.differences]

    # The write straddled a second: legacy stamped :35, the new side :36, in the write's
    # answer and in a replay's read of that tenant after it.
    straddled = compare("POST", "2026-12-07 03:34:35", "2026-12-07 03:34:36")
    assert straddled == [(Verdict.EXPECTED, "write-stamped-twice")]
    after = compare("GET", "2026-12-07 03:34:35", "2026-12-07 03:34:36", (earlier, window))
    assert after == [(Verdict.EXPECTED, "write-stamped-twice")]
    # A stamp from another moment is no stamp of this write.
    assert compare("POST", "2026-12-07 03:34:35", "2026-12-07 03:30:00")[0][0] is Verdict.REGRESSION
    # Two stamps from two different writes are no two stamps of one write.
    apart = compare("GET", "2026-12-07 03:29:35", "2026-12-07 03:34:36", (earlier, window))
    assert apart[0][0] is Verdict.REGRESSION
    # Live traffic has no replayed writes: a read's times must agree.
    live = compare("GET", "2026-12-07 03:34:35", "2026-12-07 03:34:36", ())
    assert live[0][0] is Verdict.REGRESSION
    # Nor is a field that is not a time at all.
    assert compare("POST", "2026-12-07 03:34:35", "soon")[0][0] is Verdict.REGRESSION


def test_a_user_minted_on_both_sides_is_expected_on_the_write_only() -> None:
    def answer(user_id: str) -> RecordedResponse:
        data = {"UserId": user_id, "username": "replay.user"}
        return RecordedResponse(201, body=json.dumps({"status": True, "data": data}).encode())

    def compared(method: str, path: str) -> Any:
        body = b'{"username": "replay.user"}' if method == "POST" else b""
        return compare_responses(
            answer("usr_00000000000a"), answer("usr_00000000000b"),
            SHIPPED.for_entity("users"), endpoint=f"{method} {path}",
            request=RecordedRequest(method, path, body=body),
        )  # fmt: skip

    [minted] = compared("POST", "/users/addUser").differences
    assert (minted.verdict, minted.rule) == (Verdict.EXPECTED, "write-minted-twice")
    [read] = compared("GET", "/users/getUser").differences
    assert read.verdict is Verdict.REGRESSION  # a read's ids must agree
