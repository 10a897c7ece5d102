//! The content repositories against PostgreSQL, for what only a database shows:
//! row-level security alone keeps every content table to its tenant, the model
//! catalogue is platform data tenants can read but not write, budgets are set by the
//! platform only, foreign keys keep agents' tools and messages' files in the tenant,
//! and compare-and-set and idempotency hold under concurrency.

use super::support::{
    app_url, begin_in, conversation, first_admin, new_tenant, owner_url, query, raw, stmt,
    stmt_with, store, tenant, unique_slug,
};
use sea_orm::{ConnectionTrait, TransactionTrait};
use std::collections::HashSet;
use trellis_content::{
    AgentConfig, AgentId, AgentRepo, AgentTier, BudgetPeriod, ContentError, ConversationId,
    ConversationRepo, FileId, FileRepo, InputSchema, KnowledgeCollectionId, LlmCatalog, LlmModel,
    MemoryId, MemoryRepo, MemorySource, MessageRepo, MicroUsd, ModelParameters, NewAgent, NewFile,
    NewMemory, NewMessage, NewTool, Quota, QuotaSource, Recorded, TokenBudget, TokenUsage, ToolId,
    ToolKind, ToolRepo, UsageEvent, UsageEventId, UsageMeter,
};
use trellis_kernel::{PlatformCtx, Role, TenantCtx, UserId};
use trellis_postgres::PgStore;
use trellis_tenancy::{LlmProvider, TenantRepo};
use uuid::Uuid;

/// Every tenant table the content migration creates.
const CONTENT_TABLES: [&str; 12] = [
    "tool_configs",
    "agents",
    "agent_tools",
    "agent_versions",
    "conversations",
    "messages",
    "message_files",
    "files",
    "memories",
    "usage_events",
    "usage_days",
    "tenant_quotas",
];

fn tool(name: &str) -> NewTool {
    NewTool {
        id: ToolId::new(),
        kind: ToolKind::Rag,
        name: name.into(),
        description: None,
        config: serde_json::json!({}),
        input_schema: InputSchema::default(),
        allowed_roles: vec![],
        enabled: true,
    }
}

fn config(name: &str, tools: Vec<ToolId>) -> AgentConfig {
    AgentConfig {
        name: name.into(),
        description: None,
        instructions: "Answer from the handbook.".into(),
        provider: LlmProvider::Openai,
        model: "gpt-4o".into(),
        parameters: ModelParameters::new(Some(0.2), None, Some(500)).unwrap(),
        tools,
        knowledge_collections: vec![KnowledgeCollectionId::new()],
        output_format: None,
        icon: None,
        tier: AgentTier::Free,
        published: true,
        allowed_roles: vec![Role::User],
    }
}

async fn agent(store: &PgStore, ctx: &TenantCtx, config: AgentConfig) -> trellis_content::Agent {
    AgentRepo::insert(
        store,
        ctx,
        NewAgent {
            id: AgentId::new(),
            config,
            created_by: None,
        },
    )
    .await
    .unwrap()
}

async fn file(store: &PgStore, ctx: &TenantCtx, owner: UserId, conv: ConversationId) -> FileId {
    let id = FileId::new();
    FileRepo::insert(
        store,
        ctx,
        NewFile {
            id,
            owner_id: owner,
            conversation_id: Some(conv),
            filename: "handbook.pdf".into(),
            mime_type: "application/pdf".into(),
            size_bytes: 10,
            checksum: "cd".repeat(32),
            storage_key: format!("{}/files/{id}", ctx.tenant_id()),
        },
    )
    .await
    .unwrap()
    .id
}

fn usage(key: &str, user: UserId) -> UsageEvent {
    UsageEvent {
        id: UsageEventId::new(),
        idempotency_key: key.into(),
        user_id: Some(user),
        conversation_id: None,
        message_id: None,
        provider: LlmProvider::Openai,
        model: "gpt-4o".into(),
        usage: TokenUsage {
            prompt_tokens: 10,
            completion_tokens: 5,
        },
        estimated: true,
        occurred_at: chrono::Utc::now(),
    }
}

