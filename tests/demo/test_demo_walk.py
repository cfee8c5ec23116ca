"""``strangler demo``: the walk-through end to end (``--no-serve --quick``) and the first form
(``--check``), run in-process through the CLI as a user runs them."""

from __future__ import annotations

import os
import re
import secrets
import socket
from collections.abc import Iterator

import asyncpg
import pytest

from strangler.cli import main

# The suite's one PostgreSQL setting (tests/conftest.py), less its database name.
PG_SERVER = os.environ.get("TEST_PG_ADMIN_URL", "postgresql://root@127.0.0.1:5432/postgres").rsplit(
    "/", 1
)[0]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture
def demo_database(monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """A database of the test's own for the demo to reset (never the user's uzo_demo)."""
    name = f"strangler_test_demo_{os.getpid()}_{secrets.token_hex(3)}"
    url = f"{PG_SERVER}/{name}"
    monkeypatch.setenv("DATABASE_URL", url)
    yield url

    import asyncio

    async def drop() -> None:
        admin = await asyncpg.connect(f"{PG_SERVER}/postgres")
        try:
            await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        finally:
            await admin.close()

    asyncio.run(drop())


# The whole stack for minutes (never beside the other such test: WHOLE_STACK in
# tests/conftest.py), with a hang guard of its own length.
@pytest.mark.timeout(480)
def test_the_walk_through_loses_no_write_and_ends_with_mongodb_retired(
    demo_database: str, capsys: pytest.CaptureFixture[str]
) -> None:
    code = main(["demo", "--no-serve", "--quick", "--reset-database", "--legacy-port", "0",
                 "--proxy-port", "0", "--admin-port", "0"])  # fmt: skip
    out = capsys.readouterr().out
    # where it went wrong, wherever in the walk that was (the step headers place it)
    marks = re.compile(r"^== |^-- |unexpected answer|\[FAIL\]|stopped|NOT clean")
    found = [line for line in out.splitlines() if marks.search(line)]
    assert code == 0, "\n".join(found[-60:]) + "\n...\n" + out[-3000:]
    # Every walked entity went through every step, gates printed, none forced.
    for entity in ("connectors", "workspaces", "users", "groups", "roles", "job_runs", "activity"):
        for step in ("legacy -> shadow", "shadow -> canary 50%", "canary 50% -> new",
                     "new -> legacy"):  # fmt: skip
            assert f"-- {entity}: {step}" in out
    assert "[FAIL]" not in out and "[pass] shadow-regression-rate" in out
    assert "[pass] verify-clean" in out and "drained" in out
    # The end state: every entity into new in the planned order, MongoDB retired after a
    # final verify clean for every entity, the legacy emulator stopped, traffic still served.
    end = out[out.index("the end state: every entity into new") :]
    for entity in ("connectors", "workspaces", "users", "groups", "roles", "job_runs", "activity"):
        assert f"-- {entity}: legacy -> new" in end
    for entity in ("subscriptions", "users", "groups", "roles", "connectors", "workflows",
                   "workspaces", "workflow_versions", "workflow_backups", "job_runs",
                   "activity"):  # fmt: skip
        assert re.search(rf"^ +{entity}: clean;", end, re.MULTILINE), entity
    assert "recorded: MongoDB was retired at" in end
    assert "the legacy emulator stopped" in end
    served = re.findall(r"writes acknowledged ([\d,]+)", end[end.index("the proxy alone") :])
    assert len(served) >= 2 and served[0] != served[-1]  # writes went on with legacy gone
    # Every acknowledged client write, from the first step to the last, is in PostgreSQL.
    acknowledged = re.search(r"client writes acknowledged: (\d+), lost: (\d+)", out)
    assert acknowledged is not None
    assert int(acknowledged.group(1)) > 100 and acknowledged.group(2) == "0"
    assert "   verify: clean" in out  # also: no unexpected answer, legacy stopped or not
    assert "unexpected answer:" not in end
    # runNow through legacy and through the new side (its run worker), each run kept
    runs = re.search(r"runs queued by runNow \(either side\): (\d+), each in PostgreSQL", out)
    assert runs is not None and int(runs.group(1)) > 10
    # Fenced writes were retried, and clients were served throughout.
    assert re.search(r"fenced and retried [1-9]", out)


def test_the_first_form_serves_a_curl_that_works_as_printed(
    capsys: pytest.CaptureFixture[str],
) -> None:
    code = main(["demo", "--check", "--legacy-port", str(_free_port())])
    out = capsys.readouterr().out
    assert code == 0, out
    assert "curl -s -H 'Authorization: Bearer " in out
    assert re.search(r"-> HTTP 200: workspace '.+' with [1-9]\d* folders", out)
