"""Every workspace, folder, job and workflow endpoint answered by the new side as legacy does.

Both sides get the same requests (same clock, same minted ids) and each pair of answers is
compared with the shadow comparator under shadow_rules.yaml: same status, same body. The
differences the new side makes on purpose are asserted as exactly the declared ones."""

# ruff: noqa: E501  (request tables read best one case per line)
from __future__ import annotations

from typing import Any

import pytest
from tree_handler_support import Sides, Tenant

from shadow_compare.model import Verdict

WS, WF = "/workspace", "/workflow"


async def build_tree(sides: Sides, tenant: Tenant) -> dict[str, Any]:
    """A workspace with two folders, jobs and workflows, built through both sides alike."""
    ids: dict[str, Any] = {}
    ws = await sides.same(
        "POST", f"{WS}/addWorkspace", tenant, body={"workspace_name": "Sales", "description": "d"}
    )
    ids["ws"] = ws["data"]["workspace_id"]
    sides.advance(1)
    for folder_name in ("ingest", "report"):
        folder = await sides.same(
            "POST",
            f"{WS}/addFolder",
            tenant,
            body={"workspace_id": ids["ws"], "folder_name": folder_name},
        )
        ids[folder_name] = folder["data"]["folder_id"]
        sides.advance(1)
    job = await sides.same(
        "POST", f"{WS}/addJob", tenant,
        body={"workspace_id": ids["ws"], "folder_id": ids["ingest"], "job_name": "nightly", "environment": "prod"},
    )  # fmt: skip
    ids["job"] = job["data"]["job_id"]
    ids["wf"] = []
    for name in ("load", "clean", "publish"):
        sides.advance(1)
        added = await sides.same(
            "POST", f"{WF}/addWorkflow", tenant,
            body={"workspace_id": ids["ws"], "folder_id": ids["ingest"], "job_id": ids["job"],
                  "workflow_name": name, "workFlowDiagram": '{"nodes": [1],  "edges": []}',
                  "parameters": {"b": 1, "a": [2]}, "tags": ["t"]},
        )  # fmt: skip
        ids["wf"].append(added["data"]["workflow_id"])
    return ids


async def test_workspace_endpoints_match_legacy(sides: Sides, tenant: Tenant) -> None:
    created = await sides.same("POST", f"{WS}/addWorkspace", tenant, body={"workspace_name": "A"})
    assert created["data"]["workspace_name"] == "A"
    sides.advance(1)
    await sides.same(
        "POST", f"{WS}/addWorkspace", tenant, body={"workspace_name": "B", "description": None}
    )
    workspace_id = created["data"]["workspace_id"]
    for body in (
        {"workspace_name": "A"},  # duplicate name: 409
        {},  # missing name: 400
        {"workspace_name": 5},
        {"workspace_name": "C", "description": 7},
    ):
        await sides.same("POST", f"{WS}/addWorkspace", tenant, body=body)
    listed = await sides.same("GET", f"{WS}/getAllWorkspace", tenant)
    assert [w["workspace_name"] for w in listed["data"]] == ["B", "A"] and listed["total"] == 2
    for params in (
        {"per_page": "1", "page": "2"},
        {"per_page": "0"},
        {"page": "x"},
        {"per_page": "500"},
    ):
        await sides.same("GET", f"{WS}/getAllWorkspace", tenant, params)
    sides.advance(5)
    for body in (
        {"workspace_id": workspace_id, "workspace_name": "A2", "description": "new"},
        {"workspace_id": workspace_id, "workspace_name": "B"},  # taken: 409
        {"workspace_id": workspace_id, "workspace_name": "A2"},  # its own name: fine
        {"workspace_id": "ws_000000000000"},
        {},
    ):
        await sides.same("POST", f"{WS}/updateWorkspace", tenant, body=body)
    got = await sides.same("GET", f"{WS}/getWorkspace", tenant, {"workspace_id": workspace_id})
    assert got["data"]["folders"] == [] and got["data"]["updated_at"] == "2026-03-01 12:30:51"
    await sides.same("GET", f"{WS}/getWorkspace", tenant, {})
    await sides.same(
        "POST",
        f"{WS}/deleteWorkspace",
        tenant,
        body={"workspace_id": workspace_id, "reason_to_delete": "x"},
    )
    await sides.same("POST", f"{WS}/deleteWorkspace", tenant, body={"workspace_id": workspace_id})
    await sides.same("GET", f"{WS}/getWorkspace", tenant, {"workspace_id": workspace_id})
    listed = await sides.same("GET", f"{WS}/getAllWorkspace", tenant)
    assert listed["total"] == 1
    # The deleted name is free again.
    await sides.same("POST", f"{WS}/addWorkspace", tenant, body={"workspace_name": "A2"})
    await sides.same("GET", f"{WS}/getAllWorkspace", None)
    await sides.same("POST", f"{WS}/addWorkspace", tenant, body=b"[1]")