fn budget(limit_tokens: u64, period: BudgetPeriod) -> Option<TokenBudget> {
    Some(TokenBudget {
        limit_tokens,
        period,
    })
}

/// A row in every content table of the tenant, written through the ports.
async fn fill(store: &PgStore, ctx: &TenantCtx, admin: UserId) {
    let t = ToolRepo::insert(store, ctx, tool("Handbook search"))
        .await
        .unwrap();
    let a = agent(store, ctx, config("Helper", vec![t.id])).await;
    AgentRepo::update(store, ctx, a.id, 1, config("Helper 2", vec![t.id]), None)
        .await
        .unwrap();
    let conv = conversation(store, ctx, admin).await;
    let f = file(store, ctx, admin, conv).await;
    MessageRepo::insert(
        store,
        ctx,
        NewMessage::from_user(conv, None, admin, "Read this".into(), vec![f]),
    )
    .await
    .unwrap();
    MemoryRepo::insert(
        store,
        ctx,
        NewMemory {
            id: MemoryId::new(),
            owner_id: admin,
            key: "team".into(),
            value: "Platform".into(),
            category: None,
            source: MemorySource::Manual,
            source_id: None,
        },
    )
    .await
    .unwrap();
    UsageMeter::record(store, ctx, usage("fill", admin))
        .await
        .unwrap();
    store
        .set_quota(
            &PlatformCtx::system(),
            ctx.tenant_id(),
            Quota {
                tenant: budget(1_000, BudgetPeriod::Month),
                per_user: None,
            },
        )
        .await
        .unwrap();
}

#[tokio::test]
async fn every_content_table_shows_a_tenant_only_its_own_rows() {
    let store = store().await;
    let (a, a_ctx, a_admin) = tenant(&store).await;
    let (b, b_ctx, b_admin) = tenant(&store).await;
    fill(&store, &a_ctx, a_admin).await;
    fill(&store, &b_ctx, b_admin).await;

    // As the application role, naming no tenant in any query: what isolation there is
    // comes from row-level security.
    let db = raw(&app_url()).await;
    let txn = begin_in(&db, a.id).await;
    for table in CONTENT_TABLES {
        let rows = query(&txn, &format!("SELECT * FROM {table}")).await;
        let tenants: HashSet<Uuid> = rows
            .iter()
            .map(|r| r.try_get::<Uuid>("", "tenant_id").unwrap())
            .collect();
        assert_eq!(
            tenants,
            HashSet::from([a.id.as_uuid()]),
            "{table} showed tenant A other rows than its own (or none)"
        );
    }
    txn.commit().await.unwrap();

    for table in CONTENT_TABLES {
        let rows = query(&db, &format!("SELECT count(*) AS n FROM {table}")).await;
        let n: i64 = rows[0].try_get("", "n").unwrap();
        assert_eq!(n, 0, "{table} leaked {n} rows without a tenant");
    }
    assert_ne!(a.id, b.id);
}

#[tokio::test]
async fn a_message_cannot_be_written_into_another_tenants_conversation_even_by_raw_sql() {
    let store = store().await;
    let (a, _, _) = tenant(&store).await;
    let (b, b_ctx, b_admin) = tenant(&store).await;
    let conv = conversation(&store, &b_ctx, b_admin).await;
    let db = raw(&app_url()).await;

    // B's id with A's scope: the policy's WITH CHECK refuses the row.
    let txn = begin_in(&db, a.id).await;
    let err = txn
        .execute_raw(stmt_with(
            "INSERT INTO messages (tenant_id, id, conversation_id, role, content)
             VALUES ($1, $2, $3, 'user', 'intrude')",
            vec![
                b.id.as_uuid().into(),
                Uuid::now_v7().into(),
                conv.as_uuid().into(),
            ],
        ))
        .await
        .expect_err("a row of another tenant was written");
    assert!(err.to_string().contains("row-level security"), "{err}");
    txn.rollback().await.unwrap();

    // A's id, B's conversation: the composite foreign key finds no such conversation.
    let txn = begin_in(&db, a.id).await;
    let err = txn
        .execute_raw(stmt_with(
            "INSERT INTO messages (tenant_id, id, conversation_id, role, content)
             VALUES ($1, $2, $3, 'user', 'intrude')",
            vec![
                a.id.as_uuid().into(),
                Uuid::now_v7().into(),
                conv.as_uuid().into(),
            ],
        ))
        .await
        .expect_err("a message was hung into another tenant's conversation");
    assert!(
        err.to_string().contains("messages_conversation_fkey"),
        "{err}"
    );
    txn.rollback().await.unwrap();
}

