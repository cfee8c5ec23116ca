"""``make bench`` (proxy): requests/s and p50/p99 latency at 32 connections, direct to the
upstream, through nginx as a reverse proxy (one worker), and through the proxy in
``legacy`` mode with each engine (``fast``, and ``asgi``: uvicorn + aiohttp), all on the
same upstream, with each one's ratio to nginx and the p50 it adds to the direct one (the
issue's target: at least 0.25 of nginx, at most +2 ms).

Everything is started here, each in its own process: a small upstream that answers a
legacy-like JSON envelope (so that it is not the bottleneck), nginx (skipped with a line
saying so when not installed), the proxies (``strangler proxy serve``) and the load
generator (``wrk`` when installed, else a small aiohttp client process). The targets are
measured in interleaved rounds and the median run of each is shown, so that other work on
the machine weighs on every row alike.

    python -m bench proxy                   # or: make bench
    python -m bench.bench_proxy --seconds 10 --rounds 5
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import pathlib
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field

CONNECTIONS = 32
PATH = "/connectors/getConnectors?page=1&per_page=20"
# What the issue measured here for a Starlette proxy (requests/s at 32 connections).
ISSUE_BASELINE = {"httpx proxy": 460, "aiohttp proxy": 6000, "nginx": 42000}
TARGET_RATIO = 0.25
TARGET_ADDED_P50_MS = 2.0
REPO = pathlib.Path(__file__).resolve().parents[1]

_BODY = json.dumps(
    {
        "status": True,
        "message": "Connectors fetched successfully",
        "data": [
            {
                "connector_id": f"cn_{n:012x}",
                "connector_name": f"warehouse {n}",
                "connector_type": "postgres",
                "description": None,
                "connection_detail": {"host": "db.internal", "port": 5432, "password": "********"},
                "is_active": True,
                "test_status": "success",
                "created_at": "2026-01-02 03:04:05",
            }
            for n in range(5)
        ],
        "total": 5,
    }
).encode()


# --- the upstream: a minimal keep-alive HTTP/1.1 responder -----------------------------------


class _Responder(asyncio.Protocol):
    RESPONSE = (
        b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: "
        + str(len(_BODY)).encode()
        + b"\r\n\r\n"
        + _BODY
    )

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport
        self.buffer = b""

    def data_received(self, data: bytes) -> None:
        # GET requests only: one response per header block (pipelining included).
        self.buffer += data
        while b"\r\n\r\n" in self.buffer:
            _, self.buffer = self.buffer.split(b"\r\n\r\n", 1)
            self.transport.write(self.RESPONSE)  # type: ignore[attr-defined]


def run_upstream(port: int) -> None:
    try:
        import uvloop

        uvloop.install()
    except ImportError:
        pass

    async def main() -> None:
        loop = asyncio.get_running_loop()
        server = await loop.create_server(_Responder, "127.0.0.1", port, backlog=1024)
        async with server:
            await server.serve_forever()

    asyncio.run(main())


# --- a fallback load generator -----------------------------------------------------------------


def run_loadgen(url: str, connections: int, seconds: float) -> None:
    import aiohttp

    async def main() -> None:
        latencies: list[float] = []
        errors = 0
        deadline = time.perf_counter() + seconds
        connector = aiohttp.TCPConnector(limit=connections)
        async with aiohttp.ClientSession(connector=connector) as session:

            async def worker() -> None:
                nonlocal errors
                while time.perf_counter() < deadline:
                    started = time.perf_counter()
                    try:
                        async with session.get(url) as resp:
                            await resp.read()
                            if resp.status != 200:
                                errors += 1
                    except aiohttp.ClientError:
                        errors += 1
                    latencies.append(time.perf_counter() - started)

            await asyncio.gather(*(worker() for _ in range(connections)))
        latencies.sort()
        print(
            json.dumps(
                {
                    "rps": len(latencies) / seconds,
                    "p50_ms": latencies[len(latencies) // 2] * 1000,
                    "p99_ms": latencies[int(len(latencies) * 0.99)] * 1000,
                    "errors": errors,
                }
            )
        )

    asyncio.run(main())


# --- orchestration ---------------------------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _wait_port(port: int, proc: subprocess.Popen[bytes], what: str, timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{what} exited with {proc.returncode}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"{what} did not listen on {port}")


@contextmanager
def _process(
    args: list[str], port: int, what: str, env: dict[str, str] | None = None
) -> Iterator[subprocess.Popen[bytes]]:
    proc = subprocess.Popen(
        args, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, cwd=REPO
    )
    try:
        _wait_port(port, proc, what)
        yield proc
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        if proc.stderr is not None:
            proc.stderr.close()


_NGINX_CONF = """
worker_processes {workers};
pid {tmp}/nginx.pid;
error_log {tmp}/error.log warn;
events {{ worker_connections 4096; }}
http {{
    access_log off;
    client_body_temp_path {tmp}/body;
    proxy_temp_path {tmp}/proxy;
    fastcgi_temp_path {tmp}/fastcgi;
    uwsgi_temp_path {tmp}/uwsgi;
    scgi_temp_path {tmp}/scgi;
    upstream legacy {{ server 127.0.0.1:{upstream}; keepalive 64; }}
    server {{
        listen 127.0.0.1:{port};
        location / {{
            proxy_pass http://legacy;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_set_header Host $proxy_host;
            proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;
            proxy_set_header X-Forwarded-Proto $scheme;
            proxy_set_header X-Forwarded-Host $host;
        }}
    }}
}}
"""


def _measure(url: str, seconds: float) -> dict[str, float | str]:
    result: dict[str, float | str] = {"load": _load_average()}
    result.update(_generate_load(url, seconds))
    return result


def _generate_load(url: str, seconds: float) -> dict[str, float]:
    wrk = shutil.which("wrk")
    if wrk:
        out = subprocess.run(
            [wrk, "-t2", f"-c{CONNECTIONS}", f"-d{seconds:g}s", "--latency", url],
            capture_output=True,
            text=True,
            check=True,
        ).stdout
        rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]

        def pct(label: str) -> float:
            value, unit = re.search(rf"\s{label}%\s+([\d.]+)(us|ms|s)", out).groups()  # type: ignore[union-attr]
            return float(value) * {"us": 0.001, "ms": 1.0, "s": 1000.0}[unit]

        errors = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
        return {
            "rps": rps,
            "p50_ms": pct("50"),
            "p99_ms": pct("99"),
            "errors": float(errors.group(1)) if errors else 0.0,
        }
    out = subprocess.run(
        [sys.executable, "-m", "bench.bench_proxy", "loadgen", url, str(CONNECTIONS), str(seconds)],
        capture_output=True,
        text=True,
        check=True,
        cwd=REPO,
    ).stdout
    figures: dict[str, float] = json.loads(out.strip().splitlines()[-1])
    return figures


def _cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process so far (Linux /proc)."""
    fields = pathlib.Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _load_average() -> str:
    """The machine's 1-minute load: other work on the same CPUs lowers every figure."""
    try:
        return f"{os.getloadavg()[0]:.1f}"
    except OSError:  # pragma: no cover - not on Linux
        return "?"


