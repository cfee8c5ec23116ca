"""The corpora shipped in shadow_cases/ are valid for the data set they name: replayed
against two legacy emulators seeded alike (as `legacy serve --with-data small`), every case
is compared equal (its ids exist, its writes apply on both), the statuses they mean to cover
are exercised, and only the cases that declare a new-side divergence miss it (legacy
against legacy cannot show one). Against the new side: tests/deployed/test_shadow_ci.py."""

from __future__ import annotations

import secrets
from collections import Counter
from pathlib import Path
from typing import Any

import httpx

from legacy_emulator.app import create_app
from legacy_emulator.generator import seed_store
from shadow_compare.aggregate import as_report_data, tally
from shadow_compare.corpus import load_corpora
from shadow_compare.endpoints import load_entity_endpoints
from shadow_compare.replay import ReplayOptions, replay
from shadow_compare.report import Gates, build_report
from shadow_compare.rules import load_rules
from strangler.mongo import open_database

REPO = Path(__file__).resolve().parents[2]
SECRET = "shipped-corpus-secret-long-enough-for-hs256"


async def _emulator() -> Any:
    db = open_database(f"memory://shipped_corpus_{secrets.token_hex(4)}")
    await seed_store(db, scale="small", seed=1)
    return create_app(db, jwt_secret=SECRET)


async def test_shipped_corpora_replay_equal_against_two_seeded_emulators() -> None:
    legacy, twin = await _emulator(), await _emulator()
    endpoints = load_entity_endpoints(REPO / "routing_rules.yaml")
    corpora = load_corpora(REPO / "shadow_cases", endpoints)
    options = ReplayOptions(
        legacy_url="http://legacy", new_url="http://new", jwt_secret=SECRET, run_id="replay-test"
    )
    summary = await replay(
        corpora,
        options=options,
        rules=load_rules(REPO / "shadow_rules.yaml"),
        entity_endpoints=endpoints,
        transports=(httpx.ASGITransport(legacy), httpx.ASGITransport(twin)),
    )
    counts = summary.counts()
    assert counts["equal"] + counts["expected"] == sum(len(c.cases) for c in corpora), counts
    # Two emulators differ only where each side of a replayed write mints or stamps alone.
    rules = {d.rule for o in summary.outcomes if o.result for d in o.result.differences}
    assert rules <= {"write-minted-twice", "write-stamped-twice"}, rules
    statuses = {o.result.legacy_status for o in summary.outcomes if o.result is not None}
    assert statuses == {200, 201, 400, 404, 409}  # 409: duplicate names, both sides
    declared = sorted(case.name for corpus in corpora for case in corpus.cases if case.expect)
    missed = sorted(c.name.split("/", 1)[1].split(": ", 1)[0] for c in summary.checks()
                    if not c.passed)  # fmt: skip
    assert declared and missed == declared
    per_entity = Counter(o.entity for o in summary.outcomes)
    report = build_report(
        as_report_data(tally(summary.outcomes)),
        since=min(o.at for o in summary.outcomes),
        runs=["replay-test"],
        gates=Gates(
            min_samples=min(per_entity.values()), max_regression_rate=0.0, gate_on="observed"
        ),
        entity_endpoints=endpoints,
    )
    assert report.passed
    assert {entity.entity for entity in report.entities} == {
        "connectors",
        "workspaces",
        "users",
        "groups",
        "roles",
        "job_runs",
        "activity",
    }
