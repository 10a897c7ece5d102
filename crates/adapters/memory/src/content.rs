//! The content ports in memory: agents with their versions, tools, conversations and
//! their message trees, memories, files, usage events, quotas and the model
//! catalogue, plus a Tokio [`TaskSpawner`] and a [`FakeChatModel`] that streams a fixed
//! answer, so `trellis serve` without a database or LLM key can still chat. Every map
//! is keyed by tenant, so lookups are tenant-scoped by construction.

use async_trait::async_trait;
use futures::future::BoxFuture;
use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, RwLock, RwLockReadGuard, RwLockWriteGuard};
use trellis_content::prompt::estimate_tokens;
use trellis_content::{
    Agent, AgentConfig, AgentFilter, AgentId, AgentRepo, AgentVersion, ChatChunk, ChatModel,
    ChatRequest, ChatStream, Completion, ContentError, Conversation, ConversationFilter,
    ConversationId, ConversationPatch, ConversationRepo, FileAttachment, FileId, FileRepo,
    FinishReason, KnowledgeDocumentId, LlmCatalog, LlmModel, Memory, MemoryId, MemoryPatch,
    MemoryRepo, Message, MessageHit, MessageId, MessageRepo, MicroUsd, NewAgent, NewConversation,
    NewFile, NewMemory, NewMessage, NewTool, PendingMessage, Quota, QuotaAdmin, QuotaSource,
    Recorded, Result, ScoredMemory, TaskSpawner, Thread, TokenUsage, ToolConfig, ToolId, ToolPatch,
    ToolRepo, UsageEvent, UsageMeter, UsageScope,
};
use trellis_kernel::{Page, PageRequest, PlatformCtx, TenantCtx, TenantId, Timestamp, UserId};
use trellis_tenancy::LlmProvider;

use crate::store::{now, page_of};

#[derive(Default)]
struct ContentInner {
    agents: BTreeMap<(TenantId, AgentId), Agent>,
    versions: BTreeMap<(TenantId, AgentId), Vec<AgentVersion>>,
    tools: BTreeMap<(TenantId, ToolId), ToolConfig>,
    conversations: BTreeMap<(TenantId, ConversationId), Conversation>,
    messages: BTreeMap<(TenantId, MessageId), Message>,
    memories: BTreeMap<(TenantId, MemoryId), Memory>,
    files: BTreeMap<(TenantId, FileId), FileAttachment>,
    /// Keyed by idempotency key: a second event with the same key is a duplicate.
    usage: BTreeMap<(TenantId, String), UsageEvent>,
    quotas: HashMap<TenantId, Quota>,
    catalog: Vec<LlmModel>,
}

impl ContentInner {
    /// A conversation's messages, oldest first (keyed by UUIDv7 ids, so iteration
    /// order is creation order).
    fn messages_of(&self, tid: TenantId, conversation: ConversationId) -> Vec<Message> {
        self.messages
            .iter()
            .filter(|((t, _), m)| *t == tid && m.conversation_id == conversation)
            .map(|(_, m)| m.clone())
            .collect()
    }
}

/// All content repositories, the usage meter, quotas and the model catalogue over
/// process memory. Clone freely (it is an `Arc`).
#[derive(Clone, Default)]
pub struct MemoryContent {
    inner: Arc<RwLock<ContentInner>>,
}

impl std::fmt::Debug for MemoryContent {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MemoryContent").finish_non_exhaustive()
    }
}

impl MemoryContent {
    /// An empty store with an empty model catalogue and no quotas.
    #[must_use]
    pub fn new() -> Self {
        Self::default()
    }

    /// The models every tenant may use (the memory adapter does not read tenants'
    /// allowed providers: it has no tenant store of its own).
    #[must_use]
    pub fn with_models(self, models: Vec<LlmModel>) -> Self {
        self.write().catalog = models;
        self
    }

    /// Sets a tenant's budgets (in production they come from its plan).
    pub fn set_quota(&self, tenant: TenantId, quota: Quota) {
        self.write().quotas.insert(tenant, quota);
    }

