"""The shadow runner: the proxy's ShadowSink (strangler.exchange) in shadow and canary modes.

``submit`` only puts the exchange on a bounded queue and returns (False when the queue
is full: the exchange is dropped and counted, the client never waits). A few workers
take exchanges off the queue, call the other side, compare, re-read reads whose
differences may be noise or lag, and hand the outcome to a recorder that writes to
PostgreSQL in batches. Every step is bounded: queue size, concurrency, a timeout per
comparison, and the comparator's own cost bound. Large bodies are compared in a worker
process (shadow_compare.pool) so that the event loop serving clients never waits on one.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import pathlib
from dataclasses import dataclass
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


class _Metrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        def counter(name: str, doc: str, labels: tuple[str, ...] = ("entity",)) -> Counter:
            return Counter(f"strangler_shadow_{name}", doc, labels, registry=registry)

        self.sampled = counter("sampled", "Exchanges handed to the shadow runner")
        self.compared = counter("compared", "Exchanges compared (both sides answered)")
        self.dropped = counter("dropped", "Exchanges dropped because the queue was full")
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
    ) -> None:
        if queue_size < 1 or concurrency < 1 or timeout_seconds <= 0:
            raise ValueError("queue_size and concurrency must be >= 1, timeout_seconds > 0")
        self.rules = rules
        self.recorder = recorder
        self.metrics = _Metrics(registry)
        self._queue_size = queue_size
        self._concurrency = concurrency
        self._timeout = timeout_seconds
        self._reread_delay = reread_delay_seconds
        self._rereads = rereads
        self._queue: asyncio.Queue[_Job] | None = None
        self._workers: list[asyncio.Task[None]] = []
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
    ) -> bool:
        """Queue a comparison; never blocks. False (and counted as dropped) when full.

        ``primary_again`` optionally repeats the call to the side that served the client;
        with it, noise on that side can be told apart too (see classify_rereads).
        """
        self.metrics.sampled.labels(entity).inc()
        if not self._accepting or self._queue is None:
            self.metrics.dropped.labels(entity).inc()
            return False
        job = _Job(
            entity, normalize_endpoint(endpoint, request), request, primary, other, primary_again
        )
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
                left = self._queue.qsize()
                log.warning("shadow runner stopped with %d exchanges not compared", left)
                while not self._queue.empty():
                    job = self._queue.get_nowait()
                    self.metrics.dropped.labels(job.entity).inc()
                    self._queue.task_done()
        for worker in self._workers:
            worker.cancel()
        for worker in self._workers:
            with contextlib.suppress(asyncio.CancelledError):
                await worker
        self._workers = []
        if self.recorder is not None:
            await self.recorder.close()
        await self.pool.stop()

    # --- the work -----------------------------------------------------------------------

    async def _work(self) -> None:
        assert self._queue is not None
        while True:
            job = await self._queue.get()
            self.metrics.queue_depth.set(self._queue.qsize())
            try:
                await self._one(job)
            finally:
                self._queue.task_done()

    async def _one(self, job: _Job) -> None:
        at = datetime.now(UTC)
        try:
            async with asyncio.timeout(self._timeout):
                result = await self.compare_job(job)
        except TimeoutError:
            self.metrics.timed_out.labels(job.entity).inc()
            self._record(job, at, None, f"timed out after {self._timeout:g} s")
            return
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # the other side or a bug: counted, never the client's problem
            self.metrics.failed.labels(job.entity).inc()
            log.warning(
                "shadow comparison of %s %s failed: %s",
                job.entity,
                job.endpoint,
                type(exc).__name__,
            )
            self._record(job, at, None, f"failed: {type(exc).__name__}")
            return
        self.metrics.compared.labels(job.entity).inc()
        self._record(job, at, result, None)

    def _record(
        self, job: _Job, at: datetime, result: CompareResult | None, failure: str | None
    ) -> None:
        outcome = Outcome(job.entity, job.endpoint, job.request, at, result, failure)
        self.metrics.results.labels(job.entity, str(outcome.kind)).inc()
        if self.recorder is not None:
            self.recorder.record(outcome)

    async def compare_job(self, job: _Job) -> CompareResult:
        """Call the other side, compare, and re-read a read whose differences may be noise."""
        other = await job.other()
        legacy, new = _orient(job.primary, other)
        result = await self.pool.compare(job.entity, job.endpoint, job.request, legacy, new)
        if not (result.regressions() and is_read(job.endpoint)):
            return result
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
            result,
            again_legacy=again_legacy,
            again_new=again_new,
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
    )
