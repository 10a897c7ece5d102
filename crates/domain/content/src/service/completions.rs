//! The stateless completion behind the OpenAI-compatible API: a tenant's agent, named
//! like a model, answers a message list the client sends whole with every request.
//! It is grounded like an answer in a conversation (the agent's instructions, output
//! format and knowledge collections; the quota checked before the model is called;
//! usage metered once per request under an idempotency key), but nothing is stored:
//! OpenAI's API is stateless, and so is this one.
//!
//! The caller's memories are left out on purpose: an API key usually serves many end
//! users of the tenant's product, and what is remembered about the key's owner must not
//! leak into their answers.
//!
//! As in [`answer`](super::answer), a spawned task drives the model and relays what it
//! writes through a bounded channel, so the usage is recorded even when the client
//! goes away mid-answer (dropping the stream cancels the model call).

use super::relay::{self, Ending, Produced, send};
use super::{ContentService, acting_user, require};
use crate::prompt::{self, PromptParts};
use crate::{
    Agent, ChatMessage, ChatModel, ChatRequest, ChatRole, Citation, ContentError, FinishReason,
    ModelParameters, ProviderError, Result, TokenUsage, UsageEvent, UsageEventId, UsageMeter,
};
use futures::channel::{mpsc, oneshot};
use futures::{Stream, StreamExt};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use trellis_kernel::{
    Clock, InvalidValue, PageRequest, Permission, TenantCtx, Timestamp, UserId, define_id,
};
use trellis_tenancy::LlmProvider;

define_id!(
    /// One stateless completion (the `chatcmpl-…` id of the OpenAI-compatible API).
    CompletionId
);

/// At most this many messages per completion request.
pub const MAX_COMPLETION_MESSAGES: usize = 1000;

/// At most this many agents are offered as models (ten full pages).
pub const MAX_COMPLETION_AGENTS: usize = 1000;

/// Retrieval takes bounded queries.
const MAX_QUERY_CHARS: usize = 2000;

/// Reads an OpenAI message role. `developer` is what newer OpenAI models call the
/// system role; tool and function results have no place in a grounded agent's prompt.
///
/// # Errors
/// For any other role.
pub fn completion_role(role: &str) -> Result<ChatRole, InvalidValue> {
    match role {
        "system" | "developer" => Ok(ChatRole::System),
        "user" => Ok(ChatRole::User),
        "assistant" => Ok(ChatRole::Assistant),
        _ => Err(InvalidValue::new(
            "messages",
            format!("the role `{role}` is not supported: use system, user or assistant"),
        )),
    }
}

/// A completion to write.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct CompletionRequest {
    /// The agent's name (the OpenAI `model`).
    pub agent: String,
    /// The conversation so far, oldest first; system messages add to the agent's
    /// instructions (they never replace them).
    pub messages: Vec<ChatMessage>,
    /// Overrides of the agent's parameters, within the usual limits.
    pub temperature: Option<f32>,
    pub top_p: Option<f32>,
    pub max_tokens: Option<u32>,
    /// Relay the answer as it is written instead of returning it whole.
    pub stream: bool,
}

/// A whole completion.
#[derive(Debug, Clone, PartialEq)]
pub struct Completed {
    pub id: CompletionId,
    pub created: Timestamp,
    /// The agent's name, as asked for.
    pub agent: String,
    pub content: String,
    pub finish_reason: FinishReason,
    /// As the provider reported it, or estimated when it reported none.
    pub usage: TokenUsage,
    /// The sources the answer may cite, numbered as in the prompt.
    pub citations: Vec<Citation>,
}

/// What a streamed completion says as it is written.
#[derive(Debug, Clone, PartialEq)]
pub enum CompletionEvent {
    /// More answer text.
    Delta(String),
    /// The answer is complete (usage is already recorded). Last.
    Done {
        finish_reason: FinishReason,
        usage: TokenUsage,
    },
    /// The provider failed; the message is safe to show. Last.
    Error(ProviderError),
}

/// A started, streamed completion. Dropping it stops the model.
pub struct CompletionStream {
    pub id: CompletionId,
    pub created: Timestamp,
    /// The agent's name, as asked for.
    pub agent: String,
    /// The sources the answer may cite, numbered as in the prompt.
    pub citations: Vec<Citation>,
    events: mpsc::Receiver<CompletionEvent>,
    // Never read: dropping it with the stream cancels the task's `oneshot::Sender`.
    _alive: oneshot::Receiver<()>,
}

