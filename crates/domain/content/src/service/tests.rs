//! Unit tests of the content use cases over mockall mocks: what a user sees and what
//! gets stored, for permissions, branching, forking, quotas and streamed answers.

use super::*;
use crate::{
    AgentTier, ChatChunk, ChatRequest, ChatRole, Completion, FileAttachment, FileId, FinishReason,
    KnowledgeCollectionId, KnowledgeDocumentId, Message, MessageRole, MockAgentRepo,
    MockAttachmentReader, MockChatModel, MockConversationRepo, MockFileRepo, MockLlmCatalog,
    MockMemoryRepo, MockMessageRepo, MockQuotaSource, MockRetriever, MockToolRepo, MockUsageMeter,
    NewMessage, Passage, PendingMessage, ProviderError, ProviderErrorKind, Quota, Recorded,
    ScoredMemory, TokenBudget, TokenUsage, UsageEvent,
};
use crate::{BudgetPeriod, ChatStream, MicroUsd, Thread};
use futures::StreamExt;
use futures::future::BoxFuture;
use std::sync::Mutex;
use std::time::Duration;
use trellis_kernel::{TenantId, Timestamp};

pub(super) struct TokioSpawner;
impl TaskSpawner for TokioSpawner {
    fn spawn(&self, task: BoxFuture<'static, ()>) {
        tokio::spawn(task);
    }
}

pub(super) struct FixedClock(pub(super) Timestamp);
impl Clock for FixedClock {
    fn now(&self) -> Timestamp {
        self.0
    }
}

pub(super) fn noon() -> Timestamp {
    chrono::DateTime::parse_from_rfc3339("2026-03-14T12:00:00Z")
        .unwrap()
        .with_timezone(&chrono::Utc)
}

fn ctx_as(tenant: TenantId, user: UserId, role: Role) -> TenantCtx {
    TenantCtx::authenticated(tenant, Actor::User(user), role, None)
}

pub(super) fn catalog_entry(provider: LlmProvider, name: &str, streaming: bool) -> LlmModel {
    LlmModel {
        provider,
        name: name.into(),
        context_window: 100_000,
        supports_streaming: streaming,
        input_price_per_1k: MicroUsd(1),
        output_price_per_1k: MicroUsd(2),
    }
}

fn conversation(tenant: TenantId, owner: UserId, agent: Option<AgentId>) -> Conversation {
    Conversation {
        id: ConversationId::new(),
        tenant_id: tenant,
        owner_id: owner,
        title: Some("Refunds".into()),
        provider: LlmProvider::Openai,
        model: "gpt-4o".into(),
        agent_id: agent,
        parameters: ModelParameters::default(),
        archived: false,
        last_message_at: None,
        created_at: noon(),
        updated_at: noon(),
    }
}

fn stored(n: NewMessage) -> Message {
    n.stored_at(chrono::Utc::now())
}

/// A message `seconds` into the conversation.
fn message(
    conv: ConversationId,
    parent: Option<MessageId>,
    role: MessageRole,
    content: &str,
    seconds: i64,
) -> Message {
    Message {
        id: MessageId::new(),
        conversation_id: conv,
        parent_id: parent,
        role,
        content: content.into(),
        author_id: None,
        provider: None,
        model: None,
        finish_reason: None,
        usage: None,
        error: None,
        unfinished: false,
        files: vec![],
        citations: vec![],
        created_at: noon() + chrono::Duration::seconds(seconds),
    }
}

fn agent_config() -> AgentConfig {
    AgentConfig {
        name: "Support".into(),
        description: None,
        instructions: "You answer refund questions for Acme.".into(),
        provider: LlmProvider::Openai,
        model: "gpt-4o".into(),
        parameters: ModelParameters::new(Some(0.2), None, Some(800)).unwrap(),
        tools: vec![],
        knowledge_collections: vec![],
        output_format: None,
        icon: None,
        tier: AgentTier::Free,
        published: true,
        allowed_roles: vec![],
    }
}

fn agent(tenant: TenantId, config: AgentConfig) -> Agent {
    Agent {
        id: AgentId::new(),
        tenant_id: tenant,
        config,
        version: 1,
        created_by: None,
        created_at: noon(),
        updated_at: noon(),
    }
}

fn passage() -> Passage {
    Passage {
        collection_id: KnowledgeCollectionId::new(),
        document_id: KnowledgeDocumentId::new(),
        filename: "policy.pdf".into(),
        content: "Refunds are issued within 14 days.".into(),
        span_start: 100,
        span_end: 134,
        page: Some(3),
        score: 0.87,
    }
}

fn chunks(items: Vec<ChatChunk>) -> ChatStream {
    Box::pin(futures::stream::iter(items))
}

/// Every port as a mock; `service()` assembles them.
struct Mocks {
    agents: MockAgentRepo,
    tools: MockToolRepo,
    conversations: MockConversationRepo,
    messages: MockMessageRepo,
    memories: MockMemoryRepo,
    files: MockFileRepo,
    attachments: MockAttachmentReader,
    usage: MockUsageMeter,
    quotas: MockQuotaSource,
    catalog: MockLlmCatalog,
    chat: MockChatModel,
    retriever: MockRetriever,
    config: ContentConfig,
}

impl Mocks {
    fn new() -> Self {
        Self {
            agents: MockAgentRepo::new(),
            tools: MockToolRepo::new(),
            conversations: MockConversationRepo::new(),
            messages: MockMessageRepo::new(),
            memories: MockMemoryRepo::new(),
            files: MockFileRepo::new(),
            attachments: MockAttachmentReader::new(),
            usage: MockUsageMeter::new(),
            quotas: MockQuotaSource::new(),
            catalog: MockLlmCatalog::new(),
            chat: MockChatModel::new(),
            retriever: MockRetriever::new(),
            config: ContentConfig::default(),
        }
    }

    fn service(mut self) -> ContentService {
        let messages = std::mem::replace(&mut self.messages, MockMessageRepo::new());
        self.service_with_messages(Arc::new(messages))
    }

    /// The service over these mocks, but with `messages` for the message repository.
    fn service_with_messages(self, messages: Arc<dyn MessageRepo>) -> ContentService {
        ContentService::new(
            ContentPorts {
                agents: Arc::new(self.agents),
                tools: Arc::new(self.tools),
                conversations: Arc::new(self.conversations),
                messages,
                memories: Arc::new(self.memories),
                files: Arc::new(self.files),
                attachments: Arc::new(self.attachments),
                usage: Arc::new(self.usage),
                quotas: Arc::new(self.quotas),
                catalog: Arc::new(self.catalog),
                chat: Arc::new(self.chat),
                retriever: Arc::new(self.retriever),
                spawner: Arc::new(TokioSpawner),
                clock: Arc::new(FixedClock(noon())),
            },
            self.config,
        )
    }

    /// Every model exists (streaming), no quota, no memories.
    fn permissive(&mut self) {
        self.catalog
            .expect_get()
            .returning(|_, p, m| Ok(catalog_entry(p, m, true)));
        self.quotas
            .expect_quota()
            .returning(|_| Ok(Quota::default()));
        self.memories
            .expect_search()
            .returning(|_, _, _, _| Ok(vec![]));
    }

