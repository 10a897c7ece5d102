//! Usage events: every model call is metered once, keyed by an idempotency key, so a
//! retried write never counts tokens twice and billing can meter from the same rows.

use crate::{ConversationId, MessageId, TokenUsage, UsageEventId};
use serde::Serialize;
use trellis_kernel::{Timestamp, UserId};
use trellis_tenancy::LlmProvider;

/// One metered use of a model.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct UsageEvent {
    pub id: UsageEventId,
    /// Unique per tenant: recording the same key again changes nothing.
    pub idempotency_key: String,
    pub user_id: Option<UserId>,
    pub conversation_id: Option<ConversationId>,
    pub message_id: Option<MessageId>,
    pub provider: LlmProvider,
    pub model: String,
    pub usage: TokenUsage,
    /// The provider reported no usage and the figures are our estimate.
    pub estimated: bool,
    pub occurred_at: Timestamp,
}

/// Whose usage to sum.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum UsageScope {
    /// The whole tenant.
    Tenant,
    /// One user of the tenant.
    User(UserId),
}

/// What recording a usage event did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Recorded {
    /// The event was stored.
    New,
    /// An event with this idempotency key already existed; nothing changed.
    Duplicate,
}
