-- Groups, roles, their memberships, and per-object permissions of the new side.
-- Legacy keeps memberships inside the group/role document as an array of UserIds; here each
-- membership is a row, keyed by the pair of legacy ids, with its index in that array so
-- lists render in the legacy order. The listed users may not exist (dirty data, and users
-- sync on their own schedule): user ids are kept as found, not enforced by a key.

CREATE TABLE groups (
    id              uuid PRIMARY KEY,
    group_id        text NOT NULL UNIQUE,
    subscription_id text NOT NULL REFERENCES subscriptions (subscription_id),
    group_name      text,
    description     text,
    created_by      text,
    created_at      timestamptz,
    updated_at      timestamptz,
    extra           jsonb NOT NULL DEFAULT '{}',
    source_version  bigint,
    synced_at       timestamptz
);
CREATE UNIQUE INDEX groups_name_unique ON groups (subscription_id, group_name)
    WHERE group_name IS NOT NULL;
CREATE INDEX groups_tenant_list ON groups (subscription_id, created_at DESC NULLS LAST, group_id);
SELECT strangler_enable_tenant_isolation('groups');

CREATE TABLE user_groups (
    group_id        text NOT NULL REFERENCES groups (group_id) ON DELETE CASCADE
                        DEFERRABLE INITIALLY DEFERRED,
    user_id         text NOT NULL,
    subscription_id text NOT NULL REFERENCES subscriptions (subscription_id),
    position        integer NOT NULL CONSTRAINT user_groups_position_natural
                        CHECK (position >= 0),
    added_at        timestamptz,
    synced_at       timestamptz,
    PRIMARY KEY (group_id, user_id)
);
CREATE INDEX user_groups_by_user ON user_groups (user_id);
SELECT strangler_enable_tenant_isolation('user_groups');

CREATE TABLE roles (
    id              uuid PRIMARY KEY,
    role_id         text NOT NULL UNIQUE,
    subscription_id text NOT NULL REFERENCES subscriptions (subscription_id),
    role_name       text,
    description     text,
    permissions     jsonb NOT NULL DEFAULT '[]'
                        CONSTRAINT roles_permissions_array CHECK (jsonb_typeof(permissions) = 'array'),
    created_by      text,
    created_at      timestamptz,
    updated_at      timestamptz,
    extra           jsonb NOT NULL DEFAULT '{}',
    source_version  bigint,
    synced_at       timestamptz
);
CREATE UNIQUE INDEX roles_name_unique ON roles (subscription_id, role_name)
    WHERE role_name IS NOT NULL;
CREATE INDEX roles_tenant_list ON roles (subscription_id, created_at DESC NULLS LAST, role_id);
SELECT strangler_enable_tenant_isolation('roles');

CREATE TABLE user_roles (
    role_id         text NOT NULL REFERENCES roles (role_id) ON DELETE CASCADE
                        DEFERRABLE INITIALLY DEFERRED,
    user_id         text NOT NULL,
    subscription_id text NOT NULL REFERENCES subscriptions (subscription_id),
    position        integer NOT NULL CONSTRAINT user_roles_position_natural
                        CHECK (position >= 0),
    added_at        timestamptz,
    synced_at       timestamptz,
    PRIMARY KEY (role_id, user_id)
);
CREATE INDEX user_roles_by_user ON user_roles (user_id);
SELECT strangler_enable_tenant_isolation('user_roles');

-- Who may do what to one object; new with the target model (the legacy backend has only
-- role-wide permission strings), so its key is a plain random UUID.
CREATE TABLE object_permissions (
    id              uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    subscription_id text NOT NULL REFERENCES subscriptions (subscription_id),
    object_type     text NOT NULL CONSTRAINT object_permissions_object_type_known
                        CHECK (object_type IN ('workspace', 'folder', 'job', 'workflow',
                                               'connector')),
    object_id       text NOT NULL,
    principal_type  text NOT NULL CONSTRAINT object_permissions_principal_type_known
                        CHECK (principal_type IN ('user', 'group', 'role')),
    principal_id    text NOT NULL,
    permission      text NOT NULL CONSTRAINT object_permissions_permission_known
                        CHECK (permission IN ('read', 'write', 'execute', 'admin')),
    granted_by      text,
    granted_at      timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT object_permissions_once
        UNIQUE (object_type, object_id, principal_type, principal_id, permission)
);
CREATE INDEX object_permissions_by_principal ON object_permissions (subscription_id,
    principal_type, principal_id);
SELECT strangler_enable_tenant_isolation('object_permissions');
