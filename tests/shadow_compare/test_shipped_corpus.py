"""The corpus shipped in shadow_cases/ is valid for the data set it names: replayed against
the legacy emulator on both sides (seeded as `legacy serve --with-data small`), every case
is compared equal and the statuses it means to cover (200, 400, 404) are exercised."""

from __future__ import annotations

import secrets
from pathlib import Path

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


async def test_shipped_connectors_corpus_replays_equal_against_the_seeded_emulator() -> None:
    db = open_database(f"memory://shipped_corpus_{secrets.token_hex(4)}")
    await seed_store(db, scale="small", seed=1)
    app = create_app(db, jwt_secret=SECRET)
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
        transports=(httpx.ASGITransport(app), httpx.ASGITransport(app)),
    )
    assert summary.counts() == {"equal": sum(len(c.cases) for c in corpora)}
    statuses = {o.result.legacy_status for o in summary.outcomes if o.result is not None}
    assert statuses == {200, 400, 404}
    report = build_report(
        as_report_data(tally(summary.outcomes)),
        since=min(o.at for o in summary.outcomes),
        runs=["replay-test"],
        gates=Gates(min_samples=len(summary.outcomes), max_regression_rate=0.0, gate_on="observed"),
        entity_endpoints=endpoints,
    )
    assert report.passed
    (connectors,) = report.entities
    assert connectors.not_exercised == [e for e in endpoints["connectors"] if e.startswith("POST")]