#[tokio::test]
async fn the_catalogue_is_read_by_tenants_within_their_providers_and_written_only_by_the_platform()
{
    let store = store().await;
    let platform = PlatformCtx::system();
    let suffix = Uuid::now_v7().simple().to_string();
    let claude = LlmModel {
        provider: LlmProvider::Anthropic,
        name: format!("test-claude-{suffix}"),
        context_window: 200_000,
        supports_streaming: true,
        input_price_per_1k: MicroUsd(3_000),
        output_price_per_1k: MicroUsd(15_000),
    };
    let gpt = LlmModel {
        provider: LlmProvider::Openai,
        name: format!("test-gpt-{suffix}"),
        ..claude.clone()
    };
    store
        .put_llm_model(&platform, claude.clone())
        .await
        .unwrap();
    store.put_llm_model(&platform, gpt.clone()).await.unwrap();

    let mut new = new_tenant(&unique_slug("cat"));
    new.config.allowed_llm_providers = vec![LlmProvider::Anthropic];
    let only_anthropic = store.create(&platform, new, first_admin()).await.unwrap();
    let ctx = TenantCtx::system(only_anthropic.id);
    let (_, open_ctx, _) = tenant(&store).await;

    let names =
        |models: Vec<LlmModel>| -> HashSet<String> { models.into_iter().map(|m| m.name).collect() };
    let listed = names(LlmCatalog::list(&store, &ctx).await.unwrap());
    assert!(listed.contains(&claude.name) && !listed.contains(&gpt.name));
    let listed = names(LlmCatalog::list(&store, &open_ctx).await.unwrap());
    assert!(listed.contains(&claude.name) && listed.contains(&gpt.name));
    assert_eq!(
        LlmCatalog::get(&store, &ctx, LlmProvider::Anthropic, &claude.name)
            .await
            .unwrap(),
        claude
    );
    let refused = LlmCatalog::get(&store, &ctx, LlmProvider::Openai, &gpt.name).await;
    assert!(
        matches!(refused, Err(ContentError::ModelUnavailable(_))),
        "{refused:?}"
    );
    let unknown = LlmCatalog::get(&store, &open_ctx, LlmProvider::Openai, "no-such-model").await;
    assert!(matches!(unknown, Err(ContentError::ModelUnavailable(_))));

    // Putting a model again changes its prices.
    let cheaper = LlmModel {
        input_price_per_1k: MicroUsd(1),
        ..claude.clone()
    };
    store
        .put_llm_model(&platform, cheaper.clone())
        .await
        .unwrap();
    assert_eq!(
        LlmCatalog::get(&store, &ctx, LlmProvider::Anthropic, &claude.name)
            .await
            .unwrap(),
        cheaper
    );

    // A tenant-scoped transaction reads the catalogue but cannot change it.
    let db = raw(&app_url()).await;
    let txn = begin_in(&db, only_anthropic.id).await;
    let name = claude.name.clone();
    let seen = txn
        .query_all_raw(stmt_with(
            "SELECT name FROM llm_models WHERE name = $1",
            vec![name.clone().into()],
        ))
        .await
        .unwrap();
    assert_eq!(seen.len(), 1);
    for sql in [
        "UPDATE llm_models SET input_micro_usd_per_1k = 0 WHERE name = $1",
        "DELETE FROM llm_models WHERE name = $1",
    ] {
        let done = txn
            .execute_raw(stmt_with(sql, vec![name.clone().into()]))
            .await
            .unwrap();
        assert_eq!(done.rows_affected(), 0, "{sql}");
    }
    let insert = txn
        .execute_raw(stmt_with(
            "INSERT INTO llm_models (provider, name, context_window) VALUES ('openai', $1, 8)",
            vec![format!("{name}-forged").into()],
        ))
        .await;
    assert!(insert.is_err(), "a tenant added a model");
    txn.rollback().await.unwrap();

    // Clean up the shared catalogue, in platform mode.
    let txn = db.begin().await.unwrap();
    txn.execute_raw(stmt("SELECT set_config('trellis.platform', 'on', true)"))
        .await
        .unwrap();
    let done = txn
        .execute_raw(stmt_with(
            "DELETE FROM llm_models WHERE name IN ($1, $2)",
            vec![claude.name.into(), gpt.name.into()],
        ))
        .await
        .unwrap();
    txn.commit().await.unwrap();
    assert_eq!(done.rows_affected(), 2);
}

