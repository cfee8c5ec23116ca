-- Core of the target model: tenants, users, connectors and the workspace tree
-- with its workflows. Conventions (docs/schema.md):
--   * id uuid PRIMARY KEY = schema.keys.row_key(entity, legacy id), computed by the writer;
--   * the legacy id lives in a column named after the legacy field (workspace_id, ...),
--     text NOT NULL UNIQUE, never updated; references between rows use these legacy ids;
--   * every tenant table has subscription_id text NOT NULL REFERENCES subscriptions and
--     row-level security keyed on app.subscription_id (strangler_enable_tenant_isolation);
--   * every migrated table keeps unknown legacy fields in extra jsonb and carries the sync's
--     version guard: source_version bigint (a row is only overwritten by a higher one) and
--     synced_at timestamptz.

-- Enables and forces row-level security on a tenant table, adds the one policy that
-- scopes it to the transaction's subscription, and grants DML to the two roles.
-- Later migrations (of any package) call it for each table holding subscription_id.
CREATE FUNCTION strangler_enable_tenant_isolation(target regclass) RETURNS void
LANGUAGE plpgsql AS $fn$
BEGIN
    EXECUTE format('ALTER TABLE %s ENABLE ROW LEVEL SECURITY', target);
    EXECUTE format('ALTER TABLE %s FORCE ROW LEVEL SECURITY', target);
    EXECUTE format(
        'CREATE POLICY tenant_isolation ON %s '
        'USING (subscription_id = current_setting(''app.subscription_id'', true)) '
        'WITH CHECK (subscription_id = current_setting(''app.subscription_id'', true))',
        target);
    EXECUTE format('GRANT SELECT, INSERT, UPDATE, DELETE ON %s TO strangler_app', target);
    EXECUTE format('GRANT SELECT, INSERT, UPDATE, DELETE, TRUNCATE ON %s TO strangler_sync',
                   target);
END
$fn$;
REVOKE ALL ON FUNCTION strangler_enable_tenant_isolation(regclass) FROM PUBLIC;

-- One row per legacy Accounts document. The tenant's own row is its tenant table row.
CREATE TABLE subscriptions (
    id              uuid PRIMARY KEY,
    subscription_id text NOT NULL UNIQUE,
    company_name    text,
    plan_type       text CONSTRAINT subscriptions_plan_type_known
                        CHECK (plan_type IN ('free', 'team', 'enterprise')),
    status          text CONSTRAINT subscriptions_status_known
                        CHECK (status IN ('active', 'suspended')),
    created_at      timestamptz,
    updated_at      timestamptz,
    extra           jsonb NOT NULL DEFAULT '{}',
    source_version  bigint,
    synced_at       timestamptz
);
SELECT strangler_enable_tenant_isolation('subscriptions');

CREATE TABLE users (
    id                uuid PRIMARY KEY,
    user_id           text NOT NULL UNIQUE,
    subscription_id   text NOT NULL REFERENCES subscriptions (subscription_id),
    email             text,
    username          text,
    full_name         text,
    password_hash     text,
    photo_url         text,
    user_utc_offset   text,
    is_active         boolean,
    is_email_verified boolean,
    last_login_at     timestamptz,
    created_at        timestamptz,
    updated_at        timestamptz,
    extra             jsonb NOT NULL DEFAULT '{}',
    source_version    bigint,
    synced_at         timestamptz
);
-- The legacy service answers 409 on a duplicate email but races; the database now decides.
CREATE UNIQUE INDEX users_email_unique ON users (subscription_id, lower(email))
    WHERE email IS NOT NULL;
CREATE INDEX users_tenant_list ON users (subscription_id, created_at DESC NULLS LAST, user_id);
SELECT strangler_enable_tenant_isolation('users');

CREATE TABLE connectors (
    id                uuid PRIMARY KEY,
    connector_id      text NOT NULL UNIQUE,
    subscription_id   text NOT NULL REFERENCES subscriptions (subscription_id),
    connector_name    text,
    connector_type    text,
    description       text,
    -- connection_detail never holds the password: it is encrypted by the application
    -- (AES-GCM, DESIGN.md) into secret_ciphertext under the key named by secret_key_id.
    connection_detail jsonb NOT NULL DEFAULT '{}'
        CONSTRAINT connectors_detail_without_password
        CHECK (jsonb_typeof(connection_detail) = 'object' AND NOT connection_detail ? 'password'),
    secret_ciphertext bytea,
    secret_key_id     text,
    is_active         boolean,
    test_status       text CONSTRAINT connectors_test_status_known
                          CHECK (test_status IN ('success', 'failed', 'untested')),
    last_tested_at    timestamptz,
    created_by        text,
    created_at        timestamptz,
    updated_by        text,
    updated_at        timestamptz,
    is_deleted        boolean NOT NULL DEFAULT false,
    deleted_at        timestamptz,
    reason_to_delete  text,
    extra             jsonb NOT NULL DEFAULT '{}',
    source_version    bigint,
    synced_at         timestamptz,
    CONSTRAINT connectors_secret_has_key
        CHECK ((secret_ciphertext IS NULL) = (secret_key_id IS NULL)),
    CONSTRAINT connectors_deleted_at_only_when_deleted CHECK (deleted_at IS NULL OR is_deleted)
);
CREATE UNIQUE INDEX connectors_name_unique ON connectors (subscription_id, connector_name)
    WHERE NOT is_deleted;