    // A panic while holding the lock cannot leave a map half-updated in a way that
    // matters more than losing the whole process would, so poisoning is ignored.
    fn read(&self) -> RwLockReadGuard<'_, ContentInner> {
        self.inner
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn write(&self) -> RwLockWriteGuard<'_, ContentInner> {
        self.inner
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// Lower-case alphanumeric words, the unit of the toy full-text search.
fn terms(text: &str) -> Vec<String> {
    text.split(|c: char| !c.is_alphanumeric())
        .filter(|t| !t.is_empty())
        .map(str::to_lowercase)
        .collect()
}

/// How well `text` matches `query`: each query term found counts 1, plus a little
/// per further occurrence. 0 when nothing matches.
fn relevance(query: &[String], text: &str) -> f32 {
    let words = terms(text);
    query
        .iter()
        .map(|q| {
            let n = words.iter().filter(|w| *w == q).count();
            if n == 0 {
                0.0
            } else {
                1.0 + (n as f32 - 1.0) * 0.1
            }
        })
        .sum()
}

/// About 160 characters around the first matching term.
fn snippet(query: &[String], text: &str) -> String {
    let lower = text.to_lowercase();
    let at = query
        .iter()
        .filter_map(|q| lower.find(q.as_str()))
        .min()
        .unwrap_or(0);
    // Lower-casing can change byte lengths; work in characters to stay on boundaries.
    let start_char = lower[..at.min(lower.len())]
        .chars()
        .count()
        .saturating_sub(60);
    let out: String = text.chars().skip(start_char).take(160).collect();
    if start_char > 0 {
        format!("…{}", out.trim_start())
    } else {
        out
    }
}

fn name_taken<'a>(
    mut names: impl Iterator<Item = ((TenantId, AgentId), &'a Agent)>,
    tid: TenantId,
    except: Option<AgentId>,
    name: &str,
) -> bool {
    names.any(|((t, id), a)| t == tid && Some(id) != except && a.config.name == name)
}

#[async_trait]
impl AgentRepo for MemoryContent {
    async fn insert(&self, ctx: &TenantCtx, new: NewAgent) -> Result<Agent> {
        let mut db = self.write();
        let tid = ctx.tenant_id();
        if name_taken(
            db.agents.iter().map(|(k, a)| (*k, a)),
            tid,
            None,
            &new.config.name,
        ) {
            return Err(ContentError::Conflict(
                "an agent with this name already exists".into(),
            ));
        }
        let at = now();
        let agent = Agent {
            id: new.id,
            tenant_id: tid,
            config: new.config.clone(),
            version: 1,
            created_by: new.created_by,
            created_at: at,
            updated_at: at,
        };
        db.agents.insert((tid, agent.id), agent.clone());
        db.versions.insert(
            (tid, agent.id),
            vec![AgentVersion {
                agent_id: agent.id,
                version: 1,
                config: new.config,
                saved_by: new.created_by,
                saved_at: at,
            }],
        );
        Ok(agent)
    }

    async fn get(&self, ctx: &TenantCtx, id: AgentId) -> Result<Agent> {
        self.read()
            .agents
            .get(&(ctx.tenant_id(), id))
            .cloned()
            .ok_or(ContentError::NotFound("agent"))
    }

    async fn find_by_name(&self, ctx: &TenantCtx, name: &str) -> Result<Option<Agent>> {
        let tid = ctx.tenant_id();
        Ok(self
            .read()
            .agents
            .iter()
            .find(|((t, _), a)| *t == tid && a.config.name == name)
            .map(|(_, a)| a.clone()))
    }

    async fn list(
        &self,
        ctx: &TenantCtx,
        filter: &AgentFilter,
        page: PageRequest,
    ) -> Result<Page<Agent>> {
        let db = self.read();
        let tid = ctx.tenant_id();
        let items = db
            .agents
            .iter()
            .filter(|((t, _), a)| {
                *t == tid
                    && filter.published.is_none_or(|p| a.config.published == p)
                    && filter.usable_by_role.is_none_or(|r| {
                        a.config.allowed_roles.is_empty() || a.config.allowed_roles.contains(&r)
                    })
                    && filter
                        .uses_tool
                        .is_none_or(|tool| a.config.tools.contains(&tool))
            })
            .map(|(_, a)| a.clone());
        Ok(page_of(items, page, |a| a.id.as_uuid()))
    }

    async fn update(
        &self,
        ctx: &TenantCtx,
        id: AgentId,
        expected_version: u32,
        config: AgentConfig,
        by: Option<UserId>,
    ) -> Result<Agent> {
        let mut db = self.write();
        let tid = ctx.tenant_id();
        let current = db
            .agents
            .get(&(tid, id))
            .ok_or(ContentError::NotFound("agent"))?;
        if current.version != expected_version {
            return Err(ContentError::Conflict(format!(
                "the agent was changed meanwhile (now version {})",
                current.version
            )));
        }
        if name_taken(
            db.agents.iter().map(|(k, a)| (*k, a)),
            tid,
            Some(id),
            &config.name,
        ) {
            return Err(ContentError::Conflict(
                "an agent with this name already exists".into(),
            ));
        }
        let at = now();
        let version = expected_version + 1;
        let agent = db
            .agents
            .get_mut(&(tid, id))
            .ok_or(ContentError::NotFound("agent"))?;
        agent.config = config.clone();
        agent.version = version;
        agent.updated_at = at;
        let agent = agent.clone();
        db.versions
            .entry((tid, id))
            .or_default()
            .push(AgentVersion {
                agent_id: id,
                version,
                config,
                saved_by: by,
                saved_at: at,
            });
        Ok(agent)
    }