    /// The conversation is found with `existing` messages (and no agent read with it),
    /// alone or as a thread.
    fn conversation_reads(&mut self, conv: &Conversation, existing: Vec<Message>) {
        let c = conv.clone();
        self.conversations
            .expect_get()
            .returning(move |_, _| Ok(c.clone()));
        let thread = Thread {
            conversation: conv.clone(),
            messages: existing.clone(),
            agent: None,
        };
        self.conversations
            .expect_thread()
            .returning(move |_, _| Ok(thread.clone()));
        let with_messages = (conv.clone(), existing.clone());
        self.conversations
            .expect_with_messages()
            .returning(move |_, _| Ok(with_messages.clone()));
        self.messages
            .expect_for_conversation()
            .returning(move |_, _| Ok(existing.clone()));
    }

    /// The new conversation `conv` is read as a thread with `agent`. Set before
    /// [`Self::conversation_reads`]: the first expectation set is the one used.
    fn agent_read_with(&mut self, conv: &Conversation, agent: Agent) {
        let thread = Thread {
            conversation: conv.clone(),
            messages: vec![],
            agent: Some(agent),
        };
        self.conversations
            .expect_thread()
            .returning(move |_, _| Ok(thread.clone()));
    }

    /// The conversation is found; messages are `existing`; inserts are recorded.
    fn conversation_with(
        &mut self,
        conv: &Conversation,
        existing: Vec<Message>,
    ) -> Arc<Mutex<Vec<NewMessage>>> {
        self.conversation_reads(conv, existing);
        let inserted = Arc::new(Mutex::new(Vec::new()));
        let log = inserted.clone();
        self.messages.expect_insert().returning(move |_, n| {
            log.lock().unwrap().push(n.clone());
            Ok(stored(n))
        });
        self.questions_commit_into(&inserted);
        inserted
    }

    /// Questions are prepared whenever asked; those committed are logged in `log`.
    fn questions_commit_into(&mut self, log: &Arc<Mutex<Vec<NewMessage>>>) {
        let log = log.clone();
        self.messages
            .expect_prepare_insert()
            .returning(move |_, n| {
                let log = log.clone();
                Ok(PendingMessage::new(async move {
                    log.lock().unwrap().push(n.clone());
                    Ok(stored(n))
                }))
            });
    }

    /// Usage events are recorded into the returned log.
    fn record_usage(&mut self) -> Arc<Mutex<Vec<UsageEvent>>> {
        let log = Arc::new(Mutex::new(Vec::new()));
        let l = log.clone();
        self.usage.expect_record().returning(move |_, e| {
            l.lock().unwrap().push(e);
            Ok(Recorded::New)
        });
        log
    }

    /// The model streams `items` and the request is kept for inspection.
    fn model_streams(&mut self, items: Vec<ChatChunk>) -> Arc<Mutex<Option<ChatRequest>>> {
        let seen = Arc::new(Mutex::new(None));
        let s = seen.clone();
        self.chat.expect_stream().times(1).returning(move |_, req| {
            *s.lock().unwrap() = Some(req);
            Ok(chunks(items.clone()))
        });
        seen
    }
}

async fn all_events(a: Answer) -> Vec<AnswerEvent> {
    tokio::time::timeout(Duration::from_secs(5), a.events.collect::<Vec<_>>())
        .await
        .expect("the answer ended")
}

pub(super) fn happy_chunks() -> Vec<ChatChunk> {
    vec![
        ChatChunk::Delta("Within ".into()),
        ChatChunk::Delta("14 days [1].".into()),
        ChatChunk::Usage(TokenUsage {
            prompt_tokens: 120,
            completion_tokens: 8,
        }),
        ChatChunk::Finish(FinishReason::Stop),
    ]
}

fn ask(text: &str) -> UserMessage {
    UserMessage {
        content: text.into(),
        ..UserMessage::default()
    }
}

// ----- answering --------------------------------------------------------------------

#[tokio::test]
async fn a_user_over_their_quota_is_refused_with_the_reset_time_and_the_model_is_never_called() {
    let (t, u) = (TenantId::new(), UserId::new());
    let conv = conversation(t, u, None);
    let mut m = Mocks::new();
    m.catalog
        .expect_get()
        .returning(|_, p, n| Ok(catalog_entry(p, n, true)));
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
        .withf(move |_, scope, from, until| {
            *scope == UsageScope::User(u)
                && *from == noon() - chrono::Duration::hours(12)
                && *until == noon() + chrono::Duration::hours(12)
        })
        .returning(|_, _, _, _| Ok(1500));
    m.conversation_reads(&conv, vec![]);
    m.messages.expect_insert().never();
    // The question may be written while the quota is read, but is never committed.
    let committed = Arc::new(Mutex::new(Vec::new()));
    m.questions_commit_into(&committed);
    m.chat.expect_stream().never();
    m.chat.expect_complete().never();
    let err = m
        .service()
        .answer(&ctx_as(t, u, Role::User), conv.id, ask("hello"))
        .await
        .unwrap_err();
    assert!(committed.lock().unwrap().is_empty());
    let ContentError::QuotaExceeded {
        scope, resets_at, ..
    } = err
    else {
        panic!("expected a quota refusal, got {err:?}");
    };
    assert_eq!(scope, QuotaScope::User);
    assert_eq!(resets_at, noon() + chrono::Duration::hours(12));
    assert_eq!(
        ContentError::QuotaExceeded {
            scope,
            limit_tokens: 1,
            used_tokens: 1,
            resets_at
        }
        .code(),
        "quota_exceeded"
    );
}

/// Inserts that let other tasks run first, as a database round trip does.
struct SlowInserts(MockMessageRepo);

#[async_trait::async_trait]
impl MessageRepo for SlowInserts {
    async fn insert(&self, ctx: &TenantCtx, new: NewMessage) -> Result<Message> {
        for _ in 0..10 {
            tokio::task::yield_now().await;
        }
        self.0.insert(ctx, new).await
    }
    async fn prepare_insert(&self, ctx: &TenantCtx, new: NewMessage) -> Result<PendingMessage> {
        let pending = self.0.prepare_insert(ctx, new).await?;
        Ok(PendingMessage::new(async move {
            for _ in 0..10 {
                tokio::task::yield_now().await;
            }
            pending.commit().await
        }))
    }
    async fn insert_many(&self, ctx: &TenantCtx, new: Vec<NewMessage>) -> Result<Vec<Message>> {
        self.0.insert_many(ctx, new).await
    }
    async fn get(&self, ctx: &TenantCtx, id: MessageId) -> Result<Message> {
        self.0.get(ctx, id).await
    }
    async fn for_conversation(
        &self,
        ctx: &TenantCtx,
        conversation: ConversationId,
    ) -> Result<Vec<Message>> {
        self.0.for_conversation(ctx, conversation).await
    }
    async fn search(
        &self,
        ctx: &TenantCtx,
        owner: Option<UserId>,
        query: &str,
        limit: usize,
    ) -> Result<Vec<crate::MessageHit>> {
        self.0.search(ctx, owner, query, limit).await
    }
}

/// A conversation without agent whose user message cannot be stored; the roles of
/// the messages the service tried to store are logged.
fn question_cannot_be_stored(m: &mut Mocks, conv: &Conversation) -> Arc<Mutex<Vec<MessageRole>>> {
    m.permissive();
    m.conversation_reads(conv, vec![]);
    let tried = Arc::new(Mutex::new(Vec::new()));
    let log = tried.clone();
    m.messages.expect_prepare_insert().returning(move |_, n| {
        let log = log.clone();
        Ok(PendingMessage::new(async move {
            log.lock().unwrap().push(n.role);
            Err(ContentError::Unexpected(anyhow::anyhow!(
                "the database went away"
            )))
        }))
    });
    tried
}