CREATE INDEX connectors_tenant_list ON connectors (subscription_id, created_at DESC NULLS LAST,
    connector_id) WHERE NOT is_deleted;
CREATE INDEX connectors_tenant_type_list ON connectors (subscription_id, connector_type,
    created_at DESC NULLS LAST, connector_id) WHERE NOT is_deleted;
SELECT strangler_enable_tenant_isolation('connectors');

CREATE TABLE workspaces (
    id               uuid PRIMARY KEY,
    workspace_id     text NOT NULL UNIQUE,
    subscription_id  text NOT NULL REFERENCES subscriptions (subscription_id),
    workspace_name   text,
    description      text,
    owner_id         text,
    created_by       text,
    created_at       timestamptz,
    updated_by       text,
    updated_at       timestamptz,
    is_deleted       boolean NOT NULL DEFAULT false,
    deleted_at       timestamptz,
    reason_to_delete text,
    extra            jsonb NOT NULL DEFAULT '{}',
    source_version   bigint,
    synced_at        timestamptz,
    CONSTRAINT workspaces_deleted_at_only_when_deleted CHECK (deleted_at IS NULL OR is_deleted)
);
-- The review's "CONSTRAINT ... UNIQUE (...) WHERE" is not PostgreSQL: names are unique among
-- live rows through partial unique indexes instead.
CREATE UNIQUE INDEX workspaces_name_unique ON workspaces (subscription_id, workspace_name)
    WHERE NOT is_deleted;
CREATE INDEX workspaces_tenant_list ON workspaces (subscription_id, created_at DESC NULLS LAST,
    workspace_id) WHERE NOT is_deleted;
SELECT strangler_enable_tenant_isolation('workspaces');

-- Folders and jobs come out of the same workspace document as their parents, so their
-- references are enforced; DEFERRABLE lets one transaction write a tree in any order.
CREATE TABLE folders (
    id               uuid PRIMARY KEY,
    folder_id        text NOT NULL UNIQUE,
    subscription_id  text NOT NULL REFERENCES subscriptions (subscription_id),
    workspace_id     text NOT NULL REFERENCES workspaces (workspace_id)
                         DEFERRABLE INITIALLY DEFERRED,
    folder_name      text,
    description      text,
    -- Index of the folder in the legacy document's folders array: the tree renders in it.
    tree_position    integer CONSTRAINT folders_tree_position_natural CHECK (tree_position >= 0),
    created_by       text,
    created_at       timestamptz,
    updated_by       text,
    updated_at       timestamptz,
    is_deleted       boolean NOT NULL DEFAULT false,
    deleted_at       timestamptz,
    reason_to_delete text,
    extra            jsonb NOT NULL DEFAULT '{}',
    source_version   bigint,
    synced_at        timestamptz,
    CONSTRAINT folders_deleted_at_only_when_deleted CHECK (deleted_at IS NULL OR is_deleted)
);
CREATE UNIQUE INDEX folders_name_unique ON folders (workspace_id, folder_name)
    WHERE NOT is_deleted;
CREATE INDEX folders_tree ON folders (workspace_id, tree_position, folder_id);
SELECT strangler_enable_tenant_isolation('folders');

CREATE TABLE jobs (
    id               uuid PRIMARY KEY,
    job_id           text NOT NULL UNIQUE,
    subscription_id  text NOT NULL REFERENCES subscriptions (subscription_id),
    workspace_id     text NOT NULL REFERENCES workspaces (workspace_id)
                         DEFERRABLE INITIALLY DEFERRED,
    folder_id        text NOT NULL REFERENCES folders (folder_id) DEFERRABLE INITIALLY DEFERRED,
    job_name         text,
    description      text,
    environment      text,
    tree_position    integer CONSTRAINT jobs_tree_position_natural CHECK (tree_position >= 0),
    created_by       text,
    created_at       timestamptz,
    updated_by       text,
    updated_at       timestamptz,
    is_deleted       boolean NOT NULL DEFAULT false,
    deleted_at       timestamptz,
    reason_to_delete text,
    extra            jsonb NOT NULL DEFAULT '{}',
    source_version   bigint,
    synced_at        timestamptz,
    CONSTRAINT jobs_deleted_at_only_when_deleted CHECK (deleted_at IS NULL OR is_deleted)
);
CREATE UNIQUE INDEX jobs_name_unique ON jobs (folder_id, job_name) WHERE NOT is_deleted;
CREATE INDEX jobs_tree ON jobs (folder_id, tree_position, job_id);
CREATE INDEX jobs_by_workspace ON jobs (workspace_id);
SELECT strangler_enable_tenant_isolation('jobs');

