//! Messages form a tree per conversation (seed 002 `parentMessageId`): editing a user
//! message or regenerating an answer adds a sibling instead of overwriting, so every
//! branch stays readable. An assistant message carries the model that wrote it, why it
//! stopped, its token usage, the sources it cites, and an error when the provider
//! failed.

use crate::{ConversationId, FileId, KnowledgeCollectionId, KnowledgeDocumentId, MessageId};
use serde::{Deserialize, Serialize};
use trellis_kernel::{InvalidValue, Timestamp, UserId};
use trellis_tenancy::LlmProvider;

/// Who a message is from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub enum MessageRole {
    User,
    Assistant,
    System,
    /// A human supporter who took the conversation over (seed 004).
    Supporter,
}

impl MessageRole {
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            MessageRole::User => "user",
            MessageRole::Assistant => "assistant",
            MessageRole::System => "system",
            MessageRole::Supporter => "supporter",
        }
    }

    /// # Errors
    /// For an unknown role.
    pub fn parse(s: &str) -> Result<Self, InvalidValue> {
        match s {
            "user" => Ok(MessageRole::User),
            "assistant" => Ok(MessageRole::Assistant),
            "system" => Ok(MessageRole::System),
            "supporter" => Ok(MessageRole::Supporter),
            _ => Err(InvalidValue::new(
                "role",
                "must be user, assistant, system or supporter",
            )),
        }
    }
}

/// Why a model stopped writing. Adapters map provider vocabularies onto these
/// (Anthropic `end_turn`/`stop_sequence` → `Stop`, `max_tokens` → `Length`, ...).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub enum FinishReason {
    Stop,
    Length,
    ContentFilter,
    ToolCalls,
    /// The provider failed; the message's `error` says how.
    Error,
}

impl FinishReason {
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            FinishReason::Stop => "stop",
            FinishReason::Length => "length",
            FinishReason::ContentFilter => "content_filter",
            FinishReason::ToolCalls => "tool_calls",
            FinishReason::Error => "error",
        }
    }

    /// # Errors
    /// For an unknown reason.
    pub fn parse(s: &str) -> Result<Self, InvalidValue> {
        match s {
            "stop" => Ok(FinishReason::Stop),
            "length" => Ok(FinishReason::Length),
            "content_filter" => Ok(FinishReason::ContentFilter),
            "tool_calls" => Ok(FinishReason::ToolCalls),
            "error" => Ok(FinishReason::Error),
            _ => Err(InvalidValue::new("finish_reason", "unknown finish reason")),
        }
    }
}

/// Tokens one model call consumed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct TokenUsage {
    pub prompt_tokens: u32,
    pub completion_tokens: u32,
}

impl TokenUsage {
    #[must_use]
    pub fn total(self) -> u64 {
        u64::from(self.prompt_tokens) + u64::from(self.completion_tokens)
    }
}

/// A source an answer was grounded in, numbered as the prompt showed it (`[1]`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Citation {
    /// The number the answer cites it by, from 1.
    pub index: u32,
    pub collection_id: KnowledgeCollectionId,
    pub document_id: KnowledgeDocumentId,
    pub filename: String,
    /// Byte offsets of the passage in the document's extracted text.
    pub span_start: u32,
    pub span_end: u32,
    /// 1-based page, for paged formats.
    pub page: Option<u32>,
    /// Retrieval score (higher is better).
    pub score: f32,
}

/// A message as stored.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Message {
    pub id: MessageId,
    pub conversation_id: ConversationId,
    /// `None` for a root; otherwise a message of the same conversation.
    pub parent_id: Option<MessageId>,
    pub role: MessageRole,
    pub content: String,
    /// The human who wrote it (user or supporter); `None` for model output.
    pub author_id: Option<UserId>,
    pub provider: Option<LlmProvider>,
    pub model: Option<String>,
    pub finish_reason: Option<FinishReason>,
    pub usage: Option<TokenUsage>,
    /// Set when the provider failed: what went wrong, in words fit for the user. The
    /// error flag of the seeds is `error.is_some()`.
    pub error: Option<String>,
    /// The answer was cut short (the client went away, or the stream ended without a
    /// finish reason); `content` holds what had arrived.
    pub unfinished: bool,
    pub files: Vec<FileId>,
    pub citations: Vec<Citation>,
    #[cfg_attr(feature = "openapi", schema(value_type = String, format = DateTime))]
    #[serde(serialize_with = "trellis_kernel::timestamp::rfc3339")]
    pub created_at: Timestamp,
}