#[tokio::test]
async fn a_question_that_cannot_be_stored_is_refused_and_leaves_no_answer_or_usage_behind() {
    let (t, u) = (TenantId::new(), UserId::new());
    let conv = conversation(t, u, None);
    let mut m = Mocks::new();
    let tried = question_cannot_be_stored(&mut m, &conv);
    let usage = m.record_usage();
    // The insert fails before the answering task first runs: the model is never asked.
    m.chat.expect_stream().never();
    let err = m
        .service()
        .answer(&ctx_as(t, u, Role::User), conv.id, ask("hello"))
        .await
        .unwrap_err();
    assert!(matches!(err, ContentError::Unexpected(_)), "{err:?}");
    // Let the answering task run to its end.
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert_eq!(*tried.lock().unwrap(), vec![MessageRole::User]);
    assert!(usage.lock().unwrap().is_empty());
}

#[tokio::test]
async fn a_model_opened_while_the_question_failed_to_store_is_metered_but_nothing_is_stored() {
    let (t, u) = (TenantId::new(), UserId::new());
    let conv = conversation(t, u, None);
    let mut m = Mocks::new();
    let tried = question_cannot_be_stored(&mut m, &conv);
    let usage = m.record_usage();
    m.model_streams(happy_chunks());
    let messages = std::mem::replace(&mut m.messages, MockMessageRepo::new());
    let err = m
        .service_with_messages(Arc::new(SlowInserts(messages)))
        .answer(&ctx_as(t, u, Role::User), conv.id, ask("hello"))
        .await
        .unwrap_err();
    assert!(matches!(err, ContentError::Unexpected(_)), "{err:?}");
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert_eq!(*tried.lock().unwrap(), vec![MessageRole::User]);
    let usage = usage.lock().unwrap();
    assert_eq!(usage.len(), 1, "{usage:?}");
    assert!(usage[0].estimated);
    assert!(usage[0].usage.prompt_tokens > 0);
    assert_eq!(usage[0].usage.completion_tokens, 0);
}

#[tokio::test]
async fn an_answer_streams_citations_text_usage_and_done_and_stores_one_cited_message() {
    let (t, u) = (TenantId::new(), UserId::new());
    let mut cfg = agent_config();
    let collection = KnowledgeCollectionId::new();
    cfg.knowledge_collections = vec![collection];
    let a = agent(t, cfg);
    let conv = conversation(t, u, Some(a.id));
    let mut m = Mocks::new();
    m.permissive();
    // Read with the conversation, so not again.
    m.agent_read_with(&conv, a);
    m.agents.expect_get().never();
    m.retriever
        .expect_retrieve()
        .withf(move |_, cols, q, k| {
            cols == [collection] && q == "How long do refunds take?" && *k == 5
        })
        .returning(|_, _, _, _| Ok(vec![passage()]));
    let inserted = m.conversation_with(&conv, vec![]);
    let usage = m.record_usage();
    m.model_streams(happy_chunks());

    let answer = m
        .service()
        .answer(
            &ctx_as(t, u, Role::User),
            conv.id,
            ask("How long do refunds take?"),
        )
        .await
        .unwrap();
    let user_message = answer.user_message.clone().unwrap();
    let assistant_id = answer.assistant_message_id;
    let events = all_events(answer).await;

    assert!(
        matches!(&events[0], AnswerEvent::Citations(c) if c.len() == 1 && c[0].index == 1 && c[0].filename == "policy.pdf")
    );
    assert_eq!(events[1], AnswerEvent::Delta("Within ".into()));
    assert_eq!(events[2], AnswerEvent::Delta("14 days [1].".into()));
    assert!(matches!(events[3], AnswerEvent::Usage(u) if u.total() == 128));
    let AnswerEvent::Done(done) = &events[4] else {
        panic!("expected done, got {:?}", events[4]);
    };
    assert_eq!(events.len(), 5);
    assert_eq!(done.id, assistant_id);
    assert_eq!(done.content, "Within 14 days [1].");
    assert_eq!(done.parent_id, Some(user_message.id));
    assert_eq!(done.finish_reason, Some(FinishReason::Stop));
    assert!(!done.unfinished && done.error.is_none());
    assert_eq!(done.citations[0].page, Some(3));

    let inserted = inserted.lock().unwrap();
    assert_eq!(inserted.len(), 2, "one user and one assistant message");
    assert_eq!(inserted[0].role, MessageRole::User);
    assert_eq!(inserted[0].author_id, Some(u));
    let usage = usage.lock().unwrap();
    assert_eq!(usage.len(), 1);
    assert_eq!(usage[0].idempotency_key, format!("answer:{assistant_id}"));
    assert_eq!((usage[0].usage.total(), usage[0].estimated), (128, false));
    assert_eq!(usage[0].user_id, Some(u));
}

#[tokio::test]
async fn the_prompt_carries_instructions_memories_numbered_sources_and_the_question() {
    let (t, u) = (TenantId::new(), UserId::new());
    let mut cfg = agent_config();
    cfg.knowledge_collections = vec![KnowledgeCollectionId::new()];
    cfg.output_format = Some("One sentence.".into());
    let a = agent(t, cfg);
    let conv = conversation(t, u, Some(a.id));
    let mut m = Mocks::new();
    m.catalog
        .expect_get()
        .returning(|_, p, n| Ok(catalog_entry(p, n, true)));
    m.quotas.expect_quota().returning(|_| Ok(Quota::default()));
    m.memories.expect_search().returning(move |_, owner, _, _| {
        Ok(vec![ScoredMemory {
            memory: crate::Memory {
                id: MemoryId::new(),
                owner_id: owner,
                key: "plan".into(),
                value: "Pro since 2024".into(),
                category: None,
                source: MemorySource::Manual,
                source_id: None,
                created_at: noon(),
                updated_at: noon(),
            },
            score: 1.0,
        }])
    });
    m.agent_read_with(&conv, a);
    m.retriever
        .expect_retrieve()
        .returning(|_, _, _, _| Ok(vec![passage()]));
    m.conversation_with(&conv, vec![]);
    m.record_usage();
    let request = m.model_streams(happy_chunks());

    let answer = m
        .service()
        .answer(&ctx_as(t, u, Role::User), conv.id, ask("Refund window?"))
        .await
        .unwrap();
    all_events(answer).await;
    let req = request.lock().unwrap().clone().unwrap();
    assert_eq!(req.model, "gpt-4o");
    assert_eq!(req.parameters.temperature(), Some(0.2));
    let system = &req.messages[0];
    assert_eq!(system.role, ChatRole::System);
    for needle in [
        "You answer refund questions for Acme.",
        "One sentence.",
        "- plan: Pro since 2024",
        "[1] policy.pdf, page 3\nRefunds are issued within 14 days.",
    ] {
        assert!(system.content.contains(needle), "missing {needle:?}");
    }
    assert_eq!(req.messages.last().unwrap().content, "Refund window?");
}

