"""The pure parts behind the API: rendering, ordering, tree lookups, run and test outcomes."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import pytest
from bson import ObjectId
from hypothesis import given
from hypothesis import strategies as st

from legacy_emulator.render import (
    CONNECTOR,
    USER,
    WORKFLOW,
    WORKSPACE,
    json_safe,
    render,
    render_connector,
    sort_key,
)
from legacy_emulator.routes.connectors import connection_outcome
from legacy_emulator.runner import run_outcome
from legacy_emulator.tree import hidden_branches, locate_workflow

moments = st.datetimes(
    min_value=datetime(2000, 1, 1), max_value=datetime(2030, 1, 1), timezones=st.just(UTC)
).map(lambda m: m.replace(microsecond=m.microsecond // 1000 * 1000))


def _stored_forms(moment: datetime) -> list[object]:
    """The ways production stores one moment."""
    millis = int(moment.timestamp() * 1000)
    return [
        moment.replace(tzinfo=None),
        moment,
        moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z",
        millis,
        str(millis),
    ]


scalars = st.one_of(
    st.none(), st.booleans(), st.integers(), st.text(max_size=8), moments, st.just(ObjectId())
)
stored_values = st.recursive(
    scalars,
    lambda inner: st.one_of(
        st.lists(inner, max_size=3),
        st.dictionaries(st.sampled_from(["_id", "a", "password", "ts"]), inner, max_size=3),
    ),
    max_leaves=8,
)


@given(st.dictionaries(st.sampled_from([n for n, _ in WORKFLOW] + ["_id", "x"]), stored_values))
def test_any_stored_document_renders_to_json_with_exactly_the_entitys_fields(document) -> None:
    rendered = render(document, WORKFLOW)
    assert list(rendered) == [name for name, _ in WORKFLOW]
    text = json.dumps(rendered)
    assert '"_id"' not in text


@given(moments)
def test_every_stored_form_of_a_moment_renders_the_same(moment) -> None:
    expected = moment.strftime("%Y-%m-%d %H:%M:%S")
    for form in _stored_forms(moment):
        assert render({"created_at": form}, WORKSPACE)["created_at"] == expected


@given(st.lists(st.tuples(moments, st.integers(0, 4)), min_size=2, max_size=12))
def test_list_order_is_newest_first_whatever_the_stored_form(entries) -> None:
    documents = [
        {"workspace_id": f"ws_{index:012x}", "created_at": _stored_forms(moment)[form]}
        for index, (moment, form) in enumerate(entries)
    ]
    ordered = sorted(documents, key=lambda d: sort_key(d, "workspace_id"))
    expected = sorted(
        range(len(entries)), key=lambda i: (-entries[i][0].timestamp(), f"ws_{i:012x}")
    )
    assert [d["workspace_id"] for d in ordered] == [f"ws_{i:012x}" for i in expected]


def test_unreadable_or_missing_created_at_sorts_last() -> None:
    documents = [
        {"role_id": "role_b", "created_at": "soon"},
        {"role_id": "role_a"},
        {"role_id": "role_c", "created_at": datetime(2020, 1, 1)},
    ]
    ordered = sorted(documents, key=lambda d: sort_key(d, "role_id"))
    assert [d["role_id"] for d in ordered] == ["role_c", "role_a", "role_b"]


def test_dirty_scalars_render_by_their_kind() -> None:
    user = render({"is_active": "false", "is_email_verified": 1, "email": None}, USER)
    assert (user["is_active"], user["is_email_verified"], user["email"]) == (False, True, None)
    workflow = render({"version": "4.0"}, WORKFLOW)
    assert workflow["version"] == 4
    assert render({"version": "v4"}, WORKFLOW)["version"] == "v4"  # passed through as found
    assert json_safe({"_id": 1, "when": datetime(2024, 1, 1), "oid": ObjectId("0" * 24)}) == {
        "when": "2024-01-01 00:00:00",
        "oid": "0" * 24,
    }


def test_only_the_connector_password_is_masked() -> None:
    stored = {"connection_detail": {"host": "h", "password": "pw", "token": "t"}}
    rendered = render_connector(stored)
    assert rendered["connection_detail"] == {"host": "h", "password": "********", "token": "t"}
    assert stored["connection_detail"]["password"] == "pw"  # the stored document is untouched
    assert render_connector({"connection_detail": {"password": None}})["connection_detail"] == {
        "password": None
    }
    assert list(render_connector({})) == [name for name, _ in CONNECTOR]


@pytest.mark.parametrize(
    ("connector_type", "detail", "outcome"),
    [
        ("postgres", {"host": "db"}, "success"),
        ("postgres", {"host": " "}, "failed"),
        ("postgres", {"bucket": "b"}, "failed"),
        ("s3", {"bucket": "b"}, "success"),
        ("s3", {"host": "h"}, "failed"),
        ("mysql", "host=db", "failed"),
    ],
)
def test_connection_outcome(connector_type, detail, outcome) -> None:
    assert connection_outcome(connector_type, detail) == outcome


@pytest.mark.parametrize(
    ("diagram", "status"),
    [
        ('{"nodes": [1, 2], "edges": []}', "completed"),
        ('{"nodes": []}', "completed"),
        ("", "failed"),
        ("{oops", "failed"),
        ("[1, 2]", "failed"),
        (None, "failed"),
        ({"nodes": [1]}, "failed"),  # a dirty non-string diagram
    ],
)
def test_run_outcome_follows_the_diagram_and_replays_the_same(diagram, status) -> None:
    outcome = run_outcome("run_000000000001", diagram)
    assert outcome[0] == status
    assert run_outcome("run_000000000001", diagram) == outcome
    if status == "failed":
        assert outcome[1:] == (0, "workFlowDiagram is not valid JSON")


def test_tree_lookups_on_a_dirty_tree() -> None:
    summary = {"workflow_id": "wf_1"}
    workspace = {
        "folders": [
            "junk",
            {"folder_id": "fd_1", "d_flag": "true", "jobs": [{"job_id": "jb_1"}]},
            {"folder_id": "fd_2", "jobs": [{"job_id": "jb_2", "d_flag": True}, {"job_id": "jb_3",
             "workflows": [summary]}]},
            {"folder_id": "fd_3", "jobs": None},
        ]
    }  # fmt: skip
    assert hidden_branches(workspace) == ({"fd_1"}, {"jb_1", "jb_2"})
    placement = locate_workflow(workspace, "wf_1")
    assert placement is not None and placement.summary is summary and not placement.hidden
    assert locate_workflow(workspace, "wf_2") is None
    assert hidden_branches({"folders": None}) == (set(), set())


def test_sort_key_keeps_millisecond_precision() -> None:
    earlier = {"id": "b", "created_at": datetime(2024, 1, 1, 0, 0, 0, 1000)}
    later = {"id": "a", "created_at": datetime(2024, 1, 1) + timedelta(milliseconds=2)}
    assert sort_key(later, "id") < sort_key(earlier, "id")
