//! Content and AI chat: the platform's LLM model catalogue, each tenant's token
//! budgets, agents with their tools and saved versions, tool configurations,
//! conversations whose messages form a tree, attached files, memories, and metered
//! usage. Every tenant table is keyed and isolated by tenant; the catalogue is
//! platform data that every session may read and only platform mode may change.

use sea_orm_migration::prelude::*;

#[derive(DeriveMigrationName)]
pub struct Migration;

const UP: &str = r#"
-- The models Trellis knows how to call (seed 004 llm_models), shared by every tenant:
-- which ones a tenant may use is its allowed_llm_providers (tenants.config), applied by
-- the adapter when it reads the catalogue. Keyed by what the domain names a model by,
-- (provider, name); seed 004's surrogate id would only be one more way to say the same.
-- Prices are integers in millionths of a US dollar, so cost sums are exact.
CREATE TABLE llm_models (
    provider                  text        NOT NULL CONSTRAINT llm_models_provider_check CHECK (provider IN (
                                              'openai', 'azure_openai', 'anthropic', 'google',
                                              'mistral', 'ollama', 'openai_compatible')),
    name                      text        NOT NULL CHECK (char_length(name) BETWEEN 1 AND 200),
    context_window            integer     NOT NULL CHECK (context_window > 0),
    supports_streaming        boolean     NOT NULL DEFAULT true,
    input_micro_usd_per_1k    bigint      NOT NULL DEFAULT 0 CHECK (input_micro_usd_per_1k >= 0),
    output_micro_usd_per_1k   bigint      NOT NULL DEFAULT 0 CHECK (output_micro_usd_per_1k >= 0),
    created_at                timestamptz NOT NULL DEFAULT now(),
    updated_at                timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT llm_models_pkey PRIMARY KEY (provider, name)
);

COMMENT ON TABLE llm_models IS
    'Platform-wide model catalogue; readable by every session, written only in platform mode.';

