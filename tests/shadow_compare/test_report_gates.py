"""The report's statistics, gates and renderings, from tallied outcomes (no database)."""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET
from datetime import UTC, datetime, timedelta

import pytest

from shadow_compare.aggregate import as_report_data, tally
from shadow_compare.cli import parse_since
from shadow_compare.endpoints import ENTITY_ENDPOINTS
from shadow_compare.model import Cause, CompareResult, Difference, Outcome, Verdict
from shadow_compare.render import render
from shadow_compare.report import Gates, Report, build_report
from shadow_compare.stats import wilson_upper
from strangler.errors import DataError
from strangler.exchange import RecordedRequest

NOW = datetime(2026, 1, 1, 12, 0, tzinfo=UTC)
READ = RecordedRequest("GET", "/connectors/getConnectors")
ENDPOINT = "GET /connectors/getConnectors"


def outcomes(*kinds: str, entity: str = "connectors", endpoint: str = ENDPOINT) -> list[Outcome]:
    made = []
    for n, kind in enumerate(kinds):
        at = NOW + timedelta(seconds=n)
        if kind == "failed":
            made.append(Outcome(entity, endpoint, READ, at, None, "timed out"))
            continue
        differences: tuple[Difference, ...] = ()
        if kind in ("regression", "noise", "lag", "expected"):
            differences = (
                Difference(
                    "$.data[3].updated_at",
                    Cause.VALUE,
                    "2024-01-01 00:00:00",
                    "2024-01-01 00:00:09",
                    "instants 9 s apart",
                    Verdict(kind),
                    rule="rule-x" if kind == "expected" else None,
                ),
            )
        result = CompareResult(200, 200, differences, truncated=kind == "truncated")
        made.append(Outcome(entity, endpoint, READ, at, result))
    return made


def report_of(found: list[Outcome], gates: Gates, entity: str | None = None) -> Report:
    return build_report(
        as_report_data(tally(found)),
        since=NOW,
        runs=["live"],
        gates=gates,
        entity_endpoints=ENTITY_ENDPOINTS,
        entity=entity,
    )


def test_wilson_upper_bound_matches_known_values() -> None:
    assert wilson_upper(0, 30) == pytest.approx(0.0827, abs=1e-4)
    assert wilson_upper(0, 300) == pytest.approx(0.00894, abs=1e-5)
    assert wilson_upper(5, 11) == pytest.approx(0.6849, abs=1e-4)  # worked by hand
    assert wilson_upper(0, 0) == 1.0


def test_no_comparisons_at_all_never_pass() -> None:
    report = report_of([], Gates(min_samples=1, max_regression_rate=1.0))
    assert not report.passed
    root = ET.fromstring(render(report, "junit"))
    assert root.get("failures") == "1"


def test_an_entity_asked_for_without_traffic_fails_min_samples() -> None:
    report = report_of(outcomes("equal"), Gates(min_samples=1), entity="users")
    users = next(e for e in report.entities if e.entity == "users")
    assert not users.passed
    assert "no traffic" in users.gates[0].message
    assert not report.passed


def test_too_few_samples_fail_even_when_all_are_equal() -> None:
    report = report_of(outcomes(*["equal"] * 9), Gates(min_samples=10, max_regression_rate=None))
    assert not report.passed
    assert report_of(
        outcomes(*["equal"] * 10), Gates(min_samples=10, max_regression_rate=None)
    ).passed


def test_regression_rate_gate_on_the_upper_bound_and_on_the_observed_rate() -> None:
    found = outcomes(*(["equal"] * 99 + ["regression"]))
    observed = report_of(found, Gates(min_samples=1, max_regression_rate=0.02, gate_on="observed"))
    upper = report_of(found, Gates(min_samples=1, max_regression_rate=0.02, gate_on="upper"))
    assert observed.passed  # 1% observed is within 2% ...
    assert not upper.passed  # ... but 100 samples cannot show it is below 2% with 95% confidence
    (entity,) = upper.entities
    assert entity.regression_rate == pytest.approx(0.01)
    assert entity.regression_upper > 0.02
    assert (
        report_of(found, Gates(min_samples=1, max_regression_rate=0.0, gate_on="observed")).passed
        is False
    )


