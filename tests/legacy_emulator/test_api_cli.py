"""``strangler legacy ...``: serving for real, and one clear line for what a person must fix."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time

import httpx
import pytest
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import connect

from legacy_emulator.cli import bind_socket
from strangler.cli import main
from strangler.errors import ConfigError
from strangler.tokens import mint_token


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def test_a_port_in_use_is_one_clear_line(capsys) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        port = taken.getsockname()[1]
        with pytest.raises(ConfigError, match="already in use"):
            bind_socket("127.0.0.1", port)
        assert main(["legacy", "serve", "--port", str(port)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [
        f"strangler legacy: --port: 127.0.0.1:{port} is already in use; "
        "stop what listens there or pass another --port"
    ]


def test_bad_settings_and_arguments_are_one_clear_line(monkeypatch, capsys, tmp_path) -> None:
    monkeypatch.setenv("MONGO_URL", "postgres://wrong-kind")
    assert main(["legacy", "serve", "--port", str(_free_port())]) == 2
    assert "MONGO_URL" in capsys.readouterr().err
    monkeypatch.delenv("MONGO_URL")
    assert main(["legacy", "serve", "--with-data", "huge"]) == 2
    assert "neither a scale" in capsys.readouterr().err
    assert main(["legacy", "load", str(tmp_path / "missing")]) == 2
    assert "is not a directory" in capsys.readouterr().err
    assert main(["legacy", "seed", "--scale", "small", "--dirty", "2"]) == 2
    assert "between 0 and 1" in capsys.readouterr().err


def test_serve_with_data_answers_requests(secret) -> None:
    port = _free_port()
    env = {**os.environ, "JWT_SECRET": secret, "MONGO_URL": "memory://served"}
    command = [sys.executable, "-m", "strangler.cli", "legacy", "serve", "--port", str(port)]
    server = subprocess.Popen(
        [*command, "--with-data", "small"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        token_line = ""
        assert server.stdout is not None
        for line in server.stdout:
            if "strangler token" in line:
                token_line = line
            if "legacy emulator on" in line:
                break
        user = token_line.split("--user ")[1].split()[0]
        subscription = token_line.split("--subscription ")[1].split()[0]
        headers = {"Authorization": f"Bearer {mint_token(secret, user, subscription)}"}
        url = f"http://127.0.0.1:{port}/workspace/getAllWorkspace"
        deadline = time.monotonic() + 20
        while True:
            try:
                response = httpx.get(url, headers=headers, timeout=2)
                break
            except httpx.TransportError:
                assert time.monotonic() < deadline, "the server never answered"
                time.sleep(0.1)
        assert response.status_code == 200
        assert response.json()["total"] > 0
        assert httpx.get(url, timeout=2).json() == {"status": False, "message": "Invalid token"}
        # Through a real server, a bad socket token still reaches the client as code 1008.
        with connect(f"ws://127.0.0.1:{port}/ws/activity?token=bad", open_timeout=5) as socket:
            with pytest.raises(ConnectionClosed) as closed:
                socket.recv(timeout=5)
        assert closed.value.rcvd is not None and closed.value.rcvd.code == 1008
    finally:
        server.terminate()
        server.wait(timeout=10)
        if server.stdout is not None:
            server.stdout.close()


def test_load_lists_a_bad_line_and_exits_non_zero(monkeypatch, capsys, tmp_path) -> None:
    monkeypatch.setenv("MONGO_URL", f"memory://load-{time.time_ns()}")
    good = '{"connector_id": "cn_000000000001", "subscription_id": "sub_000000000001"}'
    (tmp_path / "connectors.json").write_text(f"{good}\n{{not json\n", encoding="utf-8")
    assert main(["legacy", "load", str(tmp_path)]) == 1
    out = capsys.readouterr().out
    assert "connectors.json:2" in out

    (tmp_path / "connectors.json").write_text(f"{good}\n", encoding="utf-8")
    monkeypatch.setenv("MONGO_URL", f"memory://load-{time.time_ns()}")
    assert main(["legacy", "load", str(tmp_path)]) == 0


def test_the_served_socket_sends_each_answer_at_once() -> None:
    # Without TCP_NODELAY a kept-alive client waits out the peer's delayed ACK (~40 ms) for
    # every answer after its first: the emulator then stands for a far slower legacy.
    sock = bind_socket("127.0.0.1", _free_port())
    try:
        assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) == 1
        assert sock.proto == socket.IPPROTO_TCP  # what asyncio checks before it sets it too
    finally:
        sock.close()
