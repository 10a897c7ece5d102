//! `PgCachedTenants`: the tenancy and identity conformance suite with tenants through
//! the cache (every change made through it is read back at once), and what only a
//! cache can get wrong: an LLM configuration or a catalogue view changed elsewhere
//! (another instance, the platform, an operator) must reach it, and tenants stay apart.

use super::support::{eventually, owner_url, raw, store, until_listening};
use sea_orm::ConnectionTrait as _;
use trellis_conformance::content::ContentPorts;
use trellis_conformance::content_conformance_tests;
use trellis_conformance::fixtures::tenant;
use trellis_conformance::{Ports, conformance_tests};
use trellis_content::{
    BudgetPeriod, ContentError, LlmCatalog, LlmModel, MicroUsd, Quota, QuotaAdmin as _,
    QuotaSource, TokenBudget,
};
use trellis_kernel::PlatformCtx;
use trellis_postgres::{PgCachedTenants, PgStore};
use trellis_tenancy::{LlmConfig, LlmProvider, TenancyError, TenantPatch, TenantRepo};

async fn cached_ports() -> Ports {
    let store = store().await;
    let mut ports = Ports::from_one(store.clone());
    ports.tenants = std::sync::Arc::new(listening(store).await);
    ports
}

conformance_tests!(cached_ports());

/// A cache whose listeners are connected, so reads are kept from now on.
async fn listening(store: PgStore) -> PgCachedTenants {
    let cache = PgCachedTenants::new(store, 100);
    until_listening(|| cache.is_listening()).await;
    cache
}

fn config(model: &str) -> LlmConfig {
    LlmConfig {
        provider: LlmProvider::Openai,
        model: model.into(),
        temperature: 0.2,
        max_tokens: 512,
        api_key: None,
        api_key_hint: None,
        base_url: None,
        updated_at: chrono::Utc::now(),
    }
}

fn model_of(r: &Result<Option<LlmConfig>, TenancyError>) -> Option<String> {
    r.as_ref()
        .ok()
        .and_then(|c| c.as_ref().map(|c| c.model.clone()))
}

#[tokio::test]
async fn an_llm_configuration_set_changed_or_removed_elsewhere_is_read_fresh_once_the_notice_arrives()
 {
    let elsewhere = store().await;
    let (t, ctx, _) = tenant(&Ports::from_one(elsewhere.clone())).await;
    let cache = listening(store().await).await;
    assert!(cache.llm(&ctx).await.unwrap().is_none(), "none yet, kept");

    elsewhere.put_llm(&ctx, config("gpt-4o")).await.unwrap();
    let set = eventually(
        || cache.llm(&ctx),
        |r| model_of(r).as_deref() == Some("gpt-4o"),
    )
    .await;
    assert_eq!(model_of(&set).as_deref(), Some("gpt-4o"));

    elsewhere
        .put_llm(&ctx, config("gpt-4o-mini"))
        .await
        .unwrap();
    let changed = eventually(
        || cache.llm(&ctx),
        |r| model_of(r).as_deref() == Some("gpt-4o-mini"),
    )
    .await;
    assert_eq!(model_of(&changed).as_deref(), Some("gpt-4o-mini"));

    // An operator removes it by hand.
    let owner = raw(&owner_url()).await;
    owner
        .execute_unprepared(&format!(
            "SELECT set_config('trellis.tenant_id', '{}', false); \
             DELETE FROM tenant_llm_configs WHERE tenant_id = '{}'",
            t.id, t.id
        ))
        .await
        .unwrap();
    let removed = eventually(|| cache.llm(&ctx), |r| matches!(r, Ok(None))).await;
    assert!(matches!(removed, Ok(None)), "{removed:?}");
}

#[tokio::test]
async fn an_llm_configuration_kept_for_one_tenant_is_not_read_by_another() {
    let cache = listening(store().await).await;
    let ports = Ports::from_one(store().await);
    let (_, a, _) = tenant(&ports).await;
    let (_, b, _) = tenant(&ports).await;
    cache.put_llm(&a, config("gpt-4o")).await.unwrap();
    assert_eq!(
        cache.llm(&a).await.unwrap().map(|c| c.model).as_deref(),
        Some("gpt-4o")
    );
    assert!(cache.llm(&b).await.unwrap().is_none());
}

