"""Replay against two deliberately different backends: every planted regression found,
every planted expected divergence classified, noise and lag told apart, and the gates'
exit codes, JSON and JUnit (read by a real XML parser) what CI sees."""

from __future__ import annotations

import json
import re
import socket
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

import pytest
import yaml
from replay_backends import JWT_SECRET, SANDBOX, TENANT, Backends, cid

from strangler.cli import main

REPO = Path(__file__).resolve().parents[2]

READS: list[dict[str, Any]] = [
    *(
        {
            "name": f"get connector {n}",
            "tenant": "acme",
            "method": "GET",
            "path": "/connectors/getConnector",
            "query": {"connector_id": cid(n)},
        }
        for n in range(1, 9)
    ),
    {
        "name": "list all",
        "tenant": "acme",
        "method": "GET",
        "path": "/connectors/getConnectors",
        "expect": "list-order-dirty-created-at",
    },
    {
        "name": "list s3",
        "tenant": "acme",
        "method": "GET",
        "path": "/connectors/getConnectors",
        "query": {"connector_type": "s3"},
    },
    {
        "name": "list postgres",
        "tenant": "acme",
        "method": "GET",
        "path": "/connectors/getConnectors",
        "query": {"connector_type": "postgres", "page": 1},
    },
]
WRITE = {
    "name": "stale version update",
    "tenants": {
        "sandbox": {"subscription_id": SANDBOX, "user_id": "usr_00000000000b", "isolated": True}
    },
    "cases": [
        {
            "name": "update with a stale version",
            "tenant": "sandbox",
            "method": "POST",
            "path": "/workflow/updateWorkflow",
            "send_to_both": True,
            "expect": "stale-version-409",
            "body": {"workflow_id": "wf_000000000001", "workflow_name": "renamed", "version": 1},
        },
    ],
}

# (cause, path) of each planted regression, as the report must name them.
PLANTED_REGRESSIONS = {
    ("missing_field", "$.data.description"),
    ("type", "$.data.connection_detail.port"),
    ("datetime_format", "$.data.created_at"),
    ("status", "@status"),
    ("value", "$.total"),
}


def write_corpus(directory: Path, reads: list[dict[str, Any]] = READS) -> Path:
    directory.mkdir()
    (directory / "connectors.yaml").write_text(
        yaml.safe_dump(
            {
                "name": "connectors",
                "tenants": {"acme": {"subscription_id": TENANT, "user_id": "usr_00000000000a"}},
                "cases": reads,
            }
        )
    )
    (directory / "workflows.json").write_text(json.dumps(WRITE))
    return directory


def replay_args(backends: Backends, cases: Path, *extra: str) -> list[str]:
    return [
        "shadow",
        "replay",
        "--cases",
        str(cases),
        "--legacy",
        backends.legacy_url,
        "--new",
        backends.new_url,
        "--rules",
        str(REPO / "shadow_rules.yaml"),
        "--flag-table",
        str(REPO / "routing_rules.yaml"),
        *extra,
    ]


