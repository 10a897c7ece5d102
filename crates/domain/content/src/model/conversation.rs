//! Conversations (seed 002): who owns one, which model or agent answers in it, its
//! sampling parameters, and whether it is archived. Messages live in `message`.

use crate::{AgentId, ConversationId, ModelParameters};
use serde::Serialize;
use trellis_kernel::{TenantId, Timestamp, UserId};
use trellis_tenancy::LlmProvider;

/// A conversation as stored.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Conversation {
    pub id: ConversationId,
    pub tenant_id: TenantId,
    /// The user who started it; only they may post in it.
    pub owner_id: UserId,
    pub title: Option<String>,
    pub provider: LlmProvider,
    pub model: String,
    /// When set, the agent's current configuration answers (its provider and model
    /// win over the two fields above, which record what the conversation began with).
    pub agent_id: Option<AgentId>,
    /// Overrides the agent's parameters where set.
    pub parameters: ModelParameters,
    pub archived: bool,
    /// Set by the message repository whenever a message is inserted.
    #[cfg_attr(feature = "openapi", schema(value_type = Option<String>, format = DateTime))]
    #[serde(serialize_with = "trellis_kernel::timestamp::rfc3339_opt")]
    pub last_message_at: Option<Timestamp>,
    #[cfg_attr(feature = "openapi", schema(value_type = String, format = DateTime))]
    #[serde(serialize_with = "trellis_kernel::timestamp::rfc3339")]
    pub created_at: Timestamp,
    #[cfg_attr(feature = "openapi", schema(value_type = String, format = DateTime))]
    #[serde(serialize_with = "trellis_kernel::timestamp::rfc3339")]
    pub updated_at: Timestamp,
}

/// A conversation to insert.
#[derive(Debug, Clone, PartialEq)]
pub struct NewConversation {
    pub id: ConversationId,
    pub owner_id: UserId,
    pub title: Option<String>,
    pub provider: LlmProvider,
    pub model: String,
    pub agent_id: Option<AgentId>,
    pub parameters: ModelParameters,
}

/// A partial change; `None` keeps a field.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct ConversationPatch {
    pub title: Option<Option<String>>,
    pub archived: Option<bool>,
    pub parameters: Option<ModelParameters>,
}

/// Which conversations a repository lists.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ConversationFilter {
    /// `None`: every owner (only for callers allowed to see others' conversations).
    pub owner: Option<UserId>,
    pub archived: Option<bool>,
    pub agent: Option<AgentId>,
    /// Case-insensitive substring of the title.
    pub title_contains: Option<String>,
}
