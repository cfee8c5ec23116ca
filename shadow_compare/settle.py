"""Settling a comparison by reading again: the loop shared by the runner and replay.

A read whose differences may be noise or lag is asked again (both sides at once when
both can be asked), with a doubling delay, and reclassified each time until no
regression is left or the re-reads run out (see :mod:`shadow_compare.classify`).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable

from shadow_compare.classify import classify_rereads
from shadow_compare.compare import compare_responses
from shadow_compare.model import CompareResult
from shadow_compare.rules import RuleSet
from strangler.exchange import RecordedRequest, RecordedResponse

__all__ = ["Call", "Reclassify", "reclassify_pair", "settle_by_rereading"]

Call = Callable[[], Awaitable[RecordedResponse]]


def reclassify_pair(
    rules: RuleSet,
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
    compiled = rules.for_entity(entity)

    def compare(left: RecordedResponse, right: RecordedResponse) -> CompareResult:
        return compare_responses(left, right, compiled, endpoint=endpoint, request=request)

    return classify_rereads(
        first,
        legacy_first=legacy,
        new_first=new,
        legacy_again=legacy_again,
        new_again=new_again,
        compare=compare,
        waited=waited,
    )


Reclassify = Callable[
    [CompareResult, RecordedResponse | None, RecordedResponse | None, float],
    Awaitable[CompareResult],
]


async def settle_by_rereading(
    result: CompareResult,
    *,
    again_legacy: Call | None,
    again_new: Call | None,
    reclassify: Reclassify,
    rereads: int,
    delay_seconds: float,
) -> CompareResult:
    """Re-read (both sides at once, when both can be asked) until no regression is left
    or the re-reads run out, with a doubling delay; each re-read reclassifies."""
    started = time.monotonic()
    for attempt in range(rereads):
        if not result.regressions():
            break
        await asyncio.sleep(delay_seconds * (2**attempt))
        legacy_again, new_again = await asyncio.gather(_maybe(again_legacy), _maybe(again_new))
        if legacy_again is None and new_again is None:
            break
        result = await reclassify(result, legacy_again, new_again, time.monotonic() - started)
    return result


async def _maybe(call: Call | None) -> RecordedResponse | None:
    return None if call is None else await call()
