//! The content use cases: one method per thing a user can do with agents, tools,
//! conversations, messages and memories, each checking the caller's permissions
//! through the kernel's role table. Answering lives in [`answer`].
//!
//! Who sees what: conversations and memories belong to their owner. Others in the
//! tenant do not find them (`NotFound`), except that `chat_support` (supporters and
//! admins, who take conversations over) may read conversations, and `users_manage`
//! (admins, who handle users' data requests) may read, change and delete memories.
//! Only the owner posts in a conversation. Trusted system code may do everything.

mod answer;
mod completions;
mod files;
mod relay;
#[cfg(test)]
mod tests;
mod usage;

pub use answer::{Answer, AnswerEvent, AnswerStream, UserMessage};
pub use completions::{
    Completed, CompletionEvent, CompletionId, CompletionReply, CompletionRequest, CompletionStream,
    MAX_COMPLETION_MESSAGES, completion_role,
};
pub use files::{DEFAULT_MAX_FILE_BYTES, FilePorts, FileService, UploadFile};
pub use usage::{MAX_BUDGET_TOKENS, QuotaAdministration, UsageReport};

use crate::model::text;
use crate::quota::{self, BudgetStatus, BudgetUse, QuotaDecision, QuotaScope};
use crate::tree::{self, MessageTree};
use crate::{
    Agent, AgentConfig, AgentFilter, AgentId, AgentPatch, AgentRepo, AgentVersion,
    AttachmentReader, ChatModel, ContentError, Conversation, ConversationFilter, ConversationId,
    ConversationPatch, ConversationRepo, FileRepo, InputSchema, LlmCatalog, LlmModel, Memory,
    MemoryId, MemoryPatch, MemoryRepo, MemorySource, Message, MessageHit, MessageId, MessageRepo,
    ModelParameters, NewAgent, NewConversation, NewMemory, NewTool, QuotaSource, Result, Retriever,
    TaskSpawner, ToolConfig, ToolId, ToolKind, ToolPatch, ToolRepo, UsageMeter, UsageScope,
};
use std::sync::Arc;
use trellis_kernel::{
    Actor, Clock, InvalidValue, Page, PageRequest, Permission, Role, TenantCtx, Timestamp, UserId,
};
use trellis_tenancy::LlmProvider;

/// Tunables of the content use cases.
#[derive(Debug, Clone, Copy)]
pub struct ContentConfig {
    /// Passages retrieved per answer.
    pub retrieval_k: usize,
    /// Memories added per answer (0 turns them off).
    pub memory_k: usize,
    /// The longest message a user may send, in characters.
    pub max_message_chars: usize,
    /// Tokens kept free for the answer when the agent sets no `max_tokens`.
    pub default_answer_tokens: u32,
    /// Answer events buffered for a slow client before the model is paused.
    pub event_buffer: usize,
    /// Characters of one attached file's text put into a prompt (the rest is cut).
    pub attachment_chars: usize,
    /// The most messages (questions, answers, edits and regenerated answers, on every
    /// branch) one conversation may hold. Every answer reads the whole conversation and
    /// `GET …/messages` returns it, so both stay bounded.
    pub max_conversation_messages: usize,
}

/// [`ContentConfig::max_conversation_messages`] unless configured: 500 questions and
/// their answers.
pub const DEFAULT_MAX_CONVERSATION_MESSAGES: usize = 1000;

impl Default for ContentConfig {
    fn default() -> Self {
        Self {
            retrieval_k: 5,
            memory_k: 5,
            max_message_chars: 32_000,
            default_answer_tokens: 1024,
            event_buffer: 64,
            attachment_chars: 24_000,
            max_conversation_messages: DEFAULT_MAX_CONVERSATION_MESSAGES,
        }
    }
}