#[tokio::test]
async fn a_provider_error_mid_stream_is_stored_as_an_error_message_and_reported() {
    let (t, u) = (TenantId::new(), UserId::new());
    let conv = conversation(t, u, None);
    let mut m = Mocks::new();
    m.permissive();
    let inserted = m.conversation_with(&conv, vec![]);
    m.record_usage();
    m.model_streams(vec![
        ChatChunk::Delta("Part of".into()),
        ChatChunk::Error(ProviderError::new(
            ProviderErrorKind::Timeout,
            "the model stopped responding",
        )),
        ChatChunk::Delta("never relayed".into()),
    ]);
    let answer = m
        .service()
        .answer(&ctx_as(t, u, Role::User), conv.id, ask("hi"))
        .await
        .unwrap();
    let events = all_events(answer).await;
    assert_eq!(events[0], AnswerEvent::Delta("Part of".into()));
    let AnswerEvent::Error {
        message,
        code,
        detail,
    } = &events[1]
    else {
        panic!("expected an error event, got {:?}", events[1]);
    };
    assert_eq!(events.len(), 2);
    assert_eq!(
        (*code, detail.as_str()),
        ("timeout", "the model stopped responding")
    );
    let message = message.as_ref().unwrap();
    assert_eq!(message.content, "Part of");
    assert_eq!(
        message.error.as_deref(),
        Some("the model stopped responding")
    );
    assert_eq!(message.finish_reason, Some(FinishReason::Error));
    let inserted = inserted.lock().unwrap();
    assert_eq!(inserted.len(), 2);
    assert!(inserted[1].error.is_some());
}

#[tokio::test]
async fn a_provider_that_refuses_the_request_yields_a_stored_error_and_no_usage() {
    let (t, u) = (TenantId::new(), UserId::new());
    let conv = conversation(t, u, None);
    let mut m = Mocks::new();
    m.permissive();
    let inserted = m.conversation_with(&conv, vec![]);
    m.usage.expect_record().never();
    m.chat.expect_stream().returning(|_, _| {
        Err(ProviderError::new(ProviderErrorKind::Unauthorized, "the API key was rejected").into())
    });
    let answer = m
        .service()
        .answer(&ctx_as(t, u, Role::User), conv.id, ask("hi"))
        .await
        .expect("provider failures are not request failures");
    let events = all_events(answer).await;
    assert!(matches!(
        &events[..],
        [AnswerEvent::Error { code: "unauthorized", message: Some(m), .. }] if m.error.is_some() && m.usage.is_none()
    ));
    assert_eq!(inserted.lock().unwrap().len(), 2);
}

#[tokio::test]
async fn a_client_that_disconnects_mid_answer_leaves_an_unfinished_message_with_what_arrived() {
    let (t, u) = (TenantId::new(), UserId::new());
    let conv = conversation(t, u, None);
    let mut m = Mocks::new();
    m.permissive();
    m.conversation_reads(&conv, vec![]);
    let (saved_tx, mut saved_rx) = tokio::sync::mpsc::unbounded_channel();
    let question_tx = saved_tx.clone();
    m.messages.expect_prepare_insert().returning(move |_, n| {
        let tx = question_tx.clone();
        Ok(PendingMessage::new(async move {
            tx.send(n.clone()).unwrap();
            Ok(stored(n))
        }))
    });
    m.messages.expect_insert().returning(move |_, n| {
        saved_tx.send(n.clone()).unwrap();
        Ok(stored(n))
    });
    let (usage_tx, mut usage_rx) = tokio::sync::mpsc::unbounded_channel();
    m.usage.expect_record().returning(move |_, e| {
        usage_tx.send(e).unwrap();
        Ok(Recorded::New)
    });
    // One delta, then the model keeps the connection open without writing more.
    m.chat.expect_stream().returning(|_, _| {
        let s: ChatStream = Box::pin(
            futures::stream::iter(vec![ChatChunk::Delta("Once upon".into())])
                .chain(futures::stream::pending()),
        );
        Ok(s)
    });
    let mut answer = m
        .service()
        .answer(&ctx_as(t, u, Role::User), conv.id, ask("Tell me a story"))
        .await
        .unwrap();
    let first = answer.events.next().await;
    assert_eq!(first, Some(AnswerEvent::Delta("Once upon".into())));
    drop(answer);

    let user = saved_rx.recv().await.unwrap();
    assert_eq!(user.role, MessageRole::User);
    let assistant = tokio::time::timeout(Duration::from_secs(5), saved_rx.recv())
        .await
        .expect("the answer was stored after the client left")
        .unwrap();
    assert_eq!(assistant.role, MessageRole::Assistant);
    assert_eq!(assistant.content, "Once upon");
    assert!(assistant.unfinished);
    assert!(assistant.error.is_none());
    assert_eq!(assistant.parent_id, Some(user.id));
    // Tokens were spent even though nobody read them, so they count.
    let usage = tokio::time::timeout(Duration::from_secs(5), usage_rx.recv())
        .await
        .expect("usage was recorded after the client left")
        .unwrap();
    assert_eq!(usage.idempotency_key, format!("answer:{}", assistant.id));
    assert!(usage.estimated && usage.usage.completion_tokens > 0);
}

#[tokio::test]
async fn a_stream_that_ends_without_a_finish_reason_is_stored_as_unfinished() {
    let (t, u) = (TenantId::new(), UserId::new());
    let conv = conversation(t, u, None);
    let mut m = Mocks::new();
    m.permissive();
    m.conversation_with(&conv, vec![]);
    m.record_usage();
    m.model_streams(vec![ChatChunk::Delta("cut sh".into())]);
    let answer = m
        .service()
        .answer(&ctx_as(t, u, Role::User), conv.id, ask("hi"))
        .await
        .unwrap();
    let events = all_events(answer).await;
    let Some(AnswerEvent::Done(done)) = events.last() else {
        panic!("expected done");
    };
    assert!(done.unfinished);
    assert_eq!(done.finish_reason, None);
}

#[tokio::test]
async fn a_model_that_cannot_stream_is_asked_for_a_whole_completion() {
    let (t, u) = (TenantId::new(), UserId::new());
    let conv = conversation(t, u, None);
    let mut m = Mocks::new();
    m.catalog
        .expect_get()
        .returning(|_, p, n| Ok(catalog_entry(p, n, false)));
    m.quotas.expect_quota().returning(|_| Ok(Quota::default()));
    m.memories
        .expect_search()
        .returning(|_, _, _, _| Ok(vec![]));
    m.conversation_with(&conv, vec![]);
    m.record_usage();
    m.chat.expect_stream().never();
    m.chat.expect_complete().returning(|_, _| {
        Ok(Completion {
            content: "All at once.".into(),
            finish_reason: FinishReason::Stop,
            usage: None,
        })
    });
    let answer = m
        .service()
        .answer(&ctx_as(t, u, Role::User), conv.id, ask("hi"))
        .await
        .unwrap();
    let events = all_events(answer).await;
    assert_eq!(events[0], AnswerEvent::Delta("All at once.".into()));
    assert!(matches!(events.last(), Some(AnswerEvent::Done(d)) if d.content == "All at once."));
}

