"""Fixtures of the workspace tree's new-side tests (defined in tree_handler_support.py)."""

from tree_handler_support import other_tenant, pool, same_ids, sides, tenant

__all__ = ["other_tenant", "pool", "same_ids", "sides", "tenant"]
