//! SeaORM entities: one module per table, mirroring the migrations column for column.
//! They are storage shapes only; `crate::mapper` turns them into domain models, so
//! nothing outside this crate ever sees a row type.

pub mod agent;
pub mod agent_tool;
pub mod agent_version;
pub mod api_key;
pub mod chunk;
pub mod conversation;
pub mod document;
pub mod file;
pub mod job;
pub mod knowledge_collection;
pub mod llm_model;
pub mod membership;
pub mod memory;
pub mod message;
pub mod message_file;
pub mod platform_admin;
pub mod refresh_token;
pub mod tenant;
pub mod tenant_llm_config;
pub mod tenant_quota;
pub mod tenant_widget_config;
pub mod tool_config;
pub mod usage_event;
pub mod user;