async def test_folder_and_job_endpoints_match_legacy(sides: Sides, tenant: Tenant) -> None:
    ids = await build_tree(sides, tenant)
    ws, ingest, report, job = ids["ws"], ids["ingest"], ids["report"], ids["job"]
    sides.advance(10)
    for body in (
        {"workspace_id": ws, "folder_name": "ingest"},  # 409
        {"workspace_id": ws},
        {"workspace_id": "ws_000000000000", "folder_name": "x"},
        {"folder_name": "x"},
    ):
        await sides.same("POST", f"{WS}/addFolder", tenant, body=body)
    for body in (
        {"workspace_id": ws, "folder_id": ingest, "folder_name": "ingest2", "description": "moved"},
        {"workspace_id": ws, "folder_id": ingest, "folder_name": "report"},  # 409
        {"workspace_id": ws, "folder_id": ingest, "folder_name": "ingest2"},
        {"workspace_id": ws, "folder_id": "fd_000000000000"},
        {"workspace_id": ws},
    ):
        await sides.same("POST", f"{WS}/updateFolder", tenant, body=body)
    sides.advance(1)
    for body in (
        {"workspace_id": ws, "folder_id": report, "job_name": "weekly", "description": "w"},
        {"workspace_id": ws, "folder_id": ingest, "job_name": "nightly"},  # 409
        {"workspace_id": ws, "folder_id": ingest, "job_name": "nightly", "environment": 3},
        {"workspace_id": ws, "folder_id": "fd_000000000000", "job_name": "x"},
    ):
        await sides.same("POST", f"{WS}/addJob", tenant, body=body)
    deps = [ids["wf"][2], ids["wf"][0], "wf_00000000dead"]  # a dangling id is kept as given
    for body in (
        {"workspace_id": ws, "folder_id": ingest, "job_id": job, "job_name": "nightly-2",
         "environment": "qa", "workflow_dependency": deps},
        {"workspace_id": ws, "folder_id": ingest, "job_id": job, "workflow_dependency": "x"},
        {"workspace_id": ws, "folder_id": ingest, "job_id": job, "workflow_dependency": None},
        {"workspace_id": ws, "folder_id": ingest, "job_id": job, "workflow_dependency": deps},
        {"workspace_id": ws, "folder_id": report, "job_id": job},  # job not in that folder
        {"workspace_id": ws, "folder_id": ingest, "job_id": "jb_000000000000"},
    ):  # fmt: skip
        await sides.same("POST", f"{WS}/updateJob", tenant, body=body)
    tree = await sides.same("GET", f"{WS}/getWorkspace", tenant, {"workspace_id": ws})
    folders = tree["data"]["folders"]
    assert [f["folder_name"] for f in folders] == ["ingest2", "report"]
    assert folders[0]["jobs"][0]["workflow_dependency"] == deps
    assert [w["workflow_name"] for w in folders[0]["jobs"][0]["workflows"]] == [
        "load",
        "clean",
        "publish",
    ]
    weekly = folders[1]["jobs"][0]["job_id"]
    await sides.same(
        "POST",
        f"{WS}/deleteJob",
        tenant,
        body={"workspace_id": ws, "folder_id": report, "job_id": weekly, "reason_to_delete": "old"},
    )
    await sides.same(
        "POST",
        f"{WS}/deleteJob",
        tenant,
        body={"workspace_id": ws, "folder_id": report, "job_id": weekly},
    )
    # The workflows under a deleted job are gone on both sides.
    await sides.same(
        "POST",
        f"{WS}/deleteJob",
        tenant,
        body={"workspace_id": ws, "folder_id": ingest, "job_id": job},
    )
    for workflow_id in ids["wf"]:
        await sides.same("GET", f"{WF}/getWorkflow", tenant, {"workflow_id": workflow_id})
    await sides.same("GET", f"{WF}/getWorkflows", tenant, {"workspace_id": ws})
    await sides.same("GET", f"{WF}/getWorkflows", tenant, {"job_id": job})
    await sides.same(
        "POST", f"{WS}/deleteFolder", tenant, body={"workspace_id": ws, "folder_id": report}
    )
    await sides.same(
        "POST", f"{WS}/deleteFolder", tenant, body={"workspace_id": ws, "folder_id": report}
    )
    tree = await sides.same("GET", f"{WS}/getWorkspace", tenant, {"workspace_id": ws})
    assert [f["folder_name"] for f in tree["data"]["folders"]] == ["ingest2"]
    # A name freed by a deletion can be taken again.
    await sides.same(
        "POST", f"{WS}/addFolder", tenant, body={"workspace_id": ws, "folder_name": "report"}
    )


