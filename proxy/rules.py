"""Reading and validating ``routing_rules.yaml``.

The file is validated in two passes, and every problem is reported with the file, the line
and the fix, all at once (an operator fixes the file in one go):

1. shape: pydantic models with unknown keys forbidden and strict types (a mode, a percent
   between 0 and 100, a sample rate between 0 and 1...);
2. meaning: each endpoint of LEGACY.md listed exactly once, under its entity, in the right
   class (read or write); a mode other than ``legacy`` only where the entity's new-side
   handlers are registered.

The result is a :class:`RulesFile` value; ``proxy.table`` compiles it into the lookup the
request path uses.
"""

from __future__ import annotations

import difflib
import hashlib
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from proxy.endpoints import ENTITIES, LEGACY_ENDPOINTS, is_websocket
from proxy.errors import RulesError, RulesProblem

__all__ = ["MODES", "EntityRules", "LoadedRules", "RulesFile", "load_rules", "parse_rules"]

Mode = Literal["legacy", "shadow", "canary", "new"]
MODES: tuple[str, ...] = ("legacy", "shadow", "canary", "new")
EntityName = Literal["connectors", "workspaces", "job_runs", "users", "groups", "roles", "activity"]
assert set(EntityName.__args__) == set(ENTITIES)  # type: ignore[attr-defined]


class EntityRules(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)

    mode: Mode
    # Share of reads whose other side is also called and compared (shadow, canary, new).
    sample_rate: float = Field(default=0.0, ge=0.0, le=1.0)
    # canary only: share of tenants (by stable hash) served by the new side.
    percent: float = Field(default=0.0, ge=0.0, le=100.0)
    # True while the entity's source of truth is being switched: its writes get 503.
    fenced: bool = False
    read: list[str] = Field(default_factory=list)
    write: list[str] = Field(default_factory=list)

    @field_validator("read", "write", mode="before")
    @classmethod
    def _empty_list(cls, value: Any) -> Any:
        return [] if value is None else value  # "read:" left empty means no endpoints

    @field_validator("percent")
    @classmethod
    def _two_decimals(cls, value: float) -> float:
        if abs(value * 100 - round(value * 100)) > 1e-9:
            raise ValueError("percent has at most two decimals (0.01 % steps)")
        return value


class RulesFile(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)

    version: Literal[1]
    # Seconds a fenced write is told to wait (Retry-After), bounded so clients retry soon.
    fence_retry_after: int = Field(default=2, ge=1, le=30)
    entities: dict[EntityName, EntityRules]

    def canonical_hash(self) -> str:
        """A hash of the meaning of the table (comments and layout do not change it)."""
        text = self.model_dump_json()
        return hashlib.sha256(text.encode()).hexdigest()[:16]


@dataclass(frozen=True)
class LoadedRules:
    rules: RulesFile
    path: str
    file_sha256: str


# --- line numbers ---------------------------------------------------------------------------


def _child(node: yaml.Node | None, key: Any) -> tuple[yaml.Node | None, yaml.Node | None]:
    """(key node, value node) of ``key`` in a mapping node, or an item of a sequence node."""
    if isinstance(node, yaml.MappingNode):
        for k, v in node.value:
            if k.value == key:
                return k, v
    if isinstance(node, yaml.SequenceNode) and isinstance(key, int) and key < len(node.value):
        item = node.value[key]
        return item, item
    return None, None


def _line_of(root: yaml.Node | None, loc: Iterable[Any]) -> int | None:
    node = root
    line = root.start_mark.line + 1 if root is not None else None
    for part in loc:
        if part == "[key]":
            break  # the key node itself is where the problem is; we are already on it
        key_node, value_node = _child(node, part)
        if key_node is None:
            break
        line = key_node.start_mark.line + 1
        node = value_node
        if part in ("[key]",):
            break
    return line


