"""The values a comparison produces: causes, verdicts, differences and results.

The taxonomy is fixed: reports, storage and CI gates key on these names, so a new
cause is a schema change, not a string someone makes up in a rule.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from datetime import datetime
from enum import StrEnum
from typing import Any

from strangler.exchange import RecordedRequest

__all__ = [
    "Cause",
    "CompareResult",
    "Difference",
    "Kind",
    "Outcome",
    "Verdict",
]


class Cause(StrEnum):
    """Why two responses differ at one place."""

    STATUS = "status"
    MISSING_FIELD = "missing_field"  # legacy has it, new does not
    EXTRA_FIELD = "extra_field"  # new has it, legacy does not
    NULL_VS_MISSING = "null_vs_missing"  # one side renders null, the other omits the field
    TYPE = "type"  # different JSON types (null counts as a type)
    NUMBER_PRECISION = "number_precision"  # the same number up to rounding or 1 vs 1.0
    DATETIME_FORMAT = "datetime_format"  # the same instant (or a zone shift) written differently
    LIST_ORDER = "list_order"  # the same items in another order
    LIST_LENGTH = "list_length"
    VALUE = "value"  # anything else: a different string, number, header or instant


class Verdict(StrEnum):
    """What one difference means for the cut-over."""

    REGRESSION = "regression"
    EXPECTED = "expected"  # a declared expected divergence: the new side differs on purpose
    NOISE = "noise"  # the same side answered the same read differently a moment later
    LAG = "lag"  # the new side caught up with legacy on re-read (sync lag)


class Kind(StrEnum):
    """What one comparison means, from its differences (most severe wins)."""

    EQUAL = "equal"
    REGRESSION = "regression"
    TRUNCATED = "truncated"  # the cost bound stopped the walk: never "equal"
    LAG = "lag"
    NOISE = "noise"
    EXPECTED = "expected"
    FAILED = "failed"  # the other side could not be called (error or timeout)


@dataclass(frozen=True)
class Difference:
    """One place where legacy and new disagree; values are as found (redact before storing)."""

    path: str
    cause: Cause
    legacy: Any
    new: Any
    detail: str = ""
    verdict: Verdict = Verdict.REGRESSION
    rule: str | None = None  # the expected divergence's id, or the suggested rule's kind
    reason: str | None = None  # why it is expected / why it was classified as noise or lag

    def with_verdict(
        self, verdict: Verdict, rule: str | None = None, reason: str | None = None
    ) -> Difference:
        return replace(self, verdict=verdict, rule=rule, reason=reason)

    def to_json(self) -> dict[str, Any]:
        return {
            "path": self.path,
            "cause": str(self.cause),
            "verdict": str(self.verdict),
            "legacy": self.legacy,
            "new": self.new,
            "detail": self.detail,
            "rule": self.rule,
            "reason": self.reason,
        }


_SEVERITY = (Verdict.REGRESSION, Verdict.LAG, Verdict.NOISE, Verdict.EXPECTED)


@dataclass(frozen=True)
class CompareResult:
    """The outcome of comparing one legacy response with one new response."""

    legacy_status: int
    new_status: int
    differences: tuple[Difference, ...] = ()
    truncated: bool = False  # the cost bound was reached: part of the bodies was not compared
    nodes: int = 0  # JSON nodes visited (the cost actually spent)
    notes: tuple[str, ...] = field(default=())

    @property
    def kind(self) -> Kind:
        verdicts = {d.verdict for d in self.differences}
        if Verdict.REGRESSION in verdicts:
            return Kind.REGRESSION
        if self.truncated:
            return Kind.TRUNCATED
        for verdict in _SEVERITY[1:]:
            if verdict in verdicts:
                return Kind(str(verdict))
        return Kind.EQUAL

    @property
    def equal(self) -> bool:
        return self.kind is Kind.EQUAL

    def regressions(self) -> tuple[Difference, ...]:
        return tuple(d for d in self.differences if d.verdict is Verdict.REGRESSION)

    def with_differences(self, differences: tuple[Difference, ...]) -> CompareResult:
        return replace(self, differences=differences)

    def to_json(self) -> dict[str, Any]:
        return {
            "kind": str(self.kind),
            "legacy_status": self.legacy_status,
            "new_status": self.new_status,
            "truncated": self.truncated,
            "nodes": self.nodes,
            "notes": list(self.notes),
            "differences": [d.to_json() for d in self.differences],
        }


@dataclass(frozen=True)
class Outcome:
    """One exchange's comparison as it is recorded: what was asked, when, and what came of it.

    ``result`` is None when the other side could not be called (``failure`` says why).
    ``run`` is ``"live"`` for proxied traffic, or the id of a replay run.
    """

    entity: str
    endpoint: str
    request: RecordedRequest
    at: datetime
    result: CompareResult | None = None
    failure: str | None = None
    run: str = "live"
    expected_tag: str | None = None  # a replay case's declared expected divergence

    @property
    def kind(self) -> Kind:
        return Kind.FAILED if self.result is None else self.result.kind
