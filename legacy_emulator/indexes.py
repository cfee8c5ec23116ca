"""Indexes for the legacy MongoDB database: ``strangler legacy indexes --plan|--apply``.

Production's ``mongod`` has no index beyond ``_id`` (LEGACY.md). Two sets are planned:

* **relief** (architecture review, Part 2): the indexes that serve the legacy API's
  queries of LEGACY.md section 3 (a tenant's list in ``created_at`` order, a get by its
  id) and the migration's own reads (the polling feed and the sweep read documents by
  their legacy id). They relieve the legacy backend while the migration runs beside it.
  None is unique: legacy data holds duplicates (LEGACY.md section 2), and a unique index
  would refuse to build, or refuse writes legacy accepts today.
* **retained** (architecture review, Part 7): the collections that stay in MongoDB
  after it is retired (execution logs, notifications, the dashboard cache) get TTL
  indexes so that they stop growing. LEGACY.md does not name them; the names here
  (``executionLogs``, ``notifications``, ``dashboardCache``) and their retention are
  this project's choice (docs/legacy_emulator.md). A TTL index expires only documents
  whose field is a BSON date: documents with a date stored as a string never expire,
  and ``--plan`` counts them.

``--plan`` lists, per collection, the indexes that exist, those to create and those that
clash (same keys, other options: never dropped or changed automatically). ``--apply``
creates the missing ones, one at a time with progress, and is idempotent: run again, it
creates nothing. Indexes are named (``strangler_...``) so that they are recognisable and
can be dropped by name.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from strangler.errors import DataError, ServiceUnavailable
from strangler.mongo import Database

__all__ = [
    "RELIEF",
    "RETAINED",
    "IndexPlan",
    "IndexSpec",
    "apply_plan",
    "plan_indexes",
]

Keys = tuple[tuple[str, int], ...]
Say = Callable[[str], object]

DAY = 86_400


@dataclass(frozen=True)
class IndexSpec:
    collection: str
    name: str
    keys: Keys
    purpose: str
    expire_after_seconds: int | None = None  # a TTL index on keys[0]

    def options(self) -> dict[str, Any]:
        options: dict[str, Any] = {"name": self.name}
        if self.expire_after_seconds is not None:
            options["expireAfterSeconds"] = self.expire_after_seconds
        return options

    def describe(self) -> str:
        keys = ", ".join(f"{k}: {v}" for k, v in self.keys)
        ttl = (
            f", expire after {self.expire_after_seconds // DAY} day(s)"
            if self.expire_after_seconds and self.expire_after_seconds >= DAY
            else (
                f", expire after {self.expire_after_seconds} s" if self.expire_after_seconds else ""
            )
        )
        return f"{self.name} {{{keys}}}{ttl}: {self.purpose}"


def _i(collection: str, name: str, purpose: str, *keys: tuple[str, int]) -> IndexSpec:
    return IndexSpec(collection, f"strangler_{name}", tuple(keys), purpose)


_NEWEST = ("created_at", -1)
RELIEF: tuple[IndexSpec, ...] = (
    _i("Accounts", "account_by_id", "a tenant by its id", ("subscription_id", 1)),
    _i("users", "user_by_id", "getUser, the sync's reads by UserId", ("UserId", 1)),
    _i("users", "users_list", "getUsers: a tenant's users, newest first",
       ("subscription_id", 1), _NEWEST, ("UserId", 1)),
    _i("users", "users_by_email", "addUser's duplicate check", ("subscription_id", 1),
       ("email", 1)),
    _i("groups", "group_by_id", "addUserToGroup, the sync's reads", ("group_id", 1)),
    _i("groups", "groups_list", "getGroups", ("subscription_id", 1), _NEWEST, ("group_id", 1)),
    _i("roles", "role_by_id", "assignRole, the sync's reads", ("role_id", 1)),
    _i("roles", "roles_list", "getRoles", ("subscription_id", 1), _NEWEST, ("role_id", 1)),
    _i("connectors", "connector_by_id", "getConnector, the sync's reads", ("connector_id", 1)),
    _i("connectors", "connectors_list", "getConnectors (connector_type optional)",
       ("subscription_id", 1), ("connector_type", 1), _NEWEST, ("connector_id", 1)),
    _i("workspace", "workspace_by_id", "getWorkspace and every tree edit", ("workspace_id", 1)),
    _i("workspace", "workspaces_list", "getAllWorkspace", ("subscription_id", 1), _NEWEST,
       ("workspace_id", 1)),
    _i("workflow", "workflow_by_id", "getWorkflow, runNow, the sync's reads",
       ("workflow_id", 1)),
    _i("workflow", "workflows_of_job", "getWorkflows by job_id", ("job_id", 1), _NEWEST,
       ("workflow_id", 1)),
    _i("workflow", "workflows_of_workspace", "getWorkflows by workspace_id",
       ("workspace_id", 1), _NEWEST, ("workflow_id", 1)),
    _i("workflow_versions", "versions_of_workflow", "getVersions, checkIn's next number",
       ("workflow_id", 1), _NEWEST),
    _i("workflowBkp", "backups_of_workflow", "a workflow's backups", ("workflow_id", 1)),
    _i("jobRun", "run_by_id", "getRun, the run simulator's updates", ("job_run_id", 1)),
    _i("jobRun", "runs_list", "getRuns (status, from, to optional)", ("subscription_id", 1),
       _NEWEST, ("job_run_id", 1)),
    _i("jobRun", "runs_of_workflow", "getRuns by workflow_id", ("workflow_id", 1), _NEWEST),
    _i("userActivity", "activity_list", "getActivity (from, to optional)",
       ("subscription_id", 1), _NEWEST),
    _i("userActivity", "activity_of_user", "getActivity by UserId", ("subscription_id", 1),
       ("UserId", 1), _NEWEST),
    _i("userActivity", "activity_of_object", "getActivity by object_type and object_id",
       ("subscription_id", 1), ("object_type", 1), ("object_id", 1), _NEWEST),
)  # fmt: skip

RETAINED: tuple[IndexSpec, ...] = (
    IndexSpec("executionLogs", "strangler_execution_logs_ttl", (("created_at", 1),),
              "execution logs are kept 90 days", 90 * DAY),
    IndexSpec("notifications", "strangler_notifications_ttl", (("created_at", 1),),
              "notifications are kept 30 days", 30 * DAY),
    IndexSpec("dashboardCache", "strangler_dashboard_cache_ttl", (("cached_at", 1),),
              "a dashboard cache entry lives one hour", 3_600),
)  # fmt: skip


@dataclass
class CollectionPlan:
    collection: str
    existing: list[str] = field(default_factory=list)  # names of the indexes already there
    present: list[IndexSpec] = field(default_factory=list)  # wanted, already there
    missing: list[IndexSpec] = field(default_factory=list)
    clashes: list[tuple[IndexSpec, str]] = field(default_factory=list)  # (wanted, why)
    never_expire: int = 0  # TTL collections: documents whose TTL field is not a date


@dataclass
class IndexPlan:
    collections: list[CollectionPlan]

    @property
    def missing(self) -> list[IndexSpec]:
        return [spec for plan in self.collections for spec in plan.missing]

    @property
    def clashes(self) -> list[tuple[IndexSpec, str]]:
        return [clash for plan in self.collections for clash in plan.clashes]

    def lines(self) -> list[str]:
        lines = []
        for plan in self.collections:
            lines.append(f"{plan.collection}:")
            lines += [f"  exists    {spec.describe()}" for spec in plan.present]
            lines += [f"  create    {spec.describe()}" for spec in plan.missing]
            lines += [f"  CLASH     {spec.describe()} ({why})" for spec, why in plan.clashes]
            if plan.never_expire:
                lines.append(
                    f"  note      {plan.never_expire:,} document(s) hold no BSON date in the "
                    "TTL field: they never expire (rewrite the field as a date to let them)"
                )
        lines.append(
            f"{len(self.missing)} index(es) to create, {len(self.clashes)} clash(es)"
            + (": resolve each by hand (drop or rename the existing index)" if self.clashes else "")
        )
        return lines


def _normalized_keys(raw: Any) -> Keys:
    return tuple((str(k), int(v)) for k, v in (raw.items() if isinstance(raw, Mapping) else raw))


async def _index_information(db: Database, collection: str) -> dict[str, dict[str, Any]]:
    try:
        info: dict[str, dict[str, Any]] = await db[collection].index_information()
    except Exception as exc:  # a missing collection answers {} on both engines
        if "ns does not exist" in str(exc) or "NamespaceNotFound" in type(exc).__name__:
            return {}
        raise ServiceUnavailable("MONGO_URL", "MongoDB", f"{type(exc).__name__}: {exc}") from exc
    return info


def _chosen(sets: Iterable[str]) -> tuple[IndexSpec, ...]:
    wanted = set(sets)
    unknown = wanted - {"relief", "retained"}
    if unknown:
        raise DataError(f"unknown index set(s) {sorted(unknown)}; choose relief and/or retained")
    return (RELIEF if "relief" in wanted else ()) + (RETAINED if "retained" in wanted else ())


async def plan_indexes(db: Database, sets: Sequence[str] = ("relief", "retained")) -> IndexPlan:
    """What ``--apply`` would do, read from the database (nothing is changed)."""
    by_collection: dict[str, CollectionPlan] = {}
    infos: dict[str, dict[str, dict[str, Any]]] = {}
    for spec in _chosen(sets):
        plan = by_collection.get(spec.collection)
        if plan is None:
            plan = by_collection[spec.collection] = CollectionPlan(spec.collection)
            infos[spec.collection] = await _index_information(db, spec.collection)
            plan.existing = sorted(infos[spec.collection])
        plan_info = infos[spec.collection]
        same_keys = {
            name: details
            for name, details in plan_info.items()
            if _normalized_keys(details.get("key", ())) == spec.keys
        }
        by_name = plan_info.get(spec.name)
        if by_name is not None and _normalized_keys(by_name.get("key", ())) != spec.keys:
            plan.clashes.append((spec, f"an index named {spec.name} has other keys"))
        elif same_keys:
            name, details = next(iter(same_keys.items()))
            ttl = details.get("expireAfterSeconds")
            if ttl is not None and int(ttl) != spec.expire_after_seconds:
                plan.clashes.append((spec, f"{name} has the same keys, expireAfterSeconds {ttl}"))
            elif spec.expire_after_seconds is not None and ttl is None:
                plan.clashes.append((spec, f"{name} has the same keys and no TTL"))
            else:
                plan.present.append(spec)
        else:
            plan.missing.append(spec)
        if spec.expire_after_seconds is not None:
            field_name = spec.keys[0][0]
            plan.never_expire = await db[spec.collection].count_documents(
                {field_name: {"$exists": True, "$not": {"$type": "date"}}}
            )
    return IndexPlan(list(by_collection.values()))


async def apply_plan(db: Database, plan: IndexPlan, say: Say = print) -> int:
    """Create the plan's missing indexes, one at a time; returns how many were created."""
    created = 0
    missing = plan.missing
    for number, spec in enumerate(missing, 1):
        say(f"[{number}/{len(missing)}] {spec.collection}: creating {spec.describe()}")
        try:
            await db[spec.collection].create_index(list(spec.keys), **spec.options())
        except Exception as exc:  # pymongo's OperationFailure and friends, mongomock's own
            raise DataError(
                f"{spec.collection}: creating {spec.name} failed ({type(exc).__name__}: {exc}); "
                f"{created} index(es) were created before it, run --plan to see what is left"
            ) from exc
        created += 1
    return created