#[tokio::test]
async fn regenerating_an_answer_stores_a_sibling_under_the_same_question() {
    let (t, u) = (TenantId::new(), UserId::new());
    let conv = conversation(t, u, None);
    let q1 = message(conv.id, None, MessageRole::User, "first question", 0);
    let a1 = message(
        conv.id,
        Some(q1.id),
        MessageRole::Assistant,
        "first answer",
        1,
    );
    let mut m = Mocks::new();
    m.permissive();
    let inserted = m.conversation_with(&conv, vec![q1.clone(), a1.clone()]);
    m.record_usage();
    let request = m.model_streams(happy_chunks());
    let answer = m
        .service()
        .regenerate(&ctx_as(t, u, Role::User), conv.id, a1.id)
        .await
        .unwrap();
    assert!(answer.user_message.is_none());
    all_events(answer).await;
    let inserted = inserted.lock().unwrap();
    assert_eq!(inserted.len(), 1, "no new question");
    assert_eq!(inserted[0].role, MessageRole::Assistant);
    assert_eq!(inserted[0].parent_id, Some(q1.id));
    assert_ne!(inserted[0].id, a1.id);
    let req = request.lock().unwrap().clone().unwrap();
    let contents: Vec<&str> = req.messages.iter().map(|m| m.content.as_str()).collect();
    assert_eq!(
        contents,
        ["first question"],
        "the old answer is not in the prompt"
    );
}

#[tokio::test]
async fn regenerating_a_question_is_refused() {
    let (t, u) = (TenantId::new(), UserId::new());
    let conv = conversation(t, u, None);
    let q1 = message(conv.id, None, MessageRole::User, "q", 0);
    let mut m = Mocks::new();
    m.conversation_with(&conv, vec![q1.clone()]);
    m.chat.expect_stream().never();
    let err = m
        .service()
        .regenerate(&ctx_as(t, u, Role::User), conv.id, q1.id)
        .await
        .unwrap_err();
    assert!(matches!(err, ContentError::Invalid(_)));
}

#[tokio::test]
async fn editing_a_question_stores_a_sibling_and_answers_from_the_new_branch() {
    let (t, u) = (TenantId::new(), UserId::new());
    let conv = conversation(t, u, None);
    let q1 = message(conv.id, None, MessageRole::User, "q1", 0);
    let a1 = message(conv.id, Some(q1.id), MessageRole::Assistant, "a1", 1);
    let q2 = message(conv.id, Some(a1.id), MessageRole::User, "q2", 2);
    let a2 = message(conv.id, Some(q2.id), MessageRole::Assistant, "a2", 3);
    let mut m = Mocks::new();
    m.permissive();
    let inserted = m.conversation_with(&conv, vec![q1, a1.clone(), q2.clone(), a2]);
    m.record_usage();
    let request = m.model_streams(happy_chunks());
    let answer = m
        .service()
        .edit_and_answer(
            &ctx_as(t, u, Role::User),
            conv.id,
            q2.id,
            "q2, better".into(),
        )
        .await
        .unwrap();
    let new_question = answer.user_message.clone().unwrap();
    all_events(answer).await;
    assert_eq!(
        new_question.parent_id,
        Some(a1.id),
        "a sibling of the original"
    );
    assert_ne!(new_question.id, q2.id);
    let inserted = inserted.lock().unwrap();
    assert_eq!(inserted[1].parent_id, Some(new_question.id));
    let req = request.lock().unwrap().clone().unwrap();
    let contents: Vec<&str> = req.messages.iter().map(|m| m.content.as_str()).collect();
    assert_eq!(contents, ["q1", "a1", "q2, better"]);
}

#[tokio::test]
async fn a_message_without_a_parent_continues_the_current_branch() {
    let (t, u) = (TenantId::new(), UserId::new());
    let conv = conversation(t, u, None);
    let q1 = message(conv.id, None, MessageRole::User, "q1", 0);
    let a1 = message(conv.id, Some(q1.id), MessageRole::Assistant, "a1", 1);
    let a1b = message(conv.id, Some(q1.id), MessageRole::Assistant, "a1b", 2);
    let mut m = Mocks::new();
    m.permissive();
    m.conversation_with(&conv, vec![q1, a1, a1b.clone()]);
    m.record_usage();
    let request = m.model_streams(happy_chunks());
    let answer = m
        .service()
        .answer(&ctx_as(t, u, Role::User), conv.id, ask("q2"))
        .await
        .unwrap();
    assert_eq!(
        answer.user_message.as_ref().unwrap().parent_id,
        Some(a1b.id)
    );
    all_events(answer).await;
    let req = request.lock().unwrap().clone().unwrap();
    let contents: Vec<&str> = req.messages.iter().map(|m| m.content.as_str()).collect();
    assert_eq!(contents, ["q1", "a1b", "q2"]);
}

#[tokio::test]
async fn posting_in_an_archived_conversation_is_refused() {
    let (t, u) = (TenantId::new(), UserId::new());
    let mut conv = conversation(t, u, None);
    conv.archived = true;
    let mut m = Mocks::new();
    m.conversation_reads(&conv, vec![]);
    m.messages.expect_insert().never();
    let err = m
        .service()
        .answer(&ctx_as(t, u, Role::User), conv.id, ask("hi"))
        .await
        .unwrap_err();
    assert!(matches!(err, ContentError::Conflict(_)));
}

/// A question and its answer, `turns` times over, on one branch.
fn turns(conv: ConversationId, turns: usize) -> Vec<Message> {
    let mut messages: Vec<Message> = Vec::new();
    for n in 0..turns {
        let seconds = i64::try_from(n).unwrap() * 2;
        let q = message(
            conv,
            messages.last().map(|m| m.id),
            MessageRole::User,
            "q",
            seconds,
        );
        let a = message(conv, Some(q.id), MessageRole::Assistant, "a", seconds + 1);
        messages.extend([q, a]);
    }
    messages
}

#[tokio::test]
async fn a_conversation_without_room_for_more_messages_takes_none_and_says_to_start_another() {
    let (t, u) = (TenantId::new(), UserId::new());
    let conv = conversation(t, u, None);
    let ctx = ctx_as(t, u, Role::User);
    let existing = turns(conv.id, 2);
    let (question, answer) = (existing[2].id, existing[3].id);
    let full = |max: usize| {
        let mut m = Mocks::new();
        m.config.max_conversation_messages = max;
        m.conversation_reads(&conv, existing.clone());
        m.messages.expect_insert().never();
        m.chat.expect_stream().never();
        m.chat.expect_complete().never();
        m.service()
    };
    // Four messages: a question and its answer need two more, a regenerated answer one.
    for err in [
        full(5).answer(&ctx, conv.id, ask("hi")).await.unwrap_err(),
        full(5)
            .edit_and_answer(&ctx, conv.id, question, "again".into())
            .await
            .unwrap_err(),
        full(4).regenerate(&ctx, conv.id, answer).await.unwrap_err(),
    ] {
        let ContentError::Conflict(why) = err else {
            panic!("expected a conflict, got {err:?}");
        };
        assert!(why.contains("start a new conversation"), "{why}");
    }
}

#[tokio::test]
async fn a_conversation_with_room_for_the_answer_takes_it() {
    let (t, u) = (TenantId::new(), UserId::new());
    let conv = conversation(t, u, None);
    let existing = turns(conv.id, 2);
    let mut m = Mocks::new();
    m.config.max_conversation_messages = 5;
    m.permissive();
    let inserted = m.conversation_with(&conv, existing.clone());
    m.record_usage();
    m.model_streams(happy_chunks());
    let answer = m
        .service()
        .regenerate(&ctx_as(t, u, Role::User), conv.id, existing[3].id)
        .await
        .unwrap();
    all_events(answer).await;
    assert_eq!(inserted.lock().unwrap().len(), 1);
}

