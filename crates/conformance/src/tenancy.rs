//! Conformance cases for `TenantRepo`.

use crate::Ports;
use crate::fixtures::{every_page, first_admin, new_tenant, tenant, unique_slug};
use std::collections::HashSet;
use trellis_kernel::{HexColor, HttpUrl, PlatformCtx, Role};
use trellis_tenancy::{
    Branding, Hostname, LlmConfig, LlmProvider, SealedSecret, TenancyError, TenantConfig,
    TenantPatch, TenantStatus, WidgetConfig, WidgetPosition,
};

fn platform() -> PlatformCtx {
    PlatformCtx::system()
}

pub async fn a_created_tenant_reads_back_with_its_first_admin(p: &Ports) {
    let (t, ctx, admin) = tenant(p).await;
    let got = p.tenants.get(&platform(), t.id).await.unwrap();
    assert_eq!(got.slug, t.slug);
    assert_eq!(got.status, TenantStatus::Active);
    let admin = p.users.get(&ctx, admin).await.unwrap();
    assert_eq!(admin.role, Role::TenantAdmin);
    assert_eq!(admin.tenant_id, t.id);
}

pub async fn a_taken_slug_is_a_conflict_even_after_deletion(p: &Ports) {
    let slug = unique_slug("dup");
    let t = p
        .tenants
        .create(&platform(), new_tenant(&slug), first_admin())
        .await
        .unwrap();
    let again = p
        .tenants
        .create(&platform(), new_tenant(&slug), first_admin())
        .await;
    assert!(matches!(again, Err(TenancyError::Conflict(_))), "{again:?}");
    p.tenants.soft_delete(&platform(), t.id).await.unwrap();
    let after_delete = p
        .tenants
        .create(&platform(), new_tenant(&slug), first_admin())
        .await;
    assert!(
        matches!(after_delete, Err(TenancyError::Conflict(_))),
        "{after_delete:?}"
    );
}

pub async fn listing_tenants_pages_without_repeats(p: &Ports) {
    let mut mine = HashSet::new();
    for _ in 0..3 {
        mine.insert(tenant(p).await.0.id);
    }
    let mut seen = HashSet::new();
    let pages = every_page(2, async |page| {
        p.tenants.list(&platform(), page).await.unwrap()
    })
    .await;
    for batch in &pages {
        assert!(batch.items.len() <= 2);
        for t in &batch.items {
            assert!(seen.insert(t.id), "tenant {} listed twice", t.id);
        }
    }
    assert!(mine.is_subset(&seen));
}

pub async fn a_suspended_tenant_still_resolves_but_says_so(p: &Ports) {
    let (t, _, _) = tenant(p).await;
    let updated = p
        .tenants
        .set_status(&platform(), t.id, TenantStatus::Suspended)
        .await
        .unwrap();
    assert_eq!(updated.status, TenantStatus::Suspended);
    let r = p
        .tenants
        .resolve_slug(&platform(), &t.slug)
        .await
        .unwrap()
        .unwrap();
    assert_eq!((r.id, r.status), (t.id, TenantStatus::Suspended));
}

pub async fn a_deleted_tenant_is_gone_and_its_slug_no_longer_resolves(p: &Ports) {
    let (t, ctx, _) = tenant(p).await;
    p.tenants.soft_delete(&platform(), t.id).await.unwrap();
    assert!(matches!(
        p.tenants.get(&platform(), t.id).await,
        Err(TenancyError::NotFound)
    ));
    assert!(
        p.tenants
            .resolve_slug(&platform(), &t.slug)
            .await
            .unwrap()
            .is_none()
    );
    assert!(matches!(
        p.tenants.current(&ctx).await,
        Err(TenancyError::NotFound)
    ));
    assert!(matches!(
        p.tenants.soft_delete(&platform(), t.id).await,
        Err(TenancyError::NotFound)
    ));
}

