"""Mode dispatch with new-side handlers registered by the tests."""

from __future__ import annotations

import json

import pytest
from proxy_support import rules_data, token

from proxy.app import Limits
from proxy.server import ENGINES
from strangler.exchange import RecordedRequest, RecordedResponse

# The fast engine hands these modes to the ASGI app in-process; uvicorn serves it directly.
pytestmark = pytest.mark.parametrize("engine", ENGINES)

CONNECTOR_READS = ("GET /connectors/getConnectors", "GET /connectors/getConnector")
CONNECTOR_WRITES = (
    "POST /connectors/addConnector",
    "POST /connectors/updateConnector",
    "POST /connectors/deleteConnector",
    "POST /connectors/testConnector",
)


class RecordingSink:
    def __init__(self, accept: bool = True) -> None:
        self.accept = accept
        self.submitted: list[tuple[str, str, RecordedRequest, RecordedResponse, object]] = []

    def submit(self, entity, endpoint, request, primary, other, primary_again=None) -> bool:
        self.submitted.append((entity, endpoint, request, primary, other))
        return self.accept


class NewSide:
    """A new-side handler that answers like legacy would, marked as coming from new."""

    def __init__(self) -> None:
        self.calls: list[RecordedRequest] = []

    async def __call__(self, request: RecordedRequest) -> RecordedResponse:
        self.calls.append(request)
        body = {
            "status": True,
            "message": "ok",
            "data": {"origin": "new", "path": request.path, "body": request.body.decode()},
        }
        return RecordedResponse(
            status=201 if request.method == "POST" else 200,
            headers=(("content-type", "application/json"),),
            body=json.dumps(body).encode(),
        )


def _handlers(new_side: NewSide, endpoints=CONNECTOR_READS + CONNECTOR_WRITES):
    return {("connectors", endpoint): new_side for endpoint in endpoints}


def _auth() -> dict[str, str]:
    return {"Authorization": f"Bearer {token()}", "X-Request-Id": "rid-1"}


async def test_shadow_serves_legacy_and_submits_sampled_reads(start_proxy, http) -> None:
    sink, new_side = RecordingSink(), NewSide()
    proxy = await start_proxy(
        rules=rules_data(connectors={"mode": "shadow", "sample_rate": 1.0}),
        handlers=_handlers(new_side, CONNECTOR_READS),
        sink=sink,
    )
    resp = await http.get(proxy.url + "/connectors/getConnector?connector_id=cn_1", headers=_auth())
    assert resp.status_code == 200
    assert resp.json()["data"]["origin"] == "legacy"  # the client gets legacy's answer
    assert new_side.calls == []  # the new side is not called on the request path

    [(entity, endpoint, request, primary, other)] = sink.submitted
    assert (entity, endpoint) == ("connectors", "GET /connectors/getConnector")
    assert request.query == {"connector_id": "cn_1"}
    assert request.request_id == "rid-1"
    assert request.header("authorization") == f"Bearer {token()}"
    assert primary.side == "legacy" and primary.status == 200
    assert primary.body == resp.content
    compared = await other()
    assert compared.side == "new" and json.loads(compared.body)["data"]["origin"] == "new"

    # Writes stay on legacy and are never replayed on the new side.
    write = await http.post(proxy.url + "/connectors/addConnector", json={"a": 1}, headers=_auth())
    assert write.json()["data"]["origin"] == "legacy"
    assert len(sink.submitted) == 1

    metrics = (await http.get(proxy.admin_url + "/metrics")).text
    assert (
        'strangler_proxy_shadow_exchanges_total{entity="connectors",outcome="submitted"} 1.0'
        in metrics
    )


async def test_shadow_can_ask_a_new_side_running_apart(start_proxy, http) -> None:
    # A proxy serving connectors in new stands for the new side; the shadow proxy's
    # comparisons ask it over HTTP (--shadow-new-url) and never run a handler in-process.
    remote, here = NewSide(), NewSide()
    new_side = await start_proxy(
        rules=rules_data(connectors={"mode": "new"}), handlers=_handlers(remote)
    )
    sink = RecordingSink()
    proxy = await start_proxy(
        rules=rules_data(connectors={"mode": "shadow", "sample_rate": 1.0}),
        handlers=_handlers(here, CONNECTOR_READS),
        sink=sink,
        shadow_new_url=new_side.url,
    )
    resp = await http.get(proxy.url + "/connectors/getConnector?connector_id=cn_1", headers=_auth())
    assert resp.json()["data"]["origin"] == "legacy"
    [(_, _, request, _, other)] = sink.submitted
    compared = await other()
    assert compared.side == "new" and compared.status == 200
    assert json.loads(compared.body)["data"]["origin"] == "new"
    assert [call.query for call in remote.calls] == [{"connector_id": "cn_1"}]
    assert remote.calls[0].header("authorization") == request.header("authorization")
    assert here.calls == []


async def test_shadow_with_zero_sample_rate_submits_nothing(start_proxy, http) -> None:
    sink = RecordingSink()
    proxy = await start_proxy(
        rules=rules_data(connectors={"mode": "shadow", "sample_rate": 0.0}),
        handlers=_handlers(NewSide(), CONNECTOR_READS),
        sink=sink,
    )
    for _ in range(5):
        assert (await http.get(proxy.url + "/connectors/getConnectors")).status_code == 200
    assert sink.submitted == []


