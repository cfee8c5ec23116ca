"""``strangler secrets rotate``: re-seal every connector secret under the active key.

Rows whose ``secret_key_id`` is not the active key id are taken in batches
(``FOR UPDATE SKIP LOCKED``, one transaction each), opened with their own key
and sealed again under the active one, bound to the same connector id. The
selection itself is the progress marker: a row done is no longer selected, so
an interrupted rotation resumes where it stopped, and a finished one run again
finds nothing to do. Only ``secret_ciphertext``/``secret_key_id`` change; the
row's ``source_version`` does not (the document did not change). Keys stay in
this process: PostgreSQL only ever receives ciphertexts, as bind parameters.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable
from dataclasses import dataclass

import asyncpg

from migrators.crypto import SecretBox, associated_data
from migrators.stores import postgres
from schema.tenancy import enter_sync
from strangler.cli import run_async
from strangler.config import load_settings
from strangler.errors import DataError

__all__ = ["RotationSummary", "register", "rotate_secrets"]

DEFAULT_BATCH = 500


@dataclass
class RotationSummary:
    active_key_id: str
    rotated: int = 0
    remaining: int = 0
    seconds: float = 0.0

    def line(self) -> str:
        return (
            f"rotated {self.rotated:,} connector secret(s) to key {self.active_key_id!r} in "
            f"{self.seconds:.2f} s; {self.remaining:,} left under other keys"
        )


async def _count_stale(conn: asyncpg.Connection, active: str) -> int:
    async with conn.transaction():
        await enter_sync(conn)
        count: int = await conn.fetchval(
            "SELECT count(*) FROM connectors WHERE secret_key_id IS NOT NULL "
            "AND secret_key_id <> $1",
            active,
        )
    return count


async def rotate_secrets(
    conn: asyncpg.Connection,
    box: SecretBox,
    *,
    batch_size: int = DEFAULT_BATCH,
    progress: Callable[[str], object] | None = None,
    max_batches: int | None = None,
) -> RotationSummary:
    """Re-seal under ``box``'s active key every secret sealed under another key."""
    if batch_size <= 0:
        raise DataError(f"--batch must be a positive integer, got {batch_size}")
    started = time.perf_counter()
    active = box.active_key_id
    summary = RotationSummary(active)
    total = await _count_stale(conn, active)
    batches = 0
    while max_batches is None or batches < max_batches:
        async with conn.transaction():
            await enter_sync(conn)
            rows = await conn.fetch(
                """SELECT id, connector_id, secret_ciphertext, secret_key_id FROM connectors
                   WHERE secret_key_id IS NOT NULL AND secret_key_id <> $1
                   ORDER BY id LIMIT $2 FOR UPDATE SKIP LOCKED""",
                active,
                batch_size,
            )
            if not rows:
                break
            updates = []
            for row in rows:
                bound = associated_data(row["connector_id"])
                plain = box.open(bytes(row["secret_ciphertext"]), row["secret_key_id"], bound)
                ciphertext, key_id = box.seal(plain, bound)
                updates.append((row["id"], ciphertext, key_id))
            await conn.executemany(
                "UPDATE connectors SET secret_ciphertext = $2, secret_key_id = $3 WHERE id = $1",
                updates,
            )
        batches += 1
        summary.rotated += len(rows)
        if progress is not None:
            progress(f"rotated {summary.rotated:,}/{total:,} connector secrets")
    summary.remaining = await _count_stale(conn, active)
    summary.seconds = time.perf_counter() - started
    return summary


def register(subparsers: argparse._SubParsersAction) -> None:  # type: ignore[type-arg,unused-ignore]
    parser = subparsers.add_parser(
        "secrets", help="manage connector secret encryption", description=__doc__
    )
    commands = parser.add_subparsers(dest="secrets_command", metavar="COMMAND", required=True)
    rotate = commands.add_parser(
        "rotate",
        help="re-encrypt every connector secret not under the active key (resumable)",
        description="Re-seal, in batches, every connector secret whose key id is not the "
        "active one (CONNECTOR_KEY_ID, or the last key of CONNECTOR_KEYS). CONNECTOR_KEYS "
        "must hold both the old keys and the new one. Safe to interrupt and run again.",
    )
    rotate.add_argument(
        "--batch", type=int, default=DEFAULT_BATCH, help=f"rows per transaction ({DEFAULT_BATCH})"
    )
    rotate.set_defaults(handler=_rotate)


async def _run_rotate(batch: int) -> RotationSummary:
    settings = load_settings()
    box = SecretBox(settings.connector_keys)
    async with postgres(settings) as conn:
        return await rotate_secrets(
            conn, box, batch_size=batch, progress=lambda line: print(line, flush=True)
        )


def _rotate(args: argparse.Namespace) -> int:
    summary = run_async(_run_rotate(args.batch))
    print(summary.line())
    return 0 if summary.remaining == 0 else 1
