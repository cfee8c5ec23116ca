"""Setting and lifting a write fence on many proxy instances at once.

Used by operators (``strangler proxy fence``) and by the cut-over commands: fence the
entity on every instance, drain the sync, switch the source of truth, lift the fence. The
change is attempted on every admin URL; if any instance did not apply it,
:class:`~proxy.errors.AdminUnreachable` names each one so the caller can retry or stop.

Each instance's fence is in memory and bounded (at most 600 s), so a crashed operator
never leaves an entity fenced for good. For a fence every instance must see regardless of
restarts, set ``fenced: true`` in routing_rules.yaml instead.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass

import httpx

from proxy.errors import AdminUnreachable

__all__ = ["FenceResult", "lift_fence", "set_fence", "writes_in_flight"]


@dataclass(frozen=True)
class FenceResult:
    admin_url: str
    status: int
    body: dict[str, object]


async def _each(
    admin_urls: Sequence[str],
    method: str,
    entity: str,
    params: dict[str, str],
    timeout_seconds: float,
) -> list[FenceResult]:
    async with httpx.AsyncClient(timeout=timeout_seconds) as client:

        async def one(url: str) -> FenceResult | tuple[str, str]:
            try:
                resp = await client.request(
                    method, f"{url.rstrip('/')}/admin/fence/{entity}", params=params
                )
            except httpx.HTTPError as exc:
                return (url, f"{type(exc).__name__}: {exc}")
            if resp.status_code != 200:
                return (url, f"HTTP {resp.status_code}: {resp.text[:200]}")
            return FenceResult(url, resp.status_code, resp.json())

        outcomes = await asyncio.gather(*(one(url) for url in admin_urls))
    failures = [o for o in outcomes if isinstance(o, tuple)]
    if failures:
        raise AdminUnreachable(failures)
    return [o for o in outcomes if isinstance(o, FenceResult)]


async def set_fence(
    admin_urls: Sequence[str], entity: str, seconds: float, timeout_seconds: float = 5.0
) -> list[FenceResult]:
    """Fence ``entity``'s writes for ``seconds`` on every instance; raise if any failed."""
    return await _each(admin_urls, "POST", entity, {"seconds": f"{seconds:g}"}, timeout_seconds)


async def lift_fence(
    admin_urls: Sequence[str], entity: str, timeout_seconds: float = 5.0
) -> list[FenceResult]:
    """Lift the admin fence of ``entity`` on every instance; raise if any failed."""
    return await _each(admin_urls, "DELETE", entity, {}, timeout_seconds)


async def writes_in_flight(
    admin_urls: Sequence[str], entity: str, timeout_seconds: float = 5.0
) -> dict[str, int]:
    """Per instance, the writes of ``entity`` that passed its fence check and are not
    answered yet; raise if any instance did not say."""
    results = await _each(admin_urls, "GET", entity, {}, timeout_seconds)
    return {r.admin_url: int(str(r.body.get("writes_in_flight", 0))) for r in results}