#[tokio::test]
async fn a_tenant_reads_its_budgets_but_only_the_platform_sets_them() {
    let store = store().await;
    let (a, a_ctx, _) = tenant(&store).await;
    let (_, b_ctx, _) = tenant(&store).await;
    assert_eq!(
        QuotaSource::quota(&store, &a_ctx).await.unwrap(),
        Quota::default(),
        "no row means unlimited"
    );
    let quota = Quota {
        tenant: budget(1_000_000, BudgetPeriod::Month),
        per_user: budget(20_000, BudgetPeriod::Day),
    };
    let platform = PlatformCtx::system();
    store.set_quota(&platform, a.id, quota).await.unwrap();
    assert_eq!(QuotaSource::quota(&store, &a_ctx).await.unwrap(), quota);
    assert_eq!(
        QuotaSource::quota(&store, &b_ctx).await.unwrap(),
        Quota::default()
    );
    let lifted = Quota {
        tenant: None,
        ..quota
    };
    store.set_quota(&platform, a.id, lifted).await.unwrap();
    assert_eq!(QuotaSource::quota(&store, &a_ctx).await.unwrap(), lifted);

    let db = raw(&app_url()).await;
    let txn = begin_in(&db, a.id).await;
    let raised = txn
        .execute_raw(stmt(
            "UPDATE tenant_quotas SET per_user_limit_tokens = 999999999",
        ))
        .await
        .unwrap();
    assert_eq!(raised.rows_affected(), 0, "a tenant raised its own budget");
    let deleted = txn
        .execute_raw(stmt("DELETE FROM tenant_quotas"))
        .await
        .unwrap();
    assert_eq!(
        deleted.rows_affected(),
        0,
        "a tenant dropped its own budget"
    );
    txn.rollback().await.unwrap();
    assert_eq!(QuotaSource::quota(&store, &a_ctx).await.unwrap(), lifted);
}

#[tokio::test]
async fn a_tool_in_use_cannot_be_deleted_and_agents_name_only_their_tenants_tools() {
    let store = store().await;
    let (_, a, _) = tenant(&store).await;
    let (_, b, _) = tenant(&store).await;
    let used = ToolRepo::insert(&store, &a, tool("Search")).await.unwrap();
    let helper = agent(&store, &a, config("Helper", vec![used.id])).await;
    assert_eq!(helper.config.tools, [used.id]);

    let err = ToolRepo::delete(&store, &a, used.id).await.unwrap_err();
    assert!(matches!(err, ContentError::Conflict(_)), "{err:?}");
    assert!(ToolRepo::get(&store, &a, used.id).await.is_ok());

    let foreign = AgentRepo::insert(
        &store,
        &b,
        NewAgent {
            id: AgentId::new(),
            config: config("Thief", vec![used.id]),
            created_by: None,
        },
    )
    .await;
    assert!(
        matches!(foreign, Err(ContentError::NotFound("tool"))),
        "{foreign:?}"
    );
    assert!(
        AgentRepo::find_by_name(&store, &b, "Thief")
            .await
            .unwrap()
            .is_none(),
        "the failed insert left an agent behind"
    );

    // Once no agent lists it, it goes; the agent keeps its earlier versions.
    let without = AgentRepo::update(&store, &a, helper.id, 1, config("Helper", vec![]), None)
        .await
        .unwrap();
    assert!(without.config.tools.is_empty());
    ToolRepo::delete(&store, &a, used.id).await.unwrap();
    let versions = AgentRepo::versions(&store, &a, helper.id).await.unwrap();
    assert_eq!(versions[0].config.tools, [used.id]);
}