def _row(
    name: str,
    result: dict[str, float | str] | None,
    note: str = "",
    nginx: dict[str, float | str] | None = None,
    direct: dict[str, float | str] | None = None,
) -> str:
    if result is None:
        return f"{name:<30} {'-':>8} {'-':>7} {'-':>7} {'-':>7} {'-':>7}  {note}"
    errs = f" ({result['errors']:.0f} errors)" if result.get("errors") else ""
    note = f"load {result['load']}; {note}" if "load" in result else note
    if "cpu_us" in result:
        cpu = float(result["cpu_us"])
        note = f"{cpu:.0f} us CPU/request (~{1e6 / cpu:,.0f}/s per core); {note}"
    ratio = f"{float(result['rps']) / float(nginx['rps']):.2f}" if nginx else "-"
    added = f"{float(result['p50_ms']) - float(direct['p50_ms']):+.2f}" if direct else "-"
    return (
        f"{name:<30} {result['rps']:>8,.0f} {result['p50_ms']:>7.2f} {result['p99_ms']:>7.2f}"
        f" {ratio:>7} {added:>7}  {note}{errs}"
    )


def _nginx_binary() -> str | None:
    return shutil.which("nginx") or (
        "/usr/sbin/nginx" if os.path.exists("/usr/sbin/nginx") else None
    )


