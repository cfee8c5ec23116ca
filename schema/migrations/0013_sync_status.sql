-- One row per entity: the forward sync worker that leads it, its heartbeat and its lag.
-- Written by the leader (strangler_sync) every few seconds and with every batch; read by
-- `flags plan` through migrators.sync_status.sync_status ("sync running", "lag small").
-- Not a tenant table.
CREATE TABLE migration_sync_status (
    entity          text PRIMARY KEY,
    feed            text NOT NULL,
    worker          text NOT NULL,
    leader_since    timestamptz NOT NULL DEFAULT now(),
    heartbeat_at    timestamptz NOT NULL DEFAULT now(),
    -- Seconds between a change in MongoDB and the commit that applied it, for the last
    -- batch; 0 when the feed has nothing older left; NULL before the first batch.
    lag_seconds     double precision CONSTRAINT migration_sync_status_lag_positive
                        CHECK (lag_seconds IS NULL OR lag_seconds >= 0),
    events_applied  bigint NOT NULL DEFAULT 0 CHECK (events_applied >= 0),
    last_applied_at timestamptz
);

GRANT SELECT, INSERT, UPDATE, DELETE ON migration_sync_status TO strangler_sync;
GRANT SELECT ON migration_sync_status TO strangler_app;
