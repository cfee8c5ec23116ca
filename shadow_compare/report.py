"""The shadow report: per entity and endpoint, what was compared, what differed, and the gates.

Pure: built from :class:`~shadow_compare.aggregate.ReportData` (read from PostgreSQL or
tallied in memory) and the endpoints each entity owns. Rendering is in
:mod:`shadow_compare.render`.

Counting rules, chosen so that "no differences" can never mean "not looked at":

- *compared* counts exchanges where both sides answered and were compared whole or were
  found to regress: equal, regression, expected, noise and lag;
- *truncated* (the cost bound stopped the walk) and *failed* (the other side errored or
  timed out) are shown but never count as compared, so they cannot help a gate pass;
- the regression rate's gate uses the upper confidence bound by default, and an entity
  with fewer than ``min_samples`` compared exchanges fails.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal

from shadow_compare.aggregate import ReportData, Sample
from shadow_compare.stats import wilson_upper

__all__ = [
    "EndpointStats",
    "EntityReport",
    "GateResult",
    "Gates",
    "Report",
    "Suggestion",
    "build_report",
]

COMPARED_KINDS = ("equal", "regression", "expected", "noise", "lag")
GateOn = Literal["upper", "observed"]
NOISE_SUGGESTION_MIN = 3  # noisy comparisons of one place before a rule is suggested


@dataclass(frozen=True)
class Gates:
    min_samples: int = 30
    max_regression_rate: float | None = 0.01
    confidence: float = 0.95
    gate_on: GateOn = "upper"


@dataclass(frozen=True)
class GateResult:
    name: str
    passed: bool
    message: str


@dataclass(frozen=True)
class Suggestion:
    """A rule a person may add, with the evidence for it; never applied by the tool."""

    entity: str
    kind: str  # ignore | datetimes | numbers
    path: str
    evidence: str
    snippet: str


@dataclass
class EndpointStats:
    endpoint: str
    kinds: Counter[str] = field(default_factory=Counter)
    statuses: Counter[tuple[int, int]] = field(default_factory=Counter)
    regression_upper: float = 1.0

    @property
    def compared(self) -> int:
        return sum(self.kinds[k] for k in COMPARED_KINDS)

    @property
    def regressions(self) -> int:
        return self.kinds["regression"]

    def to_json(self) -> dict[str, Any]:
        return {
            "endpoint": self.endpoint,
            "compared": self.compared,
            "regression_rate": self.regressions / self.compared if self.compared else 0.0,
            "regression_rate_upper_bound": self.regression_upper,
            "kinds": dict(sorted(self.kinds.items())),
            "statuses": [
                {"legacy": legacy, "new": new, "count": n}
                for (legacy, new), n in sorted(self.statuses.items())
            ],
        }


@dataclass
class EntityReport:
    entity: str
    endpoints: dict[str, EndpointStats]
    owned: tuple[str, ...]
    expected_by_rule: Counter[str]
    top_paths: list[dict[str, Any]]
    samples: list[Sample]
    suggestions: list[Suggestion]
    gates: list[GateResult] = field(default_factory=list)
    regression_upper: float = 1.0

    def total(self, kind: str) -> int:
        return sum(e.kinds[kind] for e in self.endpoints.values())

    @property
    def compared(self) -> int:
        return sum(e.compared for e in self.endpoints.values())

    @property
    def regressions(self) -> int:
        return self.total("regression")

    @property
    def regression_rate(self) -> float:
        return self.regressions / self.compared if self.compared else 0.0

    @property
    def not_exercised(self) -> list[str]:
        return [e for e in self.owned if e not in self.endpoints or not self.endpoints[e].compared]

    @property
    def passed(self) -> bool:
        return all(g.passed for g in self.gates)

    def to_json(self) -> dict[str, Any]:
        return {
            "entity": self.entity,
            "passed": self.passed,
            "compared": self.compared,
            "regressions": self.regressions,
            "regression_rate": self.regression_rate,
            "regression_rate_upper_bound": self.regression_upper,
            "expected": self.total("expected"),
            "expected_by_rule": dict(sorted(self.expected_by_rule.items())),
            "noise": self.total("noise"),
            "lag": self.total("lag"),
            "truncated": self.total("truncated"),
            "failed": self.total("failed"),
            "gates": [
                {"name": g.name, "passed": g.passed, "message": g.message} for g in self.gates
            ],
            "coverage": {
                "owned": list(self.owned),
                "not_exercised": self.not_exercised,
                "endpoints": [
                    e.to_json() for e in sorted(self.endpoints.values(), key=lambda e: e.endpoint)
                ],
            },
            "top_paths": self.top_paths,
            "suggestions": [s.__dict__ for s in self.suggestions],
            "samples": [s.to_json() for s in self.samples],
        }


@dataclass
class Report:
    since: datetime
    runs: list[str] | None
    gates: Gates
    entities: list[EntityReport]
    notes: list[str] = field(default_factory=list)
    # Checks beyond the per-entity gates, e.g. a replay case's declared expectation.
    checks: list[GateResult] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        return (
            bool(self.entities)
            and all(e.passed for e in self.entities)
            and all(c.passed for c in self.checks)
        )

    def to_json(self) -> dict[str, Any]:
        return {
            "since": self.since.isoformat(),
            "runs": self.runs,
            "passed": self.passed,
            "gates": self.gates.__dict__,
            "notes": self.notes,
            "checks": [
                {"name": c.name, "passed": c.passed, "message": c.message} for c in self.checks
            ],
            "entities": [e.to_json() for e in self.entities],
        }


def _suggestions(
    entity: str, rows: list[tuple[str, str, str, int]], samples: list[Sample]
) -> list[Suggestion]:
    """Noise that keeps coming back at one place becomes a suggested rule, with evidence."""
    found = []
    for endpoint, cause, path, count in rows:
        if count < NOISE_SUGGESTION_MIN:
            continue
        example = next(
            (
                s
                for s in samples
                if s.verdict == "noise" and s.cause == cause and s.endpoint == endpoint
            ),
            None,
        )
        seen = (
            f"; e.g. legacy {example.legacy_value!r} vs new {example.new_value!r}"
            if example
            else ""
        )
        evidence = f"noise in {count} comparisons of {endpoint} ({cause}){seen}"
        if cause in ("datetime_format",) or (example is not None and "s apart" in example.detail):
            kind, rule = "datetimes", f"- path: {path}\n  seconds: 5  # widen to the gaps observed"
        elif cause == "number_precision":
            kind, rule = "numbers", f"- path: {path}\n  relative: 0.000001"
        else:
            kind, rule = "ignore", f'- path: {path}\n  reason: "<why this place may differ>"'
        found.append(Suggestion(entity, kind, path, evidence, f"entities.{entity}.{kind}:\n{rule}"))
    return found


def build_report(
    data: ReportData,
    *,
    since: datetime,
    runs: list[str] | None,
    gates: Gates,
    entity_endpoints: Mapping[str, tuple[str, ...]],
    entity: str | None = None,
    samples_per_entity: int = 10,
) -> Report:
    """Group the rows per entity and endpoint, compute rates and bounds, apply the gates.

    The entities reported are those seen in the data, plus ``entity`` when asked for
    (so that asking about an entity that had no traffic shows it, and fails).
    """
    endpoints: dict[str, dict[str, EndpointStats]] = defaultdict(dict)
    for key, n in data.comparisons:
        stats = endpoints[key.entity].setdefault(key.endpoint, EndpointStats(key.endpoint))
        stats.kinds[key.kind] += n
        if key.kind != "failed":
            stats.statuses[(key.legacy_status, key.new_status)] += n
    expected: dict[str, Counter[str]] = defaultdict(Counter)
    paths: dict[str, Counter[tuple[str, str, str, str]]] = defaultdict(Counter)
    noise: dict[str, Counter[tuple[str, str, str]]] = defaultdict(Counter)
    for dkey, n in data.differences:
        if dkey.verdict == "expected":
            expected[dkey.entity][dkey.rule] += n
        paths[dkey.entity][(dkey.verdict, dkey.cause, dkey.path, dkey.rule)] += n
        if dkey.verdict == "noise":
            noise[dkey.entity][(dkey.endpoint, dkey.cause, dkey.path)] += n
    names = sorted(set(endpoints) | ({entity} if entity else set()))
    reports = []
    severity = {"regression": 0, "lag": 1, "noise": 2, "expected": 3}
    for name in names:
        samples = sorted(
            (s for s in data.samples if s.entity == name),
            key=lambda s: (severity.get(s.verdict, 9), s.cause, -s.recorded_at.timestamp()),
        )[:samples_per_entity]
        top = sorted(paths[name].items(), key=lambda item: (severity.get(item[0][0], 9), -item[1]))[
            :10
        ]
        report = EntityReport(
            entity=name,
            endpoints=endpoints.get(name, {}),
            owned=tuple(entity_endpoints.get(name, ())),
            expected_by_rule=expected[name],
            top_paths=[
                {"verdict": v, "cause": c, "path": p, "rule": r, "count": n}
                for (v, c, p, r), n in top
            ],
            samples=samples,
            suggestions=_suggestions(
                name,
                [(e, c, p, n) for (e, c, p), n in noise[name].most_common()],
                list(data.samples),
            ),
        )
        _apply_gates(report, gates)
        reports.append(report)
    notes = [] if reports else ["no comparisons recorded in this window: nothing can pass"]
    return Report(since=since, runs=runs, gates=gates, entities=reports, notes=notes)


def _apply_gates(report: EntityReport, gates: Gates) -> None:
    compared, regressions = report.compared, report.regressions
    report.regression_upper = wilson_upper(regressions, compared, gates.confidence)
    for stats in report.endpoints.values():
        stats.regression_upper = wilson_upper(stats.regressions, stats.compared, gates.confidence)
    report.gates.append(
        GateResult(
            "min-samples",
            compared >= gates.min_samples,
            f"{compared} exchanges compared, at least {gates.min_samples} needed"
            + ("" if compared else " (no traffic: nothing was compared)"),
        )
    )
    if gates.max_regression_rate is not None:
        measured = report.regression_upper if gates.gate_on == "upper" else report.regression_rate
        label = (
            f"upper bound ({gates.confidence:.0%}) {measured:.4f}"
            if gates.gate_on == "upper"
            else f"observed rate {measured:.4f}"
        )
        report.gates.append(
            GateResult(
                "regression-rate",
                compared > 0 and measured <= gates.max_regression_rate,
                f"{regressions} regressions in {compared}: {label}, at most "
                f"{gates.max_regression_rate:g} allowed",
            )
        )
