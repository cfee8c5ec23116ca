"""Helpers of the proxy tests: a real upstream over loopback, rules files, proxy processes.

The upstream is a small aiohttp server in its own thread and event loop, so it serves any
test's loop and the proxy subprocesses alike. It answers like the legacy API where the
tests need it (envelopes, cookies, WebSockets with close codes) and offers a few probes
(echo of what arrived, streamed upload and download, a slow answer).
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import pathlib
import socket
import subprocess
import sys
import threading
import time
from typing import Any

import aiohttp
import httpx
import yaml
from aiohttp import web

from strangler.tokens import mint_token

REPO = pathlib.Path(__file__).resolve().parents[2]
RULES = REPO / "routing_rules.yaml"
SECRET = "proxy-test-secret-0123456789abcdef"
CHUNK = bytes(range(256)) * 256  # 64 KiB of a known pattern
WS_CLOSES = web.AppKey("ws_closes", list)
DOWNLOADS = web.AppKey("downloads", list)


# One issue time for the whole run, so two mints of the same caller give the same token.
_ISSUED_AT = time.time()


def token(subscription_id: str = "sub_000000000000", user: str = "usr_000000000001") -> str:
    return mint_token(SECRET, user, subscription_id, now=_ISSUED_AT)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


# --- the upstream ----------------------------------------------------------------------------


def _envelope(data: Any, status: int = 200) -> web.Response:
    return web.json_response({"status": True, "message": "ok", "data": data}, status=status)


async def _echo(request: web.Request) -> web.Response:
    body = await request.read()
    resp = web.json_response(
        {
            "method": request.method,
            "path": request.raw_path,
            "query": request.query_string,
            "headers": [[k.decode(), v.decode()] for k, v in request.raw_headers],
            "body": body.decode("latin-1"),
            "host": request.host,
            # Which upstream connection carried it (the proxy's pool reuses connections).
            "peer_port": request.transport.get_extra_info("peername")[1]
            if request.transport
            else None,
        }
    )
    resp.set_cookie("session", "abc123", httponly=True)
    resp.set_cookie("theme", "dark")
    resp.headers["X-Upstream"] = "yes"
    return resp


async def _legacy_endpoint(request: web.Request) -> web.Response:
    body = await request.read()
    await asyncio.sleep(float(request.query.get("delay", "0")))  # a store taking its time
    return _envelope({"origin": "legacy", "path": request.path, "body": body.decode()})


async def _upload(request: web.Request) -> web.Response:
    digest = hashlib.sha256()
    size = 0
    async for chunk in request.content.iter_any():
        digest.update(chunk)
        size += len(chunk)
    return web.json_response(
        {"size": size, "sha256": digest.hexdigest(), "length": request.content_length}
    )


async def _download(request: web.Request) -> web.StreamResponse:
    size = int(request.query["size"])
    resp = web.StreamResponse(headers={"Content-Type": "application/octet-stream"})
    if request.query.get("chunked") != "1":
        resp.content_length = size
    await resp.prepare(request)
    sent = 0
    outcome = "aborted"
    try:
        while sent < size:
            part = CHUNK[: min(len(CHUNK), size - sent)]
            await resp.write(part)
            sent += len(part)
        await resp.write_eof()
        outcome = "complete"
    finally:
        request.app[DOWNLOADS].append((outcome, sent))
    return resp


async def _slow(request: web.Request) -> web.Response:
    await asyncio.sleep(float(request.query.get("seconds", "5")))
    return _envelope("late")


async def _websocket(request: web.Request) -> web.StreamResponse:
    if "token" not in request.query:
        return web.json_response({"status": False, "message": "Invalid token"}, status=401)
    ws = web.WebSocketResponse(protocols=("legacy.v1",))
    await ws.prepare(request)
    await ws.send_json({"hello": request.path, "token": request.query["token"]})
    async for msg in ws:
        if msg.type == aiohttp.WSMsgType.TEXT:
            if msg.data.startswith("close:"):
                _, code, reason = msg.data.split(":", 2)
                await ws.close(code=int(code), message=reason.encode())
                break
            await ws.send_str("echo:" + msg.data)
        elif msg.type == aiohttp.WSMsgType.BINARY:
            await ws.send_bytes(msg.data[::-1])
    request.app[WS_CLOSES].append(ws.close_code)
    return ws


def build_upstream_app() -> web.Application:
    app = web.Application(client_max_size=1024**3)
    app[WS_CLOSES] = []
    app[DOWNLOADS] = []
    app.router.add_route("*", "/echo", _echo)
    app.router.add_route("*", "/echo/{tail:.*}", _echo)
    app.router.add_post("/upload", _upload)
    app.router.add_get("/download", _download)
    app.router.add_get("/slow", _slow)
    app.router.add_get("/ws/activity", _websocket)
    app.router.add_get("/ws/runNow/{workflow_id}", _websocket)
    for path in ("/connectors/getConnectors", "/connectors/getConnector", "/users/getUsers"):
        app.router.add_get(path, _legacy_endpoint)
    for path in ("/connectors/addConnector", "/users/addUser"):
        app.router.add_post(path, _legacy_endpoint)
    return app


class ThreadedUpstream:
    """An aiohttp server on its own loop in a daemon thread."""

    def __init__(self) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.app = build_upstream_app()
        self._loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._runner: web.AppRunner | None = None

    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)
        self._runner = web.AppRunner(
            self.app, access_log=None, shutdown_timeout=0.5, handler_cancellation=True
        )
        self._loop.run_until_complete(self._runner.setup())
        site = web.TCPSite(self._runner, "127.0.0.1", self.port)
        self._loop.run_until_complete(site.start())
        self._ready.set()
        self._loop.run_forever()

    def start(self) -> None:
        self._thread.start()
        assert self._ready.wait(10), "upstream did not start"

    def stop(self) -> None:
        assert self._runner is not None
        asyncio.run_coroutine_threadsafe(self._runner.cleanup(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)
        self._loop.close()


def edit_file(path: pathlib.Path, old: str, new: str) -> None:
    """Replace the first ``old``, atomically (a reader never sees half a file)."""
    text = path.read_text()
    assert old in text, old
    tmp = path.with_suffix(".edit")
    tmp.write_text(text.replace(old, new, 1))
    os.replace(tmp, path)


# --- rules files -----------------------------------------------------------------------------


def rules_data(**entities: dict[str, Any]) -> dict[str, Any]:
    """The shipped rules with some entities' settings replaced (e.g. connectors={"mode": "new"})."""
    data = yaml.safe_load(RULES.read_text())
    for name, changes in entities.items():
        data["entities"][name].update(changes)
    return data


