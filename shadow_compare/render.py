"""The report as text (people), markdown (pull requests), JSON (tools) or JUnit XML (CI).

Everything rendered comes from the store or the in-memory tally, both already redacted;
free text is passed through redaction once more on its way out, as a second guard.
"""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET
from typing import Any, Literal

from shadow_compare.aggregate import Sample
from shadow_compare.redact import redact, redact_text
from shadow_compare.report import EntityReport, Report

__all__ = ["FORMATS", "render"]

Format = Literal["text", "markdown", "json", "junit"]
FORMATS: tuple[str, ...] = ("text", "markdown", "json", "junit")


def _short(value: Any, limit: int = 80) -> str:
    text = json.dumps(redact(value), default=str)
    return text if len(text) <= limit else text[: limit - 3] + "..."


_OTHER_KINDS = ("expected", "noise", "lag", "truncated", "failed")


def _sample_line(sample: Sample) -> str:
    query = "&".join(f"{k}={v}" for k, v in sample.request.get("query", {}).items())
    return (
        f"{sample.verdict}/{sample.cause} {sample.endpoint}{'?' + query if query else ''} "
        f"at {sample.path}: legacy {_short(sample.legacy_value)} vs new {_short(sample.new_value)}"
    )


def _statuses(stats: Any) -> str:
    return ", ".join(f"{legacy}/{new} x{n}" for (legacy, new), n in sorted(stats.statuses.items()))


def _entity_lines(entity: EntityReport) -> list[str]:
    verdict = "PASS" if entity.passed else "FAIL"
    lines = [
        f"== {entity.entity}: {verdict} ==",
        f"compared {entity.compared}  regressions {entity.regressions} "
        f"(rate {entity.regression_rate:.4f}, upper bound {entity.regression_upper:.4f})  "
        + "  ".join(f"{kind} {entity.total(kind)}" for kind in _OTHER_KINDS),
    ]
    for gate in entity.gates:
        lines.append(f"  gate {gate.name}: {'pass' if gate.passed else 'FAIL'} - {gate.message}")
    lines.append("  coverage (legacy/new status x count):")
    for endpoint in entity.owned or tuple(sorted(entity.endpoints)):
        stats = entity.endpoints.get(endpoint)
        if stats is None or not stats.compared:
            lines.append(f"    {endpoint:<40} NOT EXERCISED")
        else:
            kinds = " ".join(f"{k}={n}" for k, n in sorted(stats.kinds.items()) if n)
            bound = f"regression upper bound {stats.regression_upper:.4f}"
            lines.append(
                f"    {endpoint:<40} {stats.compared:>6}  {kinds}  [{_statuses(stats)}]  {bound}"
            )
    extra = sorted(set(entity.endpoints) - set(entity.owned)) if entity.owned else []
    for endpoint in extra:
        lines.append(f"    {endpoint:<40} (not an endpoint of {entity.entity})")
    if entity.expected_by_rule:
        lines.append("  expected divergences:")
        for rule, n in sorted(entity.expected_by_rule.items()):
            lines.append(f"    {rule}: {n}")
    if entity.top_paths:
        lines.append("  top paths:")
        for row in entity.top_paths:
            rule = f" [{row['rule']}]" if row["rule"] else ""
            count, verdict, cause = row["count"], row["verdict"], row["cause"]
            lines.append(f"    {count:>6}  {verdict:<10} {cause:<16} {row['path']}{rule}")
    if entity.samples:
        lines.append("  samples:")
        for sample in entity.samples:
            lines.append("    " + _sample_line(sample))
            if sample.reason or sample.detail:
                lines.append(f"      {redact_text(sample.reason or sample.detail)}")
    for suggestion in entity.suggestions:
        lines.append(f"  suggested rule ({suggestion.evidence}):")
        lines.extend("    " + line for line in suggestion.snippet.splitlines())
    return lines


def _text(report: Report) -> str:
    runs = "all runs" if report.runs is None else ", ".join(report.runs)
    lines = [f"shadow report since {report.since.isoformat()} ({runs})"]
    lines.extend(report.notes)
    for check in report.checks:
        lines.append(f"check {check.name}: {'pass' if check.passed else 'FAIL'} - {check.message}")
    for entity in report.entities:
        lines.append("")
        lines.extend(_entity_lines(entity))
    lines.append("")
    lines.append("RESULT: " + ("PASS" if report.passed else "FAIL"))
    return "\n".join(redact_text(line) for line in lines) + "\n"


def _cell(text: Any) -> str:
    return redact_text(str(text)).replace("|", "\\|").replace("\n", " ")


