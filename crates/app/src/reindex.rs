//! `trellis reindex`: moves a collection to another embedding model (or re-processes
//! it) from the command line, running the work in this process with a progress bar.
//! The server keeps serving search from the old vectors meanwhile; its own workers may
//! share the job, which is fine — the queue hands each job to one worker at a time.

use crate::App;
use crate::workers::Workers;
use anyhow::{Context, bail};
use std::time::Duration;
use trellis_kernel::{PageRequest, PlatformCtx, Slug, TenantCtx, TenantId};
use trellis_rag::index::CollectionId;
use trellis_rag::{ModelChangeProgress, ModelChangeStatus};

/// How often progress is read back.
const POLL: Duration = Duration::from_millis(250);

/// Finds a tenant by id or slug.
///
/// # Errors
/// When no such tenant exists or storage fails.
pub async fn resolve_tenant(app: &App, tenant: &str) -> anyhow::Result<TenantId> {
    if let Ok(id) = tenant.parse::<TenantId>() {
        return Ok(id);
    }
    let slug = Slug::parse(tenant).map_err(|e| anyhow::anyhow!("tenant `{tenant}`: {e}"))?;
    let ctx = PlatformCtx::system();
    let mut page = PageRequest::new(Some(trellis_kernel::page::MAX_PAGE_SIZE), None)?;
    loop {
        let batch = app.tenancy.list_tenants(&ctx, page).await?;
        if let Some(t) = batch.items.iter().find(|t| t.slug == slug) {
            return Ok(t.id);
        }
        match batch.next_cursor {
            Some(c) => page = PageRequest::new(Some(page.limit()), Some(&c))?,
            None => bail!("no tenant with id or slug `{tenant}`"),
        }
    }
}

/// Where a model change ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// The collection now searches with the new model.
    Switched { model: String, chunks: u64 },
    /// The change failed; search stays on the old model.
    Failed(String),
}

/// Starts moving `collection` to `model`, runs `workers` ingestion workers in this
/// process until the change ends, and reports progress through `on_progress`.
///
/// # Errors
/// Unknown tenant, collection or model, or a storage failure.
pub async fn change_model(
    app: &App,
    tenant: TenantId,
    collection: CollectionId,
    model: &str,
    workers: usize,
    lease: Duration,
    mut on_progress: impl FnMut(ModelChangeProgress),
) -> anyhow::Result<Outcome> {
    let ctx = TenantCtx::system(tenant);
    let (coll, progress) = app
        .rag
        .change_embedding_model(&ctx, collection, model)
        .await
        .with_context(|| format!("could not start the change to `{model}`"))?;
    on_progress(progress);
    if coll.model_change.is_none() {
        // Asking for the current model cancels a pending change; nothing to run.
        return Ok(Outcome::Switched {
            model: coll.embedding_model.id,
            chunks: progress.total,
        });
    }
    let pool = Workers::spawn(app.rag.clone(), workers.max(1), lease);
    let outcome = loop {
        tokio::time::sleep(POLL).await;
        let (coll, progress) = app.rag.model_change_progress(&ctx, collection).await?;
        match coll.model_change {
            None => {
                on_progress(ModelChangeProgress {
                    embedded: progress.total,
                    total: progress.total,
                });
                break Outcome::Switched {
                    model: coll.embedding_model.id,
                    chunks: progress.total,
                };
            }
            Some(c) if c.status == ModelChangeStatus::Failed => {
                break Outcome::Failed(c.error.unwrap_or_default());
            }
            Some(_) => on_progress(progress),
        }
    };
    pool.shutdown().await;
    Ok(outcome)
}
