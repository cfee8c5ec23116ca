"""Changing an entity's routing mode: the plan, its gates, and the fenced switch.

    change = plan_change(read_flags(path), "connectors", "canary", 25)
    gates = await evaluate_gates(change, probes)          # what `flags plan` prints
    await apply_change(change, path, gates, forced, ...)  # what `flags set` does

Gates (each a :class:`Gate` with the evidence in its detail):

- into ``shadow`` (or further): the entity's backfill, and its dependencies', completed;
  its forward sync running;
- into ``canary`` (or a higher percent): the shadow report's regression-rate upper bound
  under the threshold over at least ``min_samples`` compared exchanges;
- into ``new``: verify clean, and the forward sync's lag at most ``max_lag_seconds``.
  Stepping back (to a lower mode or percent) has no gate: it must always be possible.

A change of the source of truth (into or out of ``new``) is a fenced switch, so that no
write is lost or reordered across it:

1. fence the entity's writes on every proxy (admin port; the fence is re-asserted while
   the switch runs, and lapses by itself if this process dies);
2. wait until no proxy has a write of the entity in flight that passed before the fence
   (``GET /admin/fence/{entity}``: each counts its writes until answered), after at least
   ``settle`` seconds (for a write whose client left, which legacy may still be applying);
3. drain the sync in flight: leaving legacy as truth, the forward sync has applied every
   touched id (touched stream drained) and reports lag 0 after the fence; leaving ``new``,
   the reverse outbox of the entity is empty;
4. flip the flag: rewrite routing_rules.yaml atomically (temp file + rename), only the
   entity's ``mode``/``percent`` lines, every comment and other entry kept;
5. wait until every proxy reports the new table hash;
6. lift the fence.

A failure before step 4 lifts the fence and changes nothing. A failure after it keeps the
fence (bounded) so no proxy with the old table can take a write on the old side.
"""

from __future__ import annotations

import asyncio
import json
import os
import tempfile
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import httpx
import yaml

from proxy.errors import AdminUnreachable
from proxy.fence_client import lift_fence, set_fence, writes_in_flight
from proxy.rules import MODES, RulesFile, parse_rules
from strangler.errors import DataError, PermanentError, RetryableError

__all__ = [
    "Change",
    "FlagRow",
    "Gate",
    "GateConfig",
    "GateProbes",
    "GatesFailed",
    "SwitchFailed",
    "SwitchSteps",
    "edit_rules_text",
    "evaluate_gates",
    "gate_results_json",
    "parse_table",
    "plan_change",
    "read_flags",
    "switch_with_fence",
    "wait_for_table_hash",
    "write_rules_atomically",
]

_RANK = {mode: index for index, mode in enumerate(MODES)}  # legacy < shadow < canary < new


class GatesFailed(PermanentError):
    def __init__(self, change: Change, failed: Sequence[Gate]) -> None:
        self.failed = tuple(failed)
        listed = "; ".join(f"{g.name}: {g.detail}" for g in failed)
        super().__init__(
            f"{change.describe()} refused, {len(failed)} gate(s) failed ({listed}); "
            "fix what they say, or pass --force to override (the override is logged)"
        )


class SwitchFailed(RetryableError):
    """The fenced switch could not complete; the message says what state it left."""


@dataclass(frozen=True)
class FlagRow:
    entity: str
    mode: str
    percent: float
    sample_rate: float
    fenced: bool


@dataclass(frozen=True)
class Change:
    entity: str
    from_mode: str
    to_mode: str
    from_percent: float
    to_percent: float

    @property
    def switches_truth(self) -> bool:
        """Into or out of ``new``: where writes are committed changes."""
        return (self.from_mode == "new") != (self.to_mode == "new")

    @property
    def forward(self) -> bool:
        """Towards the new side (more traffic on it); stepping back has no gates."""
        if self.to_mode != self.from_mode:
            return _RANK[self.to_mode] > _RANK[self.from_mode]
        return self.to_mode == "canary" and self.to_percent > self.from_percent

    def describe(self) -> str:
        def label(mode: str, percent: float) -> str:
            return f"{mode} {percent:g}%" if mode == "canary" else mode

        return (
            f"{self.entity}: {label(self.from_mode, self.from_percent)} -> "
            f"{label(self.to_mode, self.to_percent)}"
        )