#[tokio::test]
async fn another_users_file_cannot_be_attached() {
    let (t, u) = (TenantId::new(), UserId::new());
    let conv = conversation(t, u, None);
    let mut m = Mocks::new();
    m.conversation_reads(&conv, vec![]);
    m.files.expect_get().returning(|_, id| {
        Ok(FileAttachment {
            id,
            owner_id: UserId::new(),
            conversation_id: None,
            filename: "secret.pdf".into(),
            mime_type: "application/pdf".into(),
            size_bytes: 10,
            checksum: "x".into(),
            storage_key: "k".into(),
            knowledge_document_id: None,
            created_at: noon(),
        })
    });
    m.messages.expect_insert().never();
    let err = m
        .service()
        .answer(
            &ctx_as(t, u, Role::User),
            conv.id,
            UserMessage {
                content: "see attached".into(),
                parent: None,
                files: vec![FileId::new()],
            },
        )
        .await
        .unwrap_err();
    assert!(matches!(err, ContentError::NotFound("file")));
}

#[tokio::test]
async fn an_attached_files_text_is_in_the_prompt_the_model_gets() {
    let (t, u) = (TenantId::new(), UserId::new());
    let conv = conversation(t, u, None);
    let mut m = Mocks::new();
    m.permissive();
    let conv_id = conv.id;
    m.files.expect_get().returning(move |_, id| {
        Ok(FileAttachment {
            id,
            owner_id: u,
            conversation_id: Some(conv_id),
            filename: "lease.md".into(),
            mime_type: "text/markdown".into(),
            size_bytes: 22,
            checksum: "x".into(),
            storage_key: "k".into(),
            knowledge_document_id: None,
            created_at: noon(),
        })
    });
    m.attachments
        .expect_text()
        .withf(|_, f, max| {
            f.filename == "lease.md" && *max == ContentConfig::default().attachment_chars
        })
        .times(1)
        .returning(|_, _, _| Ok(Some("The lease ends in May.".into())));
    m.conversation_with(&conv, vec![]);
    m.record_usage();
    let request = m.model_streams(happy_chunks());

    let answer = m
        .service()
        .answer(
            &ctx_as(t, u, Role::User),
            conv.id,
            UserMessage {
                content: "When does the lease end?".into(),
                parent: None,
                files: vec![FileId::new()],
            },
        )
        .await
        .unwrap();
    all_events(answer).await;
    let req = request.lock().unwrap().clone().unwrap();
    let system = &req.messages[0];
    assert_eq!(system.role, ChatRole::System);
    assert!(
        system
            .content
            .contains("<file name=\"lease.md\">\nThe lease ends in May.\n</file>"),
        "{}",
        system.content
    );
    assert_eq!(
        req.messages.last().unwrap().content,
        "When does the lease end?"
    );
}

// ----- conversations ----------------------------------------------------------------

#[tokio::test]
async fn forking_copies_the_path_into_a_new_conversation_of_the_caller() {
    let (t, owner, supporter) = (TenantId::new(), UserId::new(), UserId::new());
    let conv = conversation(t, owner, None);
    let q1 = message(conv.id, None, MessageRole::User, "q1", 0);
    let a1 = message(conv.id, Some(q1.id), MessageRole::Assistant, "a1", 1);
    let a1b = message(conv.id, Some(q1.id), MessageRole::Assistant, "a1b", 2);
    let mut m = Mocks::new();
    let messages = vec![q1.clone(), a1.clone(), a1b];
    let c = conv.clone();
    m.conversations
        .expect_with_messages()
        .withf(move |_, id| *id == c.id)
        .returning({
            let c = conv.clone();
            move |_, _| Ok((c.clone(), messages.clone()))
        });
    let created = Arc::new(Mutex::new(None));
    let cr = created.clone();
    m.conversations.expect_insert().returning(move |_, n| {
        let conv = Conversation {
            id: n.id,
            tenant_id: t,
            owner_id: n.owner_id,
            title: n.title.clone(),
            provider: n.provider,
            model: n.model.clone(),
            agent_id: n.agent_id,
            parameters: n.parameters,
            archived: false,
            last_message_at: None,
            created_at: noon(),
            updated_at: noon(),
        };
        *cr.lock().unwrap() = Some(conv.clone());
        Ok(conv)
    });
    let copied = Arc::new(Mutex::new(Vec::new()));
    let cp = copied.clone();
    m.messages.expect_insert_many().returning(move |_, ns| {
        *cp.lock().unwrap() = ns.clone();
        Ok(ns.into_iter().map(stored).collect())
    });
    let cr = created.clone();
    m.conversations
        .expect_get()
        .returning(move |_, _| Ok(cr.lock().unwrap().clone().unwrap()));

    // A supporter may read the conversation, so may fork it; the fork is theirs.
    let fork = m
        .service()
        .fork_conversation(&ctx_as(t, supporter, Role::Supporter), conv.id, a1.id)
        .await
        .unwrap();
    assert_ne!(fork.id, conv.id);
    assert_eq!(fork.owner_id, supporter);
    let copied = copied.lock().unwrap();
    let contents: Vec<&str> = copied.iter().map(|m| m.content.as_str()).collect();
    assert_eq!(contents, ["q1", "a1"]);
    assert!(copied.iter().all(|m| m.conversation_id == fork.id));
    assert_eq!(copied[1].parent_id, Some(copied[0].id));
}

#[tokio::test]
async fn a_fork_whose_messages_cannot_be_stored_is_removed_again() {
    let (t, u) = (TenantId::new(), UserId::new());
    let conv = conversation(t, u, None);
    let q1 = message(conv.id, None, MessageRole::User, "q1", 0);
    let mut m = Mocks::new();
    m.conversation_reads(&conv, vec![q1.clone()]);
    let c = conv.clone();
    m.conversations.expect_insert().returning(move |_, n| {
        Ok(Conversation {
            id: n.id,
            ..c.clone()
        })
    });
    m.messages
        .expect_insert_many()
        .returning(|_, _| Err(anyhow::anyhow!("disk full").into()));
    m.conversations
        .expect_delete()
        .times(1)
        .returning(|_, _| Ok(()));
    let err = m
        .service()
        .fork_conversation(&ctx_as(t, u, Role::User), conv.id, q1.id)
        .await
        .unwrap_err();
    assert!(matches!(err, ContentError::Unexpected(_)));
}

#[tokio::test]
async fn another_users_conversation_is_not_found_for_a_plain_user() {
    let (t, owner, other) = (TenantId::new(), UserId::new(), UserId::new());
    let conv = conversation(t, owner, None);
    let mut m = Mocks::new();
    let c = conv.clone();
    m.conversations
        .expect_get()
        .returning(move |_, _| Ok(c.clone()));
    // The conversation's messages come with it, and are not shown to the caller.
    let with_messages = (
        conv.clone(),
        vec![message(conv.id, None, MessageRole::User, "private", 0)],
    );
    m.conversations
        .expect_with_messages()
        .returning(move |_, _| Ok(with_messages.clone()));
    let svc = m.service();
    let ctx = ctx_as(t, other, Role::User);
    assert!(matches!(
        svc.get_conversation(&ctx, conv.id).await,
        Err(ContentError::NotFound("conversation"))
    ));
    assert!(matches!(
        svc.delete_conversation(&ctx, conv.id).await,
        Err(ContentError::NotFound(_))
    ));
    assert!(matches!(
        svc.message_tree(&ctx, conv.id, None).await,
        Err(ContentError::NotFound(_))
    ));
}