-- The legacy workflow document is authoritative for everything but its place in the tree.
-- Its workspace/folder/job ids come from another collection, which syncs on its own schedule
-- and may not hold them at all (orphans): they are kept as found, not enforced by keys.
CREATE TABLE workflows (
    id                        uuid PRIMARY KEY,
    workflow_id               text NOT NULL UNIQUE,
    subscription_id           text NOT NULL REFERENCES subscriptions (subscription_id),
    workspace_id              text,
    folder_id                 text,
    job_id                    text,
    -- Index in the job's workflows array of the workspace document; NULL when not listed.
    tree_position             integer CONSTRAINT workflows_tree_position_natural
                                  CHECK (tree_position >= 0),
    workflow_name             text,
    description               text,
    environment               text,
    -- The legacy stores the diagram as a JSON string: parsed here, or, when it is not JSON
    -- (or empty), kept verbatim in workflow_diagram_unparsed. Never both.
    workflow_diagram          jsonb,
    workflow_diagram_unparsed text,
    parameters                jsonb,
    notification              jsonb,
    tags                      jsonb,
    version                   integer CONSTRAINT workflows_version_positive CHECK (version >= 1),
    is_active                 boolean,
    is_checked_out            boolean,
    checked_out_by            text,
    checked_out_at            timestamptz,
    source_connector_id       text,
    target_connector_id       text,
    created_by                text,
    created_at                timestamptz,
    updated_by                text,
    updated_at                timestamptz,
    is_deleted                boolean NOT NULL DEFAULT false,
    deleted_at                timestamptz,
    reason_to_delete          text,
    extra                     jsonb NOT NULL DEFAULT '{}',
    source_version            bigint,
    synced_at                 timestamptz,
    CONSTRAINT workflows_diagram_one_form
        CHECK (workflow_diagram IS NULL OR workflow_diagram_unparsed IS NULL),
    CONSTRAINT workflows_deleted_at_only_when_deleted CHECK (deleted_at IS NULL OR is_deleted)
);
CREATE UNIQUE INDEX workflows_name_unique ON workflows (job_id, workflow_name)
    WHERE NOT is_deleted;
CREATE INDEX workflows_by_job ON workflows (job_id, created_at DESC NULLS LAST, workflow_id)
    WHERE NOT is_deleted;
CREATE INDEX workflows_by_workspace ON workflows (workspace_id, created_at DESC NULLS LAST,
    workflow_id) WHERE NOT is_deleted;
CREATE INDEX workflows_tree ON workflows (job_id, tree_position, workflow_id);
SELECT strangler_enable_tenant_isolation('workflows');

-- A job's workflow_dependency list, in its order. The listed workflows may no longer exist
-- (LEGACY.md): they are kept as found; deleting a workflow removes it from these lists.
CREATE TABLE workflow_dependencies (
    job_id          text NOT NULL REFERENCES jobs (job_id) ON DELETE CASCADE
                        DEFERRABLE INITIALLY DEFERRED,
    workflow_id     text NOT NULL,
    subscription_id text NOT NULL REFERENCES subscriptions (subscription_id),
    position        integer NOT NULL CONSTRAINT workflow_dependencies_position_natural
                        CHECK (position >= 0),
    synced_at       timestamptz,
    PRIMARY KEY (job_id, workflow_id)
);
CREATE INDEX workflow_dependencies_by_workflow ON workflow_dependencies (workflow_id);
SELECT strangler_enable_tenant_isolation('workflow_dependencies');

-- Legacy workflow_versions documents carry no id of their own: version_id is the
-- document's _id as a string (new versions mint one). Numbers are not unique in legacy
-- data (check-ins raced without locking), so (workflow_id, version_number) is indexed only.
CREATE TABLE workflow_versions (
    id                uuid PRIMARY KEY,
    version_id        text NOT NULL UNIQUE,
    subscription_id   text NOT NULL REFERENCES subscriptions (subscription_id),
    workflow_id       text NOT NULL,
    version_number    integer NOT NULL CONSTRAINT workflow_versions_number_positive
                          CHECK (version_number >= 1),
    change_type       text CONSTRAINT workflow_versions_change_type_known
                          CHECK (change_type IN ('check_in', 'check_out', 'restore')),
    comment           text,
    workflow_snapshot jsonb,
    created_by        text,
    created_at        timestamptz,
    extra             jsonb NOT NULL DEFAULT '{}',
    source_version    bigint,
    synced_at         timestamptz
);
CREATE INDEX workflow_versions_by_workflow ON workflow_versions (workflow_id,
    created_at DESC NULLS LAST, version_id);
CREATE INDEX workflow_versions_by_number ON workflow_versions (workflow_id, version_number);
SELECT strangler_enable_tenant_isolation('workflow_versions');
