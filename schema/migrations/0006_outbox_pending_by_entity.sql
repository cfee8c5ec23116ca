-- The reverse sync drains the outbox one entity at a time, in id order
-- (WHERE applied_at IS NULL AND entity = $1 ORDER BY id): index exactly that, so one
-- entity's backlog is never read through another's.
DROP INDEX migration_outbox_pending;
CREATE INDEX migration_outbox_pending ON migration_outbox (entity, id) WHERE applied_at IS NULL;