    async fn versions(&self, ctx: &TenantCtx, id: AgentId) -> Result<Vec<AgentVersion>> {
        let db = self.read();
        let key = (ctx.tenant_id(), id);
        if !db.agents.contains_key(&key) {
            return Err(ContentError::NotFound("agent"));
        }
        Ok(db.versions.get(&key).cloned().unwrap_or_default())
    }

    async fn delete(&self, ctx: &TenantCtx, id: AgentId) -> Result<()> {
        let mut db = self.write();
        let key = (ctx.tenant_id(), id);
        db.agents
            .remove(&key)
            .ok_or(ContentError::NotFound("agent"))?;
        db.versions.remove(&key);
        Ok(())
    }
}

#[async_trait]
impl ToolRepo for MemoryContent {
    async fn insert(&self, ctx: &TenantCtx, new: NewTool) -> Result<ToolConfig> {
        let mut db = self.write();
        let tid = ctx.tenant_id();
        if db
            .tools
            .iter()
            .any(|((t, _), x)| *t == tid && x.name == new.name)
        {
            return Err(ContentError::Conflict(
                "a tool with this name already exists".into(),
            ));
        }
        let at = now();
        let tool = ToolConfig {
            id: new.id,
            tenant_id: tid,
            kind: new.kind,
            name: new.name,
            description: new.description,
            config: new.config,
            input_schema: new.input_schema,
            allowed_roles: new.allowed_roles,
            enabled: new.enabled,
            created_at: at,
            updated_at: at,
        };
        db.tools.insert((tid, tool.id), tool.clone());
        Ok(tool)
    }

    async fn get(&self, ctx: &TenantCtx, id: ToolId) -> Result<ToolConfig> {
        self.read()
            .tools
            .get(&(ctx.tenant_id(), id))
            .cloned()
            .ok_or(ContentError::NotFound("tool"))
    }

    async fn list(&self, ctx: &TenantCtx, page: PageRequest) -> Result<Page<ToolConfig>> {
        let db = self.read();
        let tid = ctx.tenant_id();
        let items = db
            .tools
            .iter()
            .filter(|((t, _), _)| *t == tid)
            .map(|(_, x)| x.clone());
        Ok(page_of(items, page, |x| x.id.as_uuid()))
    }

    async fn update(&self, ctx: &TenantCtx, id: ToolId, patch: ToolPatch) -> Result<ToolConfig> {
        let mut db = self.write();
        let tid = ctx.tenant_id();
        if let Some(name) = &patch.name
            && db
                .tools
                .iter()
                .any(|((t, tool), x)| *t == tid && *tool != id && &x.name == name)
        {
            return Err(ContentError::Conflict(
                "a tool with this name already exists".into(),
            ));
        }
        let tool = db
            .tools
            .get_mut(&(tid, id))
            .ok_or(ContentError::NotFound("tool"))?;
        if let Some(v) = patch.name {
            tool.name = v;
        }
        if let Some(v) = patch.description {
            tool.description = v;
        }
        if let Some(v) = patch.config {
            tool.config = v;
        }
        if let Some(v) = patch.input_schema {
            tool.input_schema = v;
        }
        if let Some(v) = patch.allowed_roles {
            tool.allowed_roles = v;
        }
        if let Some(v) = patch.enabled {
            tool.enabled = v;
        }
        tool.updated_at = now();
        Ok(tool.clone())
    }

    async fn delete(&self, ctx: &TenantCtx, id: ToolId) -> Result<()> {
        self.write()
            .tools
            .remove(&(ctx.tenant_id(), id))
            .map(|_| ())
            .ok_or(ContentError::NotFound("tool"))
    }
}

#[async_trait]
impl ConversationRepo for MemoryContent {
    async fn insert(&self, ctx: &TenantCtx, new: NewConversation) -> Result<Conversation> {
        let at = now();
        let tid = ctx.tenant_id();
        let c = Conversation {
            id: new.id,
            tenant_id: tid,
            owner_id: new.owner_id,
            title: new.title,
            provider: new.provider,
            model: new.model,
            agent_id: new.agent_id,
            parameters: new.parameters,
            archived: false,
            last_message_at: None,
            created_at: at,
            updated_at: at,
        };
        self.write().conversations.insert((tid, c.id), c.clone());
        Ok(c)
    }

