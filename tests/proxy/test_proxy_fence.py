"""Write fences: writes of a fenced entity get 503 + Retry-After, its reads keep flowing."""

from __future__ import annotations

import asyncio
import sys

import pytest
from proxy_support import free_port, rules_data

from control.flags import Change, SwitchFailed, SwitchSteps, switch_with_fence
from proxy.errors import AdminUnreachable
from proxy.fence_client import lift_fence, set_fence, writes_in_flight
from proxy.server import ENGINES


async def _write(http, proxy, path="/connectors/addConnector"):
    return await http.post(proxy.url + path, json={"connector_name": "x"})


@pytest.mark.parametrize("engine", ENGINES)
async def test_admin_fence_blocks_writes_not_reads_until_lifted(start_proxy, http) -> None:
    proxy = await start_proxy()
    fenced = await http.post(proxy.admin_url + "/admin/fence/connectors?seconds=30")
    assert fenced.status_code == 200

    write = await _write(http, proxy)
    assert write.status_code == 503
    assert 1 <= int(write.headers["retry-after"]) <= 2  # the rules' fence_retry_after bound
    assert write.json() == {
        "status": False,
        "message": f"connectors is being switched over; retry in {write.headers['retry-after']} s",
    }
    assert (await http.get(proxy.url + "/connectors/getConnectors")).status_code == 200
    # Another entity's writes pass.
    assert (await _write(http, proxy, "/users/addUser")).status_code == 200
    status = (await http.get(proxy.admin_url + "/admin/status")).json()
    assert 29 < status["admin_fences"]["connectors"] <= 30

    lifted = await http.delete(proxy.admin_url + "/admin/fence/connectors")
    assert lifted.json() == {"entity": "connectors", "lifted": True}
    assert (await _write(http, proxy)).status_code == 200
    metrics = (await http.get(proxy.admin_url + "/metrics")).text
    assert 'strangler_proxy_fenced_writes_total{entity="connectors"} 1.0' in metrics


async def test_admin_fence_is_bounded_and_expires_by_itself(start_proxy, http) -> None:
    proxy = await start_proxy()
    for bad in ("0", "-5", "601", "abc", "nan", "inf"):
        resp = await http.post(proxy.admin_url + f"/admin/fence/connectors?seconds={bad}")
        assert resp.status_code == 400, bad
    unknown = await http.post(proxy.admin_url + "/admin/fence/robots?seconds=5")
    assert unknown.status_code == 404
    assert (await _write(http, proxy)).status_code == 200  # none of those fenced anything

    await http.post(proxy.admin_url + "/admin/fence/connectors?seconds=1.5")
    assert (await _write(http, proxy)).status_code == 503
    await asyncio.sleep(1.6)
    assert (await _write(http, proxy)).status_code == 200


@pytest.mark.parametrize("engine", ENGINES)
async def test_rules_file_fence_applies_to_every_instance_reading_it(start_proxy, http) -> None:
    rules = rules_data(connectors={"mode": "legacy", "fenced": True})
    rules["fence_retry_after"] = 3
    first = await start_proxy(rules=rules)
    second = await start_proxy(rules=rules)
    for proxy in (first, second):
        write = await _write(http, proxy)
        assert write.status_code == 503
        assert write.headers["retry-after"] == "3"
        assert (await http.get(proxy.url + "/connectors/getConnector")).status_code == 200


async def test_fence_client_sets_and_lifts_on_every_instance(start_proxy, http) -> None:
    first, second = await start_proxy(), await start_proxy()
    admins = [first.admin_url, second.admin_url]
    results = await set_fence(admins, "connectors", 20)
    assert [r.admin_url for r in results] == admins
    for proxy in (first, second):
        assert (await _write(http, proxy)).status_code == 503
    await lift_fence(admins, "connectors")
    for proxy in (first, second):
        assert (await _write(http, proxy)).status_code == 200


async def test_fence_client_names_instances_that_did_not_apply(start_proxy, http) -> None:
    proxy = await start_proxy()
    dead = f"http://127.0.0.1:{free_port()}"
    with pytest.raises(AdminUnreachable) as info:
        await set_fence([proxy.admin_url, dead], "connectors", 20)
    assert [url for url, _ in info.value.failures] == [dead]
    assert dead in str(info.value)
    # The reachable instance did apply it: the caller knows to retry or lift.
    assert (await _write(http, proxy)).status_code == 503


async def _strangler(*args: str) -> tuple[int, str, str]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "strangler.cli",
        *args,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await proc.communicate()
    return proc.returncode or 0, out.decode(), err.decode()


