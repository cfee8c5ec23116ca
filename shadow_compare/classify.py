"""Classifying differences: declared expected divergences, and timing noise or sync lag.

Two questions, both answered with evidence and never by silence:

- Is this difference one the new side makes on purpose? Only a rule in
  ``shadow_rules.yaml`` says so (with its reason); the difference stays in the result,
  marked ``expected``.
- Is it noise or lag? Only a re-read says so. A read is asked again a moment later;
  a place where a side answered the same read differently is ``noise``; a place where
  the new side now agrees with legacy is ``lag`` (it had not applied a legacy write yet).
  Anything else stays a regression.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import replace
from datetime import datetime
from typing import Any

from shadow_compare.model import CompareResult, Difference, Verdict
from shadow_compare.predicates import PREDICATES, Exchange, ListEvidence
from shadow_compare.rules import ExpectedDivergence
from strangler.exchange import RecordedRequest, RecordedResponse

__all__ = ["ExpectedMatcher", "classify_rereads", "related_paths"]


def _request_values(request: RecordedRequest | None) -> dict[str, Any]:
    """The request's query fields, then its JSON body's (which win)."""
    if request is None:
        return {}
    values: dict[str, Any] = dict(request.query)
    if request.body:
        try:
            body = json.loads(request.body)
        except ValueError:
            body = None
        if isinstance(body, dict):
            values.update((str(key), value) for key, value in body.items())
    return values


def _json_body(response: RecordedResponse | None) -> Any:
    if response is None:
        return None
    try:
        return json.loads(response.body)
    except ValueError:
        return None


def _same_json(left: Any, right: Any) -> bool:
    return json.dumps(left, sort_keys=True) == json.dumps(right, sort_keys=True)


class ExpectedMatcher:
    """The expected divergences that can apply to one exchange, checked per difference."""

    def __init__(
        self,
        rules: Sequence[ExpectedDivergence],
        endpoint: str,
        request: RecordedRequest | None,
        legacy: RecordedResponse,
        new: RecordedResponse,
        windows: Sequence[tuple[datetime, datetime]] = (),
    ) -> None:
        legacy_status, new_status = legacy.status, new.status
        self._request, self._legacy, self._new = request, legacy, new
        self._windows = tuple(windows)
        self._exchange: Exchange | None = None
        # The request's fields, parsed at most once: here when a rule asks, else by exchange().
        self._fields = _request_values(request) if any(r.request_has for r in rules) else None
        fields = self._fields or {}
        self._candidates = tuple(
            rule
            for rule in rules
            if (not rule.endpoints or endpoint in rule.endpoints)
            and (rule.legacy_status is None or rule.legacy_status == legacy_status)
            and (rule.new_status is None or rule.new_status == new_status)
            and all(name in fields for name in rule.request_has)
        )

    def exchange(self) -> Exchange:
        """The request and both bodies, parsed once and only for a condition that asks."""
        if self._exchange is None:
            self._exchange = Exchange(
                self._fields if self._fields is not None else _request_values(self._request),
                _json_body(self._legacy),
                _json_body(self._new),
                method=self._request.method if self._request is not None else None,
                windows=self._windows,
            )
        return self._exchange

    def classify(
        self, difference: Difference, scoped: Sequence[Any], evidence: ListEvidence | None = None
    ) -> Difference:
        """``scoped``: the path-scoped expected rules whose pattern matches this place;
        ``evidence``: both whole lists, for a rule whose condition needs them."""
        refused: list[str] = []
        for rule in self._candidates:
            if rule.path is None:
                pass
            elif rule.path.startswith("@"):
                if rule.path != difference.path:
                    continue
            elif rule not in scoped:
                continue
            if rule.causes and difference.cause not in rule.causes:
                continue
            legacy_given, new_given = rule.value_conditions
            if legacy_given and not _same_json(rule.legacy, difference.legacy):
                continue
            if new_given and not _same_json(rule.new, difference.new):
                continue
            if rule.when is not None:
                why = PREDICATES[rule.when](difference, evidence, self.exchange())
                if why is not None:  # the place matches, the condition does not: a regression
                    refused.append(f"not {rule.id} ({rule.when}): {why}")
                    continue
            return difference.with_verdict(Verdict.EXPECTED, rule.id, rule.reason)
        if refused:
            detail = "; ".join(filter(None, [difference.detail, *refused]))
            return replace(difference, detail=detail)
        return difference


def related_paths(path: str, other: str) -> bool:
    """The same place, or one inside the other (``$.data`` and ``$.data[0].name``)."""
    if path == other:
        return True
    short, long = (path, other) if len(path) < len(other) else (other, path)
    return long.startswith(short) and long[len(short)] in ".["


def _changed(paths: set[str], path: str) -> bool:
    return any(related_paths(path, other) for other in paths)


Compare = Callable[[RecordedResponse, RecordedResponse], CompareResult]


def classify_rereads(
    first: CompareResult,
    *,
    legacy_first: RecordedResponse,
    new_first: RecordedResponse,
    legacy_again: RecordedResponse | None,
    new_again: RecordedResponse | None,
    compare: Compare,
    waited: float,
) -> CompareResult:
    """Reclassify ``first``'s regressions from a re-read of the same request.

    A side that cannot be asked again (the one that served the client, when the proxy
    gives no way to repeat it) is None: its stability is then unknown, and lag is only
    concluded when the new side was the one read again. ``compare`` compares two
    responses under the entity's rules.
    """
    if legacy_again is None and new_again is None:
        return first
    new_moved: set[str] = set()
    legacy_moved: set[str] = set()
    if new_again is not None:
        new_moved = {d.path for d in compare(new_first, new_again).differences}
    if legacy_again is not None:
        legacy_moved = {d.path for d in compare(legacy_first, legacy_again).differences}
    fresh = compare(
        legacy_again if legacy_again is not None else legacy_first,
        new_again if new_again is not None else new_first,
    )
    still_differs = {d.path for d in fresh.regressions()}
    if fresh.truncated:
        return first  # the re-read could not be compared whole: nothing is reclassified
    reclassified = []
    for difference in first.differences:
        if difference.verdict is not Verdict.REGRESSION:
            reclassified.append(difference)
            continue
        path = difference.path
        if (
            _changed(new_moved, path)
            and not _changed(legacy_moved, path)
            and not _changed(still_differs, path)
        ):
            reclassified.append(
                difference.with_verdict(
                    Verdict.LAG,
                    reason=f"new matched legacy when read again {waited:.2f} s later",
                )
            )
        elif _changed(legacy_moved, path) or _changed(new_moved, path):
            side = "legacy" if _changed(legacy_moved, path) else "new"
            reclassified.append(
                difference.with_verdict(
                    Verdict.NOISE,
                    reason=f"{side} answered the same read differently {waited:.2f} s later",
                )
            )
        else:
            reclassified.append(difference)
    return first.with_differences(tuple(reclassified))