impl std::fmt::Debug for CompletionStream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CompletionStream")
            .field("id", &self.id)
            .field("agent", &self.agent)
            .finish_non_exhaustive()
    }
}

impl Stream for CompletionStream {
    type Item = CompletionEvent;
    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<CompletionEvent>> {
        self.events.poll_next_unpin(cx)
    }
}

/// What [`ContentService::complete_chat`] returns, as the request's `stream` asked.
#[derive(Debug)]
pub enum CompletionReply {
    Whole(Completed),
    Stream(CompletionStream),
}

/// A request's messages, checked and sorted for the prompt.
struct Checked {
    /// The client's system messages, in order.
    system: Vec<String>,
    /// User and assistant turns, oldest first.
    turns: Vec<ChatMessage>,
    /// The last user message, cut to a retrieval query.
    question: String,
}

fn invalid_message(i: usize, reason: &str) -> ContentError {
    InvalidValue::new("messages", format!("message {i}: {reason}")).into()
}

impl ContentService {
    /// The agents the caller may name as a model, by name.
    ///
    /// # Errors
    /// `Forbidden` without `chat_use`.
    pub async fn completion_agents(&self, ctx: &TenantCtx) -> Result<Vec<Agent>> {
        require(ctx, Permission::ChatUse)?;
        let mut agents = Vec::new();
        let mut cursor: Option<String> = None;
        while agents.len() < MAX_COMPLETION_AGENTS {
            let page = self
                .list_agents(ctx, PageRequest::new(Some(100), cursor.as_deref())?)
                .await?;
            agents.extend(page.items);
            match page.next_cursor {
                Some(c) => cursor = Some(c),
                None => break,
            }
        }
        agents.truncate(MAX_COMPLETION_AGENTS);
        agents.sort_by(|a, b| a.config.name.cmp(&b.config.name));
        Ok(agents)
    }

    /// Writes a completion with the named agent; nothing is stored but the usage.
    ///
    /// # Errors
    /// `Forbidden` without `chat_use` or without a user; `Invalid` for an empty or
    /// overlong message list, a bad role or content, or parameters out of range;
    /// `NotFound` for an agent the caller may not use (or none of that name);
    /// `QuotaExceeded` (the model is not called); `ModelUnavailable`; retrieval
    /// failures. For a whole completion, `Provider` when the model failed; a stream
    /// reports that as its last event instead.
    pub async fn complete_chat(
        &self,
        ctx: &TenantCtx,
        request: CompletionRequest,
    ) -> Result<CompletionReply> {
        require(ctx, Permission::ChatUse)?;
        let me = acting_user(ctx)?;
        let checked = self.checked_messages(request.messages)?;
        let overrides =
            ModelParameters::new(request.temperature, request.top_p, request.max_tokens)?;
        let agent = self.agent_by_name(ctx, &request.agent).await?;
        self.enforce_quota(ctx, me).await?;
        let config = agent.config;
        let entry = self
            .catalog
            .get(ctx, config.provider, &config.model)
            .await?;
        let parameters = overrides.over(config.parameters);
        if parameters
            .max_tokens()
            .is_some_and(|m| m >= entry.context_window)
        {
            return Err(InvalidValue::new(
                "max_tokens",
                format!(
                    "must be below the model's context window of {}",
                    entry.context_window
                ),
            )
            .into());
        }
        let passages =
            if config.knowledge_collections.is_empty() || checked.question.trim().is_empty() {
                Vec::new()
            } else {
                self.retriever
                    .retrieve(
                        ctx,
                        &config.knowledge_collections,
                        &checked.question,
                        self.config.retrieval_k,
                    )
                    .await?
            };
        let instructions = std::iter::once(config.instructions.trim())
            .chain(checked.system.iter().map(|s| s.trim()))
            .filter(|s| !s.is_empty())
            .collect::<Vec<_>>()
            .join("\n\n");
        let reserve = parameters
            .max_tokens()
            .unwrap_or(self.config.default_answer_tokens)
            .min(entry.context_window / 2);
        let built = prompt::build_from_turns(
            &PromptParts {
                instructions: &instructions,
                output_format: config.output_format.as_deref(),
                memories: &[],
                attachments: &[],
                passages: &passages,
                history: &[],
                context_window: entry.context_window,
                reserve_tokens: reserve,
            },
            checked.turns,
        );

        let id = CompletionId::new();
        let created = self.clock.now();
        let (tx, rx) = mpsc::channel(self.config.event_buffer.max(1));
        let (alive_tx, alive_rx) = oneshot::channel();
        let job = CompletionJob {
            ctx: ctx.clone(),
            user: me,
            id,
            provider: config.provider,
            model: config.model.clone(),
            streaming: entry.supports_streaming,
            prompt_tokens: built.estimated_tokens,
            request: ChatRequest {
                provider: config.provider,
                model: config.model,
                messages: built.messages,
                parameters,
            },
            chat: self.chat.clone(),
            usage: self.usage.clone(),
            clock: self.clock.clone(),
        };
        self.spawner.spawn(Box::pin(job.run(tx, alive_tx)));
        let stream = CompletionStream {
            id,
            created,
            agent: config.name,
            citations: built.citations,
            events: rx,
            _alive: alive_rx,
        };
        if request.stream {
            Ok(CompletionReply::Stream(stream))
        } else {
            collect(stream).await.map(CompletionReply::Whole)
        }
    }

