"""The registry of entity specs: explicit, ordered, rejecting duplicates."""

from __future__ import annotations

import importlib
from collections.abc import Iterator

from migrators.spec import EntitySpec
from strangler.errors import DataError

__all__ = ["SPEC_MODULES", "SpecRegistry", "UnknownEntity", "default_registry"]

# Each module exposes SPECS: tuple[EntitySpec, ...]; order is migration order.
SPEC_MODULES: tuple[str, ...] = (
    "migrators.entities.accounts",
    "migrators.entities.users",
    "migrators.entities.access",
    "migrators.entities.connectors",
    "migrators.entities.workspaces",
    "migrators.entities.runs",
)


class UnknownEntity(DataError):
    def __init__(self, name: str, known: list[str]) -> None:
        self.name = name
        self.known = known
        super().__init__(f"unknown entity {name!r}; known entities: {', '.join(known) or 'none'}")


class SpecRegistry:
    def __init__(self) -> None:
        self._specs: dict[str, EntitySpec] = {}

    def register(self, spec: EntitySpec) -> None:
        if spec.name in self._specs:
            raise ValueError(f"entity {spec.name!r} is registered twice")
        missing = [dep for dep in spec.depends_on if dep not in self._specs]
        if missing:
            raise ValueError(f"entity {spec.name!r} depends on unregistered {missing}")
        self._specs[spec.name] = spec

    def get(self, name: str) -> EntitySpec:
        try:
            return self._specs[name]
        except KeyError:
            raise UnknownEntity(name, list(self._specs)) from None

    def group(self, flag_entity: str) -> list[EntitySpec]:
        """The specs that switch with one routing_rules.yaml entity, in dependency order."""
        members = [spec for spec in self if spec.routing_entity == flag_entity]
        if not members:
            raise UnknownEntity(flag_entity, list(self._specs))
        return members

    def select(self, name: str) -> list[EntitySpec]:
        """``all`` -> every spec in dependency order; a flag entity -> its whole group
        (``workspaces`` -> the workflows, the trees and their histories); otherwise the
        one spec named."""
        if name == "all":
            return list(self)
        members = [spec for spec in self if spec.routing_entity == name]
        return members or [self.get(name)]

    def __iter__(self) -> Iterator[EntitySpec]:
        return iter(self._specs.values())

    def __len__(self) -> int:
        return len(self._specs)


def default_registry() -> SpecRegistry:
    registry = SpecRegistry()
    for module_name in SPEC_MODULES:
        module = importlib.import_module(module_name)
        for spec in module.SPECS:
            registry.register(spec)
    return registry
