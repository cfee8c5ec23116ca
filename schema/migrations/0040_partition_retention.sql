-- Retention of the monthly-partitioned time series (job_runs, user_activity): what
-- `strangler schema partitions --retain N --apply` dropped. Per table, the moment before
-- which rows are no longer kept (the first day of the oldest month kept, UTC). Whole
-- partitions are dropped, never rows deleted. The writer does not bring such rows back
-- (their documents are still in MongoDB, where a backfill or the sweep finds them), and
-- verify leaves documents and rows older than keep_from out. Rows no month holds (the
-- DEFAULT partition's, dates no month was made for) are never dropped by retention.
-- Not a tenant table.
CREATE TABLE partition_retention (
    table_name  text PRIMARY KEY,
    keep_from   timestamptz NOT NULL,
    set_at      timestamptz NOT NULL DEFAULT now(),
    dropped     text[] NOT NULL DEFAULT '{}'
);

GRANT SELECT, INSERT, UPDATE, DELETE ON partition_retention TO strangler_sync;
GRANT SELECT ON partition_retention TO strangler_app;