    /// Checks the message list: not empty, not too long, known roles, bounded text,
    /// and at least one user message with something in it.
    fn checked_messages(&self, messages: Vec<ChatMessage>) -> Result<Checked> {
        if messages.is_empty() {
            return Err(InvalidValue::new("messages", "must contain at least one message").into());
        }
        if messages.len() > MAX_COMPLETION_MESSAGES {
            return Err(InvalidValue::new(
                "messages",
                format!("at most {MAX_COMPLETION_MESSAGES} messages"),
            )
            .into());
        }
        let max = self.config.max_message_chars;
        let mut checked = Checked {
            system: Vec::new(),
            turns: Vec::new(),
            question: String::new(),
        };
        for (i, m) in messages.into_iter().enumerate() {
            if m.content.chars().count() > max {
                return Err(invalid_message(
                    i,
                    &format!("must be at most {max} characters"),
                ));
            }
            if m.content
                .chars()
                .any(|c| c.is_control() && !matches!(c, '\n' | '\r' | '\t'))
            {
                return Err(invalid_message(i, "must not contain control characters"));
            }
            match m.role {
                ChatRole::System => checked.system.push(m.content),
                ChatRole::User => {
                    if !m.content.trim().is_empty() {
                        checked.question = m.content.trim().chars().take(MAX_QUERY_CHARS).collect();
                    }
                    checked.turns.push(m);
                }
                ChatRole::Assistant => checked.turns.push(m),
            }
        }
        if checked.question.is_empty() {
            return Err(
                InvalidValue::new("messages", "must contain a user message with text").into(),
            );
        }
        Ok(checked)
    }
}

/// Waits for a stream's outcome and gathers it into one completion.
async fn collect(mut stream: CompletionStream) -> Result<Completed> {
    let mut content = String::new();
    while let Some(event) = stream.next().await {
        match event {
            CompletionEvent::Delta(t) => content.push_str(&t),
            CompletionEvent::Done {
                finish_reason,
                usage,
            } => {
                return Ok(Completed {
                    id: stream.id,
                    created: stream.created,
                    agent: stream.agent,
                    content,
                    finish_reason,
                    usage,
                    citations: stream.citations,
                });
            }
            CompletionEvent::Error(e) => return Err(e.into()),
        }
    }
    Err(anyhow::anyhow!("the completion task ended without an outcome").into())
}

/// Everything the completing task needs, owned, so it outlives the request.
struct CompletionJob {
    ctx: TenantCtx,
    user: UserId,
    id: CompletionId,
    provider: LlmProvider,
    model: String,
    streaming: bool,
    prompt_tokens: u32,
    request: ChatRequest,
    chat: Arc<dyn ChatModel>,
    usage: Arc<dyn UsageMeter>,
    clock: Arc<dyn Clock>,
}

