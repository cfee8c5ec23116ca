"""The emulator's state, built once by ``create_app`` and shared by every handler."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING

from strangler.mongo import Collection, Database

if TYPE_CHECKING:
    from legacy_emulator.realtime import Hub
    from legacy_emulator.runner import RunSimulator

__all__ = ["COLLECTIONS", "Emulator", "utc_now"]

# Collection names exactly as the legacy backend spells them.
COLLECTIONS = (
    "Accounts",
    "users",
    "groups",
    "roles",
    "connectors",
    "workspace",
    "workflow",
    "workflow_versions",
    "workflowBkp",
    "jobRun",
    "userActivity",
)


def utc_now() -> datetime:
    """Now, at the millisecond precision a BSON date keeps."""
    moment = datetime.now(UTC)
    return moment.replace(microsecond=moment.microsecond // 1000 * 1000)


@dataclass
class Emulator:
    db: Database
    jwt_secret: str
    hub: Hub
    runner: RunSimulator
    password_rounds: int
    clock: Callable[[], datetime] = utc_now

    @property
    def workspaces(self) -> Collection:
        return self.db["workspace"]

    @property
    def workflows(self) -> Collection:
        return self.db["workflow"]

    @property
    def workflow_versions(self) -> Collection:
        return self.db["workflow_versions"]

    @property
    def workflow_backups(self) -> Collection:
        return self.db["workflowBkp"]

    @property
    def job_runs(self) -> Collection:
        return self.db["jobRun"]

    @property
    def connectors(self) -> Collection:
        return self.db["connectors"]

    @property
    def users(self) -> Collection:
        return self.db["users"]

    @property
    def groups(self) -> Collection:
        return self.db["groups"]

    @property
    def roles(self) -> Collection:
        return self.db["roles"]

    @property
    def activity(self) -> Collection:
        return self.db["userActivity"]
