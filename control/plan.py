"""``strangler flags plan all new``: every entity of the flag table into ``new``, in an order
that respects the references between entities, with every gate of every step evaluated.

The order comes from the specs (``EntitySpec.depends_on``), lifted to the routing entities
of the flag table: a routing entity whose rows reference another's (``workspaces``'
workflows name connectors and users) moves after it, so that at each step what the moved
entity references is already served, and written, by the same side. Ties keep the flag
table's order. Entities the registry has no spec for (nothing can carry their data yet)
are listed with a failing ``mapping`` gate rather than left out.

Each entity's path is the one `flags set` walks: ``shadow``, ``canary`` at each of the
``canary_percents``, then ``new``, from wherever it is now. Every step's gates are
evaluated against today's evidence (a later step's gates may pass only once the earlier
steps have run: the plan says what stands in the way now). Nothing is changed.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field

from control.flags import Change, FlagRow, Gate, GateConfig, GateProbes, evaluate_gates
from migrators.registry import SpecRegistry

__all__ = ["EntityPlan", "WholePlan", "migration_order", "plan_all_new"]


def _references(registry: SpecRegistry) -> dict[str, set[str]]:
    """Routing entity -> the routing entities its specs depend on (itself left out)."""
    routing = {spec.name: spec.routing_entity for spec in registry}
    refs: dict[str, set[str]] = {}
    for spec in registry:
        targets = {routing[dep] for dep in spec.depends_on if dep in routing}
        refs.setdefault(spec.routing_entity, set()).update(targets - {spec.routing_entity})
    return refs


def migration_order(entities: Sequence[str], registry: SpecRegistry) -> list[str]:
    """``entities`` (the flag table's, in its order) with referenced entities first.

    A reference to an entity outside the table (``subscriptions``: accounts have no
    endpoints) is followed through, so that its own references still order the rest.
    Entities with no spec come last."""
    refs = _references(registry)

    def closure(entity: str, seen: frozenset[str] = frozenset()) -> set[str]:
        found: set[str] = set()
        for target in refs.get(entity, ()):
            if target in seen:
                continue
            found.add(target)
            found |= closure(target, seen | {entity})
        return found

    wanted = set(entities)
    needs = {entity: closure(entity) & wanted - {entity} for entity in entities}
    mapped = [e for e in entities if e in refs]
    for entity in entities:  # no spec yet: nothing can move it, it goes last
        if entity not in refs:
            needs[entity] = set(mapped)
    order: list[str] = []
    placed: set[str] = set()
    while len(order) < len(entities):
        ready = [e for e in entities if e not in placed and needs[e] <= placed]
        if not ready:  # a cycle: place the rest in table order, the cycle named by the caller
            ready = [e for e in entities if e not in placed][:1]
        order.append(ready[0])
        placed.add(ready[0])
    return order


@dataclass
class EntityPlan:
    entity: str
    mode: str
    references: list[str]
    steps: list[tuple[Change, list[Gate]]] = field(default_factory=list)

    @property
    def failed(self) -> list[tuple[Change, Gate]]:
        return [(change, g) for change, gates in self.steps for g in gates if not g.passed]


@dataclass
class WholePlan:
    entities: list[EntityPlan]

    @property
    def failed(self) -> list[tuple[Change, Gate]]:
        return [item for plan in self.entities for item in plan.failed]

    def lines(self) -> list[str]:
        lines = [
            "plan: every entity into new, referenced entities first",
            "order: " + " -> ".join(p.entity for p in self.entities),
        ]
        for number, plan in enumerate(self.entities, 1):
            refs = ", ".join(plan.references) if plan.references else "no other routed entity"
            lines.append("")
            lines.append(f"{number}. {plan.entity} (now {plan.mode}; references {refs})")
            if not plan.steps:
                lines.append("   already new: nothing to do")
            for change, gates in plan.steps:
                lines.append(f"   {change.describe()}")
                if change.switches_truth:
                    lines.append("     switches the source of truth: fence, drain, flip, unfence")
                if not gates:
                    lines.append("     gates: none")
                for gate in gates:
                    lines.append(f"     [{'pass' if gate.passed else 'FAIL'}] {gate.name}: "
                                 f"{gate.detail}")  # fmt: skip
        failed = self.failed
        steps = sum(len(p.steps) for p in self.entities)
        evaluated = sum(len(g) for p in self.entities for _, g in p.steps)
        lines.append("")
        lines.append(
            f"{steps} step(s), {evaluated} gate(s) evaluated, {len(failed)} failing"
            + ("" if not failed else ": " + "; ".join(
                f"{c.describe()} {g.name}" for c, g in failed[:10]))
        )  # fmt: skip
        return lines


def _path(row: FlagRow, canary_percents: Sequence[float]) -> list[Change]:
    """The steps from ``row``'s mode to ``new``, as ``flags set`` would take them."""
    stops: list[tuple[str, float]] = [("shadow", 0.0)]
    stops += [("canary", float(p)) for p in canary_percents]
    stops.append(("new", 0.0))
    rank = {"legacy": 0, "shadow": 1, "canary": 2, "new": 3}
    here = (row.mode, row.percent if row.mode == "canary" else 0.0)
    changes: list[Change] = []
    for mode, percent in stops:
        ahead = rank[mode] > rank[here[0]] or (mode == here[0] == "canary" and percent > here[1])
        if not ahead:
            continue
        changes.append(Change(row.entity, here[0], mode, here[1], percent))
        here = (mode, percent)
    return changes


async def plan_all_new(
    flags: Mapping[str, FlagRow],
    registry: SpecRegistry,
    probes: GateProbes,
    config: GateConfig,
    *,
    canary_percents: Iterable[float] = (50.0,),
    progress: Callable[[str], object] = lambda _line: None,
) -> WholePlan:
    percents = sorted(float(p) for p in canary_percents)
    if any(not 0 < p <= 100 for p in percents):
        raise ValueError("canary percents must be above 0 and at most 100")
    mapped = {spec.routing_entity for spec in registry}
    refs = _references(registry)
    plans: list[EntityPlan] = []
    for entity in migration_order(list(flags), registry):
        row = flags[entity]
        references = sorted(r for r in refs.get(entity, ()) if r in flags)
        plan = EntityPlan(entity, row.mode, references)
        for change in _path(row, percents):
            progress(f"evaluating {change.describe()} ...")
            gates = await evaluate_gates(change, probes, config)
            if entity not in mapped:
                gates = [
                    Gate("mapping", False, f"{entity} has no migration spec: nothing carries "
                         "its data to PostgreSQL yet"),
                    *gates,
                ]  # fmt: skip
            plan.steps.append((change, gates))
        plans.append(plan)
    return WholePlan(plans)