/// The ports content works through.
pub struct ContentPorts {
    pub agents: Arc<dyn AgentRepo>,
    pub tools: Arc<dyn ToolRepo>,
    pub conversations: Arc<dyn ConversationRepo>,
    pub messages: Arc<dyn MessageRepo>,
    pub memories: Arc<dyn MemoryRepo>,
    pub files: Arc<dyn FileRepo>,
    /// The text of attached files, for prompts.
    pub attachments: Arc<dyn AttachmentReader>,
    pub usage: Arc<dyn UsageMeter>,
    pub quotas: Arc<dyn QuotaSource>,
    pub catalog: Arc<dyn LlmCatalog>,
    pub chat: Arc<dyn ChatModel>,
    pub retriever: Arc<dyn Retriever>,
    pub spawner: Arc<dyn TaskSpawner>,
    pub clock: Arc<dyn Clock>,
}

/// Content use cases.
#[derive(Clone)]
pub struct ContentService {
    agents: Arc<dyn AgentRepo>,
    tools: Arc<dyn ToolRepo>,
    conversations: Arc<dyn ConversationRepo>,
    messages: Arc<dyn MessageRepo>,
    memories: Arc<dyn MemoryRepo>,
    files: Arc<dyn FileRepo>,
    attachments: Arc<dyn AttachmentReader>,
    usage: Arc<dyn UsageMeter>,
    quotas: Arc<dyn QuotaSource>,
    catalog: Arc<dyn LlmCatalog>,
    chat: Arc<dyn ChatModel>,
    retriever: Arc<dyn Retriever>,
    spawner: Arc<dyn TaskSpawner>,
    clock: Arc<dyn Clock>,
    config: ContentConfig,
}

/// A tool to create.
#[derive(Debug, Clone, PartialEq)]
pub struct CreateTool {
    pub kind: ToolKind,
    pub name: String,
    pub description: Option<String>,
    pub config: serde_json::Value,
    pub input_schema: InputSchema,
    pub allowed_roles: Vec<Role>,
    pub enabled: bool,
}

/// A conversation to start: with an agent (whose provider and model answer), or
/// with a model named directly.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct StartConversation {
    pub title: Option<String>,
    pub agent_id: Option<AgentId>,
    /// Ignored when an agent is given.
    pub provider: Option<LlmProvider>,
    /// Ignored when an agent is given.
    pub model: Option<String>,
    pub parameters: ModelParameters,
}

/// Whose conversations to list or search.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Whose {
    /// The caller's own.
    #[default]
    Mine,
    /// One user's (another user's needs `chat_support`).
    Of(UserId),
    /// Everyone's in the tenant (needs `chat_support`).
    All,
}

/// Which conversations to list.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ConversationQuery {
    pub whose: Whose,
    pub archived: Option<bool>,
    pub agent: Option<AgentId>,
    pub title_contains: Option<String>,
}

/// A memory to save.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Remember {
    pub key: String,
    pub value: String,
    pub category: Option<String>,
    pub source: MemorySource,
    pub source_id: Option<String>,
}

/// The largest number of hits a message search returns.
pub const MAX_SEARCH_HITS: usize = 50;

pub(crate) fn require(ctx: &TenantCtx, p: Permission) -> Result<()> {
    if ctx.can(p) {
        Ok(())
    } else {
        Err(ContentError::Forbidden)
    }
}

fn require_any(ctx: &TenantCtx, ps: &[Permission]) -> Result<()> {
    if ps.iter().any(|p| ctx.can(*p)) {
        Ok(())
    } else {
        Err(ContentError::Forbidden)
    }
}

pub(crate) fn is_system(ctx: &TenantCtx) -> bool {
    matches!(ctx.actor(), Actor::System)
}

/// The user acting; system code has none and may not act as a user.
pub(crate) fn acting_user(ctx: &TenantCtx) -> Result<UserId> {
    ctx.user_id().ok_or(ContentError::Forbidden)
}

fn may_read_conversation(ctx: &TenantCtx, c: &Conversation) -> bool {
    ctx.user_id() == Some(c.owner_id) || is_system(ctx) || ctx.can(Permission::ChatSupport)
}

fn may_write_conversation(ctx: &TenantCtx, c: &Conversation) -> bool {
    ctx.user_id() == Some(c.owner_id) || is_system(ctx)
}