def test_truncated_and_failed_are_shown_but_never_count_as_compared() -> None:
    report = report_of(outcomes("equal", "truncated", "failed", "failed"), Gates(min_samples=2))
    (entity,) = report.entities
    assert entity.compared == 1
    assert (entity.total("truncated"), entity.total("failed")) == (1, 2)
    assert not entity.passed


def test_expected_noise_and_lag_are_counted_apart_from_regressions() -> None:
    report = report_of(
        outcomes("expected", "noise", "lag", "regression", "equal"), Gates(min_samples=1)
    )
    (entity,) = report.entities
    assert entity.compared == 5 and entity.regressions == 1
    assert (entity.total("expected"), entity.total("noise"), entity.total("lag")) == (1, 1, 1)
    assert dict(entity.expected_by_rule) == {"rule-x": 1}
    verdicts = {row["verdict"] for row in entity.top_paths}
    assert verdicts == {"regression", "expected", "noise", "lag"}
    assert entity.top_paths[0]["verdict"] == "regression"  # the worst first


def test_repeated_noise_suggests_a_rule_with_evidence_and_changes_nothing() -> None:
    report = report_of(outcomes("noise", "noise", "noise", "equal"), Gates(min_samples=1))
    (entity,) = report.entities
    (suggestion,) = entity.suggestions
    assert suggestion.path == "$.data[*].updated_at"
    assert suggestion.kind == "datetimes"
    assert "noise in 3 comparisons of GET /connectors/getConnectors" in suggestion.evidence
    assert "$.data[*].updated_at" in suggestion.snippet
    assert entity.total("noise") == 3  # still reported as noise: nothing learned silently
    assert "suggested rule" in render(report, "text")


def test_coverage_lists_endpoints_and_statuses_and_what_was_not_exercised() -> None:
    found = outcomes("equal", "equal") + outcomes("equal", endpoint="GET /connectors/getConnector")
    report = report_of(found, Gates(min_samples=1, max_regression_rate=None))
    (entity,) = report.entities
    assert entity.not_exercised == [
        e for e in ENTITY_ENDPOINTS["connectors"] if e.startswith("POST")
    ]
    text = render(report, "text")
    assert "POST /connectors/addConnector" in text and "NOT EXERCISED" in text
    assert "200/200 x2" in text
    markdown = render(report, "markdown")
    assert "| `POST /connectors/addConnector` | 0 | **not exercised** | | |" in markdown
    assert markdown.startswith("## Shadow report: PASS")


def test_json_and_junit_agree_on_the_verdict() -> None:
    report = report_of(
        outcomes("regression", "equal"), Gates(min_samples=1, max_regression_rate=0.1)
    )
    data = json.loads(render(report, "json"))
    assert data["passed"] is False
    assert data["entities"][0]["regressions"] == 1
    (endpoint,) = data["entities"][0]["coverage"]["endpoints"]
    assert endpoint["regression_rate"] == 0.5
    assert endpoint["regression_rate_upper_bound"] == pytest.approx(wilson_upper(1, 2))
    root = ET.fromstring(render(report, "junit"))
    failures = [c.get("name") for c in root.iter("testcase") if c.find("failure") is not None]
    assert failures == ["gate regression-rate"]
    assert root.get("tests") == str(sum(1 for _ in root.iter("testcase")))


def test_since_accepts_durations_and_iso_times() -> None:
    assert parse_since("30m", NOW) == NOW - timedelta(minutes=30)
    assert parse_since("7d", NOW) == NOW - timedelta(days=7)
    assert parse_since("2026-01-01T10:00:00", NOW) == datetime(2026, 1, 1, 10, tzinfo=UTC)
    with pytest.raises(DataError, match="--since"):
        parse_since("yesterday", NOW)