pub async fn settings_updates_persist_and_touch_only_the_own_tenant(p: &Ports) {
    let (a, a_ctx, _) = tenant(p).await;
    let (b, b_ctx, _) = tenant(p).await;
    let branding = Branding::new(
        Some(HttpUrl::parse("https://cdn.example.com/logo.png").unwrap()),
        Some(HexColor::parse("#112233").unwrap()),
        None,
        Some("Inter"),
    )
    .unwrap();
    let config = TenantConfig {
        allowed_llm_providers: vec![LlmProvider::Openai, LlmProvider::Anthropic],
        default_model: Some("gpt-4o".into()),
        max_users: Some(10),
    };
    let patch = TenantPatch {
        name: Some("Renamed".into()),
        custom_domain: None,
        branding: Some(branding.clone()),
        config: Some(config.clone()),
    };
    let updated = p.tenants.update(&a_ctx, patch).await.unwrap();
    assert_eq!(updated.name, "Renamed");
    let again = p.tenants.current(&a_ctx).await.unwrap();
    assert_eq!((again.branding, again.config), (branding, config));
    let other = p.tenants.current(&b_ctx).await.unwrap();
    assert_eq!(other.name, b.name);
    assert_ne!(a.id, b.id);
}

pub async fn a_custom_domain_can_belong_to_one_tenant_only(p: &Ports) {
    let (_, a_ctx, _) = tenant(p).await;
    let (_, b_ctx, _) = tenant(p).await;
    let domain = Hostname::parse(&format!("{}.example.com", unique_slug("d"))).unwrap();
    let patch = TenantPatch {
        custom_domain: Some(Some(domain.clone())),
        ..TenantPatch::default()
    };
    let a = p.tenants.update(&a_ctx, patch.clone()).await.unwrap();
    assert_eq!(a.custom_domain, Some(domain));
    let b = p.tenants.update(&b_ctx, patch).await;
    assert!(matches!(b, Err(TenancyError::Conflict(_))), "{b:?}");
}

pub async fn widget_and_llm_configs_round_trip_per_tenant(p: &Ports) {
    let (_, a_ctx, _) = tenant(p).await;
    let (_, b_ctx, _) = tenant(p).await;
    assert!(p.tenants.widget(&a_ctx).await.unwrap().is_none());
    assert!(p.tenants.llm(&a_ctx).await.unwrap().is_none());
    let widget = WidgetConfig::new(
        HexColor::parse("#abcdef").unwrap(),
        "Welcome!",
        WidgetPosition::BottomLeft,
        true,
        &["https://shop.example.com".to_owned()],
    )
    .unwrap();
    p.tenants.put_widget(&a_ctx, widget.clone()).await.unwrap();
    assert_eq!(p.tenants.widget(&a_ctx).await.unwrap(), Some(widget));
    let llm = LlmConfig {
        provider: LlmProvider::Anthropic,
        model: "claude-3-5-sonnet".into(),
        temperature: 0.5,
        max_tokens: 2048,
        api_key: Some(SealedSecret {
            key_id: "k1".into(),
            ciphertext: vec![1, 2, 3, 0, 255],
        }),
        api_key_hint: Some("sk-…abcd".into()),
        base_url: Some(
            HttpUrl::parse("https://acme.openai.azure.com/openai/deployments/gpt-4o").unwrap(),
        ),
        updated_at: chrono::Utc::now(),
    };
    let saved = p.tenants.put_llm(&a_ctx, llm.clone()).await.unwrap();
    let got = p.tenants.llm(&a_ctx).await.unwrap().unwrap();
    assert_eq!(
        (got.provider, &got.model, got.max_tokens),
        (llm.provider, &llm.model, llm.max_tokens)
    );
    assert!((got.temperature - 0.5).abs() < 1e-6);
    assert_eq!(got.api_key, llm.api_key);
    assert_eq!(got.api_key_hint, saved.api_key_hint);
    assert_eq!(got.base_url, llm.base_url);
    // Overwriting replaces, and the other tenant saw nothing.
    let cleared = LlmConfig {
        api_key: None,
        api_key_hint: None,
        base_url: None,
        ..llm
    };
    p.tenants.put_llm(&a_ctx, cleared).await.unwrap();
    let got = p.tenants.llm(&a_ctx).await.unwrap().unwrap();
    assert_eq!((got.api_key, got.base_url), (None, None));
    assert!(p.tenants.widget(&b_ctx).await.unwrap().is_none());
    assert!(p.tenants.llm(&b_ctx).await.unwrap().is_none());
}