#[tokio::test]
async fn of_two_updates_from_the_same_version_exactly_one_wins() {
    let store = store().await;
    let (_, ctx, _) = tenant(&store).await;
    let a = agent(&store, &ctx, config("Racer", vec![])).await;
    let (s1, s2) = (store.clone(), store.clone());
    let (c1, c2) = (ctx.clone(), ctx.clone());
    let (r1, r2) = tokio::join!(
        async move { AgentRepo::update(&s1, &c1, a.id, 1, config("One", vec![]), None).await },
        async move { AgentRepo::update(&s2, &c2, a.id, 1, config("Two", vec![]), None).await },
    );
    let results = [r1, r2];
    let won: Vec<_> = results.iter().filter_map(|r| r.as_ref().ok()).collect();
    assert_eq!(won.len(), 1, "{results:?}");
    assert!(
        results
            .iter()
            .any(|r| matches!(r, Err(ContentError::Conflict(_)))),
        "{results:?}"
    );
    let current = AgentRepo::get(&store, &ctx, a.id).await.unwrap();
    assert_eq!(current.version, 2);
    assert_eq!(current.config.name, won[0].config.name);
    let versions = AgentRepo::versions(&store, &ctx, a.id).await.unwrap();
    assert_eq!(versions.len(), 2);
}

#[tokio::test]
async fn racing_records_of_one_idempotency_key_store_one_event() {
    let store = store().await;
    let (_, ctx, admin) = tenant(&store).await;
    let mut tasks = Vec::new();
    for _ in 0..6 {
        let (store, ctx) = (store.clone(), ctx.clone());
        tasks.push(tokio::spawn(async move {
            UsageMeter::record(&store, &ctx, usage("answer:race", admin)).await
        }));
    }
    let mut new = 0;
    for t in tasks {
        if t.await.unwrap().unwrap() == Recorded::New {
            new += 1;
        }
    }
    assert_eq!(new, 1);
    let now = chrono::Utc::now();
    let total = UsageMeter::total_tokens(
        &store,
        &ctx,
        trellis_content::UsageScope::Tenant,
        now - chrono::Duration::hours(1),
        now + chrono::Duration::hours(1),
    )
    .await
    .unwrap();
    assert_eq!(total, 15);
}

#[tokio::test]
async fn attached_files_round_trip_and_outlive_their_conversation() {
    let store = store().await;
    let (_, ctx, admin) = tenant(&store).await;
    let conv = conversation(&store, &ctx, admin).await;
    let (f1, f2) = (
        file(&store, &ctx, admin, conv).await,
        file(&store, &ctx, admin, conv).await,
    );
    let q = MessageRepo::insert(
        &store,
        &ctx,
        NewMessage::from_user(conv, None, admin, "See both".into(), vec![f2, f1, f2]),
    )
    .await
    .unwrap();
    assert_eq!(q.files, [f2, f1, f2]);
    assert_eq!(
        MessageRepo::get(&store, &ctx, q.id).await.unwrap().files,
        [f2, f1, f2],
        "in order, as written"
    );

    let missing = MessageRepo::insert(
        &store,
        &ctx,
        NewMessage::from_user(conv, None, admin, "ghost".into(), vec![FileId::new()]),
    )
    .await;
    assert!(
        matches!(missing, Err(ContentError::NotFound("file"))),
        "{missing:?}"
    );

    // A deleted file disappears from the messages it was attached to.
    FileRepo::delete(&store, &ctx, f2).await.unwrap();
    assert_eq!(
        MessageRepo::get(&store, &ctx, q.id).await.unwrap().files,
        [f1]
    );

    // Deleting the conversation deletes its messages but only detaches its files.
    ConversationRepo::delete(&store, &ctx, conv).await.unwrap();
    let kept = FileRepo::get(&store, &ctx, f1).await.unwrap();
    assert_eq!(kept.conversation_id, None);
}