    async fn get(&self, ctx: &TenantCtx, id: ConversationId) -> Result<Conversation> {
        self.read()
            .conversations
            .get(&(ctx.tenant_id(), id))
            .cloned()
            .ok_or(ContentError::NotFound("conversation"))
    }

    async fn with_messages(
        &self,
        ctx: &TenantCtx,
        id: ConversationId,
    ) -> Result<(Conversation, Vec<Message>)> {
        let thread = self.thread(ctx, id).await?;
        Ok((thread.conversation, thread.messages))
    }

    async fn thread(&self, ctx: &TenantCtx, id: ConversationId) -> Result<Thread> {
        let tid = ctx.tenant_id();
        let db = self.read();
        let conversation = db
            .conversations
            .get(&(tid, id))
            .cloned()
            .ok_or(ContentError::NotFound("conversation"))?;
        let agent = conversation
            .agent_id
            .and_then(|a| db.agents.get(&(tid, a)))
            .cloned();
        Ok(Thread {
            messages: db.messages_of(tid, id),
            conversation,
            agent,
        })
    }

    async fn list(
        &self,
        ctx: &TenantCtx,
        filter: &ConversationFilter,
        page: PageRequest,
    ) -> Result<Page<Conversation>> {
        let db = self.read();
        let tid = ctx.tenant_id();
        let needle = filter.title_contains.as_deref().map(str::to_lowercase);
        let items = db
            .conversations
            .iter()
            .filter(|((t, _), c)| {
                *t == tid
                    && filter.owner.is_none_or(|o| c.owner_id == o)
                    && filter.archived.is_none_or(|a| c.archived == a)
                    && filter.agent.is_none_or(|a| c.agent_id == Some(a))
                    && needle.as_deref().is_none_or(|n| {
                        c.title
                            .as_deref()
                            .is_some_and(|t| t.to_lowercase().contains(n))
                    })
            })
            .map(|(_, c)| c.clone());
        Ok(page_of(items, page, |c| c.id.as_uuid()))
    }

    async fn update(
        &self,
        ctx: &TenantCtx,
        id: ConversationId,
        patch: ConversationPatch,
    ) -> Result<Conversation> {
        let mut db = self.write();
        let c = db
            .conversations
            .get_mut(&(ctx.tenant_id(), id))
            .ok_or(ContentError::NotFound("conversation"))?;
        if let Some(v) = patch.title {
            c.title = v;
        }
        if let Some(v) = patch.archived {
            c.archived = v;
        }
        if let Some(v) = patch.parameters {
            c.parameters = v;
        }
        c.updated_at = now();
        Ok(c.clone())
    }

    async fn delete(&self, ctx: &TenantCtx, id: ConversationId) -> Result<()> {
        let mut db = self.write();
        let tid = ctx.tenant_id();
        db.conversations
            .remove(&(tid, id))
            .ok_or(ContentError::NotFound("conversation"))?;
        db.messages
            .retain(|(t, _), m| !(*t == tid && m.conversation_id == id));
        // Files outlive the conversation (their blobs are deleted separately), as with
        // `ON DELETE SET NULL` on Postgres.
        for ((t, _), f) in &mut db.files {
            if *t == tid && f.conversation_id == Some(id) {
                f.conversation_id = None;
            }
        }
        Ok(())
    }
}

/// Checks a new message against the stored ones and those earlier in its batch.
fn check_message(
    db: &ContentInner,
    tid: TenantId,
    new: &NewMessage,
    batch: &[Message],
) -> Result<()> {
    if !db.conversations.contains_key(&(tid, new.conversation_id)) {
        return Err(ContentError::NotFound("conversation"));
    }
    if db.messages.contains_key(&(tid, new.id)) || batch.iter().any(|m| m.id == new.id) {
        return Err(ContentError::Conflict("this message already exists".into()));
    }
    if let Some(p) = new.parent_id {
        let parent_conv = db
            .messages
            .get(&(tid, p))
            .map(|m| m.conversation_id)
            .or_else(|| batch.iter().find(|m| m.id == p).map(|m| m.conversation_id));
        if parent_conv != Some(new.conversation_id) {
            return Err(ContentError::NotFound("message"));
        }
    }
    Ok(())
}

#[async_trait]
impl MessageRepo for MemoryContent {
    async fn insert(&self, ctx: &TenantCtx, new: NewMessage) -> Result<Message> {
        let mut out = self.insert_many(ctx, vec![new]).await?;
        out.pop()
            .ok_or_else(|| ContentError::Unexpected(anyhow::anyhow!("nothing was inserted")))
    }

