"""The two WebSockets, through Starlette's TestClient (one event loop for HTTP and sockets)."""

from __future__ import annotations

import uuid
import warnings
from collections.abc import Iterator
from typing import Any

import pytest
from starlette.exceptions import StarletteDeprecationWarning
from starlette.websockets import WebSocketDisconnect

with warnings.catch_warnings():
    # Starlette's TestClient now prefers the httpx2 package; httpx is what this project uses.
    warnings.simplefilter("ignore", StarletteDeprecationWarning)
    from starlette.testclient import TestClient

from legacy_emulator.app import create_app
from strangler.mongo import open_database
from strangler.tokens import mint_token

RUNNABLE = '{"nodes": [{"id": "a"}], "edges": []}'


@pytest.fixture
def client(secret: str) -> Iterator[TestClient]:
    db = open_database(f"memory://legacy-realtime-{uuid.uuid4().hex}")
    app = create_app(db, jwt_secret=secret, run_step_seconds=0.01, password_rounds=4)
    with TestClient(app) as test_client:
        yield test_client


def _post(client: TestClient, tenant: Any, path: str, **body: Any) -> Any:
    response = client.post(path, json=body, headers=tenant.headers)
    assert response.status_code in (200, 201), response.text
    return response.json()["data"]


def _workflow(client: TestClient, tenant: Any, diagram: str = RUNNABLE) -> str:
    ws = _post(client, tenant, "/workspace/addWorkspace", workspace_name="W")
    folder = _post(
        client, tenant, "/workspace/addFolder", workspace_id=ws["workspace_id"], folder_name="F"
    )
    job = _post(
        client,
        tenant,
        "/workspace/addJob",
        workspace_id=ws["workspace_id"],
        folder_id=folder["folder_id"],
        job_name="J",
    )
    workflow = _post(
        client,
        tenant,
        "/workflow/addWorkflow",
        workspace_id=ws["workspace_id"],
        folder_id=folder["folder_id"],
        job_id=job["job_id"],
        workflow_name="wf",
        workFlowDiagram=diagram,
    )
    return str(workflow["workflow_id"])


def test_run_now_socket_hears_queued_running_completed(client, tenant_a) -> None:
    workflow_id = _workflow(client, tenant_a)
    with client.websocket_connect(f"/ws/runNow/{workflow_id}?token={tenant_a.token}") as socket:
        run = _post(client, tenant_a, "/workflow/runNow", workflow_id=workflow_id)
        messages = [socket.receive_json() for _ in range(3)]
    assert [m["status"] for m in messages] == ["queued", "running", "completed"]
    for message in messages:
        assert set(message) == {"job_run_id", "workflow_id", "status", "ts"}
        assert (message["job_run_id"], message["workflow_id"]) == (run["job_run_id"], workflow_id)
    stored = client.get(
        "/jobRun/getRun", params={"job_run_id": run["job_run_id"]}, headers=tenant_a.headers
    ).json()["data"]
    assert stored["status"] == "completed"


def test_run_now_socket_hears_a_failure(client, tenant_a) -> None:
    workflow_id = _workflow(client, tenant_a, diagram="")
    with client.websocket_connect(f"/ws/runNow/{workflow_id}?token={tenant_a.token}") as socket:
        _post(client, tenant_a, "/workflow/runNow", workflow_id=workflow_id)
        statuses = [socket.receive_json()["status"] for _ in range(3)]
    assert statuses == ["queued", "running", "failed"]


@pytest.mark.parametrize("path", ["/ws/activity", "/ws/runNow/wf_000000000001"])
def test_a_bad_token_is_closed_with_policy_violation(client, secret, tenant_a, path) -> None:
    expired = mint_token(secret, tenant_a.user_id, tenant_a.subscription_id, ttl_seconds=-5)
    for query in ("", "?token=garbage", f"?token={expired}"):
        with client.websocket_connect(path + query) as socket:
            with pytest.raises(WebSocketDisconnect) as closed:
                socket.receive_json()
        assert closed.value.code == 1008


def test_run_updates_are_not_heard_by_another_tenant_naming_the_same_id(
    client, tenant_a, tenant_b
) -> None:
    workflow_id = _workflow(client, tenant_a)
    # Tenant B's own workflow, stored with the very same id (ids are not unique across tenants
    # in dirty production data).
    theirs = _workflow(client, tenant_b)
    app_db = client.app.state.emulator.db  # type: ignore[attr-defined]
    client.portal.call(  # type: ignore[union-attr]
        app_db["workflow"].update_one,
        {"workflow_id": theirs},
        {"$set": {"workflow_id": workflow_id}},
    )
    with client.websocket_connect(f"/ws/runNow/{workflow_id}?token={tenant_b.token}") as socket:
        _post(client, tenant_a, "/workflow/runNow", workflow_id=workflow_id)
        own = _post(client, tenant_b, "/workflow/runNow", workflow_id=workflow_id)
        first = socket.receive_json()
    assert (first["job_run_id"], first["status"]) == (own["job_run_id"], "queued")


def test_activity_socket_streams_only_the_callers_tenant(client, tenant_a, tenant_b) -> None:
    with (
        client.websocket_connect(f"/ws/activity?token={tenant_a.token}") as socket_a,
        client.websocket_connect(f"/ws/activity?token={tenant_b.token}") as socket_b,
    ):
        mine = _post(client, tenant_a, "/workspace/addWorkspace", workspace_name="A-side")
        theirs = _post(client, tenant_b, "/workspace/addWorkspace", workspace_name="B-side")
        heard_a = socket_a.receive_json()
        heard_b = socket_b.receive_json()
    assert (heard_a["object_id"], heard_a["action"]) == (mine["workspace_id"], "created")
    assert heard_a["subscription_id"] == tenant_a.subscription_id
    assert heard_a["current_data"]["workspace_name"] == "A-side"
    assert "_id" not in heard_a and isinstance(heard_a["created_at"], str)
    # B's first message is B's own write: A's came earlier and was never sent to B.
    assert (heard_b["object_id"], heard_b["subscription_id"]) == (
        theirs["workspace_id"],
        tenant_b.subscription_id,
    )


def test_closed_sockets_unsubscribe(client, tenant_a) -> None:
    hub = client.app.state.emulator.hub  # type: ignore[attr-defined]
    with client.websocket_connect(f"/ws/activity?token={tenant_a.token}") as socket:
        _post(client, tenant_a, "/workspace/addWorkspace", workspace_name="x")
        socket.receive_json()
        assert hub.subscriber_count() == 1
    _post(client, tenant_a, "/workspace/addWorkspace", workspace_name="y")
    assert hub.subscriber_count() == 0
