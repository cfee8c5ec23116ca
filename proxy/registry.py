"""The registry of new-side handlers, and how handler modules are loaded into it.

One registry per proxy instance, built at start and frozen: it maps
``(entity, "METHOD /path")`` to a :data:`~strangler.exchange.NewSideHandler` and rejects a
second registration of the same key. Entity modules plug in by being named in
``proxy.handlers.HANDLER_MODULES``; each exposes ``register(registry, deps)`` and may declare
``REQUIRES = {"postgres", "redis"}`` so that the pools are only opened when some module
needs them.
"""

from __future__ import annotations

import importlib
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from types import ModuleType
from typing import Any

from proxy.errors import DuplicateHandler, HandlerModuleError
from strangler.config import Settings
from strangler.exchange import NewSideHandler

__all__ = [
    "HandlerDeps",
    "HandlerRegistry",
    "load_handler_modules",
    "registry_from_mapping",
    "required_services",
]

SERVICES = frozenset({"postgres", "redis"})


@dataclass(frozen=True)
class HandlerDeps:
    """What a handler module may use; a pool is None unless some module REQUIRES it."""

    settings: Settings
    pg_pool: Any = None  # asyncpg.Pool
    redis: Any = None  # redis.asyncio.Redis
    clock: Callable[[], float] = field(default=time.time)


class HandlerRegistry:
    def __init__(self) -> None:
        self._handlers: dict[tuple[str, str], NewSideHandler] = {}
        self._frozen = False

    def add(self, entity: str, endpoint: str, handler: NewSideHandler) -> None:
        """Register ``handler`` for ``endpoint`` (``"GET /connectors/getConnector"``)."""
        if self._frozen:
            raise HandlerModuleError(
                f"cannot register {entity} {endpoint!r}: the registry is frozen once serving "
                "starts; register handlers from a module's register() function"
            )
        key = (entity, endpoint)
        if key in self._handlers:
            raise DuplicateHandler(entity, endpoint)
        self._handlers[key] = handler

    def freeze(self) -> None:
        self._frozen = True

    def get(self, entity: str, endpoint: str) -> NewSideHandler | None:
        return self._handlers.get((entity, endpoint))

    def has(self, entity: str, endpoint: str) -> bool:
        return (entity, endpoint) in self._handlers

    def __iter__(self) -> Iterator[tuple[str, str]]:
        return iter(self._handlers)

    def __len__(self) -> int:
        return len(self._handlers)


def _import(name: str) -> ModuleType:
    try:
        module = importlib.import_module(name)
    except ImportError as exc:
        raise HandlerModuleError(
            f"handler module {name!r} cannot be imported ({exc}); "
            "fix the module or remove it from proxy.handlers.HANDLER_MODULES"
        ) from exc
    if not callable(getattr(module, "register", None)):
        raise HandlerModuleError(
            f"handler module {name!r} has no register(registry, deps) function; add one"
        )
    return module


def required_services(module_names: Iterable[str]) -> frozenset[str]:
    """The union of the modules' REQUIRES declarations (subset of postgres, redis)."""
    needed: set[str] = set()
    for name in module_names:
        declared = frozenset(getattr(_import(name), "REQUIRES", frozenset()))
        unknown = declared - SERVICES
        if unknown:
            raise HandlerModuleError(
                f"handler module {name!r} REQUIRES {sorted(unknown)}, which the proxy does "
                f"not provide; use only {sorted(SERVICES)}"
            )
        needed |= declared
    return frozenset(needed)


def load_handler_modules(
    module_names: Iterable[str], deps: HandlerDeps, registry: HandlerRegistry | None = None
) -> HandlerRegistry:
    """Build (or fill) a registry from the named modules, then freeze it."""
    registry = registry or HandlerRegistry()
    for name in module_names:
        _import(name).register(registry, deps)
    registry.freeze()
    return registry


def registry_from_mapping(
    handlers: Mapping[tuple[str, str], NewSideHandler],
) -> HandlerRegistry:
    """A frozen registry from explicit handlers (tests and embedding)."""
    registry = HandlerRegistry()
    for (entity, endpoint), handler in handlers.items():
        registry.add(entity, endpoint, handler)
    registry.freeze()
    return registry