@dataclass(frozen=True)
class Gate:
    name: str
    passed: bool
    detail: str

    def to_json(self) -> dict[str, Any]:
        return {"passed": self.passed, "detail": self.detail}


@dataclass(frozen=True)
class GateConfig:
    max_lag_seconds: float = 5.0
    min_samples: int = 30
    max_regression_rate: float = 0.01
    window_seconds: float = 24 * 3600.0


# --- the flag table ------------------------------------------------------------------------


def _all_handlers(entity: str, endpoint: str) -> bool:
    return True  # the proxies check handlers on reload; here only the table's shape matters


def parse_table(text: str, path: str) -> RulesFile:
    return parse_rules(text, path, _all_handlers)


def read_flags(path: str) -> dict[str, FlagRow]:
    """The flag table of a rules file (raises the proxy's RulesError when it is invalid)."""
    with open(path, encoding="utf-8") as handle:
        rules = parse_table(handle.read(), path)
    return {
        name: FlagRow(name, spec.mode, spec.percent, spec.sample_rate, spec.fenced)
        for name, spec in rules.entities.items()
    }


def plan_change(flags: dict[str, FlagRow], entity: str, mode: str, percent: float | None) -> Change:
    if entity not in flags:
        raise DataError(f"unknown entity {entity!r}; the flag table has: {', '.join(flags)}")
    if mode not in MODES:
        raise DataError(f"unknown mode {mode!r}; use one of: {', '.join(MODES)}")
    if mode == "canary":
        if percent is None or not 0 < percent <= 100:
            raise DataError("canary needs a PERCENT above 0 and at most 100, e.g. 'canary 10'")
        if abs(percent * 100 - round(percent * 100)) > 1e-9:
            raise DataError("PERCENT has at most two decimals")
    elif percent not in (None, 0):
        raise DataError(f"PERCENT applies to canary only, not to {mode}")
    current = flags[entity]
    to_percent = float(percent) if mode == "canary" and percent is not None else 0.0
    change = Change(entity, current.mode, mode, current.percent, to_percent)
    if (change.from_mode, change.from_percent) == (change.to_mode, change.to_percent):
        raise DataError(f"{entity} is already {change.describe().split(' -> ')[1]}: nothing to do")
    return change


def _percent_text(percent: float) -> str:
    return str(int(percent)) if float(percent).is_integer() else f"{percent:.2f}".rstrip("0")


def edit_rules_text(text: str, change: Change) -> str:
    """The rules text with only ``change``'s entity's mode (and percent) edited.

    Edits the value spans the YAML parser reports, so comments, order and layout stay as
    the operator wrote them. The result is validated before it is returned.
    """
    root = yaml.compose(text, Loader=yaml.SafeLoader)

    def child(node: Any, key: str) -> tuple[Any, Any]:
        if isinstance(node, yaml.MappingNode):
            for key_node, value_node in node.value:
                if key_node.value == key:
                    return key_node, value_node
        return None, None

    _, entities = child(root, "entities")
    _, entity = child(entities, change.entity)
    mode_key, mode_value = child(entity, "mode")
    if mode_value is None:
        raise DataError(f"routing rules have no entities.{change.entity}.mode to edit")
    edits: list[tuple[int, int, str]] = [
        (mode_value.start_mark.index, mode_value.end_mark.index, change.to_mode)
    ]
    _, percent_value = child(entity, "percent")
    wanted = _percent_text(change.to_percent)
    if percent_value is not None:
        edits.append((percent_value.start_mark.index, percent_value.end_mark.index, wanted))
    elif change.to_mode == "canary":
        line_end = text.find("\n", mode_value.end_mark.index)
        at = len(text) if line_end < 0 else line_end
        edits.append((at, at, "\n" + " " * mode_key.start_mark.column + f"percent: {wanted}"))
    edited = text
    for start, end, replacement in sorted(edits, reverse=True):
        edited = edited[:start] + replacement + edited[end:]
    rules = parse_table(edited, "<edited rules>")
    result = rules.entities[change.entity]  # type: ignore[index]
    if (result.mode, result.percent) != (change.to_mode, change.to_percent):
        raise DataError(f"editing the rules did not give {change.describe()}; edit them by hand")
    return edited


