//! `PgCachedUsers`: the identity conformance suite through the cache (every change made
//! through it is read back at once), and what only a cache can get wrong: a change made
//! elsewhere (another instance, an operator) must reach it, and tenants stay apart.

use super::support::{eventually, store, until_listening};
use trellis_conformance::fixtures::tenant;
use trellis_conformance::{Ports, conformance_tests};
use trellis_identity::{IdentityError, UserPatch, UserRepo};
use trellis_postgres::{PgCachedUsers, PgStore};

async fn cached_ports() -> Ports {
    let store = store().await;
    let mut ports = Ports::from_one(store.clone());
    ports.users = std::sync::Arc::new(listening(store).await);
    ports
}

conformance_tests!(cached_ports());

/// A cache whose listener is connected, so reads are kept from now on.
async fn listening(store: PgStore) -> PgCachedUsers {
    let cache = PgCachedUsers::new(store, 100);
    until_listening(|| cache.is_listening()).await;
    cache
}

fn renamed(name: &str) -> UserPatch {
    UserPatch {
        name: Some(name.into()),
        ..UserPatch::default()
    }
}

#[tokio::test]
async fn a_user_changed_by_another_instance_is_read_fresh_once_the_notice_arrives() {
    let elsewhere = store().await;
    let ports = Ports::from_one(elsewhere.clone());
    let (_, ctx, admin) = tenant(&ports).await;
    let cache = listening(store().await).await;
    let before = cache.get(&ctx, admin).await.unwrap();
    assert_eq!(cache.get(&ctx, admin).await.unwrap(), before, "kept");

    elsewhere
        .update(&ctx, admin, renamed("Renamed Elsewhere"))
        .await
        .unwrap();
    let after = eventually(
        || cache.get(&ctx, admin),
        |r| r.as_ref().is_ok_and(|u| u.name == "Renamed Elsewhere"),
    )
    .await
    .unwrap();
    assert_eq!(after.name, "Renamed Elsewhere");
    assert_eq!(after, elsewhere.get(&ctx, admin).await.unwrap());
}

#[tokio::test]
async fn a_user_deleted_elsewhere_is_no_longer_found_through_the_cache() {
    let elsewhere = store().await;
    let ports = Ports::from_one(elsewhere.clone());
    let (_, ctx, _) = tenant(&ports).await;
    let u = trellis_conformance::fixtures::user(
        &ports,
        &ctx,
        "leaving@example.com",
        trellis_kernel::Role::User,
    )
    .await;
    let cache = listening(store().await).await;
    cache.get(&ctx, u.id).await.unwrap();

    elsewhere
        .soft_delete(&ctx, u.id, chrono::Utc::now())
        .await
        .unwrap();
    let last = eventually(
        || cache.get(&ctx, u.id),
        |r| matches!(r, Err(IdentityError::NotFound(_))),
    )
    .await;
    assert!(matches!(last, Err(IdentityError::NotFound(_))), "{last:?}");
}

#[tokio::test]
async fn a_change_through_the_cache_is_read_back_at_once() {
    let store = store().await;
    let ports = Ports::from_one(store.clone());
    let (_, ctx, admin) = tenant(&ports).await;
    let cache = listening(store).await;
    cache.get(&ctx, admin).await.unwrap();
    cache
        .update(&ctx, admin, renamed("Renamed Here"))
        .await
        .unwrap();
    assert_eq!(cache.get(&ctx, admin).await.unwrap().name, "Renamed Here");
}

#[tokio::test]
async fn a_tenant_never_reads_another_tenants_cached_user() {
    let store = store().await;
    let ports = Ports::from_one(store.clone());
    let (_, a, a_admin) = tenant(&ports).await;
    let (_, b, _) = tenant(&ports).await;
    let cache = listening(store).await;
    cache.get(&a, a_admin).await.unwrap();
    let other = cache.get(&b, a_admin).await;
    assert!(
        matches!(other, Err(IdentityError::NotFound(_))),
        "{other:?}"
    );
}

#[tokio::test]
async fn the_listener_does_not_take_one_of_the_stores_connections() {
    // With a pool of one, a listener holding a pooled connection would leave none for
    // the store's own work (which would then time out).
    super::support::migrated().await;
    let store = PgStore::connect(&super::support::app_url(), 1)
        .await
        .unwrap();
    let (_, ctx, admin) = tenant(&Ports::from_one(store.clone())).await;
    let cache = listening(store.clone()).await;
    assert_eq!(cache.get(&ctx, admin).await.unwrap().id, admin);
    assert!(store.count(&ctx).await.unwrap() >= 1);
}