#[tokio::test]
async fn the_catalogue_table_has_forced_row_security_with_policies() {
    let db = raw(&owner_url()).await;
    let rows = query(
        &db,
        "SELECT c.relrowsecurity AND c.relforcerowsecurity AS forced,
                (SELECT count(*) FROM pg_policy p WHERE p.polrelid = c.oid) AS policies
           FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
          WHERE n.nspname = 'public' AND c.relname = 'llm_models'",
    )
    .await;
    assert_eq!(rows.len(), 1);
    assert!(rows[0].try_get::<bool>("", "forced").unwrap());
    assert_eq!(rows[0].try_get::<i64>("", "policies").unwrap(), 2);
}

#[tokio::test]
async fn questions_waiting_to_commit_never_take_the_connections_their_reads_need() {
    // A prepared message keeps its connection open until committed, while the answer
    // it belongs to reads through other connections. With two connections, a second
    // prepared message must wait for the first rather than take the last connection:
    // otherwise the first answer's reads could never run, and neither would commit.
    super::support::migrated().await;
    let store = PgStore::connect(&app_url(), 2).await.unwrap();
    let (_, ctx, admin) = tenant(&store).await;
    let conv = conversation(&store, &ctx, admin).await;
    let ask = |text: &str| NewMessage::from_user(conv, None, admin, text.into(), vec![]);
    let first = store.prepare_insert(&ctx, ask("first")).await.unwrap();
    let mut second = tokio::spawn({
        let (store, ctx, msg) = (store.clone(), ctx.clone(), ask("second"));
        async move { store.prepare_insert(&ctx, msg).await.unwrap() }
    });
    // Give the second every chance to take the last connection (it must not).
    let early = tokio::time::timeout(std::time::Duration::from_millis(300), &mut second).await;
    assert!(
        early.is_err(),
        "the second question did not wait for the first"
    );
    // The first answer's reads still get a connection.
    let seen = MessageRepo::for_conversation(&store, &ctx, conv)
        .await
        .unwrap();
    assert!(seen.is_empty(), "nothing is committed yet");
    first.commit().await.unwrap();
    second.await.unwrap().commit().await.unwrap();
    let seen = MessageRepo::for_conversation(&store, &ctx, conv)
        .await
        .unwrap();
    assert_eq!(seen.len(), 2);
}

#[tokio::test]
async fn with_a_pool_of_one_a_prepared_question_still_lets_its_answer_read() {
    // One connection cannot be kept in a transaction while the answer reads: the
    // question is then written whole when it is committed.
    super::support::migrated().await;
    let store = PgStore::connect(&app_url(), 1).await.unwrap();
    let (_, ctx, admin) = tenant(&store).await;
    let conv = conversation(&store, &ctx, admin).await;
    let ask = NewMessage::from_user(conv, None, admin, "alone".into(), vec![]);
    let pending = store.prepare_insert(&ctx, ask.clone()).await.unwrap();
    let seen = MessageRepo::for_conversation(&store, &ctx, conv)
        .await
        .unwrap();
    assert!(seen.is_empty(), "nothing is committed yet");
    assert_eq!(pending.commit().await.unwrap().id, ask.id);
    let seen = MessageRepo::for_conversation(&store, &ctx, conv)
        .await
        .unwrap();
    assert_eq!(seen.len(), 1);
}