#[tokio::test]
async fn a_supporter_reads_but_cannot_post_in_someone_elses_conversation() {
    let (t, owner, supporter) = (TenantId::new(), UserId::new(), UserId::new());
    let conv = conversation(t, owner, None);
    let mut m = Mocks::new();
    m.conversation_reads(&conv, vec![]);
    m.messages.expect_insert().never();
    let svc = m.service();
    let ctx = ctx_as(t, supporter, Role::Supporter);
    assert_eq!(
        svc.get_conversation(&ctx, conv.id).await.unwrap().id,
        conv.id
    );
    assert!(matches!(
        svc.answer(&ctx, conv.id, ask("hi")).await,
        Err(ContentError::Forbidden)
    ));
}

#[tokio::test]
async fn listing_everyones_conversations_needs_chat_support() {
    let t = TenantId::new();
    let mut m = Mocks::new();
    m.conversations
        .expect_list()
        .withf(|_, f, _| f.owner.is_none())
        .times(1)
        .returning(|_, _, _| {
            Ok(Page {
                items: vec![],
                next_cursor: None,
            })
        });
    let svc = m.service();
    let all = ConversationQuery {
        whose: Whose::All,
        ..ConversationQuery::default()
    };
    assert!(matches!(
        svc.list_conversations(
            &ctx_as(t, UserId::new(), Role::User),
            all.clone(),
            PageRequest::default()
        )
        .await,
        Err(ContentError::Forbidden)
    ));
    svc.list_conversations(
        &ctx_as(t, UserId::new(), Role::Support),
        all,
        PageRequest::default(),
    )
    .await
    .unwrap();
}

#[tokio::test]
async fn a_conversation_needs_a_model_the_tenant_may_use() {
    let (t, u) = (TenantId::new(), UserId::new());
    let mut m = Mocks::new();
    m.catalog
        .expect_get()
        .returning(|_, _, name| Err(ContentError::ModelUnavailable(name.to_owned())));
    m.conversations.expect_insert().never();
    let svc = m.service();
    let ctx = ctx_as(t, u, Role::User);
    let err = svc
        .create_conversation(
            &ctx,
            StartConversation {
                provider: Some(LlmProvider::Anthropic),
                model: Some("claude-x".into()),
                ..StartConversation::default()
            },
        )
        .await
        .unwrap_err();
    assert!(matches!(err, ContentError::ModelUnavailable(_)));
    let err = svc
        .create_conversation(&ctx, StartConversation::default())
        .await
        .unwrap_err();
    assert!(matches!(err, ContentError::Invalid(_)));
}

// ----- agents and tools -------------------------------------------------------------

#[tokio::test]
async fn a_plain_user_cannot_create_agents() {
    let mut m = Mocks::new();
    m.agents.expect_insert().never();
    let err = m
        .service()
        .create_agent(
            &ctx_as(TenantId::new(), UserId::new(), Role::User),
            agent_config(),
        )
        .await
        .unwrap_err();
    assert!(matches!(err, ContentError::Forbidden));
}

#[tokio::test]
async fn an_agent_whose_tool_does_not_exist_is_refused() {
    let mut m = Mocks::new();
    m.catalog
        .expect_get()
        .returning(|_, p, n| Ok(catalog_entry(p, n, true)));
    m.tools
        .expect_get()
        .returning(|_, _| Err(ContentError::NotFound("tool")));
    m.agents.expect_insert().never();
    let mut cfg = agent_config();
    cfg.tools = vec![ToolId::new()];
    let err = m
        .service()
        .create_agent(&TenantCtx::system(TenantId::new()), cfg)
        .await
        .unwrap_err();
    assert!(matches!(err, ContentError::NotFound("tool")));
}

#[tokio::test]
async fn max_tokens_beyond_the_models_context_window_is_refused() {
    let mut m = Mocks::new();
    m.catalog
        .expect_get()
        .returning(|_, p, n| Ok(catalog_entry(p, n, true)));
    m.agents.expect_insert().never();
    let mut cfg = agent_config();
    cfg.parameters = ModelParameters::new(None, None, Some(200_000)).unwrap();
    let err = m
        .service()
        .create_agent(&TenantCtx::system(TenantId::new()), cfg)
        .await
        .unwrap_err();
    assert!(matches!(err, ContentError::Invalid(v) if v.field == "max_tokens"));
}

#[tokio::test]
async fn changing_an_agent_bumps_its_version_but_a_change_to_nothing_does_not() {
    let t = TenantId::new();
    let current = agent(t, agent_config());
    let mut m = Mocks::new();
    m.catalog
        .expect_get()
        .returning(|_, p, n| Ok(catalog_entry(p, n, true)));
    let c = current.clone();
    m.agents.expect_get().returning(move |_, _| Ok(c.clone()));
    m.agents
        .expect_update()
        .withf(|_, _, expected, config, _| *expected == 1 && config.instructions == "Be terse.")
        .times(1)
        .returning(|_, id, v, config, _| {
            Ok(Agent {
                id,
                tenant_id: TenantId::new(),
                config,
                version: v + 1,
                created_by: None,
                created_at: noon(),
                updated_at: noon(),
            })
        });
    let svc = m.service();
    let ctx = TenantCtx::system(t);
    let same = AgentPatch {
        name: Some("  Support ".into()),
        ..AgentPatch::default()
    };
    assert_eq!(
        svc.update_agent(&ctx, current.id, same, None)
            .await
            .unwrap()
            .version,
        1
    );
    let change = AgentPatch {
        instructions: Some("Be terse.".into()),
        ..AgentPatch::default()
    };
    assert_eq!(
        svc.update_agent(&ctx, current.id, change, Some(1))
            .await
            .unwrap()
            .version,
        2
    );
}

#[tokio::test]
async fn a_change_based_on_a_stale_version_is_a_conflict() {
    let t = TenantId::new();
    let mut current = agent(t, agent_config());
    current.version = 3;
    let mut m = Mocks::new();
    let c = current.clone();
    m.agents.expect_get().returning(move |_, _| Ok(c.clone()));
    m.agents.expect_update().never();
    let err = m
        .service()
        .update_agent(
            &TenantCtx::system(t),
            current.id,
            AgentPatch {
                published: Some(false),
                ..AgentPatch::default()
            },
            Some(2),
        )
        .await
        .unwrap_err();
    assert!(matches!(err, ContentError::Conflict(_)));
}