async def test_oversized_sample_is_skipped_and_counted_but_served(start_proxy, http) -> None:
    sink = RecordingSink()
    proxy = await start_proxy(
        rules=rules_data(users={"mode": "shadow", "sample_rate": 1.0}),
        handlers={
            ("users", "GET /users/getUsers"): NewSide(),
            ("users", "GET /users/getUser"): NewSide(),
        },
        sink=sink,
        limits=Limits(max_sample_bytes=10),
    )
    resp = await http.get(proxy.url + "/users/getUsers", headers=_auth())
    assert resp.status_code == 200 and resp.json()["data"]["origin"] == "legacy"
    assert sink.submitted == []
    metrics = (await http.get(proxy.admin_url + "/metrics")).text
    assert (
        'strangler_proxy_shadow_exchanges_total{entity="users",outcome="too_large"} 1.0' in metrics
    )


async def test_a_full_or_failing_sink_never_fails_the_client(start_proxy, http) -> None:
    class ExplodingSink:
        def submit(self, *args) -> bool:
            raise RuntimeError("comparator bug")

    for sink, outcome in ((RecordingSink(accept=False), "dropped"), (ExplodingSink(), "dropped")):
        proxy = await start_proxy(
            rules=rules_data(connectors={"mode": "shadow", "sample_rate": 1.0}),
            handlers=_handlers(NewSide(), CONNECTOR_READS),
            sink=sink,
        )
        resp = await http.get(proxy.url + "/connectors/getConnectors", headers=_auth())
        assert resp.status_code == 200 and resp.json()["data"]["origin"] == "legacy"
        metrics = (await http.get(proxy.admin_url + "/metrics")).text
        assert (
            f'strangler_proxy_shadow_exchanges_total{{entity="connectors",outcome="{outcome}"}} 1.0'
            in metrics
        )


async def test_new_mode_serves_reads_and_writes_from_the_handler(start_proxy, http) -> None:
    sink, new_side = RecordingSink(), NewSide()
    proxy = await start_proxy(
        rules=rules_data(connectors={"mode": "new", "sample_rate": 1.0}),
        handlers=_handlers(new_side),
        sink=sink,
    )
    read = await http.get(proxy.url + "/connectors/getConnectors?page=2", headers=_auth())
    assert read.status_code == 200
    assert read.json()["data"]["origin"] == "new"
    assert read.headers["x-request-id"] == "rid-1"
    assert new_side.calls[0].query_string == "page=2"

    write = await http.post(
        proxy.url + "/connectors/addConnector", json={"connector_name": "pg"}, headers=_auth()
    )
    assert write.status_code == 201
    assert json.loads(write.json()["data"]["body"]) == {"connector_name": "pg"}

    # Only the read was sampled; its other side is legacy.
    [(_, endpoint, _, primary, other)] = sink.submitted
    assert endpoint == "GET /connectors/getConnectors" and primary.side == "new"
    legacy_answer = await other()
    assert legacy_answer.side == "legacy"
    assert json.loads(legacy_answer.body)["data"]["origin"] == "legacy"

    # Paths outside the table still go to legacy in every mode.
    assert (await http.get(proxy.url + "/echo")).json()["method"] == "GET"
    # Other entities are untouched.
    users = await http.get(proxy.url + "/users/getUsers", headers=_auth())
    assert users.json()["data"]["origin"] == "legacy"


async def test_a_failing_handler_answers_500_in_the_envelope(start_proxy, http) -> None:
    async def broken(request: RecordedRequest) -> RecordedResponse:
        raise RuntimeError("bug in the new side")

    handlers = {("connectors", endpoint): broken for endpoint in CONNECTOR_READS + CONNECTOR_WRITES}
    proxy = await start_proxy(rules=rules_data(connectors={"mode": "new"}), handlers=handlers)
    resp = await http.get(proxy.url + "/connectors/getConnectors", headers=_auth())
    assert resp.status_code == 500
    assert resp.json() == {"status": False, "message": "Internal server error"}
    metrics = (await http.get(proxy.admin_url + "/metrics")).text
    assert 'strangler_proxy_upstream_errors_total{kind="handler_error",origin="new"} 1.0' in metrics
    assert (
        'strangler_proxy_requests_total{entity="connectors",mode="new",origin="new",'
        'status="500"} 1.0' in metrics
    )


async def test_canary_compares_with_the_side_that_did_not_serve(start_proxy, http) -> None:
    for percent, served_by, other_side in ((100, "new", "legacy"), (0, "legacy", "new")):
        sink = RecordingSink()
        proxy = await start_proxy(
            rules=rules_data(connectors={"mode": "canary", "percent": percent, "sample_rate": 1.0}),
            handlers=_handlers(NewSide(), CONNECTOR_READS),
            sink=sink,
        )
        resp = await http.get(proxy.url + "/connectors/getConnectors", headers=_auth())
        assert resp.json()["data"]["origin"] == served_by
        [(_, _, _, primary, other)] = sink.submitted
        assert primary.side == served_by
        compared = await other()
        assert compared.side == other_side
        assert json.loads(compared.body)["data"]["origin"] == other_side
