-- The run queue's outbox: a run started on the new side (runNow) is a job_runs row AND a
-- row here, in the same transaction; the run worker's dispatcher adds each pending row's
-- message to the Redis Stream (strangler.runs), then marks it published. So there is no
-- run without a message (the row outlives a Redis outage or a crash) and no message
-- without a run (the message is added only after the run committed). A crash between the
-- XADD and the mark adds the message twice; consumers are idempotent by job_run_id.
-- The insert also NOTIFYs run_dispatch, so a listening dispatcher publishes at once.
-- A tenant table (runNow inserts as the caller's tenant); the dispatcher, as
-- strangler_sync, serves every tenant.
CREATE TABLE run_dispatch (
    id              bigserial PRIMARY KEY,
    job_run_id      text NOT NULL,
    subscription_id text NOT NULL REFERENCES subscriptions (subscription_id),
    workflow_id     text NOT NULL,
    created_at      timestamptz NOT NULL DEFAULT now(),
    published_at    timestamptz,
    message_id      text
);
CREATE INDEX run_dispatch_pending ON run_dispatch (id) WHERE published_at IS NULL;

SELECT strangler_enable_tenant_isolation('run_dispatch');
GRANT USAGE ON SEQUENCE run_dispatch_id_seq TO strangler_app, strangler_sync;