fn may_touch_memory(ctx: &TenantCtx, m: &Memory) -> bool {
    ctx.user_id() == Some(m.owner_id) || is_system(ctx) || ctx.can(Permission::UsersManage)
}

impl ContentService {
    #[must_use]
    pub fn new(ports: ContentPorts, config: ContentConfig) -> Self {
        Self {
            agents: ports.agents,
            tools: ports.tools,
            conversations: ports.conversations,
            messages: ports.messages,
            memories: ports.memories,
            files: ports.files,
            attachments: ports.attachments,
            usage: ports.usage,
            quotas: ports.quotas,
            catalog: ports.catalog,
            chat: ports.chat,
            retriever: ports.retriever,
            spawner: ports.spawner,
            clock: ports.clock,
            config,
        }
    }

    #[must_use]
    pub fn config(&self) -> ContentConfig {
        self.config
    }

    // ----- catalogue ------------------------------------------------------------------

    /// The models this tenant may use.
    ///
    /// # Errors
    /// `Forbidden` without `chat_use`.
    pub async fn list_models(&self, ctx: &TenantCtx) -> Result<Vec<LlmModel>> {
        require_any(ctx, &[Permission::ChatUse, Permission::ContentManage])?;
        self.catalog.list(ctx).await
    }

    // ----- agents ---------------------------------------------------------------------

    /// Normalises a configuration and checks that its model is available to the
    /// tenant, fits its `max_tokens`, and that its tools exist.
    async fn checked_agent_config(
        &self,
        ctx: &TenantCtx,
        config: AgentConfig,
    ) -> Result<AgentConfig> {
        let config = config.normalized()?;
        let model = self
            .catalog
            .get(ctx, config.provider, &config.model)
            .await?;
        if config
            .parameters
            .max_tokens()
            .is_some_and(|m| m >= model.context_window)
        {
            return Err(InvalidValue::new(
                "max_tokens",
                format!(
                    "must be below the model's context window of {}",
                    model.context_window
                ),
            )
            .into());
        }
        for t in &config.tools {
            self.tools.get(ctx, *t).await?;
        }
        Ok(config)
    }

    /// # Errors
    /// `Forbidden` without `content_manage`; `Invalid`; `ModelUnavailable`;
    /// `NotFound` for an unknown tool; `Conflict` for a taken name.
    pub async fn create_agent(&self, ctx: &TenantCtx, config: AgentConfig) -> Result<Agent> {
        require(ctx, Permission::ContentManage)?;
        let config = self.checked_agent_config(ctx, config).await?;
        self.agents
            .insert(
                ctx,
                NewAgent {
                    id: AgentId::new(),
                    config,
                    created_by: ctx.user_id(),
                },
            )
            .await
    }

    /// An agent the caller may use.
    ///
    /// # Errors
    /// `NotFound` for an agent of another tenant, or one the caller may not use.
    pub async fn get_agent(&self, ctx: &TenantCtx, id: AgentId) -> Result<Agent> {
        require_any(ctx, &[Permission::ChatUse, Permission::ContentRead])?;
        let agent = self.agents.get(ctx, id).await?;
        if agent.usable_by(ctx) {
            Ok(agent)
        } else {
            Err(ContentError::NotFound("agent"))
        }
    }

    /// The agent a name stands for (the OpenAI-compatible API's `model`).
    ///
    /// # Errors
    /// `NotFound` when there is none the caller may use.
    pub async fn agent_by_name(&self, ctx: &TenantCtx, name: &str) -> Result<Agent> {
        require_any(ctx, &[Permission::ChatUse, Permission::ContentRead])?;
        match self.agents.find_by_name(ctx, name).await? {
            Some(a) if a.usable_by(ctx) => Ok(a),
            _ => Err(ContentError::NotFound("agent")),
        }
    }