#[tokio::test]
async fn the_catalogue_a_tenant_sees_follows_changes_made_elsewhere() {
    let elsewhere = store().await;
    let (t, ctx, _) = tenant(&Ports::from_one(elsewhere.clone())).await;
    let platform = PlatformCtx::system();
    let model = LlmModel {
        provider: LlmProvider::Openai,
        name: format!("cached-{}", uuid::Uuid::now_v7().simple()),
        context_window: 128_000,
        supports_streaming: true,
        input_price_per_1k: MicroUsd(2_500),
        output_price_per_1k: MicroUsd(10_000),
    };
    elsewhere
        .put_llm_model(&platform, model.clone())
        .await
        .unwrap();
    let cache = listening(store().await).await;
    assert_eq!(
        LlmCatalog::get(&cache, &ctx, LlmProvider::Openai, &model.name)
            .await
            .unwrap(),
        model,
        "kept"
    );

    // The platform reprices it: every tenant's view is dropped.
    let cheaper = LlmModel {
        input_price_per_1k: MicroUsd(1),
        ..model.clone()
    };
    elsewhere
        .put_llm_model(&platform, cheaper.clone())
        .await
        .unwrap();
    let seen = eventually(
        || LlmCatalog::get(&cache, &ctx, LlmProvider::Openai, &model.name),
        |r| {
            r.as_ref()
                .is_ok_and(|m| m.input_price_per_1k == MicroUsd(1))
        },
    )
    .await;
    assert_eq!(seen.unwrap(), cheaper);

    // The tenant stops allowing OpenAI: its view is dropped.
    let mut config = t.config.clone();
    config.allowed_llm_providers = vec![LlmProvider::Anthropic];
    TenantRepo::update(
        &elsewhere,
        &ctx,
        TenantPatch {
            config: Some(config),
            ..TenantPatch::default()
        },
    )
    .await
    .unwrap();
    let refused = eventually(
        || LlmCatalog::get(&cache, &ctx, LlmProvider::Openai, &model.name),
        |r| r.is_err(),
    )
    .await;
    assert!(
        matches!(refused, Err(ContentError::ModelUnavailable(_))),
        "{refused:?}"
    );
}

async fn plain_ports() -> Ports {
    Ports::from_one(store().await)
}

/// The content ports with budgets through the cache.
async fn cached_content() -> ContentPorts {
    let store = store().await;
    let cached = std::sync::Arc::new(listening(store.clone()).await);
    let mut content = ContentPorts::from_one(store);
    content.quotas = cached.clone();
    content.quota_admin = cached;
    content
}

content_conformance_tests!(plain_ports(), cached_content());

#[tokio::test]
async fn budgets_replaced_elsewhere_are_read_fresh_once_the_notice_arrives() {
    let elsewhere = store().await;
    let (t, ctx, _) = tenant(&Ports::from_one(elsewhere.clone())).await;
    let cache = listening(store().await).await;
    assert_eq!(
        QuotaSource::quota(&cache, &ctx).await.unwrap(),
        Quota::default(),
        "kept"
    );

    let budget = |limit_tokens| Quota {
        tenant: Some(TokenBudget {
            limit_tokens,
            period: BudgetPeriod::Month,
        }),
        per_user: None,
    };
    let platform = PlatformCtx::system();
    elsewhere
        .replace_quota(&platform, t.id, budget(1_000))
        .await
        .unwrap();
    let seen = eventually(
        || QuotaSource::quota(&cache, &ctx),
        |r| r.as_ref().is_ok_and(|q| *q == budget(1_000)),
    )
    .await;
    assert_eq!(seen.unwrap(), budget(1_000));

    // Through the cache, the change is read back at once.
    cache
        .replace_quota(&platform, t.id, budget(5))
        .await
        .unwrap();
    assert_eq!(QuotaSource::quota(&cache, &ctx).await.unwrap(), budget(5));
}