    async fn prepare_insert(&self, ctx: &TenantCtx, new: NewMessage) -> Result<PendingMessage> {
        // Checked now, as Postgres would when the row is written; stored on commit.
        check_message(&self.read(), ctx.tenant_id(), &new, &[])?;
        let (store, ctx) = (self.clone(), ctx.clone());
        Ok(PendingMessage::new(async move {
            MessageRepo::insert(&store, &ctx, new).await
        }))
    }

    async fn insert_many(&self, ctx: &TenantCtx, new: Vec<NewMessage>) -> Result<Vec<Message>> {
        let mut db = self.write();
        let tid = ctx.tenant_id();
        // Validate the whole batch before storing any of it.
        let mut batch: Vec<Message> = Vec::with_capacity(new.len());
        let at = now();
        for n in new {
            check_message(&db, tid, &n, &batch)?;
            batch.push(n.stored_at(at));
        }
        for m in &batch {
            db.messages.insert((tid, m.id), m.clone());
            if let Some(c) = db.conversations.get_mut(&(tid, m.conversation_id)) {
                c.last_message_at = Some(at);
            }
        }
        Ok(batch)
    }

    async fn get(&self, ctx: &TenantCtx, id: MessageId) -> Result<Message> {
        self.read()
            .messages
            .get(&(ctx.tenant_id(), id))
            .cloned()
            .ok_or(ContentError::NotFound("message"))
    }

    async fn for_conversation(
        &self,
        ctx: &TenantCtx,
        conversation: ConversationId,
    ) -> Result<Vec<Message>> {
        Ok(self.read().messages_of(ctx.tenant_id(), conversation))
    }

    async fn search(
        &self,
        ctx: &TenantCtx,
        owner: Option<UserId>,
        query: &str,
        limit: usize,
    ) -> Result<Vec<MessageHit>> {
        let q = terms(query);
        if q.is_empty() {
            return Ok(Vec::new());
        }
        let db = self.read();
        let tid = ctx.tenant_id();
        let mut hits: Vec<MessageHit> = db
            .messages
            .iter()
            .filter(|((t, _), m)| {
                *t == tid
                    && owner.is_none_or(|o| {
                        db.conversations
                            .get(&(tid, m.conversation_id))
                            .is_some_and(|c| c.owner_id == o)
                    })
            })
            .filter_map(|(_, m)| {
                let score = relevance(&q, &m.content);
                (score > 0.0).then(|| MessageHit {
                    message_id: m.id,
                    conversation_id: m.conversation_id,
                    snippet: snippet(&q, &m.content),
                    score,
                })
            })
            .collect();
        hits.sort_by(|a, b| b.score.total_cmp(&a.score));
        hits.truncate(limit);
        Ok(hits)
    }
}

#[async_trait]
impl MemoryRepo for MemoryContent {
    async fn insert(&self, ctx: &TenantCtx, new: NewMemory) -> Result<Memory> {
        let mut db = self.write();
        let tid = ctx.tenant_id();
        if db
            .memories
            .iter()
            .any(|((t, _), m)| *t == tid && m.owner_id == new.owner_id && m.key == new.key)
        {
            return Err(ContentError::Conflict(
                "a memory with this key already exists".into(),
            ));
        }
        let at = now();
        let m = Memory {
            id: new.id,
            owner_id: new.owner_id,
            key: new.key,
            value: new.value,
            category: new.category,
            source: new.source,
            source_id: new.source_id,
            created_at: at,
            updated_at: at,
        };
        db.memories.insert((tid, m.id), m.clone());
        Ok(m)
    }

    async fn get(&self, ctx: &TenantCtx, id: MemoryId) -> Result<Memory> {
        self.read()
            .memories
            .get(&(ctx.tenant_id(), id))
            .cloned()
            .ok_or(ContentError::NotFound("memory"))
    }

    async fn list(
        &self,
        ctx: &TenantCtx,
        owner: UserId,
        page: PageRequest,
    ) -> Result<Page<Memory>> {
        let db = self.read();
        let tid = ctx.tenant_id();
        let items = db
            .memories
            .iter()
            .filter(|((t, _), m)| *t == tid && m.owner_id == owner)
            .map(|(_, m)| m.clone());
        Ok(page_of(items, page, |m| m.id.as_uuid()))
    }

