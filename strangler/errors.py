"""The error tree shared by every package of the project.

    StranglerError                 root: the CLI catches it and prints one line
    ├── PermanentError             retrying the same thing cannot help
    │   ├── ConfigError            a setting is missing or malformed (names the setting)
    │   └── DataError              a document or payload cannot be used as it is
    └── RetryableError             may succeed if tried again (tenacity targets only this)
        └── ServiceUnavailable     a service (PostgreSQL, Redis, MongoDB, legacy) did not answer

Each package roots its own errors in one of these branches, and maps foreign
errors (asyncpg, redis, pymongo, httpx) to the most specific one at its boundary
with ``raise ... from exc``.
"""

from __future__ import annotations

__all__ = [
    "ConfigError",
    "DataError",
    "PermanentError",
    "RetryableError",
    "ServiceUnavailable",
    "StranglerError",
]


class StranglerError(Exception):
    """Root of every error this project raises on purpose."""


class PermanentError(StranglerError):
    """Trying again will not help: a person has to change something."""


class RetryableError(StranglerError):
    """A transient failure: the same call may succeed later."""


class ConfigError(PermanentError):
    """A setting is missing, malformed or points nowhere."""

    def __init__(self, setting: str, problem: str, fix: str) -> None:
        self.setting = setting
        self.problem = problem
        self.fix = fix
        super().__init__(f"{setting}: {problem}; {fix}")


class DataError(PermanentError):
    """Input that cannot be used as it is (a document, a payload, a file)."""


class ServiceUnavailable(RetryableError):
    """A service did not answer; ``setting`` names the URL setting that points at it."""

    def __init__(self, setting: str, target: str, detail: str) -> None:
        self.setting = setting
        self.target = target
        self.detail = detail
        super().__init__(
            f"{setting}: cannot reach {target} ({detail}); "
            f"check that the service is running and that {setting} points at it"
        )