impl Message {
    #[must_use]
    pub fn is_error(&self) -> bool {
        self.error.is_some()
    }
}

/// A message to insert. The repository sets `created_at`.
#[derive(Debug, Clone, PartialEq)]
pub struct NewMessage {
    pub id: MessageId,
    pub conversation_id: ConversationId,
    pub parent_id: Option<MessageId>,
    pub role: MessageRole,
    pub content: String,
    pub author_id: Option<UserId>,
    pub provider: Option<LlmProvider>,
    pub model: Option<String>,
    pub finish_reason: Option<FinishReason>,
    pub usage: Option<TokenUsage>,
    pub error: Option<String>,
    pub unfinished: bool,
    pub files: Vec<FileId>,
    pub citations: Vec<Citation>,
}

impl NewMessage {
    /// A message written by a user.
    #[must_use]
    pub fn from_user(
        conversation_id: ConversationId,
        parent_id: Option<MessageId>,
        author: UserId,
        content: String,
        files: Vec<FileId>,
    ) -> Self {
        Self {
            id: MessageId::new(),
            conversation_id,
            parent_id,
            role: MessageRole::User,
            content,
            author_id: Some(author),
            provider: None,
            model: None,
            finish_reason: None,
            usage: None,
            error: None,
            unfinished: false,
            files,
            citations: Vec::new(),
        }
    }

    /// The message as it reads once stored at `at`.
    #[must_use]
    pub fn stored_at(self, at: Timestamp) -> Message {
        Message {
            id: self.id,
            conversation_id: self.conversation_id,
            parent_id: self.parent_id,
            role: self.role,
            content: self.content,
            author_id: self.author_id,
            provider: self.provider,
            model: self.model,
            finish_reason: self.finish_reason,
            usage: self.usage,
            error: self.error,
            unfinished: self.unfinished,
            files: self.files,
            citations: self.citations,
            created_at: at,
        }
    }

    /// The same message again, under a new id in another place of a tree (forks).
    #[must_use]
    pub fn copy_of(
        m: &Message,
        conversation_id: ConversationId,
        parent_id: Option<MessageId>,
    ) -> Self {
        Self {
            id: MessageId::new(),
            conversation_id,
            parent_id,
            role: m.role,
            content: m.content.clone(),
            author_id: m.author_id,
            provider: m.provider,
            model: m.model.clone(),
            finish_reason: m.finish_reason,
            usage: m.usage,
            error: m.error.clone(),
            unfinished: m.unfinished,
            files: m.files.clone(),
            citations: m.citations.clone(),
        }
    }
}

/// A message found by full-text search.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct MessageHit {
    pub message_id: MessageId,
    pub conversation_id: ConversationId,
    /// A short excerpt around the match.
    pub snippet: String,
    /// Relevance (higher is better); comparable only within one result list.
    pub score: f32,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roles_and_finish_reasons_round_trip_through_their_names() {
        for r in [
            MessageRole::User,
            MessageRole::Assistant,
            MessageRole::System,
            MessageRole::Supporter,
        ] {
            assert_eq!(MessageRole::parse(r.as_str()).unwrap(), r);
        }
        for f in [
            FinishReason::Stop,
            FinishReason::Length,
            FinishReason::ContentFilter,
            FinishReason::ToolCalls,
            FinishReason::Error,
        ] {
            assert_eq!(FinishReason::parse(f.as_str()).unwrap(), f);
        }
    }

    #[test]
    fn usage_totals_prompt_and_completion_tokens() {
        let u = TokenUsage {
            prompt_tokens: u32::MAX,
            completion_tokens: 1,
        };
        assert_eq!(u.total(), u64::from(u32::MAX) + 1);
    }
}
