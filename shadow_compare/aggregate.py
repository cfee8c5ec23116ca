"""Outcomes into the rows the store keeps and the report reads: pure, no I/O.

The store writes these rows (summing counts) and the report reads them back; a replay
without a database builds the very same rows in memory, so both paths give the same
report. Samples are redacted here, before anything can store or print them.
"""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from shadow_compare.model import Outcome
from shadow_compare.paths import generalize_rendered
from shadow_compare.redact import redact, redact_path_value, redact_text

__all__ = [
    "DEFAULT_SAMPLES_PER_CAUSE",
    "ComparisonKey",
    "DifferenceKey",
    "ReportData",
    "Sample",
    "Tally",
    "minute",
    "request_summary",
    "tally",
]

DEFAULT_SAMPLES_PER_CAUSE = 20
_BODY_EXCERPT = 1000


def minute(moment: datetime) -> datetime:
    return moment.replace(second=0, microsecond=0)


@dataclass(frozen=True, order=True)
class ComparisonKey:
    run: str
    entity: str
    endpoint: str
    bucket: datetime
    legacy_status: int
    new_status: int
    kind: str


@dataclass(frozen=True, order=True)
class DifferenceKey:
    run: str
    entity: str
    endpoint: str
    bucket: datetime
    verdict: str
    cause: str
    path: str
    rule: str


@dataclass(frozen=True)
class Sample:
    recorded_at: datetime
    run: str
    entity: str
    endpoint: str
    cause: str
    verdict: str
    path: str
    rule: str
    reason: str
    detail: str
    legacy_status: int
    new_status: int
    legacy_value: Any
    new_value: Any
    request: dict[str, Any]

    def to_json(self) -> dict[str, Any]:
        return {
            "recorded_at": self.recorded_at.isoformat(),
            "run": self.run,
            "entity": self.entity,
            "endpoint": self.endpoint,
            "cause": self.cause,
            "verdict": self.verdict,
            "path": self.path,
            "rule": self.rule,
            "reason": self.reason,
            "detail": self.detail,
            "legacy_status": self.legacy_status,
            "new_status": self.new_status,
            "legacy": self.legacy_value,
            "new": self.new_value,
            "request": self.request,
        }


@dataclass
class Tally:
    comparisons: Counter[ComparisonKey] = field(default_factory=Counter)
    differences: Counter[DifferenceKey] = field(default_factory=Counter)
    samples: list[Sample] = field(default_factory=list)


@dataclass(frozen=True)
class ReportData:
    """What a report is built from, whether read from PostgreSQL or tallied in memory."""

    comparisons: tuple[tuple[ComparisonKey, int], ...]
    differences: tuple[tuple[DifferenceKey, int], ...]
    samples: tuple[Sample, ...]


def request_summary(outcome: Outcome) -> dict[str, Any]:
    """The request as a sample keeps it: never its headers (they carry the token)."""
    request = outcome.request
    body: Any = None
    if request.body:
        try:
            parsed = json.loads(request.body)
        except ValueError:
            body = f"<{len(request.body)} bytes, not JSON>"
        else:
            text = json.dumps(redact(parsed), sort_keys=True)
            body = text if len(text) <= _BODY_EXCERPT else text[:_BODY_EXCERPT] + "..."
    return {
        "method": request.method,
        "path": request.path,
        "query": redact(request.query),
        "body": body,
        "request_id": redact_text(request.request_id),
    }


def tally(outcomes: list[Outcome], into: Tally | None = None) -> Tally:
    """Add outcomes to a tally: one comparison count each, one difference count per
    difference, and one sample per (outcome, cause, verdict), redacted."""
    result = into if into is not None else Tally()
    for outcome in outcomes:
        bucket = minute(outcome.at)
        compared = outcome.result
        legacy_status = compared.legacy_status if compared else 0
        new_status = compared.new_status if compared else 0
        result.comparisons[
            ComparisonKey(
                outcome.run,
                outcome.entity,
                outcome.endpoint,
                bucket,
                legacy_status,
                new_status,
                str(outcome.kind),
            )
        ] += 1
        if compared is None:
            continue
        sampled: set[tuple[str, str]] = set()
        summary: dict[str, Any] | None = None
        for difference in compared.differences:
            cause, verdict = str(difference.cause), str(difference.verdict)
            result.differences[
                DifferenceKey(
                    outcome.run,
                    outcome.entity,
                    outcome.endpoint,
                    bucket,
                    verdict,
                    cause,
                    generalize_rendered(difference.path),
                    difference.rule or "",
                )
            ] += 1
            if (cause, verdict) in sampled:
                continue
            sampled.add((cause, verdict))
            summary = summary or request_summary(outcome)
            result.samples.append(
                Sample(
                    recorded_at=outcome.at,
                    run=outcome.run,
                    entity=outcome.entity,
                    endpoint=outcome.endpoint,
                    cause=cause,
                    verdict=verdict,
                    path=redact_text(difference.path),
                    rule=difference.rule or "",
                    reason=difference.reason or "",
                    detail=redact_text(difference.detail),
                    legacy_status=legacy_status,
                    new_status=new_status,
                    legacy_value=redact_path_value(difference.path, difference.legacy),
                    new_value=redact_path_value(difference.path, difference.new),
                    request=summary,
                )
            )
    return result


def bounded(samples: list[Sample], per_cause: int) -> list[Sample]:
    """The newest ``per_cause`` samples of each (run, entity, cause)."""
    kept: list[Sample] = []
    seen: Counter[tuple[str, str, str]] = Counter()
    for sample in sorted(samples, key=lambda s: s.recorded_at, reverse=True):
        key = (sample.run, sample.entity, sample.cause)
        if seen[key] < per_cause:
            seen[key] += 1
            kept.append(sample)
    return kept


def as_report_data(counted: Tally, per_cause: int = DEFAULT_SAMPLES_PER_CAUSE) -> ReportData:
    return ReportData(
        comparisons=tuple(sorted(counted.comparisons.items())),
        differences=tuple(sorted(counted.differences.items())),
        samples=tuple(bounded(counted.samples, per_cause)),
    )
