"""Fixtures of the new-side tests (defined in new_side_support.py)."""

from new_side_support import fresh_pool, fresh_sides, other_tenant, pool, sides, tenant

__all__ = ["fresh_pool", "fresh_sides", "other_tenant", "pool", "sides", "tenant"]
