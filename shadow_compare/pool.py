"""Large comparisons in worker processes, so that the proxy's event loop never waits for them.

A comparison is CPU work in Python: in a thread it would still hold the interpreter lock
and take turns with the event loop serving clients. Pairs under ``INLINE_COMPARE_BYTES``
are compared inline (faster than any hand-off); larger ones go to a small process pool
that loads the rules once per process. Processes are spawned on first use, so a proxy
that never sees a large body never starts one.
"""

from __future__ import annotations

import asyncio
import multiprocessing
from concurrent.futures import ProcessPoolExecutor
from functools import partial

from shadow_compare.compare import compare_responses
from shadow_compare.model import CompareResult
from shadow_compare.rules import RuleSet, RulesFile
from shadow_compare.settle import reclassify_pair
from strangler.exchange import RecordedRequest, RecordedResponse

__all__ = ["INLINE_COMPARE_BYTES", "ComparePool"]

# Below this many body bytes a comparison takes less time than a hand-off to a process.
INLINE_COMPARE_BYTES = 64 * 1024

_worker_rules: RuleSet | None = None


def _load_rules(parsed: RulesFile, source: str) -> None:
    global _worker_rules
    _worker_rules = RuleSet(parsed, source)


def _compare(
    entity: str,
    endpoint: str,
    request: RecordedRequest,
    legacy: RecordedResponse,
    new: RecordedResponse,
) -> CompareResult:
    assert _worker_rules is not None  # set by the pool's initializer
    compiled = _worker_rules.for_entity(entity)
    return compare_responses(legacy, new, compiled, endpoint=endpoint, request=request)


def _reclassify(
    entity: str,
    endpoint: str,
    request: RecordedRequest,
    first: CompareResult,
    legacy: RecordedResponse,
    new: RecordedResponse,
    legacy_again: RecordedResponse | None,
    new_again: RecordedResponse | None,
    waited: float,
) -> CompareResult:
    assert _worker_rules is not None
    return reclassify_pair(
        _worker_rules,
        entity,
        endpoint,
        request,
        first,
        legacy,
        new,
        legacy_again,
        new_again,
        waited,
    )


class ComparePool:
    """Compares inline or in a worker process, by size; counts what it sent away."""

    def __init__(self, rules: RuleSet, processes: int = 1) -> None:
        if processes < 1:
            raise ValueError("processes must be at least 1")
        self.rules = rules
        self._processes = processes
        self._executor: ProcessPoolExecutor | None = None
        self.offloaded = 0

    def start(self) -> None:
        if self._executor is None:
            # spawn: the proxy process has threads and an event loop a fork must not copy
            self._executor = ProcessPoolExecutor(
                self._processes,
                mp_context=multiprocessing.get_context("spawn"),
                initializer=_load_rules,
                initargs=(self.rules.parsed, self.rules.source),
            )

    async def stop(self) -> None:
        executor, self._executor = self._executor, None
        if executor is not None:
            await asyncio.to_thread(executor.shutdown, True, cancel_futures=True)

    def _inline(self, *responses: RecordedResponse) -> bool:
        return self._executor is None or sum(len(r.body) for r in responses) <= INLINE_COMPARE_BYTES

    async def compare(
        self,
        entity: str,
        endpoint: str,
        request: RecordedRequest,
        legacy: RecordedResponse,
        new: RecordedResponse,
    ) -> CompareResult:
        if self._inline(legacy, new):
            compiled = self.rules.for_entity(entity)
            return compare_responses(legacy, new, compiled, endpoint=endpoint, request=request)
        self.offloaded += 1
        call = partial(_compare, entity, endpoint, request, legacy, new)
        return await asyncio.get_running_loop().run_in_executor(self._executor, call)

    async def reclassify(
        self,
        entity: str,
        endpoint: str,
        request: RecordedRequest,
        first: CompareResult,
        legacy: RecordedResponse,
        new: RecordedResponse,
        legacy_again: RecordedResponse | None,
        new_again: RecordedResponse | None,
        waited: float,
    ) -> CompareResult:
        args = (entity, endpoint, request, first, legacy, new, legacy_again, new_again, waited)
        if self._inline(legacy, new):
            return reclassify_pair(self.rules, *args)
        self.offloaded += 1
        call = partial(_reclassify, *args)
        return await asyncio.get_running_loop().run_in_executor(self._executor, call)
