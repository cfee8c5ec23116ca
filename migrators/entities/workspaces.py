"""The workspace tree's specs: workflow documents, workspace documents, and history.

Four entities, in migration order (docs/tree.md):

* ``workflows`` (``workflow`` -> ``workflows``): authoritative for definitions
  (:mod:`migrators.entities.tree_workflows`);
* ``workspaces`` (``workspace`` -> ``workspaces``, ``folders``, ``jobs``,
  ``workflow_dependencies``, ``workflow_tree_entries``): authoritative for placement
  (:mod:`migrators.entities.tree_workspace`); its child tables are applied row by row,
  touching only the rows that changed (:mod:`migrators.tree_apply`), and where the tree
  and the workflow documents disagree it is reported (:mod:`migrators.entities.tree_checks`);
* ``workflow_versions`` and ``workflow_backups`` (``workflowBkp``): history
  (:mod:`migrators.entities.tree_history`).
"""

from __future__ import annotations

from migrators.entities.tree_checks import tree_disagreements
from migrators.entities.tree_history import (
    backup_document,
    map_backup,
    map_version,
    normalize_backup,
    normalize_version,
    version_document,
)
from migrators.entities.tree_workflows import map_workflow, normalize_workflow, workflow_document
from migrators.entities.tree_workspace import (
    TREE_TABLES,
    map_workspace,
    normalize_workspace,
    workspace_document,
)
from migrators.spec import EntitySpec, Reference, TenantFrom, UniqueName
from migrators.tree_apply import AFTER_APPLY, CHILDREN, ChildTable

__all__ = ["SPECS", "TREE_CHILDREN"]

_TENANT = Reference(
    "subscription_id", "subscriptions", "subscription_id", "unknown_subscription", required=True
)
_CREATOR = Reference("created_by", "users", "user_id", "dangling_created_by")
# History documents belong to their workflow's tenant (migrators.spec.TenantFrom).
_WORKFLOW_TENANT = TenantFrom(
    "workflow_id", "workflows", "workflow_id", entity="workflows", kind="unknown_workflow"
)

TREE_CHILDREN: tuple[ChildTable, ...] = (
    ChildTable(
        "folders",
        parent_column="workspace_id",
        id_column="folder_id",
        unique_columns=("folder_name",),
        owner_column="workspace_id",
    ),
    ChildTable(
        "jobs",
        parent_column="folder_id",
        parent_table="folders",
        id_column="job_id",
        root="t.workspace_id",
        unique_columns=("job_name",),
        owner_column="workspace_id",
    ),
    ChildTable(
        "workflow_dependencies",
        parent_column="job_id",
        parent_table="jobs",
        root="(SELECT j.workspace_id FROM jobs AS j WHERE j.job_id = t.job_id)",
        key=("job_id", "workflow_id"),
        versioned=False,
    ),
    ChildTable(
        "workflow_tree_entries", parent_column="job_id", parent_table="jobs", root="t.workspace_id"
    ),
)

SPECS = (
    EntitySpec(
        name="workflows",
        collection="workflow",
        id_field="workflow_id",
        tables=("workflows",),
        map_document=map_workflow,
        to_document=workflow_document,
        depends_on=("subscriptions", "users", "connectors"),
        key_entity="workflow",
        flag_entity="workspaces",
        legacy_id_column="workflow_id",
        normalize=normalize_workflow,
        unique_names=(UniqueName("workflow_name", scope=("job_id",), live="NOT is_deleted"),),
        references=(
            _TENANT,
            _CREATOR,
            Reference("source_connector_id", "connectors", "connector_id", "dangling_connector"),
            Reference("target_connector_id", "connectors", "connector_id", "dangling_connector"),
        ),
    ),
    EntitySpec(
        name="workspaces",
        collection="workspace",
        id_field="workspace_id",
        tables=TREE_TABLES,
        map_document=map_workspace,
        to_document=workspace_document,
        depends_on=("subscriptions", "users", "workflows"),
        key_entity="workspace",
        legacy_id_column="workspace_id",
        normalize=normalize_workspace,
        unique_names=(UniqueName("workspace_name", live="NOT is_deleted"),),
        references=(
            _TENANT,
            _CREATOR,
            Reference("owner_id", "users", "user_id", "dangling_owner"),
        ),
        extra={CHILDREN: TREE_CHILDREN, AFTER_APPLY: tree_disagreements},
    ),
    EntitySpec(
        name="workflow_versions",
        collection="workflow_versions",
        id_field="_id",
        tables=("workflow_versions",),
        map_document=map_version,
        to_document=version_document,
        depends_on=("subscriptions", "workflows"),
        key_entity="workflow_version",
        flag_entity="workspaces",
        legacy_id_column="version_id",
        normalize=normalize_version,
        references=(_TENANT, _CREATOR),
        tenant_from=_WORKFLOW_TENANT,
        sweep_only=True,  # no answer names a version or a backup
    ),
    EntitySpec(
        name="workflow_backups",
        collection="workflowBkp",
        id_field="_id",
        tables=("workflow_backups",),
        map_document=map_backup,
        to_document=backup_document,
        depends_on=("subscriptions", "workflows"),
        legacy_id_column="backup_id",
        flag_entity="workspaces",
        normalize=normalize_backup,
        references=(_TENANT,),
        tenant_from=_WORKFLOW_TENANT,
        sweep_only=True,  # no answer names a version or a backup
    ),
)
