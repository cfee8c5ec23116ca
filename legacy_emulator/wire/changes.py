"""The wire server's log of its own writes, and the change streams served from it.

Every write the engine makes is appended as one entry (insert, update, replace, delete,
drop) with its pre- and post-image. A ``$changeStream`` cursor reads the entries after its
position and renders them in MongoDB's documented change-event format
(https://www.mongodb.com/docs/manual/reference/change-events/): ``_id`` (the resume token
``{"_data": ...}``), ``operationType``, ``clusterTime`` (a BSON Timestamp), ``wallTime``,
``ns``, ``documentKey``, ``fullDocument``, ``fullDocumentBeforeChange``,
``updateDescription``.

The log is bounded (``history`` entries): an entry that falls off is gone, as an oplog
entry is once the oplog rolls over, and a stream resuming from before it fails with error
286 (ChangeStreamHistoryLost), as MongoDB's does. A resume token names the server's run
(a random epoch) and the entry's sequence number: a token of an earlier run of the server
(its log died with it) is history lost too.

Pre-images are always kept (a real collection needs ``changeStreamPreAndPostImages``
enabled for that); ``fullDocumentBeforeChange: whenAvailable|required`` returns them.
"""

from __future__ import annotations

import secrets
import threading
import time
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from bson.timestamp import Timestamp

__all__ = [
    "DEFAULT_HISTORY",
    "HISTORY_LOST",
    "ChangeEntry",
    "ChangeLog",
    "CommandError",
    "StreamCursor",
    "update_description",
]

DEFAULT_HISTORY = 100_000
HISTORY_LOST = 286
INVALID_RESUME_TOKEN = 260