impl CompletionJob {
    async fn run(self, mut tx: mpsc::Sender<CompletionEvent>, mut alive: oneshot::Sender<()>) {
        let mut produced = Produced::default();
        let outcome = self.drive(&mut tx, &mut alive, &mut produced).await;
        // Tokens were consumed once the provider accepted the request, reported or not.
        let usage = produced.consumed(self.prompt_tokens);
        // Recorded before the client hears `Done`, so its next request's quota check
        // already counts these tokens.
        if let Some((u, estimated)) = usage.filter(|(u, _)| u.total() > 0) {
            self.record_usage(u, estimated).await;
        }
        match outcome {
            Ending::Finished => {
                let done = CompletionEvent::Done {
                    finish_reason: produced.finish.unwrap_or(FinishReason::Stop),
                    usage: usage.map(|(u, _)| u).unwrap_or_default(),
                };
                send(&mut tx, done).await;
            }
            Ending::Failed(e) => {
                send(&mut tx, CompletionEvent::Error(e)).await;
            }
            Ending::Disconnected => {}
        }
    }

    async fn drive(
        &self,
        tx: &mut mpsc::Sender<CompletionEvent>,
        alive: &mut oneshot::Sender<()>,
        produced: &mut Produced,
    ) -> Ending {
        let opening = relay::open(&*self.chat, &self.ctx, &self.request, self.streaming);
        relay::relay(opening, tx, alive, produced, CompletionEvent::Delta).await
    }

