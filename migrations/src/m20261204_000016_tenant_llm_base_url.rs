//! A tenant's own LLM endpoint (`tenant_llm_configs.base_url`): Azure OpenAI resources
//! and self-hosted OpenAI-compatible servers live at a URL per tenant. The app accepts
//! only URLs on the operator's allowlist (`TRELLIS_LLM_ALLOWED_ENDPOINTS`) and checks it
//! again on every call, so the column itself holds any http(s) URL the app wrote.

use sea_orm_migration::prelude::*;

const UP: &str = r#"
ALTER TABLE tenant_llm_configs
    ADD COLUMN base_url text
        CONSTRAINT tenant_llm_configs_base_url_check
        CHECK (char_length(base_url) BETWEEN 1 AND 2048 AND base_url ~ '^https?://');
"#;

const DOWN: &str = r#"
ALTER TABLE tenant_llm_configs DROP COLUMN IF EXISTS base_url;
"#;

sql_migration!();