    /// The agents the caller may use (all of them for content managers).
    ///
    /// # Errors
    /// `Forbidden` without `chat_use` or `content_read`.
    pub async fn list_agents(&self, ctx: &TenantCtx, page: PageRequest) -> Result<Page<Agent>> {
        require_any(ctx, &[Permission::ChatUse, Permission::ContentRead])?;
        let filter = if ctx.can(Permission::ContentManage) {
            AgentFilter::default()
        } else {
            AgentFilter {
                published: Some(true),
                usable_by_role: Some(ctx.role()),
                uses_tool: None,
            }
        };
        self.agents.list(ctx, &filter, page).await
    }

    /// Changes an agent. A change that changes nothing keeps the version; any other
    /// bumps it and keeps the previous configuration. `expected_version` guards
    /// against overwriting someone else's change.
    ///
    /// # Errors
    /// `Forbidden`; `NotFound`; `Conflict` for a stale version or taken name;
    /// `Invalid`; `ModelUnavailable`.
    pub async fn update_agent(
        &self,
        ctx: &TenantCtx,
        id: AgentId,
        patch: AgentPatch,
        expected_version: Option<u32>,
    ) -> Result<Agent> {
        require(ctx, Permission::ContentManage)?;
        let current = self.agents.get(ctx, id).await?;
        if expected_version.is_some_and(|v| v != current.version) {
            return Err(ContentError::Conflict(format!(
                "the agent was changed meanwhile (now version {})",
                current.version
            )));
        }
        let config = self
            .checked_agent_config(ctx, patch.apply(&current.config))
            .await?;
        if config == current.config {
            return Ok(current);
        }
        self.agents
            .update(ctx, id, current.version, config, ctx.user_id())
            .await
    }

    /// Every saved configuration of an agent, oldest first.
    ///
    /// # Errors
    /// `Forbidden` without `content_manage`; `NotFound`.
    pub async fn agent_versions(&self, ctx: &TenantCtx, id: AgentId) -> Result<Vec<AgentVersion>> {
        require(ctx, Permission::ContentManage)?;
        self.agents.versions(ctx, id).await
    }

    /// Makes an earlier version's configuration current again, as a new version.
    ///
    /// # Errors
    /// `Forbidden`; `NotFound` for an unknown agent or version; `Invalid` or
    /// `ModelUnavailable` when the old configuration no longer fits (a tool deleted,
    /// a model withdrawn).
    pub async fn restore_agent_version(
        &self,
        ctx: &TenantCtx,
        id: AgentId,
        version: u32,
    ) -> Result<Agent> {
        require(ctx, Permission::ContentManage)?;
        let old = self
            .agents
            .versions(ctx, id)
            .await?
            .into_iter()
            .find(|v| v.version == version)
            .ok_or(ContentError::NotFound("agent version"))?;
        let current = self.agents.get(ctx, id).await?;
        let config = self.checked_agent_config(ctx, old.config).await?;
        if config == current.config {
            return Ok(current);
        }
        self.agents
            .update(ctx, id, current.version, config, ctx.user_id())
            .await
    }

    /// # Errors
    /// `Forbidden`; `NotFound`.
    pub async fn delete_agent(&self, ctx: &TenantCtx, id: AgentId) -> Result<()> {
        require(ctx, Permission::ContentManage)?;
        self.agents.delete(ctx, id).await
    }

    // ----- tools ----------------------------------------------------------------------

    /// # Errors
    /// `Forbidden` without `content_manage`; `Invalid`; `Conflict` for a taken name.
    pub async fn create_tool(&self, ctx: &TenantCtx, cmd: CreateTool) -> Result<ToolConfig> {
        require(ctx, Permission::ContentManage)?;
        let new = NewTool {
            id: ToolId::new(),
            kind: cmd.kind,
            name: cmd.name,
            description: cmd.description,
            config: cmd.config,
            input_schema: cmd.input_schema,
            allowed_roles: cmd.allowed_roles,
            enabled: cmd.enabled,
        }
        .normalized()?;
        self.tools.insert(ctx, new).await
    }

    /// # Errors
    /// `Forbidden` without `content_read`; `NotFound`.
    pub async fn get_tool(&self, ctx: &TenantCtx, id: ToolId) -> Result<ToolConfig> {
        require_any(ctx, &[Permission::ContentRead, Permission::ContentManage])?;
        self.tools.get(ctx, id).await
    }

