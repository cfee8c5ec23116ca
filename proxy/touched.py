"""Which legacy documents a write through the proxy touched, told to the forward sync.

After legacy took a write (any mode in which legacy takes writes: legacy, shadow, canary)
and answered 2xx, the proxy names the documents it changed on the touched-ids streams of
:mod:`migrators.touched`, so the polling feed applies them within a batch's time instead
of waiting for the anti-entropy sweep (docs/sync.md). The ids come from the request body
and the response's ``data``: an add only learns its new id from the answer.

Which field names which migration entity is declared per flag entity in
:data:`TOUCHED_ID_FIELDS`. A tree edit rewrites the ``workspace`` document, and a workflow
write its ``workflow`` document (and, for add, rename and delete, the tree too), so the
workspace tree names both. History documents (``workflow_versions``, ``workflowBkp``) have
no id a client sees: the sweep finds them.

Recording never fails the client's request: the response has been sent by then, a Redis
failure is logged and counted (``strangler_proxy_touched_ids{outcome="failed"}``), and the
sweep still finds the document within its bound.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from typing import Any

from prometheus_client import CollectorRegistry, Counter

from migrators.touched import record_touched
from strangler.errors import ServiceUnavailable

__all__ = ["TOUCHED_ID_FIELDS", "TouchedRecorder", "touched_ids"]

log = logging.getLogger("proxy.touched")

# flag entity -> ((field naming a legacy id, the migration entity whose stream takes it), ...)
TOUCHED_ID_FIELDS: Mapping[str, tuple[tuple[str, str], ...]] = {
    "connectors": (("connector_id", "connectors"),),
    "workspaces": (("workspace_id", "workspaces"), ("workflow_id", "workflows")),
    "users": (("UserId", "users"),),
    "groups": (("group_id", "groups"),),
    "roles": (("role_id", "roles"),),
    "job_runs": (("job_run_id", "job_runs"),),  # runNow: the run it queued
}


def _object(raw: bytes) -> dict[str, Any]:
    try:
        value = json.loads(raw) if raw else None
    except ValueError:
        return {}
    return value if isinstance(value, dict) else {}


def touched_ids(entity: str, request_body: bytes, response_body: bytes) -> dict[str, list[str]]:
    """Migration entity -> the legacy ids a successful write of ``entity`` touched (pure)."""
    fields = TOUCHED_ID_FIELDS.get(entity, ())
    if not fields:
        return {}
    data = _object(response_body).get("data")
    sources = [_object(request_body), data if isinstance(data, dict) else {}]
    found: dict[str, list[str]] = {}
    for field, target in fields:
        for source in sources:
            value = source.get(field)
            if isinstance(value, str) and value and value not in found.get(target, ()):
                found.setdefault(target, []).append(value)
    return found


class TouchedRecorder:
    """Appends a write's touched ids to the streams (one pipelined XADD per stream)."""

    def __init__(self, redis: Any, registry: CollectorRegistry, *, prefix: str = "") -> None:
        self._redis = redis
        self._prefix = prefix
        self._counter = Counter(
            "strangler_proxy_touched_ids",
            "Ids of legacy writes told to the forward sync, by entity and outcome "
            "(recorded, failed: Redis did not take them; the sweep finds those later).",
            ("entity", "outcome"),
            registry=registry,
        )

    @staticmethod
    def wants(entity: str) -> bool:
        return entity in TOUCHED_ID_FIELDS

    async def record(
        self, entity: str, subscription_id: str | None, request_body: bytes, response_body: bytes
    ) -> int:
        """Record what the write touched; returns how many ids were recorded."""
        recorded = 0
        for target, ids in touched_ids(entity, request_body, response_body).items():
            try:
                recorded += await record_touched(
                    self._redis, target, ids, subscription_id=subscription_id, prefix=self._prefix
                )
            except (ServiceUnavailable, OSError) as exc:
                log.warning("touched ids of a %s write not recorded: %s", entity, exc)
                self._counter.labels(target, "failed").inc(len(ids))
                continue
            self._counter.labels(target, "recorded").inc(len(ids))
        return recorded
