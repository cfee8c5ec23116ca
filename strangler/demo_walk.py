"""The walk: each entity through ``legacy -> shadow -> canary 50 -> new -> legacy`` with the
flags API (``control.flags``, what ``strangler flags plan/set`` run), gates evaluated and
printed before each step, the shadow report printed after a dwell with traffic.

An entity of the flag table may span several migration entities (the workspace tree is
four: workflows, workspaces, versions, backups, which switch together), so the gates
(``LiveProbes``) and the drain of a switch (``control.cli.drain_check``) look at
all of them.

Gates are never forced. Into canary, the comparator needs evidence: the walk keeps the
traffic running until the gates pass or ``evidence_wait`` runs out; a gate that still fails
stops the walk (:class:`WalkStopped`), which the demo reports as a failure.
"""

from __future__ import annotations

import argparse
import asyncio
import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import asyncpg

from control.cli import LiveProbes, drain_check
from control.flags import (
    Change,
    Gate,
    GateConfig,
    SwitchSteps,
    edit_rules_text,
    evaluate_gates,
    gate_results_json,
    parse_table,
    plan_change,
    read_flags,
    switch_with_fence,
    wait_for_table_hash,
    write_rules_atomically,
)
from control.plan import migration_order
from control.retire import run_retire
from migrators.registry import default_registry
from migrators.reverse import pending_count
from shadow_compare.endpoints import load_entity_endpoints
from shadow_compare.render import render
from shadow_compare.report import Gates, build_report
from shadow_compare.store import ResultStore
from strangler.demo_stack import DemoStack, group_specs
from strangler.demo_traffic import Traffic
from strangler.errors import StranglerError

__all__ = [
    "STEPS",
    "Walk",
    "WalkStopped",
    "WalkTimes",
]

STEPS: tuple[tuple[str, float | None], ...] = (
    ("shadow", None),
    ("canary", 50.0),
    ("new", None),
    ("legacy", None),
)


# The Wilson upper bound at 95% with no regression is at most 0.05 from ~75 comparisons on.
DEMO_MAX_REGRESSION_RATE = 0.05


class WalkStopped(StranglerError):
    """A gate failed or a switch did not complete: a finding, never forced past."""


def _read(path: str) -> str:
    return Path(path).read_text(encoding="utf-8")  # a few KB: fine on the event loop


@dataclass
class WalkTimes:
    dwell: float = 4.0  # seconds of traffic at each step before the report
    evidence_wait: float = 60.0  # at most, for the comparator's samples before canary
    verify_wait: float = 30.0  # at most, for verify to meet no write in flight before new
    settle: float = 0.5  # after fencing, for writes that passed the fence


