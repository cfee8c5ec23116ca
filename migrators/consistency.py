"""Read-your-writes across the two sides (DESIGN.md): a client never reads older data than
a write it just made, whichever side served the write.

The only window where that can fail is a read served by the other side than the write,
before the sync carried the write across: in ``canary``, a tenant in the canary writes
through legacy (writes stay there until ``new``) and reads from PostgreSQL, which the
forward sync fills a moment later. (``new`` serves reads and writes from PostgreSQL, and
the fenced switch drains both syncs before each flip, so it has no such window.)

Policy, for one (entity, tenant):

- after a successful write, the proxy notes which side took it and when
  (:meth:`ConsistencyStore.note_write`), in Redis with a bounded TTL, so every proxy
  instance sees it;
- a read that would go to the other side goes to the side that took the write instead,
  until the sync toward the other side reports that it has applied every change up to
  the write (its *watermark*), or until the pin's bound runs out
  (:func:`choose_read_side`).

The watermark is a number of epoch seconds per (migration entity, direction) in Redis: the
forward sync publishes "every legacy change older than this is in PostgreSQL", the reverse
sync "every outbox row committed before this is in MongoDB" (:meth:`publish_watermark`).
Pins are per routing entity; one made of several migration entities (``workspaces``: the
workflows, the trees and their histories, each with its own sync worker) has carried a
write across when every member's watermark has passed it: the lowest one counts. Without
a watermark from every member, a pin simply lasts its bound, which is chosen above the
sync's lag alert.

Across entities (proxy/causal.py): a write's touched ids are noted too (``note_ids``), and a
request of another entity naming one, served by the other side, waits until the sync
toward that side has passed the write (``not_carried``).

The decision is pure; the store does one Redis round trip per decision (an MGET of the pin
and the members' watermarks) and one SET per write, only for entities in ``canary``.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from strangler.errors import ServiceUnavailable

__all__ = [
    "DEFAULT_PIN_SECONDS",
    "DEFAULT_SKEW_SECONDS",
    "ConsistencyStore",
    "IdMark",
    "WriteMark",
    "choose_read_side",
    "needs_tracking",
    "publish_watermark_or_warn",
]

Side = Literal["legacy", "new"]
Direction = Literal["forward", "reverse"]

# How long a write may pin its tenant's reads to one side at most: above the sync's lag
# alert (a sync slower than this is an incident, and an operator is already looking).
DEFAULT_PIN_SECONDS = 30.0
# Clocks of proxies and sync workers differ a little: a watermark must pass the write by
# this much before the pin is released.
DEFAULT_SKEW_SECONDS = 0.5


@dataclass(frozen=True)
class WriteMark:
    side: Side
    at: float  # epoch seconds, by the proxy that served the write


@dataclass(frozen=True)
class IdMark:
    """A write that touched a legacy id: the migration entity whose sync carries it, the
    side that took it, when (epoch seconds, by the proxy that served it)."""

    entity: str
    side: Side
    at: float


def needs_tracking(mode: str) -> bool:
    """Only canary serves a tenant's reads and writes from different sides."""
    return mode == "canary"


def direction_toward(side: Side) -> Direction:
    """The sync that carries a write made on ``side`` to the other side."""
    return "forward" if side == "legacy" else "reverse"


def choose_read_side(
    planned: Side,
    mark: WriteMark | None,
    watermark: float | None,
    now: float,
    *,
    pin_seconds: float = DEFAULT_PIN_SECONDS,
    skew_seconds: float = DEFAULT_SKEW_SECONDS,
) -> Side:
    """The side that serves a read the routing table sends to ``planned``.

    ``mark`` is the tenant's last write on the entity; ``watermark`` is what the sync from
    the mark's side toward ``planned`` has applied up to (None: unknown).
    """
    if mark is None or mark.side == planned:
        return planned
    if now - mark.at >= pin_seconds:
        return planned  # bounded: a pin never outlives its TTL, even if Redis kept it
    if watermark is not None and watermark >= mark.at + skew_seconds:
        return planned  # the write has reached the planned side
    return mark.side


def _decode(value: Any) -> str | None:
    if value is None:
        return None
    return value.decode() if isinstance(value, bytes) else str(value)


