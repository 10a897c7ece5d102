//! Conformance cases for the content ports: agents and their versions, tools,
//! conversations, the message tree, memories and their search, files, and usage
//! metering. Every repository is checked for tenant isolation.

use crate::Ports;
use crate::fixtures::{every_page, tenant, user};
use std::sync::Arc;
use trellis_content::{
    Agent, AgentConfig, AgentFilter, AgentId, AgentRepo, AgentTier, BudgetPeriod, Citation,
    ContentError, Conversation, ConversationFilter, ConversationId, ConversationPatch,
    ConversationRepo, FileId, FileRepo, FinishReason, InputSchema, KnowledgeCollectionId,
    KnowledgeDocumentId, MemoryId, MemoryPatch, MemoryRepo, MemorySource, MessageId, MessageRepo,
    MessageRole, ModelParameters, NewAgent, NewConversation, NewFile, NewMemory, NewMessage,
    NewTool, Quota, QuotaAdmin, QuotaSource, Recorded, TokenBudget, TokenUsage, ToolId, ToolKind,
    ToolPatch, ToolRepo, UsageEvent, UsageEventId, UsageMeter, UsageScope,
};
use trellis_kernel::{PageRequest, PlatformCtx, Role, TenantCtx, UserId};
use trellis_tenancy::LlmProvider;

/// The content ports under test.
#[derive(Clone)]
pub struct ContentPorts {
    pub agents: Arc<dyn AgentRepo>,
    pub tools: Arc<dyn ToolRepo>,
    pub conversations: Arc<dyn ConversationRepo>,
    pub messages: Arc<dyn MessageRepo>,
    pub memories: Arc<dyn MemoryRepo>,
    pub files: Arc<dyn FileRepo>,
    pub usage: Arc<dyn UsageMeter>,
    pub quotas: Arc<dyn QuotaSource>,
    pub quota_admin: Arc<dyn QuotaAdmin>,
}

impl ContentPorts {
    /// All content ports from one adapter value.
    pub fn from_one<A>(a: A) -> Self
    where
        A: AgentRepo
            + ToolRepo
            + ConversationRepo
            + MessageRepo
            + MemoryRepo
            + FileRepo
            + UsageMeter
            + QuotaSource
            + QuotaAdmin
            + Clone,
    {
        Self {
            agents: Arc::new(a.clone()),
            tools: Arc::new(a.clone()),
            conversations: Arc::new(a.clone()),
            messages: Arc::new(a.clone()),
            memories: Arc::new(a.clone()),
            files: Arc::new(a.clone()),
            usage: Arc::new(a.clone()),
            quotas: Arc::new(a.clone()),
            quota_admin: Arc::new(a),
        }
    }
}

fn agent_config(name: &str) -> AgentConfig {
    AgentConfig {
        name: name.into(),
        description: Some("Answers refund questions".into()),
        instructions: "Be brief.".into(),
        provider: LlmProvider::Openai,
        model: "gpt-4o".into(),
        parameters: ModelParameters::new(Some(0.3), Some(0.9), Some(800)).unwrap(),
        tools: vec![],
        knowledge_collections: vec![KnowledgeCollectionId::new()],
        output_format: Some("A short paragraph.".into()),
        icon: Some("🤖".into()),
        tier: AgentTier::Pro,
        published: true,
        allowed_roles: vec![],
    }
}

fn new_agent(config: AgentConfig, by: Option<UserId>) -> NewAgent {
    NewAgent {
        id: AgentId::new(),
        config,
        created_by: by,
    }
}

fn new_tool(name: &str) -> NewTool {
    NewTool {
        id: ToolId::new(),
        kind: ToolKind::Http,
        name: name.into(),
        description: None,
        config: serde_json::json!({"url": "https://api.example.com/weather"}),
        input_schema: InputSchema::parse(serde_json::json!({
            "type": "object",
            "properties": {"city": {"type": "string"}},
            "required": ["city"]
        }))
        .unwrap(),
        allowed_roles: vec![Role::Support],
        enabled: true,
    }
}

fn new_conversation(owner: UserId, title: &str, agent: Option<AgentId>) -> NewConversation {
    NewConversation {
        id: ConversationId::new(),
        owner_id: owner,
        title: Some(title.into()),
        provider: LlmProvider::Anthropic,
        model: "claude-sonnet-4".into(),
        agent_id: agent,
        parameters: ModelParameters::new(Some(0.5), None, None).unwrap(),
    }
}

fn user_message(
    conv: ConversationId,
    parent: Option<MessageId>,
    author: UserId,
    text: &str,
) -> NewMessage {
    NewMessage::from_user(conv, parent, author, text.into(), vec![])
}

fn answer(conv: ConversationId, parent: MessageId, text: &str) -> NewMessage {
    NewMessage {
        id: MessageId::new(),
        conversation_id: conv,
        parent_id: Some(parent),
        role: MessageRole::Assistant,
        content: text.into(),
        author_id: None,
        provider: Some(LlmProvider::Openai),
        model: Some("gpt-4o".into()),
        finish_reason: Some(FinishReason::Stop),
        usage: Some(TokenUsage {
            prompt_tokens: 120,
            completion_tokens: 30,
        }),
        error: None,
        unfinished: false,
        files: vec![],
        citations: vec![Citation {
            index: 1,
            collection_id: KnowledgeCollectionId::new(),
            document_id: KnowledgeDocumentId::new(),
            filename: "policy.pdf".into(),
            span_start: 10,
            span_end: 90,
            page: Some(2),
            score: 0.75,
        }],
    }
}

