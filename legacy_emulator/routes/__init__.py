"""The emulator's endpoints, one module per entity; each module lists its routes in ``ROUTES``."""

from __future__ import annotations

from collections.abc import Sequence

from legacy_emulator.http import Handler

__all__ = ["Route", "RouteTable"]

# (method, path, handler)
Route = tuple[str, str, Handler]
RouteTable = Sequence[Route]