#[tokio::test]
async fn restoring_an_old_version_saves_it_as_a_new_version() {
    let t = TenantId::new();
    let mut current = agent(t, agent_config());
    current.version = 2;
    current.config.instructions = "Newer.".into();
    let old = AgentVersion {
        agent_id: current.id,
        version: 1,
        config: agent_config(),
        saved_by: None,
        saved_at: noon(),
    };
    let mut m = Mocks::new();
    m.catalog
        .expect_get()
        .returning(|_, p, n| Ok(catalog_entry(p, n, true)));
    let c = current.clone();
    m.agents.expect_get().returning(move |_, _| Ok(c.clone()));
    m.agents
        .expect_versions()
        .returning(move |_, _| Ok(vec![old.clone()]));
    m.agents
        .expect_update()
        .withf(|_, _, expected, config, _| *expected == 2 && *config == agent_config())
        .times(1)
        .returning(|_, id, v, config, _| {
            Ok(Agent {
                id,
                tenant_id: TenantId::new(),
                config,
                version: v + 1,
                created_by: None,
                created_at: noon(),
                updated_at: noon(),
            })
        });
    let restored = m
        .service()
        .restore_agent_version(&TenantCtx::system(t), current.id, 1)
        .await
        .unwrap();
    assert_eq!(restored.version, 3);
}

#[tokio::test]
async fn an_unpublished_agent_is_not_found_for_a_plain_user_and_lists_hide_it() {
    let t = TenantId::new();
    let mut cfg = agent_config();
    cfg.published = false;
    let a = agent(t, cfg);
    let mut m = Mocks::new();
    let c = a.clone();
    m.agents.expect_get().returning(move |_, _| Ok(c.clone()));
    m.agents
        .expect_list()
        .withf(|_, f, _| f.published == Some(true) && f.usable_by_role == Some(Role::User))
        .returning(|_, _, _| {
            Ok(Page {
                items: vec![],
                next_cursor: None,
            })
        });
    let svc = m.service();
    let ctx = ctx_as(t, UserId::new(), Role::User);
    assert!(matches!(
        svc.get_agent(&ctx, a.id).await,
        Err(ContentError::NotFound("agent"))
    ));
    svc.list_agents(&ctx, PageRequest::default()).await.unwrap();
    let manager = ctx_as(t, UserId::new(), Role::ContentManager);
    assert_eq!(svc.get_agent(&manager, a.id).await.unwrap().id, a.id);
}

#[tokio::test]
async fn a_tool_still_used_by_an_agent_cannot_be_deleted() {
    let t = TenantId::new();
    let tool_id = ToolId::new();
    let mut m = Mocks::new();
    m.tools.expect_get().returning(move |_, id| {
        Ok(ToolConfig {
            id,
            tenant_id: t,
            kind: ToolKind::Rag,
            name: "kb".into(),
            description: None,
            config: serde_json::json!({}),
            input_schema: InputSchema::default(),
            allowed_roles: vec![],
            enabled: true,
            created_at: noon(),
            updated_at: noon(),
        })
    });
    let user = agent(t, agent_config());
    m.agents
        .expect_list()
        .withf(move |_, f, _| f.uses_tool == Some(tool_id))
        .returning(move |_, _, _| {
            Ok(Page {
                items: vec![user.clone()],
                next_cursor: None,
            })
        });
    m.tools.expect_delete().never();
    let err = m
        .service()
        .delete_tool(&TenantCtx::system(t), tool_id)
        .await
        .unwrap_err();
    assert!(matches!(err, ContentError::Conflict(m) if m.contains("Support")));
}

#[tokio::test]
async fn an_http_tool_without_a_url_is_refused() {
    let mut m = Mocks::new();
    m.tools.expect_insert().never();
    let err = m
        .service()
        .create_tool(
            &TenantCtx::system(TenantId::new()),
            CreateTool {
                kind: ToolKind::Http,
                name: "Weather".into(),
                description: None,
                config: serde_json::json!({"method": "GET"}),
                input_schema: InputSchema::default(),
                allowed_roles: vec![],
                enabled: true,
            },
        )
        .await
        .unwrap_err();
    assert!(matches!(err, ContentError::Invalid(_)));
}

// ----- memories ---------------------------------------------------------------------

fn memory_of(owner: UserId) -> crate::Memory {
    crate::Memory {
        id: MemoryId::new(),
        owner_id: owner,
        key: "diet".into(),
        value: "vegetarian".into(),
        category: None,
        source: MemorySource::Conversation,
        source_id: None,
        created_at: noon(),
        updated_at: noon(),
    }
}

#[tokio::test]
async fn another_users_memory_is_not_found_and_cannot_be_deleted() {
    let (t, owner) = (TenantId::new(), UserId::new());
    let mem = memory_of(owner);
    let mut m = Mocks::new();
    let c = mem.clone();
    m.memories.expect_get().returning(move |_, _| Ok(c.clone()));
    m.memories.expect_delete().never();
    let svc = m.service();
    let other = ctx_as(t, UserId::new(), Role::Support);
    assert!(matches!(
        svc.get_memory(&other, mem.id).await,
        Err(ContentError::NotFound("memory"))
    ));
    assert!(matches!(
        svc.delete_memory(&other, mem.id).await,
        Err(ContentError::NotFound("memory"))
    ));
}

#[tokio::test]
async fn an_admin_may_delete_a_users_memory() {
    let (t, owner) = (TenantId::new(), UserId::new());
    let mem = memory_of(owner);
    let mut m = Mocks::new();
    let c = mem.clone();
    m.memories.expect_get().returning(move |_, _| Ok(c.clone()));
    m.memories.expect_delete().times(1).returning(|_, _| Ok(()));
    m.service()
        .delete_memory(&ctx_as(t, UserId::new(), Role::TenantAdmin), mem.id)
        .await
        .unwrap();
}

#[tokio::test]
async fn a_memory_is_saved_for_the_caller_with_its_text_trimmed() {
    let (t, u) = (TenantId::new(), UserId::new());
    let mut m = Mocks::new();
    m.memories
        .expect_insert()
        .withf(move |_, n| n.owner_id == u && n.key == "diet" && n.value == "vegetarian")
        .returning(|_, n| {
            Ok(crate::Memory {
                id: n.id,
                owner_id: n.owner_id,
                key: n.key,
                value: n.value,
                category: n.category,
                source: n.source,
                source_id: n.source_id,
                created_at: noon(),
                updated_at: noon(),
            })
        });
    let saved = m
        .service()
        .create_memory(
            &ctx_as(t, u, Role::User),
            Remember {
                key: " diet ".into(),
                value: "vegetarian\n".into(),
                category: Some(" ".into()),
                source: MemorySource::Manual,
                source_id: None,
            },
        )
        .await
        .unwrap();
    assert_eq!(saved.category, None);
}

#[tokio::test]
async fn quota_status_shows_each_budget_with_its_reset() {
    let (t, u) = (TenantId::new(), UserId::new());
    let mut m = Mocks::new();
    m.quotas.expect_quota().returning(|_| {
        Ok(Quota {
            tenant: Some(TokenBudget {
                limit_tokens: 10_000,
                period: BudgetPeriod::Month,
            }),
            per_user: Some(TokenBudget {
                limit_tokens: 500,
                period: BudgetPeriod::Day,
            }),
        })
    });
    m.usage.expect_total_tokens().returning(|_, scope, _, _| {
        Ok(if scope == UsageScope::Tenant {
            2500
        } else {
            100
        })
    });
    let status = m
        .service()
        .quota_status(&ctx_as(t, u, Role::User))
        .await
        .unwrap();
    assert_eq!(status.len(), 2);
    assert_eq!(
        (status[0].scope, status[0].remaining_tokens),
        (QuotaScope::Tenant, 7500)
    );
    assert_eq!(
        (status[1].scope, status[1].remaining_tokens),
        (QuotaScope::User, 400)
    );
}