async def test_fence_command_sets_and_lifts(start_proxy, http) -> None:
    proxy = await start_proxy()
    code, out, _ = await _strangler(
        "proxy", "fence", "connectors", "--admin", proxy.admin_url, "--seconds", "30"
    )
    assert code == 0
    assert f"{proxy.admin_url}: connectors writes fenced for 30 s" in out
    assert (await _write(http, proxy)).status_code == 503
    code, out, _ = await _strangler(
        "proxy", "fence", "connectors", "--admin", proxy.admin_url, "--lift"
    )
    assert code == 0 and "fence lifted" in out
    assert (await _write(http, proxy)).status_code == 200

    dead = f"http://127.0.0.1:{free_port()}"
    code, _, err = await _strangler(
        "proxy", "fence", "connectors", "--admin", dead, "--seconds", "5"
    )
    assert code == 2
    assert err.count("\n") == 1 and dead in err and "retry" in err


@pytest.mark.parametrize("engine", ENGINES)
async def test_a_path_variant_a_lenient_legacy_would_take_is_fenced_too(start_proxy, http) -> None:
    # Express (legacy's kind of router) takes these for /connectors/addConnector by default:
    # as unrouted paths they would pass the fence and reach legacy in any mode
    proxy = await start_proxy(rules=rules_data(connectors={"mode": "legacy", "fenced": True}))
    for variant in (
        "/connectors/addConnector/",
        "/Connectors/AddConnector",
        "//connectors//addConnector",
    ):
        assert (await _write(http, proxy, variant)).status_code == 503, variant
    other = await _write(http, proxy, "/connectors/addConnectors")  # another path altogether
    assert other.status_code == 404  # not fenced: forwarded, and the upstream knows it not
    # a read's variant is routed as the read (forwarded as sent: this upstream knows it not)
    assert (await http.get(proxy.url + "/connectors/getConnectors/")).status_code == 404
    metrics = (await http.get(proxy.admin_url + "/metrics")).text
    assert 'strangler_proxy_fenced_writes_total{entity="connectors"} 3.0' in metrics
    assert (
        'strangler_proxy_requests_total{entity="connectors",mode="legacy",origin="legacy",'
        'status="404"} 1.0' in metrics
    )


async def _nothing_to_drain(_fenced_at: float) -> tuple[bool, str]:
    return True, ""


async def _counted(http, proxy, entity: str = "connectors") -> None:
    """Until the proxy counts a write of ``entity`` in flight."""
    for _ in range(200):
        fence = (await http.get(f"{proxy.admin_url}/admin/fence/{entity}")).json()
        if fence["writes_in_flight"]:
            return
        await asyncio.sleep(0.01)
    raise AssertionError("the proxy never counted the write in flight")


@pytest.mark.parametrize("engine", ENGINES)
async def test_a_switch_waits_for_a_write_that_passed_before_the_fence(start_proxy, http) -> None:
    # A legacy write a moment from done (a password being hashed, a slow store) when the
    # switch fences: the flag must not move before it has landed, or the sync drained
    # before it would never carry it.
    proxy = await start_proxy()
    write = asyncio.create_task(_write(http, proxy, "/connectors/addConnector?delay=1.2"))
    await _counted(http, proxy)
    table_hash = (await http.get(proxy.admin_url + "/admin/status")).json()["table_hash"]
    answered_at_flip: list[bool] = []

    def flip() -> str:
        answered_at_flip.append(write.done())
        return table_hash

    steps = SwitchSteps(admin_urls=[proxy.admin_url], drained=_nothing_to_drain,
                        settle_seconds=0.05, drain_timeout=10.0)  # fmt: skip
    await switch_with_fence(Change("connectors", "legacy", "new", 0.0, 0.0), flip, steps)

    assert answered_at_flip == [True]
    assert (await write).status_code == 200
    assert "1 connectors write(s) that passed before the fence finished" in " ".join(steps.events)
    assert await writes_in_flight([proxy.admin_url], "connectors") == {proxy.admin_url: 0}


async def test_a_write_still_in_flight_past_the_bound_switches_nothing(start_proxy, http) -> None:
    proxy = await start_proxy()
    write = asyncio.create_task(_write(http, proxy, "/connectors/addConnector?delay=1.5"))
    await _counted(http, proxy)
    flips: list[str] = []
    steps = SwitchSteps(admin_urls=[proxy.admin_url], drained=_nothing_to_drain,
                        settle_seconds=0.05, drain_timeout=0.3)  # fmt: skip
    change = Change("connectors", "legacy", "new", 0.0, 0.0)
    with pytest.raises(SwitchFailed, match=r"still in flight \(http://127.0.0.1:\d+: 1\)"):
        await switch_with_fence(change, lambda: flips.append("flipped") or "", steps)
    assert flips == []
    assert (await http.get(proxy.admin_url + "/admin/status")).json()["admin_fences"] == {}
    assert (await write).status_code == 200
