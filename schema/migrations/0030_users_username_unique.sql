-- Usernames are unique per tenant, as emails are (0001): the legacy service answers 409 on
-- a duplicate but checks before it inserts, so racing adds both passed; here the database
-- decides. Duplicates already migrated are resolved first, as the batch writer resolves
-- them (migrators.spec.UniqueName): the earliest-created user (then the smaller UserId)
-- keeps the name, the others are stored as "name [UserId]" with the name as found in
-- extra->'$renamed'->'username', from where the rebuilt legacy document takes it back.
WITH ranked AS (
    SELECT id, row_number() OVER (
        PARTITION BY subscription_id, username
        ORDER BY coalesce(created_at, 'infinity'), user_id) AS n
    FROM users
    WHERE username IS NOT NULL
)
UPDATE users AS u
SET username = u.username || ' [' || u.user_id || ']',
    extra = jsonb_set(u.extra, '{$renamed}',
        coalesce(u.extra -> '$renamed', '{}'::jsonb) || jsonb_build_object('username', u.username)),
    synced_at = now()
FROM ranked AS r
WHERE r.id = u.id AND r.n > 1;

CREATE UNIQUE INDEX users_username_unique ON users (subscription_id, username)
    WHERE username IS NOT NULL;