async def test_workflow_endpoints_match_legacy(sides: Sides, tenant: Tenant) -> None:
    ids = await build_tree(sides, tenant)
    ws, ingest, job = ids["ws"], ids["ingest"], ids["job"]
    load, clean, publish = ids["wf"]
    got = await sides.same("GET", f"{WF}/getWorkflow", tenant, {"workflow_id": load})
    assert got["data"]["workFlowDiagram"] == '{"nodes": [1],  "edges": []}'  # the string as sent
    await sides.same("GET", f"{WF}/getWorkflow", tenant, {"workflow_id": "wf_000000000000"})
    await sides.same("GET", f"{WF}/getWorkflow", tenant, {})
    for params in (
        {"workspace_id": ws}, {"job_id": job}, {"workspace_id": ws, "job_id": job},
        {"workspace_id": ws, "per_page": "2", "page": "2"}, {}, {"job_id": "jb_000000000000"},
        {"workspace_id": "ws_000000000000"}, {"workspace_id": ws, "per_page": "-1"},
    ):  # fmt: skip
        await sides.same("GET", f"{WF}/getWorkflows", tenant, params)
    base = {"workspace_id": ws, "folder_id": ingest, "job_id": job}
    for body in (
        {**base, "workflow_name": "load"},  # 409
        {**base, "workflow_name": "x", "tags": "t"},
        {**base, "workflow_name": "x", "parameters": []},
        {**base, "job_id": "jb_000000000000", "workflow_name": "x"},
        {**base, "workflow_name": "bare"},  # defaults: empty diagram, {} parameters, [] tags
    ):
        await sides.same("POST", f"{WF}/addWorkflow", tenant, body=body)
    sides.advance(3)
    # Updates: each answer differs only where declared (the new side bumps version).
    for body in (
        {"workflow_id": load, "workflow_name": "load-2", "description": "d", "is_active": False,
         "notification": {"on_failure": True, "emails": []}, "workFlowDiagram": "not json"},
        {"workflow_id": clean, "tags": ["a", "b"], "parameters": None, "source_connectorid": "cn_x"},
    ):  # fmt: skip
        result, legacy, new = await sides.compare("POST", f"{WF}/updateWorkflow", tenant, body=body)
        assert [(d.path, d.verdict, d.rule) for d in result.differences] == [
            ("$.data.version", Verdict.EXPECTED, "update-bumps-version")
        ], result.differences
        assert new.json()["data"]["version"] == legacy.json()["data"]["version"] + 1
        # The reverse sync carries the bumped version back to legacy's document.
        await sides.db["workflow"].update_one(
            {"workflow_id": body["workflow_id"]},
            {"$set": {"version": new.json()["data"]["version"]}},
        )
    for body in (
        {"workflow_id": load, "workflow_name": "clean"},  # 409
        {"workflow_id": load, "is_active": "yes"},
        {"workflow_id": load, "tags": [1]},
        {"workflow_id": "wf_000000000000"},
        {},
    ):
        await sides.same("POST", f"{WF}/updateWorkflow", tenant, body=body)
    tree = await sides.same("GET", f"{WS}/getWorkspace", tenant, {"workspace_id": ws})
    summaries = tree["data"]["folders"][0]["jobs"][0]["workflows"]
    assert [s["workflow_name"] for s in summaries][:3] == ["load-2", "clean", "publish"]
    await sides.same("GET", f"{WF}/getWorkflow", tenant, {"workflow_id": load})
    await sides.same("GET", f"{WF}/getWorkflows", tenant, {"workspace_id": ws})
    # Check-out, check-in and the history.
    other = Tenant(tenant.subscription_id, "usr_0000000000ff")
    sides.advance(1)
    await sides.same(
        "POST", f"{WF}/checkOut", tenant, body={"workflow_id": publish, "comment": "editing"}
    )
    await sides.same(
        "POST", f"{WF}/checkOut", tenant, body={"workflow_id": publish}
    )  # holder again
    await sides.same("POST", f"{WF}/checkOut", other, body={"workflow_id": publish})  # 403
    await sides.same("POST", f"{WF}/checkIn", other, body={"workflow_id": publish})  # 403
    sides.advance(1)
    checked_in = await sides.same(
        "POST", f"{WF}/checkIn", tenant, body={"workflow_id": publish, "comment": "v2"}
    )
    assert checked_in["data"]["version"] == 2 and checked_in["data"]["is_checked_out"] is False
    await sides.same("POST", f"{WF}/checkIn", other, body={"workflow_id": publish})  # free now
    await sides.same("POST", f"{WF}/checkOut", tenant, body={"workflow_id": "wf_000000000000"})
    versions = await sides.same("GET", f"{WF}/getVersions", tenant, {"workflow_id": publish})
    assert [(v["version_number"], v["change_type"]) for v in versions["data"]] == [
        (3, "check_in"),
        (2, "check_in"),
        (1, "check_out"),
        (1, "check_out"),
    ]
    assert versions["data"][1]["workflow_snapshot"]["version"] == 2
    await sides.same(
        "GET", f"{WF}/getVersions", tenant, {"workflow_id": publish, "per_page": "1", "page": "2"}
    )
    await sides.same("GET", f"{WF}/getVersions", tenant, {"workflow_id": "wf_000000000000"})
    await sides.same("GET", f"{WF}/getVersions", tenant, {})
    # A check-in whose comment is refused: legacy has already bumped the version when it
    # refuses (its writes are separate); the new side's transaction leaves nothing behind.
    bad = {"workflow_id": publish, "comment": 5}
    await sides.same("POST", f"{WF}/checkIn", tenant, body=bad)
    legacy_doc = await sides.db["workflow"].find_one({"workflow_id": publish})
    assert legacy_doc is not None and legacy_doc["version"] == 4
    new_now = await sides.call_new("GET", f"{WF}/getWorkflow", tenant, {"workflow_id": publish})
    assert new_now.json()["data"]["version"] == 3
    await sides.db["workflow"].update_one({"workflow_id": publish}, {"$set": {"version": 3}})
    # Deletion.
    await sides.same("POST", f"{WF}/deleteWorkflow", tenant, body={"workflow_id": publish})
    await sides.same("POST", f"{WF}/deleteWorkflow", tenant, body={"workflow_id": publish})
    await sides.same("GET", f"{WF}/getVersions", tenant, {"workflow_id": publish})
    await sides.same("GET", f"{WF}/getWorkflows", tenant, {"job_id": job})
    await sides.same("GET", f"{WS}/getWorkspace", tenant, {"workspace_id": ws})
    await sides.same("POST", f"{WF}/addWorkflow", tenant, body={**base, "workflow_name": "publish"})


