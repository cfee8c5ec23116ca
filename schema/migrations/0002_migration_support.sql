-- What the migration itself needs beside the model (docs/schema.md lists every column).
-- These tables hold no tenant column: only the owner and strangler_sync use them, except
-- the outbox (written by the new side inside tenant transactions, so a tenant table) and
-- routing_flag_changes (appended by the proxy's admin endpoint).

-- Where each sync worker is in its feed (change-stream resume token, or the polling
-- feed's cursor), committed in the same transaction as the rows it produced.
CREATE TABLE migration_feed_positions (
    entity     text NOT NULL,
    feed       text NOT NULL,
    position   jsonb NOT NULL,
    updated_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (entity, feed)
);

-- Backfill progress per entity so an interrupted backfill resumes where it stopped.
CREATE TABLE migration_backfill_checkpoints (
    entity           text PRIMARY KEY,
    position         jsonb,
    rows_written     bigint NOT NULL DEFAULT 0 CHECK (rows_written >= 0),
    rows_quarantined bigint NOT NULL DEFAULT 0 CHECK (rows_quarantined >= 0),
    started_at       timestamptz NOT NULL DEFAULT now(),
    updated_at       timestamptz NOT NULL DEFAULT now(),
    completed_at     timestamptz
);

-- Documents that could not be mapped, with the reason and the original (MongoDB relaxed
-- Extended JSON, so dates and ObjectIds survive), instead of stopping or dropping them.
CREATE TABLE migration_quarantine (
    id             bigserial PRIMARY KEY,
    entity         text NOT NULL,
    legacy_id      text,
    reason         text NOT NULL,
    document       jsonb NOT NULL,
    source         text NOT NULL DEFAULT 'backfill'
                       CONSTRAINT migration_quarantine_source_known
                       CHECK (source IN ('backfill', 'sync', 'verify')),
    quarantined_at timestamptz NOT NULL DEFAULT now(),
    resolved_at    timestamptz,
    resolution     text
);
-- One open entry per document: a repeated backfill refreshes it rather than piling up.
CREATE UNIQUE INDEX migration_quarantine_open_unique ON migration_quarantine (entity, legacy_id)
    WHERE resolved_at IS NULL AND legacy_id IS NOT NULL;
CREATE INDEX migration_quarantine_by_time ON migration_quarantine (entity, quarantined_at DESC);

-- Feed events that failed to apply, kept for inspection and replay.
CREATE TABLE migration_dead_letters (
    id              bigserial PRIMARY KEY,
    entity          text NOT NULL,
    legacy_id       text,
    feed            text NOT NULL,
    event           jsonb NOT NULL,
    error_class     text NOT NULL,
    error           text NOT NULL,
    attempts        integer NOT NULL DEFAULT 1 CHECK (attempts >= 1),
    first_failed_at timestamptz NOT NULL DEFAULT now(),
    last_failed_at  timestamptz NOT NULL DEFAULT now(),
    replayed_at     timestamptz,
    replay_outcome  text CONSTRAINT migration_dead_letters_outcome_known
                        CHECK (replay_outcome IN ('applied', 'skipped', 'failed'))
);
CREATE INDEX migration_dead_letters_pending ON migration_dead_letters (entity, id)
    WHERE replayed_at IS NULL;

-- Writes the new side committed, to be carried back into the legacy documents by the
-- reverse sync. Written in the same transaction as the rows; origin lets each direction
-- ignore its own echoes.
CREATE TABLE migration_outbox (
    id              bigserial PRIMARY KEY,
    subscription_id text NOT NULL,
    entity          text NOT NULL,
    legacy_id       text NOT NULL,
    operation       text NOT NULL CONSTRAINT migration_outbox_operation_known
                        CHECK (operation IN ('insert', 'update', 'delete')),
    payload         jsonb NOT NULL,
    origin          text NOT NULL DEFAULT 'new'
                        CONSTRAINT migration_outbox_origin_known CHECK (origin IN ('new', 'legacy')),
    created_at      timestamptz NOT NULL DEFAULT now(),
    applied_at      timestamptz,
    attempts        integer NOT NULL DEFAULT 0 CHECK (attempts >= 0),
    last_error      text
);
CREATE INDEX migration_outbox_pending ON migration_outbox (id) WHERE applied_at IS NULL;
CREATE INDEX migration_outbox_by_row ON migration_outbox (entity, legacy_id, id);
SELECT strangler_enable_tenant_isolation('migration_outbox');
GRANT USAGE ON SEQUENCE migration_outbox_id_seq TO strangler_app;

-- Every change of an entity's routing mode, who made it and what the gates said.
CREATE TABLE routing_flag_changes (
    id           bigserial PRIMARY KEY,
    who          text NOT NULL,
    at           timestamptz NOT NULL DEFAULT now(),
    entity       text NOT NULL,
    from_mode    text CONSTRAINT routing_flag_changes_from_known
                     CHECK (from_mode IN ('legacy', 'shadow', 'canary', 'new')),
    to_mode      text NOT NULL CONSTRAINT routing_flag_changes_to_known
                     CHECK (to_mode IN ('legacy', 'shadow', 'canary', 'new')),
    percent      integer CONSTRAINT routing_flag_changes_percent_range
                     CHECK (percent BETWEEN 0 AND 100),
    gate_results jsonb NOT NULL DEFAULT '{}',
    forced       boolean NOT NULL DEFAULT false,
    reason       text
);
CREATE INDEX routing_flag_changes_by_entity ON routing_flag_changes (entity, at DESC);
GRANT SELECT, INSERT ON routing_flag_changes TO strangler_app;
GRANT USAGE ON SEQUENCE routing_flag_changes_id_seq TO strangler_app;

GRANT SELECT, INSERT, UPDATE, DELETE, TRUNCATE ON
    migration_feed_positions, migration_backfill_checkpoints, migration_quarantine,
    migration_dead_letters, routing_flag_changes
    TO strangler_sync;
GRANT USAGE, SELECT, UPDATE ON ALL SEQUENCES IN SCHEMA public TO strangler_sync;
