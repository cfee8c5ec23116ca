"""Clean legacy documents, one builder per collection (shapes of LEGACY.md section 2).

Pure: each builder takes a seeded ``random.Random``, the id mint and the ids it
refers to, and returns plain dicts. Datetimes are naive UTC with millisecond
precision, as PyMongo returns BSON dates. A field that does not apply (a
workflow that is not checked out has no ``checked_out_by``) is stored as
``None``; dropping fields is left to the dirt.
"""

from __future__ import annotations

import random
from datetime import datetime, timedelta
from typing import Any

from legacy_emulator.generator_diagram import DOMAINS, OBJECTS
from legacy_emulator.generator_scales import ANCHOR, moment_between

__all__ = [
    "CONNECTOR_TYPES",
    "account",
    "activity",
    "connector",
    "group",
    "job_run",
    "role",
    "user",
    "workflow",
    "workflow_version",
]

Document = dict[str, Any]

_FIRST = (
    "Aisha Ben Carla Deepak Elena Farid Grace Hiro Ines Jonas Keiko Liam Maya Nikhil Olga "
    "Pedro Quinn Rosa Samir Tara Umar Vera Wei Ximena Yusuf Zoe Arjun Bianca Chen Dmitri"
).split()
_LAST = (
    "Adams Bose Costa Dubois Evans Fischer Garcia Haddad Ito Jensen Kowalski Lopez Mehta "
    "Nakamura Okafor Petrov Rossi Silva Tanaka Usman Varga Weber Xu Yilmaz Zhang"
).split()
_COMPANY_A = "Acme Blue Cedar Delta Ember Fjord Granite Harbor Iris Juniper Kestrel Lumen".split()
_COMPANY_B = (
    "Analytics Logistics Retail Health Energy Foods Bank Media Labs Systems Freight".split()
)
_VERBS = "Load Sync Clean Merge Aggregate Export Enrich Dedupe Score Archive".split()
_OFFSETS = ("+00:00", "+01:00", "+02:00", "+05:30", "+08:00", "+09:00", "-05:00", "-08:00")
_AGENTS = (
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 Chrome/129.0 Safari/537.36",
    "Mozilla/5.0 (Macintosh; Intel Mac OS X 14_6) AppleWebKit/605.1.15 Version/17.6 Safari/605.1",
    "Mozilla/5.0 (X11; Linux x86_64; rv:131.0) Gecko/20100101 Firefox/131.0",
    "python-requests/2.32.3",
    "uzo-scheduler/3.4",
)
_PERMISSIONS = (
    "workspace:read workspace:write workflow:read workflow:write workflow:run "
    "connector:read connector:write user:read user:write activity:read"
).split()

# connector type -> (default port, type-specific keys of connection_detail)
CONNECTOR_TYPES: dict[str, tuple[int, tuple[str, ...]]] = {
    "postgres": (5432, ("schema", "sslmode")),
    "mysql": (3306, ("charset",)),
    "snowflake": (443, ("account", "warehouse", "role", "schema")),
    "s3": (443, ("bucket", "region", "prefix")),
    "mongodb": (27017, ("auth_source", "replica_set")),
    "sqlserver": (1433, ("instance", "encrypt")),
    "oracle": (1521, ("service_name",)),
    "redshift": (5439, ("schema", "cluster_id")),
}
_TYPE_WEIGHTS = (30, 18, 12, 14, 10, 6, 4, 6)