def write_rules_atomically(path: str, text: str) -> None:
    """Replace the file in one rename, so a reloading proxy never reads half of it."""
    directory = os.path.dirname(os.path.abspath(path))
    mode = os.stat(path).st_mode & 0o7777 if os.path.exists(path) else 0o644
    fd, temp = tempfile.mkstemp(prefix=".routing_rules.", suffix=".tmp", dir=directory)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(temp, mode)
        os.replace(temp, path)
    except BaseException:
        if os.path.exists(temp):
            os.unlink(temp)
        raise


# --- gates -------------------------------------------------------------------------------


class GateProbes(Protocol):
    """Where the gates look; :mod:`control.cli` wires the live ones."""

    async def backfill_pending(self, entity: str) -> list[str]:
        """The entity and dependencies whose backfill has not completed."""
        ...

    async def sync_state(self, entity: str) -> tuple[bool, float | None]:
        """(forward sync running, its lag in seconds or None)."""
        ...

    async def shadow_gates(self, entity: str, config: GateConfig) -> list[Gate]: ...

    async def verify(self, entity: str) -> tuple[bool, str]:
        """(clean, a one-line summary)."""
        ...


async def evaluate_gates(change: Change, probes: GateProbes, config: GateConfig) -> list[Gate]:
    """The gates of ``change`` with their evidence; none when it steps back."""
    if not change.forward:
        return []
    gates: list[Gate] = []
    entity = change.entity
    if change.from_mode == "legacy":
        pending = await probes.backfill_pending(entity)
        gates.append(
            Gate(
                "backfill-done",
                not pending,
                "completed for the entity and its dependencies"
                if not pending
                else f"not completed: {', '.join(pending)} (run 'strangler backfill')",
            )
        )
    running, lag = await probes.sync_state(entity)
    if change.to_mode in ("shadow", "canary"):
        gates.append(
            Gate(
                "sync-running",
                running,
                f"forward sync running, lag {lag if lag is not None else '?'} s"
                if running
                else "no forward sync leads the entity (start 'strangler sync')",
            )
        )
    if change.to_mode == "canary":
        gates.extend(await probes.shadow_gates(entity, config))
    if change.to_mode == "new":
        clean, summary = await probes.verify(entity)
        gates.append(Gate("verify-clean", clean, summary))
        small = running and lag is not None and lag <= config.max_lag_seconds
        gates.append(
            Gate(
                "lag-small",
                small,
                f"forward sync lag {lag} s, at most {config.max_lag_seconds:g} s allowed"
                if running
                else "no forward sync leads the entity: its lag is unknown",
            )
        )
    return gates


# --- the fenced switch -------------------------------------------------------------------------


async def wait_for_table_hash(
    admin_urls: Sequence[str], expected: str, within: float, poll: float = 0.1
) -> None:
    """Ask every proxy to reload, then wait until each reports ``expected`` as its table."""
    deadline = time.monotonic() + within
    waiting = list(admin_urls)
    async with httpx.AsyncClient(timeout=5.0) as client:
        for url in waiting:
            try:
                await client.post(f"{url.rstrip('/')}/admin/reload")
            except httpx.HTTPError:
                pass  # the file watcher reloads it anyway; the wait below decides
        while waiting:
            still: list[str] = []
            for url in waiting:
                try:
                    status = (await client.get(f"{url.rstrip('/')}/admin/status")).json()
                except (httpx.HTTPError, ValueError):
                    still.append(url)
                    continue
                if status.get("table_hash") != expected:
                    still.append(url)
            waiting = still
            if not waiting:
                return
            if time.monotonic() >= deadline:
                raise SwitchFailed(
                    f"{len(waiting)} proxy(ies) did not load the new table within {within:g} s "
                    f"({', '.join(waiting)}); the entity stays fenced until its fence lapses: "
                    "check those proxies' /admin/status for a refused reload"
                )
            await asyncio.sleep(poll)


