"""Run-status and activity fan-out to WebSocket subscribers, in this process's memory.

This is the legacy design (a known flaw): a subscriber only hears what the
process it is connected to publishes, so legacy cannot run as several copies.
Subscriptions are keyed by tenant, so a subscriber never hears of another
tenant's runs or activity, whatever workflow id it names.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import defaultdict
from collections.abc import Iterator
from typing import Any

__all__ = ["QUEUE_LIMIT", "Hub"]

# A subscriber that stops reading loses its oldest messages rather than growing memory.
QUEUE_LIMIT = 1000

Message = dict[str, Any]
Queue = asyncio.Queue[Message]


class Hub:
    def __init__(self) -> None:
        self._runs: defaultdict[tuple[str, str], set[Queue]] = defaultdict(set)
        self._activity: defaultdict[str, set[Queue]] = defaultdict(set)

    @contextlib.contextmanager
    def run_updates(self, subscription_id: str, workflow_id: str) -> Iterator[Queue]:
        with self._subscribed(self._runs, (subscription_id, workflow_id)) as queue:
            yield queue

    @contextlib.contextmanager
    def activity(self, subscription_id: str) -> Iterator[Queue]:
        with self._subscribed(self._activity, subscription_id) as queue:
            yield queue

    def publish_run(self, subscription_id: str, workflow_id: str, message: Message) -> None:
        self._publish(self._runs.get((subscription_id, workflow_id), ()), message)

    def publish_activity(self, subscription_id: str, message: Message) -> None:
        self._publish(self._activity.get(subscription_id, ()), message)

    def subscriber_count(self) -> int:
        return sum(map(len, self._runs.values())) + sum(map(len, self._activity.values()))

    @staticmethod
    @contextlib.contextmanager
    def _subscribed(table: defaultdict[Any, set[Queue]], key: Any) -> Iterator[Queue]:
        queue: Queue = asyncio.Queue(maxsize=QUEUE_LIMIT)
        table[key].add(queue)
        try:
            yield queue
        finally:
            table[key].discard(queue)
            if not table[key]:
                del table[key]

    @staticmethod
    def _publish(queues: Any, message: Message) -> None:
        for queue in list(queues):
            if queue.full():
                queue.get_nowait()
            queue.put_nowait(message)