class ConsistencyStore:
    """The pins and watermarks in Redis (redis.asyncio client), shared by every instance."""

    def __init__(
        self,
        redis: Any,
        *,
        prefix: str = "strangler:ryw:",
        pin_seconds: float = DEFAULT_PIN_SECONDS,
        skew_seconds: float = DEFAULT_SKEW_SECONDS,
        members: Mapping[str, Sequence[str]] | None = None,
    ) -> None:
        self._redis = redis
        self._prefix = prefix
        self.pin_seconds = pin_seconds
        self.skew_seconds = skew_seconds
        # routing entity -> the migration entities whose syncs carry its writes (default:
        # the spec registry's groups; an entity not listed is its own only member)
        self._members = dict(members) if members is not None else _registry_groups()

    def members_of(self, entity: str) -> tuple[str, ...]:
        return tuple(self._members.get(entity, ())) or (entity,)

    def _mark_key(self, entity: str, tenant: str) -> str:
        return f"{self._prefix}mark:{entity}:{tenant}"

    def _watermark_key(self, entity: str, direction: Direction) -> str:
        return f"{self._prefix}applied:{entity}:{direction}"

    async def note_write(self, entity: str, tenant: str, side: Side, at: float) -> None:
        """Record a successful write; call it before the response reaches the client."""
        try:
            await self._redis.set(
                self._mark_key(entity, tenant),
                f"{side}|{at:.6f}",
                px=max(1, int(self.pin_seconds * 1000)),
            )
        except Exception as exc:  # redis raises many kinds; all mean "not reachable"
            raise ServiceUnavailable("REDIS_URL", "redis", type(exc).__name__) from exc

    def _id_key(self, tenant: str, legacy_id: str) -> str:
        return f"{self._prefix}id:{tenant}:{legacy_id}"

    async def note_ids(
        self, tenant: str, touched: Mapping[str, Sequence[str]], side: Side, at: float
    ) -> None:
        """Record the ids a successful write touched (migration entity -> legacy ids), for
        the requests of other entities that name them (:meth:`not_carried`)."""
        if not any(touched.values()):
            return
        ttl = max(1, int(self.pin_seconds * 1000))
        try:
            async with self._redis.pipeline(transaction=False) as pipe:
                for entity, ids in touched.items():
                    for legacy_id in ids:
                        pipe.set(self._id_key(tenant, legacy_id), f"{entity}|{side}|{at:.6f}",
                                 px=ttl)  # fmt: skip
                await pipe.execute()
        except Exception as exc:  # redis raises many kinds; all mean "not reachable"
            raise ServiceUnavailable("REDIS_URL", "redis", type(exc).__name__) from exc

    async def not_carried(
        self, tenant: str, ids: Sequence[str], serving: Side, now: float
    ) -> IdMark | None:
        """A write that touched one of ``ids`` on the other side than ``serving`` and that
        its sync has not carried across yet (None: every one has, or none was written
        lately). Two MGETs at most: the ids' marks, then their syncs' watermarks.

        On a Redis failure: None (a request is never refused for want of Redis)."""
        if not ids:
            return None
        try:
            raw = await self._redis.mget([self._id_key(tenant, i) for i in ids])
            marks = [m for m in (_parse_id_mark(_decode(v)) for v in raw) if m is not None]
            marks = [m for m in marks if m.side != serving and now - m.at < self.pin_seconds]
            if not marks:
                return None
            keys = [self._watermark_key(m.entity, direction_toward(m.side)) for m in marks]
            watermarks = [_decode(v) for v in await self._redis.mget(keys)]
        except Exception:  # redis raises many kinds; all mean "cannot tell"
            return None
        for mark, raw_watermark in zip(marks, watermarks, strict=True):
            watermark = _lowest([raw_watermark])
            if watermark is None or watermark < mark.at + self.skew_seconds:
                return mark
        return None

    async def publish_watermark(
        self, entity: str, direction: Direction, applied_up_to: float
    ) -> None:
        """Called by a sync: every change of ``entity`` older than this has been applied."""
        await self._redis.set(self._watermark_key(entity, direction), f"{applied_up_to:.6f}")

    async def mark_of(self, entity: str, tenant: str) -> WriteMark | None:
        return _parse_mark(_decode(await self._redis.get(self._mark_key(entity, tenant))))

    async def read_side(self, entity: str, tenant: str, planned: Side, now: float) -> Side:
        """Where a read should go (one MGET: the pin and the members' watermarks).

        On a Redis failure: legacy, the side that cannot be behind a canary write (legacy
        takes every write until ``new``)."""
        members = self.members_of(entity)
        keys = [self._mark_key(entity, tenant)]
        keys += [self._watermark_key(m, d) for d in ("forward", "reverse") for m in members]
        try:
            raw_mark, *raw_watermarks = (_decode(v) for v in await self._redis.mget(keys))
        except Exception:  # redis raises many kinds; all mean "cannot tell"
            return "legacy"
        mark = _parse_mark(raw_mark)
        if mark is None:
            return planned
        forward, reverse = raw_watermarks[: len(members)], raw_watermarks[len(members) :]
        chosen = forward if direction_toward(mark.side) == "forward" else reverse
        return choose_read_side(
            planned,
            mark,
            _lowest(chosen),
            now,
            pin_seconds=self.pin_seconds,
            skew_seconds=self.skew_seconds,
        )


async def publish_watermark_or_warn(
    watermarks: Any | None,
    entity: str,
    direction: Direction,
    applied_up_to: float,
    log: logging.Logger,
) -> None:
    """A sync's watermark, if it has a store; a failure only keeps the proxies' pins and
    holds longer (they expire), so it is logged and never stops the sync."""
    if watermarks is None:
        return
    try:
        await watermarks.publish_watermark(entity, direction, applied_up_to)
    except Exception as exc:  # redis raises many kinds; none may stop a sync
        log.warning("%s %s sync: watermark not published: %s", entity, direction, exc)


def _lowest(raw_watermarks: Sequence[str | None]) -> float | None:
    """How far every member has applied: the lowest watermark, None if one is missing."""
    values = []
    for raw in raw_watermarks:
        try:
            values.append(float(raw) if raw else None)
        except ValueError:
            values.append(None)
    if not values or any(value is None for value in values):
        return None
    return min(value for value in values if value is not None)


def _registry_groups() -> dict[str, tuple[str, ...]]:
    from migrators.registry import default_registry

    groups: dict[str, list[str]] = {}
    for spec in default_registry():
        groups.setdefault(spec.routing_entity, []).append(spec.name)
    return {entity: tuple(names) for entity, names in groups.items()}


def _parse_id_mark(raw: str | None) -> IdMark | None:
    if not raw:
        return None
    entity, side, at = [*raw.split("|"), "", ""][:3]
    if side not in ("legacy", "new") or not entity:
        return None
    try:
        return IdMark(entity, side, float(at))  # type: ignore[arg-type]
    except ValueError:
        return None


def _parse_mark(raw: str | None) -> WriteMark | None:
    if not raw:
        return None
    side, _, at = raw.partition("|")
    if side not in ("legacy", "new"):
        return None
    try:
        return WriteMark(side, float(at))  # type: ignore[arg-type]
    except ValueError:
        return None
