-- State of the new side that the legacy backend kept in one process's memory, now shared by
-- every proxy instance. Neither is migrated from legacy data; keys are random UUIDs. The
-- user ids come from token claims, which are trusted as issued and need not name a row of
-- users (LEGACY.md), so they carry no foreign key.

CREATE TABLE user_sessions (
    session_id      uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    subscription_id text NOT NULL REFERENCES subscriptions (subscription_id),
    user_id         text NOT NULL,
    -- SHA-256 of the bearer token: enough to recognise and revoke it, useless to replay.
    token_sha256    bytea NOT NULL UNIQUE
                        CONSTRAINT user_sessions_digest_length CHECK (octet_length(token_sha256) = 32),
    created_at      timestamptz NOT NULL DEFAULT now(),
    last_seen_at    timestamptz NOT NULL DEFAULT now(),
    expires_at      timestamptz NOT NULL,
    revoked_at      timestamptz,
    ip_address      text,
    user_agent      text,
    CONSTRAINT user_sessions_expire_after_start CHECK (expires_at > created_at)
);
CREATE INDEX user_sessions_by_user ON user_sessions (subscription_id, user_id, last_seen_at DESC);
CREATE INDEX user_sessions_live_by_expiry ON user_sessions (expires_at) WHERE revoked_at IS NULL;
SELECT strangler_enable_tenant_isolation('user_sessions');

-- Open WebSocket subscriptions: which proxy instance serves whom, so that any instance can
-- tell who listens and an instance's connections can be cleaned up when it dies.
CREATE TABLE websocket_connections (
    connection_id   uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    subscription_id text NOT NULL REFERENCES subscriptions (subscription_id),
    user_id         text NOT NULL,
    channel         text NOT NULL CONSTRAINT websocket_connections_channel_known
                        CHECK (channel IN ('run_now', 'activity')),
    workflow_id     text,
    instance_id     text NOT NULL,
    connected_at    timestamptz NOT NULL DEFAULT now(),
    last_seen_at    timestamptz NOT NULL DEFAULT now(),
    closed_at       timestamptz,
    CONSTRAINT websocket_connections_run_now_names_workflow
        CHECK ((channel = 'run_now') = (workflow_id IS NOT NULL))
);
CREATE INDEX websocket_connections_open_by_channel ON websocket_connections (subscription_id,
    channel, workflow_id) WHERE closed_at IS NULL;
CREATE INDEX websocket_connections_open_by_instance ON websocket_connections (instance_id)
    WHERE closed_at IS NULL;
SELECT strangler_enable_tenant_isolation('websocket_connections');
