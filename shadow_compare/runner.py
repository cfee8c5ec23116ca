"""The shadow runner: the proxy's ShadowSink (strangler.exchange) in shadow and canary modes.

``submit`` only puts the exchange on a bounded queue and returns (False when the queue
is full: the exchange is dropped and counted, the client never waits). A few workers
take exchanges off the queue, call the other side, compare, and hand the outcome to a
recorder that writes to PostgreSQL in batches. Every step is bounded: queue size,
concurrency, a timeout per comparison, and the comparator's own cost bound. Large bodies
are compared in a worker process (shadow_compare.pool) so that the event loop serving
clients never waits on one.

A read whose differences may be noise or lag is settled by reading again after a delay.
The waiting does not hold a worker: the settling goes on in a task of its own (at most
``max_settling`` at once, their calls at most ``concurrency`` at once), and the workers
go on with the queue. An exchange that waited in the queue longer than
``max_wait_seconds`` is not compared at all but counted as stale: the other side would
be asked seconds after the client was answered, and the difference would be the wait's.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import pathlib
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime

from prometheus_client import CollectorRegistry, Counter, Gauge

from shadow_compare.endpoints import is_read
from shadow_compare.model import CompareResult, Outcome
from shadow_compare.pool import ComparePool
from shadow_compare.recorder import Recorder
from shadow_compare.rules import RuleSet, load_rules
from shadow_compare.settle import Call, settle_by_rereading
from strangler.exchange import RecordedRequest, RecordedResponse

__all__ = ["ShadowRunner", "build_runner", "normalize_endpoint"]

log = logging.getLogger(__name__)

DEFAULT_QUEUE_SIZE = 1000
DEFAULT_CONCURRENCY = 4
DEFAULT_TIMEOUT_SECONDS = 5.0
DEFAULT_REREAD_DELAY_SECONDS = 0.25
DEFAULT_REREADS = 2
DEFAULT_COMPARE_PROCESSES = 1
DEFAULT_MAX_WAIT_SECONDS = 1.0
DEFAULT_MAX_SETTLING = 64


def normalize_endpoint(endpoint: str, request: RecordedRequest) -> str:
    """``"GET /connectors/getConnectors"``; a bare path gets the request's method."""
    return endpoint if " " in endpoint else f"{request.method.upper()} {endpoint}"


@dataclass(frozen=True)
class _Job:
    entity: str
    endpoint: str
    request: RecordedRequest
    primary: RecordedResponse
    other: Call
    primary_again: Call | None
    queued: float = field(default_factory=time.monotonic)


class _Metrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        def counter(name: str, doc: str, labels: tuple[str, ...] = ("entity",)) -> Counter:
            return Counter(f"strangler_shadow_{name}", doc, labels, registry=registry)

        self.sampled = counter("sampled", "Exchanges handed to the shadow runner")
        self.compared = counter("compared", "Exchanges compared (both sides answered)")
        self.dropped = counter("dropped", "Exchanges dropped because the queue was full")
        self.stale = counter("stale", "Exchanges not compared: they waited too long in the queue")
        self.timed_out = counter("timed_out", "Comparisons abandoned at the timeout")
        self.failed = counter("failed", "Comparisons that failed (other side error or bug)")
        self.results = counter("results", "Comparison outcomes by kind", ("entity", "kind"))
        self.queue_depth = Gauge(
            "strangler_shadow_queue_depth", "Exchanges waiting to be compared", registry=registry
        )


