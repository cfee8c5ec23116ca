"""JSON paths: how a difference's place is written, and the patterns rules use to name places.

A concrete path is ``$.data[3].connection_detail.host`` (an item of a list compared by key
is written ``$.data[connector_id=cn_0123456789ab]``). A pattern is a small JSONPath subset:

    $.data.name          a key          $.data[*]       any list item
    $.data.*             any key        $..updated_at   that key at any depth below
    $["odd key"]         a key that is not a plain name

Patterns are compiled once into a tiny automaton whose transitions are memoised, so that
asking "which rules apply here" while walking a large body is a dictionary lookup per node.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from dataclasses import dataclass

__all__ = [
    "INDEX",
    "KeyedItem",
    "PathMatcher",
    "PatternError",
    "Segment",
    "compile_pattern",
    "generalize",
    "generalize_rendered",
    "render",
]


@dataclass(frozen=True)
class KeyedItem:
    """A list item found by the value of its key field rather than by its position."""

    field: str
    value: str


Segment = str | int | KeyedItem
# The one symbol every list position (index or keyed item) is matched as.
INDEX = object()

_PLAIN_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_\-]*$")
_TOKEN = re.compile(
    r"""(?P<descend>\.\.)(?=[A-Za-z_*\[])
      | \.(?P<name>[A-Za-z_][A-Za-z0-9_\-]*)
      | \.(?P<star>\*)
      | (?P<any_index>\[\*\])
      | \[(?P<quoted>"(?:[^"\\]|\\.)*")\]
    """,
    re.VERBOSE,
)
_TRAILING_NAME = re.compile(r"(?P<name>[A-Za-z_][A-Za-z0-9_\-]*|\*)")


class PatternError(ValueError):
    """A path pattern that is not in the supported subset."""


Token = tuple[str, str]  # ("key", name) | ("any_key", "") | ("any_index", "") | ("descend", "")


def compile_pattern(pattern: str) -> tuple[Token, ...]:
    if not pattern.startswith("$"):
        raise PatternError(f"{pattern!r} must start with '$'")
    tokens: list[Token] = []
    pos = 1
    while pos < len(pattern):
        match = _TOKEN.match(pattern, pos)
        if match is None:
            raise PatternError(
                f"{pattern!r}: cannot read from position {pos} ({pattern[pos:]!r}); "
                'use .name, .*, [*], ..name or ["key"]'
            )
        pos = match.end()
        if match.group("descend"):
            tokens.append(("descend", ""))
            # "..name" and "..*": the name follows the two dots directly.
            trailing = _TRAILING_NAME.match(pattern, pos)
            if trailing:
                name = trailing.group("name")
                tokens.append(("any_key", "") if name == "*" else ("key", name))
                pos = trailing.end()
        elif match.group("name"):
            tokens.append(("key", match.group("name")))
        elif match.group("star"):
            tokens.append(("any_key", ""))
        elif match.group("any_index"):
            tokens.append(("any_index", ""))
        else:
            tokens.append(("key", json.loads(match.group("quoted"))))
    return tuple(tokens)


def render(segments: Sequence[Segment], general: bool = False) -> str:
    parts = ["$"]
    for segment in segments:
        if general and not isinstance(segment, str):
            parts.append("[*]")
        elif isinstance(segment, int):
            parts.append(f"[{segment}]")
        elif isinstance(segment, KeyedItem):
            parts.append(f"[{segment.field}={segment.value}]")
        elif _PLAIN_NAME.match(segment):
            parts.append("." + segment)
        else:
            parts.append("[" + json.dumps(segment) + "]")
    return "".join(parts)


def generalize(segments: Sequence[Segment]) -> str:
    """The path with every list position written ``[*]``: the form counts are grouped by."""
    return render(segments, general=True)


_POSITION = re.compile(r"\[(?:\d+|[^\]\"=]+=[^\]]*)\]")


def generalize_rendered(path: str) -> str:
    """:func:`generalize` for a path already rendered (``$.data[3]`` -> ``$.data[*]``)."""
    return _POSITION.sub("[*]", path)


State = frozenset[tuple[int, int]]
_MEMO_LIMIT = 100_000


class PathMatcher:
    """Which of a fixed set of patterns match a path, walked one segment at a time."""

    def __init__(self, patterns: Sequence[str]) -> None:
        self._tokens = [compile_pattern(p) for p in patterns]
        self._steps: dict[tuple[State, object], State] = {}
        self._accepts: dict[State, tuple[int, ...]] = {}
        self.start: State = self._closure({(i, 0) for i in range(len(self._tokens))})

    def _closure(self, states: set[tuple[int, int]]) -> State:
        pending = list(states)
        closed = set(states)
        while pending:
            pattern, pos = pending.pop()
            tokens = self._tokens[pattern]
            if (
                pos < len(tokens)
                and tokens[pos][0] == "descend"
                and (pattern, pos + 1) not in closed
            ):
                closed.add((pattern, pos + 1))
                pending.append((pattern, pos + 1))
        return frozenset(closed)

    def step(self, states: State, segment: Segment) -> State:
        if not states:
            return states
        symbol: object = segment if isinstance(segment, str) else INDEX
        key = (states, symbol)
        cached = self._steps.get(key)
        if cached is not None:
            return cached
        following: set[tuple[int, int]] = set()
        for pattern, pos in states:
            tokens = self._tokens[pattern]
            if pos >= len(tokens):
                continue
            kind, name = tokens[pos]
            if kind == "descend":
                following.add((pattern, pos))
            elif kind == "any_index":
                if symbol is INDEX:
                    following.add((pattern, pos + 1))
            elif symbol is not INDEX and (kind == "any_key" or name == symbol):
                following.add((pattern, pos + 1))
        result = self._closure(following)
        if len(self._steps) > _MEMO_LIMIT:  # field names are few; user-chosen keys are not
            self._steps.clear()
        self._steps[key] = result
        return result

    def accepting(self, states: State) -> tuple[int, ...]:
        """Indexes (in the order given) of the patterns that match exactly here."""
        cached = self._accepts.get(states)
        if cached is None:
            cached = tuple(sorted(p for p, pos in states if pos == len(self._tokens[p])))
            if len(self._accepts) > _MEMO_LIMIT:
                self._accepts.clear()
            self._accepts[states] = cached
        return cached

    def match(self, segments: Sequence[Segment]) -> tuple[int, ...]:
        states = self.start
        for segment in segments:
            states = self.step(states, segment)
        return self.accepting(states)
