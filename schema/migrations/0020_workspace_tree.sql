-- The workspace tree as the migration needs it (docs/tree.md).
--
-- The legacy workspace document holds, under each job, a *summary copy* of each of its
-- workflows ({workflow_id, workflow_name, d_flag, workFlowDiagram}). The workflow document
-- is authoritative for the definition; the summary is the tree's placement of it, and
-- may disagree with the definition (a stale diagram or name, an entry whose workflow
-- document does not exist, a workflow listed by no tree). Each entry is kept here as
-- found, so that the workspace document can be rebuilt exactly, and the disagreements
-- can be reported by comparing the two.
CREATE TABLE workflow_tree_entries (
    -- schema.keys.link_key('workflow_tree_entry', job_id, str(tree_position))
    id               uuid PRIMARY KEY,
    subscription_id  text NOT NULL REFERENCES subscriptions (subscription_id),
    workspace_id     text NOT NULL REFERENCES workspaces (workspace_id)
                         DEFERRABLE INITIALLY DEFERRED,
    job_id           text NOT NULL REFERENCES jobs (job_id) ON DELETE CASCADE
                         DEFERRABLE INITIALLY DEFERRED,
    -- Index in the job's workflows array: the tree renders in it.
    tree_position    integer NOT NULL
                         CONSTRAINT workflow_tree_entries_position_natural
                         CHECK (tree_position >= 0),
    -- Not a foreign key: the entry may name a workflow document that does not exist.
    workflow_id      text,
    workflow_name    text,
    is_deleted       boolean NOT NULL DEFAULT false,
    -- The summary's workFlowDiagram exactly as stored. Legacy writes it once, when the
    -- workflow is added, and never refreshes it (updateWorkflow leaves it stale); nothing
    -- renders it (getWorkspace leaves it out), only the rebuilt legacy document carries it.
    summary_diagram  text,
    extra            jsonb NOT NULL DEFAULT '{}',
    source_version   bigint,
    synced_at        timestamptz
);
CREATE INDEX workflow_tree_entries_tree ON workflow_tree_entries (job_id, tree_position);
CREATE INDEX workflow_tree_entries_by_workspace ON workflow_tree_entries (workspace_id);
CREATE INDEX workflow_tree_entries_by_workflow ON workflow_tree_entries (workflow_id);
SELECT strangler_enable_tenant_isolation('workflow_tree_entries');

-- A digest of everything below the workspace row (folders, jobs, dependencies, entries)
-- as the mapping produced it: the anti-entropy sweep compares a workspace's first-table
-- row, so a change deep inside the tree must show on that row. NULL when written by the
-- new side (the next sweep finds it different and re-reads the document: harmless).
ALTER TABLE workspaces ADD COLUMN tree_digest text;

-- workflowBkp: whole workflow documents copied before some updates (the old backup
-- habit). They are history, not workflows: one row per copy, the copy kept whole.
CREATE TABLE workflow_backups (
    -- uuid5 of 'workflow_backup:' || backup_id under schema.keys.ROW_KEY_NAMESPACE
    id               uuid PRIMARY KEY,
    -- The copy's _id in the legacy id form the migrators use (migrators.backfill.legacy_id_of).
    backup_id        text NOT NULL UNIQUE,
    subscription_id  text NOT NULL REFERENCES subscriptions (subscription_id),
    workflow_id      text,
    version          integer,
    -- When the copy was taken: the copy's updated_at (legacy stamps nothing else).
    copied_at        timestamptz,
    -- The copied document, _id left out, as relaxed Extended JSON (dates survive).
    snapshot         jsonb NOT NULL,
    extra            jsonb NOT NULL DEFAULT '{}',
    source_version   bigint,
    synced_at        timestamptz
);
CREATE INDEX workflow_backups_by_workflow ON workflow_backups (workflow_id,
    copied_at DESC NULLS LAST, backup_id);
SELECT strangler_enable_tenant_isolation('workflow_backups');