    async fn update(&self, ctx: &TenantCtx, id: MemoryId, patch: MemoryPatch) -> Result<Memory> {
        let mut db = self.write();
        let tid = ctx.tenant_id();
        let owner = db
            .memories
            .get(&(tid, id))
            .map(|m| m.owner_id)
            .ok_or(ContentError::NotFound("memory"))?;
        if let Some(key) = &patch.key
            && db.memories.iter().any(|((t, mid), m)| {
                *t == tid && *mid != id && m.owner_id == owner && &m.key == key
            })
        {
            return Err(ContentError::Conflict(
                "a memory with this key already exists".into(),
            ));
        }
        let m = db
            .memories
            .get_mut(&(tid, id))
            .ok_or(ContentError::NotFound("memory"))?;
        if let Some(v) = patch.key {
            m.key = v;
        }
        if let Some(v) = patch.value {
            m.value = v;
        }
        if let Some(v) = patch.category {
            m.category = v;
        }
        m.updated_at = now();
        Ok(m.clone())
    }

    async fn delete(&self, ctx: &TenantCtx, id: MemoryId) -> Result<()> {
        self.write()
            .memories
            .remove(&(ctx.tenant_id(), id))
            .map(|_| ())
            .ok_or(ContentError::NotFound("memory"))
    }

    async fn search(
        &self,
        ctx: &TenantCtx,
        owner: UserId,
        query: &str,
        limit: usize,
    ) -> Result<Vec<ScoredMemory>> {
        let q = terms(query);
        if q.is_empty() {
            return Ok(Vec::new());
        }
        let db = self.read();
        let tid = ctx.tenant_id();
        let mut hits: Vec<ScoredMemory> = db
            .memories
            .iter()
            .filter(|((t, _), m)| *t == tid && m.owner_id == owner)
            .filter_map(|(_, m)| {
                let text = format!(
                    "{} {} {}",
                    m.key,
                    m.value,
                    m.category.as_deref().unwrap_or_default()
                );
                let score = relevance(&q, &text);
                (score > 0.0).then(|| ScoredMemory {
                    memory: m.clone(),
                    score,
                })
            })
            .collect();
        hits.sort_by(|a, b| b.score.total_cmp(&a.score));
        hits.truncate(limit);
        Ok(hits)
    }
}

#[async_trait]
impl FileRepo for MemoryContent {
    async fn insert(&self, ctx: &TenantCtx, new: NewFile) -> Result<FileAttachment> {
        let mut db = self.write();
        let tid = ctx.tenant_id();
        if let Some(c) = new.conversation_id
            && !db.conversations.contains_key(&(tid, c))
        {
            return Err(ContentError::NotFound("conversation"));
        }
        let f = FileAttachment {
            id: new.id,
            owner_id: new.owner_id,
            conversation_id: new.conversation_id,
            filename: new.filename,
            mime_type: new.mime_type,
            size_bytes: new.size_bytes,
            checksum: new.checksum,
            storage_key: new.storage_key,
            knowledge_document_id: None,
            created_at: now(),
        };
        db.files.insert((tid, f.id), f.clone());
        Ok(f)
    }

    async fn get(&self, ctx: &TenantCtx, id: FileId) -> Result<FileAttachment> {
        self.read()
            .files
            .get(&(ctx.tenant_id(), id))
            .cloned()
            .ok_or(ContentError::NotFound("file"))
    }

    async fn for_conversation(
        &self,
        ctx: &TenantCtx,
        conversation: ConversationId,
    ) -> Result<Vec<FileAttachment>> {
        let tid = ctx.tenant_id();
        Ok(self
            .read()
            .files
            .iter()
            .filter(|((t, _), f)| *t == tid && f.conversation_id == Some(conversation))
            .map(|(_, f)| f.clone())
            .collect())
    }

    async fn set_knowledge_document(
        &self,
        ctx: &TenantCtx,
        id: FileId,
        document: KnowledgeDocumentId,
    ) -> Result<FileAttachment> {
        let mut db = self.write();
        let f = db
            .files
            .get_mut(&(ctx.tenant_id(), id))
            .ok_or(ContentError::NotFound("file"))?;
        f.knowledge_document_id = Some(document);
        Ok(f.clone())
    }

    async fn delete(&self, ctx: &TenantCtx, id: FileId) -> Result<()> {
        self.write()
            .files
            .remove(&(ctx.tenant_id(), id))
            .map(|_| ())
            .ok_or(ContentError::NotFound("file"))
    }
}

#[async_trait]
impl UsageMeter for MemoryContent {
    async fn record(&self, ctx: &TenantCtx, event: UsageEvent) -> Result<Recorded> {
        let mut db = self.write();
        let key = (ctx.tenant_id(), event.idempotency_key.clone());
        if db.usage.contains_key(&key) {
            return Ok(Recorded::Duplicate);
        }
        db.usage.insert(key, event);
        Ok(Recorded::New)
    }

