"""The compiled flag table: an immutable lookup built once per (re)load.

The request path does one dict lookup per request and reads plain attributes; nothing here
parses, compiles or allocates per request. A reload builds a new :class:`RoutingTable` and
swaps one reference, so an in-flight request keeps the table it started with.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from types import MappingProxyType

from proxy.canary import percent_threshold
from proxy.endpoints import LEGACY_ENDPOINTS, is_websocket, path_template_prefix
from proxy.rules import LoadedRules
from strangler.exchange import NewSideHandler

__all__ = ["UNROUTED", "EntityPlan", "Route", "RoutingTable", "compile_table", "fold_path"]

UNROUTED = "unrouted"  # the metrics' entity label for paths that are not in the table


@dataclass(frozen=True, slots=True)
class EntityPlan:
    name: str
    mode: str
    sample_rate: float
    percent: float
    canary_threshold: int
    fenced: bool  # fenced by the rules file (admin fences live in proxy.fence)


@dataclass(frozen=True, slots=True)
class Route:
    entity: EntityPlan
    endpoint: str  # "GET /connectors/getConnector"
    is_write: bool
    handler: NewSideHandler | None  # resolved once, when the table is compiled


@dataclass(frozen=True)
class RoutingTable:
    http: Mapping[tuple[str, str], Route]
    # the same routes under folded paths (see fold_path): what a lenient legacy router
    # takes for the same endpoint must be routed, and fenced, as that endpoint
    http_folded: Mapping[tuple[str, str], Route]
    websocket_exact: Mapping[str, Route]
    websocket_prefixes: tuple[tuple[str, Route], ...]
    entities: Mapping[str, EntityPlan]
    fence_retry_after: int
    table_hash: str
    file_sha256: str
    path: str

    def lookup(self, method: str, path: str) -> Route | None:
        route = self.http.get((method, path))
        if route is None:  # only a miss pays for the fold
            route = self.http_folded.get((method, fold_path(path)))
        return route

    def lookup_websocket(self, path: str) -> Route | None:
        route = self.websocket_exact.get(path)
        if route is not None:
            return route
        for prefix, candidate in self.websocket_prefixes:
            rest = path[len(prefix) :]
            if path.startswith(prefix) and rest and "/" not in rest:
                return candidate
        return None

    def describe(self) -> dict[str, object]:
        return {
            name: {
                "mode": plan.mode,
                "sample_rate": plan.sample_rate,
                "percent": plan.percent,
                "fenced": plan.fenced,
            }
            for name, plan in self.entities.items()
        }


def fold_path(path: str) -> str:
    """A path as lenient front ends match it by default (Express ignores case and a
    trailing slash, nginx merges repeated slashes): ``/Workflow//updateWorkflow/`` may name
    ``/workflow/updateWorkflow`` there, so it must not slip past this table as unrouted
    (it would reach legacy whatever the entity's mode or fence)."""
    folded = "/".join(part for part in path.lower().split("/") if part)
    return "/" + folded


def compile_table(
    loaded: LoadedRules, handler_of: Callable[[str, str], NewSideHandler | None]
) -> RoutingTable:
    """Turn validated rules into the lookup; ``handler_of(entity, endpoint)`` resolves handlers."""
    rules = loaded.rules
    http: dict[tuple[str, str], Route] = {}
    ws_exact: dict[str, Route] = {}
    ws_prefixes: list[tuple[str, Route]] = []
    entities: dict[str, EntityPlan] = {}
    for name, spec in rules.entities.items():
        plan = EntityPlan(
            name=name,
            mode=spec.mode,
            sample_rate=spec.sample_rate,
            percent=spec.percent,
            canary_threshold=percent_threshold(spec.percent),
            fenced=spec.fenced,
        )
        entities[name] = plan
        for endpoint in [*spec.read, *spec.write]:
            method, _, path = endpoint.partition(" ")
            route = Route(
                entity=plan,
                endpoint=endpoint,
                is_write=LEGACY_ENDPOINTS[endpoint] == "write",
                handler=None if is_websocket(endpoint) else handler_of(name, endpoint),
            )
            if not is_websocket(endpoint):
                http[(method, path)] = route
            elif (prefix := path_template_prefix(path)) is not None:
                ws_prefixes.append((prefix, route))
            else:
                ws_exact[path] = route
    folded: dict[tuple[str, str], Route] = {}
    clashing: set[tuple[str, str]] = set()
    for (method, path), route in http.items():
        key = (method, fold_path(path))
        if key in folded:
            clashing.add(key)  # two endpoints one fold apart: only exact paths find them
        folded[key] = route
    for key in clashing:
        del folded[key]
    return RoutingTable(
        http=MappingProxyType(http),
        http_folded=MappingProxyType(folded),
        websocket_exact=MappingProxyType(ws_exact),
        websocket_prefixes=tuple(ws_prefixes),
        entities=MappingProxyType(entities),
        fence_retry_after=rules.fence_retry_after,
        table_hash=rules.canonical_hash(),
        file_sha256=loaded.file_sha256,
        path=loaded.path,
    )