async fn second_user(p: &Ports, ctx: &TenantCtx) -> UserId {
    let email = format!("u{}@example.com", uuid::Uuid::now_v7().simple());
    user(p, ctx, &email, Role::User).await.id
}

pub async fn agents_read_back_and_names_are_unique_per_tenant(p: &Ports, c: &ContentPorts) {
    let (_, a, admin) = tenant(p).await;
    let (_, b, _) = tenant(p).await;
    let config = agent_config("Support");
    let inserted = c
        .agents
        .insert(&a, new_agent(config.clone(), Some(admin)))
        .await
        .unwrap();
    assert_eq!((inserted.version, inserted.tenant_id), (1, a.tenant_id()));
    let got = c.agents.get(&a, inserted.id).await.unwrap();
    assert_eq!(got.config, config);
    assert_eq!(got.created_by, Some(admin));
    let dup = c
        .agents
        .insert(&a, new_agent(agent_config("Support"), None))
        .await;
    assert!(matches!(dup, Err(ContentError::Conflict(_))), "{dup:?}");
    c.agents
        .insert(&b, new_agent(agent_config("Support"), None))
        .await
        .unwrap();
    assert!(matches!(
        c.agents.get(&b, inserted.id).await,
        Err(ContentError::NotFound(_))
    ));
    assert_eq!(
        c.agents
            .find_by_name(&a, "Support")
            .await
            .unwrap()
            .map(|x| x.id),
        Some(inserted.id)
    );
    assert!(
        c.agents
            .find_by_name(&a, "support")
            .await
            .unwrap()
            .is_none()
    );
    let in_b = c
        .agents
        .list(&b, &AgentFilter::default(), PageRequest::default())
        .await
        .unwrap();
    assert!(in_b.items.iter().all(|x| x.id != inserted.id));
    assert!(matches!(
        c.agents
            .update(&b, inserted.id, 1, agent_config("Hijack"), None)
            .await,
        Err(ContentError::NotFound(_))
    ));
    assert!(matches!(
        c.agents.delete(&b, inserted.id).await,
        Err(ContentError::NotFound(_))
    ));
    assert_eq!(c.agents.get(&a, inserted.id).await.unwrap().version, 1);
}

pub async fn updating_an_agent_bumps_its_version_and_keeps_every_version(
    p: &Ports,
    c: &ContentPorts,
) {
    let (_, a, admin) = tenant(p).await;
    let (_, b, _) = tenant(p).await;
    let v1 = c
        .agents
        .insert(&a, new_agent(agent_config("Helper"), Some(admin)))
        .await
        .unwrap();
    c.agents
        .insert(&a, new_agent(agent_config("Other"), None))
        .await
        .unwrap();
    let mut changed = v1.config.clone();
    changed.instructions = "Be thorough.".into();
    changed.published = false;
    let v2 = c
        .agents
        .update(&a, v1.id, 1, changed.clone(), Some(admin))
        .await
        .unwrap();
    assert_eq!((v2.version, v2.config.clone()), (2, changed.clone()));
    assert_eq!(c.agents.get(&a, v1.id).await.unwrap().version, 2);

    let stale = c.agents.update(&a, v1.id, 1, v1.config.clone(), None).await;
    assert!(matches!(stale, Err(ContentError::Conflict(_))), "{stale:?}");
    let mut renamed = changed.clone();
    renamed.name = "Other".into();
    let taken = c.agents.update(&a, v1.id, 2, renamed, None).await;
    assert!(matches!(taken, Err(ContentError::Conflict(_))), "{taken:?}");

    let versions = c.agents.versions(&a, v1.id).await.unwrap();
    let numbers: Vec<u32> = versions.iter().map(|v| v.version).collect();
    assert_eq!(numbers, [1, 2]);
    assert_eq!(versions[0].config, v1.config);
    assert_eq!(versions[1].config, changed);
    assert_eq!(versions[1].saved_by, Some(admin));
    assert!(matches!(
        c.agents.versions(&b, v1.id).await,
        Err(ContentError::NotFound(_))
    ));

    c.agents.delete(&a, v1.id).await.unwrap();
    assert!(matches!(
        c.agents.versions(&a, v1.id).await,
        Err(ContentError::NotFound(_))
    ));
}