    /// # Errors
    /// `Forbidden` without `content_read`.
    pub async fn list_tools(&self, ctx: &TenantCtx, page: PageRequest) -> Result<Page<ToolConfig>> {
        require_any(ctx, &[Permission::ContentRead, Permission::ContentManage])?;
        self.tools.list(ctx, page).await
    }

    /// # Errors
    /// `Forbidden`; `NotFound`; `Invalid`; `Conflict` for a taken name.
    pub async fn update_tool(
        &self,
        ctx: &TenantCtx,
        id: ToolId,
        patch: ToolPatch,
    ) -> Result<ToolConfig> {
        require(ctx, Permission::ContentManage)?;
        let current = self.tools.get(ctx, id).await?;
        // Validate the result as a whole: a new config must fit the (unchanged) kind.
        let merged = NewTool {
            id,
            kind: current.kind,
            name: patch.name.unwrap_or(current.name),
            description: patch.description.unwrap_or(current.description),
            config: patch.config.unwrap_or(current.config),
            input_schema: patch.input_schema.unwrap_or(current.input_schema),
            allowed_roles: patch.allowed_roles.unwrap_or(current.allowed_roles),
            enabled: patch.enabled.unwrap_or(current.enabled),
        }
        .normalized()?;
        let full = ToolPatch {
            name: Some(merged.name),
            description: Some(merged.description),
            config: Some(merged.config),
            input_schema: Some(merged.input_schema),
            allowed_roles: Some(merged.allowed_roles),
            enabled: Some(merged.enabled),
        };
        self.tools.update(ctx, id, full).await
    }

    /// Deletes a tool no agent uses.
    ///
    /// # Errors
    /// `Forbidden`; `NotFound`; `Conflict` while an agent still uses it.
    pub async fn delete_tool(&self, ctx: &TenantCtx, id: ToolId) -> Result<()> {
        require(ctx, Permission::ContentManage)?;
        self.tools.get(ctx, id).await?;
        let users = self
            .agents
            .list(
                ctx,
                &AgentFilter {
                    uses_tool: Some(id),
                    ..AgentFilter::default()
                },
                PageRequest::new(Some(1), None)?,
            )
            .await?;
        if let Some(a) = users.items.first() {
            return Err(ContentError::Conflict(format!(
                "the agent `{}` still uses this tool",
                a.config.name
            )));
        }
        self.tools.delete(ctx, id).await
    }

    // ----- conversations --------------------------------------------------------------

    /// Starts a conversation owned by the caller.
    ///
    /// # Errors
    /// `Forbidden` without `chat_use` or without a user; `NotFound` for an agent the
    /// caller may not use; `Invalid` without a model; `ModelUnavailable`.
    pub async fn create_conversation(
        &self,
        ctx: &TenantCtx,
        cmd: StartConversation,
    ) -> Result<Conversation> {
        require(ctx, Permission::ChatUse)?;
        let owner = acting_user(ctx)?;
        let (provider, model) = match cmd.agent_id {
            Some(id) => {
                let agent = self.get_agent(ctx, id).await?;
                (agent.config.provider, agent.config.model)
            }
            None => match (cmd.provider, cmd.model) {
                (Some(p), Some(m)) => (p, text::line("model", &m, 200)?),
                _ => {
                    return Err(InvalidValue::new(
                        "model",
                        "name a provider and model, or an agent",
                    )
                    .into());
                }
            },
        };
        self.catalog.get(ctx, provider, &model).await?;
        self.conversations
            .insert(
                ctx,
                NewConversation {
                    id: ConversationId::new(),
                    owner_id: owner,
                    title: text::opt_line("title", cmd.title.as_deref(), 200)?,
                    provider,
                    model,
                    agent_id: cmd.agent_id,
                    parameters: cmd.parameters,
                },
            )
            .await
    }

