"""A journey's answers, normalized so that two journeys through the legacy contract compare
(pure: data in, data out; the journey itself is :mod:`strangler.contract_journey`).

Two deployments keep the same contract when the same calls, made by a fresh tenant, get the
same answers up to what no client can hold constant between two runs:

- ids: named by kind and order of first appearance (``<cn 1>``, ``<wf 1>``), so that an
  id the journey was given and then named again is still the same name;
- datetimes (``YYYY-MM-DD HH:MM:SS``): their shape only;
- the journey's own tenant, caller and the tag in its names: ``<tenant>``, ``<caller>``,
  ``<tag>``;
- what a run makes of its random id (LEGACY.md: rows processed, its duration): a number.

Everything else is compared exactly: status codes, envelopes, messages, field names, types,
nulls, totals, order, but for what the new side changes on purpose (``shadow_rules.yaml``
says why, rule by rule): a workflow's ``version`` moves on every ``updateWorkflow`` there
(``update-bumps-version``), so from a first update on a version may be above legacy's,
never below it. :func:`differences` lists where two transcripts part.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

__all__ = ["Answer", "Normalizer", "Transcript", "differences"]

_ID = re.compile(r"\b(ws|fd|jb|wf|cn|run|grp|role|usr|sub)_[0-9a-f]{12}\b")
_DATETIME = re.compile(r"^\d{4}-\d{2}-\d{2} \d{2}:\d{2}:\d{2}$")
_ROWS_PROCESSED = re.compile(r"\b\d+ rows processed\b")
# Fields a run derives from its random id or from how long its steps took.
_RUN_NUMBERS = frozenset({"rows_processed", "duration_ms"})


class Normalizer:
    """Names what varies between runs; one per journey (ids keep their names across it)."""

    def __init__(self, tenant: str, caller: str, tag: str) -> None:
        self._fixed = {tenant: "<tenant>", caller: "<caller>"}
        self._tag = tag
        self._names: dict[str, str] = {}
        self._counts: dict[str, int] = {}

    def _id(self, match: re.Match[str]) -> str:
        value = match.group(0)
        if value in self._fixed:
            return self._fixed[value]
        name = self._names.get(value)
        if name is None:
            kind = match.group(1)
            self._counts[kind] = self._counts.get(kind, 0) + 1
            name = self._names[value] = f"<{kind} {self._counts[kind]}>"
        return name

    def text(self, value: str) -> str:
        if _DATETIME.match(value):
            return "<datetime>"
        value = _ID.sub(self._id, value)
        value = _ROWS_PROCESSED.sub("<n> rows processed", value)
        return value.replace(self._tag, "<tag>") if self._tag else value

    def value(self, value: Any, key: str = "") -> Any:
        if isinstance(value, dict):
            return {k: self.value(v, k) for k, v in value.items()}
        if isinstance(value, list):
            return [self.value(item) for item in value]
        if isinstance(value, str):
            return self.text(value)
        if key in _RUN_NUMBERS and isinstance(value, int) and not isinstance(value, bool):
            return "<number>"
        return value

    def name_of(self, raw_id: str) -> str:
        """The name ``raw_id`` has in this journey's transcript."""
        return _ID.sub(self._id, raw_id)


@dataclass(frozen=True)
class Answer:
    """One call of the journey: what was asked (normalized) and what came back."""

    step: str  # e.g. "POST /connectors/addConnector (a duplicate name)"
    status: int
    body: Any


@dataclass
class Transcript:
    answers: list[Answer] = field(default_factory=list)
    # How the deployment served the journey, not compared: 503 + Retry-After met and
    # waited out (a fenced switch, a causal wait past its bound), seconds waited for
    # what another side carries (activity, a run's end).
    retried: int = 0
    waited: dict[str, float] = field(default_factory=dict)

    def add(self, step: str, status: int, body: Any) -> None:
        self.answers.append(Answer(step, status, body))

    def text(self) -> str:
        """One line per answer, for a person reading a failure."""
        return "\n".join(
            f"{a.step} -> {a.status} {json.dumps(a.body, sort_keys=True)}" for a in self.answers
        )


_VERSION_FIELDS = (".version", ".version_number")


def _expected_difference(path: str, expected: Any, got: Any) -> bool:
    """update-bumps-version: a whole number at least legacy's."""
    return (
        path.endswith(_VERSION_FIELDS)
        and type(expected) is int
        and type(got) is int
        and got >= expected
    )


def _paths(expected: Any, got: Any, path: str) -> Iterator[str]:
    if isinstance(expected, dict) and isinstance(got, dict):
        for key in sorted(expected.keys() | got.keys()):
            where = f"{path}.{key}"
            if key not in got:
                yield f"{where}: missing (expected {json.dumps(expected[key])[:120]})"
            elif key not in expected:
                yield f"{where}: not expected (got {json.dumps(got[key])[:120]})"
            else:
                yield from _paths(expected[key], got[key], where)
    elif isinstance(expected, list) and isinstance(got, list):
        if len(expected) != len(got):
            yield f"{path}: {len(got)} items, expected {len(expected)}"
        for index, (left, right) in enumerate(zip(expected, got, strict=False)):
            yield from _paths(left, right, f"{path}[{index}]")
    elif (expected != got or type(expected) is not type(got)) and not _expected_difference(
        path, expected, got
    ):
        yield f"{path}: {json.dumps(got)[:120]}, expected {json.dumps(expected)[:120]}"


def differences(expected: Transcript, got: Transcript, limit: int = 20) -> list[str]:
    """Where ``got`` breaks the contract ``expected`` shows, at most ``limit`` lines."""
    found: list[str] = []
    for index in range(max(len(expected.answers), len(got.answers))):
        if index >= len(got.answers):
            found.append(f"#{index} {expected.answers[index].step}: never asked (journey ended)")
            break
        if index >= len(expected.answers):
            found.append(f"#{index} {got.answers[index].step}: not in the expected journey")
            break
        want, have = expected.answers[index], got.answers[index]
        if want.step != have.step:
            found.append(f"#{index}: asked {have.step!r}, expected {want.step!r}")
            break
        if want.status != have.status:
            found.append(
                f"#{index} {have.step}: HTTP {have.status}, expected {want.status} "
                f"(got {json.dumps(have.body)[:200]})"
            )
            continue
        found += [f"#{index} {have.step}: body{p}" for p in _paths(want.body, have.body, "")]
    return found[:limit]