class ShadowRunner:
    """Compares sampled exchanges off the request path; see the module docstring."""

    def __init__(
        self,
        *,
        rules: RuleSet,
        registry: CollectorRegistry,
        recorder: Recorder | None = None,
        queue_size: int = DEFAULT_QUEUE_SIZE,
        concurrency: int = DEFAULT_CONCURRENCY,
        timeout_seconds: float = DEFAULT_TIMEOUT_SECONDS,
        reread_delay_seconds: float = DEFAULT_REREAD_DELAY_SECONDS,
        rereads: int = DEFAULT_REREADS,
        compare_processes: int = DEFAULT_COMPARE_PROCESSES,
        max_wait_seconds: float = DEFAULT_MAX_WAIT_SECONDS,
        max_settling: int = DEFAULT_MAX_SETTLING,
    ) -> None:
        if queue_size < 1 or concurrency < 1 or max_settling < 1:
            raise ValueError("queue_size, concurrency and max_settling must be >= 1")
        if timeout_seconds <= 0 or max_wait_seconds <= 0:
            raise ValueError("timeout_seconds and max_wait_seconds must be > 0")
        self.rules = rules
        self.recorder = recorder
        self.metrics = _Metrics(registry)
        self._queue_size = queue_size
        self._concurrency = concurrency
        self._timeout = timeout_seconds
        self._reread_delay = reread_delay_seconds
        self._rereads = rereads
        self._max_wait = max_wait_seconds
        self._max_settling = max_settling
        self._queue: asyncio.Queue[_Job] | None = None
        self._workers: list[asyncio.Task[None]] = []
        self._settling: set[asyncio.Task[None]] = set()
        self._settle_slots = asyncio.Semaphore(max_settling)
        self._reread_calls = asyncio.Semaphore(concurrency)
        self.pool = ComparePool(rules, compare_processes)
        self._accepting = False

    # --- the ShadowSink protocol ----------------------------------------------------------

    def submit(
        self,
        entity: str,
        endpoint: str,
        request: RecordedRequest,
        primary: RecordedResponse,
        other: Call,
        primary_again: Call | None = None,
        waited: float = 0.0,
    ) -> bool:
        """Queue a comparison; never blocks. False (and counted as dropped) when full.

        ``primary_again`` optionally repeats the call to the side that served the client;
        with it, noise on that side can be told apart too (see classify_rereads).
        ``waited``: seconds the exchange already spent on its way here since the client was
        answered (shadow_compare.queue), counted against ``max_wait_seconds``.
        """
        self.metrics.sampled.labels(entity).inc()
        if not self._accepting or self._queue is None:
            self.metrics.dropped.labels(entity).inc()
            return False
        job = _Job(
            entity, normalize_endpoint(endpoint, request), request, primary, other, primary_again,
            time.monotonic() - waited,
        )  # fmt: skip
        try:
            self._queue.put_nowait(job)
        except asyncio.QueueFull:
            self.metrics.dropped.labels(entity).inc()
            return False
        self.metrics.queue_depth.set(self._queue.qsize())
        return True

    # --- life cycle ---------------------------------------------------------------------

    async def start(self) -> None:
        if self._accepting:
            return
        self._queue = asyncio.Queue(self._queue_size)
        self.pool.start()
        if self.recorder is not None:
            await self.recorder.start()
        self._workers = [
            asyncio.create_task(self._work(), name=f"shadow-worker-{n}")
            for n in range(self._concurrency)
        ]
        self._accepting = True

    async def drain(self) -> None:
        """Wait until every queued exchange has been compared (tests and replays use it)."""
        if self._queue is not None:
            await self._queue.join()

    async def stop(self, deadline_seconds: float = 10.0) -> None:
        """Stop accepting, finish what is queued within the deadline, flush, release."""
        self._accepting = False
        if self._queue is not None:
            try:
                await asyncio.wait_for(self._queue.join(), deadline_seconds)
            except TimeoutError:
                left = self._queue.qsize() + len(self._settling)
                log.warning("shadow runner stopped with %d exchanges not compared", left)
                while not self._queue.empty():
                    job = self._queue.get_nowait()
                    self.metrics.dropped.labels(job.entity).inc()
                    self._queue.task_done()
        tasks = [*self._workers, *self._settling]
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._workers = []
        self._settling.clear()
        if self.recorder is not None:
            await self.recorder.close()
        await self.pool.stop()

    # --- the work -----------------------------------------------------------------------

    async def _work(self) -> None:
        queue = self._queue
        assert queue is not None
        while True:
            job = await queue.get()
            self.metrics.queue_depth.set(queue.qsize())
            handed_off = False
            try:
                if time.monotonic() - job.queued > self._max_wait:
                    self.metrics.stale.labels(job.entity).inc()
                    continue
                handed_off = await self._one(job)
            finally:
                if not handed_off:
                    queue.task_done()

    async def _one(self, job: _Job) -> bool:
        """Compare ``job``; True when its settling was handed to a task of its own (which
        then records it and marks it done)."""
        at = datetime.now(UTC)
        deadline = asyncio.get_running_loop().time() + self._timeout
        try:
            async with asyncio.timeout_at(deadline):
                legacy, new, result = await self._first(job)
        except Exception as exc:
            self._failed(job, at, exc)
            return False
        if not (result.regressions() and is_read(job.endpoint)):
            self._compared(job, at, result)
            return False
        # The re-reads wait (up to seconds): in a task of their own, so that this worker
        # goes on with the queue. Only when max_settling are already waiting does it wait.
        await self._settle_slots.acquire()
        task = asyncio.create_task(
            self._settle(job, at, deadline, legacy, new, result), name="shadow-settle"
        )
        self._settling.add(task)
        task.add_done_callback(self._settling.discard)
        return True

    async def _settle(
        self,
        job: _Job,
        at: datetime,
        deadline: float,
        legacy: RecordedResponse,
        new: RecordedResponse,
        first: CompareResult,
    ) -> None:
        assert self._queue is not None
        try:
            async with asyncio.timeout_at(deadline):
                result = await self._reread(job, legacy, new, first)
        except Exception as exc:
            self._failed(job, at, exc)
        else:
            self._compared(job, at, result)
        finally:
            self._settle_slots.release()
            self._queue.task_done()

    def _compared(self, job: _Job, at: datetime, result: CompareResult) -> None:
        self.metrics.compared.labels(job.entity).inc()
        self._record(job, at, result, None)

    def _failed(self, job: _Job, at: datetime, exc: Exception) -> None:
        """The other side or a bug: counted, never the client's problem."""
        if isinstance(exc, TimeoutError):
            self.metrics.timed_out.labels(job.entity).inc()
            self._record(job, at, None, f"timed out after {self._timeout:g} s")
            return
        self.metrics.failed.labels(job.entity).inc()
        log.warning(
            "shadow comparison of %s %s failed: %s", job.entity, job.endpoint, type(exc).__name__
        )
        self._record(job, at, None, f"failed: {type(exc).__name__}")

    def _record(
        self, job: _Job, at: datetime, result: CompareResult | None, failure: str | None
    ) -> None:
        outcome = Outcome(job.entity, job.endpoint, job.request, at, result, failure)
        self.metrics.results.labels(job.entity, str(outcome.kind)).inc()
        if self.recorder is not None:
            self.recorder.record(outcome)

    async def _first(self, job: _Job) -> tuple[RecordedResponse, RecordedResponse, CompareResult]:
        """Call the other side and compare: (legacy, new, result)."""
        other = await job.other()
        legacy, new = _orient(job.primary, other)
        result = await self.pool.compare(job.entity, job.endpoint, job.request, legacy, new)
        return legacy, new, result

    async def _reread(
        self, job: _Job, legacy: RecordedResponse, new: RecordedResponse, first: CompareResult
    ) -> CompareResult:
        """Read both sides again (``settle_by_rereading``) until the differences settle."""

        def bounded(call: Call | None) -> Call | None:
            if call is None:
                return None

            async def limited() -> RecordedResponse:
                async with self._reread_calls:
                    return await call()

            return limited

        again_legacy, again_new = (
            (job.other, job.primary_again)
            if job.primary.side == "new"
            else (job.primary_again, job.other)
        )

        async def reclassify(
            first: CompareResult,
            legacy_again: RecordedResponse | None,
            new_again: RecordedResponse | None,
            waited: float,
        ) -> CompareResult:
            return await self.pool.reclassify(
                job.entity,
                job.endpoint,
                job.request,
                first,
                legacy,
                new,
                legacy_again,
                new_again,
                waited,
            )

        return await settle_by_rereading(
            first,
            again_legacy=bounded(again_legacy),
            again_new=bounded(again_new),
            reclassify=reclassify,
            rereads=self._rereads,
            delay_seconds=self._reread_delay,
        )


