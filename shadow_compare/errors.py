"""The errors of shadow_compare, rooted in the project's tree (strangler.errors).

    ShadowError                       root of this package (a StranglerError)
    ├── RulesError       (Permanent)  shadow_rules.yaml cannot be used: names the file and the fix
    ├── CorpusError      (Permanent)  a replay case file cannot be used: names the file and the fix
    ├── StoreNotMigrated (Permanent)  the database lacks the shadow tables (migration 0010)
    ├── StoreUnavailable (Retryable)  PostgreSQL did not answer (a ServiceUnavailable)
    └── SideUnavailable  (Retryable)  a replay could not connect to legacy or new

A failed gate is not an error: the report command returns exit code 1 for it.
"""

from __future__ import annotations

from pathlib import Path

from strangler.errors import PermanentError, ServiceUnavailable, StranglerError

__all__ = [
    "CorpusError",
    "RulesError",
    "ShadowError",
    "SideUnavailable",
    "StoreNotMigrated",
    "StoreUnavailable",
]


class ShadowError(StranglerError):
    """Root of every error shadow_compare raises on purpose."""


class RulesError(ShadowError, PermanentError):
    """The rules file is missing, not YAML, or does not validate."""

    def __init__(self, path: Path | str, problem: str, fix: str) -> None:
        self.path = str(path)
        self.problem = problem
        self.fix = fix
        super().__init__(f"{path}: {problem}; {fix}")


class CorpusError(ShadowError, PermanentError):
    """A replay corpus file is missing, unreadable or malformed."""

    def __init__(self, path: Path | str, problem: str, fix: str) -> None:
        self.path = str(path)
        self.problem = problem
        self.fix = fix
        super().__init__(f"{path}: {problem}; {fix}")


class StoreUnavailable(ShadowError, ServiceUnavailable):
    """PostgreSQL (the result store) did not answer or refused the query."""


class SideUnavailable(ShadowError, ServiceUnavailable):
    """A replay could not connect to one side; ``setting`` names the flag pointing at it."""


class StoreNotMigrated(ShadowError, PermanentError):
    """The database answers but has no shadow tables."""

    def __init__(self, target: str) -> None:
        super().__init__(
            f"DATABASE_URL: {target} has no shadow_compare tables; "
            "run 'strangler schema upgrade' (migration 0010_shadow_compare) first"
        )
