"""The shadow runner: bounded queue, counters, timeouts, re-reads; never blocks the caller."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest
from prometheus_client import CollectorRegistry

from shadow_compare import compare as compare_module
from shadow_compare.model import Kind
from shadow_compare.recorder import MemoryRecorder
from shadow_compare.rules import parse_rules
from shadow_compare.runner import ShadowRunner, build_runner
from strangler.exchange import RecordedRequest, RecordedResponse, ShadowSink

RULES = parse_rules(
    {
        "entities": {
            "workspaces": {
                "expected": [
                    {
                        "id": "stale-version-409",
                        "reason": "the new side rejects a stale version; legacy overwrote",
                        "endpoints": ["POST /workflow/updateWorkflow"],
                        "path": "@status",
                        "legacy_status": 200,
                        "new_status": 409,
                    }
                ]
            }
        }
    }
)
READ = RecordedRequest("GET", "/connectors/getConnector", "connector_id=cn_000000000001")


def response(data: Any, status: int = 200, side: str | None = "legacy") -> RecordedResponse:
    body = json.dumps({"status": True, "message": "ok", "data": data}).encode()
    return RecordedResponse(status, (("content-type", "application/json"),), body, side=side)  # type: ignore[arg-type]


def metric(registry: CollectorRegistry, name: str, **labels: str) -> float:
    return registry.get_sample_value(f"strangler_shadow_{name}_total", labels) or 0.0


def runner(registry: CollectorRegistry, **options: Any) -> tuple[ShadowRunner, MemoryRecorder]:
    recorder = MemoryRecorder()
    settings: dict[str, Any] = {
        "queue_size": 10,
        "concurrency": 2,
        "timeout_seconds": 2.0,
        "reread_delay_seconds": 0.01,
    }
    settings.update(options)
    return ShadowRunner(rules=RULES, registry=registry, recorder=recorder, **settings), recorder


def test_runner_satisfies_the_proxy_sink_protocol() -> None:
    registry = CollectorRegistry()
    sink: ShadowSink = runner(registry)[0]
    assert callable(sink.submit)
    built = build_runner(database_url=None, rules_path=None, registry=CollectorRegistry())
    assert isinstance(built, ShadowRunner)


async def test_full_queue_drops_and_counts_without_waiting() -> None:
    registry = CollectorRegistry()
    shadow, recorder = runner(registry, queue_size=2, concurrency=1)
    await shadow.start()
    release = asyncio.Event()

    async def slow_other() -> RecordedResponse:
        await release.wait()
        return response({"a": 1}, side="new")

    accepted = [
        shadow.submit(
            "connectors", "GET /connectors/getConnector", READ, response({"a": 1}), slow_other
        )
        for _ in range(5)
    ]
    # submit is synchronous: all five returned before any worker ran.
    assert accepted == [True, True, False, False, False]
    assert metric(registry, "dropped", entity="connectors") == 3
    assert metric(registry, "sampled", entity="connectors") == 5
    release.set()
    await shadow.drain()
    await shadow.stop()
    assert metric(registry, "compared", entity="connectors") == 2
    assert [o.kind for o in recorder.outcomes] == [Kind.EQUAL, Kind.EQUAL]
    assert metric(registry, "results", entity="connectors", kind="equal") == 2


async def test_submit_before_start_is_a_counted_drop() -> None:
    registry = CollectorRegistry()
    shadow, _ = runner(registry)

    async def other() -> RecordedResponse:
        raise AssertionError("must not be called")

    assert shadow.submit("users", "GET /users/getUsers", READ, response([]), other) is False
    assert metric(registry, "dropped", entity="users") == 1


async def test_slow_other_side_times_out_and_is_counted() -> None:
    registry = CollectorRegistry()
    shadow, recorder = runner(registry, timeout_seconds=0.05)
    await shadow.start()

    async def hangs() -> RecordedResponse:
        await asyncio.sleep(30)
        raise AssertionError("unreachable")

    assert shadow.submit("connectors", "GET /connectors/getConnector", READ, response({}), hangs)
    await shadow.drain()
    await shadow.stop()
    assert metric(registry, "timed_out", entity="connectors") == 1
    assert metric(registry, "compared", entity="connectors") == 0
    assert recorder.outcomes[0].kind is Kind.FAILED
    assert "timed out" in (recorder.outcomes[0].failure or "")


async def test_failing_other_side_is_counted_as_failed() -> None:
    registry = CollectorRegistry()
    shadow, recorder = runner(registry)
    await shadow.start()

    async def refuses() -> RecordedResponse:
        raise ConnectionRefusedError("new side down")

    shadow.submit("connectors", "GET /connectors/getConnector", READ, response({}), refuses)
    await shadow.drain()
    await shadow.stop()
    assert metric(registry, "failed", entity="connectors") == 1
    assert recorder.outcomes[0].failure == "failed: ConnectionRefusedError"


async def test_large_bodies_are_compared_in_a_worker_process_not_on_the_event_loop(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    in_this_process: list[int] = []
    real = compare_module.compare_responses

    def spy(*args: Any, **kwargs: Any) -> Any:
        in_this_process.append(1)
        return real(*args, **kwargs)

    monkeypatch.setattr("shadow_compare.pool.compare_responses", spy)
    registry = CollectorRegistry()
    # a generous timeout: the first large body spawns the worker process
    shadow, recorder = runner(registry, timeout_seconds=60.0)
    await shadow.start()
    big = [{"connector_id": f"cn_{n:012x}", "text": "x" * 100} for n in range(2000)]
    changed = [dict(item) for item in big]
    changed[1500]["text"] = "y"

    async def same() -> RecordedResponse:
        return response(big, side="new")

    async def different() -> RecordedResponse:
        return response(changed, side="new")

    shadow.submit("connectors", "GET /connectors/getConnectors", READ, response(big), same)
    shadow.submit("connectors", "GET /connectors/getConnectors", READ, response(big), different)
    await shadow.drain()
    await shadow.stop()
    kinds = sorted(str(o.kind) for o in recorder.outcomes)
    assert kinds == ["equal", "regression"]
    regression = next(o for o in recorder.outcomes if o.kind is Kind.REGRESSION)
    (difference,) = regression.result.differences  # type: ignore[union-attr]
    assert difference.path == "$.data[connector_id=cn_0000000005dc].text"
    # two comparisons and two re-read reclassifications, none of them in this process
    assert shadow.pool.offloaded == 4
    assert in_this_process == []


async def test_canary_orientation_new_primary_still_matches_expected_divergence() -> None:
    registry = CollectorRegistry()
    shadow, recorder = runner(registry)
    await shadow.start()
    update = RecordedRequest("POST", "/workflow/updateWorkflow", body=b'{"version": 3}')
    conflict = RecordedResponse(
        409, body=b'{"status": false, "message": "stale version"}', side="new"
    )

    async def legacy_side() -> RecordedResponse:
        return response({"version": 4}, side="legacy")

    shadow.submit("workspaces", "POST /workflow/updateWorkflow", update, conflict, legacy_side)
    await shadow.drain()
    await shadow.stop()
    (outcome,) = recorder.outcomes
    assert outcome.kind is Kind.EXPECTED
    (difference,) = outcome.result.differences  # type: ignore[union-attr]
    assert (difference.legacy, difference.new, difference.rule) == (200, 409, "stale-version-409")


async def test_new_side_that_catches_up_on_reread_is_lag_not_regression() -> None:
    registry = CollectorRegistry()
    shadow, recorder = runner(registry)
    await shadow.start()
    answers = iter(
        [response({"name": "old"}, side="new"), response({"name": "renamed"}, side="new")]
    )

    async def new_side() -> RecordedResponse:
        return next(answers)

    shadow.submit(
        "connectors", "GET /connectors/getConnector", READ, response({"name": "renamed"}), new_side
    )
    await shadow.drain()
    await shadow.stop()
    (outcome,) = recorder.outcomes
    assert outcome.kind is Kind.LAG
    assert outcome.result.differences[0].path == "$.data.name"  # type: ignore[union-attr]


async def test_legacy_answering_differently_on_reread_is_noise() -> None:
    registry = CollectorRegistry()
    shadow, recorder = runner(registry)
    await shadow.start()
    legacy_answers = iter([response({"seen": "10:00:01"}), response({"seen": "10:00:02"})])
    new_answers = iter([response({"seen": "10:00:00"}, side="new")] * 3)

    async def new_side() -> RecordedResponse:
        return next(new_answers)

    async def legacy_again() -> RecordedResponse:
        return next(legacy_answers)

    shadow.submit(
        "connectors",
        "GET /connectors/getConnector",
        READ,
        response({"seen": "10:00:00.5"}),
        new_side,
        primary_again=legacy_again,
    )
    await shadow.drain()
    await shadow.stop()
    (outcome,) = recorder.outcomes
    assert outcome.kind is Kind.NOISE
    assert "legacy answered the same read differently" in (
        outcome.result.differences[0].reason or ""
    )  # type: ignore[union-attr]


async def test_a_difference_that_persists_on_reread_stays_a_regression() -> None:
    registry = CollectorRegistry()
    shadow, recorder = runner(registry)
    await shadow.start()

    async def new_side() -> RecordedResponse:
        return response({"name": "wrong"}, side="new")

    async def legacy_again() -> RecordedResponse:
        return response({"name": "right"})

    shadow.submit(
        "connectors",
        "GET /connectors/getConnector",
        READ,
        response({"name": "right"}),
        new_side,
        primary_again=legacy_again,
    )
    await shadow.drain()
    await shadow.stop()
    assert recorder.outcomes[0].kind is Kind.REGRESSION


async def test_writes_are_never_read_again() -> None:
    registry = CollectorRegistry()
    shadow, recorder = runner(registry)
    await shadow.start()
    calls = 0

    async def new_side() -> RecordedResponse:
        nonlocal calls
        calls += 1
        return response({"name": "other"}, side="new")

    write = RecordedRequest("POST", "/connectors/updateConnector", body=b"{}")
    shadow.submit(
        "connectors", "POST /connectors/updateConnector", write, response({"name": "x"}), new_side
    )
    await shadow.drain()
    await shadow.stop()
    assert calls == 1
    assert recorder.outcomes[0].kind is Kind.REGRESSION


async def test_a_read_waiting_to_be_read_again_does_not_hold_up_the_queue() -> None:
    """One worker: the first exchange's re-read can only answer once the second exchange
    has been compared. Were the re-reads waited for on the worker, this would never end."""
    registry = CollectorRegistry()
    shadow, recorder = runner(registry, concurrency=1, timeout_seconds=30.0)
    await shadow.start()
    second_compared = asyncio.Event()
    first_answers = iter([response({"name": "old"}, side="new")])

    async def first_new_side() -> RecordedResponse:
        for answer in first_answers:
            return answer
        await second_compared.wait()  # the re-read
        return response({"name": "renamed"}, side="new")

    async def second_new_side() -> RecordedResponse:
        second_compared.set()
        return response({"a": 1}, side="new")

    read = "GET /connectors/getConnector"
    shadow.submit("connectors", read, READ, response({"name": "renamed"}), first_new_side)
    shadow.submit("connectors", read, READ, response({"a": 1}), second_new_side)
    await asyncio.wait_for(shadow.drain(), 20.0)
    await shadow.stop()
    assert [o.kind for o in recorder.outcomes] == [Kind.EQUAL, Kind.LAG]
    assert metric(registry, "compared", entity="connectors") == 2


async def test_an_exchange_that_waited_too_long_is_counted_stale_not_compared() -> None:
    """Asking the other side long after the client was answered compares the wait."""
    registry = CollectorRegistry()
    shadow, recorder = runner(registry, concurrency=1, max_wait_seconds=0.2)
    await shadow.start()
    release = asyncio.Event()
    asked: list[str] = []

    async def slow() -> RecordedResponse:
        asked.append("slow")
        await release.wait()
        return response({"a": 1}, side="new")

    async def waited() -> RecordedResponse:
        asked.append("waited")
        return response({"a": 2}, side="new")

    read = "GET /connectors/getConnector"
    shadow.submit("connectors", read, READ, response({"a": 1}), slow)
    shadow.submit("users", "GET /users/getUser", READ, response({"a": 1}), waited)
    await asyncio.sleep(0.5)  # the second waits behind the first, past max_wait_seconds
    release.set()
    await shadow.drain()
    await shadow.stop()
    assert asked == ["slow"]
    assert [o.kind for o in recorder.outcomes] == [Kind.EQUAL]
    assert metric(registry, "stale", entity="users") == 1
    assert metric(registry, "compared", entity="users") == 0


def test_runner_refuses_bounds_that_make_no_sense() -> None:
    for bad in ({"max_wait_seconds": 0}, {"max_settling": 0}, {"concurrency": 0}):
        with pytest.raises(ValueError, match="must be"):
            runner(CollectorRegistry(), **bad)