def _ms(moment: datetime) -> datetime:
    return moment.replace(microsecond=moment.microsecond // 1000 * 1000)


def _after(rng: random.Random, start: datetime, end: datetime = ANCHOR) -> datetime:
    return moment_between(rng, start, max(end, start + timedelta(seconds=1)))


def _secret(rng: random.Random, length: int) -> str:
    alphabet = "abcdefghijkmnopqrstuvwxyzABCDEFGHJKLMNPQRSTUVWXYZ23456789!#%&*+-_"
    return "".join(rng.choice(alphabet) for _ in range(length))


def company_name(rng: random.Random) -> str:
    return f"{rng.choice(_COMPANY_A)} {rng.choice(_COMPANY_B)}"


def account(rng: random.Random, subscription_id: str, name: str, created_at: datetime) -> Document:
    return {
        "subscription_id": subscription_id,
        "company_name": name,
        "plan_type": rng.choices(("free", "team", "enterprise"), (2, 5, 3))[0],
        "status": "active" if rng.random() < 0.95 else "suspended",
        "created_at": created_at,
    }


def user(
    rng: random.Random, user_id: str, subscription_id: str, domain: str, created_at: datetime
) -> Document:
    first, last = rng.choice(_FIRST), rng.choice(_LAST)
    username = f"{first}.{last}.{user_id[-4:]}".lower()
    last_login = _after(rng, created_at) if rng.random() < 0.9 else None
    return {
        "UserId": user_id,
        "subscription_id": subscription_id,
        "email": f"{username}@{domain}",
        "username": username,
        "full_name": f"{first} {last}",
        # bcrypt's shape ($2b$, cost, 53 characters of salt and digest); no known password
        "password": "$2b$12$" + _secret(rng, 53).translate(str.maketrans("!#%&*+-_", "./ABCDEF")),
        "photo_url": f"https://cdn.uzo.example/avatars/{user_id}.png"
        if rng.random() < 0.6
        else None,
        "user_utc_offset": rng.choice(_OFFSETS),
        "is_active": rng.random() < 0.93,
        "is_email_verified": rng.random() < 0.85,
        "last_login_at": last_login,
        "created_at": created_at,
        "updated_at": _after(rng, created_at),
    }


def group(
    rng: random.Random,
    group_id: str,
    subscription_id: str,
    members: list[str],
    created_by: str,
    created_at: datetime,
) -> Document:
    name = f"{rng.choice(DOMAINS)} {rng.choice(('Team', 'Engineers', 'Analysts', 'Leads'))}"
    return {
        "group_id": group_id,
        "subscription_id": subscription_id,
        "group_name": name,
        "description": f"Members of {name}",
        "users": members,
        "created_by": created_by,
        "created_at": created_at,
    }


def role(
    rng: random.Random, role_id: str, subscription_id: str, name: str, members: list[str]
) -> Document:
    permissions = sorted(rng.sample(_PERMISSIONS, rng.randint(2, len(_PERMISSIONS))))
    return {
        "role_id": role_id,
        "subscription_id": subscription_id,
        "role_name": name,
        "description": f"{name} access",
        "permissions": permissions,
        "users": members,
    }


def connector(
    rng: random.Random,
    connector_id: str,
    subscription_id: str,
    name: str,
    created_by: str,
    created_at: datetime,
) -> Document:
    kind = rng.choices(list(CONNECTOR_TYPES), _TYPE_WEIGHTS)[0]
    port, extra_keys = CONNECTOR_TYPES[kind]
    host = {
        "snowflake": f"{name.lower().replace(' ', '')}.eu-west-1.snowflakecomputing.com",
        "s3": "s3.eu-west-1.amazonaws.com",
    }.get(kind, f"db-{rng.randrange(1, 40):02d}.{kind}.internal.example")
    detail: dict[str, Any] = {
        "host": host,
        "port": port,
        "database": rng.choice(OBJECTS) + "_db",
        "username": f"svc_{rng.choice(DOMAINS).lower()}",
        "password": _secret(rng, rng.randint(12, 24)),  # plain text, as legacy stores it
    }
    for key in extra_keys:
        detail[key] = _extra_key_value(rng, key)
    tested = rng.random() < 0.8
    return {
        "connector_id": connector_id,
        "subscription_id": subscription_id,
        "connector_name": name,
        "connector_type": kind,
        "description": f"{kind} connection for {rng.choice(DOMAINS)}",
        "connection_detail": detail,
        "is_active": rng.random() < 0.9,
        "test_status": rng.choices(("success", "failed"), (85, 15))[0] if tested else "untested",
        "last_tested_at": _after(rng, created_at) if tested else None,
        "created_by": created_by,
        "created_at": created_at,
        "updated_at": _after(rng, created_at),
        "d_flag": rng.random() < 0.04,
    }


def _extra_key_value(rng: random.Random, key: str) -> Any:
    values: dict[str, Any] = {
        "schema": rng.choice(("public", "analytics", "staging", "raw")),
        "sslmode": rng.choice(("require", "verify-full", "prefer")),
        "charset": "utf8mb4",
        "account": f"uzo{rng.randrange(1000, 9999)}",
        "warehouse": rng.choice(("COMPUTE_WH", "ETL_WH", "REPORTING_WH")),
        "role": rng.choice(("SYSADMIN", "ETL_ROLE")),
        "bucket": f"uzo-{rng.choice(OBJECTS)}-{rng.randrange(100, 999)}",
        "region": rng.choice(("eu-west-1", "us-east-1", "ap-south-1")),
        "prefix": f"{rng.choice(OBJECTS)}/",
        "auth_source": "admin",
        "replica_set": rng.choice(("rs0", None)),
        "instance": "MSSQLSERVER",
        "encrypt": rng.random() < 0.7,
        "service_name": "ORCLPDB1",
        "cluster_id": f"redshift-{rng.randrange(1, 9)}",
    }
    return values[key]


def workflow(
    rng: random.Random,
    ids: dict[str, str],
    name: str,
    diagram_text: str,
    version: int,
    users: list[str],
    connector_ids: list[str],
    created_at: datetime,
    deleted: bool,
) -> Document:
    """``ids`` holds workflow_id, workspace_id, folder_id, job_id and subscription_id."""
    checked_out = rng.random() < 0.08
    updated_at = _after(rng, created_at)
    emails = [f"alerts+{rng.choice(DOMAINS).lower()}@uzo.example"]
    return {
        "workflow_id": ids["workflow_id"],
        "workspace_id": ids["workspace_id"],
        "folder_id": ids["folder_id"],
        "job_id": ids["job_id"],
        "subscription_id": ids["subscription_id"],
        "workflow_name": name,
        "description": f"{name} every {rng.choice(('hour', 'day', 'night', 'week'))}",
        "environment": rng.choice(("dev", "staging", "prod")),
        "workFlowDiagram": diagram_text,
        "parameters": {
            "batch_size": rng.choice((500, 1000, 5000)),
            "run_date": "${today}",
            "retries": rng.randint(0, 5),
            "timezone": rng.choice(("UTC", "Europe/Berlin", "Asia/Kolkata")),
        },
        "notification": {
            "on_failure": True,
            "on_success": rng.random() < 0.3,
            "emails": emails,
        },
        "tags": sorted(rng.sample(("etl", "daily", "finance", "pii", "critical", "gdpr"), 2)),
        "version": version,
        "is_active": rng.random() < 0.9,
        "is_checked_out": checked_out,
        "checked_out_by": rng.choice(users) if checked_out else None,
        "checked_out_at": _after(rng, updated_at) if checked_out else None,
        "source_connectorid": rng.choice(connector_ids),
        "target_connectorid": rng.choice(connector_ids),
        "created_by": rng.choice(users),
        "created_at": created_at,
        "updated_by": rng.choice(users),
        "updated_at": updated_at,
        "d_flag": deleted,
    }


def workflow_version(
    rng: random.Random,
    snapshot: Document,
    number: int,
    change_type: str,
    created_by: str,
    created_at: datetime,
) -> Document:
    return {
        "workflow_id": snapshot["workflow_id"],
        "version_number": number,
        "change_type": change_type,
        "comment": rng.choice(("", "fix mapping", "new target table", "tuned batch size")),
        "workflow_snapshot": snapshot,
        "created_by": created_by,
        "created_at": created_at,
    }


_LOG_STEPS = ("extracting", "transforming", "validating", "loading", "committing")


def job_run(
    rng: random.Random,
    run_id: str,
    ref: tuple[str, str, str, str],
    triggered_by: str,
    created_at: datetime,
    finished: bool,
) -> Document:
    """``ref`` is (workflow_id, job_id, workspace_id, subscription_id)."""
    workflow_id, job_id, workspace_id, subscription_id = ref
    status = rng.choices(("completed", "failed"), (88, 12))[0] if finished else "running"
    if not finished and rng.random() < 0.4:
        status = "queued"
    duration_ms = rng.randint(800, 3_600_000) if finished else None
    rows = rng.randint(0, 2_000_000) if status in ("completed", "failed") else None
    logs = [{"ts": created_at, "level": "INFO", "message": f"run {run_id} started"}]
    if status != "queued":
        step_time = created_at
        for step in _LOG_STEPS[: rng.randint(2, len(_LOG_STEPS))]:
            step_time = _ms(step_time + timedelta(milliseconds=rng.randint(50, 60_000)))
            level = "WARN" if rng.random() < 0.05 else "INFO"
            logs.append({"ts": step_time, "level": level, "message": f"{step} {rows or 0} rows"})
    error = None
    if status == "failed":
        error = rng.choice(
            (
                "connection refused by target",
                'column "amount" does not exist',
                "timeout after 3600 s",
                "duplicate key value violates unique constraint",
            )
        )
        logs.append({"ts": logs[-1]["ts"], "level": "ERROR", "message": error})
    completed_at = _ms(created_at + timedelta(milliseconds=duration_ms)) if duration_ms else None
    return {
        "job_run_id": run_id,
        "workflow_id": workflow_id,
        "job_id": job_id,
        "workspace_id": workspace_id,
        "subscription_id": subscription_id,
        "status": status,
        "created_at": created_at,
        "completed_at": completed_at,
        "duration_ms": duration_ms,
        "triggered_by": triggered_by,
        "trigger_type": rng.choices(("manual", "scheduled", "webhook"), (2, 7, 1))[0],
        "error_message": error,
        "rows_processed": rows,
        "logs": logs,
    }


def activity(
    rng: random.Random,
    subscription_id: str,
    user_id: str,
    target: tuple[str, str, str],
    created_at: datetime,
) -> Document:
    """``target`` is (object_type, object_id, object_name)."""
    object_type, object_id, object_name = target
    action = rng.choices(("created", "updated", "deleted", "viewed", "executed"), (2, 4, 1, 8, 3))[
        0
    ]
    previous = {"name": object_name} if action in ("updated", "deleted") else None
    current = (
        {"name": object_name, "updated_field": rng.choice(("description", "tags", "parameters"))}
        if action in ("created", "updated")
        else None
    )
    return {
        "subscription_id": subscription_id,
        "UserId": user_id,
        "action": action,
        "object_type": object_type,
        "object_id": object_id,
        "object_name": object_name,
        "ip_address": f"10.{rng.randrange(256)}.{rng.randrange(256)}.{rng.randrange(1, 255)}",
        "user_agent": rng.choice(_AGENTS),
        "previous_data": previous,
        "current_data": current,
        "created_at": created_at,
    }


def workflow_name(rng: random.Random) -> str:
    return f"{rng.choice(_VERBS)} {rng.choice(OBJECTS)} {rng.randrange(1, 1000)}"


def workspace_name(rng: random.Random) -> str:
    return f"{rng.choice(DOMAINS)} {rng.choice(('Data', 'Pipelines', 'Reporting', 'Lake'))}"
