"""Replay: send a corpus of requests to legacy and new at once, compare, and record.

Each case's request goes to both sides concurrently (never one after the other, so
neither side sees the other's effects first). Reads whose differences may be noise or
lag are read again from both sides (see :mod:`shadow_compare.classify`). Cases run
with bounded concurrency, except writes: a write waits for everything before it and
runs alone, so the order of a corpus's writes and the reads after them holds.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import partial
from urllib.parse import urlencode

import httpx

from shadow_compare.compare import compare_responses
from shadow_compare.corpus import Case, Corpus, case_entity
from shadow_compare.errors import SideUnavailable
from shadow_compare.model import CompareResult, Outcome, Verdict
from shadow_compare.report import GateResult
from shadow_compare.rules import RuleSet
from shadow_compare.settle import reclassify_pair, settle_by_rereading
from strangler.exchange import RecordedRequest, RecordedResponse, Side
from strangler.tokens import mint_token

__all__ = ["CaseResult", "HttpSide", "ReplayOptions", "ReplaySummary", "replay"]


@dataclass(frozen=True)
class ReplayOptions:
    legacy_url: str
    new_url: str
    jwt_secret: str
    run_id: str
    concurrency: int = 8
    timeout_seconds: float = 10.0
    rereads: int = 2
    reread_delay_seconds: float = 0.25


@dataclass(frozen=True)
class CaseResult:
    corpus: str
    case: Case
    outcome: Outcome

    @property
    def expectation(self) -> GateResult | None:
        """The case's declared expected divergence, checked (None when it declares none)."""
        if self.case.expect is None:
            return None
        result = self.outcome.result
        met = result is not None and any(
            d.verdict is Verdict.EXPECTED and d.rule == self.case.expect for d in result.differences
        )
        got = (
            "no answer"
            if result is None
            else f"{result.kind}"
            + (
                f" ({', '.join(sorted({str(d.rule or d.cause) for d in result.differences}))})"
                if result.differences
                else ""
            )
        )
        return GateResult(
            f"expect {self.case.expect}: {self.corpus}/{self.case.name}",
            met,
            f"{self.case.endpoint}: expected divergence {self.case.expect!r} "
            + ("observed" if met else f"NOT observed, got {got}"),
        )


@dataclass
class ReplaySummary:
    run_id: str
    results: list[CaseResult] = field(default_factory=list)

    @property
    def outcomes(self) -> list[Outcome]:
        return [r.outcome for r in self.results]

    def checks(self) -> list[GateResult]:
        return [c for c in (r.expectation for r in self.results) if c is not None]

    def counts(self) -> Counter[str]:
        return Counter(str(o.kind) for o in self.outcomes)


class HttpSide:
    """One side over HTTP: a RecordedRequest sent to its base URL, the answer recorded."""

    def __init__(self, name: Side, flag: str, client: httpx.AsyncClient) -> None:
        self.name = name
        self.flag = flag
        self.client = client

    async def call(self, request: RecordedRequest) -> RecordedResponse:
        target = request.path + (f"?{request.query_string}" if request.query_string else "")
        started = time.perf_counter()
        try:
            response = await self.client.request(
                request.method, target, content=request.body or None, headers=list(request.headers)
            )
        except httpx.ConnectError as exc:
            raise SideUnavailable(self.flag, str(self.client.base_url), type(exc).__name__) from exc
        return RecordedResponse(
            response.status_code,
            tuple((k, v) for k, v in response.headers.items()),
            response.content,
            side=self.name,
            elapsed=time.perf_counter() - started,
        )


def _request(case: Case, token: str) -> RecordedRequest:
    headers: list[tuple[str, str]] = [("authorization", f"Bearer {token}")]
    body = b""
    if case.method == "POST":
        body = json.dumps(case.body if case.body is not None else {}).encode()
        headers.append(("content-type", "application/json"))
    query = urlencode(
        {k: str(v).lower() if isinstance(v, bool) else v for k, v in case.query.items()}
    )
    return RecordedRequest(
        case.method, case.path, query, tuple(headers), body, request_id=case.name
    )


