"""Errors of the schema package.

    SchemaError (PermanentError)       root of this package
    ├── MigrationLayoutError           the migrations directory is not a valid sequence
    ├── MigrationChanged               an applied migration's file differs from what ran
    ├── MigrationMissing               an applied migration's file is gone
    ├── MigrationFailed                PostgreSQL rejected a migration (rolled back whole)
    └── RoleSetupError                 the roles the schema needs cannot be created

An unreachable server is :class:`strangler.errors.ServiceUnavailable` (retryable).
"""

from __future__ import annotations

from strangler.errors import PermanentError

__all__ = [
    "MigrationChanged",
    "MigrationFailed",
    "MigrationLayoutError",
    "MigrationMissing",
    "RoleSetupError",
    "SchemaError",
]


class SchemaError(PermanentError):
    """Root of the schema package's errors."""


class MigrationLayoutError(SchemaError):
    """Files in the migrations directory break the ``NNNN_name.sql`` sequence."""


class MigrationChanged(SchemaError):
    def __init__(self, name: str, recorded: str, current: str) -> None:
        self.name = name
        self.recorded = recorded
        self.current = current
        super().__init__(
            f"migration {name} was applied with checksum {recorded[:12]} but the file now "
            f"has {current[:12]}; an applied migration must never change: restore the file "
            "as it was (see git log) and put the change in a new migration"
        )


class MigrationMissing(SchemaError):
    def __init__(self, name: str) -> None:
        self.name = name
        super().__init__(
            f"migration {name} is recorded as applied but its file is missing; "
            "restore it from version control (applied migrations are never deleted)"
        )


class MigrationFailed(SchemaError):
    def __init__(self, name: str, detail: str) -> None:
        self.name = name
        self.detail = detail
        super().__init__(
            f"migration {name} failed and was rolled back, nothing of it was kept: {detail}; "
            "fix the file and run 'strangler schema upgrade' again"
        )


class RoleSetupError(SchemaError):
    """The connecting user may not create the roles; a DBA has to."""
