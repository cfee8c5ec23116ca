"""Roles and per-transaction settings that PostgreSQL's row-level security keys on.

* ``strangler_app``: what the new side's handlers run as. It owns nothing, may
  only run DML on tenant tables, and sees the rows of one subscription: the one
  set with ``set_config('app.subscription_id', ..., true)`` in the current
  transaction (none at all when unset).
* ``strangler_sync``: BYPASSRLS, for backfill, the sync workers and verify,
  which move every tenant's rows. The table owner is subject to the policies
  too (RLS is FORCEd), so bypassing them is always an explicit ``SET ROLE``.
  ``strangler_app`` is not a member of it and cannot switch to it.

Both helpers must be called inside a transaction: the setting and the role
end with it, so a pooled connection never carries a tenant over.
"""

from __future__ import annotations

from typing import Protocol

from schema.keys import row_key

__all__ = [
    "APP_ROLE",
    "PLACEHOLDER",
    "SYNC_ROLE",
    "TENANT_SETTING",
    "ensure_subscription",
    "enter_sync",
    "enter_tenant",
]

APP_ROLE = "strangler_app"
SYNC_ROLE = "strangler_sync"
TENANT_SETTING = "app.subscription_id"
# The mark in ``extra`` of a row no legacy document made (see ensure_subscription).
PLACEHOLDER = "$placeholder"


class _Executor(Protocol):
    async def execute(self, query: str, *args: object) -> str: ...


async def enter_tenant(conn: _Executor, subscription_id: str) -> None:
    """Scope the current transaction to one tenant, as ``strangler_app``."""
    if not subscription_id:
        raise ValueError("a tenant transaction needs a subscription_id")
    # One round trip: set_config('role', ..., true) is SET LOCAL ROLE.
    await conn.execute(
        "SELECT set_config($1, $2, true), set_config('role', $3, true)",
        TENANT_SETTING,
        subscription_id,
        APP_ROLE,
    )


async def enter_sync(conn: _Executor) -> None:
    """Let the current transaction read and write every tenant's rows."""
    await conn.execute(f"SET LOCAL ROLE {SYNC_ROLE}")


async def ensure_subscription(conn: _Executor, subscription_id: str) -> None:
    """Make sure the tenant's ``subscriptions`` row exists before its first write.

    Tokens are trusted as issued (LEGACY.md), so a tenant may reach the new side
    before its Accounts document was migrated, or with none at all; every tenant table
    references ``subscriptions``. The row is keyed as the Accounts mapping keys it, so a
    later sync of the real document fills it in (and drops the placeholder mark) rather
    than duplicating it; until then it is marked ``extra["$placeholder"]``, which sweep and
    verify read as "no document made this row" rather than as a deleted account. Call it
    inside :func:`enter_tenant`'s transaction (the row is then checked by the same policy)
    or in a sync transaction.
    """
    await conn.execute(
        # No conflict target: two first writes of a tenant racing meet on either unique index.
        "INSERT INTO subscriptions (id, subscription_id, extra) "
        "VALUES ($1, $2, jsonb_build_object($3::text, 'a token named this tenant')) "
        "ON CONFLICT DO NOTHING",
        row_key("subscription", subscription_id),
        subscription_id,
        PLACEHOLDER,
    )
