//! `CollectionRepo` and `ModelChangeRepo` on Postgres with the collections `get` has
//! read kept in process. Every grounded answer reads its agent's collections before it
//! can embed the question; from memory, that read leaves the path of the answer.
//!
//! A trigger (migration 000010) sends `tenant_id/id` on `trellis_collection_changed`
//! whenever a collection row is updated or deleted, including by an embedding-model
//! switch; [`super::notice_cache`] explains how that, local forgetting, the epoch guard
//! and a maximum age keep an entry from being stale for long. Both ports are served
//! here so that every change this process makes to a collection — a rename, or a step
//! of a model change — forgets the entry at once.

use super::notice_cache::Watched;
use crate::store::PgStore;
use async_trait::async_trait;
use trellis_kernel::{Page, PageRequest, TenantCtx};
use trellis_rag::index::{ChunkId, CollectionId, Embedding};
use trellis_rag::{
    Collection, CollectionPatch, CollectionRepo, EmbeddingModel, ModelChangeProgress,
    ModelChangeRepo, NewCollection, Result,
};

/// The channel migration 000010's trigger notifies.
const CHANNEL: &str = "trellis_collection_changed";

/// Collections kept by default (under a kilobyte each).
pub const DEFAULT_MAX_CACHED_COLLECTIONS: usize = 10_000;

/// [`PgStore`]'s collections with `get` served from memory while change notices arrive.
#[derive(Clone)]
pub struct PgCachedCollections {
    store: PgStore,
    cache: Watched<CollectionId, Collection>,
}

impl PgCachedCollections {
    /// Starts the listener (on its own connection, outside the pool) on the current
    /// Tokio runtime. Until it listens, every read goes to Postgres.
    #[must_use]
    pub fn new(store: PgStore, max_entries: usize) -> Self {
        let cache = Watched::start(&store, CHANNEL, max_entries, CollectionId::from_uuid);
        Self { store, cache }
    }

    /// Whether reads may currently be answered from memory.
    #[must_use]
    pub fn is_listening(&self) -> bool {
        self.cache.is_listening()
    }
}

#[async_trait]
impl CollectionRepo for PgCachedCollections {
    async fn insert(&self, ctx: &TenantCtx, new: NewCollection) -> Result<Collection> {
        CollectionRepo::insert(&self.store, ctx, new).await
    }

    async fn get(&self, ctx: &TenantCtx, id: CollectionId) -> Result<Collection> {
        self.cache
            .get_or_read(
                (ctx.tenant_id(), id),
                CollectionRepo::get(&self.store, ctx, id),
            )
            .await
    }

    async fn list(&self, ctx: &TenantCtx, page: PageRequest) -> Result<Page<Collection>> {
        CollectionRepo::list(&self.store, ctx, page).await
    }

    async fn update(
        &self,
        ctx: &TenantCtx,
        id: CollectionId,
        patch: CollectionPatch,
    ) -> Result<Collection> {
        self.cache
            .changing(
                ctx.tenant_id(),
                id,
                CollectionRepo::update(&self.store, ctx, id, patch),
            )
            .await
    }

    async fn set_embedding_model(
        &self,
        ctx: &TenantCtx,
        id: CollectionId,
        model: EmbeddingModel,
    ) -> Result<()> {
        self.cache
            .changing(
                ctx.tenant_id(),
                id,
                self.store.set_embedding_model(ctx, id, model),
            )
            .await
    }

    async fn delete(&self, ctx: &TenantCtx, id: CollectionId) -> Result<()> {
        self.cache
            .changing(
                ctx.tenant_id(),
                id,
                CollectionRepo::delete(&self.store, ctx, id),
            )
            .await
    }
}

#[async_trait]
impl ModelChangeRepo for PgCachedCollections {
    async fn begin(&self, ctx: &TenantCtx, id: CollectionId, target: EmbeddingModel) -> Result<()> {
        self.cache
            .changing(ctx.tenant_id(), id, self.store.begin(ctx, id, target))
            .await
    }

    async fn pending(
        &self,
        ctx: &TenantCtx,
        id: CollectionId,
        limit: usize,
    ) -> Result<Vec<(ChunkId, String)>> {
        self.store.pending(ctx, id, limit).await
    }

    async fn store(
        &self,
        ctx: &TenantCtx,
        id: CollectionId,
        vectors: Vec<(ChunkId, Embedding)>,
    ) -> Result<()> {
        self.cache
            .changing(
                ctx.tenant_id(),
                id,
                ModelChangeRepo::store(&self.store, ctx, id, vectors),
            )
            .await
    }

    async fn progress(&self, ctx: &TenantCtx, id: CollectionId) -> Result<ModelChangeProgress> {
        self.store.progress(ctx, id).await
    }

    async fn switch(&self, ctx: &TenantCtx, id: CollectionId) -> Result<bool> {
        self.cache
            .changing(ctx.tenant_id(), id, self.store.switch(ctx, id))
            .await
    }

    async fn fail(&self, ctx: &TenantCtx, id: CollectionId, error: &str) -> Result<()> {
        self.cache
            .changing(ctx.tenant_id(), id, self.store.fail(ctx, id, error))
            .await
    }

    async fn cancel(&self, ctx: &TenantCtx, id: CollectionId) -> Result<()> {
        self.cache
            .changing(ctx.tenant_id(), id, self.store.cancel(ctx, id))
            .await
    }
}
