"""The migration files: discovery, ordering and checksums. No database here.

A migration is a file ``NNNN_name.sql`` in ``schema/migrations``; files run in
the order of NNNN, each exactly once. Its checksum is the SHA-256 of the
file's bytes, recorded when it is applied, so an edited file is noticed.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from pathlib import Path

from schema.errors import MigrationLayoutError

__all__ = ["MIGRATIONS_DIR", "Migration", "load_migrations"]

MIGRATIONS_DIR = Path(__file__).resolve().parent / "migrations"
_NAME = re.compile(r"^(?P<number>\d{4})_(?P<title>[a-z0-9][a-z0-9_]*)\.sql$")


@dataclass(frozen=True)
class Migration:
    number: int
    name: str  # the file name, which is what gets recorded
    sql: str
    checksum: str


def load_migrations(directory: Path = MIGRATIONS_DIR) -> list[Migration]:
    """Every migration of ``directory``, in the order they apply."""
    if not directory.is_dir():
        raise MigrationLayoutError(f"migrations directory {directory} does not exist")
    found: dict[int, Migration] = {}
    for path in sorted(directory.glob("*.sql")):
        match = _NAME.match(path.name)
        if match is None:
            raise MigrationLayoutError(
                f"{path.name} in {directory} is not named NNNN_name.sql "
                "(four digits, underscore, lowercase name); rename it"
            )
        raw = path.read_bytes()
        try:
            sql = raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise MigrationLayoutError(f"{path.name} is not UTF-8 text") from exc
        number = int(match["number"])
        if number in found:
            raise MigrationLayoutError(
                f"{found[number].name} and {path.name} share the number {number:04d}; "
                "renumber the one that has not been applied yet"
            )
        found[number] = Migration(
            number=number, name=path.name, sql=sql, checksum=hashlib.sha256(raw).hexdigest()
        )
    return [found[n] for n in sorted(found)]
