"""Job runs: runNow's simulated life, getRuns filters and paging, getRun with logs."""

from __future__ import annotations

from datetime import UTC, datetime

RUNNABLE = '{"nodes": [{"id": "a"}], "edges": []}'


async def _finished(api, app, job_run_id: str) -> dict:
    await app.state.emulator.runner.drain()
    return await api.data("GET", "/jobRun/getRun", job_run_id=job_run_id)


async def test_run_now_queues_a_run_that_completes_with_logs(
    api, app, tree, new_workflow, tenant_a
) -> None:
    workflow = await new_workflow(api, tree, workFlowDiagram=RUNNABLE)
    response = await api.post("/workflow/runNow", workflow_id=workflow["workflow_id"])
    assert response.status_code == 200
    answer = response.json()["data"]
    assert answer["status"] == "queued" and answer["job_run_id"].startswith("run_")
    assert set(answer) == {"job_run_id", "status"}
    run = await _finished(api, app, answer["job_run_id"])
    assert run["status"] == "completed"
    assert (run["workflow_id"], run["job_id"], run["workspace_id"]) == (
        workflow["workflow_id"],
        tree.job_id,
        tree.workspace_id,
    )
    assert (run["triggered_by"], run["trigger_type"]) == (tenant_a.user_id, "manual")
    assert run["rows_processed"] > 0 and run["duration_ms"] >= 0
    assert run["completed_at"] is not None and run["error_message"] is None
    assert [entry["level"] for entry in run["logs"]] == ["INFO", "INFO", "INFO"]
    assert "Run completed" in run["logs"][-1]["message"]
    datetime.strptime(run["logs"][0]["ts"], "%Y-%m-%d %H:%M:%S")


async def test_a_workflow_whose_diagram_is_not_json_fails_its_run(
    api, app, tree, new_workflow
) -> None:
    workflow = await new_workflow(api, tree, workFlowDiagram="{broken")
    answer = await api.data("POST", "/workflow/runNow", workflow_id=workflow["workflow_id"])
    run = await _finished(api, app, answer["job_run_id"])
    assert run["status"] == "failed"
    assert run["error_message"] == "workFlowDiagram is not valid JSON"
    assert run["logs"][-1]["level"] == "ERROR"


async def test_get_runs_filters_and_lists_without_logs(api, db, tenant_a, tenant_b) -> None:
    def run(n: int, workflow: str, status: str, created: object, tenant=tenant_a) -> dict:
        return {
            "job_run_id": f"run_{n:012x}",
            "workflow_id": workflow,
            "subscription_id": tenant.subscription_id,
            "status": status,
            "created_at": created,
            "logs": [{"ts": created, "level": "INFO", "message": "m"}],
            "rows_processed": "120",  # a number stored as a string
        }

    await db["jobRun"].insert_many(
        [
            run(1, "wf_000000000001", "completed", datetime(2024, 1, 1, 0, 0, 0)),
            run(2, "wf_000000000001", "failed", "2024-02-01 00:00:00"),
            run(3, "wf_000000000002", "completed", 1709251200000),  # 2024-03-01
            run(4, "wf_000000000001", "completed", datetime(2024, 4, 1), tenant=tenant_b),
        ]
    )
    everything = (await api.get("/jobRun/getRuns")).json()
    assert everything["total"] == 3
    assert [r["job_run_id"] for r in everything["data"]] == [
        "run_000000000003",
        "run_000000000002",
        "run_000000000001",
    ]
    assert all("logs" not in r for r in everything["data"])
    assert everything["data"][0]["rows_processed"] == 120
    assert everything["data"][0]["created_at"] == "2024-03-01 00:00:00"

    async def ids(**params: str) -> list[str]:
        body = (await api.get("/jobRun/getRuns", **params)).json()
        assert body["total"] == len(body["data"])
        return [r["job_run_id"][-1] for r in body["data"]]

    assert await ids(workflow_id="wf_000000000001") == ["2", "1"]
    assert await ids(status="completed") == ["3", "1"]
    assert await ids(**{"from": "2024-01-15 00:00:00"}) == ["3", "2"]
    assert await ids(to="2024-02-01 00:00:00") == ["2", "1"]
    assert await ids(**{"from": "2024-01-15", "to": "2024-02-15"}) == ["2"]
    bad = await api.get("/jobRun/getRuns", **{"from": "last week"})
    assert bad.status_code == 400


async def test_get_run_is_tenant_scoped(api, api_b, app, tree, new_workflow) -> None:
    workflow = await new_workflow(api, tree, workFlowDiagram=RUNNABLE)
    answer = await api.data("POST", "/workflow/runNow", workflow_id=workflow["workflow_id"])
    await app.state.emulator.runner.drain()
    theirs = await api_b.get("/jobRun/getRun", job_run_id=answer["job_run_id"])
    assert theirs.status_code == 404
    assert theirs.json() == {"status": False, "message": "Job run not found"}
    assert (await api_b.get("/jobRun/getRuns")).json()["total"] == 0


async def test_runs_of_a_deleted_workflow_stay_listed(api, app, tree, new_workflow) -> None:
    workflow = await new_workflow(api, tree, workFlowDiagram=RUNNABLE)
    answer = await api.data("POST", "/workflow/runNow", workflow_id=workflow["workflow_id"])
    await app.state.emulator.runner.drain()
    await api.data("POST", "/workflow/deleteWorkflow", workflow_id=workflow["workflow_id"])
    assert (await api.get("/jobRun/getRuns")).json()["total"] == 1
    again = await api.post("/workflow/runNow", workflow_id=workflow["workflow_id"])
    assert again.status_code == 404
    run = await api.data("GET", "/jobRun/getRun", job_run_id=answer["job_run_id"])
    assert run["status"] == "completed"


async def test_runs_take_their_times_from_the_emulators_clock(api, app, tree, new_workflow) -> None:
    fixed = datetime(2025, 6, 1, 8, 0, 0, 123000, tzinfo=UTC)
    app.state.emulator.clock = lambda: fixed
    workflow = await new_workflow(api, tree, workFlowDiagram=RUNNABLE)
    answer = await api.data("POST", "/workflow/runNow", workflow_id=workflow["workflow_id"])
    run = await _finished(api, app, answer["job_run_id"])
    assert (run["created_at"], run["completed_at"], run["duration_ms"]) == (
        "2025-06-01 08:00:00",
        "2025-06-01 08:00:00",
        0,
    )
    assert {entry["ts"] for entry in run["logs"]} == {"2025-06-01 08:00:00"}
