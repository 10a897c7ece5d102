//! SeaORM entities: one module per table, mirroring the migrations column for column.
//! They are storage shapes only; `crate::mapper` turns them into domain models, so
//! nothing outside this crate ever sees a row type.

pub mod api_key;
pub mod chunk;
pub mod document;
pub mod job;
pub mod knowledge_collection;
pub mod membership;
pub mod platform_admin;
pub mod refresh_token;
pub mod tenant;
pub mod tenant_llm_config;
pub mod tenant_widget_config;
pub mod user;