@pytest.mark.parametrize(
    ("method", "path", "fields"),
    [
        ("GET", f"{WS}/getWorkspace", {"workspace_id": "ws"}),
        ("POST", f"{WS}/updateWorkspace", {"workspace_id": "ws", "workspace_name": "mine"}),
        ("POST", f"{WS}/deleteWorkspace", {"workspace_id": "ws"}),
        ("POST", f"{WS}/addFolder", {"workspace_id": "ws", "folder_name": "f"}),
        ("POST", f"{WS}/updateFolder", {"workspace_id": "ws", "folder_id": "ingest"}),
        ("POST", f"{WS}/deleteFolder", {"workspace_id": "ws", "folder_id": "ingest"}),
        ("POST", f"{WS}/addJob", {"workspace_id": "ws", "folder_id": "ingest", "job_name": "j"}),
        ("POST", f"{WS}/updateJob", {"workspace_id": "ws", "folder_id": "ingest", "job_id": "job"}),
        ("POST", f"{WS}/deleteJob", {"workspace_id": "ws", "folder_id": "ingest", "job_id": "job"}),
        ("GET", f"{WF}/getWorkflow", {"workflow_id": "wf"}),
        ("GET", f"{WF}/getWorkflows", {"workspace_id": "ws"}),
        ("GET", f"{WF}/getWorkflows", {"job_id": "job"}),
        (
            "POST",
            f"{WF}/addWorkflow",
            {"workspace_id": "ws", "folder_id": "ingest", "job_id": "job", "workflow_name": "w"},
        ),
        ("POST", f"{WF}/updateWorkflow", {"workflow_id": "wf", "description": "mine"}),
        ("POST", f"{WF}/deleteWorkflow", {"workflow_id": "wf"}),
        ("POST", f"{WF}/checkOut", {"workflow_id": "wf"}),
        ("POST", f"{WF}/checkIn", {"workflow_id": "wf"}),
        ("GET", f"{WF}/getVersions", {"workflow_id": "wf"}),
    ],
)
async def test_another_tenants_ids_are_not_found(
    sides: Sides,
    tenant: Tenant,
    other_tenant: Tenant,
    method: str,
    path: str,
    fields: dict[str, str],
) -> None:
    ids = await build_tree(sides, tenant)
    named = {"ws": ids["ws"], "ingest": ids["ingest"], "job": ids["job"], "wf": ids["wf"][0]}
    values = {key: named.get(value, value) for key, value in fields.items()}
    params, body = (values, None) if method == "GET" else (None, values)
    answer = await sides.same(method, path, other_tenant, params, body)
    assert answer["status"] is False and "not found" in answer["message"]
    new = await sides.call_new(method, path, other_tenant, params, body)
    assert new.status == 404
    # The owner's tree is untouched.
    tree = await sides.same("GET", f"{WS}/getWorkspace", tenant, {"workspace_id": ids["ws"]})
    assert tree["data"]["workspace_name"] == "Sales"
    assert len(tree["data"]["folders"][0]["jobs"][0]["workflows"]) == 3