class CommandError(Exception):
    """A command failure as MongoDB reports it: ``{ok: 0, code, codeName, errmsg}``."""

    def __init__(self, code: int, code_name: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.code_name = code_name

    def reply(self) -> dict[str, Any]:
        return {"ok": 0, "errmsg": str(self), "code": self.code, "codeName": self.code_name}


@dataclass(frozen=True)
class ChangeEntry:
    seq: int
    operation: str  # insert | update | replace | delete | drop
    db: str
    coll: str
    key: Any  # the document's _id (None for drop)
    before: dict[str, Any] | None
    after: dict[str, Any] | None
    cluster_time: Timestamp
    wall_time: datetime
    description: dict[str, Any] | None = None  # updateDescription of an update


def update_description(before: Mapping[str, Any], after: Mapping[str, Any]) -> dict[str, Any]:
    """Top-level fields set and removed, as MongoDB reports a change it cannot narrow down
    further (it names dotted paths for nested ``$set``s; a whole field is also correct)."""
    updated = {k: v for k, v in after.items() if k not in before or before[k] != v}
    removed = [k for k in before if k not in after]
    return {"updatedFields": updated, "removedFields": removed, "truncatedArrays": []}


class ChangeLog:
    """The bounded log; appends and reads are thread safe (one server thread per client)."""

    def __init__(self, history: int = DEFAULT_HISTORY, clock: Callable[[], float] = time.time):
        if history < 1:
            raise ValueError("the change log must hold at least one entry")
        self.epoch = secrets.token_hex(4).upper()
        self._entries: deque[ChangeEntry] = deque(maxlen=history)
        self._seq = 0
        self._clock = clock
        self._last_time = (0, 0)
        self._changed = threading.Condition()

    @property
    def last_seq(self) -> int:
        return self._seq

    def token(self, seq: int) -> dict[str, str]:
        return {"_data": f"{self.epoch}{seq:016X}"}

    def _cluster_time(self) -> Timestamp:
        seconds = int(self._clock())
        last_seconds, last_inc = self._last_time
        inc = last_inc + 1 if seconds <= last_seconds else 1
        seconds = max(seconds, last_seconds)
        self._last_time = (seconds, inc)
        return Timestamp(seconds, inc)

    def append(
        self,
        operation: str,
        db: str,
        coll: str,
        key: Any,
        before: dict[str, Any] | None,
        after: dict[str, Any] | None,
        description: dict[str, Any] | None = None,
    ) -> None:
        with self._changed:
            self._seq += 1
            now = self._clock()
            entry = ChangeEntry(
                self._seq,
                operation,
                db,
                coll,
                key,
                before,
                after,
                self._cluster_time(),
                datetime.fromtimestamp(now, UTC).replace(tzinfo=None),
                description,
            )
            self._entries.append(entry)
            self._changed.notify_all()

    def position_of(self, token: Any) -> int:
        """The sequence number a resume token names; ChangeStreamHistoryLost when the entries
        after it are no longer all in the log."""
        data = token.get("_data") if isinstance(token, Mapping) else None
        if not isinstance(data, str) or len(data) != 24:
            raise CommandError(INVALID_RESUME_TOKEN, "InvalidResumeToken", f"bad token {token!r}")
        epoch, seq_text = data[:8], data[8:]
        try:
            seq = int(seq_text, 16)
        except ValueError as exc:
            raise CommandError(INVALID_RESUME_TOKEN, "InvalidResumeToken", str(exc)) from exc
        if epoch != self.epoch or seq > self._seq:
            raise _history_lost("the token is of an earlier run of this server")
        self.check_position(seq)
        return seq

    def check_position(self, seq: int) -> None:
        with self._changed:
            oldest = self._entries[0].seq if self._entries else self._seq + 1
        if seq < oldest - 1:
            raise _history_lost(f"entries after {seq} are gone (the log starts at {oldest})")

    def position_at(self, moment: Timestamp) -> int:
        """The position just before the first entry at or after ``moment``."""
        with self._changed:
            for entry in self._entries:
                if entry.cluster_time >= moment:
                    position = entry.seq - 1
                    break
            else:
                return self._seq
        self.check_position(position)
        return position

    def read_after(self, seq: int, db: str, coll: str | None, limit: int) -> list[ChangeEntry]:
        self.check_position(seq)
        with self._changed:
            found = [
                e
                for e in self._entries
                if e.seq > seq and e.db == db and (coll is None or e.coll == coll)
            ]
        return found[:limit]

    def wait_after(self, seq: int, timeout: float) -> None:
        """Block until an entry after ``seq`` exists or ``timeout`` seconds pass."""
        deadline = time.monotonic() + timeout
        with self._changed:
            while self._seq <= seq:
                left = deadline - time.monotonic()
                if left <= 0:
                    return
                self._changed.wait(left)


def _history_lost(why: str) -> CommandError:
    return CommandError(
        HISTORY_LOST,
        "ChangeStreamHistoryLost",
        f"Resume of change stream was not possible, as the resume point may no longer be in "
        f"the oplog ({why})",
    )


@dataclass
class StreamCursor:
    """One open ``$changeStream`` cursor: where it stands and what it was asked for."""

    log: ChangeLog
    db: str
    coll: str | None
    position: int
    full_document: str = "default"  # default | updateLookup | whenAvailable | required
    before_change: str = "off"  # off | whenAvailable | required
    match: Callable[[dict[str, Any]], bool] | None = None
    lookup: Callable[[str, Any], dict[str, Any] | None] | None = None
    returned: int = field(default=0)

    def batch(self, limit: int, wait_seconds: float) -> tuple[list[dict[str, Any]], dict[str, str]]:
        """The next events (waiting up to ``wait_seconds`` when there are none yet) and the
        postBatchResumeToken."""
        entries = self.log.read_after(self.position, self.db, self.coll, limit)
        if not entries and wait_seconds > 0:
            deadline = time.monotonic() + wait_seconds
            while not entries:
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                self.log.wait_after(max(self.position, self.log.last_seq), left)
                entries = self.log.read_after(self.position, self.db, self.coll, limit)
        events = []
        for entry in entries:
            self.position = entry.seq
            event = self._render(entry)
            if self.match is None or self.match(event):
                events.append(event)
        if not entries:  # nothing of ours: the stream has still seen everything up to here
            self.position = max(self.position, self.log.last_seq)
        self.returned += len(events)
        return events, self.log.token(self.position)

    def _render(self, entry: ChangeEntry) -> dict[str, Any]:
        event: dict[str, Any] = {
            "_id": self.log.token(entry.seq),
            "operationType": entry.operation,
            "clusterTime": entry.cluster_time,
            "wallTime": entry.wall_time,
            "ns": {"db": entry.db, "coll": entry.coll},
        }
        if entry.operation == "drop":
            return event
        event["documentKey"] = {"_id": entry.key}
        if entry.operation in ("insert", "replace"):
            event["fullDocument"] = entry.after
        elif entry.operation == "update":
            event["updateDescription"] = entry.description
            if self.full_document == "updateLookup":
                event["fullDocument"] = (
                    self.lookup(entry.coll, entry.key) if self.lookup is not None else None
                )
            elif self.full_document in ("whenAvailable", "required"):
                event["fullDocument"] = entry.after
        if self.before_change in ("whenAvailable", "required") and entry.operation != "insert":
            event["fullDocumentBeforeChange"] = entry.before
        return event
