-- shadow_compare: comparison counts over time, difference counts, and bounded samples.
--
-- Counts are kept per minute bucket so that "--since" reports stay exact to the minute
-- while the tables grow with time and distinct keys, not with traffic. ``run`` is 'live'
-- for proxied traffic and a replay run's id for `strangler shadow replay`.
-- Samples are redacted by the writer before insert (no secret ever reaches this table)
-- and bounded to the newest N per (run, entity, cause) by the writer's transaction.

CREATE TABLE IF NOT EXISTS shadow_comparisons (
    run           text        NOT NULL,
    entity        text        NOT NULL,
    endpoint      text        NOT NULL,
    bucket        timestamptz NOT NULL,
    legacy_status integer     NOT NULL,  -- 0: the side did not answer
    new_status    integer     NOT NULL,
    kind          text        NOT NULL CHECK (kind IN
                      ('equal', 'regression', 'truncated', 'lag', 'noise', 'expected', 'failed')),
    n             bigint      NOT NULL CHECK (n >= 0),
    PRIMARY KEY (run, entity, endpoint, bucket, legacy_status, new_status, kind)
);

CREATE INDEX IF NOT EXISTS shadow_comparisons_by_time ON shadow_comparisons (bucket, entity);

CREATE TABLE IF NOT EXISTS shadow_differences (
    run      text        NOT NULL,
    entity   text        NOT NULL,
    endpoint text        NOT NULL,
    bucket   timestamptz NOT NULL,
    verdict  text        NOT NULL CHECK (verdict IN ('regression', 'expected', 'noise', 'lag')),
    cause    text        NOT NULL CHECK (cause IN
                 ('status', 'missing_field', 'extra_field', 'null_vs_missing', 'type',
                  'number_precision', 'datetime_format', 'list_order', 'list_length', 'value')),
    path     text        NOT NULL,  -- list positions generalised to [*]
    rule     text        NOT NULL DEFAULT '',  -- the expected divergence's id, if any
    n        bigint      NOT NULL CHECK (n >= 0),
    PRIMARY KEY (run, entity, endpoint, bucket, verdict, cause, path, rule)
);

CREATE INDEX IF NOT EXISTS shadow_differences_by_time ON shadow_differences (bucket, entity);

CREATE TABLE IF NOT EXISTS shadow_samples (
    id            bigserial   PRIMARY KEY,
    recorded_at   timestamptz NOT NULL,
    run           text        NOT NULL,
    entity        text        NOT NULL,
    endpoint      text        NOT NULL,
    cause         text        NOT NULL,
    verdict       text        NOT NULL,
    path          text        NOT NULL,
    rule          text        NOT NULL DEFAULT '',
    reason        text        NOT NULL DEFAULT '',
    detail        text        NOT NULL DEFAULT '',
    legacy_status integer     NOT NULL,
    new_status    integer     NOT NULL,
    legacy_value  jsonb,
    new_value     jsonb,
    request       jsonb       NOT NULL  -- method, path, redacted query and body excerpt
);

CREATE INDEX IF NOT EXISTS shadow_samples_bound ON shadow_samples (run, entity, cause, id DESC);