@pytest.fixture(autouse=True)
def _settings(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("JWT_SECRET", JWT_SECRET)


def test_replay_finds_every_planted_regression_and_classifies_every_expected_divergence(
    two_backends: Backends, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    cases = write_corpus(tmp_path / "cases")
    code = main(replay_args(two_backends, cases, "--no-store", "--format", "json"))
    report = json.loads(capsys.readouterr().out)
    assert code == 1 and report["passed"] is False  # regressions: the gate fails
    entities = {e["entity"]: e for e in report["entities"]}

    connectors = entities["connectors"]
    assert connectors["compared"] == 11
    assert connectors["regressions"] == 5
    found = {
        (row["cause"], row["path"])
        for row in connectors["top_paths"]
        if row["verdict"] == "regression"
    }
    assert found == PLANTED_REGRESSIONS
    assert connectors["expected_by_rule"] == {"list-order-dirty-created-at": 1}
    assert (connectors["noise"], connectors["lag"]) == (1, 1)
    noise = {(r["cause"], r["path"]) for r in connectors["top_paths"] if r["verdict"] == "noise"}
    lag = {(r["cause"], r["path"]) for r in connectors["top_paths"] if r["verdict"] == "lag"}
    assert noise == {("type", "$.data.last_tested_at")}
    assert lag == {("value", "$.data.connector_name")}
    gates = {g["name"]: g["passed"] for g in connectors["gates"]}
    assert gates == {"min-samples": True, "regression-rate": False}
    # coverage: the write endpoints were never exercised, and the report says so
    assert "POST /connectors/addConnector" in connectors["coverage"]["not_exercised"]
    statuses = {
        (e["endpoint"], s["legacy"], s["new"])
        for e in connectors["coverage"]["endpoints"]
        for s in e["statuses"]
    }
    assert ("GET /connectors/getConnector", 200, 500) in statuses

    workspaces = entities["workspaces"]
    assert workspaces["expected_by_rule"] == {"stale-version-409": 1}
    assert workspaces["regressions"] == 0
    assert workspaces["passed"] is True
    assert all(check["passed"] for check in report["checks"])
    assert len(report["checks"]) == 2
    # secrets of the corpus never show: the tokens were minted, not printed
    assert "eyJ" not in json.dumps(report)


def test_replay_stores_its_run_and_the_report_command_reads_it_back_as_junit(
    two_backends: Backends,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    migrated_database_url: str,
) -> None:
    monkeypatch.setenv("DATABASE_URL", migrated_database_url)
    cases = write_corpus(tmp_path / "cases")
    junit_file = tmp_path / "shadow.xml"
    code = main(replay_args(two_backends, cases, "--format", "junit", "--output", str(junit_file)))
    captured = capsys.readouterr()
    assert code == 1
    run_id = re.search(r"--run (replay-\S+)", captured.err).group(1)  # type: ignore[union-attr]

    root = ET.fromstring(junit_file.read_text())
    assert root.tag == "testsuites" and int(root.get("failures", "0")) >= 1
    suites = {s.get("name"): s for s in root.iter("testsuite")}
    connectors = suites["shadow.connectors"]
    failing = {c.get("name") for c in connectors.iter("testcase") if c.find("failure") is not None}
    assert failing == {"gate regression-rate"}
    failure_text = connectors.find("testcase[@name='gate regression-rate']/failure").text or ""  # type: ignore[union-attr]
    assert "$.data.description" in failure_text
    skipped = {c.get("name") for c in connectors.iter("testcase") if c.find("skipped") is not None}
    assert "coverage POST /connectors/addConnector" in skipped
    assert int(connectors.get("skipped", "0")) == len(skipped)
    checks = suites["shadow.checks"]
    assert [c.find("failure") for c in checks.iter("testcase")] == [None, None]
    assert (
        suites["shadow.workspaces"].find("testcase[@name='expected stale-version-409']") is not None
    )

    # The same stored run, read back by the report command with gates CI would use.
    code = main(
        [
            "shadow",
            "report",
            "--run",
            run_id,
            "--since",
            "1h",
            "--format",
            "json",
            "--flag-table",
            str(REPO / "routing_rules.yaml"),
            "--entity",
            "connectors",
            "--max-regression-rate",
            "0.5",
            "--min-samples",
            "5",
        ]
    )
    report = json.loads(capsys.readouterr().out)
    (connectors_report,) = report["entities"]
    assert connectors_report["regressions"] == 5 and connectors_report["compared"] == 11
    # 5/11 regressions: the upper bound is above 0.5 even though the rate (0.45) is not
    assert code == 1 and connectors_report["regression_rate_upper_bound"] > 0.5


def test_an_expected_divergence_that_does_not_happen_fails_the_replay(
    two_backends: Backends, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    reads = [
        {
            "name": "equal read",
            "tenant": "acme",
            "method": "GET",
            "path": "/connectors/getConnector",
            "query": {"connector_id": cid(7)},
            "expect": "list-order-dirty-created-at",
        }
    ]
    cases = write_corpus(tmp_path / "cases", reads)
    code = main(replay_args(two_backends, cases, "--no-store", "--format", "text"))
    out = capsys.readouterr().out
    assert code == 1
    assert "check expect list-order-dirty-created-at: connectors/equal read: FAIL" in out
    assert "NOT observed, got equal" in out


def test_too_few_samples_fail_even_without_differences(
    two_backends: Backends, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    reads = [
        {
            "name": "equal read",
            "tenant": "acme",
            "method": "GET",
            "path": "/connectors/getConnector",
            "query": {"connector_id": cid(8)},
        }
    ]
    cases = tmp_path / "cases"
    cases.mkdir()
    (cases / "one.yaml").write_text(
        yaml.safe_dump(
            {
                "tenants": {"acme": {"subscription_id": TENANT, "user_id": "usr_00000000000a"}},
                "cases": reads,
            }
        )
    )
    assert main(replay_args(two_backends, cases, "--no-store", "--min-samples", "2")) == 1
    assert (
        "gate min-samples: FAIL - 1 exchanges compared, at least 2 needed"
        in capsys.readouterr().out
    )
    assert main(replay_args(two_backends, cases, "--no-store")) == 0


def test_a_write_for_a_shared_tenant_is_refused_before_anything_is_sent(
    two_backends: Backends, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    cases = tmp_path / "cases"
    cases.mkdir()
    write = dict(WRITE["cases"][0], tenant="acme")  # type: ignore[index]
    (cases / "bad.yaml").write_text(
        yaml.safe_dump(
            {
                "tenants": {"acme": {"subscription_id": TENANT, "user_id": "usr_00000000000a"}},
                "cases": [write],
            }
        )
    )
    assert main(replay_args(two_backends, cases, "--no-store")) == 2
    err = capsys.readouterr().err
    assert "bad.yaml" in err and "isolated: true" in err


def test_an_unreachable_side_ends_the_replay_with_one_line_naming_it(
    two_backends: Backends, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    cases = write_corpus(tmp_path / "cases")
    with socket.socket() as closed:
        closed.bind(("127.0.0.1", 0))
        nowhere = f"http://127.0.0.1:{closed.getsockname()[1]}"  # bound, never listening
        args = replay_args(two_backends, cases, "--no-store")
        args[args.index("--new") + 1] = nowhere
        assert main(args) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("strangler shadow: --new: cannot reach http://127.0.0.1:")