class Walk:
    def __init__(
        self, stack: DemoStack, traffic: Traffic, times: WalkTimes, say: Callable[[str], None]
    ) -> None:
        self.stack = stack
        self.traffic = traffic
        self.times = times
        self.say = say
        # The shipped thresholds but the regression-rate bound, which the demo's short window
        # cannot reach at 0.01 (it says so); --max-regression-rate is the operator's knob.
        self.config = GateConfig(max_regression_rate=DEMO_MAX_REGRESSION_RATE)
        self._shown_samples = 0
        self._step_started: datetime | None = None

    async def dwell(self, seconds: float) -> None:
        end = time.monotonic() + seconds
        while (left := end - time.monotonic()) > 0:
            await asyncio.sleep(min(2.0, left))
            self.say(f"     traffic: {self.traffic.counters.line()}")
            samples = self.traffic.counters.unexpected_samples
            for sample in samples[self._shown_samples :]:
                self.say(f"     unexpected answer: {sample}")
            self._shown_samples = len(samples)
            failures = self.stack.forward_failures()
            if failures:
                raise WalkStopped("a forward sync stopped: " + "; ".join(failures))

    async def walk(self, entity: str, number: int) -> None:
        self.say(f"\n== {number}. {entity}: legacy -> shadow -> canary 50 -> new -> legacy ==")
        self.traffic.focus = entity
        names = ", ".join(spec.name for spec in group_specs(entity))
        self.say(f"   ({entity} moves as: {names})")
        self.say(f"-- {entity}: legacy (every request served by legacy)")
        await self.dwell(self.times.dwell / 2)
        conn = await asyncpg.connect(self.stack.settings.database_url)
        try:
            probes = LiveProbes(conn, self.stack.settings, self.stack.rules_path)
            for mode, percent in STEPS:
                await self.step(conn, probes, entity, mode, percent)
        finally:
            await conn.close()

    async def end_state(self, number: int) -> bool:
        """Every entity into new, in the order 'flags plan all new' takes them, a step at a
        time under traffic; then (traffic paused) the reverse sync drains, 'strangler
        retire' checks and records the point of no return, the syncs and the legacy
        emulator stop, and traffic goes on against the proxy alone. True once retired."""
        assert self.stack.proxy is not None
        rules = self.stack.rules_path
        order = migration_order(list(read_flags(rules)), default_registry())
        self.say(f"\n== {number}. the end state: every entity into new ({', '.join(order)}: "
                 "'flags plan all new' order), MongoDB retired, legacy stopped ==")  # fmt: skip
        # In new a sampled read is also sent to legacy, which is about to stop: none is.
        unsampled = re.sub(r"\n    sample_rate: [0-9.]+(?=\n)", "", _read(rules))
        write_rules_atomically(rules, unsampled)
        await wait_for_table_hash([self.stack.proxy.admin_url],
                                  parse_table(unsampled, rules).canonical_hash(), 30.0)  # fmt: skip
        self.say("   sampling off: no read goes to legacy for comparison any more")
        # Each entity went into new under traffic in its walk above; here they switch one
        # after the other with the clients paused (the history collections grow with every
        # tree edit, and under constant edits their verify rarely meets a quiet moment).
        self.say("   client traffic paused while the entities switch")
        await self.traffic.stop()
        conn = await asyncpg.connect(self.stack.settings.database_url)
        try:
            probes = LiveProbes(conn, self.stack.settings, rules)
            for entity in order:
                await self.step(conn, probes, entity, "new", None, dwell=False)
        finally:
            await conn.close()
        self.say("-- every entity in new: traffic again, every request served from PostgreSQL "
                 "(writes still carried back to MongoDB by the reverse sync)")  # fmt: skip
        self.traffic.restart()
        await self.dwell(self.times.dwell)
        self.say("-- retire MongoDB (strangler retire --yes), client traffic paused meanwhile")
        await self.traffic.stop()
        assert self.stack.pool is not None
        async with self.stack.pool.acquire() as pg:
            for _ in range(150):  # 30 s at most: the reverse sync drains the last writes
                if not await pending_count(pg):
                    break
                await asyncio.sleep(0.2)
        args = argparse.Namespace(
            rules=rules, yes=True, dry_run=False, who="strangler demo",
            reason="the demo's end state", proxy_admin=[self.stack.proxy.admin_url], min_age=0.0,
        )  # fmt: skip
        try:
            result = await run_retire(self.stack.settings, args, self._indented)
        except StranglerError as exc:
            raise WalkStopped(f"strangler retire refused: {exc}") from exc
        if result.retirement is None:
            raise WalkStopped("strangler retire recorded nothing")
        await self.stack.retire_legacy()
        self.say("   reverse sync, forward syncs and the legacy emulator stopped: "
                 f"{self.stack.legacy_url} refuses connections")  # fmt: skip
        self.traffic.restart()
        self.say("-- traffic against the proxy alone (PostgreSQL and Redis)")
        await self.dwell(self.times.dwell * 2)
        return True

    def _indented(self, line: str) -> None:
        self.say(f"   {line}")

    async def _gates(self, change: Change, probes: LiveProbes) -> list[Gate]:
        """The gates, evaluated again while they fail for a reason traffic resolves: into
        canary the comparator needs evidence; into new, verify under live traffic can meet
        a write in flight (a document whose stamps did not move, changed between the reads
        of the two stores). A gate still failing at the deadline stops the walk."""
        gates = await evaluate_gates(change, probes, self.config)
        wait = {"canary": self.times.evidence_wait, "new": self.times.verify_wait}
        deadline = time.monotonic() + wait.get(change.to_mode, 0.0)
        said = ""
        while not all(g.passed for g in gates) and time.monotonic() < deadline:
            waiting = "; ".join(f"{g.name}: {g.detail}" for g in gates if not g.passed)
            if waiting != said:  # a line when the reason changes, not one per evaluation
                self.say(f"     evaluating again every 2 s ({waiting[:300]})")
                said = waiting
            await asyncio.sleep(2.0)
            gates = await evaluate_gates(change, probes, self.config)
        return gates

    async def step(
        self,
        conn: asyncpg.Connection,
        probes: LiveProbes,
        entity: str,
        mode: str,
        percent: float | None,
        *,
        dwell: bool = True,
    ) -> None:
        """One flag change with its gates; ``dwell``: traffic runs a while after it and the
        shadow report of the step follows (the end state switches with traffic paused)."""
        rules = self.stack.rules_path
        change = plan_change(read_flags(rules), entity, mode, percent)
        self.say(f"-- {change.describe()}")
        gates = await self._gates(change, probes)
        if change.switches_truth:
            self.say("   switches the source of truth: fence, drain, flip, unfence")
        if not gates:
            self.say("   gates: none (a step back is always allowed)")
        for gate in gates:
            self.say(f"   [{'pass' if gate.passed else 'FAIL'}] {gate.name}: {gate.detail}")
        failed = [g for g in gates if not g.passed]
        if failed:
            if any(g.name.startswith("shadow-") for g in failed) and self._step_started:
                # the evidence the gate judged: what differed, with samples, in the CI log
                self.say(await self.report(entity, self._step_started, samples=10))
            raise WalkStopped(
                f"{change.describe()}: {len(failed)} gate(s) failed and the demo does not force "
                "gates: " + "; ".join(f"{g.name}: {g.detail}" for g in failed)
            )
        started = self._step_started = datetime.now(UTC)
        await self._apply(conn, probes, change, gates)
        # an append-only entity's forward sync never rests (migrators.spec.EntitySpec)
        specs = [spec for spec in group_specs(entity) if not spec.append_only]
        if change.to_mode == "new" and specs:
            # PostgreSQL is the truth now: the forward sync rests (docs/new_side.md).
            await self.stack.stop_forward(specs)
            self.say("   forward sync resting for " + ", ".join(s.name for s in specs))
        elif change.from_mode == "new" and specs:
            self.stack.start_forward(specs)
            self.say("   forward sync running again for " + ", ".join(s.name for s in specs))
        if not dwell:
            return
        await self.dwell(self.times.dwell)
        if change.to_mode != "legacy":
            self.say(await self.report(entity, started))
        else:
            self.say("   (legacy serves everything again: nothing is compared)")

    async def _apply(
        self, conn: asyncpg.Connection, probes: LiveProbes, change: Change, gates: list[Gate]
    ) -> None:
        assert self.stack.proxy is not None
        rules = self.stack.rules_path
        edited = edit_rules_text(_read(rules), change)
        expected = parse_table(edited, rules).canonical_hash()

        def flip() -> str:
            write_rules_atomically(rules, edited)
            return expected

        admin = [self.stack.proxy.admin_url]
        steps = SwitchSteps(
            admin_urls=admin,
            drained=drain_check(
                change, conn, self.stack.redis, probes.verify, prefix=self.stack.redis_prefix
            ),
            fence_seconds=60.0,
            settle_seconds=self.times.settle,
            drain_timeout=60.0,
            log=lambda line: self.say(f"   {line}"),
        )
        try:
            if change.switches_truth:
                await switch_with_fence(change, flip, steps)
            else:
                flip()
                await wait_for_table_hash(admin, expected, 30.0)
                steps.say(f"flag set: {change.describe()}; the proxy serves the new table")
        except StranglerError as exc:
            raise WalkStopped(f"{change.describe()} did not complete: {exc}") from exc
        await conn.execute(
            "INSERT INTO routing_flag_changes (who, entity, from_mode, to_mode, percent, "
            "gate_results, forced, reason) VALUES ($1, $2, $3, $4, $5, $6::jsonb, false, $7)",
            "strangler demo",
            change.entity,
            change.from_mode,
            change.to_mode,
            round(change.to_percent) if change.to_mode == "canary" else None,
            gate_results_json(gates),
            "; ".join(steps.events),
        )

    async def report(self, entity: str, since: datetime, samples: int = 3) -> str:
        """The shadow report of ``entity`` for this step's window, as text."""
        store = ResultStore(self.stack.settings.database_url)
        try:
            data = await store.read(since=since, entity=entity, runs=["live"])
        finally:
            await store.close()
        report = build_report(
            data,
            since=since,
            runs=["live"],
            gates=Gates(
                min_samples=self.config.min_samples,
                max_regression_rate=self.config.max_regression_rate,
            ),
            entity_endpoints=load_entity_endpoints(Path(self.stack.rules_path)),
            entity=entity,
            samples_per_entity=samples,
        )
        text = render(report, "text").rstrip("\n")
        return "   shadow report for this step:\n" + "\n".join(
            "   | " + line for line in text.splitlines()
        )
