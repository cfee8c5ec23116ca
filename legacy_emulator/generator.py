"""``seed_store``: fill a legacy store with realistic, reproducible data (docs/seed_data.md).

Everything follows from ``seed``: the same seed writes the same documents,
``_id`` included, whatever the clock says. Documents are built lazily and
written with ``insert_many`` in batches, so memory holds one batch per
collection plus the ids later documents refer to.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from legacy_emulator import generator_documents as docs
from legacy_emulator.generator_dirt import DIRT_KINDS, Dirt
from legacy_emulator.generator_plan import (
    COLLECTIONS,
    MAX_OVERSIZED,
    ROLE_NAMES,
    plan_tenants,
    planned_totals,
)
from legacy_emulator.generator_scales import ANCHOR, SCALES, IdMint, Scale, moment_between, stream
from legacy_emulator.generator_tree import SPECS, TenantContext, build_workspace, early
from strangler.errors import DataError
from strangler.mongo import Database

__all__ = ["ANCHOR", "DIRT_KINDS", "SCALES", "Scale", "SeedError", "SeedSummary", "seed_store"]

Document = dict[str, Any]
Progress = Callable[[str, int, int], None]

_BATCH = {"workspace": 50, "workflow": 500, "workflow_versions": 500, "workflowBkp": 200}
_DEFAULT_BATCH = 1000


class SeedError(DataError):
    """The seed cannot run as asked (unknown scale, bad rate, a store that is not empty)."""


@dataclass(frozen=True)
class SeedSummary:
    scale: str
    seed: int
    days: int
    dirty: float
    counts: dict[str, int]
    elapsed_seconds: float
    # (subscription_id, a UserId of that tenant), largest tenant first
    tenants: list[tuple[str, str]]
    # how many times each kind of DIRT_KINDS was injected (all zero for clean data)
    dirt: dict[str, int] = field(default_factory=dict)

    @property
    def total(self) -> int:
        return sum(self.counts.values())

    def lines(self) -> list[str]:
        rate = self.total / self.elapsed_seconds if self.elapsed_seconds > 0 else 0.0
        lines = [
            f"seeded scale {self.scale} (seed {self.seed}, {self.days} days of runs and "
            f"activity, dirt rate {self.dirty:g}): {self.total:,} documents in "
            f"{self.elapsed_seconds:.1f} s ({rate:,.0f}/s)"
        ]
        lines += [f"  {name:<18} {count:>10,}" for name, count in self.counts.items()]
        if any(self.dirt.values()):
            lines.append("  dirt injected:")
            lines += [f"    {kind:<28} {count:>8,}" for kind, count in self.dirt.items()]
        lines.append("  tenants, largest first (subscription_id, a UserId of it):")
        lines += [f"    {sub} {user}" for sub, user in self.tenants[:5]]
        if len(self.tenants) > 5:
            lines.append(f"    ... and {len(self.tenants) - 5} more")
        return lines


class _BatchWriter:
    """Buffers documents per collection and writes them with ``insert_many``."""

    def __init__(self, db: Database, totals: dict[str, int], progress: Progress | None) -> None:
        self._db = db
        self._totals = totals
        self._progress = progress
        self._buffers: dict[str, list[Document]] = {name: [] for name in totals}
        self.done: dict[str, int] = dict.fromkeys(totals, 0)

    async def add(self, collection: str, document: Document) -> None:
        buffer = self._buffers[collection]
        buffer.append(document)
        if len(buffer) >= _BATCH.get(collection, _DEFAULT_BATCH):
            await self.flush(collection)

    async def add_all(self, documents: Iterator[tuple[str, Document]]) -> None:
        for collection, document in documents:
            await self.add(collection, document)

    async def flush(self, collection: str) -> None:
        buffer = self._buffers[collection]
        if not buffer:
            return
        await self._db[collection].insert_many(buffer, ordered=True)
        self.done[collection] += len(buffer)
        self._buffers[collection] = []
        if self._progress is not None:
            self._progress(collection, self.done[collection], self._totals[collection])

    async def close(self) -> None:
        for collection in self._buffers:
            await self.flush(collection)


async def seed_store(
    db: Database,
    *,
    scale: str,
    days: int | None = None,
    dirty: float = 0.0,
    seed: int = 1,
    progress: Progress | None = None,
    replace: bool = False,
) -> SeedSummary:
    """Write a whole legacy data set of ``scale`` into ``db``.

    ``days`` of job runs and activity end at :data:`ANCHOR` (the scale's
    default if not given); ``dirty`` is the rate of each kind of production
    dirt. The store must not hold any of the collections yet unless
    ``replace`` is set, in which case they are dropped first.
    """
    started = time.perf_counter()
    chosen = SCALES.get(scale)
    if chosen is None:
        raise SeedError(f"unknown scale {scale!r}; choose one of {', '.join(SCALES)}")
    if not 0.0 <= dirty <= 1.0:
        raise SeedError(f"dirt rate {dirty} is not between 0 and 1")
    history = chosen.default_days if days is None else days
    if history < 0:
        raise SeedError(f"days must not be negative, got {history}")
    await _prepare(db, replace)

    mint = IdMint(seed)
    dirt = Dirt(dirty, stream(seed, "dirt"), mint)
    oversized = min(MAX_OVERSIZED, max(1, round(dirty * chosen.workspaces / 100))) if dirty else 0
    plans = plan_tenants(chosen, stream(seed, "plan"), mint, oversized)
    totals = planned_totals(plans, chosen, history)
    writer = _BatchWriter(db, totals, progress)

    tenants = [TenantContext(plan) for plan in plans]
    await writer.add_all(_people(seed, mint, dirt, tenants))
    for tenant in tenants:
        rng = stream(seed, "tree", tenant.plan.index)
        for workspace in tenant.plan.workspaces:
            await writer.add_all(build_workspace(rng, mint, dirt, tenant, workspace))
    await writer.add_all(_runs(chosen, history, seed, mint, dirt, tenants))
    await writer.add_all(_activity(chosen, history, seed, mint, dirt, tenants))
    await writer.close()

    return SeedSummary(
        scale=scale,
        seed=seed,
        days=history,
        dirty=dirty,
        counts=dict(writer.done),
        elapsed_seconds=time.perf_counter() - started,
        tenants=[(plan.subscription_id, plan.user_ids[0]) for plan in plans],
        dirt=dict(dirt.counts),
    )


async def _prepare(db: Database, replace: bool) -> None:
    existing = [name for name in await db.list_collection_names() if name in COLLECTIONS]
    if replace:
        for name in existing:
            await db[name].drop()
        return
    for name in existing:
        if await db[name].count_documents({}) > 0:
            raise SeedError(
                f"collection {name!r} already holds documents; seed into an empty store "
                "or ask for the existing legacy collections to be replaced"
            )


def _people(
    seed: int, mint: IdMint, dirt: Dirt, tenants: list[TenantContext]
) -> Iterator[tuple[str, Document]]:
    """Accounts, users, groups, roles and connectors, tenant by tenant."""
    for tenant in tenants:
        plan = tenant.plan
        rng = stream(seed, "people", plan.index)
        users = plan.user_ids
        yield _finish(
            mint,
            dirt,
            "Accounts",
            docs.account(rng, plan.subscription_id, plan.company, plan.created_at),
        )
        for user_id in users:
            created = early(rng, plan.created_at, ANCHOR - timedelta(days=2))
            person = docs.user(rng, user_id, plan.subscription_id, plan.domain, created)
            tenant.targets.append(("user", user_id, person["username"]))
            yield _finish(mint, dirt, "users", person)
        for _ in range(plan.groups):
            members = rng.sample(users, min(len(users), rng.randint(1, 12)))
            created = early(rng, plan.created_at, ANCHOR - timedelta(days=2))
            group = docs.group(
                rng, mint("grp_"), plan.subscription_id, members, rng.choice(users), created
            )
            yield _finish(mint, dirt, "groups", group)
        for name in ROLE_NAMES[: plan.roles]:
            members = rng.sample(users, min(len(users), rng.randint(1, 8)))
            yield _finish(
                mint,
                dirt,
                "roles",
                docs.role(rng, mint("role_"), plan.subscription_id, name, members),
                plan.created_at,
            )
        for number in range(plan.connectors):
            name = f"{rng.choice(('Warehouse', 'CRM', 'Billing', 'Lake', 'Events'))} {number + 1}"
            if tenant.connector_names and dirt.hit("duplicate_connector_name"):
                name = rng.choice(tenant.connector_names)
            connector_id = mint("cn_")
            created = early(rng, plan.created_at, ANCHOR - timedelta(days=30))
            document = docs.connector(
                rng, connector_id, plan.subscription_id, name, rng.choice(users), created
            )
            tenant.connector_ids.append(connector_id)
            tenant.connector_names.append(name)
            if document["d_flag"] is False:
                tenant.targets.append(("connector", connector_id, name))
            yield _finish(mint, dirt, "connectors", document)


def _finish(
    mint: IdMint,
    dirt: Dirt,
    collection: str,
    document: Document,
    created: datetime | None = None,
) -> tuple[str, Document]:
    """Give the document its ``_id`` (from its creation time), then its dirt."""
    document["_id"] = mint.object_id(created or document["created_at"])
    dirt.apply(document, SPECS[collection])
    return collection, document


def _runs(
    scale: Scale, days: int, seed: int, mint: IdMint, dirt: Dirt, tenants: list[TenantContext]
) -> Iterator[tuple[str, Document]]:
    """``job_runs_per_day`` runs on each of the last ``days`` days, busiest tenants most."""
    rng = stream(seed, "runs")
    runnable = [tenant for tenant in tenants if tenant.runnable]
    weights = [len(tenant.runnable) for tenant in runnable]
    recent = ANCHOR - timedelta(hours=2)  # runs started since then are still going
    for day in range(days, 0, -1):
        start = ANCHOR - timedelta(days=day)
        for tenant in rng.choices(runnable, weights, k=scale.job_runs_per_day) if runnable else ():
            created = moment_between(rng, start, start + timedelta(days=1))
            ref = rng.choice(tenant.runnable)
            run = docs.job_run(
                rng, mint("run_"), ref, rng.choice(tenant.plan.user_ids), created, created < recent
            )
            yield _finish(mint, dirt, "jobRun", run)


def _activity(
    scale: Scale, days: int, seed: int, mint: IdMint, dirt: Dirt, tenants: list[TenantContext]
) -> Iterator[tuple[str, Document]]:
    rng = stream(seed, "activity")
    weights = [len(tenant.plan.user_ids) for tenant in tenants]
    for day in range(days, 0, -1):
        start = ANCHOR - timedelta(days=day)
        for tenant in rng.choices(tenants, weights, k=scale.activity_per_day):
            created = moment_between(rng, start, start + timedelta(days=1))
            entry = docs.activity(
                rng,
                tenant.plan.subscription_id,
                rng.choice(tenant.plan.user_ids),
                rng.choice(tenant.targets),
                created,
            )
            yield _finish(mint, dirt, "userActivity", entry)
