"""``strangler flags plan all new``: every entity's path into new, referenced entities first,
every gate of every step evaluated, nothing changed."""

from __future__ import annotations

import argparse
import shutil
from pathlib import Path

from control.cli import run_plan_all
from control.flags import FlagRow, Gate, GateConfig
from control.plan import migration_order, plan_all_new
from migrators.registry import default_registry
from strangler.config import Settings

REPO_RULES = Path(__file__).resolve().parents[2] / "routing_rules.yaml"
REGISTRY = default_registry()


class Evidence:
    """Gate evidence as a test states it: which entities are backfilled, synced, verified."""

    def __init__(self, ready: set[str]) -> None:
        self.ready = ready
        self.asked: list[str] = []

    async def backfill_pending(self, entity: str) -> list[str]:
        self.asked.append(f"backfill {entity}")
        return [] if entity in self.ready else [entity]

    async def sync_state(self, entity: str) -> tuple[bool, float | None]:
        return (True, 0.5) if entity in self.ready else (False, None)

    async def shadow_gates(self, entity: str, config: GateConfig) -> list[Gate]:
        self.asked.append(f"shadow {entity}")
        return [Gate("shadow-regressions", entity in self.ready, "report")]

    async def verify(self, entity: str) -> tuple[bool, str]:
        self.asked.append(f"verify {entity}")
        return entity in self.ready, "verify"


def _flags(**modes: str) -> dict[str, FlagRow]:
    table = ("users", "connectors", "workspaces", "job_runs", "groups", "roles", "activity")
    return {
        name: FlagRow(name, modes.get(name, "legacy"), 50.0 if modes.get(name) == "canary" else 0,
                      0.0, False)
        for name in table
    }  # fmt: skip


def test_an_entity_moves_after_every_entity_its_rows_reference() -> None:
    order = migration_order(["workspaces", "connectors", "users"], REGISTRY)
    assert order.index("workspaces") > order.index("connectors")
    assert order.index("workspaces") > order.index("users")
    mapped = {spec.routing_entity for spec in REGISTRY}
    whole = migration_order(list(_flags()), REGISTRY)
    unmapped = [e for e in whole if e not in mapped]
    assert whole[len(whole) - len(unmapped) :] == unmapped  # nothing can move those yet


async def test_every_step_of_every_entity_is_evaluated_and_failures_named() -> None:
    evidence = Evidence({"users", "connectors"})
    plan = await plan_all_new(
        _flags(connectors="canary", users="new"), REGISTRY, evidence, GateConfig(),
        canary_percents=(10, 50),
    )  # fmt: skip
    by_entity = {p.entity: p for p in plan.entities}
    assert by_entity["users"].steps == []
    # canary 50 already: only the switch into new is left
    assert [c.describe() for c, _ in by_entity["connectors"].steps] == [
        "connectors: canary 50% -> new"
    ]
    assert [c.describe() for c, _ in by_entity["workspaces"].steps] == [
        "workspaces: legacy -> shadow",
        "workspaces: shadow -> canary 10%",
        "workspaces: canary 10% -> canary 50%",
        "workspaces: canary 50% -> new",
    ]
    assert "verify workspaces" in evidence.asked and "shadow workspaces" in evidence.asked
    failing = {(c.entity, g.name) for c, g in plan.failed}
    assert ("workspaces", "backfill-done") in failing and ("workspaces", "verify-clean") in failing
    assert not any(entity in ("users", "connectors") for entity, _ in failing)
    text = "\n".join(plan.lines())
    assert "[FAIL] backfill-done" in text and "switches the source of truth" in text
    assert text.splitlines()[-1].startswith(f"{sum(len(p.steps) for p in plan.entities)} step(s)")


async def test_plan_all_new_against_a_fresh_database_fails_on_backfill_and_changes_nothing(
    migrated_database_url: str, tmp_path: Path
) -> None:
    rules = tmp_path / "routing_rules.yaml"
    shutil.copy(REPO_RULES, rules)
    before = rules.read_text()
    args = argparse.Namespace(
        entity="all", mode="new", percent=None, rules=str(rules), max_lag=5.0, min_samples=30,
        max_regression_rate=0.01, window_hours=1.0, canary="50",
    )  # fmt: skip
    settings = Settings(database_url=migrated_database_url, mongo_url="memory://plan-all")
    plan = await run_plan_all(settings, args)
    assert rules.read_text() == before
    assert {p.entity for p in plan.entities} == set(_flags())
    assert all(
        any(g.name == "backfill-done" and not g.passed for g in plan_steps)
        for p in plan.entities
        for change, plan_steps in p.steps[:1]
    )
