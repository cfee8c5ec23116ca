-- The two high-volume, append-mostly tables, range-partitioned by month on created_at with
-- native partitioning (TimescaleDB is not available). Monthly partitions are created ahead
-- by schema.partitions.ensure_partitions (run by every upgrade and by
-- `strangler schema partitions`); the DEFAULT partition takes any row no month covers, so an
-- insert never fails for want of a partition.
--
-- A unique index on a partitioned table must include the partition key: the legacy ids are
-- unique together with created_at, which never changes for a run or an activity entry.
-- created_at is therefore NOT NULL here (the mapping falls back to the ObjectId's time).

CREATE TABLE job_runs (
    id              uuid NOT NULL,
    job_run_id      text NOT NULL,
    subscription_id text NOT NULL REFERENCES subscriptions (subscription_id),
    workflow_id     text,
    job_id          text,
    workspace_id    text,
    status          text CONSTRAINT job_runs_status_known
                        CHECK (status IN ('queued', 'running', 'completed', 'failed')),
    created_at      timestamptz NOT NULL,
    completed_at    timestamptz,
    duration_ms     bigint CONSTRAINT job_runs_duration_natural CHECK (duration_ms >= 0),
    triggered_by    text,
    trigger_type    text CONSTRAINT job_runs_trigger_type_known
                        CHECK (trigger_type IN ('manual', 'scheduled', 'webhook')),
    error_message   text,
    rows_processed  bigint CONSTRAINT job_runs_rows_natural CHECK (rows_processed >= 0),
    logs            jsonb,
    updated_at      timestamptz,
    extra           jsonb NOT NULL DEFAULT '{}',
    source_version  bigint,
    synced_at       timestamptz,
    PRIMARY KEY (id, created_at),
    CONSTRAINT job_runs_job_run_id_unique UNIQUE (job_run_id, created_at)
) PARTITION BY RANGE (created_at);
CREATE TABLE job_runs_default PARTITION OF job_runs DEFAULT;
CREATE INDEX job_runs_tenant_list ON job_runs (subscription_id, created_at DESC, job_run_id);
CREATE INDEX job_runs_by_workflow ON job_runs (workflow_id, created_at DESC, job_run_id);
CREATE INDEX job_runs_tenant_status ON job_runs (subscription_id, status, created_at DESC,
    job_run_id);
-- What a restarted worker looks at: runs that never finished.
CREATE INDEX job_runs_unfinished ON job_runs (created_at) WHERE status IN ('queued', 'running');
SELECT strangler_enable_tenant_isolation('job_runs');

-- Legacy userActivity entries have no id of their own: activity_id is the document's _id as
-- a string (entries the new side writes mint one). It doubles as the audit log of the new
-- side, written in the same transaction as the change it records.
CREATE TABLE user_activity (
    id              uuid NOT NULL,
    activity_id     text NOT NULL,
    subscription_id text NOT NULL REFERENCES subscriptions (subscription_id),
    user_id         text,
    action          text CONSTRAINT user_activity_action_known
                        CHECK (action IN ('created', 'updated', 'deleted', 'viewed', 'executed')),
    object_type     text,
    object_id       text,
    object_name     text,
    ip_address      text,
    user_agent      text,
    previous_data   jsonb,
    current_data    jsonb,
    created_at      timestamptz NOT NULL,
    extra           jsonb NOT NULL DEFAULT '{}',
    source_version  bigint,
    synced_at       timestamptz,
    PRIMARY KEY (id, created_at),
    CONSTRAINT user_activity_activity_id_unique UNIQUE (activity_id, created_at)
) PARTITION BY RANGE (created_at);
CREATE TABLE user_activity_default PARTITION OF user_activity DEFAULT;
CREATE INDEX user_activity_tenant_list ON user_activity (subscription_id, created_at DESC,
    activity_id);
CREATE INDEX user_activity_by_user ON user_activity (subscription_id, user_id, created_at DESC,
    activity_id);
CREATE INDEX user_activity_by_object ON user_activity (subscription_id, object_id,
    created_at DESC, activity_id);
CREATE INDEX user_activity_by_object_type ON user_activity (subscription_id, object_type,
    created_at DESC, activity_id);
SELECT strangler_enable_tenant_isolation('user_activity');
