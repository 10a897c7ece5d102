//! `PgCachedCollections`: the RAG conformance suite with collections and model changes
//! through the cache (every change made through it is read back at once), and what
//! only a cache can get wrong: a change made elsewhere (another instance, the worker of
//! another process, an operator) must reach it, and tenants stay apart.

use super::support::{eventually, store, until_listening};
use std::sync::Arc;
use trellis_conformance::fixtures::tenant;
use trellis_conformance::rag::RagPorts;
use trellis_conformance::{Ports, rag_conformance_tests};
use trellis_kernel::TenantCtx;
use trellis_postgres::{PgCachedCollections, PgStore};
use trellis_rag::index::CollectionId;
use trellis_rag::{
    ChunkingSettings, Collection, CollectionPatch, CollectionRepo, EmbeddingModel, NewCollection,
    RagError, SourceType,
};

async fn ports() -> Ports {
    Ports::from_one(store().await)
}

async fn cached_rag() -> RagPorts {
    let mut rag = super::rag_conformance::rag().await;
    let cached = Arc::new(listening(store().await).await);
    rag.collections = cached.clone();
    rag.model_changes = cached;
    rag
}

rag_conformance_tests!(ports(), cached_rag());

/// A cache whose listener is connected, so reads are kept from now on.
async fn listening(store: PgStore) -> PgCachedCollections {
    let cache = PgCachedCollections::new(store, 100);
    until_listening(|| cache.is_listening()).await;
    cache
}

async fn new_collection(store: &PgStore, ctx: &TenantCtx, name: &str) -> Collection {
    CollectionRepo::insert(
        store,
        ctx,
        NewCollection {
            id: CollectionId::new(),
            name: name.into(),
            description: None,
            agent_id: None,
            source_type: SourceType::Upload,
            chunking: ChunkingSettings::default(),
            embedding_model: EmbeddingModel::new("test/8", 8).unwrap(),
            created_by: None,
        },
    )
    .await
    .unwrap()
}

#[tokio::test]
async fn a_collection_changed_by_another_instance_is_read_fresh_once_the_notice_arrives() {
    let elsewhere = store().await;
    let (_, ctx, _) = tenant(&Ports::from_one(elsewhere.clone())).await;
    let c = new_collection(&elsewhere, &ctx, "Handbook").await;
    let cache = listening(store().await).await;
    let before = cache.get(&ctx, c.id).await.unwrap();
    assert_eq!(cache.get(&ctx, c.id).await.unwrap(), before, "kept");

    let patch = CollectionPatch {
        name: Some("Handbook 2".into()),
        ..CollectionPatch::default()
    };
    CollectionRepo::update(&elsewhere, &ctx, c.id, patch)
        .await
        .unwrap();
    let after = eventually(
        || cache.get(&ctx, c.id),
        |r| r.as_ref().is_ok_and(|c| c.name == "Handbook 2"),
    )
    .await
    .unwrap();
    assert_eq!(
        after,
        CollectionRepo::get(&elsewhere, &ctx, c.id).await.unwrap()
    );

    CollectionRepo::delete(&elsewhere, &ctx, c.id)
        .await
        .unwrap();
    let gone = eventually(|| cache.get(&ctx, c.id), |r| r.is_err()).await;
    assert!(matches!(gone, Err(RagError::NotFound(_))), "{gone:?}");
}

#[tokio::test]
async fn a_collection_kept_for_one_tenant_is_not_found_by_another() {
    let cache = listening(store().await).await;
    let plain = store().await;
    let ports = Ports::from_one(plain.clone());
    let (_, a, _) = tenant(&ports).await;
    let (_, b, _) = tenant(&ports).await;
    let c = new_collection(&plain, &a, "A's").await;
    assert_eq!(cache.get(&a, c.id).await.unwrap().id, c.id);
    assert!(matches!(
        cache.get(&b, c.id).await,
        Err(RagError::NotFound(_))
    ));
}