    async fn total_tokens(
        &self,
        ctx: &TenantCtx,
        scope: UsageScope,
        from: Timestamp,
        until: Timestamp,
    ) -> Result<u64> {
        let tid = ctx.tenant_id();
        Ok(self
            .read()
            .usage
            .iter()
            .filter(|((t, _), e)| {
                *t == tid
                    && e.occurred_at >= from
                    && e.occurred_at < until
                    && match scope {
                        UsageScope::Tenant => true,
                        UsageScope::User(u) => e.user_id == Some(u),
                    }
            })
            .map(|(_, e)| e.usage.total())
            .sum())
    }
}

#[async_trait]
impl QuotaSource for MemoryContent {
    async fn quota(&self, ctx: &TenantCtx) -> Result<Quota> {
        Ok(self
            .read()
            .quotas
            .get(&ctx.tenant_id())
            .copied()
            .unwrap_or_default())
    }
}

#[async_trait]
impl QuotaAdmin for MemoryContent {
    async fn quota_of(&self, _ctx: &PlatformCtx, tenant: TenantId) -> Result<Quota> {
        Ok(self.read().quotas.get(&tenant).copied().unwrap_or_default())
    }

    async fn replace_quota(
        &self,
        _ctx: &PlatformCtx,
        tenant: TenantId,
        quota: Quota,
    ) -> Result<()> {
        self.write().quotas.insert(tenant, quota);
        Ok(())
    }
}

#[async_trait]
impl LlmCatalog for MemoryContent {
    async fn list(&self, _ctx: &TenantCtx) -> Result<Vec<LlmModel>> {
        Ok(self.read().catalog.clone())
    }

    async fn get(&self, _ctx: &TenantCtx, provider: LlmProvider, model: &str) -> Result<LlmModel> {
        self.read()
            .catalog
            .iter()
            .find(|m| m.provider == provider && m.name == model)
            .cloned()
            .ok_or_else(|| ContentError::ModelUnavailable(format!("{}/{model}", provider.as_str())))
    }
}

/// Runs answer tasks on the Tokio runtime the server runs on.
#[derive(Debug, Clone, Copy, Default)]
pub struct TokioSpawner;

impl TaskSpawner for TokioSpawner {
    fn spawn(&self, task: BoxFuture<'static, ()>) {
        tokio::spawn(task);
    }
}

/// A chat model that answers every request with the same text, streamed word by
/// word, with estimated usage: for demos without an LLM key, tests and benchmarks.
#[derive(Debug, Clone)]
pub struct FakeChatModel {
    answer: String,
}

impl FakeChatModel {
    /// The provider and model name to register it under.
    pub const PROVIDER: LlmProvider = LlmProvider::OpenaiCompatible;
    pub const MODEL: &'static str = "trellis-fake";

    #[must_use]
    pub fn new(answer: impl Into<String>) -> Self {
        Self {
            answer: answer.into(),
        }
    }

    /// Its catalogue entry (free, streaming, a generous context window).
    #[must_use]
    pub fn catalog_entry() -> LlmModel {
        LlmModel {
            provider: Self::PROVIDER,
            name: Self::MODEL.into(),
            context_window: 128_000,
            supports_streaming: true,
            input_price_per_1k: MicroUsd(0),
            output_price_per_1k: MicroUsd(0),
        }
    }

    fn usage(&self, request: &ChatRequest) -> TokenUsage {
        TokenUsage {
            prompt_tokens: request
                .messages
                .iter()
                .map(|m| estimate_tokens(&m.content))
                .sum(),
            completion_tokens: estimate_tokens(&self.answer),
        }
    }
}

#[async_trait]
impl ChatModel for FakeChatModel {
    async fn complete(&self, _ctx: &TenantCtx, request: ChatRequest) -> Result<Completion> {
        Ok(Completion {
            content: self.answer.clone(),
            finish_reason: FinishReason::Stop,
            usage: Some(self.usage(&request)),
        })
    }

