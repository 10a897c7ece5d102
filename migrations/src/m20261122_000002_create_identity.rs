//! Users, guest memberships, API keys, refresh tokens and platform superadmins, with
//! tenant-scoped keys, composite foreign keys and row-level security.

use sea_orm_migration::prelude::*;

#[derive(DeriveMigrationName)]
pub struct Migration;

const UP: &str = r#"
CREATE TABLE users (
    tenant_id      uuid        NOT NULL CONSTRAINT users_tenant_id_fkey REFERENCES tenants (id),
    id             uuid        NOT NULL,
    -- Stored lower-cased (the domain's Email normalises), so a plain unique index is
    -- case-insensitive without the citext extension.
    email          text        NOT NULL CHECK (email = lower(email)),
    email_verified boolean     NOT NULL DEFAULT false,
    -- PHC string; NULL for users who can only sign in through OAuth.
    password_hash  text,
    name           text        NOT NULL CHECK (char_length(name) BETWEEN 1 AND 200),
    username       text,
    avatar_url     text,
    -- Tenant roles only: the platform superadmin lives in platform_admins.
    role           text        NOT NULL CHECK (role IN (
                                   'tenant_admin', 'content_manager', 'content_writer', 'client',
                                   'sales', 'support', 'tech', 'manager', 'supporter', 'user')),
    tier           text        NOT NULL DEFAULT 'free'
                               CHECK (tier IN ('free', 'basic', 'pro', 'enterprise')),
    oauth_provider text,
    oauth_subject  text,
    preferences    jsonb       NOT NULL DEFAULT '{}'::jsonb CHECK (jsonb_typeof(preferences) = 'object'),
    active         boolean     NOT NULL DEFAULT true,
    last_login_at  timestamptz,
    created_at     timestamptz NOT NULL DEFAULT now(),
    updated_at     timestamptz NOT NULL DEFAULT now(),
    deleted_at     timestamptz,
    CONSTRAINT users_pkey PRIMARY KEY (tenant_id, id),
    CONSTRAINT users_oauth_complete CHECK ((oauth_provider IS NULL) = (oauth_subject IS NULL))
);

-- Uniqueness holds among live users only: deleting a user frees their email, username
-- and external account for a new user of the same tenant.
CREATE UNIQUE INDEX users_tenant_id_email_key ON users (tenant_id, email)
    WHERE deleted_at IS NULL;
CREATE UNIQUE INDEX users_tenant_id_username_key ON users (tenant_id, username)
    WHERE deleted_at IS NULL AND username IS NOT NULL;
CREATE UNIQUE INDEX users_tenant_id_oauth_key ON users (tenant_id, oauth_provider, oauth_subject)
    WHERE deleted_at IS NULL AND oauth_subject IS NOT NULL;

ALTER TABLE users ENABLE ROW LEVEL SECURITY;
ALTER TABLE users FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON users
    USING (tenant_id = NULLIF(current_setting('trellis.tenant_id', true), '')::uuid)
    WITH CHECK (tenant_id = NULLIF(current_setting('trellis.tenant_id', true), '')::uuid);

-- A guest membership lives in the *host* tenant (tenant_id).
CREATE TABLE memberships (
    tenant_id      uuid        NOT NULL CONSTRAINT memberships_tenant_id_fkey REFERENCES tenants (id),
    id             uuid        NOT NULL,
    home_tenant_id uuid        NOT NULL CONSTRAINT memberships_home_tenant_id_fkey REFERENCES tenants (id),
    -- No foreign key: the user row lives in another tenant (home_tenant_id). A key into
    -- another tenant's rows would tie two tenants together, which row-level security
    -- cannot see across and Citus cannot place when it distributes by tenant_id. Login
    -- checks the user in the home tenant instead.
    user_id        uuid        NOT NULL,
    email          text        NOT NULL CHECK (email = lower(email)),
    role           text        NOT NULL CHECK (role IN (
                                   'tenant_admin', 'content_manager', 'content_writer', 'client',
                                   'sales', 'support', 'tech', 'manager', 'supporter', 'user')),
    created_at     timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT memberships_pkey PRIMARY KEY (tenant_id, id),
    CONSTRAINT memberships_tenant_id_email_key UNIQUE (tenant_id, email),
    CONSTRAINT memberships_not_home CHECK (home_tenant_id <> tenant_id)
);

CREATE INDEX memberships_home_tenant_id_idx ON memberships (home_tenant_id);

ALTER TABLE memberships ENABLE ROW LEVEL SECURITY;
ALTER TABLE memberships FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON memberships
    USING (tenant_id = NULLIF(current_setting('trellis.tenant_id', true), '')::uuid)
    WITH CHECK (tenant_id = NULLIF(current_setting('trellis.tenant_id', true), '')::uuid);

CREATE TABLE api_keys (
    tenant_id    uuid        NOT NULL CONSTRAINT api_keys_tenant_id_fkey REFERENCES tenants (id),
    id           uuid        NOT NULL,
    name         text        NOT NULL CHECK (char_length(name) BETWEEN 1 AND 100),
    -- The public part of the key, used to look it up.
    prefix       text        NOT NULL,
    -- SHA-256 of the random secret (a slow hash is pointless for 256 random bits).
    secret_hash  text        NOT NULL,
    -- A JSON array of permission names (jsonb rather than text[]: the adapter's sea-orm
    -- build has no postgres-array support).
    scopes       jsonb       NOT NULL DEFAULT '[]'::jsonb CHECK (jsonb_typeof(scopes) = 'array'),
    created_by   uuid        NOT NULL,
    expires_at   timestamptz,
    last_used_at timestamptz,
    revoked_at   timestamptz,
    created_at   timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT api_keys_pkey PRIMARY KEY (tenant_id, id),
    CONSTRAINT api_keys_tenant_id_prefix_key UNIQUE (tenant_id, prefix),
    CONSTRAINT api_keys_created_by_fkey FOREIGN KEY (tenant_id, created_by)
        REFERENCES users (tenant_id, id)
);

CREATE INDEX api_keys_created_by_idx ON api_keys (tenant_id, created_by);

ALTER TABLE api_keys ENABLE ROW LEVEL SECURITY;
ALTER TABLE api_keys FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON api_keys
    USING (tenant_id = NULLIF(current_setting('trellis.tenant_id', true), '')::uuid)
    WITH CHECK (tenant_id = NULLIF(current_setting('trellis.tenant_id', true), '')::uuid);

CREATE TABLE refresh_tokens (
    tenant_id     uuid        NOT NULL CONSTRAINT refresh_tokens_tenant_id_fkey REFERENCES tenants (id),
    id            uuid        NOT NULL,
    -- All tokens rotated from one login; replaying a used token revokes the family.
    family_id     uuid        NOT NULL,
    -- No foreign key: a guest's session lives in the host tenant while the user row
    -- lives in their home tenant, so the user is not always in this tenant's users.
    user_id       uuid        NOT NULL,
    -- Set for a guest's session; deleting the membership ends its sessions.
    membership_id uuid,
    -- SHA-256 of the random token; the token itself is never stored.
    token_hash    text        NOT NULL,
    expires_at    timestamptz NOT NULL,
    used_at       timestamptz,
    revoked_at    timestamptz,
    created_at    timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT refresh_tokens_pkey PRIMARY KEY (tenant_id, id),
    CONSTRAINT refresh_tokens_tenant_id_token_hash_key UNIQUE (tenant_id, token_hash),
    CONSTRAINT refresh_tokens_membership_fkey FOREIGN KEY (tenant_id, membership_id)
        REFERENCES memberships (tenant_id, id) ON DELETE CASCADE
);

CREATE INDEX refresh_tokens_family_idx ON refresh_tokens (tenant_id, family_id);
CREATE INDEX refresh_tokens_user_idx ON refresh_tokens (tenant_id, user_id);
CREATE INDEX refresh_tokens_membership_idx ON refresh_tokens (tenant_id, membership_id);

ALTER TABLE refresh_tokens ENABLE ROW LEVEL SECURITY;
ALTER TABLE refresh_tokens FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON refresh_tokens
    USING (tenant_id = NULLIF(current_setting('trellis.tenant_id', true), '')::uuid)
    WITH CHECK (tenant_id = NULLIF(current_setting('trellis.tenant_id', true), '')::uuid);

-- Superadmins belong to no tenant.
CREATE TABLE platform_admins (
    id            uuid        PRIMARY KEY,
    email         text        NOT NULL CHECK (email = lower(email)),
    name          text        NOT NULL CHECK (char_length(name) BETWEEN 1 AND 200),
    password_hash text        NOT NULL,
    active        boolean     NOT NULL DEFAULT true,
    created_at    timestamptz NOT NULL DEFAULT now(),
    updated_at    timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT platform_admins_email_key UNIQUE (email)
);

-- Only platform-scoped transactions (trellis.platform = on) see or write superadmins,
-- so no tenant-scoped bug can read their password hashes.
ALTER TABLE platform_admins ENABLE ROW LEVEL SECURITY;
ALTER TABLE platform_admins FORCE ROW LEVEL SECURITY;
CREATE POLICY platform_only ON platform_admins
    USING (current_setting('trellis.platform', true) = 'on')
    WITH CHECK (current_setting('trellis.platform', true) = 'on');
"#;

const DOWN: &str = r#"
DROP TABLE IF EXISTS platform_admins;
DROP TABLE IF EXISTS refresh_tokens;
DROP TABLE IF EXISTS api_keys;
DROP TABLE IF EXISTS memberships;
DROP TABLE IF EXISTS users;
"#;

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager.get_connection().execute_unprepared(UP).await?;
        Ok(())
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager.get_connection().execute_unprepared(DOWN).await?;
        Ok(())
    }
}
