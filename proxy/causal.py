"""Causal consistency across entities: a request never meets the other side's past.

With entities on different sides (some in ``new`` or ``canary``, others not), a request
of one entity can name an id that a write of another entity made on the other side a
moment ago: ``runNow`` on legacy (job runs in ``legacy``) for a workflow just added on the
new side (workspaces in ``new``) would be "Workflow not found" until the reverse sync
carried the workflow to MongoDB. A wrong 404 is worse than a short wait.

So, while the flag table is split (:func:`is_split`):

* after every successful write, the proxy notes the legacy ids it touched
  (proxy.touched's fields: the request's and the answer's ``data``), with the side that
  took it and when (:meth:`migrators.consistency.ConsistencyStore.note_ids`, in Redis with
  the pins' bound, so every proxy instance sees it); a new-side write is noted before its
  answer leaves, a legacy write right after it streamed;
* a request that names such an id (query or JSON body: the same id fields) and is served
  by the other side waits until the sync toward that side reports it has applied the
  write (its watermark: forward from the sync workers, reverse from the reverse sync),
  polling every ``poll_seconds``, at most ``wait_seconds``; past that it is answered 503
  with ``Retry-After``, never served to a store that does not have the id yet.

Cost while split: one Redis MGET per request that names an id (two when a recent write
is found), and legacy-mode requests take the ASGI path (the fast engine does not read
bodies). Nothing at all while every entity is on the same side. Redis down: requests are
served (a Redis outage must not stop the API); the pins are then only as good as the
sync's lag.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Iterable
from urllib.parse import parse_qsl

from migrators.consistency import ConsistencyStore, IdMark, Side
from proxy.canary import in_canary
from proxy.table import EntityPlan
from proxy.touched import TOUCHED_ID_FIELDS, touched_ids
from strangler.errors import ServiceUnavailable

__all__ = ["ID_FIELDS", "CausalGate", "is_split", "named_ids", "serving_side"]

ID_FIELDS = frozenset(field for fields in TOUCHED_ID_FIELDS.values() for field, _ in fields)
DEFAULT_WAIT_SECONDS = 3.0  # above a healthy sync's lag; past it the client retries
DEFAULT_POLL_SECONDS = 0.05
RETRY_AFTER_SECONDS = 1


def is_split(plans: Iterable[EntityPlan]) -> bool:
    """Whether some entity is served by the new side while another is not (the only case
    where one request can name what only the other store has)."""
    modes = {plan.mode for plan in plans}
    return bool(modes & {"new", "canary"}) and bool(modes - {"new"})


def named_ids(query_string: str, body: bytes) -> list[str]:
    """The legacy ids a request names: the id fields of its query and of its JSON body."""
    found: list[str] = []
    for key, value in parse_qsl(query_string, keep_blank_values=False):
        if key in ID_FIELDS and value and value not in found:
            found.append(value)
    if body[:1] == b"{":
        try:
            document = json.loads(body)
        except ValueError:
            document = None
        if isinstance(document, dict):
            for field in ID_FIELDS:
                named = document.get(field)
                if isinstance(named, str) and named and named not in found:
                    found.append(named)
    return found


def serving_side(plan: EntityPlan, is_write: bool, tenant: str) -> Side:
    """The side whose store answers this request (canary: the tenant's; writes: legacy)."""
    if plan.mode == "new":
        return "new"
    if plan.mode == "canary" and not is_write and in_canary(tenant, plan.canary_threshold):
        return "new"
    return "legacy"


class CausalGate:
    """Notes the ids writes touched and holds the requests that name one too early."""

    def __init__(
        self,
        store: ConsistencyStore,
        *,
        wait_seconds: float = DEFAULT_WAIT_SECONDS,
        poll_seconds: float = DEFAULT_POLL_SECONDS,
    ) -> None:
        self.store = store
        self.wait_seconds = wait_seconds
        self.poll_seconds = poll_seconds
        self.retry_after = RETRY_AFTER_SECONDS

    async def note(
        self, entity: str, tenant: str, request_body: bytes, response_body: bytes, side: Side
    ) -> bool:
        """Note what a successful write of ``entity`` touched; False when Redis did not
        take it (never raised: the write succeeded)."""
        touched = touched_ids(entity, request_body, response_body)
        if not touched:
            return True
        try:
            await self.store.note_ids(tenant, touched, side, time.time())
        except ServiceUnavailable:
            return False
        return True

    async def hold(self, tenant: str, ids: list[str], side: Side) -> tuple[IdMark | None, float]:
        """Wait until every write that touched ``ids`` on the other side has reached
        ``side``: (None, seconds waited), or (the write still missing, seconds waited)
        when the bound ran out; 0.0 waited when nothing held it."""
        started = time.monotonic()
        deadline = started + self.wait_seconds
        mark = await self.store.not_carried(tenant, ids, side, time.time())
        while mark is not None and (now := time.monotonic()) < deadline:
            await asyncio.sleep(min(self.poll_seconds, deadline - now))
            mark = await self.store.not_carried(tenant, ids, side, time.time())
            if mark is None:
                return None, time.monotonic() - started
        return mark, 0.0 if mark is None else time.monotonic() - started