    /// A conversation the caller may read.
    pub(crate) async fn readable_conversation(
        &self,
        ctx: &TenantCtx,
        id: ConversationId,
    ) -> Result<Conversation> {
        let c = self.conversations.get(ctx, id).await?;
        if may_read_conversation(ctx, &c) {
            Ok(c)
        } else {
            Err(ContentError::NotFound("conversation"))
        }
    }

    /// A conversation the caller may read, with all its messages, in one read: the
    /// messages are fetched before the caller's right to them is checked, and dropped
    /// unseen when it is missing.
    pub(crate) async fn readable_with_messages(
        &self,
        ctx: &TenantCtx,
        id: ConversationId,
    ) -> Result<(Conversation, Vec<Message>)> {
        let (c, messages) = self.conversations.with_messages(ctx, id).await?;
        if may_read_conversation(ctx, &c) {
            Ok((c, messages))
        } else {
            Err(ContentError::NotFound("conversation"))
        }
    }

    /// A conversation the caller may change (their own).
    pub(crate) async fn writable_conversation(
        &self,
        ctx: &TenantCtx,
        id: ConversationId,
    ) -> Result<Conversation> {
        let c = self.readable_conversation(ctx, id).await?;
        if may_write_conversation(ctx, &c) {
            Ok(c)
        } else {
            Err(ContentError::Forbidden)
        }
    }

    /// # Errors
    /// `NotFound` for a conversation of another tenant or one the caller may not read.
    pub async fn get_conversation(
        &self,
        ctx: &TenantCtx,
        id: ConversationId,
    ) -> Result<Conversation> {
        require(ctx, Permission::ChatUse)?;
        self.readable_conversation(ctx, id).await
    }

    fn owner_filter(ctx: &TenantCtx, whose: Whose) -> Result<Option<UserId>> {
        match whose {
            Whose::Mine => acting_user(ctx).map(Some),
            Whose::Of(u) if ctx.user_id() == Some(u) => Ok(Some(u)),
            Whose::Of(u) => require(ctx, Permission::ChatSupport).map(|()| Some(u)),
            Whose::All => require(ctx, Permission::ChatSupport).map(|()| None),
        }
    }

    /// # Errors
    /// `Forbidden` without `chat_use`, or for others' conversations without
    /// `chat_support`.
    pub async fn list_conversations(
        &self,
        ctx: &TenantCtx,
        query: ConversationQuery,
        page: PageRequest,
    ) -> Result<Page<Conversation>> {
        require(ctx, Permission::ChatUse)?;
        let filter = ConversationFilter {
            owner: Self::owner_filter(ctx, query.whose)?,
            archived: query.archived,
            agent: query.agent,
            title_contains: text::opt_line("title_contains", query.title_contains.as_deref(), 200)?,
        };
        self.conversations.list(ctx, &filter, page).await
    }

    /// Full-text search over the messages of the caller's conversations (or, with
    /// `chat_support`, others').
    ///
    /// # Errors
    /// `Forbidden`; `Invalid` for an empty or overlong query.
    pub async fn search_messages(
        &self,
        ctx: &TenantCtx,
        whose: Whose,
        query: &str,
        limit: usize,
    ) -> Result<Vec<MessageHit>> {
        require(ctx, Permission::ChatUse)?;
        let owner = Self::owner_filter(ctx, whose)?;
        let query = text::line("query", query, 200)?;
        let limit = limit.clamp(1, MAX_SEARCH_HITS);
        self.messages.search(ctx, owner, &query, limit).await
    }

    /// Renames, archives or re-parameterises one's own conversation.
    ///
    /// # Errors
    /// `NotFound`; `Forbidden` for someone else's conversation; `Invalid`.
    pub async fn update_conversation(
        &self,
        ctx: &TenantCtx,
        id: ConversationId,
        mut patch: ConversationPatch,
    ) -> Result<Conversation> {
        require(ctx, Permission::ChatUse)?;
        self.writable_conversation(ctx, id).await?;
        if let Some(Some(t)) = &patch.title {
            patch.title = Some(text::opt_line("title", Some(t), 200)?);
        }
        self.conversations.update(ctx, id, patch).await
    }

