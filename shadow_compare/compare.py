"""The comparator: a legacy response and a new response in, a structured result out.

Pure and synchronous: no I/O, no clock. The caller orients the pair (legacy, new)
whichever side served the client, so rules and reports always speak of "legacy" and
"new". Cost is bounded by the rules' ``max_bytes`` (per body), ``max_nodes`` (JSON
nodes walked) and ``max_differences``: past a bound the result is ``truncated``,
which is never reported as equal.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from shadow_compare.classify import ExpectedMatcher
from shadow_compare.model import Cause, CompareResult, Difference
from shadow_compare.paths import KeyedItem, Segment, State, render
from shadow_compare.predicates import ListEvidence
from shadow_compare.rules import CompiledRules, DatetimeTolerance, NumberTolerance, SetRule
from shadow_compare.values import (
    as_datetimes,
    datetime_shape,
    identity_key,
    json_type,
    multiset_minus,
    preview,
    rounding_of,
    same_scalar,
    same_tree,
    unique_keys,
)
from strangler.exchange import RecordedRequest, RecordedResponse

__all__ = ["compare_responses"]

STATUS_PATH = "@status"
_ZONE_STEP_SECONDS = 15 * 60
_MAX_ZONE_SHIFT_SECONDS = 14 * 3600


class _Stop(Exception):
    """A cost bound was reached: the walk ends and the result is truncated."""


def _message(response: RecordedResponse) -> str:
    if len(response.body) > 4096:
        return ""
    try:
        body = json.loads(response.body)
    except ValueError:
        return ""
    message = body.get("message") if isinstance(body, dict) else None
    return message if isinstance(message, str) else ""


class _Walk:
    def __init__(self, rules: CompiledRules, expected: ExpectedMatcher) -> None:
        self.rules = rules
        self.matcher = rules.matcher
        self.refs = rules.refs
        self.expected = expected
        self.nodes = 0
        self.differences: list[Difference] = []
        self.path: list[Segment] = []
        self.list_evidence: ListEvidence | None = None  # the list of unequal length walked

    # --- recording --------------------------------------------------------------------

    def add(
        self,
        cause: Cause,
        legacy: Any,
        new: Any,
        detail: str,
        states: State,
        path: str | None = None,
        evidence: ListEvidence | None = None,
    ) -> None:
        where = path if path is not None else render(self.path)
        scoped = [rule for kind, rule in self._rules_here(states) if kind == "expected"]
        difference = Difference(where, cause, preview(legacy), preview(new), detail)
        given = evidence if evidence is not None else self.list_evidence
        self.differences.append(self.expected.classify(difference, scoped, given))
        if len(self.differences) >= self.rules.max_differences:
            raise _Stop(f"stopped at {self.rules.max_differences} differences (max_differences)")

    def _rules_here(self, states: State) -> list[tuple[str, Any]]:
        if not states:
            return []
        return [self.refs[i] for i in self.matcher.accepting(states)]

    # --- walking ----------------------------------------------------------------------

    def tick(self) -> None:
        self.nodes += 1
        if self.nodes > self.rules.max_nodes:
            raise _Stop(f"stopped after {self.rules.max_nodes} JSON nodes (max_nodes)")

    def node(self, legacy: Any, new: Any, states: State) -> None:
        self.tick()
        here = self._rules_here(states)
        if any(kind == "ignore" for kind, _ in here):
            return
        kind_legacy, kind_new = type(legacy), type(new)
        if kind_legacy is dict and kind_new is dict:
            self.mapping(legacy, new, states)
        elif kind_legacy is list and kind_new is list:
            sets = [rule for kind, rule in here if kind == "sets"]
            self.sequence(legacy, new, states, sets[0] if sets else None)
        elif kind_legacy is kind_new and legacy == new:
            return
        else:
            self.scalar(legacy, new, states, here)

    def mapping(self, legacy: dict[str, Any], new: dict[str, Any], states: State) -> None:
        for key, value in legacy.items():
            if key in new and same_scalar(value, new[key]):
                # Most nodes are equal leaves: no rule can turn equality into a difference,
                # so they are counted and skipped without a call (the hot path).
                self.nodes += 1
                continue
            child = self.matcher.step(states, key)
            self.path.append(key)
            if key in new:
                self.node(value, new[key], child)
            elif not self._ignored(child):
                self.nodes += 1
                if value is None:
                    self.add(
                        Cause.NULL_VS_MISSING, None, "<missing>", "new omits a null field", child
                    )
                else:
                    self.add(Cause.MISSING_FIELD, value, "<missing>", "field absent on new", child)
            self.path.pop()
        if self.nodes > self.rules.max_nodes:
            raise _Stop(f"stopped after {self.rules.max_nodes} JSON nodes (max_nodes)")
        for key, value in new.items():
            if key in legacy:
                continue
            child = self.matcher.step(states, key)
            self.path.append(key)
            if not self._ignored(child):
                self.nodes += 1
                if value is None:
                    self.add(
                        Cause.NULL_VS_MISSING, "<missing>", None, "legacy omits a null field", child
                    )
                else:
                    self.add(Cause.EXTRA_FIELD, "<missing>", value, "field only on new", child)
            self.path.pop()

    def _ignored(self, states: State) -> bool:
        return any(kind == "ignore" for kind, _ in self._rules_here(states))

    # --- lists ------------------------------------------------------------------------

    def sequence(
        self, legacy: list[Any], new: list[Any], states: State, as_set: SetRule | None
    ) -> None:
        item_states = self.matcher.step(states, 0)
        if as_set is not None and as_set.key is None:
            self.multiset(legacy, new, states, ordered=False)
            return
        key = as_set.key if as_set is not None else identity_key(legacy, new)
        if key is not None and unique_keys(legacy, key) and unique_keys(new, key):
            self.keyed(legacy, new, states, item_states, key, ordered=as_set is None)
            return
        if len(legacy) == len(new) and self.multiset(legacy, new, states, ordered=True):
            return
        outer = self.list_evidence
        # Both whole lists of unequal length, for a condition that judges a removal (and
        # the items it moved); an equal-length list inside gives none.
        self.list_evidence = ListEvidence(legacy, new, None) if len(legacy) != len(new) else None
        if len(legacy) != len(new):
            self.add(
                Cause.LIST_LENGTH,
                len(legacy),
                len(new),
                f"{len(legacy)} items on legacy, {len(new)} on new",
                states,
            )
        try:
            for index, (left, right) in enumerate(zip(legacy, new, strict=False)):
                if same_scalar(left, right) or same_tree(left, right):
                    self.tick()
                    continue
                self.path.append(index)
                self.node(left, right, item_states)
                self.path.pop()
        finally:
            self.list_evidence = outer

    def multiset(self, legacy: list[Any], new: list[Any], states: State, ordered: bool) -> bool:
        """Compare as multisets of canonical JSON. True when that settled the comparison."""
        self.nodes += len(legacy) + len(new)
        if self.nodes > self.rules.max_nodes:
            raise _Stop(f"stopped after {self.rules.max_nodes} JSON nodes (max_nodes)")
        # Canonical JSON tells true from 1 and 1 from 1.0, which Python's == does not.
        left_items = [json.dumps(item, sort_keys=True) for item in legacy]
        right_items = [json.dumps(item, sort_keys=True) for item in new]
        if left_items == right_items:
            return True
        left, right = sorted(left_items), sorted(right_items)
        if left == right:
            if ordered:
                self.add(Cause.LIST_ORDER, None, None, "the same items in another order", states,
                         evidence=ListEvidence(legacy, new, None))  # fmt: skip
            return True
        if ordered:
            return False  # not a permutation: compared item by item instead
        only_legacy = multiset_minus(left, right)
        only_new = multiset_minus(right, left)
        cause = Cause.LIST_LENGTH if len(legacy) != len(new) else Cause.VALUE
        self.add(
            cause,
            [json.loads(i) for i in only_legacy[:5]],
            [json.loads(i) for i in only_new[:5]],
            f"{len(only_legacy)} items only on legacy, {len(only_new)} only on new (as a set)",
            states,
        )
        return True

    def keyed(
        self,
        legacy: list[Any],
        new: list[Any],
        states: State,
        item_states: State,
        key: str,
        ordered: bool,
    ) -> None:
        legacy_ids = [str(item[key]) for item in legacy]
        new_ids = [str(item[key]) for item in new]
        by_new = dict(zip(new_ids, new, strict=True))
        common = set(legacy_ids) & set(new_ids)
        only_legacy = [i for i in legacy_ids if i not in common]
        only_new = [i for i in new_ids if i not in common]
        if len(legacy) != len(new):
            self.add(
                Cause.LIST_LENGTH,
                len(legacy),
                len(new),
                f"{key} only on legacy: {only_legacy[:5]}; only on new: {only_new[:5]}",
                states,
            )
        else:
            for ident in only_legacy:
                self.path.append(KeyedItem(key, ident))
                self.add(Cause.MISSING_FIELD, ident, "<missing>", "item absent on new", item_states)
                self.path.pop()
            for ident in only_new:
                self.path.append(KeyedItem(key, ident))
                self.add(Cause.EXTRA_FIELD, "<missing>", ident, "item only on new", item_states)
                self.path.pop()
        if ordered:
            legacy_order = [i for i in legacy_ids if i in common]
            new_order = [i for i in new_ids if i in common]
            if legacy_order != new_order:
                first = next(
                    n
                    for n, (a, b) in enumerate(zip(legacy_order, new_order, strict=True))
                    if a != b
                )
                self.add(
                    Cause.LIST_ORDER,
                    legacy_order[first : first + 3],
                    new_order[first : first + 3],
                    f"items ordered differently (by {key}) from position {first}",
                    states,
                    evidence=ListEvidence(legacy, new, key),
                )
        for ident, item in zip(legacy_ids, legacy, strict=True):
            if ident in common:
                if same_tree(item, by_new[ident]):
                    self.tick()
                    continue
                self.path.append(KeyedItem(key, ident))
                self.node(item, by_new[ident], item_states)
                self.path.pop()

    # --- scalars ----------------------------------------------------------------------

    def scalar(self, legacy: Any, new: Any, states: State, here: Sequence[tuple[str, Any]]) -> None:
        type_legacy, type_new = json_type(legacy), json_type(new)
        if type_legacy != type_new:
            self.add(Cause.TYPE, legacy, new, f"{type_legacy} on legacy, {type_new} on new", states)
        elif type_legacy == "number":
            self.number(legacy, new, states, [r for k, r in here if k == "numbers"])
        elif type_legacy == "string":
            self.string(legacy, new, states, [r for k, r in here if k == "datetimes"])
        else:
            self.add(Cause.VALUE, legacy, new, "", states)

    def number(
        self, legacy: float, new: float, states: State, tolerances: Sequence[NumberTolerance]
    ) -> None:
        if legacy == new:  # 1 vs 1.0: the same number written differently
            self.add(Cause.NUMBER_PRECISION, legacy, new, "integer vs decimal form", states)
        elif any(t.accepts(legacy, new) for t in tolerances):
            return
        elif rounding_of(legacy, new):
            self.add(Cause.NUMBER_PRECISION, legacy, new, "differs by rounding", states)
        else:
            self.add(Cause.VALUE, legacy, new, "", states)

    def string(
        self, legacy: str, new: str, states: State, tolerances: Sequence[DatetimeTolerance]
    ) -> None:
        moments = as_datetimes(legacy, new)
        if moments is None:
            self.add(Cause.VALUE, legacy, new, "", states)
            return
        gap = abs((moments[0] - moments[1]).total_seconds())
        same_shape = datetime_shape(legacy) == datetime_shape(new)
        if gap == 0:
            self.add(
                Cause.DATETIME_FORMAT, legacy, new, "the same instant written differently", states
            )
        elif any(gap <= t.seconds for t in tolerances):
            if not same_shape:
                self.add(
                    Cause.DATETIME_FORMAT, legacy, new, "within tolerance, another format", states
                )
        elif gap % _ZONE_STEP_SECONDS == 0 and gap <= _MAX_ZONE_SHIFT_SECONDS:
            shift = (moments[1] - moments[0]).total_seconds()
            sign = "+" if shift > 0 else "-"
            hours, minutes = divmod(int(abs(shift)) // 60, 60)
            self.add(
                Cause.DATETIME_FORMAT,
                legacy,
                new,
                f"new is {sign}{hours:02d}:{minutes:02d} from legacy: a time zone shift?",
                states,
            )
        else:
            self.add(Cause.VALUE, legacy, new, f"instants {gap:g} s apart", states)


def _header_value(response: RecordedResponse, name: str) -> str | None:
    value = response.header(name)
    if value is None:
        return None
    if name == "content-type":  # compare the media type; charset spelling is not a difference
        return value.split(";", 1)[0].strip().lower()
    return value.strip()


def compare_responses(
    legacy: RecordedResponse,
    new: RecordedResponse,
    rules: CompiledRules,
    *,
    endpoint: str,
    request: RecordedRequest | None = None,
    windows: Sequence[tuple[datetime, datetime]] = (),
) -> CompareResult:
    """Compare one exchange's legacy and new responses under an entity's rules.

    ``windows``: when each write a replay sent to both sides that this exchange may show
    the stamps of was sent and answered (UTC), for a condition that judges those stamps."""
    expected = ExpectedMatcher(rules.rules.expected, endpoint, request, legacy, new, windows)
    walk = _Walk(rules, expected)
    notes: list[str] = []
    truncated = False
    try:
        if legacy.status != new.status:
            # Bodies of different statuses are different shapes: the status says it all.
            detail = f"legacy: {_message(legacy)!r}; new: {_message(new)!r}"
            walk.add(Cause.STATUS, legacy.status, new.status, detail, frozenset(), STATUS_PATH)
        else:
            for name in rules.headers:
                left, right = _header_value(legacy, name), _header_value(new, name)
                if left != right:
                    cause = (
                        Cause.MISSING_FIELD
                        if right is None
                        else Cause.EXTRA_FIELD
                        if left is None
                        else Cause.VALUE
                    )
                    walk.add(cause, left, right, "header", frozenset(), f"@header.{name}")
            truncated = _compare_bodies(legacy.body, new.body, walk, notes)
    except _Stop as stop:
        truncated = True
        notes.append(str(stop))
    return CompareResult(
        legacy_status=legacy.status,
        new_status=new.status,
        differences=tuple(walk.differences),
        truncated=truncated,
        nodes=walk.nodes,
        notes=tuple(notes),
    )


def _compare_bodies(legacy: bytes, new: bytes, walk: _Walk, notes: list[str]) -> bool:
    """Walk the two bodies; True when a bound left part of them uncompared."""
    if legacy == new:
        return False
    limit = walk.rules.max_bytes
    if len(legacy) > limit or len(new) > limit:
        notes.append(f"a body exceeds max_bytes ({max(len(legacy), len(new))} > {limit})")
        return True
    try:
        left = json.loads(legacy) if legacy else None
        left_ok = True
    except ValueError:
        left, left_ok = None, False
    try:
        right = json.loads(new) if new else None
        right_ok = True
    except ValueError:
        right, right_ok = None, False
    if not (left_ok and right_ok):
        if left_ok != right_ok:
            which = "legacy" if not left_ok else "new"
            walk.add(
                Cause.TYPE,
                len(legacy),
                len(new),
                f"{which} body is not JSON",
                walk.matcher.start,
                "$",
            )
        else:
            walk.add(
                Cause.VALUE,
                len(legacy),
                len(new),
                "bodies (not JSON) differ",
                walk.matcher.start,
                "$",
            )
        return False
    if same_tree(left, right):  # the same JSON serialised differently (key order, spaces)
        walk.nodes += 1
        return False
    walk.node(left, right, walk.matcher.start)
    return False
