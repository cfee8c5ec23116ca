"""``shadow_rules.yaml``: per-entity comparison rules, validated once into immutable values.

Rule kinds (each names places with a path pattern, see :mod:`shadow_compare.paths`):

- ``ignore``: places never compared (a reason is required: nothing is ignored silently);
- ``sets``: lists compared as sets, items matched by a ``key`` field (or by value);
- ``numbers``: numeric tolerances (``absolute`` and/or ``relative``);
- ``datetimes``: datetime tolerances in seconds (the format must still match);
- ``expected``: expected divergences, differences the new side produces on purpose. They
  are reported as such and counted apart, never hidden, and each carries a ``reason``.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from shadow_compare.endpoints import ENTITIES
from shadow_compare.errors import RulesError
from shadow_compare.model import Cause
from shadow_compare.paths import PathMatcher, PatternError, compile_pattern

__all__ = [
    "DEFAULT_HEADERS",
    "DatetimeTolerance",
    "EntityRules",
    "ExpectedDivergence",
    "IgnoreRule",
    "NumberTolerance",
    "RuleSet",
    "RulesFile",
    "SetRule",
    "load_rules",
    "parse_rules",
]

DEFAULT_HEADERS = ("content-type",)
DEFAULT_MAX_NODES = 500_000
DEFAULT_MAX_BYTES = 16 * 1024 * 1024  # a workspace document can weigh several MB
DEFAULT_MAX_DIFFERENCES = 100
_ENDPOINT = re.compile(r"^(GET|POST|PUT|PATCH|DELETE) /\S*$")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def _check_pattern(value: str) -> str:
    try:
        compile_pattern(value)
    except PatternError as exc:
        raise ValueError(str(exc)) from None
    return value


class IgnoreRule(_Strict):
    path: str
    reason: str = Field(min_length=3)

    _path = field_validator("path")(_check_pattern)


class SetRule(_Strict):
    path: str
    key: str | None = None  # None: items are scalars compared as a multiset

    _path = field_validator("path")(_check_pattern)


class NumberTolerance(_Strict):
    path: str
    absolute: float = Field(default=0.0, ge=0)
    relative: float = Field(default=0.0, ge=0)

    _path = field_validator("path")(_check_pattern)

    @model_validator(mode="after")
    def _some_tolerance(self) -> NumberTolerance:
        if self.absolute == 0 and self.relative == 0:
            raise ValueError("give 'absolute' or 'relative' greater than 0")
        return self

    def accepts(self, legacy: float, new: float) -> bool:
        gap = abs(legacy - new)
        return gap <= self.absolute or gap <= self.relative * max(abs(legacy), abs(new))


class DatetimeTolerance(_Strict):
    path: str
    seconds: float = Field(gt=0)

    _path = field_validator("path")(_check_pattern)


class ExpectedDivergence(_Strict):
    """A difference the new side makes on purpose; every condition given must hold."""

    id: str = Field(pattern=r"^[a-z0-9][a-z0-9_.-]*$")
    reason: str = Field(min_length=10)
    endpoints: tuple[str, ...] = ()  # empty: any endpoint of the entity
    path: str | None = None  # "@status" for the HTTP status; None: any place
    causes: tuple[Cause, ...] = ()
    legacy_status: int | None = None
    new_status: int | None = None
    legacy: Any = None  # when given, the legacy value must equal it
    new: Any = None
    request_has: tuple[str, ...] = ()  # fields the request body or query must carry
    # A condition proven for each exchange (shadow_compare.predicates.PREDICATES).
    when: str | None = None

    @field_validator("when")
    @classmethod
    def _when(cls, value: str | None) -> str | None:
        from shadow_compare.predicates import PREDICATES

        if value is not None and value not in PREDICATES:
            raise ValueError(f"unknown condition {value!r}; known: {', '.join(sorted(PREDICATES))}")
        return value

    @field_validator("endpoints")
    @classmethod
    def _endpoints(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        for endpoint in value:
            if not _ENDPOINT.match(endpoint):
                raise ValueError(f"{endpoint!r} is not 'METHOD /path'")
        return value

    @field_validator("path")
    @classmethod
    def _path(cls, value: str | None) -> str | None:
        return value if value is None or value.startswith("@") else _check_pattern(value)

    @property
    def value_conditions(self) -> tuple[bool, bool]:
        """Whether ``legacy`` / ``new`` were given (``null`` is a value one may expect)."""
        return ("legacy" in self.model_fields_set, "new" in self.model_fields_set)


class EntityRules(_Strict):
    ignore: tuple[IgnoreRule, ...] = ()
    sets: tuple[SetRule, ...] = ()
    numbers: tuple[NumberTolerance, ...] = ()
    datetimes: tuple[DatetimeTolerance, ...] = ()
    expected: tuple[ExpectedDivergence, ...] = ()

    @field_validator("expected")
    @classmethod
    def _unique_ids(cls, value: tuple[ExpectedDivergence, ...]) -> tuple[ExpectedDivergence, ...]:
        seen: set[str] = set()
        for item in value:
            if item.id in seen:
                raise ValueError(f"expected divergence id {item.id!r} appears twice")
            seen.add(item.id)
        return value

    def merged(self, other: EntityRules) -> EntityRules:
        return EntityRules(
            ignore=self.ignore + other.ignore,
            sets=self.sets + other.sets,
            numbers=self.numbers + other.numbers,
            datetimes=self.datetimes + other.datetimes,
            expected=self.expected + other.expected,
        )


class Defaults(EntityRules):
    headers: tuple[str, ...] = DEFAULT_HEADERS
    max_nodes: int = Field(default=DEFAULT_MAX_NODES, gt=0)
    max_bytes: int = Field(default=DEFAULT_MAX_BYTES, gt=0)
    max_differences: int = Field(default=DEFAULT_MAX_DIFFERENCES, gt=0)

    @field_validator("headers")
    @classmethod
    def _lower(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        return tuple(h.lower() for h in value)


class RulesFile(_Strict):
    version: int = Field(default=1, ge=1, le=1)
    defaults: Defaults = Defaults()
    entities: dict[str, EntityRules] = {}

    @field_validator("entities")
    @classmethod
    def _known(cls, value: dict[str, EntityRules]) -> dict[str, EntityRules]:
        for name in value:
            if name not in ENTITIES:
                raise ValueError(f"unknown entity {name!r}; entities are {', '.join(ENTITIES)}")
        return value


@dataclass(frozen=True)
class CompiledRules:
    """One entity's rules (defaults included) with their patterns compiled into one matcher."""

    entity: str
    rules: EntityRules
    headers: tuple[str, ...]
    max_nodes: int
    max_bytes: int
    max_differences: int

    @cached_property
    def _indexed(self) -> tuple[PathMatcher, tuple[tuple[str, Any], ...]]:
        refs: list[tuple[str, Any]] = []
        patterns: list[str] = []
        for kind in ("ignore", "sets", "numbers", "datetimes"):
            for rule in getattr(self.rules, kind):
                refs.append((kind, rule))
                patterns.append(rule.path)
        for rule in self.rules.expected:
            if rule.path is not None and not rule.path.startswith("@"):
                refs.append(("expected", rule))
                patterns.append(rule.path)
        return PathMatcher(patterns), tuple(refs)

    @property
    def matcher(self) -> PathMatcher:
        return self._indexed[0]

    @property
    def refs(self) -> tuple[tuple[str, Any], ...]:
        return self._indexed[1]