def _duplicate_keys(node: yaml.Node | None) -> list[RulesProblem]:
    """PyYAML keeps the last of two equal keys silently; an operator must hear about it."""
    problems: list[RulesProblem] = []
    if isinstance(node, yaml.MappingNode):
        seen: dict[str, int] = {}
        for k, v in node.value:
            line = k.start_mark.line + 1
            if k.value in seen:
                problems.append(
                    RulesProblem(
                        line,
                        f"key {k.value!r} appears twice (first on line {seen[k.value]})",
                        "keep one of them",
                    )
                )
            else:
                seen[k.value] = line
            problems.extend(_duplicate_keys(v))
    elif isinstance(node, yaml.SequenceNode):
        for item in node.value:
            problems.extend(_duplicate_keys(item))
    return problems


# --- pass 1: shape ---------------------------------------------------------------------------

_FIXES: dict[str, Callable[[tuple[Any, ...]], str]] = {
    "extra_forbidden": lambda loc: (
        "remove it or correct its spelling; allowed here: "
        + ", ".join(
            sorted(
                (EntityRules if len(loc) == 3 and loc[0] == "entities" else RulesFile).model_fields
            )
        )
    ),
    "literal_error": lambda loc: (
        f"use one of: {', '.join(MODES)}"
        if loc and loc[-1] == "mode"
        else f"use one of the entities: {', '.join(ENTITIES)}"
        if loc and loc[0] == "entities"
        else "use the value this version of the proxy supports"
    ),
    "missing": lambda loc: f"add '{loc[-1]}:'",
}


def _shape_problem(error: Any, root: yaml.Node | None) -> RulesProblem:
    loc = tuple(error["loc"])
    where = ".".join(str(p) for p in loc if p != "[key]") or "the file"
    kind = error["type"]
    if kind == "extra_forbidden":
        problem = (
            f"unknown key {loc[-1]!r} in {'.'.join(str(p) for p in loc[:-1]) or 'the top level'}"
        )
    elif kind == "literal_error" and len(loc) >= 2 and loc[0] == "entities" and loc[-1] == "[key]":
        problem = f"unknown entity {loc[1]!r}"
    elif kind == "literal_error" and loc[-1] == "mode":
        problem = f"{where}: unknown mode {error.get('input')!r}"
    else:
        problem = f"{where}: {error['msg']} (got {error.get('input')!r})"
    fix_of = _FIXES.get(kind)
    if fix_of is not None:
        fix = fix_of(loc)
    elif loc and loc[-1] == "percent":
        fix = "give the canary percent as a number from 0 to 100 (at most two decimals)"
    elif loc and loc[-1] == "sample_rate":
        fix = "give the sample rate as a number from 0.0 to 1.0"
    else:
        fix = "see the comments at the top of routing_rules.yaml and docs/proxy.md"
    return RulesProblem(_line_of(root, loc), problem, fix)


# --- pass 2: meaning --------------------------------------------------------------------------


def _endpoint_problems(rules: RulesFile, root: yaml.Node | None) -> list[RulesProblem]:
    problems: list[RulesProblem] = []
    claimed: dict[str, tuple[str, int | None]] = {}
    for entity, spec in rules.entities.items():
        for kind in ("read", "write"):
            for index, endpoint in enumerate(getattr(spec, kind)):
                line = _line_of(root, ("entities", entity, kind, index))
                known = LEGACY_ENDPOINTS.get(endpoint)
                if known is None:
                    close = difflib.get_close_matches(endpoint, LEGACY_ENDPOINTS, n=1)
                    hint = f" (did you mean {close[0]!r}?)" if close else ""
                    problems.append(
                        RulesProblem(
                            line,
                            f"{endpoint!r} is not an endpoint of the legacy API{hint}",
                            "write 'METHOD /path' exactly as LEGACY.md section 3 lists it",
                        )
                    )
                    continue
                if known != kind:
                    problems.append(
                        RulesProblem(
                            line,
                            f"{endpoint!r} is a {known} endpoint but is listed under {kind}",
                            f"move it to {entity}.{known}",
                        )
                    )
                if endpoint in claimed:
                    other, other_line = claimed[endpoint]
                    problems.append(
                        RulesProblem(
                            line,
                            f"{endpoint!r} is claimed twice (by {other} on line {other_line} "
                            f"and by {entity})",
                            "keep it under exactly one entity",
                        )
                    )
                else:
                    claimed[endpoint] = (entity, line)
    missing = [e for e in LEGACY_ENDPOINTS if e not in claimed]
    if missing:
        problems.append(
            RulesProblem(
                _line_of(root, ("entities",)),
                f"{len(missing)} legacy endpoint(s) assigned to no entity: {', '.join(missing)}",
                "list each under the read or write endpoints of the entity that owns it",
            )
        )
    return problems