def _markdown(report: Report) -> str:
    out = [
        f"## Shadow report: {'PASS' if report.passed else 'FAIL'}",
        "",
        f"Since {report.since.isoformat()}.",
    ]
    out.extend(f"> {note}" for note in report.notes)
    out.extend(
        f"- check `{_cell(c.name)}`: {'pass' if c.passed else '**FAIL**'}: {_cell(c.message)}"
        for c in report.checks
    )
    out += [
        "",
        "| entity | result | compared | regressions | rate | upper bound | "
        + " | ".join(_OTHER_KINDS)
        + " |",
        "|---|---|---:|---:|---:|---:|" + "---:|" * len(_OTHER_KINDS),
    ]
    for e in report.entities:
        result = "pass" if e.passed else "**FAIL**"
        others = " | ".join(str(e.total(kind)) for kind in _OTHER_KINDS)
        out.append(
            f"| {e.entity} | {result} | {e.compared} | {e.regressions} | "
            f"{e.regression_rate:.4f} | {e.regression_upper:.4f} | {others} |"
        )
    for e in report.entities:
        out += ["", f"### {e.entity}", ""]
        out += [
            f"- gate `{g.name}`: {'pass' if g.passed else '**FAIL**'}: {_cell(g.message)}"
            for g in e.gates
        ]
        out += [
            "",
            "| endpoint | compared | kinds | statuses (legacy/new) | regression upper bound |",
            "|---|---:|---|---|---:|",
        ]
        for endpoint in e.owned or tuple(sorted(e.endpoints)):
            stats = e.endpoints.get(endpoint)
            if stats is None or not stats.compared:
                out.append(f"| `{endpoint}` | 0 | **not exercised** | | |")
            else:
                kinds = ", ".join(f"{k} {n}" for k, n in sorted(stats.kinds.items()) if n)
                out.append(
                    f"| `{endpoint}` | {stats.compared} | {kinds} | {_statuses(stats)} | "
                    f"{stats.regression_upper:.4f} |"
                )
        if e.expected_by_rule:
            out += [
                "",
                "Expected divergences: "
                + ", ".join(f"`{r}` {n}" for r, n in sorted(e.expected_by_rule.items())),
            ]
        if e.top_paths:
            out += ["", "| count | verdict | cause | path |", "|---:|---|---|---|"]
            out += [
                f"| {r['count']} | {r['verdict']} | {r['cause']} | `{_cell(r['path'])}` |"
                for r in e.top_paths
            ]
        if e.samples:
            out += ["", "<details><summary>samples</summary>", ""]
            for s in e.samples:
                out.append(f"- `{_cell(_sample_line(s))}` {_cell(s.reason or s.detail)}")
            out += ["", "</details>"]
        for suggestion in e.suggestions:
            out += [
                "",
                f"Suggested rule ({_cell(suggestion.evidence)}):",
                "```yaml",
                suggestion.snippet,
                "```",
            ]
    return "\n".join(out) + "\n"


def _junit(report: Report) -> str:
    suites = ET.Element("testsuites", name="shadow report")
    total_tests = total_failures = 0
    for e in report.entities:
        suite = ET.SubElement(suites, "testsuite", name=f"shadow.{e.entity}")
        tests = failures = skipped = 0
        for gate in e.gates:
            case = ET.SubElement(
                suite, "testcase", classname=f"shadow.{e.entity}", name=f"gate {gate.name}"
            )
            tests += 1
            if not gate.passed:
                failures += 1
                failure = ET.SubElement(
                    case, "failure", message=redact_text(gate.message), type="gate"
                )
                failure.text = "\n".join(
                    redact_text(_sample_line(s)) for s in e.samples if s.verdict == "regression"
                )
        for endpoint in e.owned or tuple(sorted(e.endpoints)):
            case = ET.SubElement(
                suite, "testcase", classname=f"shadow.{e.entity}", name=f"coverage {endpoint}"
            )
            tests += 1
            stats = e.endpoints.get(endpoint)
            if stats is None or not stats.compared:
                skipped += 1
                ET.SubElement(case, "skipped", message="not exercised: no exchange compared")
            else:
                out = ET.SubElement(case, "system-out")
                out.text = (
                    f"compared {stats.compared}; "
                    + ", ".join(f"{k} {n}" for k, n in sorted(stats.kinds.items()) if n)
                    + f"; statuses {_statuses(stats)}"
                )
        for rule, n in sorted(e.expected_by_rule.items()):
            case = ET.SubElement(
                suite, "testcase", classname=f"shadow.{e.entity}", name=f"expected {rule}"
            )
            tests += 1
            out = ET.SubElement(case, "system-out")
            out.text = f"{n} differences classified as expected divergence {rule}"
        suite.set("tests", str(tests))
        suite.set("failures", str(failures))
        suite.set("errors", "0")
        suite.set("skipped", str(skipped))
        total_tests += tests
        total_failures += failures
    if report.checks:
        suite = ET.SubElement(suites, "testsuite", name="shadow.checks")
        failures = 0
        for check in report.checks:
            case = ET.SubElement(suite, "testcase", classname="shadow.checks", name=check.name)
            if not check.passed:
                failures += 1
                ET.SubElement(case, "failure", message=redact_text(check.message), type="check")
            else:
                ET.SubElement(case, "system-out").text = redact_text(check.message)
        suite.set("tests", str(len(report.checks)))
        suite.set("failures", str(failures))
        suite.set("errors", "0")
        suite.set("skipped", "0")
        total_tests += len(report.checks)
        total_failures += failures
    if not report.entities:
        suite = ET.SubElement(
            suites, "testsuite", name="shadow", tests="1", failures="1", errors="0", skipped="0"
        )
        case = ET.SubElement(suite, "testcase", classname="shadow", name="any traffic")
        ET.SubElement(
            case, "failure", message="no comparisons recorded in this window", type="gate"
        )
        total_tests += 1
        total_failures += 1
    suites.set("tests", str(total_tests))
    suites.set("failures", str(total_failures))
    ET.indent(suites)
    return ET.tostring(suites, encoding="unicode", xml_declaration=True) + "\n"


def render(report: Report, fmt: str) -> str:
    if fmt == "json":
        return json.dumps(redact(report.to_json()), indent=2, default=str) + "\n"
    if fmt == "markdown":
        return _markdown(report)
    if fmt == "junit":
        return _junit(report)
    return _text(report)
