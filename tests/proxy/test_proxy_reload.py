"""Hot reload: on file change and SIGHUP, under load, without failing a request or dropping
a WebSocket; an invalid file is refused and the last good table stays in force."""

from __future__ import annotations

import asyncio
import pathlib
import re
import signal

import aiohttp
import httpx
import pytest
import yaml
from proxy_support import edit_file, rules_data, token, write_rules

from proxy.rules import parse_rules
from proxy.server import ENGINES


def _hash_of(data: dict) -> str:
    return parse_rules(yaml.safe_dump(data, sort_keys=False), "x").canonical_hash()


async def _wait_for_hash(admin_url: str, expected: str, seconds: float = 5.0) -> dict:
    async with httpx.AsyncClient(timeout=5) as client:
        for _ in range(int(seconds / 0.05)):
            status = (await client.get(admin_url + "/admin/status")).json()
            if status["table_hash"] == expected:
                return status
            await asyncio.sleep(0.05)
    raise AssertionError(f"table {expected} not applied; status: {status}")


@pytest.mark.parametrize("engine", ENGINES)
async def test_reload_under_load_fails_no_request_and_keeps_websockets(proxy_process) -> None:
    proxy = proxy_process()
    rules_path = pathlib.Path(proxy.proc.args[proxy.proc.args.index("--rules") + 1])
    failures: list[str] = []
    served = 0
    stop = asyncio.Event()

    async def load() -> None:
        nonlocal served
        async with httpx.AsyncClient(timeout=10) as client:
            while not stop.is_set():
                try:
                    read = await client.get(proxy.url + "/connectors/getConnectors")
                    write = await client.post(proxy.url + "/users/addUser", json={"n": 1})
                except httpx.HTTPError as exc:
                    failures.append(repr(exc))
                    continue
                for resp in (read, write):
                    if resp.status_code != 200:
                        failures.append(f"{resp.request.url.path}: {resp.status_code}")
                served += 2

    async def slow() -> None:
        """Requests that are in flight (legacy takes 0.3 s) while tables are swapped."""
        nonlocal served
        async with httpx.AsyncClient(timeout=10) as client:
            while not stop.is_set():
                try:
                    resp = await client.get(proxy.url + "/slow?seconds=0.3")
                except httpx.HTTPError as exc:
                    failures.append(repr(exc))
                    continue
                if resp.status_code != 200:
                    failures.append(f"/slow: {resp.status_code}")
                served += 1

    async def traffic_during(step: int) -> None:
        start = served
        for _ in range(500):
            if served >= start + 20:
                return
            await asyncio.sleep(0.02)
        raise AssertionError(f"no traffic flowed around reload {step}")

    async def status() -> dict:
        async with httpx.AsyncClient(timeout=5) as client:
            return (await client.get(proxy.admin_url + "/admin/status")).json()

    async with aiohttp.ClientSession() as session:
        ws = await session.ws_connect(
            proxy.url.replace("http", "ws") + f"/ws/activity?token={token()}"
        )
        await ws.receive_json(timeout=5)
        workers = [asyncio.create_task(load()) for _ in range(4)]
        workers += [asyncio.create_task(slow()) for _ in range(2)]
        await traffic_during(-1)

        # Valid changes by file, alternating with SIGHUP, plus one invalid file in between.
        for step in range(6):
            data = rules_data(groups={"mode": "legacy", "fenced": step % 2 == 0})
            data["fence_retry_after"] = 1 + step
            write_rules(rules_path, data)
            if step % 2:
                proxy.proc.send_signal(signal.SIGHUP)
            await _wait_for_hash(proxy.admin_url, _hash_of(data))
            await traffic_during(step)
            await ws.send_str(f"still open {step}")
            assert await ws.receive_str(timeout=5) == f"echo:still open {step}"
            if step == 3:
                good = _hash_of(data)
                edit_file(rules_path, "mode: legacy", "mode: lagacy")
                for _ in range(100):
                    refused = await status()
                    if refused["file_refused"]:
                        break
                    await asyncio.sleep(0.05)
                assert refused["table_hash"] == good
                assert refused["file_refused"] is True
                assert "unknown mode 'lagacy'" in refused["last_refusal"]["error"]
                await traffic_during(step)

        stop.set()
        await asyncio.gather(*workers)
        await ws.send_str("after reloads")
        assert await ws.receive_str(timeout=5) == "echo:after reloads"
        await ws.close()

    assert failures == []
    final = await status()
    assert final["reloads_refused"] == 1 and final["file_refused"] is False
    metrics = proxy.metrics_text()
    assert 'strangler_proxy_reloads_total{result="refused"} 1.0' in metrics
    assert 'strangler_proxy_reloads_total{result="applied"} 6.0' in metrics
    assert f'strangler_proxy_table_info{{table_hash="{final["table_hash"]}"}} 1.0' in metrics


