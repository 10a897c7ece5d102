//! Tenants and their one-per-tenant settings (LLM provider, chat widget), with the
//! row-level security policies that confine every session to one tenant.

use sea_orm_migration::prelude::*;

#[derive(DeriveMigrationName)]
pub struct Migration;

const UP: &str = r#"
CREATE TABLE tenants (
    id                  uuid        PRIMARY KEY,
    name                text        NOT NULL CHECK (char_length(name) BETWEEN 1 AND 200),
    slug                text        NOT NULL,
    subdomain           text        NOT NULL,
    custom_domain       text,
    branding            jsonb       NOT NULL DEFAULT '{}'::jsonb CHECK (jsonb_typeof(branding) = 'object'),
    config              jsonb       NOT NULL DEFAULT '{}'::jsonb CHECK (jsonb_typeof(config) = 'object'),
    plan                text        NOT NULL DEFAULT 'free'
                                    CHECK (plan IN ('free', 'starter', 'pro', 'enterprise')),
    status              text        NOT NULL DEFAULT 'active'
                                    CHECK (status IN ('active', 'suspended')),
    billing_customer_id text,
    created_at          timestamptz NOT NULL DEFAULT now(),
    updated_at          timestamptz NOT NULL DEFAULT now(),
    deleted_at          timestamptz,
    -- Slugs and subdomains stay reserved after a soft delete (deleted rows included),
    -- so links, bookmarks and DNS pointing at a deleted tenant can never be taken over.
    CONSTRAINT tenants_slug_key UNIQUE (slug),
    CONSTRAINT tenants_subdomain_key UNIQUE (subdomain)
);

-- A custom domain belongs to the customer, not to us: it is freed when its tenant is
-- deleted, so the customer can point it at a new tenant.
CREATE UNIQUE INDEX tenants_custom_domain_key ON tenants (custom_domain)
    WHERE deleted_at IS NULL AND custom_domain IS NOT NULL;

COMMENT ON TABLE tenants IS
    'Companies, organisations or workspaces; every other row belongs to one. Soft-deleted via deleted_at.';

-- A session sees its own tenant row; platform-scoped operations (create, list, get,
-- status, delete, slug resolution for login) switch on trellis.platform for their
-- transaction and see every tenant.
ALTER TABLE tenants ENABLE ROW LEVEL SECURITY;
ALTER TABLE tenants FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_self_or_platform ON tenants
    USING (
        id = NULLIF(current_setting('trellis.tenant_id', true), '')::uuid
        OR current_setting('trellis.platform', true) = 'on'
    )
    WITH CHECK (
        id = NULLIF(current_setting('trellis.tenant_id', true), '')::uuid
        OR current_setting('trellis.platform', true) = 'on'
    );

-- One row per tenant, so tenant_id alone is the primary key.
CREATE TABLE tenant_llm_configs (
    tenant_id          uuid        NOT NULL PRIMARY KEY
                                   CONSTRAINT tenant_llm_configs_tenant_id_fkey REFERENCES tenants (id),
    provider           text        NOT NULL CHECK (provider IN (
                                       'openai', 'azure_openai', 'anthropic', 'google',
                                       'mistral', 'ollama', 'openai_compatible')),
    model              text        NOT NULL CHECK (char_length(model) BETWEEN 1 AND 200),
    temperature        real        NOT NULL CHECK (temperature >= 0 AND temperature <= 2),
    max_tokens         integer     NOT NULL CHECK (max_tokens > 0),
    -- AES-256-GCM output (nonce || ciphertext) and the id of the key that sealed it;
    -- the plain key never reaches the database, only its masked hint.
    api_key_ciphertext bytea,
    api_key_key_id     text,
    api_key_hint       text,
    updated_at         timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT tenant_llm_configs_api_key_complete
        CHECK ((api_key_ciphertext IS NULL) = (api_key_key_id IS NULL))
);

ALTER TABLE tenant_llm_configs ENABLE ROW LEVEL SECURITY;
ALTER TABLE tenant_llm_configs FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON tenant_llm_configs
    USING (tenant_id = NULLIF(current_setting('trellis.tenant_id', true), '')::uuid)
    WITH CHECK (tenant_id = NULLIF(current_setting('trellis.tenant_id', true), '')::uuid);

CREATE TABLE tenant_widget_configs (
    tenant_id       uuid        NOT NULL PRIMARY KEY
                                CONSTRAINT tenant_widget_configs_tenant_id_fkey REFERENCES tenants (id),
    primary_color   text        NOT NULL,
    welcome_message text        NOT NULL,
    position        text        NOT NULL CHECK (position IN ('bottom_right', 'bottom_left')),
    enabled         boolean     NOT NULL DEFAULT false,
    -- A JSON array of origins (jsonb rather than text[]: the adapter's sea-orm build has
    -- no postgres-array support, and JSON keeps the list round-trippable as one value).
    allowed_origins jsonb       NOT NULL DEFAULT '[]'::jsonb CHECK (jsonb_typeof(allowed_origins) = 'array'),
    updated_at      timestamptz NOT NULL DEFAULT now()
);

ALTER TABLE tenant_widget_configs ENABLE ROW LEVEL SECURITY;
ALTER TABLE tenant_widget_configs FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON tenant_widget_configs
    USING (tenant_id = NULLIF(current_setting('trellis.tenant_id', true), '')::uuid)
    WITH CHECK (tenant_id = NULLIF(current_setting('trellis.tenant_id', true), '')::uuid);
"#;

const DOWN: &str = r#"
DROP TABLE IF EXISTS tenant_widget_configs;
DROP TABLE IF EXISTS tenant_llm_configs;
DROP TABLE IF EXISTS tenants;
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