def _orient(
    primary: RecordedResponse, other: RecordedResponse
) -> tuple[RecordedResponse, RecordedResponse]:
    """(legacy, new) whichever side served the client; an unmarked primary is legacy."""
    return (other, primary) if primary.side == "new" else (primary, other)


def build_runner(
    *,
    database_url: str | None,
    rules_path: pathlib.Path | None,
    registry: CollectorRegistry,
    queue_size: int = DEFAULT_QUEUE_SIZE,
    concurrency: int = DEFAULT_CONCURRENCY,
    timeout_seconds: float = DEFAULT_TIMEOUT_SECONDS,
    compare_processes: int = DEFAULT_COMPARE_PROCESSES,
    max_wait_seconds: float = DEFAULT_MAX_WAIT_SECONDS,
) -> ShadowRunner:
    """The runner ``strangler proxy serve`` uses: rules from ``rules_path`` (defaults only
    when None), outcomes written to PostgreSQL at ``database_url`` (only counted in the
    metrics when None). Raises RulesError when the rules file is unusable."""
    from shadow_compare.recorder import BufferedRecorder

    rules = load_rules(rules_path) if rules_path is not None else RuleSet.empty()
    recorder = BufferedRecorder(database_url, registry) if database_url else None
    return ShadowRunner(
        rules=rules,
        registry=registry,
        recorder=recorder,
        queue_size=queue_size,
        concurrency=concurrency,
        timeout_seconds=timeout_seconds,
        compare_processes=compare_processes,
        max_wait_seconds=max_wait_seconds,
    )