async def test_sighup_alone_reloads(proxy_process) -> None:
    proxy = proxy_process("--watch-interval", "3600")
    rules_path = pathlib.Path(proxy.proc.args[proxy.proc.args.index("--rules") + 1])
    before = proxy.status()["table_hash"]
    data = rules_data(roles={"mode": "legacy", "fenced": True})
    write_rules(rules_path, data)
    await asyncio.sleep(0.3)
    assert proxy.status()["table_hash"] == before  # not polled: only SIGHUP applies it
    proxy.proc.send_signal(signal.SIGHUP)
    status = await _wait_for_hash(proxy.admin_url, _hash_of(data))
    assert status["entities"]["roles"]["fenced"] is True
    async with httpx.AsyncClient() as client:
        resp = await client.post(proxy.url + "/roles/addRole", json={})
    assert resp.status_code == 503


async def test_invalid_file_at_start_refuses_to_serve(tmp_path, upstream) -> None:
    from proxy_support import ProxyProcess

    path = tmp_path / "routing_rules.yaml"
    data = rules_data()
    data["entities"]["connectors"]["percent"] = 150
    write_rules(path, data)
    proc = ProxyProcess(path, upstream.url)
    code = proc.proc.wait(30)
    output = proc.stop()
    assert code == 2
    assert f"{path}:" in output and "percent" in output and "fix:" in output


@pytest.mark.parametrize("engine", ENGINES)
async def test_refused_reload_keeps_table_and_shows_in_status_and_metrics(
    start_proxy, http
) -> None:
    proxy = await start_proxy()
    path = pathlib.Path(proxy.config.rules_path)
    good_hash = proxy.tables.current.table_hash
    edit_file(path, "version: 1", "version: 1\nunexpected: true")
    resp = await http.post(proxy.admin_url + "/admin/reload")
    assert resp.status_code == 422
    status = resp.json()
    assert status["applied"] is False and status["file_refused"] is True
    assert status["table_hash"] == good_hash
    assert "unknown key 'unexpected' in the top level" in status["last_refusal"]["error"]
    assert str(path) in status["last_refusal"]["error"]
    # Traffic is still routed by the last good table.
    assert (await http.get(proxy.url + "/connectors/getConnectors")).status_code == 200
    metrics = (await http.get(proxy.admin_url + "/metrics")).text
    # The file watcher may have refused the same file before the admin call did.
    refused = re.search(r'strangler_proxy_reloads_total\{result="refused"\} (\S+)', metrics)
    assert refused is not None and float(refused.group(1)) >= 1

    fixed = rules_data(connectors={"mode": "legacy", "sample_rate": 0.5})
    write_rules(path, fixed)
    status = await _wait_for_hash(proxy.admin_url, _hash_of(fixed))
    assert status["entities"]["connectors"]["sample_rate"] == 0.5
    assert status["file_refused"] is False
    assert status["table_hash"] != good_hash
    assert status["last_refusal"] is not None  # history kept for operators
