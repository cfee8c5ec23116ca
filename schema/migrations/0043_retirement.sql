-- The point of no return of the whole migration: `strangler retire` (control/retire.py)
-- records here, in one transaction, that MongoDB is retired. It does so only with every
-- entity of the flag table in `new`, the outbox drained and a final verify clean; the row
-- keeps that evidence. From then on PostgreSQL alone is the truth: the reverse sync
-- refuses to run (nothing is carried back to MongoDB any more) and no entity may leave
-- `new` (migrators/retirement.py answers "retired?"). docs/retire.md says what rollback
-- means after it.
--
-- At most one row (the primary key is a boolean that must be true). Not a tenant table:
-- operator bookkeeping, like routing_flag_changes. Neither role may update or delete it:
-- undoing the point of no return is not something the toolkit does; only the owner could.
CREATE TABLE migration_retirement (
    singleton            boolean PRIMARY KEY DEFAULT true
                             CONSTRAINT migration_retirement_one_row CHECK (singleton),
    retired_at           timestamptz NOT NULL DEFAULT now(),
    who                  text NOT NULL,
    reason               text,
    -- the flag table's canonical hash (proxy.rules.RulesFile.canonical_hash), all in new
    flag_table_hash      text NOT NULL,
    -- the legacy MongoDB that was retired, its password redacted
    mongo_url            text NOT NULL,
    -- the final verify: {"min_age": s, "entities": {name: {clean, mongo, postgres, ...}}}
    verify_summary       jsonb NOT NULL,
    -- the highest migration_outbox id applied to MongoDB at the point of no return (NULL:
    -- none ever was); every row still unapplied afterwards is a write MongoDB never got
    outbox_applied_up_to bigint
);

-- strangler retire records as strangler_sync (it reads the outbox, a tenant table, in the
-- same transaction); the proxies and the workers only ask whether it happened.
GRANT SELECT, INSERT ON migration_retirement TO strangler_sync;
GRANT SELECT ON migration_retirement TO strangler_app;
