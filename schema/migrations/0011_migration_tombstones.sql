-- Documents deleted from MongoDB outright (not soft-deleted with d_flag): the migration
-- writer deletes their rows and remembers the version of the deletion here, so that a
-- stale or repeated change of the same document (version not above it) cannot bring the
-- row back, while a later re-creation (a higher version) can. Not a tenant table: only
-- the owner and strangler_sync use it.
CREATE TABLE migration_tombstones (
    entity         text NOT NULL,
    legacy_id      text NOT NULL,
    source_version bigint NOT NULL,
    deleted_at     timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (entity, legacy_id)
);

GRANT SELECT, INSERT, UPDATE, DELETE, TRUNCATE ON migration_tombstones TO strangler_sync;
