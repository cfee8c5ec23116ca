"""Fixtures for the proxy tests (helpers live in proxy_support.py)."""

from __future__ import annotations

import pathlib
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from typing import Any

import httpx
import pytest
from proxy_support import (
    SECRET,
    ProxyProcess,
    ThreadedUpstream,
    rules_data,
    write_rules,
)

from migrators.consistency import ConsistencyStore
from proxy.app import Limits
from proxy.registry import HandlerRegistry, registry_from_mapping
from proxy.server import ProxyConfig, ProxyInstance
from proxy.shadow import CountingDropSink
from proxy.upstream import Timeouts
from strangler.exchange import ShadowSink


@pytest.fixture(scope="session")
def upstream() -> Iterator[ThreadedUpstream]:
    server = ThreadedUpstream()
    server.start()
    yield server
    server.stop()


# --- in-process proxies ------------------------------------------------------------------------

StartProxy = Callable[..., Awaitable[ProxyInstance]]


@pytest.fixture
def engine() -> str:
    """The proxy port's engine; modules that exercise the server parametrize it over
    ``proxy.server.ENGINES`` (``pytest.mark.parametrize("engine", ENGINES)``)."""
    return "fast"


@pytest.fixture
async def start_proxy(
    upstream: ThreadedUpstream, tmp_path: pathlib.Path, engine: str
) -> AsyncIterator[StartProxy]:
    """Start a proxy (real servers on free loopback ports) in front of ``upstream``."""
    started: list[ProxyInstance] = []

    async def start(
        rules: dict[str, Any] | None = None,
        handlers: dict[tuple[str, str], Any] | None = None,
        sink: ShadowSink | None = None,
        legacy_url: str | None = None,
        timeouts: Timeouts | None = None,
        limits: Limits | None = None,
        registry: HandlerRegistry | None = None,
        consistency: ConsistencyStore | None = None,
        shadow_new_url: str | None = None,
    ) -> ProxyInstance:
        path = write_rules(tmp_path / f"rules{len(started)}.yaml", rules or rules_data())
        config = ProxyConfig(
            legacy_url=legacy_url or upstream.url,
            rules_path=str(path),
            host="127.0.0.1",
            port=0,
            admin_port=0,
            timeouts=timeouts or Timeouts(connect=1.0, read=2.0),
            limits=limits or Limits(),
            watch_interval=0.1,
            instance="test",
            engine=engine,
            shadow_new_url=shadow_new_url,
        )
        instance = ProxyInstance(
            config,
            SECRET,
            registry or registry_from_mapping(handlers or {}),
            sink or CountingDropSink(),
            consistency=consistency,
        )
        await instance.start()
        started.append(instance)
        return instance

    yield start
    for instance in started:
        await instance.stop()


@pytest.fixture
async def http() -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(timeout=10) as client:
        yield client


# --- proxy subprocesses ------------------------------------------------------------------------


@pytest.fixture
def proxy_process(
    upstream: ThreadedUpstream, tmp_path: pathlib.Path, engine: str
) -> Iterator[Callable[..., ProxyProcess]]:
    procs: list[ProxyProcess] = []

    def start(*extra: str, rules: dict[str, Any] | None = None) -> ProxyProcess:
        path = write_rules(tmp_path / "routing_rules.yaml", rules or rules_data())
        proc = ProxyProcess(path, upstream.url, "--engine", engine, *extra)
        procs.append(proc)
        proc.wait_ready()
        return proc

    yield start
    for proc in procs:
        proc.stop()
