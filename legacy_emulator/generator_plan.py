"""The shape of a seed before any document is built: tenants, their sizes, their trees.

Planning first gives exact totals for progress reports and keeps the later,
document-building pass streaming: only ids and small counts are held here.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from datetime import datetime, timedelta

from legacy_emulator.generator_documents import company_name
from legacy_emulator.generator_scales import (
    ANCHOR,
    IdMint,
    Scale,
    allocate,
    moment_between,
    zipf_weights,
)

__all__ = [
    "ARCHIVE_JOBS",
    "ARCHIVE_WORKFLOWS_PER_JOB",
    "COLLECTIONS",
    "ROLE_NAMES",
    "TenantPlan",
    "WorkspacePlan",
    "plan_tenants",
    "planned_totals",
]

# Write order: referenced documents first, the high-volume history last.
COLLECTIONS: tuple[str, ...] = (
    "Accounts",
    "users",
    "groups",
    "roles",
    "connectors",
    "workflow",
    "workflow_versions",
    "workflowBkp",
    "workspace",
    "jobRun",
    "userActivity",
)

ROLE_NAMES = ("Admin", "Developer", "Operator", "Viewer", "Auditor")

# An oversized workspace carries an archive folder of soft-deleted jobs whose
# workflows have very wide diagrams: 8 x 5 summaries of ~90 kB make ~4 MB.
ARCHIVE_JOBS = 8
ARCHIVE_WORKFLOWS_PER_JOB = 5
MAX_OVERSIZED = 3

# (version, number of workflowBkp copies) of one workflow
WorkflowPlan = tuple[int, int]


@dataclass(frozen=True)
class WorkspacePlan:
    folders: tuple[tuple[tuple[WorkflowPlan, ...], ...], ...]  # folders -> jobs -> workflows
    oversized: bool

    @property
    def workflow_count(self) -> int:
        regular = sum(len(job) for folder in self.folders for job in folder)
        return regular + (ARCHIVE_JOBS * ARCHIVE_WORKFLOWS_PER_JOB if self.oversized else 0)


@dataclass
class TenantPlan:
    index: int
    subscription_id: str
    company: str
    domain: str
    created_at: datetime
    user_ids: list[str]
    connectors: int
    groups: int
    roles: int
    workspaces: list[WorkspacePlan]

    @property
    def workflow_count(self) -> int:
        return sum(workspace.workflow_count for workspace in self.workspaces)


def _versions(rng: random.Random) -> WorkflowPlan:
    version = rng.choices((1, 2, 3, 4, 5, 6), (50, 25, 12, 7, 4, 2))[0]
    backups = rng.choices((0, 1, 2), (80, 15, 5))[0]
    return version, backups


def _workspace(rng: random.Random, workflows: int, oversized: bool) -> WorkspacePlan:
    jobs = max(1, round(workflows / rng.uniform(1.5, 4.0)))
    folders = max(1, round(jobs / rng.uniform(1.0, 3.0)))
    job_sizes = allocate(workflows, [rng.random() + 0.2 for _ in range(jobs)], minimum=1)
    folder_sizes = allocate(jobs, [rng.random() + 0.2 for _ in range(folders)], minimum=1)
    tree: list[tuple[tuple[WorkflowPlan, ...], ...]] = []
    next_job = 0
    for size in folder_sizes:
        sizes = job_sizes[next_job : next_job + size]
        next_job += size
        tree.append(tuple(tuple(_versions(rng) for _ in range(n)) for n in sizes))
    return WorkspacePlan(tuple(tree), oversized)


def plan_tenants(
    scale: Scale, rng: random.Random, mint: IdMint, oversized: int
) -> list[TenantPlan]:
    """Tenants largest first; ``oversized`` workspaces (drawn across tenants) get an archive."""
    weights = zipf_weights(scale.tenants)
    users = allocate(scale.users, weights)
    workspaces = allocate(scale.workspaces, weights)
    workflows = [
        max(count, n)
        for count, n in zip(allocate(scale.workflows, weights), workspaces, strict=True)
    ]
    connectors = allocate(scale.connectors, weights)
    # drawn from their own stream so that clean and dirty seeds share everything else
    oversized_at = set(
        random.Random(f"{rng.random()}:oversized").sample(
            range(scale.workspaces), min(oversized, scale.workspaces)
        )
    )
    plans: list[TenantPlan] = []
    first_workspace = 0
    for index in range(scale.tenants):
        company = company_name(rng)
        created_at = moment_between(
            rng,
            ANCHOR - timedelta(days=scale.history_days),
            ANCHOR - timedelta(days=scale.history_days * 0.9),
        )
        # some workspaces are much larger than others within a tenant too
        sizes = allocate(
            workflows[index], [rng.paretovariate(1.5) for _ in range(workspaces[index])]
        )
        trees = [
            _workspace(rng, size, first_workspace + n in oversized_at)
            for n, size in enumerate(sizes)
        ]
        first_workspace += len(sizes)
        plans.append(
            TenantPlan(
                index=index,
                subscription_id=mint("sub_"),
                company=company,
                domain=company.lower().replace(" ", "-") + ".example",
                created_at=created_at,
                user_ids=[mint("usr_") for _ in range(users[index])],
                connectors=connectors[index],
                groups=max(1, users[index] // 8),
                roles=max(2, min(len(ROLE_NAMES), users[index] // 3)),
                workspaces=trees,
            )
        )
    return plans


def planned_totals(plans: list[TenantPlan], scale: Scale, days: int) -> dict[str, int]:
    """Exactly how many documents each collection will receive."""
    totals = dict.fromkeys(COLLECTIONS, 0)
    totals["Accounts"] = len(plans)
    for plan in plans:
        totals["users"] += len(plan.user_ids)
        totals["groups"] += plan.groups
        totals["roles"] += plan.roles
        totals["connectors"] += plan.connectors
        totals["workspace"] += len(plan.workspaces)
        for workspace in plan.workspaces:
            totals["workflow"] += workspace.workflow_count
            for folder in workspace.folders:
                for job in folder:
                    for version, backups in job:
                        totals["workflow_versions"] += 2 * (version - 1)
                        totals["workflowBkp"] += backups
    totals["jobRun"] = scale.job_runs_per_day * days
    totals["userActivity"] = scale.activity_per_day * days
    return totals
