"""What a job run's life is, on either side: its outcome, its messages, its queue's format.

Legacy's simulator (``legacy_emulator.runner``) and the new side's run worker
(``proxy.runs_worker``) drive a run the same way: queued -> running -> completed|failed,
the outcome decided by the workflow's diagram when the run started (:func:`run_outcome`),
each status change announced as :func:`status_message`.

The run queue (docs/runs.md) is a Redis Stream. Each message is one run to drive; its
fields, all strings, are :data:`MESSAGE_FIELDS`, version ``1``:

- ``v``: the format's version (``"1"``);
- ``job_run_id``, ``subscription_id``, ``workflow_id``: the run, its tenant, its workflow.

A consumer reads the run's row for everything else (the row is written before the message
is added, never after). Messages may arrive more than once: a consumer must be idempotent
by ``job_run_id`` (a run whose status is final is acknowledged and left alone).
"""

from __future__ import annotations

import json
import random
from datetime import datetime
from typing import Any

from strangler.contract import render_datetime

__all__ = [
    "DEAD_STREAM",
    "FINAL_STATUSES",
    "MESSAGE_FIELDS",
    "MESSAGE_VERSION",
    "RUN_GROUP",
    "RUN_STREAM",
    "activity_channel",
    "run_channel",
    "run_message",
    "run_outcome",
    "status_message",
]

RUN_STREAM = "runs:queue"
DEAD_STREAM = "runs:dead"
RUN_GROUP = "runners"
MESSAGE_VERSION = "1"
MESSAGE_FIELDS = ("v", "job_run_id", "subscription_id", "workflow_id")
FINAL_STATUSES = ("completed", "failed")


def run_message(job_run_id: str, subscription_id: str, workflow_id: str) -> dict[str, str]:
    """The stream entry of one run to drive (see the module docstring)."""
    return {"v": MESSAGE_VERSION, "job_run_id": job_run_id,
            "subscription_id": subscription_id, "workflow_id": workflow_id}  # fmt: skip


def run_channel(prefix: str, subscription_id: str, workflow_id: str) -> str:
    """The pub/sub channel a run's status changes are published on."""
    return f"{prefix}runs:{subscription_id}:{workflow_id}"


def activity_channel(prefix: str, subscription_id: str) -> str:
    """The pub/sub channel a tenant's activity entries are published on (each as
    ``getActivity`` lists it)."""
    return f"{prefix}activity:{subscription_id}"


def status_message(run: dict[str, Any], status: str, moment: datetime) -> dict[str, Any]:
    """What a ``/ws/runNow`` subscriber receives on each status change."""
    return {
        "job_run_id": run["job_run_id"],
        "workflow_id": run["workflow_id"],
        "status": status,
        "ts": render_datetime(moment),
    }


def run_outcome(job_run_id: str, diagram: Any) -> tuple[str, int, str | None]:
    """``(status, rows_processed, error_message)`` of a run of a workflow with that diagram:
    a ``workFlowDiagram`` that is not a JSON object fails the run, anything else completes
    it, having "processed" a number of rows derived from the run id (stable, so that a run
    replays the same way)."""
    try:
        parsed = json.loads(diagram) if isinstance(diagram, str) else None
    except ValueError:
        parsed = None
    if not isinstance(parsed, dict):
        return "failed", 0, "workFlowDiagram is not valid JSON"
    nodes = parsed.get("nodes")
    node_count = len(nodes) if isinstance(nodes, list) else 0
    rows = random.Random(job_run_id).randint(100, 10_000) * node_count
    return "completed", rows, None
