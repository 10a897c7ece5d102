//! What goes to a chat model and what comes back: the request (messages, model,
//! parameters), the streamed chunks, a whole completion, provider failures, and the
//! passages retrieval hands over for grounding. Adapters for OpenAI-compatible and
//! Anthropic APIs translate to and from these.

use crate::{
    FinishReason, KnowledgeCollectionId, KnowledgeDocumentId, ModelParameters, TokenUsage,
};
use futures::Stream;
use serde::{Deserialize, Serialize};
use std::pin::Pin;
use trellis_tenancy::LlmProvider;

/// A role in a model's prompt (supporter messages go in as `Assistant`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ChatRole {
    System,
    User,
    Assistant,
}

/// One prompt message.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChatMessage {
    pub role: ChatRole,
    pub content: String,
}

/// A call to a chat model. The API key is not here: the adapter finds the tenant's
/// own (encrypted) key from the `TenantCtx` it is given.
#[derive(Debug, Clone, PartialEq)]
pub struct ChatRequest {
    pub provider: LlmProvider,
    pub model: String,
    /// At most one leading `System` message, then the conversation.
    pub messages: Vec<ChatMessage>,
    pub parameters: ModelParameters,
}

/// One event of a streamed answer.
#[derive(Debug, Clone, PartialEq)]
pub enum ChatChunk {
    /// More answer text.
    Delta(String),
    /// Token counts (usually once, near the end; the last one wins).
    Usage(TokenUsage),
    /// Why the model stopped. Well-formed streams end with one.
    Finish(FinishReason),
    /// The provider failed mid-stream (or the stream was malformed or timed out);
    /// nothing follows.
    Error(ProviderError),
}

/// A streamed answer. `'static` and `Send` so it can be driven by a spawned task;
/// dropping it must cancel the upstream request.
pub type ChatStream = Pin<Box<dyn Stream<Item = ChatChunk> + Send>>;

/// A whole answer, for models that do not stream (and non-streaming callers).
#[derive(Debug, Clone, PartialEq)]
pub struct Completion {
    pub content: String,
    pub finish_reason: FinishReason,
    pub usage: Option<TokenUsage>,
}

/// What kind of provider failure occurred; decides retries and the HTTP status.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ProviderErrorKind {
    /// No answer in time (connect, first byte, or between chunks).
    Timeout,
    /// The provider throttled us (429) and retries ran out.
    RateLimited,
    /// The provider is down or answered 5xx.
    Unavailable,
    /// The tenant's API key is missing or rejected.
    Unauthorized,
    /// The provider refused the request as malformed or too long.
    BadRequest,
    /// The response could not be understood (malformed or truncated stream).
    Protocol,
}

impl ProviderErrorKind {
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            ProviderErrorKind::Timeout => "timeout",
            ProviderErrorKind::RateLimited => "rate_limited",
            ProviderErrorKind::Unavailable => "unavailable",
            ProviderErrorKind::Unauthorized => "unauthorized",
            ProviderErrorKind::BadRequest => "bad_request",
            ProviderErrorKind::Protocol => "protocol",
        }
    }
}

/// A model provider failure. `message` is shown to the user and stored on the error
/// message, so it must not contain secrets.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
#[error("the model provider failed ({}): {message}", kind.as_str())]
pub struct ProviderError {
    pub kind: ProviderErrorKind,
    pub message: String,
}

impl ProviderError {
    #[must_use]
    pub fn new(kind: ProviderErrorKind, message: impl Into<String>) -> Self {
        Self {
            kind,
            message: message.into(),
        }
    }
}

/// A passage retrieval found for a question, with where it came from.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Passage {
    pub collection_id: KnowledgeCollectionId,
    pub document_id: KnowledgeDocumentId,
    pub filename: String,
    pub content: String,
    pub span_start: u32,
    pub span_end: u32,
    pub page: Option<u32>,
    /// Higher is better.
    pub score: f32,
}