pub async fn agents_list_by_published_role_and_tool(p: &Ports, c: &ContentPorts) {
    let (_, a, _) = tenant(p).await;
    let tool = c.tools.insert(&a, new_tool("Weather")).await.unwrap();
    let open = c
        .agents
        .insert(&a, new_agent(agent_config("Open"), None))
        .await
        .unwrap();
    let mut support_only = agent_config("Support only");
    support_only.allowed_roles = vec![Role::Support];
    support_only.tools = vec![tool.id];
    let support_only = c
        .agents
        .insert(&a, new_agent(support_only, None))
        .await
        .unwrap();
    let mut draft = agent_config("Draft");
    draft.published = false;
    let draft = c.agents.insert(&a, new_agent(draft, None)).await.unwrap();

    let ids = |filter: AgentFilter| {
        let c = c.clone();
        let a = a.clone();
        async move {
            let mut ids: Vec<AgentId> = c
                .agents
                .list(&a, &filter, PageRequest::default())
                .await
                .unwrap()
                .items
                .into_iter()
                .map(|x| x.id)
                .collect();
            ids.sort();
            ids
        }
    };
    let mut all = vec![open.id, support_only.id, draft.id];
    all.sort();
    assert_eq!(ids(AgentFilter::default()).await, all);
    let published = AgentFilter {
        published: Some(true),
        ..AgentFilter::default()
    };
    let mut both = vec![open.id, support_only.id];
    both.sort();
    assert_eq!(ids(published.clone()).await, both);
    let for_users = AgentFilter {
        usable_by_role: Some(Role::User),
        ..published.clone()
    };
    assert_eq!(ids(for_users).await, [open.id]);
    let for_support = AgentFilter {
        usable_by_role: Some(Role::Support),
        ..published
    };
    assert_eq!(ids(for_support).await, both);
    let with_tool = AgentFilter {
        uses_tool: Some(tool.id),
        ..AgentFilter::default()
    };
    assert_eq!(ids(with_tool).await, [support_only.id]);
    let page = c
        .agents
        .list(
            &a,
            &AgentFilter::default(),
            PageRequest::new(Some(2), None).unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(page.items.len(), 2);
    let rest = c
        .agents
        .list(
            &a,
            &AgentFilter::default(),
            PageRequest::new(Some(2), page.next_cursor.as_deref()).unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(rest.items.len(), 1);
    assert!(rest.next_cursor.is_none());
}

pub async fn tools_are_tenant_scoped_and_names_unique(p: &Ports, c: &ContentPorts) {
    let (_, a, _) = tenant(p).await;
    let (_, b, _) = tenant(p).await;
    let tool = c.tools.insert(&a, new_tool("Weather")).await.unwrap();
    let got = c.tools.get(&a, tool.id).await.unwrap();
    assert_eq!(got.kind, ToolKind::Http);
    assert_eq!(got.config["url"], "https://api.example.com/weather");
    assert_eq!(got.input_schema, new_tool("x").input_schema);
    assert_eq!(got.allowed_roles, [Role::Support]);
    assert!(matches!(
        c.tools.insert(&a, new_tool("Weather")).await,
        Err(ContentError::Conflict(_))
    ));
    c.tools.insert(&b, new_tool("Weather")).await.unwrap();
    assert!(matches!(
        c.tools.get(&b, tool.id).await,
        Err(ContentError::NotFound(_))
    ));
    let patch = ToolPatch {
        enabled: Some(false),
        description: Some(Some("Forecasts".into())),
        ..ToolPatch::default()
    };
    assert!(matches!(
        c.tools.update(&b, tool.id, patch.clone()).await,
        Err(ContentError::NotFound(_))
    ));
    let updated = c.tools.update(&a, tool.id, patch).await.unwrap();
    assert!(!updated.enabled);
    assert_eq!(updated.description.as_deref(), Some("Forecasts"));
    c.tools.insert(&a, new_tool("Search")).await.unwrap();
    let rename = ToolPatch {
        name: Some("Search".into()),
        ..ToolPatch::default()
    };
    assert!(matches!(
        c.tools.update(&a, tool.id, rename).await,
        Err(ContentError::Conflict(_))
    ));
    assert_eq!(
        c.tools
            .list(&a, PageRequest::default())
            .await
            .unwrap()
            .items
            .len(),
        2
    );
    assert!(matches!(
        c.tools.delete(&b, tool.id).await,
        Err(ContentError::NotFound(_))
    ));
    c.tools.delete(&a, tool.id).await.unwrap();
    assert!(matches!(
        c.tools.get(&a, tool.id).await,
        Err(ContentError::NotFound(_))
    ));
}

pub async fn conversations_are_tenant_scoped_and_filter_by_owner_archived_agent_and_title(
    p: &Ports,
    c: &ContentPorts,
) {
    let (_, a, admin) = tenant(p).await;
    let (_, b, b_admin) = tenant(p).await;
    let other = second_user(p, &a).await;
    let agent = c
        .agents
        .insert(&a, new_agent(agent_config("Support"), None))
        .await
        .unwrap();
    let refunds = c
        .conversations
        .insert(&a, new_conversation(admin, "Refund policy", Some(agent.id)))
        .await
        .unwrap();
    let shipping = c
        .conversations
        .insert(&a, new_conversation(admin, "Shipping times", None))
        .await
        .unwrap();
    let theirs = c
        .conversations
        .insert(&a, new_conversation(other, "Other refunds", None))
        .await
        .unwrap();
    c.conversations
        .insert(&b, new_conversation(b_admin, "Refund policy", None))
        .await
        .unwrap();
    let got = c.conversations.get(&a, refunds.id).await.unwrap();
    assert_eq!(
        (
            got.owner_id,
            got.agent_id,
            got.archived,
            got.last_message_at
        ),
        (admin, Some(agent.id), false, None)
    );
    assert_eq!(got.parameters.temperature(), Some(0.5));
    assert!(matches!(
        c.conversations.get(&b, refunds.id).await,
        Err(ContentError::NotFound(_))
    ));

    c.conversations
        .update(
            &a,
            shipping.id,
            ConversationPatch {
                archived: Some(true),
                title: Some(Some("Shipping (old)".into())),
                ..ConversationPatch::default()
            },
        )
        .await
        .unwrap();
    assert!(matches!(
        c.conversations
            .update(&b, refunds.id, ConversationPatch::default())
            .await,
        Err(ContentError::NotFound(_))
    ));

    let list = |filter: ConversationFilter| {
        let c = c.clone();
        let a = a.clone();
        async move {
            let mut ids: Vec<ConversationId> = c
                .conversations
                .list(&a, &filter, PageRequest::default())
                .await
                .unwrap()
                .items
                .into_iter()
                .map(|x| x.id)
                .collect();
            ids.sort();
            ids
        }
    };
    let mine = ConversationFilter {
        owner: Some(admin),
        ..ConversationFilter::default()
    };
    let mut both = vec![refunds.id, shipping.id];
    both.sort();
    assert_eq!(list(mine.clone()).await, both);
    let active = ConversationFilter {
        archived: Some(false),
        ..mine.clone()
    };
    assert_eq!(list(active).await, [refunds.id]);
    let with_agent = ConversationFilter {
        agent: Some(agent.id),
        ..ConversationFilter::default()
    };
    assert_eq!(list(with_agent).await, [refunds.id]);
    let titled = ConversationFilter {
        title_contains: Some("REFUND".into()),
        ..ConversationFilter::default()
    };
    let mut refund_ids = vec![refunds.id, theirs.id];
    refund_ids.sort();
    assert_eq!(list(titled).await, refund_ids);
    assert_eq!(list(ConversationFilter::default()).await.len(), 3);
}

/// Every field read back, by `get` and page by page through `list`, equals what the
/// insert returned (the Postgres adapter decodes these rows by position).
pub async fn every_field_of_a_conversation_reads_back_through_get_and_list_pages(
    p: &Ports,
    c: &ContentPorts,
) {
    let (_, a, admin) = tenant(p).await;
    let agent = c
        .agents
        .insert(&a, new_agent(agent_config("Sales"), None))
        .await
        .unwrap();
    let full = NewConversation {
        parameters: ModelParameters::new(Some(0.25), Some(0.75), Some(512)).unwrap(),
        ..new_conversation(admin, "All fields", Some(agent.id))
    };
    let bare = NewConversation {
        title: None,
        parameters: ModelParameters::default(),
        ..new_conversation(admin, "", None)
    };
    let mut inserted = Vec::new();
    for new in [full, bare, new_conversation(admin, "Third", None)] {
        inserted.push(c.conversations.insert(&a, new).await.unwrap());
    }
    for conv in &inserted {
        assert_eq!(&c.conversations.get(&a, conv.id).await.unwrap(), conv);
    }
    let pages = every_page(1, async |page| {
        c.conversations
            .list(&a, &ConversationFilter::default(), page)
            .await
            .unwrap()
    })
    .await;
    assert!(pages.iter().all(|p| p.items.len() <= 1));
    let listed: Vec<_> = pages.into_iter().flat_map(|p| p.items).collect();
    assert_eq!(listed, inserted, "pages of one, oldest first, every field");
}

/// Two tenants; in the first, an agent, a conversation with it and one without.
struct TwoConversations {
    a: TenantCtx,
    b: TenantCtx,
    admin: UserId,
    agent: Agent,
    with_agent: Conversation,
    without: Conversation,
}

async fn two_conversations(p: &Ports, c: &ContentPorts) -> TwoConversations {
    let (_, a, admin) = tenant(p).await;
    let (_, b, _) = tenant(p).await;
    let agent = c
        .agents
        .insert(&a, new_agent(agent_config("Support"), None))
        .await
        .unwrap();
    let with_agent = c
        .conversations
        .insert(&a, new_conversation(admin, "Refunds", Some(agent.id)))
        .await
        .unwrap();
    let without = c
        .conversations
        .insert(&a, new_conversation(admin, "Plain", None))
        .await
        .unwrap();
    TwoConversations {
        a,
        b,
        admin,
        agent,
        with_agent,
        without,
    }
}

/// A question by `author` in `conv` and an answer under it.
async fn question_and_answer(
    c: &ContentPorts,
    ctx: &TenantCtx,
    conv: ConversationId,
    author: UserId,
) -> (trellis_content::Message, trellis_content::Message) {
    let q = c
        .messages
        .insert(ctx, user_message(conv, None, author, "Refunds?"))
        .await
        .unwrap();
    let r = c
        .messages
        .insert(ctx, answer(conv, q.id, "Within 14 days [1]."))
        .await
        .unwrap();
    (q, r)
}

pub async fn a_thread_is_the_conversation_with_its_messages_and_agent_in_its_tenant_only(
    p: &Ports,
    c: &ContentPorts,
) {
    let TwoConversations {
        a,
        b,
        admin,
        agent,
        with_agent: conv,
        without: plain,
    } = two_conversations(p, c).await;
    let (q, r) = question_and_answer(c, &a, conv.id, admin).await;

    let thread = c.conversations.thread(&a, conv.id).await.unwrap();
    assert_eq!(
        thread.conversation,
        c.conversations.get(&a, conv.id).await.unwrap(),
        "the conversation as stored, last message time included"
    );
    assert_eq!(thread.messages, [q, r], "its messages, oldest first");
    assert_eq!(
        thread.agent,
        Some(c.agents.get(&a, agent.id).await.unwrap())
    );

    let thread = c.conversations.thread(&a, plain.id).await.unwrap();
    assert!(thread.messages.is_empty() && thread.agent.is_none());

    c.agents.delete(&a, agent.id).await.unwrap();
    let thread = c.conversations.thread(&a, conv.id).await.unwrap();
    assert_eq!(
        thread.agent, None,
        "a deleted agent is no longer read with it"
    );
    assert_eq!(thread.messages.len(), 2);

    for (ctx, id) in [(&b, conv.id), (&a, ConversationId::new())] {
        assert!(
            matches!(
                c.conversations.thread(ctx, id).await,
                Err(ContentError::NotFound(_))
            ),
            "another tenant's conversation, or none, is not found"
        );
    }
}

pub async fn a_conversation_opens_with_all_its_messages_in_its_tenant_only(
    p: &Ports,
    c: &ContentPorts,
) {
    let TwoConversations {
        a,
        b,
        admin,
        with_agent: conv,
        without: plain,
        ..
    } = two_conversations(p, c).await;
    let (q, r) = question_and_answer(c, &a, conv.id, admin).await;
    let other = c
        .messages
        .insert(&a, user_message(plain.id, None, admin, "Elsewhere"))
        .await
        .unwrap();

    let (conversation, messages) = c.conversations.with_messages(&a, conv.id).await.unwrap();
    assert_eq!(
        conversation,
        c.conversations.get(&a, conv.id).await.unwrap(),
        "the conversation as stored, last message time included"
    );
    assert_eq!(
        messages,
        c.messages.for_conversation(&a, conv.id).await.unwrap(),
        "its messages as listing them gives them"
    );
    assert_eq!(messages, [q, r], "its own messages only, oldest first");
    let (_, messages) = c.conversations.with_messages(&a, plain.id).await.unwrap();
    assert_eq!(messages, [other]);

    for (ctx, id) in [(&b, conv.id), (&a, ConversationId::new())] {
        assert!(
            matches!(
                c.conversations.with_messages(ctx, id).await,
                Err(ContentError::NotFound(_))
            ),
            "another tenant's conversation, or none, is not found"
        );
    }
}

pub async fn messages_form_a_tree_that_reads_back_whole(p: &Ports, c: &ContentPorts) {
    let (_, a, admin) = tenant(p).await;
    let (_, b, _) = tenant(p).await;
    let conv = c
        .conversations
        .insert(&a, new_conversation(admin, "Tree", None))
        .await
        .unwrap();
    let q1 = c
        .messages
        .insert(
            &a,
            user_message(conv.id, None, admin, "How long do refunds take?"),
        )
        .await
        .unwrap();
    let a1_new = answer(conv.id, q1.id, "Within 14 days [1].");
    let a1 = c.messages.insert(&a, a1_new.clone()).await.unwrap();
    let mut failed = answer(conv.id, q1.id, "Within");
    failed.error = Some("the model stopped responding".into());
    failed.finish_reason = Some(FinishReason::Error);
    failed.unfinished = true;
    failed.usage = None;
    failed.citations = vec![];
    let a1b = c.messages.insert(&a, failed).await.unwrap();

    assert_eq!(a1.parent_id, Some(q1.id));
    assert_eq!(a1.usage, a1_new.usage);
    assert_eq!(a1.citations, a1_new.citations);
    assert_eq!(
        (a1.provider, a1.model.as_deref(), a1.finish_reason),
        (
            Some(LlmProvider::Openai),
            Some("gpt-4o"),
            Some(FinishReason::Stop)
        )
    );
    let all = c.messages.for_conversation(&a, conv.id).await.unwrap();
    let ids: Vec<MessageId> = all.iter().map(|m| m.id).collect();
    assert_eq!(ids, [q1.id, a1.id, a1b.id], "oldest first");
    // Every field reads back as stored, through the list and one by one (the Postgres
    // adapter decodes these rows by position).
    assert_eq!(all, [q1.clone(), a1.clone(), a1b.clone()]);
    for m in &all {
        assert_eq!(&c.messages.get(&a, m.id).await.unwrap(), m);
    }
    let back = c.messages.get(&a, a1b.id).await.unwrap();
    assert_eq!(back.error.as_deref(), Some("the model stopped responding"));
    assert!(back.unfinished && back.usage.is_none());
    assert_eq!(back.parent_id, Some(q1.id), "a sibling of a1");
    assert_eq!(
        c.messages.get(&a, q1.id).await.unwrap().author_id,
        Some(admin)
    );

    let conv = c.conversations.get(&a, conv.id).await.unwrap();
    assert!(conv.last_message_at.is_some_and(|t| t >= a1b.created_at));
    assert!(matches!(
        c.messages.get(&b, q1.id).await,
        Err(ContentError::NotFound(_))
    ));
    assert!(
        c.messages
            .for_conversation(&b, conv.id)
            .await
            .unwrap()
            .is_empty()
    );
}

pub async fn a_message_cannot_hang_under_another_conversations_message(
    p: &Ports,
    c: &ContentPorts,
) {
    let (_, a, admin) = tenant(p).await;
    let (_, b, b_admin) = tenant(p).await;
    let one = c
        .conversations
        .insert(&a, new_conversation(admin, "One", None))
        .await
        .unwrap();
    let two = c
        .conversations
        .insert(&a, new_conversation(admin, "Two", None))
        .await
        .unwrap();
    let root = c
        .messages
        .insert(&a, user_message(one.id, None, admin, "hello"))
        .await
        .unwrap();
    let cross = c
        .messages
        .insert(&a, user_message(two.id, Some(root.id), admin, "cross"))
        .await;
    assert!(matches!(cross, Err(ContentError::NotFound(_))), "{cross:?}");
    let unknown_parent = c
        .messages
        .insert(&a, user_message(one.id, Some(MessageId::new()), admin, "x"))
        .await;
    assert!(matches!(unknown_parent, Err(ContentError::NotFound(_))));
    let other_tenant = c
        .messages
        .insert(&b, user_message(one.id, None, b_admin, "intrude"))
        .await;
    assert!(matches!(other_tenant, Err(ContentError::NotFound(_))));
    assert_eq!(
        c.messages.for_conversation(&a, one.id).await.unwrap().len(),
        1
    );
}

pub async fn inserting_many_messages_is_all_or_nothing(p: &Ports, c: &ContentPorts) {
    let (_, a, admin) = tenant(p).await;
    let conv = c
        .conversations
        .insert(&a, new_conversation(admin, "Fork", None))
        .await
        .unwrap();
    let q = user_message(conv.id, None, admin, "q");
    let ans = answer(conv.id, q.id, "a");
    let bad = user_message(conv.id, Some(MessageId::new()), admin, "orphan");
    let failed = c
        .messages
        .insert_many(&a, vec![q.clone(), ans.clone(), bad])
        .await;
    assert!(failed.is_err());
    assert!(
        c.messages
            .for_conversation(&a, conv.id)
            .await
            .unwrap()
            .is_empty(),
        "a failed batch stored nothing"
    );
    let stored = c
        .messages
        .insert_many(&a, vec![q.clone(), ans.clone()])
        .await
        .unwrap();
    assert_eq!(stored.len(), 2);
    let all = c.messages.for_conversation(&a, conv.id).await.unwrap();
    let ids: Vec<MessageId> = all.iter().map(|m| m.id).collect();
    assert_eq!(ids, [q.id, ans.id]);
    assert_eq!(all[1].parent_id, Some(q.id));
}

pub async fn a_prepared_message_is_stored_only_once_committed(p: &Ports, c: &ContentPorts) {
    let (_, a, admin) = tenant(p).await;
    let conv = c
        .conversations
        .insert(&a, new_conversation(admin, "Prepared", None))
        .await
        .unwrap();
    let dropped = user_message(conv.id, None, admin, "never mind");
    let pending = c.messages.prepare_insert(&a, dropped.clone()).await;
    drop(pending);
    assert!(matches!(
        c.messages.get(&a, dropped.id).await,
        Err(ContentError::NotFound(_))
    ));

    let kept = user_message(conv.id, None, admin, "keep me");
    let pending = c.messages.prepare_insert(&a, kept.clone()).await.unwrap();
    assert!(
        c.messages
            .for_conversation(&a, conv.id)
            .await
            .unwrap()
            .is_empty(),
        "nothing is visible before the commit"
    );
    let stored = pending.commit().await.unwrap();
    assert_eq!((stored.id, stored.content.as_str()), (kept.id, "keep me"));
    let all = c.messages.for_conversation(&a, conv.id).await.unwrap();
    assert_eq!(all.iter().map(|m| m.id).collect::<Vec<_>>(), [kept.id]);
    let conv = c.conversations.get(&a, conv.id).await.unwrap();
    assert!(conv.last_message_at.is_some());

    // A parent that does not exist is refused by the time the commit is through.
    let orphan = user_message(conv.id, Some(MessageId::new()), admin, "orphan");
    let refused = match c.messages.prepare_insert(&a, orphan).await {
        Ok(pending) => pending.commit().await.map(|_| ()),
        Err(e) => Err(e),
    };
    assert!(
        matches!(refused, Err(ContentError::NotFound(_))),
        "{refused:?}"
    );
}

pub async fn deleting_a_conversation_deletes_its_messages(p: &Ports, c: &ContentPorts) {
    let (_, a, admin) = tenant(p).await;
    let (_, b, _) = tenant(p).await;
    let conv = c
        .conversations
        .insert(&a, new_conversation(admin, "Temp", None))
        .await
        .unwrap();
    let q = c
        .messages
        .insert(&a, user_message(conv.id, None, admin, "bye"))
        .await
        .unwrap();
    assert!(matches!(
        c.conversations.delete(&b, conv.id).await,
        Err(ContentError::NotFound(_))
    ));
    c.conversations.delete(&a, conv.id).await.unwrap();
    assert!(matches!(
        c.conversations.get(&a, conv.id).await,
        Err(ContentError::NotFound(_))
    ));
    assert!(matches!(
        c.messages.get(&a, q.id).await,
        Err(ContentError::NotFound(_))
    ));
    assert!(matches!(
        c.conversations.delete(&a, conv.id).await,
        Err(ContentError::NotFound(_))
    ));
}

pub async fn message_search_finds_only_the_owners_messages_in_the_tenant(
    p: &Ports,
    c: &ContentPorts,
) {
    let (_, a, admin) = tenant(p).await;
    let (_, b, b_admin) = tenant(p).await;
    let other = second_user(p, &a).await;
    let mine = c
        .conversations
        .insert(&a, new_conversation(admin, "Mine", None))
        .await
        .unwrap();
    let theirs = c
        .conversations
        .insert(&a, new_conversation(other, "Theirs", None))
        .await
        .unwrap();
    let foreign = c
        .conversations
        .insert(&b, new_conversation(b_admin, "Foreign", None))
        .await
        .unwrap();
    let hit = c
        .messages
        .insert(
            &a,
            user_message(
                mine.id,
                None,
                admin,
                "What is the refund window for invoices?",
            ),
        )
        .await
        .unwrap();
    c.messages
        .insert(&a, user_message(mine.id, None, admin, "Shipping to Norway"))
        .await
        .unwrap();
    let their_hit = c
        .messages
        .insert(&a, user_message(theirs.id, None, other, "refund please"))
        .await
        .unwrap();
    c.messages
        .insert(
            &b,
            user_message(foreign.id, None, b_admin, "refund refund refund"),
        )
        .await
        .unwrap();

    let hits = c
        .messages
        .search(&a, Some(admin), "refund window", 10)
        .await
        .unwrap();
    assert_eq!(hits.len(), 1, "{hits:?}");
    assert_eq!(
        (hits[0].message_id, hits[0].conversation_id),
        (hit.id, mine.id)
    );
    assert!(hits[0].snippet.to_lowercase().contains("refund"));
    let everyone = c.messages.search(&a, None, "refund", 10).await.unwrap();
    let mut ids: Vec<MessageId> = everyone.iter().map(|h| h.message_id).collect();
    ids.sort();
    let mut want = vec![hit.id, their_hit.id];
    want.sort();
    assert_eq!(ids, want, "the other tenant's message is never found");
    assert!(
        c.messages
            .search(&a, Some(admin), "kangaroo", 10)
            .await
            .unwrap()
            .is_empty()
    );
    assert_eq!(
        c.messages
            .search(&a, None, "refund", 1)
            .await
            .unwrap()
            .len(),
        1
    );
}

fn new_memory(owner: UserId, key: &str, value: &str) -> NewMemory {
    NewMemory {
        id: MemoryId::new(),
        owner_id: owner,
        key: key.into(),
        value: value.into(),
        category: Some("preferences".into()),
        source: MemorySource::Conversation,
        source_id: Some("conv-1".into()),
    }
}

pub async fn memories_are_unique_per_user_by_key_and_searchable(p: &Ports, c: &ContentPorts) {
    let (_, a, admin) = tenant(p).await;
    let (_, b, b_admin) = tenant(p).await;
    let other = second_user(p, &a).await;
    let diet = c
        .memories
        .insert(&a, new_memory(admin, "diet", "vegetarian, no mushrooms"))
        .await
        .unwrap();
    c.memories
        .insert(&a, new_memory(admin, "city", "Lives in Oslo"))
        .await
        .unwrap();
    let got = c.memories.get(&a, diet.id).await.unwrap();
    assert_eq!(
        (
            got.source,
            got.source_id.as_deref(),
            got.category.as_deref()
        ),
        (
            MemorySource::Conversation,
            Some("conv-1"),
            Some("preferences")
        )
    );
    assert!(matches!(
        c.memories
            .insert(&a, new_memory(admin, "diet", "vegan"))
            .await,
        Err(ContentError::Conflict(_))
    ));
    c.memories
        .insert(&a, new_memory(other, "diet", "vegetarian"))
        .await
        .unwrap();
    c.memories
        .insert(&b, new_memory(b_admin, "diet", "vegetarian"))
        .await
        .unwrap();

    let hits = c
        .memories
        .search(&a, admin, "is the user vegetarian?", 5)
        .await
        .unwrap();
    assert_eq!(hits.len(), 1, "only the owner's, only this tenant's");
    assert_eq!(hits[0].memory.id, diet.id);
    assert!(hits[0].score > 0.0);
    assert!(
        c.memories
            .search(&a, admin, "kangaroo", 5)
            .await
            .unwrap()
            .is_empty()
    );
    let listed = c
        .memories
        .list(&a, admin, PageRequest::default())
        .await
        .unwrap();
    assert_eq!(listed.items.len(), 2);

    assert!(matches!(
        c.memories.get(&b, diet.id).await,
        Err(ContentError::NotFound(_))
    ));
    let rename = MemoryPatch {
        key: Some("city".into()),
        ..MemoryPatch::default()
    };
    assert!(matches!(
        c.memories.update(&a, diet.id, rename).await,
        Err(ContentError::Conflict(_))
    ));
    let patch = MemoryPatch {
        value: Some("vegan".into()),
        category: Some(None),
        ..MemoryPatch::default()
    };
    assert!(matches!(
        c.memories.update(&b, diet.id, patch.clone()).await,
        Err(ContentError::NotFound(_))
    ));
    let updated = c.memories.update(&a, diet.id, patch).await.unwrap();
    assert_eq!((updated.value.as_str(), updated.category), ("vegan", None));
    assert!(matches!(
        c.memories.delete(&b, diet.id).await,
        Err(ContentError::NotFound(_))
    ));
    c.memories.delete(&a, diet.id).await.unwrap();
    assert!(matches!(
        c.memories.get(&a, diet.id).await,
        Err(ContentError::NotFound(_))
    ));
}

pub async fn files_are_tenant_scoped(p: &Ports, c: &ContentPorts) {
    let (_, a, admin) = tenant(p).await;
    let (_, b, _) = tenant(p).await;
    let conv = c
        .conversations
        .insert(&a, new_conversation(admin, "Files", None))
        .await
        .unwrap();
    let id = FileId::new();
    let f = c
        .files
        .insert(
            &a,
            NewFile {
                id,
                owner_id: admin,
                conversation_id: Some(conv.id),
                filename: "invoice.pdf".into(),
                mime_type: "application/pdf".into(),
                size_bytes: 2048,
                checksum: "ab".repeat(32),
                storage_key: format!("{}/files/{id}", a.tenant_id()),
            },
        )
        .await
        .unwrap();
    assert_eq!((f.size_bytes, f.knowledge_document_id), (2048, None));
    assert_eq!(c.files.get(&a, id).await.unwrap().filename, "invoice.pdf");
    assert_eq!(
        c.files.for_conversation(&a, conv.id).await.unwrap().len(),
        1
    );
    assert!(matches!(
        c.files.get(&b, id).await,
        Err(ContentError::NotFound(_))
    ));
    assert!(
        c.files
            .for_conversation(&b, conv.id)
            .await
            .unwrap()
            .is_empty()
    );
    assert!(matches!(
        c.files.delete(&b, id).await,
        Err(ContentError::NotFound(_))
    ));
    // Linking needs a real document where storage checks one; another tenant's or
    // an unknown file is never found.
    assert!(matches!(
        c.files
            .set_knowledge_document(&b, id, KnowledgeDocumentId::new())
            .await,
        Err(ContentError::NotFound(_))
    ));
    assert!(matches!(
        c.files
            .set_knowledge_document(&a, FileId::new(), KnowledgeDocumentId::new())
            .await,
        Err(ContentError::NotFound(_))
    ));
    assert_eq!(
        c.files.get(&a, id).await.unwrap().knowledge_document_id,
        None
    );
    c.files.delete(&a, id).await.unwrap();
    assert!(matches!(
        c.files.get(&a, id).await,
        Err(ContentError::NotFound(_))
    ));
}

fn usage_event(key: &str, user: UserId, tokens: u32, ago: chrono::Duration) -> UsageEvent {
    UsageEvent {
        id: UsageEventId::new(),
        idempotency_key: key.into(),
        user_id: Some(user),
        conversation_id: None,
        message_id: None,
        provider: LlmProvider::Openai,
        model: "gpt-4o".into(),
        usage: TokenUsage {
            prompt_tokens: tokens,
            completion_tokens: tokens,
        },
        estimated: false,
        occurred_at: chrono::Utc::now() - ago,
    }
}

pub async fn usage_with_the_same_idempotency_key_counts_once(p: &Ports, c: &ContentPorts) {
    let (_, a, admin) = tenant(p).await;
    let (_, b, b_admin) = tenant(p).await;
    let other = second_user(p, &a).await;
    let hour = chrono::Duration::hours(1);
    assert_eq!(
        c.usage
            .record(&a, usage_event("answer:1", admin, 50, hour))
            .await
            .unwrap(),
        Recorded::New
    );
    assert_eq!(
        c.usage
            .record(&a, usage_event("answer:1", admin, 50, hour))
            .await
            .unwrap(),
        Recorded::Duplicate
    );
    c.usage
        .record(&a, usage_event("answer:2", other, 10, hour))
        .await
        .unwrap();
    c.usage
        .record(
            &a,
            usage_event("answer:old", admin, 1000, chrono::Duration::days(3)),
        )
        .await
        .unwrap();
    // The same key in another tenant is another event.
    assert_eq!(
        c.usage
            .record(&b, usage_event("answer:1", b_admin, 7, hour))
            .await
            .unwrap(),
        Recorded::New
    );
    let now = chrono::Utc::now();
    let (from, until) = (
        now - chrono::Duration::days(1),
        now + chrono::Duration::minutes(1),
    );
    let total = |ctx: TenantCtx, scope| {
        let c = c.clone();
        async move {
            c.usage
                .total_tokens(&ctx, scope, from, until)
                .await
                .unwrap()
        }
    };
    assert_eq!(total(a.clone(), UsageScope::Tenant).await, 100 + 20);
    assert_eq!(total(a.clone(), UsageScope::User(admin)).await, 100);
    assert_eq!(total(a.clone(), UsageScope::User(other)).await, 20);
    assert_eq!(total(b.clone(), UsageScope::Tenant).await, 14);
    assert_eq!(
        c.usage
            .total_tokens(
                &a,
                UsageScope::User(admin),
                from - chrono::Duration::days(7),
                until
            )
            .await
            .unwrap(),
        2100
    );
}

pub async fn only_the_platform_sets_a_tenants_budgets_and_the_tenant_reads_them(
    p: &Ports,
    c: &ContentPorts,
) {
    let (ta, a, _) = tenant(p).await;
    let (tb, b, _) = tenant(p).await;
    let platform = PlatformCtx::system();
    assert_eq!(
        c.quota_admin.quota_of(&platform, ta.id).await.unwrap(),
        Quota::default(),
        "never set means unlimited"
    );
    let quota = Quota {
        tenant: Some(TokenBudget {
            limit_tokens: 1_000_000,
            period: BudgetPeriod::Month,
        }),
        per_user: Some(TokenBudget {
            limit_tokens: 20_000,
            period: BudgetPeriod::Day,
        }),
    };
    c.quota_admin
        .replace_quota(&platform, ta.id, quota)
        .await
        .unwrap();
    assert_eq!(
        c.quota_admin.quota_of(&platform, ta.id).await.unwrap(),
        quota
    );
    assert_eq!(c.quotas.quota(&a).await.unwrap(), quota);
    assert_eq!(c.quotas.quota(&b).await.unwrap(), Quota::default());
    assert_eq!(
        c.quota_admin.quota_of(&platform, tb.id).await.unwrap(),
        Quota::default()
    );
    let lifted = Quota {
        per_user: None,
        ..quota
    };
    c.quota_admin
        .replace_quota(&platform, ta.id, lifted)
        .await
        .unwrap();
    assert_eq!(c.quotas.quota(&a).await.unwrap(), lifted);
}