def required_handlers(spec: EntityRules) -> list[str]:
    """Endpoints that must have a new-side handler for the entity's mode.

    shadow and canary call the new side for reads only (writes stay on legacy); new serves
    everything. WebSockets are passed through to legacy in every mode.
    """
    if spec.mode == "legacy":
        return []
    endpoints = list(spec.read) if spec.mode in ("shadow", "canary") else [*spec.read, *spec.write]
    return [e for e in endpoints if not is_websocket(e)]


def _handler_problems(
    rules: RulesFile, root: yaml.Node | None, has_handler: Callable[[str, str], bool]
) -> list[RulesProblem]:
    problems: list[RulesProblem] = []
    for entity, spec in rules.entities.items():
        missing = [e for e in required_handlers(spec) if not has_handler(entity, e)]
        if missing:
            problems.append(
                RulesProblem(
                    _line_of(root, ("entities", entity, "mode")),
                    f"entity {entity!r} is set to mode {spec.mode!r} but has no new-side "
                    f"handler for {len(missing)} endpoint(s): {', '.join(missing)}",
                    f"set {entity}.mode back to legacy until proxy/handlers/{entity}.py "
                    "registers them (and is listed in proxy.handlers.HANDLER_MODULES)",
                )
            )
    return problems


# --- entry points -----------------------------------------------------------------------------


def parse_rules(
    text: str, path: str, has_handler: Callable[[str, str], bool] = lambda entity, endpoint: False
) -> RulesFile:
    """Validate rules text; raise :class:`RulesError` listing every problem."""
    try:
        root = yaml.compose(text, Loader=yaml.SafeLoader)
        data = yaml.safe_load(text)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = mark.line + 1 if mark is not None else None
        raise RulesError(
            path, [RulesProblem(line, f"not valid YAML: {exc.problem}", "fix the YAML syntax")]
        ) from exc
    except yaml.YAMLError as exc:
        raise RulesError(
            path, [RulesProblem(None, f"not valid YAML: {exc}", "fix the YAML syntax")]
        ) from exc
    if not isinstance(data, dict):
        raise RulesError(
            path,
            [
                RulesProblem(
                    1, "the file is not a mapping", "start from the routing_rules.yaml shipped"
                )
            ],
        )
    problems = _duplicate_keys(root)
    try:
        rules = RulesFile.model_validate(data)
    except ValidationError as exc:
        problems.extend(_shape_problem(error, root) for error in exc.errors())
        raise RulesError(path, sorted(problems, key=lambda p: p.line or 0)) from None
    problems.extend(_endpoint_problems(rules, root))
    problems.extend(_handler_problems(rules, root, has_handler))
    if problems:
        raise RulesError(path, sorted(problems, key=lambda p: p.line or 0))
    return rules


def load_rules(
    path: str, has_handler: Callable[[str, str], bool] = lambda entity, endpoint: False
) -> LoadedRules:
    """Read and validate a rules file (blocking I/O: call it off the event loop)."""
    try:
        with open(path, "rb") as handle:
            raw = handle.read()
    except OSError as exc:
        raise RulesError(
            path,
            [
                RulesProblem(
                    None, f"cannot read the file ({exc.strerror})", "check the --rules path"
                )
            ],
        ) from exc
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise RulesError(
            path, [RulesProblem(None, "the file is not UTF-8 text", "save it as UTF-8")]
        ) from exc
    rules = parse_rules(text, path, has_handler)
    return LoadedRules(rules, path, hashlib.sha256(raw).hexdigest())
