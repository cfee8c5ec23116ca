"""``strangler shadow-ci`` (``make shadow-ci``): the shipped corpora replayed against the
legacy emulator and the new side, every service a process of its own. The shipped corpora
pass with every declared divergence observed; a corpus that declares one the new side does
not make fails the run (exit 1) and says which case."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import redis

from schema.connect import database_name
from strangler.shadow_ci import run_shadow_ci

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[2]
REDIS_DB = 12  # the proxy's keys are unprefixed, as deployed: a database of this test's own

MISSED = """name: missed
tenants:
  busiest: {subscription_id: sub_b97926b47f3f, user_id: usr_85e17b96d3ee}
cases:
  - name: a read declared to be refused
    tenant: busiest
    method: GET
    path: /connectors/getConnectors
    expect: stale-version-409
"""


async def test_shipped_corpora_pass_against_the_new_side_and_a_missed_divergence_fails(
    empty_database_url: str,
    redis_url: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    own = f"{redis_url.rsplit('/', 1)[0]}/{REDIS_DB}"
    redis.Redis.from_url(own).flushdb()
    monkeypatch.setenv("DATABASE_URL", empty_database_url)
    monkeypatch.setenv("REDIS_URL", own)
    cases = tmp_path / "cases"
    shutil.copytree(REPO / "shadow_cases", cases)
    (cases / "zz_missed.yaml").write_text(MISSED, encoding="utf-8")
    junit = tmp_path / "shadow.xml"
    said: list[str] = []
    status = await run_shadow_ci(
        cases, REPO / "shadow_rules.yaml", junit, say=said.append,
        database=database_name(empty_database_url),
    )  # fmt: skip
    text = "\n".join(said)
    assert status == 1, text
    assert "== connectors: PASS ==" in text and "== workspaces: PASS ==" in text
    assert "NOT EXERCISED" not in text  # every endpoint of both entities is replayed
    for rule in ("stale-version-409", "version-not-a-number", "update-bumps-version",
                 "deleted-workflow-leaves-dependencies"):  # fmt: skip
        assert f"expected divergence '{rule}' observed" in text
    assert "missed/a read declared to be refused: FAIL" in text
    assert "shadow-ci FAILED" in text
    xml = junit.read_text(encoding="utf-8")
    assert '<testsuite name="shadow.checks"' in xml  # the expect checks are in the CI report
    assert "a read declared to be refused" in xml