    /// # Errors
    /// As [`Self::update_conversation`].
    pub async fn archive_conversation(
        &self,
        ctx: &TenantCtx,
        id: ConversationId,
        archived: bool,
    ) -> Result<Conversation> {
        let patch = ConversationPatch {
            archived: Some(archived),
            ..ConversationPatch::default()
        };
        self.update_conversation(ctx, id, patch).await
    }

    /// Deletes one's own conversation with all its messages.
    ///
    /// # Errors
    /// `NotFound`; `Forbidden` for someone else's conversation.
    pub async fn delete_conversation(&self, ctx: &TenantCtx, id: ConversationId) -> Result<()> {
        require(ctx, Permission::ChatUse)?;
        self.writable_conversation(ctx, id).await?;
        self.conversations.delete(ctx, id).await
    }

    /// A new conversation, owned by the caller, holding a copy of the path from the
    /// root to `at` as its only branch. The original is untouched.
    ///
    /// # Errors
    /// `NotFound` for a conversation the caller may not read or a message not in it.
    pub async fn fork_conversation(
        &self,
        ctx: &TenantCtx,
        id: ConversationId,
        at: MessageId,
    ) -> Result<Conversation> {
        require(ctx, Permission::ChatUse)?;
        let owner = acting_user(ctx)?;
        let (source, messages) = self.readable_with_messages(ctx, id).await?;
        let path = tree::path_to(&messages, at)?;
        let fork = self
            .conversations
            .insert(
                ctx,
                NewConversation {
                    id: ConversationId::new(),
                    owner_id: owner,
                    title: source.title.clone(),
                    provider: source.provider,
                    model: source.model.clone(),
                    agent_id: source.agent_id,
                    parameters: source.parameters,
                },
            )
            .await?;
        let copies = tree::fork_copy(&path, fork.id);
        if let Err(e) = self.messages.insert_many(ctx, copies).await {
            // The batch stored nothing; don't leave an empty fork behind.
            if let Err(cleanup) = self.conversations.delete(ctx, fork.id).await {
                tracing::warn!(conversation = %fork.id, error = %cleanup, "could not remove a failed fork");
            }
            return Err(e);
        }
        self.conversations.get(ctx, fork.id).await
    }

    /// The conversation's message tree with its active path through `through` (the
    /// current branch when `None`).
    ///
    /// # Errors
    /// `NotFound` for a conversation the caller may not read or a message not in it.
    pub async fn message_tree(
        &self,
        ctx: &TenantCtx,
        id: ConversationId,
        through: Option<MessageId>,
    ) -> Result<MessageTree> {
        require(ctx, Permission::ChatUse)?;
        let (_, messages) = self.readable_with_messages(ctx, id).await?;
        tree::render(&messages, through)
    }

    // ----- memories -------------------------------------------------------------------

    /// Saves a memory for the caller.
    ///
    /// # Errors
    /// `Forbidden`; `Invalid`; `Conflict` when the caller has a memory with this key.
    pub async fn create_memory(&self, ctx: &TenantCtx, cmd: Remember) -> Result<Memory> {
        require(ctx, Permission::ChatUse)?;
        let owner = acting_user(ctx)?;
        self.memories
            .insert(
                ctx,
                NewMemory {
                    id: MemoryId::new(),
                    owner_id: owner,
                    key: text::line("key", &cmd.key, 200)?,
                    value: text::body("value", &cmd.value, 2000)?,
                    category: text::opt_line("category", cmd.category.as_deref(), 100)?,
                    source: cmd.source,
                    source_id: text::opt_line("source_id", cmd.source_id.as_deref(), 200)?,
                },
            )
            .await
    }

    /// The caller's memories, or with `users_manage` another user's.
    ///
    /// # Errors
    /// `Forbidden`.
    pub async fn list_memories(
        &self,
        ctx: &TenantCtx,
        owner: Option<UserId>,
        page: PageRequest,
    ) -> Result<Page<Memory>> {
        require(ctx, Permission::ChatUse)?;
        let owner = match owner {
            Some(u) if ctx.user_id() != Some(u) => {
                require(ctx, Permission::UsersManage)?;
                u
            }
            Some(u) => u,
            None => acting_user(ctx)?,
        };
        self.memories.list(ctx, owner, page).await
    }