class RuleSet:
    """Every entity's compiled rules; an entity without a section gets the defaults."""

    def __init__(self, parsed: RulesFile, source: str = "<built-in defaults>") -> None:
        self.source = source
        self.parsed = parsed
        self._compiled: dict[str, CompiledRules] = {}

    @property
    def entities(self) -> tuple[str, ...]:
        return tuple(self.parsed.entities)

    def for_entity(self, entity: str) -> CompiledRules:
        compiled = self._compiled.get(entity)
        if compiled is None:
            defaults = self.parsed.defaults
            own = self.parsed.entities.get(entity, EntityRules())
            base = EntityRules(
                ignore=defaults.ignore,
                sets=defaults.sets,
                numbers=defaults.numbers,
                datetimes=defaults.datetimes,
                expected=defaults.expected,
            )
            compiled = CompiledRules(
                entity=entity,
                rules=base.merged(own),
                headers=defaults.headers,
                max_nodes=defaults.max_nodes,
                max_bytes=defaults.max_bytes,
                max_differences=defaults.max_differences,
            )
            self._compiled[entity] = compiled
        return compiled

    def expected_ids(self, entity: str) -> dict[str, str]:
        """Expected divergence id -> reason, for an entity."""
        return {e.id: e.reason for e in self.for_entity(entity).rules.expected}

    @classmethod
    def empty(cls) -> RuleSet:
        return cls(RulesFile())


def parse_rules(data: Mapping[str, Any] | None, source: str = "<memory>") -> RuleSet:
    try:
        parsed = RulesFile.model_validate(data or {})
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(part) for part in first["loc"]) or "(top level)"
        raise RulesError(
            source,
            f"{where}: {first['msg']}"
            + (f" ({exc.error_count()} problems)" if exc.error_count() > 1 else ""),
            "fix that entry (see docs/shadow_compare.md, 'Rules')",
        ) from exc
    return RuleSet(parsed, source)


def load_rules(path: Path) -> RuleSet:
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise RulesError(path, f"cannot be read ({exc.strerror})", "check the path given") from exc
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise RulesError(path, f"is not valid YAML ({exc})", "fix the YAML syntax") from exc
    if data is not None and not isinstance(data, dict):
        raise RulesError(path, "is not a mapping", "start it with 'version: 1' and 'entities:'")
    return parse_rules(data, str(path))