    async fn record_usage(&self, usage: TokenUsage, estimated: bool) {
        let event = UsageEvent {
            id: UsageEventId::new(),
            idempotency_key: format!("completion:{}", self.id),
            user_id: Some(self.user),
            conversation_id: None,
            message_id: None,
            provider: self.provider,
            model: self.model.clone(),
            usage,
            estimated,
            occurred_at: self.clock.now(),
        };
        if let Err(e) = self.usage.record(&self.ctx, event).await {
            tracing::error!(
                completion = %self.id,
                error = %format!("{e:#}"),
                "could not record usage"
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::service::tests::{FixedClock, TokioSpawner, catalog_entry, happy_chunks, noon};
    use crate::{
        AgentConfig, AgentId, AgentTier, BudgetPeriod, ChatChunk, ChatStream, ContentConfig,
        ContentPorts, KnowledgeCollectionId, KnowledgeDocumentId, LlmModel, MicroUsd,
        MockAgentRepo, MockChatModel, MockConversationRepo, MockFileRepo, MockLlmCatalog,
        MockMemoryRepo, MockMessageRepo, MockQuotaSource, MockRetriever, MockToolRepo,
        MockUsageMeter, Passage, ProviderErrorKind, Quota, Recorded, TokenBudget,
    };
    use std::sync::Mutex;
    use std::time::Duration;
    use trellis_kernel::{Actor, Role, TenantId};

    fn ctx(role: Role) -> TenantCtx {
        TenantCtx::authenticated(TenantId::new(), Actor::User(UserId::new()), role, None)
    }

    fn agent(published: bool) -> Agent {
        Agent {
            id: AgentId::new(),
            tenant_id: TenantId::new(),
            config: AgentConfig {
                name: "Support".into(),
                description: None,
                instructions: "You answer refund questions for Acme.".into(),
                provider: LlmProvider::Openai,
                model: "gpt-4o".into(),
                parameters: ModelParameters::new(Some(0.2), None, Some(800)).unwrap(),
                tools: vec![],
                knowledge_collections: vec![KnowledgeCollectionId::new()],
                output_format: Some("One short paragraph.".into()),
                icon: None,
                tier: AgentTier::Free,
                published,
                allowed_roles: vec![],
            },
            version: 1,
            created_by: None,
            created_at: chrono::Utc::now(),
            updated_at: chrono::Utc::now(),
        }
    }

    fn passage() -> Passage {
        Passage {
            collection_id: KnowledgeCollectionId::new(),
            document_id: KnowledgeDocumentId::new(),
            filename: "policy.pdf".into(),
            content: "Refunds are issued within 14 days.".into(),
            span_start: 0,
            span_end: 34,
            page: Some(3),
            score: 0.9,
        }
    }

    fn msg(role: ChatRole, content: &str) -> ChatMessage {
        ChatMessage {
            role,
            content: content.into(),
        }
    }

    fn ask(agent: &str, question: &str) -> CompletionRequest {
        CompletionRequest {
            agent: agent.into(),
            messages: vec![msg(ChatRole::User, question)],
            ..CompletionRequest::default()
        }
    }

    /// The ports a completion uses, as mocks; the rest must never be called.
    struct Mocks {
        agents: MockAgentRepo,
        usage: MockUsageMeter,
        quotas: MockQuotaSource,
        catalog: MockLlmCatalog,
        chat: MockChatModel,
        retriever: MockRetriever,
    }

    impl Mocks {
        /// `agent` is the only agent; the catalogue has every model (streaming); no
        /// quota; retrieval finds one passage.
        fn new(agent: Agent) -> Self {
            let mut m = Self {
                agents: MockAgentRepo::new(),
                usage: MockUsageMeter::new(),
                quotas: MockQuotaSource::new(),
                catalog: MockLlmCatalog::new(),
                chat: MockChatModel::new(),
                retriever: MockRetriever::new(),
            };
            m.agents
                .expect_find_by_name()
                .returning(move |_, name| Ok((name == agent.config.name).then(|| agent.clone())));
            m.catalog
                .expect_get()
                .returning(|_, provider, name| Ok(catalog_entry(provider, name, true)));
            m.quotas.expect_quota().returning(|_| Ok(Quota::default()));
            m.retriever
                .expect_retrieve()
                .returning(|_, _, _, _| Ok(vec![passage()]));
            m
        }

        fn record_usage(&mut self) -> Arc<Mutex<Vec<UsageEvent>>> {
            let log = Arc::new(Mutex::new(Vec::new()));
            let l = log.clone();
            self.usage.expect_record().returning(move |_, e| {
                l.lock().unwrap().push(e);
                Ok(Recorded::New)
            });
            log
        }

        fn model_streams(&mut self, stream: fn() -> ChatStream) -> Arc<Mutex<Option<ChatRequest>>> {
            let seen = Arc::new(Mutex::new(None));
            let s = seen.clone();
            self.chat.expect_stream().times(1).returning(move |_, req| {
                *s.lock().unwrap() = Some(req);
                Ok(stream())
            });
            seen
        }

        fn service(self) -> ContentService {
            ContentService::new(
                ContentPorts {
                    agents: Arc::new(self.agents),
                    tools: Arc::new(MockToolRepo::new()),
                    conversations: Arc::new(MockConversationRepo::new()),
                    messages: Arc::new(MockMessageRepo::new()),
                    memories: Arc::new(MockMemoryRepo::new()),
                    files: Arc::new(MockFileRepo::new()),
                    attachments: Arc::new(crate::MockAttachmentReader::new()),
                    usage: Arc::new(self.usage),
                    quotas: Arc::new(self.quotas),
                    catalog: Arc::new(self.catalog),
                    chat: Arc::new(self.chat),
                    retriever: Arc::new(self.retriever),
                    spawner: Arc::new(TokioSpawner),
                    clock: Arc::new(FixedClock(noon())),
                },
                ContentConfig::default(),
            )
        }
    }

    fn happy() -> ChatStream {
        Box::pin(futures::stream::iter(happy_chunks()))
    }

    async fn whole(s: &ContentService, ctx: &TenantCtx, r: CompletionRequest) -> Result<Completed> {
        match s.complete_chat(ctx, r).await? {
            CompletionReply::Whole(c) => Ok(c),
            CompletionReply::Stream(_) => panic!("asked for a whole completion, got a stream"),
        }
    }

    async fn streamed(
        s: &ContentService,
        ctx: &TenantCtx,
        r: CompletionRequest,
    ) -> CompletionStream {
        match s
            .complete_chat(ctx, CompletionRequest { stream: true, ..r })
            .await
            .unwrap()
        {
            CompletionReply::Stream(s) => s,
            CompletionReply::Whole(_) => panic!("asked for a stream, got a whole completion"),
        }
    }

    #[tokio::test]
    async fn a_completion_is_grounded_in_the_agents_instructions_format_and_sources_and_metered_once()
     {
        let mut m = Mocks::new(agent(true));
        let usage = m.record_usage();
        let seen = m.model_streams(happy);
        let request = CompletionRequest {
            agent: "Support".into(),
            messages: vec![
                msg(ChatRole::System, "Answer in English."),
                msg(ChatRole::User, "Hi"),
                msg(ChatRole::Assistant, "Hello! How can I help?"),
                msg(ChatRole::User, "How long do refunds take?"),
            ],
            ..CompletionRequest::default()
        };
        let c = whole(&m.service(), &ctx(Role::User), request)
            .await
            .unwrap();

        assert_eq!(c.content, "Within 14 days [1].");
        assert_eq!(c.agent, "Support");
        assert_eq!(c.finish_reason, FinishReason::Stop);
        assert_eq!(c.usage.total(), 128);
        assert_eq!(c.citations.len(), 1);
        assert_eq!(c.citations[0].filename, "policy.pdf");

        let req = seen.lock().unwrap().clone().unwrap();
        assert_eq!(req.model, "gpt-4o");
        let roles: Vec<ChatRole> = req.messages.iter().map(|m| m.role).collect();
        assert_eq!(
            roles,
            [
                ChatRole::System,
                ChatRole::User,
                ChatRole::Assistant,
                ChatRole::User
            ]
        );
        let system = &req.messages[0].content;
        let agent_at = system
            .find("You answer refund questions for Acme.")
            .unwrap();
        let caller_at = system.find("Answer in English.").unwrap();
        assert!(agent_at < caller_at, "the agent's instructions come first");
        assert!(system.contains("One short paragraph."));
        assert!(system.contains("[1] policy.pdf, page 3"));

        let usage = usage.lock().unwrap();
        assert_eq!(usage.len(), 1);
        assert_eq!(usage[0].idempotency_key, format!("completion:{}", c.id));
        assert_eq!(usage[0].conversation_id, None);
        assert_eq!(usage[0].usage.total(), 128);
        assert!(!usage[0].estimated);
    }

    #[tokio::test]
    async fn the_models_offered_are_the_agents_a_plain_user_may_use_sorted_by_name() {
        let mut m = Mocks::new(agent(true));
        m.agents
            .expect_list()
            .withf(|_, filter, _| {
                filter.published == Some(true) && filter.usable_by_role == Some(Role::User)
            })
            .returning(|_, _, _| {
                let mut b = agent(true);
                b.config.name = "Billing".into();
                Ok(trellis_kernel::Page {
                    items: vec![agent(true), b],
                    next_cursor: None,
                })
            });
        let names: Vec<String> = m
            .service()
            .completion_agents(&ctx(Role::User))
            .await
            .unwrap()
            .into_iter()
            .map(|a| a.config.name)
            .collect();
        assert_eq!(names, ["Billing", "Support"]);
    }

    #[tokio::test]
    async fn retrieval_searches_with_the_last_user_message() {
        let mut m = Mocks::new(agent(true));
        m.retriever = MockRetriever::new();
        m.retriever
            .expect_retrieve()
            .withf(|_, _, q, k| q == "second question" && *k == 5)
            .times(1)
            .returning(|_, _, _, _| Ok(vec![]));
        m.record_usage();
        m.model_streams(happy);
        let request = CompletionRequest {
            agent: "Support".into(),
            messages: vec![
                msg(ChatRole::User, "first question"),
                msg(ChatRole::Assistant, "an answer"),
                msg(ChatRole::User, "  second question "),
            ],
            ..CompletionRequest::default()
        };
        let c = whole(&m.service(), &ctx(Role::User), request)
            .await
            .unwrap();
        assert!(c.citations.is_empty());
    }

    #[tokio::test]
    async fn request_parameters_override_the_agents_only_where_given() {
        let mut m = Mocks::new(agent(true));
        m.record_usage();
        let seen = m.model_streams(happy);
        let request = CompletionRequest {
            temperature: Some(1.1),
            ..ask("Support", "hi")
        };
        whole(&m.service(), &ctx(Role::User), request)
            .await
            .unwrap();
        let p = seen.lock().unwrap().clone().unwrap().parameters;
        assert_eq!(
            (p.temperature(), p.top_p(), p.max_tokens()),
            (Some(1.1), None, Some(800))
        );
    }

    #[tokio::test]
    async fn parameters_out_of_range_are_refused_before_anything_is_looked_up() {
        let m = Mocks {
            agents: MockAgentRepo::new(),
            ..Mocks::new(agent(true))
        };
        let s = m.service();
        for r in [
            CompletionRequest {
                temperature: Some(3.0),
                ..ask("Support", "hi")
            },
            CompletionRequest {
                top_p: Some(0.0),
                ..ask("Support", "hi")
            },
            CompletionRequest {
                max_tokens: Some(0),
                ..ask("Support", "hi")
            },
        ] {
            let err = whole(&s, &ctx(Role::User), r).await.unwrap_err();
            assert!(matches!(err, ContentError::Invalid(_)), "{err:?}");
        }
    }

    #[tokio::test]
    async fn a_max_tokens_beyond_the_models_context_window_is_refused() {
        let m = Mocks::new(agent(true));
        let r = CompletionRequest {
            max_tokens: Some(200_000),
            ..ask("Support", "hi")
        };
        let err = whole(&m.service(), &ctx(Role::User), r).await.unwrap_err();
        assert!(
            matches!(&err, ContentError::Invalid(v) if v.field == "max_tokens"),
            "{err:?}"
        );
    }

    #[tokio::test]
    async fn empty_overlong_or_userless_message_lists_are_refused() {
        let s = Mocks::new(agent(true)).service();
        let long = "x".repeat(ContentConfig::default().max_message_chars + 1);
        for messages in [
            vec![],
            vec![msg(ChatRole::User, &long)],
            vec![msg(ChatRole::User, "bell \u{7}")],
            vec![
                msg(ChatRole::System, "Be brief."),
                msg(ChatRole::Assistant, "Hi"),
            ],
            vec![msg(ChatRole::User, "   ")],
            vec![msg(ChatRole::User, "hi"); MAX_COMPLETION_MESSAGES + 1],
        ] {
            let r = CompletionRequest {
                agent: "Support".into(),
                messages,
                ..CompletionRequest::default()
            };
            let err = whole(&s, &ctx(Role::User), r).await.unwrap_err();
            assert!(
                matches!(&err, ContentError::Invalid(v) if v.field == "messages"),
                "{err:?}"
            );
        }
    }

    #[test]
    fn only_system_user_and_assistant_roles_are_accepted_and_developer_means_system() {
        assert_eq!(completion_role("system").unwrap(), ChatRole::System);
        assert_eq!(completion_role("developer").unwrap(), ChatRole::System);
        assert_eq!(completion_role("user").unwrap(), ChatRole::User);
        assert_eq!(completion_role("assistant").unwrap(), ChatRole::Assistant);
        for role in ["tool", "function", "supporter", ""] {
            assert_eq!(completion_role(role).unwrap_err().field, "messages");
        }
    }

    #[tokio::test]
    async fn an_unknown_agent_and_one_the_caller_may_not_use_are_both_not_found() {
        let s = Mocks::new(agent(false)).service();
        for name in ["Nobody", "Support"] {
            let err = whole(&s, &ctx(Role::User), ask(name, "hi"))
                .await
                .unwrap_err();
            assert!(
                matches!(err, ContentError::NotFound("agent")),
                "{name}: {err:?}"
            );
        }
    }

    #[tokio::test]
    async fn a_caller_without_chat_use_is_forbidden() {
        let s = Mocks::new(agent(true)).service();
        let no_chat = TenantCtx::authenticated(
            TenantId::new(),
            Actor::User(UserId::new()),
            Role::TenantAdmin,
            Some(vec![Permission::UsersRead]),
        );
        let err = whole(&s, &no_chat, ask("Support", "hi")).await.unwrap_err();
        assert!(matches!(err, ContentError::Forbidden), "{err:?}");
    }

    #[tokio::test]
    async fn a_user_over_their_quota_is_refused_and_the_model_is_never_called() {
        let mut m = Mocks::new(agent(true));
        m.quotas = MockQuotaSource::new();
        m.quotas.expect_quota().returning(|_| {
            Ok(Quota {
                tenant: None,
                per_user: Some(TokenBudget {
                    limit_tokens: 1000,
                    period: BudgetPeriod::Day,
                }),
            })
        });
        m.usage
            .expect_total_tokens()
            .returning(|_, _, _, _| Ok(1500));
        m.chat.expect_stream().never();
        m.chat.expect_complete().never();
        m.retriever = MockRetriever::new();
        m.retriever.expect_retrieve().never();
        let err = whole(&m.service(), &ctx(Role::User), ask("Support", "hi"))
            .await
            .unwrap_err();
        assert!(matches!(err, ContentError::QuotaExceeded { .. }), "{err:?}");
    }

    #[tokio::test]
    async fn a_streamed_completion_relays_the_text_and_ends_with_the_usage() {
        let mut m = Mocks::new(agent(true));
        let usage = m.record_usage();
        m.model_streams(happy);
        let s = streamed(&m.service(), &ctx(Role::User), ask("Support", "refunds?")).await;
        assert_eq!(s.citations.len(), 1);
        let id = s.id;
        let events: Vec<CompletionEvent> =
            tokio::time::timeout(Duration::from_secs(5), s.collect())
                .await
                .unwrap();
        assert_eq!(
            events,
            [
                CompletionEvent::Delta("Within ".into()),
                CompletionEvent::Delta("14 days [1].".into()),
                CompletionEvent::Done {
                    finish_reason: FinishReason::Stop,
                    usage: TokenUsage {
                        prompt_tokens: 120,
                        completion_tokens: 8
                    }
                },
            ]
        );
        let usage = usage.lock().unwrap();
        assert_eq!(usage.len(), 1);
        assert_eq!(usage[0].idempotency_key, format!("completion:{id}"));
    }

    fn fails_midway() -> ChatStream {
        Box::pin(futures::stream::iter(vec![
            ChatChunk::Delta("Within".into()),
            ChatChunk::Error(ProviderError::new(
                ProviderErrorKind::Timeout,
                "the model stalled",
            )),
        ]))
    }

    #[tokio::test]
    async fn a_provider_failure_ends_the_stream_with_an_error_and_the_tokens_are_still_metered() {
        let mut m = Mocks::new(agent(true));
        let usage = m.record_usage();
        m.model_streams(fails_midway);
        let s = streamed(&m.service(), &ctx(Role::User), ask("Support", "refunds?")).await;
        let events: Vec<CompletionEvent> =
            tokio::time::timeout(Duration::from_secs(5), s.collect())
                .await
                .unwrap();
        assert_eq!(events[0], CompletionEvent::Delta("Within".into()));
        assert!(
            matches!(&events[1], CompletionEvent::Error(e) if e.kind == ProviderErrorKind::Timeout)
        );
        let usage = usage.lock().unwrap();
        assert_eq!(usage.len(), 1);
        assert!(usage[0].estimated);
    }

    #[tokio::test]
    async fn a_provider_failure_fails_a_whole_completion_with_the_providers_message() {
        let mut m = Mocks::new(agent(true));
        m.record_usage();
        m.model_streams(fails_midway);
        let err = whole(&m.service(), &ctx(Role::User), ask("Support", "hi"))
            .await
            .unwrap_err();
        assert!(
            matches!(&err, ContentError::Provider(p) if p.message == "the model stalled"),
            "{err:?}"
        );
    }

    fn never_ends() -> ChatStream {
        Box::pin(
            futures::stream::iter(vec![ChatChunk::Delta("Within".into())])
                .chain(futures::stream::pending()),
        )
    }

    #[tokio::test]
    async fn a_client_that_leaves_mid_stream_stops_the_model_and_the_tokens_are_still_metered() {
        let mut m = Mocks::new(agent(true));
        let usage = m.record_usage();
        m.model_streams(never_ends);
        let mut s = streamed(&m.service(), &ctx(Role::User), ask("Support", "hi")).await;
        assert_eq!(
            s.next().await,
            Some(CompletionEvent::Delta("Within".into()))
        );
        drop(s);
        for _ in 0..100 {
            if !usage.lock().unwrap().is_empty() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let usage = usage.lock().unwrap();
        assert_eq!(usage.len(), 1);
        assert!(usage[0].estimated);
        assert!(usage[0].usage.completion_tokens > 0);
    }

    #[tokio::test]
    async fn a_model_that_cannot_stream_is_asked_for_a_whole_completion() {
        let mut m = Mocks::new(agent(true));
        m.catalog = MockLlmCatalog::new();
        m.catalog.expect_get().returning(|_, provider, name| {
            Ok(LlmModel {
                provider,
                name: name.into(),
                context_window: 8000,
                supports_streaming: false,
                input_price_per_1k: MicroUsd(1),
                output_price_per_1k: MicroUsd(2),
            })
        });
        m.record_usage();
        m.chat.expect_stream().never();
        m.chat.expect_complete().times(1).returning(|_, _| {
            Ok(crate::Completion {
                content: "Fourteen days.".into(),
                finish_reason: FinishReason::Length,
                usage: None,
            })
        });
        let c = whole(&m.service(), &ctx(Role::User), ask("Support", "hi"))
            .await
            .unwrap();
        assert_eq!(c.content, "Fourteen days.");
        assert_eq!(c.finish_reason, FinishReason::Length);
        assert!(c.usage.prompt_tokens > 0 && c.usage.completion_tokens > 0);
    }
}