    async fn touchable_memory(&self, ctx: &TenantCtx, id: MemoryId) -> Result<Memory> {
        require(ctx, Permission::ChatUse)?;
        let m = self.memories.get(ctx, id).await?;
        if may_touch_memory(ctx, &m) {
            Ok(m)
        } else {
            Err(ContentError::NotFound("memory"))
        }
    }

    /// # Errors
    /// `NotFound` for someone else's memory (unless `users_manage`).
    pub async fn get_memory(&self, ctx: &TenantCtx, id: MemoryId) -> Result<Memory> {
        self.touchable_memory(ctx, id).await
    }

    /// # Errors
    /// `NotFound`; `Invalid`; `Conflict` when the new key is taken.
    pub async fn update_memory(
        &self,
        ctx: &TenantCtx,
        id: MemoryId,
        patch: MemoryPatch,
    ) -> Result<Memory> {
        self.touchable_memory(ctx, id).await?;
        let patch = MemoryPatch {
            key: patch.key.map(|k| text::line("key", &k, 200)).transpose()?,
            value: patch
                .value
                .map(|v| text::body("value", &v, 2000))
                .transpose()?,
            category: patch
                .category
                .map(|c| text::opt_line("category", c.as_deref(), 100))
                .transpose()?,
        };
        self.memories.update(ctx, id, patch).await
    }

    /// # Errors
    /// `NotFound`.
    pub async fn delete_memory(&self, ctx: &TenantCtx, id: MemoryId) -> Result<()> {
        self.touchable_memory(ctx, id).await?;
        self.memories.delete(ctx, id).await
    }

    // ----- quotas ---------------------------------------------------------------------

    /// The tenant's and the user's budgets with what was used this period.
    async fn budget_uses(
        &self,
        ctx: &TenantCtx,
        user: UserId,
        now: Timestamp,
    ) -> Result<Vec<BudgetUse>> {
        let q = self.quotas.quota(ctx).await?;
        // The tenant's and the user's totals are independent reads: side by side.
        let reads = [
            (QuotaScope::Tenant, q.tenant, UsageScope::Tenant),
            (QuotaScope::User, q.per_user, UsageScope::User(user)),
        ]
        .into_iter()
        .filter_map(|(scope, budget, meter_scope)| {
            let budget = budget?;
            let (from, until) = budget.period.window(now);
            Some(async move {
                let used_tokens = self
                    .usage
                    .total_tokens(ctx, meter_scope, from, until)
                    .await?;
                Ok::<_, ContentError>(BudgetUse {
                    scope,
                    budget,
                    used_tokens,
                })
            })
        });
        futures::future::try_join_all(reads).await
    }

    /// Refuses, before any model is called, when a budget is used up.
    pub(crate) async fn enforce_quota(&self, ctx: &TenantCtx, user: UserId) -> Result<()> {
        let now = self.clock.now();
        match quota::decide(&self.budget_uses(ctx, user, now).await?, now) {
            QuotaDecision::Allowed => Ok(()),
            QuotaDecision::Exceeded {
                scope,
                limit_tokens,
                used_tokens,
                resets_at,
            } => Err(ContentError::QuotaExceeded {
                scope,
                limit_tokens,
                used_tokens,
                resets_at,
            }),
        }
    }

    /// Where the caller's budgets stand.
    ///
    /// # Errors
    /// `Forbidden` without `chat_use` or without a user.
    pub async fn quota_status(&self, ctx: &TenantCtx) -> Result<Vec<BudgetStatus>> {
        require(ctx, Permission::ChatUse)?;
        let user = acting_user(ctx)?;
        let now = self.clock.now();
        Ok(self
            .budget_uses(ctx, user, now)
            .await?
            .iter()
            .map(|u| u.status(now))
            .collect())
    }
}
