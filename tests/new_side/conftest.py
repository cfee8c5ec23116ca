"""Fixtures of the new-side tests (defined in new_side_support.py)."""

from new_side_support import other_tenant, pool, sides, tenant

__all__ = ["other_tenant", "pool", "sides", "tenant"]
