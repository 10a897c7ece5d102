//! Memories (seed 002): short facts about a user, as key and value, that answers draw
//! on. They come from conversations, from the user, or from an import, and belong to
//! one user; keys are unique per user.

use crate::MemoryId;
use serde::{Deserialize, Serialize};
use trellis_kernel::{InvalidValue, Timestamp, UserId};

/// Where a memory came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub enum MemorySource {
    Conversation,
    Manual,
    Import,
}

impl MemorySource {
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            MemorySource::Conversation => "conversation",
            MemorySource::Manual => "manual",
            MemorySource::Import => "import",
        }
    }

    /// # Errors
    /// For an unknown source.
    pub fn parse(s: &str) -> Result<Self, InvalidValue> {
        match s {
            "conversation" => Ok(MemorySource::Conversation),
            "manual" => Ok(MemorySource::Manual),
            "import" => Ok(MemorySource::Import),
            _ => Err(InvalidValue::new(
                "source",
                "must be conversation, manual or import",
            )),
        }
    }
}

/// A memory as stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Memory {
    pub id: MemoryId,
    pub owner_id: UserId,
    pub key: String,
    pub value: String,
    pub category: Option<String>,
    pub source: MemorySource,
    /// E.g. the conversation id it was learnt in, or the import's record id.
    pub source_id: Option<String>,
    #[cfg_attr(feature = "openapi", schema(value_type = String, format = DateTime))]
    #[serde(serialize_with = "trellis_kernel::timestamp::rfc3339")]
    pub created_at: Timestamp,
    #[cfg_attr(feature = "openapi", schema(value_type = String, format = DateTime))]
    #[serde(serialize_with = "trellis_kernel::timestamp::rfc3339")]
    pub updated_at: Timestamp,
}

/// A memory to insert.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewMemory {
    pub id: MemoryId,
    pub owner_id: UserId,
    pub key: String,
    pub value: String,
    pub category: Option<String>,
    pub source: MemorySource,
    pub source_id: Option<String>,
}

/// A partial change; `None` keeps a field.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct MemoryPatch {
    pub key: Option<String>,
    pub value: Option<String>,
    pub category: Option<Option<String>>,
}

/// A memory found by search, with its relevance (higher is better).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ScoredMemory {
    pub memory: Memory,
    pub score: f32,
}