@dataclass
class _Target:
    name: str
    url: str
    note: str = ""
    pid: int | None = None  # a proxy's process, for its CPU time per request
    runs: list[dict[str, float | str]] = field(default_factory=list)
    cpu_seconds: float = 0.0

    def median(self) -> dict[str, float | str]:
        """The run with the median requests/s (its own p50 and p99 with it)."""
        ordered = sorted(self.runs, key=lambda r: float(r["rps"]))
        result = dict(ordered[len(ordered) // 2])
        if self.pid is not None:
            served = sum(float(r["rps"]) * float(r["seconds"]) for r in self.runs)
            result["cpu_us"] = self.cpu_seconds / served * 1e6
        return result


def _start_nginx(stack: ExitStack, nginx: str, tmp: str, upstream: int) -> str:
    port = _free_port()
    conf = pathlib.Path(tmp) / "nginx.conf"
    conf.write_text(_NGINX_CONF.format(workers=1, tmp=tmp, upstream=upstream, port=port))
    stack.enter_context(_process([nginx, "-c", str(conf), "-g", "daemon off;"], port, "nginx"))
    return f"http://127.0.0.1:{port}{PATH}"


def _start_proxy(
    stack: ExitStack, rules: pathlib.Path, env: dict[str, str], *options: str
) -> tuple[str, int]:
    port, admin = _free_port(), _free_port()
    serve = [
        sys.executable, "-m", "strangler.cli", "proxy", "serve", "--host", "127.0.0.1",
        "--port", str(port), "--admin-port", str(admin), "--rules", str(rules), *options,
    ]  # fmt: skip
    proxy = stack.enter_context(_process(serve, port, f"proxy ({' '.join(options)})", env))
    url = f"http://127.0.0.1:{port}{PATH}"
    _generate_load(url, 1)  # a short warm-up run fills the upstream pool
    return url, proxy.pid


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="bench_proxy")
    parser.add_argument("--seconds", type=float, default=4.0, help="per run (4)")
    parser.add_argument(
        "--rounds", type=int, default=3, help="interleaved runs per target; the median shows (3)"
    )
    parser.add_argument(
        "--httpx", action="store_true", help="also measure the ASGI engine with httpx (slow)"
    )
    args = parser.parse_args(argv if argv is not None else [])
    upstream = _free_port()
    env = {**os.environ, "LEGACY_URL": f"http://127.0.0.1:{upstream}"}
    env.pop("PYTHONPATH", None)
    print(
        f"load: {'wrk -t2' if shutil.which('wrk') else 'aiohttp client process'}, "
        f"{CONNECTIONS} connections, GET {PATH}; {args.rounds} rounds of {args.seconds:g} s "
        "per target, interleaved (the median run shows); "
        f"{os.cpu_count()} CPUs shared by load generator, upstream and the target; "
        "one process each for nginx (1 worker) and each proxy",
        flush=True,
    )
    nginx_binary = _nginx_binary()
    with tempfile.TemporaryDirectory() as tmp, ExitStack() as stack:
        stack.enter_context(
            _process(
                [sys.executable, "-m", "bench.bench_proxy", "upstream", str(upstream)],
                upstream,
                "upstream",
            )
        )
        rules = pathlib.Path(tmp) / "routing_rules.yaml"
        shutil.copy(REPO / "routing_rules.yaml", rules)
        direct = _Target("direct to upstream", f"http://127.0.0.1:{upstream}{PATH}")
        targets = [direct]
        nginx: _Target | None = None
        if nginx_binary is not None:
            nginx = _Target(
                "nginx, 1 worker",
                _start_nginx(stack, nginx_binary, tmp, upstream),
                f"issue's nginx: {ISSUE_BASELINE['nginx']:,}/s",
            )
            targets.append(nginx)
        engines = [
            ("proxy, legacy, fast engine", ("--engine", "fast"), ""),
            (
                "proxy, legacy, asgi engine",
                ("--engine", "asgi", "--upstream-client", "aiohttp"),
                "uvicorn+aiohttp; issue's Starlette+aiohttp: "
                f"{ISSUE_BASELINE['aiohttp proxy']:,}/s",
            ),
        ]
        if args.httpx:
            engines.append(
                (
                    "proxy, legacy, asgi (httpx)",
                    ("--engine", "asgi", "--upstream-client", "httpx"),
                    f"issue's Starlette+httpx: {ISSUE_BASELINE['httpx proxy']:,}/s",
                )
            )
        for name, options, note in engines:
            url, pid = _start_proxy(stack, rules, env, *options)
            targets.append(_Target(name, url, note, pid))
        # Interleaved, so that a burst of other work on the machine hits every target alike.
        for _ in range(args.rounds):
            for target in targets:
                before = _cpu_seconds(target.pid) if target.pid else 0.0
                run = _measure(target.url, args.seconds)
                run["seconds"] = args.seconds
                if target.pid:
                    target.cpu_seconds += _cpu_seconds(target.pid) - before
                target.runs.append(run)
    reference = nginx.median() if nginx else None
    baseline = direct.median()
    print(f"{'target':<30} {'req/s':>8} {'p50 ms':>7} {'p99 ms':>7} {'/nginx':>7} {'+p50':>7}")
    print(_row(direct.name, baseline, nginx=reference))
    if nginx is None:
        print(_row("nginx", None, "skipped: nginx is not installed (apt-get install nginx)"))
    for target in targets[1:]:
        print(_row(target.name, target.median(), target.note, nginx=reference, direct=baseline))
    print(
        f"target (issue): at least {TARGET_RATIO} of nginx's req/s (/nginx) and at most "
        f"+{TARGET_ADDED_P50_MS:g} ms over the direct p50 (+p50)"
    )


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "upstream":
        run_upstream(int(sys.argv[2]))
    elif len(sys.argv) > 1 and sys.argv[1] == "loadgen":
        run_loadgen(sys.argv[2], int(sys.argv[3]), float(sys.argv[4]))
    else:
        main(sys.argv[1:])