def write_rules(path: pathlib.Path, data: dict[str, Any]) -> pathlib.Path:
    """Write atomically (as editors do), so a reader never sees half a file."""
    tmp = path.with_suffix(".tmp")
    tmp.write_text(yaml.safe_dump(data, sort_keys=False))
    os.replace(tmp, path)
    return path


class ProxyProcess:
    def __init__(self, rules: pathlib.Path, legacy_url: str, *extra: str) -> None:
        self.port = free_port()
        self.admin_port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.admin_url = f"http://127.0.0.1:{self.admin_port}"
        env = {
            **os.environ,
            "LEGACY_URL": legacy_url,
            "JWT_SECRET": SECRET,
            # A database that exists, for handler modules that open a pool at start.
            "DATABASE_URL": os.environ.get(
                "TEST_PG_ADMIN_URL", "postgresql://root@127.0.0.1:5432/postgres"
            ),
        }
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "strangler.cli",
                "proxy",
                "serve",
                "--host",
                "127.0.0.1",
                "--port",
                str(self.port),
                "--admin-port",
                str(self.admin_port),
                "--rules",
                str(rules),
                "--watch-interval",
                "0.1",
                *extra,
            ],
            env=env,
            cwd=rules.parent,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
        )

    def wait_ready(self, timeout: float = 20.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                out = self.proc.stdout.read().decode() if self.proc.stdout else ""
                raise AssertionError(f"proxy exited with {self.proc.returncode}:\n{out}")
            try:
                if httpx.get(self.admin_url + "/readyz", timeout=0.5).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.05)
        raise AssertionError("proxy did not become ready")

    def status(self) -> dict[str, Any]:
        return json.loads(httpx.get(self.admin_url + "/admin/status", timeout=5).text)

    def metrics_text(self) -> str:
        return httpx.get(self.admin_url + "/metrics", timeout=5).text

    def rss_kib(self, field: str = "VmRSS") -> int:
        for line in pathlib.Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1])
        raise AssertionError(f"{field} not found")

    def reset_peak_rss(self) -> None:
        pathlib.Path(f"/proc/{self.proc.pid}/clear_refs").write_text("5")

    def stop(self) -> str:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        if self.proc.stdout is None:
            return ""
        with self.proc.stdout:
            return self.proc.stdout.read().decode()