-- Not tenant data, so there is no tenant to isolate; but RLS is still enabled and
-- forced, so that what may happen is said here rather than by the absence of a rule.
-- Every session may read the catalogue (it holds public model names and list prices,
-- and tenant-scoped transactions must read it to check an agent's model). Writing
-- needs platform mode (trellis.platform, as for tenants and platform_admins), so no
-- tenant-scoped bug can change a price or withdraw a model.
ALTER TABLE llm_models ENABLE ROW LEVEL SECURITY;
ALTER TABLE llm_models FORCE ROW LEVEL SECURITY;
CREATE POLICY read_by_everyone ON llm_models FOR SELECT USING (true);
CREATE POLICY platform_writes ON llm_models
    USING (current_setting('trellis.platform', true) = 'on')
    WITH CHECK (current_setting('trellis.platform', true) = 'on');

-- A tenant's token budgets (from its plan): one for the whole tenant and one each user
-- gets, each over a UTC day or month; a NULL limit means unlimited. One row per
-- tenant, so tenant_id alone is the primary key (as for tenant_llm_configs).
CREATE TABLE tenant_quotas (
    tenant_id             uuid        NOT NULL PRIMARY KEY
                                      CONSTRAINT tenant_quotas_tenant_id_fkey REFERENCES tenants (id),
    tenant_limit_tokens   bigint      CHECK (tenant_limit_tokens >= 0),
    tenant_period         text        CHECK (tenant_period IN ('day', 'month')),
    per_user_limit_tokens bigint      CHECK (per_user_limit_tokens >= 0),
    per_user_period       text        CHECK (per_user_period IN ('day', 'month')),
    updated_at            timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT tenant_quotas_tenant_budget_complete
        CHECK ((tenant_limit_tokens IS NULL) = (tenant_period IS NULL)),
    CONSTRAINT tenant_quotas_per_user_budget_complete
        CHECK ((per_user_limit_tokens IS NULL) = (per_user_period IS NULL))
);

-- A tenant reads its own budgets; only the platform sets them (platform mode plus the
-- tenant's scope). The restrictive policies are ANDed with tenant_isolation, so a
-- tenant-scoped transaction can never raise its own budget.
ALTER TABLE tenant_quotas ENABLE ROW LEVEL SECURITY;
ALTER TABLE tenant_quotas FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON tenant_quotas
    USING (tenant_id = NULLIF(current_setting('trellis.tenant_id', true), '')::uuid)
    WITH CHECK (tenant_id = NULLIF(current_setting('trellis.tenant_id', true), '')::uuid);
CREATE POLICY platform_inserts ON tenant_quotas AS RESTRICTIVE FOR INSERT
    WITH CHECK (current_setting('trellis.platform', true) = 'on');
CREATE POLICY platform_updates ON tenant_quotas AS RESTRICTIVE FOR UPDATE
    USING (current_setting('trellis.platform', true) = 'on')
    WITH CHECK (current_setting('trellis.platform', true) = 'on');
CREATE POLICY platform_deletes ON tenant_quotas AS RESTRICTIVE FOR DELETE
    USING (current_setting('trellis.platform', true) = 'on');

-- Tool instances of a base type (seed 004 tool_configs). The base types are the
-- domain's ToolKind, a closed set with code behind each, so they are a CHECK rather
-- than seed 004's base_tools table. allowed_roles is the per-tenant permission on the
-- tool (seed 004 tenant_tool_permissions): tools belong to one tenant here, so what is
-- left to grant is which of the tenant's roles may use it; empty means every role.
CREATE TABLE tool_configs (
    tenant_id     uuid        NOT NULL CONSTRAINT tool_configs_tenant_id_fkey REFERENCES tenants (id),
    id            uuid        NOT NULL,
    kind          text        NOT NULL CHECK (kind IN ('rag', 'http', 'web_search', 'function')),
    name          text        NOT NULL CHECK (char_length(name) BETWEEN 1 AND 100),
    description   text        CHECK (char_length(description) <= 2000),
    -- Kind-specific settings; never secrets.
    config        jsonb       NOT NULL DEFAULT '{}'::jsonb CHECK (jsonb_typeof(config) = 'object'),
    -- A JSON Schema for the model's input: always an object schema.
    input_schema  jsonb       NOT NULL CHECK (jsonb_typeof(input_schema) = 'object'
                                              AND input_schema ->> 'type' = 'object'),
    -- A JSON array of role names (jsonb rather than text[]: the adapter's sea-orm build
    -- has no postgres-array support). `<@` keeps it to known roles.
    allowed_roles jsonb       NOT NULL DEFAULT '[]'::jsonb
                              CONSTRAINT tool_configs_allowed_roles_check CHECK (
                                  jsonb_typeof(allowed_roles) = 'array'
                                  AND allowed_roles <@ '["superadmin", "tenant_admin", "content_manager",
                                      "content_writer", "client", "sales", "support", "tech",
                                      "manager", "supporter", "user"]'::jsonb),
    enabled       boolean     NOT NULL DEFAULT true,
    created_at    timestamptz NOT NULL DEFAULT now(),
    updated_at    timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT tool_configs_pkey PRIMARY KEY (tenant_id, id),
    CONSTRAINT tool_configs_tenant_id_name_key UNIQUE (tenant_id, name)
);

ALTER TABLE tool_configs ENABLE ROW LEVEL SECURITY;
ALTER TABLE tool_configs FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON tool_configs
    USING (tenant_id = NULLIF(current_setting('trellis.tenant_id', true), '')::uuid)
    WITH CHECK (tenant_id = NULLIF(current_setting('trellis.tenant_id', true), '')::uuid);

-- Agents (seeds 000, 002, 004): the current configuration. Every change bumps version
-- and saves the new configuration in agent_versions, in the same transaction.
CREATE TABLE agents (
    tenant_id                uuid        NOT NULL CONSTRAINT agents_tenant_id_fkey REFERENCES tenants (id),
    id                       uuid        NOT NULL,
    -- Unique in the tenant, exactly as written: the OpenAI-compatible API names agents
    -- by it.
    name                     text        NOT NULL CHECK (char_length(name) BETWEEN 1 AND 100),
    description              text        CHECK (char_length(description) <= 2000),
    -- The system prompt; may be empty.
    instructions             text        NOT NULL CHECK (char_length(instructions) <= 32000),
    provider                 text        NOT NULL CONSTRAINT agents_provider_check CHECK (provider IN (
                                             'openai', 'azure_openai', 'anthropic', 'google',
                                             'mistral', 'ollama', 'openai_compatible')),
    -- No foreign key to llm_models: a withdrawn model must not delete or block agents
    -- (the service checks the model against the catalogue on every change and answer).
    model                    text        NOT NULL CHECK (char_length(model) BETWEEN 1 AND 200),
    -- Sampling parameters, NULL meaning the provider's default; the same bounds as
    -- the domain's ModelParameters. real is f32, so values round-trip exactly.
    temperature              real        CHECK (temperature BETWEEN 0 AND 2),
    top_p                    real        CHECK (top_p > 0 AND top_p <= 1),
    max_tokens               integer     CHECK (max_tokens BETWEEN 1 AND 1000000),
    -- RAG collection ids, in order. No foreign key: collections belong to the RAG
    -- domain, which deletes them without asking content, and the retriever reports a
    -- collection that is gone. (Tools, which content owns, are in agent_tools.)
    knowledge_collection_ids jsonb       NOT NULL DEFAULT '[]'::jsonb
                                         CHECK (jsonb_typeof(knowledge_collection_ids) = 'array'
                                                AND jsonb_array_length(knowledge_collection_ids) <= 16),
    -- The template answers follow (seed 004 output_formats, one per agent).
    output_format            text        CHECK (char_length(output_format) <= 8000),
    icon                     text        CHECK (char_length(icon) <= 500),
    tier                     text        NOT NULL DEFAULT 'free' CHECK (tier IN ('free', 'pro')),
    published                boolean     NOT NULL DEFAULT false,
    -- The per-tenant permission on the agent (seed 004 tenant_agent_permissions): the
    -- tenant's roles that may use it; empty means every role that may chat.
    allowed_roles            jsonb       NOT NULL DEFAULT '[]'::jsonb
                                         CONSTRAINT agents_allowed_roles_check CHECK (
                                             jsonb_typeof(allowed_roles) = 'array'
                                             AND allowed_roles <@ '["superadmin", "tenant_admin",
                                                 "content_manager", "content_writer", "client",
                                                 "sales", "support", "tech", "manager",
                                                 "supporter", "user"]'::jsonb),
    -- 1 when created, +1 on every change; updates compare-and-set it.
    version                  integer     NOT NULL DEFAULT 1 CHECK (version >= 1),
    -- No foreign key, for the same reason as knowledge_collections.created_by.
    created_by               uuid,
    created_at               timestamptz NOT NULL DEFAULT now(),
    updated_at               timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT agents_pkey PRIMARY KEY (tenant_id, id),
    CONSTRAINT agents_tenant_id_name_key UNIQUE (tenant_id, name)
);

ALTER TABLE agents ENABLE ROW LEVEL SECURITY;
ALTER TABLE agents FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON agents
    USING (tenant_id = NULLIF(current_setting('trellis.tenant_id', true), '')::uuid)
    WITH CHECK (tenant_id = NULLIF(current_setting('trellis.tenant_id', true), '')::uuid);

-- An agent's tools, in order (seed 004 agent_tools). A table rather than a list on the
-- agent so the database guarantees an agent only names tools of its own tenant, and
-- a tool still in use cannot be deleted (agent_tools_tool_fkey is NO ACTION: the
-- delete fails and the adapter reports a conflict, even when it races an update that
-- adds the tool).
CREATE TABLE agent_tools (
    tenant_id uuid    NOT NULL CONSTRAINT agent_tools_tenant_id_fkey REFERENCES tenants (id),
    agent_id  uuid    NOT NULL,
    tool_id   uuid    NOT NULL,
    position  integer NOT NULL CHECK (position BETWEEN 0 AND 31),
    CONSTRAINT agent_tools_pkey PRIMARY KEY (tenant_id, agent_id, tool_id),
    CONSTRAINT agent_tools_position_key UNIQUE (tenant_id, agent_id, position),
    CONSTRAINT agent_tools_agent_fkey FOREIGN KEY (tenant_id, agent_id)
        REFERENCES agents (tenant_id, id) ON DELETE CASCADE,
    CONSTRAINT agent_tools_tool_fkey FOREIGN KEY (tenant_id, tool_id)
        REFERENCES tool_configs (tenant_id, id)
);

-- The index of agent_tools_tool_fkey; also finds the agents that use a tool.
CREATE INDEX agent_tools_tool_idx ON agent_tools (tenant_id, tool_id);

ALTER TABLE agent_tools ENABLE ROW LEVEL SECURITY;
ALTER TABLE agent_tools FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON agent_tools
    USING (tenant_id = NULLIF(current_setting('trellis.tenant_id', true), '')::uuid)
    WITH CHECK (tenant_id = NULLIF(current_setting('trellis.tenant_id', true), '')::uuid);

-- Every saved configuration of an agent, version 1 included; the highest is the
-- current one. A version is an immutable snapshot of the domain's AgentConfig as a
-- JSON document: it may name tools deleted since (restoring it re-checks them), so its
-- references are deliberately not foreign keys.
CREATE TABLE agent_versions (
    tenant_id uuid        NOT NULL CONSTRAINT agent_versions_tenant_id_fkey REFERENCES tenants (id),
    agent_id  uuid        NOT NULL,
    version   integer     NOT NULL CHECK (version >= 1),
    config    jsonb       NOT NULL CHECK (jsonb_typeof(config) = 'object'),
    -- No foreign key, as agents.created_by.
    saved_by  uuid,
    saved_at  timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT agent_versions_pkey PRIMARY KEY (tenant_id, agent_id, version),
    CONSTRAINT agent_versions_agent_fkey FOREIGN KEY (tenant_id, agent_id)
        REFERENCES agents (tenant_id, id) ON DELETE CASCADE
);

ALTER TABLE agent_versions ENABLE ROW LEVEL SECURITY;
ALTER TABLE agent_versions FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON agent_versions
    USING (tenant_id = NULLIF(current_setting('trellis.tenant_id', true), '')::uuid)
    WITH CHECK (tenant_id = NULLIF(current_setting('trellis.tenant_id', true), '')::uuid);

-- Conversations (seed 002).
CREATE TABLE conversations (
    tenant_id       uuid        NOT NULL CONSTRAINT conversations_tenant_id_fkey REFERENCES tenants (id),
    id              uuid        NOT NULL,
    -- No foreign key: a guest member chats in this tenant while their user row lives
    -- in their home tenant (see refresh_tokens.user_id).
    owner_id        uuid        NOT NULL,
    title           text        CHECK (char_length(title) BETWEEN 1 AND 200),
    -- What the conversation began with; an agent's current provider and model win.
    provider        text        NOT NULL CONSTRAINT conversations_provider_check CHECK (provider IN (
                                    'openai', 'azure_openai', 'anthropic', 'google',
                                    'mistral', 'ollama', 'openai_compatible')),
    model           text        NOT NULL CHECK (char_length(model) BETWEEN 1 AND 200),
    -- No foreign key: a conversation outlives its agent and keeps naming it (the
    -- domain's rule), so history still says which agent answered.
    agent_id        uuid,
    -- Overrides of the agent's parameters, as in agents.
    temperature     real        CHECK (temperature BETWEEN 0 AND 2),
    top_p           real        CHECK (top_p > 0 AND top_p <= 1),
    max_tokens      integer     CHECK (max_tokens BETWEEN 1 AND 1000000),
    archived        boolean     NOT NULL DEFAULT false,
    -- Set by every message insert, in the message's transaction.
    last_message_at timestamptz,
    created_at      timestamptz NOT NULL DEFAULT now(),
    updated_at      timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT conversations_pkey PRIMARY KEY (tenant_id, id)
);

-- A user's conversations in id (creation) order, the list every user sees; also
-- serves message search restricted to one owner.
CREATE INDEX conversations_owner_idx ON conversations (tenant_id, owner_id, id);
-- The conversations of an agent (list filter).
CREATE INDEX conversations_agent_idx ON conversations (tenant_id, agent_id);

ALTER TABLE conversations ENABLE ROW LEVEL SECURITY;
ALTER TABLE conversations FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON conversations
    USING (tenant_id = NULLIF(current_setting('trellis.tenant_id', true), '')::uuid)
    WITH CHECK (tenant_id = NULLIF(current_setting('trellis.tenant_id', true), '')::uuid);

-- Messages form a tree per conversation (seed 002 parent_id): edits and regenerations
-- add siblings, nothing is overwritten.
CREATE TABLE messages (
    tenant_id         uuid        NOT NULL CONSTRAINT messages_tenant_id_fkey REFERENCES tenants (id),
    id                uuid        NOT NULL,
    conversation_id   uuid        NOT NULL,
    -- NULL for a root; otherwise a message of the same conversation (messages_parent_fkey
    -- goes through (conversation_id, parent_id) together, so a branch can never hang
    -- under another conversation's message).
    parent_id         uuid,
    role              text        NOT NULL CHECK (role IN ('user', 'assistant', 'system', 'supporter')),
    content           text        NOT NULL,
    -- The human who wrote it; NULL for model output. No foreign key, as owner_id.
    author_id         uuid,
    provider          text        CONSTRAINT messages_provider_check CHECK (provider IN (
                                      'openai', 'azure_openai', 'anthropic', 'google',
                                      'mistral', 'ollama', 'openai_compatible')),
    model             text        CHECK (char_length(model) BETWEEN 1 AND 200),
    finish_reason     text        CHECK (finish_reason IN
                                      ('stop', 'length', 'content_filter', 'tool_calls', 'error')),
    -- Token usage of the call that wrote it: both or neither. bigint, because the
    -- domain counts in u32.
    prompt_tokens     bigint      CHECK (prompt_tokens BETWEEN 0 AND 4294967295),
    completion_tokens bigint      CHECK (completion_tokens BETWEEN 0 AND 4294967295),
    -- What went wrong, in words for the user; the seeds' error flag is error IS NOT NULL.
    error             text,
    -- Cut short: the client went away or the stream ended without a finish reason.
    unfinished        boolean     NOT NULL DEFAULT false,
    -- The sources the answer cites, as the domain's Citation objects: a snapshot of
    -- what was retrieved, kept even if the documents are deleted later.
    citations         jsonb       NOT NULL DEFAULT '[]'::jsonb CHECK (jsonb_typeof(citations) = 'array'),
    -- Full-text search over the user's messages (seed 002 messages_search_idx). 'simple'
    -- (lower-casing, no stemming, no stop words) rather than the seed's 'english', as
    -- for chunks.tsv: tenants write in many languages and English stemming would
    -- mangle the rest; exact words (names, codes, error messages) are what people
    -- search their history for. The adapter ORs the query's words and ranks by how
    -- many match, so stop words in a question cost nothing.
    tsv               tsvector    GENERATED ALWAYS AS (to_tsvector('simple', content)) STORED,
    created_at        timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT messages_pkey PRIMARY KEY (tenant_id, id),
    -- Redundant with the primary key as a uniqueness rule: it is what
    -- messages_parent_fkey references, and the index of messages_conversation_fkey
    -- that reads a conversation's messages.
    CONSTRAINT messages_conversation_id_id_key UNIQUE (tenant_id, conversation_id, id),
    CONSTRAINT messages_conversation_fkey FOREIGN KEY (tenant_id, conversation_id)
        REFERENCES conversations (tenant_id, id) ON DELETE CASCADE,
    -- Deleting a message deletes the branch below it.
    CONSTRAINT messages_parent_fkey FOREIGN KEY (tenant_id, conversation_id, parent_id)
        REFERENCES messages (tenant_id, conversation_id, id) ON DELETE CASCADE,
    CONSTRAINT messages_not_own_parent CHECK (parent_id <> id),
    CONSTRAINT messages_usage_complete CHECK ((prompt_tokens IS NULL) = (completion_tokens IS NULL))
);

-- The index of messages_parent_fkey (the children of a message).
CREATE INDEX messages_parent_idx ON messages (tenant_id, conversation_id, parent_id);
CREATE INDEX messages_tsv_idx ON messages USING gin (tsv);

ALTER TABLE messages ENABLE ROW LEVEL SECURITY;
ALTER TABLE messages FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON messages
    USING (tenant_id = NULLIF(current_setting('trellis.tenant_id', true), '')::uuid)
    WITH CHECK (tenant_id = NULLIF(current_setting('trellis.tenant_id', true), '')::uuid);

-- Metadata of attached files (seed 002 files); the bytes are in blob storage.
CREATE TABLE files (
    tenant_id             uuid        NOT NULL CONSTRAINT files_tenant_id_fkey REFERENCES tenants (id),
    id                    uuid        NOT NULL,
    -- No foreign key, as conversations.owner_id.
    owner_id              uuid        NOT NULL,
    conversation_id       uuid,
    filename              text        NOT NULL CHECK (char_length(filename) BETWEEN 1 AND 255),
    -- Sniffed from the bytes.
    mime_type             text        NOT NULL CHECK (char_length(mime_type) BETWEEN 1 AND 255),
    size_bytes            bigint      NOT NULL CHECK (size_bytes >= 0),
    -- Hex SHA-256 of the bytes.
    checksum              text        NOT NULL CHECK (char_length(checksum) BETWEEN 1 AND 128),
    storage_key           text        NOT NULL CHECK (char_length(storage_key) BETWEEN 1 AND 1024),
    -- The RAG document made from the file, once it was sent to a collection.
    knowledge_document_id uuid,
    created_at            timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT files_pkey PRIMARY KEY (tenant_id, id),
    -- A file outlives its conversation (its blob is deleted separately): deleting the
    -- conversation only clears conversation_id. The column list (Postgres 15+) keeps
    -- tenant_id, which is part of the key, from being nulled too.
    CONSTRAINT files_conversation_fkey FOREIGN KEY (tenant_id, conversation_id)
        REFERENCES conversations (tenant_id, id) ON DELETE SET NULL (conversation_id),
    CONSTRAINT files_knowledge_document_fkey FOREIGN KEY (tenant_id, knowledge_document_id)
        REFERENCES documents (tenant_id, id) ON DELETE SET NULL (knowledge_document_id)
);

-- The index of files_conversation_fkey; also lists a conversation's files.
CREATE INDEX files_conversation_idx ON files (tenant_id, conversation_id);
CREATE INDEX files_knowledge_document_idx ON files (tenant_id, knowledge_document_id);

ALTER TABLE files ENABLE ROW LEVEL SECURITY;
ALTER TABLE files FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON files
    USING (tenant_id = NULLIF(current_setting('trellis.tenant_id', true), '')::uuid)
    WITH CHECK (tenant_id = NULLIF(current_setting('trellis.tenant_id', true), '')::uuid);

-- The files attached to a message, in order (seed 002 messages.files). Keyed by
-- position, so a list that names a file twice round-trips as written. A deleted file
-- disappears from the messages it was attached to: its bytes are gone.
CREATE TABLE message_files (
    tenant_id  uuid    NOT NULL CONSTRAINT message_files_tenant_id_fkey REFERENCES tenants (id),
    message_id uuid    NOT NULL,
    position   integer NOT NULL CHECK (position >= 0),
    file_id    uuid    NOT NULL,
    CONSTRAINT message_files_pkey PRIMARY KEY (tenant_id, message_id, position),
    CONSTRAINT message_files_message_fkey FOREIGN KEY (tenant_id, message_id)
        REFERENCES messages (tenant_id, id) ON DELETE CASCADE,
    CONSTRAINT message_files_file_fkey FOREIGN KEY (tenant_id, file_id)
        REFERENCES files (tenant_id, id) ON DELETE CASCADE
);

-- The index of message_files_file_fkey.
CREATE INDEX message_files_file_idx ON message_files (tenant_id, file_id);

ALTER TABLE message_files ENABLE ROW LEVEL SECURITY;
ALTER TABLE message_files FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON message_files
    USING (tenant_id = NULLIF(current_setting('trellis.tenant_id', true), '')::uuid)
    WITH CHECK (tenant_id = NULLIF(current_setting('trellis.tenant_id', true), '')::uuid);

-- Facts about a user (seed 002 memories), as key and value; keys are unique per user.
CREATE TABLE memories (
    tenant_id  uuid        NOT NULL CONSTRAINT memories_tenant_id_fkey REFERENCES tenants (id),
    id         uuid        NOT NULL,
    -- No foreign key, as conversations.owner_id.
    owner_id   uuid        NOT NULL,
    key        text        NOT NULL CHECK (char_length(key) BETWEEN 1 AND 200),
    value      text        NOT NULL CHECK (char_length(value) BETWEEN 1 AND 2000),
    category   text        CHECK (char_length(category) BETWEEN 1 AND 100),
    source     text        NOT NULL CHECK (source IN ('conversation', 'manual', 'import')),
    -- The conversation it was learnt in, or an import's record id: text, because an
    -- import's ids are not ours (seed 002 had uuid, which only fits conversations).
    source_id  text        CHECK (char_length(source_id) BETWEEN 1 AND 200),
    -- Key, value and category, weighted in that order; 'simple' for the reasons given
    -- at messages.tsv.
    tsv        tsvector    GENERATED ALWAYS AS (
                               setweight(to_tsvector('simple', key), 'A')
                               || setweight(to_tsvector('simple', value), 'B')
                               || setweight(to_tsvector('simple', coalesce(category, '')), 'C')
                           ) STORED,
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT memories_pkey PRIMARY KEY (tenant_id, id),
    -- Also the index that lists one user's memories.
    CONSTRAINT memories_tenant_id_owner_id_key_key UNIQUE (tenant_id, owner_id, key)
);

CREATE INDEX memories_tsv_idx ON memories USING gin (tsv);

ALTER TABLE memories ENABLE ROW LEVEL SECURITY;
ALTER TABLE memories FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON memories
    USING (tenant_id = NULLIF(current_setting('trellis.tenant_id', true), '')::uuid)
    WITH CHECK (tenant_id = NULLIF(current_setting('trellis.tenant_id', true), '')::uuid);

-- Every metered model call, once: recording an event whose idempotency key the tenant
-- already has changes nothing (INSERT ... ON CONFLICT DO NOTHING on the key), so a
-- retried write never counts tokens twice. Billing meters from these rows, so they
-- keep no foreign keys: usage outlives deleted conversations, messages and users.
CREATE TABLE usage_events (
    tenant_id         uuid        NOT NULL CONSTRAINT usage_events_tenant_id_fkey REFERENCES tenants (id),
    id                uuid        NOT NULL,
    idempotency_key   text        NOT NULL CHECK (char_length(idempotency_key) BETWEEN 1 AND 200),
    user_id           uuid,
    conversation_id   uuid,
    message_id        uuid,
    provider          text        NOT NULL CONSTRAINT usage_events_provider_check CHECK (provider IN (
                                      'openai', 'azure_openai', 'anthropic', 'google',
                                      'mistral', 'ollama', 'openai_compatible')),
    model             text        NOT NULL CHECK (char_length(model) BETWEEN 1 AND 200),
    prompt_tokens     bigint      NOT NULL CHECK (prompt_tokens BETWEEN 0 AND 4294967295),
    completion_tokens bigint      NOT NULL CHECK (completion_tokens BETWEEN 0 AND 4294967295),
    -- The provider reported no usage; the figures are Trellis's estimate.
    estimated         boolean     NOT NULL DEFAULT false,
    occurred_at       timestamptz NOT NULL,
    recorded_at       timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT usage_events_pkey PRIMARY KEY (tenant_id, id),
    CONSTRAINT usage_events_tenant_id_idempotency_key_key UNIQUE (tenant_id, idempotency_key)
);

-- The quota check sums a period's tokens before every model call, for the tenant and
-- for the user: both are index-only scans with the token columns included.
CREATE INDEX usage_events_occurred_idx ON usage_events (tenant_id, occurred_at)
    INCLUDE (prompt_tokens, completion_tokens);
CREATE INDEX usage_events_user_idx ON usage_events (tenant_id, user_id, occurred_at)
    INCLUDE (prompt_tokens, completion_tokens);

ALTER TABLE usage_events ENABLE ROW LEVEL SECURITY;
ALTER TABLE usage_events FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON usage_events
    USING (tenant_id = NULLIF(current_setting('trellis.tenant_id', true), '')::uuid)
    WITH CHECK (tenant_id = NULLIF(current_setting('trellis.tenant_id', true), '')::uuid);

-- knowledge_collections.agent_id stays without the foreign key the RAG migration
-- announced: the RAG domain still accepts any agent id there (its adapter would
-- report the violation as an unexpected error, and its tests bind made-up ids). It
-- is a later migration's job, together with mapping
-- knowledge_collections_agent_fkey to a `NotFound("agent")` in the RAG adapter:
--   ALTER TABLE knowledge_collections ADD CONSTRAINT knowledge_collections_agent_fkey
--       FOREIGN KEY (tenant_id, agent_id) REFERENCES agents (tenant_id, id)
--       ON DELETE SET NULL (agent_id);
--   CREATE INDEX knowledge_collections_agent_idx ON knowledge_collections (tenant_id, agent_id);
"#;

const DOWN: &str = r#"
DROP TABLE IF EXISTS usage_events;
DROP TABLE IF EXISTS memories;
DROP TABLE IF EXISTS message_files;
DROP TABLE IF EXISTS files;
DROP TABLE IF EXISTS messages;
DROP TABLE IF EXISTS conversations;
DROP TABLE IF EXISTS agent_versions;
DROP TABLE IF EXISTS agent_tools;
DROP TABLE IF EXISTS agents;
DROP TABLE IF EXISTS tool_configs;
DROP TABLE IF EXISTS tenant_quotas;
DROP TABLE IF EXISTS llm_models;
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