@dataclass
class SwitchSteps:
    """The parts of a switch that touch the outside world."""

    admin_urls: Sequence[str]
    drained: Callable[[float], Awaitable[tuple[bool, str]]]  # (fenced_at) -> (done, why not)
    fence_seconds: float = 60.0
    settle_seconds: float = 1.0
    drain_timeout: float = 60.0
    hash_timeout: float = 30.0
    poll_seconds: float = 0.1
    log: Callable[[str], object] = lambda _line: None
    events: list[str] = field(default_factory=list)  # what happened, for the change log

    def say(self, line: str) -> None:
        self.events.append(line)
        self.log(line)


async def switch_with_fence(change: Change, flip: Callable[[], str], steps: SwitchSteps) -> None:
    """Fence, settle, drain, ``flip()`` (returns the new table hash), wait, unfence."""
    entity = change.entity
    await set_fence(steps.admin_urls, entity, steps.fence_seconds)
    steps.say(f"fenced {entity} writes on {len(steps.admin_urls)} proxy(ies)")

    async def keep_fenced() -> None:
        while True:
            await asyncio.sleep(steps.fence_seconds / 3)
            try:
                await set_fence(steps.admin_urls, entity, steps.fence_seconds)
            except AdminUnreachable as exc:  # the fence set before still runs for a while
                steps.say(f"could not renew the fence: {exc}")

    keeper = asyncio.create_task(keep_fenced())
    flipped = served = False
    try:
        fenced_at = time.time()
        await asyncio.sleep(steps.settle_seconds)
        deadline = time.monotonic() + steps.drain_timeout
        await _writes_finished(entity, steps, deadline)
        while True:
            done, why = await steps.drained(fenced_at)
            if done:
                break
            if time.monotonic() >= deadline:
                raise SwitchFailed(
                    f"{entity}: the sync did not drain within {steps.drain_timeout:g} s ({why}); "
                    "nothing was switched and the fence is lifted"
                )
            await asyncio.sleep(steps.poll_seconds)
        steps.say(f"drained: {why or 'nothing in flight'}")
        expected = flip()
        flipped = True
        steps.say(f"flag flipped: {change.describe()} (table {expected})")
        await wait_for_table_hash(steps.admin_urls, expected, steps.hash_timeout)
        served = True
        steps.say("every proxy serves the new table")
    finally:
        keeper.cancel()
        await asyncio.gather(keeper, return_exceptions=True)
        # Flipped but not served everywhere: keep the fence, or a proxy still holding the
        # old table would take writes on the old side.
        if not flipped or served:
            await lift_fence(steps.admin_urls, entity)
            steps.say(f"fence lifted on {entity}")


async def _writes_finished(entity: str, steps: SwitchSteps, deadline: float) -> None:
    """Until no proxy has a write of ``entity`` in flight (it passed before the fence)."""
    started = time.monotonic()
    waited_for = 0
    while True:
        busy = {
            url: count
            for url, count in (await writes_in_flight(steps.admin_urls, entity)).items()
            if count
        }
        if not busy:
            if waited_for:
                steps.say(
                    f"{waited_for} {entity} write(s) that passed before the fence finished "
                    f"({time.monotonic() - started:.1f} s)"
                )
            return
        waited_for = max(waited_for, sum(busy.values()))
        if time.monotonic() >= deadline:
            where = ", ".join(f"{url}: {count}" for url, count in busy.items())
            raise SwitchFailed(
                f"{entity}: writes that passed before the fence are still in flight ({where}) "
                f"after {steps.drain_timeout:g} s; nothing was switched and the fence is lifted"
            )
        await asyncio.sleep(steps.poll_seconds)


def gate_results_json(gates: Sequence[Gate]) -> str:
    return json.dumps({gate.name: gate.to_json() for gate in gates})
