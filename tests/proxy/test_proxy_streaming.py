"""Large bodies stream through the proxy in both directions without being held in memory.

The proxy runs as its own process (``strangler proxy serve``) so that its memory can be
read from /proc: the peak resident size while 50 MB go up and 50 MB come down must grow
by far less than one body.
"""

from __future__ import annotations

import hashlib

import aiohttp
import pytest
from proxy_support import CHUNK

from proxy.server import ENGINES

# Both engines serve the proxy port: each behaviour is checked on each.
pytestmark = pytest.mark.parametrize("engine", ENGINES)

SIZE = 50 * 1024 * 1024
# Far below one body: buffering either body whole would blow through it.
ALLOWED_GROWTH_KIB = 15 * 1024


def _expected_digest(size: int) -> str:
    digest = hashlib.sha256()
    sent = 0
    while sent < size:
        part = CHUNK[: min(len(CHUNK), size - sent)]
        digest.update(part)
        sent += len(part)
    return digest.hexdigest()


async def _generated_body(size: int):
    sent = 0
    while sent < size:
        part = CHUNK[: min(len(CHUNK), size - sent)]
        sent += len(part)
        yield part


async def test_50_mb_up_and_down_stream_without_memory_growth(proxy_process) -> None:
    proxy = proxy_process()
    expected = _expected_digest(SIZE)
    async with aiohttp.ClientSession() as session:
        # Warm up the code paths (imports, pools) before taking the baseline.
        async with session.get(proxy.url + "/download?size=1000000") as resp:
            await resp.read()
        async with session.post(proxy.url + "/upload", data=b"x" * 1_000_000) as resp:
            await resp.read()
        baseline = proxy.rss_kib()
        proxy.reset_peak_rss()

        async with session.post(
            proxy.url + "/upload",
            data=_generated_body(SIZE),
            headers={"Content-Length": str(SIZE)},
        ) as resp:
            uploaded = await resp.json()
        assert uploaded == {"size": SIZE, "sha256": expected, "length": SIZE}

        async with session.post(proxy.url + "/upload", data=_generated_body(SIZE)) as resp:
            chunked_upload = await resp.json()  # no length: chunked end to end
        assert chunked_upload["size"] == SIZE and chunked_upload["sha256"] == expected

        for query in ("", "&chunked=1"):
            digest = hashlib.sha256()
            received = 0
            async with session.get(proxy.url + f"/download?size={SIZE}{query}") as resp:
                assert resp.status == 200
                if not query:
                    assert resp.content_length == SIZE
                async for chunk in resp.content.iter_any():
                    digest.update(chunk)
                    received += len(chunk)
            assert received == SIZE
            assert digest.hexdigest() == expected

        peak = proxy.rss_kib("VmHWM")
    growth = peak - baseline
    print(f"proxy peak RSS growth while streaming 4 x 50 MB: {growth} KiB")
    assert growth < ALLOWED_GROWTH_KIB, f"proxy peak RSS grew by {growth} KiB"