async def _run_case(
    case: Case,
    corpus: Corpus,
    *,
    entity: str,
    token: str,
    sides: tuple[HttpSide, HttpSide],
    rules: RuleSet,
    options: ReplayOptions,
    written: list[tuple[datetime, datetime]],
) -> CaseResult:
    """``written``: the windows of the writes already sent to both sides for this case's
    tenant (their stamps may show in its answers); a write adds its own."""
    legacy, new = sides
    request = _request(case, token)
    at = datetime.now(UTC)
    result: CompareResult | None = None
    failure: str | None = None
    try:
        async with asyncio.timeout(options.timeout_seconds):
            legacy_response, new_response = await asyncio.gather(
                legacy.call(request), new.call(request)
            )
            window = (at, datetime.now(UTC))
            result = compare_responses(
                legacy_response,
                new_response,
                rules.for_entity(entity),
                endpoint=case.endpoint,
                request=request,
                windows=(*written, window) if case.is_write else tuple(written),
            )
            if case.is_write:
                written.append(window)
            if result.regressions() and not case.is_write:
                reclassify = partial(reclassify_pair, rules, entity, case.endpoint, request)

                async def settle(
                    first: CompareResult,
                    legacy_again: RecordedResponse | None,
                    new_again: RecordedResponse | None,
                    waited: float,
                ) -> CompareResult:
                    return reclassify(
                        first, legacy_response, new_response, legacy_again, new_again, waited
                    )

                result = await settle_by_rereading(
                    result,
                    again_legacy=partial(legacy.call, request),
                    again_new=partial(new.call, request),
                    reclassify=settle,
                    rereads=options.rereads,
                    delay_seconds=options.reread_delay_seconds,
                )
    except TimeoutError:
        failure = f"timed out after {options.timeout_seconds:g} s"
    except httpx.HTTPError as exc:
        failure = f"failed: {type(exc).__name__}"
    outcome = Outcome(
        entity,
        case.endpoint,
        request,
        at,
        result,
        failure,
        run=options.run_id,
        expected_tag=case.expect,
    )
    return CaseResult(corpus.name, case, outcome)


async def replay(
    corpora: list[Corpus],
    *,
    options: ReplayOptions,
    rules: RuleSet,
    entity_endpoints: Mapping[str, tuple[str, ...]],
    progress: Callable[[str], None] = lambda _line: None,
    transports: tuple[httpx.AsyncBaseTransport | None, httpx.AsyncBaseTransport | None] = (
        None,
        None,
    ),
) -> ReplaySummary:
    """Replay every case of every corpus against both sides; outcomes in corpus order."""
    summary = ReplaySummary(options.run_id)
    total = sum(len(c.cases) for c in corpora)
    limits = httpx.Limits(max_connections=options.concurrency)
    timeout = httpx.Timeout(options.timeout_seconds)
    async with (
        httpx.AsyncClient(
            base_url=options.legacy_url, timeout=timeout, limits=limits, transport=transports[0]
        ) as legacy_client,
        httpx.AsyncClient(
            base_url=options.new_url, timeout=timeout, limits=limits, transport=transports[1]
        ) as new_client,
    ):
        sides = (
            HttpSide("legacy", "--legacy", legacy_client),
            HttpSide("new", "--new", new_client),
        )
        gate = asyncio.Semaphore(options.concurrency)
        done = 0
        written: dict[str, list[tuple[datetime, datetime]]] = {}  # by subscription_id

        async def bounded(case: Case, corpus: Corpus, token: str) -> CaseResult:
            nonlocal done
            async with gate:
                result = await _run_case(
                    case,
                    corpus,
                    entity=case_entity(case, entity_endpoints),
                    token=token,
                    sides=sides,
                    rules=rules,
                    options=options,
                    written=written.setdefault(corpus.tenants[case.tenant].subscription_id, []),
                )
            done += 1
            if done % 10 == 0 or done == total:
                progress(f"replayed {done}/{total} cases")
            return result

        pending: list[asyncio.Task[CaseResult]] = []
        try:
            for corpus in corpora:
                tokens = {
                    name: mint_token(options.jwt_secret, t.user_id, t.subscription_id, t.email)
                    for name, t in corpus.tenants.items()
                }
                for case in corpus.cases:
                    token = tokens[case.tenant]
                    if case.is_write:  # a write waits for what came before, and runs alone
                        summary.results.extend(await asyncio.gather(*pending))
                        pending = []
                        summary.results.append(await bounded(case, corpus, token))
                    else:
                        pending.append(asyncio.create_task(bounded(case, corpus, token)))
            summary.results.extend(await asyncio.gather(*pending))
        except BaseException:
            # A side that cannot be reached ends the replay: nothing is left running.
            for task in pending:
                task.cancel()
            await asyncio.gather(*pending, return_exceptions=True)
            raise
    return summary