    async fn stream(&self, _ctx: &TenantCtx, request: ChatRequest) -> Result<ChatStream> {
        // Words keep their trailing whitespace, so the deltas join back to the answer.
        let mut chunks: Vec<ChatChunk> = self
            .answer
            .split_inclusive(char::is_whitespace)
            .map(|w| ChatChunk::Delta(w.to_owned()))
            .collect();
        chunks.push(ChatChunk::Usage(self.usage(&request)));
        chunks.push(ChatChunk::Finish(FinishReason::Stop));
        Ok(Box::pin(futures::stream::iter(chunks)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures::StreamExt;
    use trellis_content::{
        AnswerEvent, AttachmentReader, ContentConfig, ContentPorts, ContentService, FileAttachment,
        KnowledgeCollectionId, Passage, Retriever, StartConversation, UserMessage,
    };
    use trellis_kernel::{Actor, Role, SystemClock};

    struct NoKnowledge;

    struct NoAttachments;

    #[async_trait]
    impl AttachmentReader for NoAttachments {
        async fn text(
            &self,
            _ctx: &TenantCtx,
            _file: &FileAttachment,
            _max_chars: usize,
        ) -> Result<Option<String>> {
            Ok(None)
        }

        fn forget(&self, _ctx: &TenantCtx, _file: FileId) {}
    }

    #[async_trait]
    impl Retriever for NoKnowledge {
        async fn retrieve(
            &self,
            _ctx: &TenantCtx,
            _collections: &[KnowledgeCollectionId],
            _query: &str,
            _k: usize,
        ) -> Result<Vec<Passage>> {
            Ok(Vec::new())
        }
    }

    fn service(store: &MemoryContent, answer: &str) -> ContentService {
        let s = Arc::new(store.clone());
        ContentService::new(
            ContentPorts {
                agents: s.clone(),
                tools: s.clone(),
                conversations: s.clone(),
                messages: s.clone(),
                memories: s.clone(),
                files: s.clone(),
                attachments: Arc::new(NoAttachments),
                usage: s.clone(),
                quotas: s.clone(),
                catalog: s,
                chat: Arc::new(FakeChatModel::new(answer)),
                retriever: Arc::new(NoKnowledge),
                spawner: Arc::new(TokioSpawner),
                clock: Arc::new(SystemClock),
            },
            ContentConfig::default(),
        )
    }

    #[tokio::test]
    async fn the_fake_model_streams_words_that_join_back_into_its_answer() {
        let ctx = TenantCtx::system(TenantId::new());
        let request = ChatRequest {
            provider: FakeChatModel::PROVIDER,
            model: FakeChatModel::MODEL.into(),
            messages: vec![],
            parameters: trellis_content::ModelParameters::default(),
        };
        let chunks: Vec<ChatChunk> = FakeChatModel::new("Hello there, world.")
            .stream(&ctx, request)
            .await
            .unwrap()
            .collect()
            .await;
        let text: String = chunks
            .iter()
            .filter_map(|c| match c {
                ChatChunk::Delta(t) => Some(t.as_str()),
                _ => None,
            })
            .collect();
        assert_eq!(text, "Hello there, world.");
        assert_eq!(chunks.len(), 5);
        assert_eq!(chunks.last(), Some(&ChatChunk::Finish(FinishReason::Stop)));
    }

    #[tokio::test]
    async fn answering_and_regenerating_in_memory_leaves_two_sibling_answers_and_metered_usage() {
        let store = MemoryContent::new().with_models(vec![FakeChatModel::catalog_entry()]);
        let svc = service(&store, "Refunds take 14 days.");
        let (tenant, user) = (TenantId::new(), UserId::new());
        let ctx = TenantCtx::authenticated(tenant, Actor::User(user), Role::User, None);
        let conv = svc
            .create_conversation(
                &ctx,
                StartConversation {
                    provider: Some(FakeChatModel::PROVIDER),
                    model: Some(FakeChatModel::MODEL.into()),
                    ..StartConversation::default()
                },
            )
            .await
            .unwrap();
        let first = svc
            .answer(
                &ctx,
                conv.id,
                UserMessage {
                    content: "How long do refunds take?".into(),
                    ..UserMessage::default()
                },
            )
            .await
            .unwrap();
        let events: Vec<AnswerEvent> = first.events.collect().await;
        let Some(AnswerEvent::Done(a1)) = events.last() else {
            panic!("expected done, got {events:?}");
        };
        assert_eq!(a1.content, "Refunds take 14 days.");
        let again = svc.regenerate(&ctx, conv.id, a1.id).await.unwrap();
        let events: Vec<AnswerEvent> = again.events.collect().await;
        assert!(matches!(events.last(), Some(AnswerEvent::Done(_))));

        let tree = svc.message_tree(&ctx, conv.id, None).await.unwrap();
        assert_eq!(tree.nodes.len(), 3);
        let question = &tree.nodes[0];
        assert_eq!(question.children.len(), 2, "two sibling answers");
        assert_eq!(tree.active_path.len(), 2);
        assert_eq!(tree.active_path[1], again.assistant_message_id);
        let used = store
            .total_tokens(
                &ctx,
                UsageScope::User(user),
                chrono::Utc::now() - chrono::Duration::hours(1),
                chrono::Utc::now() + chrono::Duration::hours(1),
            )
            .await
            .unwrap();
        assert!(used > 0);
        let status = svc.quota_status(&ctx).await.unwrap();
        assert!(status.is_empty(), "no budgets configured");
    }
}
