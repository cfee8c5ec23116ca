"""Fixtures of the workspace tree's new-side tests (defined in tree_handler_support.py)."""

from tree_handler_support import fresh_sides, other_tenant, pool, same_ids, sides, tenant

__all__ = ["fresh_sides", "other_tenant", "pool", "same_ids", "sides", "tenant"]
