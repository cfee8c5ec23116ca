"""End to end, as deployed: every service a process of its own (``strangler demo
--processes``: ``legacy mongod``, ``legacy serve``, ``sync all --feed polling``,
``reverse-sync all``, ``proxy serve``, each started with the arguments of ``deploy/``), and
connectors walked legacy -> shadow -> canary 50 -> new -> legacy with ``strangler flags
set`` while clients write through the proxy: no acknowledged write lost, verify clean."""

from __future__ import annotations

import os
import re
import subprocess
import sys

import pytest
import redis

pytestmark = pytest.mark.slow

# The proxies and workers keep their keys unprefixed, as deployed: this test owns one Redis
# database of its own and empties it first.
REDIS_DB = 11


def test_connectors_walk_there_and_back_across_processes(
    empty_database_url: str, redis_url: str, tmp_path: object
) -> None:
    base = redis_url.rsplit("/", 1)[0]
    own = f"{base}/{REDIS_DB}"
    redis.Redis.from_url(own).flushdb()
    env = {**os.environ, "DATABASE_URL": empty_database_url, "REDIS_URL": own}
    done = subprocess.run(
        [sys.executable, "-m", "strangler.cli", "demo", "--processes", "--quick",
         "--reset-database"],
        capture_output=True,
        text=True,
        env=env,
        timeout=540,
    )  # fmt: skip
    out = done.stdout + done.stderr
    assert done.returncode == 0, out[-6000:]
    assert "Traceback" not in out
    # Each step went through the operator's command, with the gates evaluated.
    for step in ("shadow", "canary 50", "new", "legacy"):
        assert f"strangler flags set connectors {step} (" in out, out[-4000:]
    acknowledged = re.search(r"client writes acknowledged: (\d+), lost: (\d+)", out)
    assert acknowledged is not None, out[-4000:]
    assert int(acknowledged.group(1)) > 50 and acknowledged.group(2) == "0"
    assert "verify: clean" in out
    assert "SERVICE DIED" not in out
