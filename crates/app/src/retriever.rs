//! The content domain's `Retriever` port over the RAG service: an agent's answer is
//! grounded in a hybrid search of the agent's knowledge collections, and each hit's
//! citation becomes a `Passage` the prompt numbers and the client is shown.

use async_trait::async_trait;
use std::sync::Arc;
use trellis_content::{
    ContentError, KnowledgeCollectionId, KnowledgeDocumentId, Passage, Retriever,
};
use trellis_kernel::TenantCtx;
use trellis_rag::index::CollectionId;
use trellis_rag::service::RagService;
use trellis_rag::{
    MAX_TOP_K, RagError, SearchFilter, SearchHit, SearchMode, SearchQuery, TextMatch,
};

/// Longest query sent to the RAG search (it refuses more than 2000 characters).
const MAX_QUERY_CHARS: usize = 2000;

/// Retrieval through [`RagService::search`].
#[derive(Clone)]
pub struct RagRetriever {
    rag: Arc<RagService>,
}

impl RagRetriever {
    #[must_use]
    pub fn new(rag: Arc<RagService>) -> Self {
        Self { rag }
    }
}

fn passage(hit: SearchHit) -> Passage {
    Passage {
        collection_id: KnowledgeCollectionId::from_uuid(hit.collection_id.as_uuid()),
        document_id: KnowledgeDocumentId::from_uuid(hit.citation.document_id.as_uuid()),
        filename: hit.citation.filename,
        content: hit.content,
        span_start: hit.citation.span.start,
        span_end: hit.citation.span.end,
        page: hit.citation.span.page,
        score: hit.score,
    }
}

fn content_error(e: RagError) -> ContentError {
    match e {
        RagError::NotFound(what) => ContentError::NotFound(what),
        RagError::Forbidden => ContentError::Forbidden,
        RagError::Invalid(v) => ContentError::Invalid(v),
        other => ContentError::Unexpected(anyhow::Error::new(other)),
    }
}

#[async_trait]
impl Retriever for RagRetriever {
    async fn retrieve(
        &self,
        ctx: &TenantCtx,
        collections: &[KnowledgeCollectionId],
        query: &str,
        k: usize,
    ) -> trellis_content::Result<Vec<Passage>> {
        // No collections means "not grounded", not "search everything".
        let text: String = query.trim().chars().take(MAX_QUERY_CHARS).collect();
        if collections.is_empty() || k == 0 || text.is_empty() {
            return Ok(Vec::new());
        }
        let top_k = u32::try_from(k).unwrap_or(MAX_TOP_K).min(MAX_TOP_K);
        let query = SearchQuery {
            text,
            mode: SearchMode::Hybrid,
            // A chat message is a question, which `Any` would read better; but its
            // common words match most of a large collection, and ranking all of it
            // would cost an answer more than its 5 ms budget. Until the text half
            // leaves out words most chunks hold, answers keep `All`.
            text_match: TextMatch::All,
            filter: SearchFilter {
                collections: collections
                    .iter()
                    .map(|c| CollectionId::from_uuid(c.as_uuid()))
                    .collect(),
                ..SearchFilter::default()
            },
            top_k,
            min_score: None,
        };
        // The agent's configuration is what grants its users its knowledge: the content
        // service already checked the caller may use the agent, and a chat-only role
        // (`client`) has no `knowledge_read` of its own. So search as the tenant.
        let system = TenantCtx::system(ctx.tenant_id());
        let hits = self
            .rag
            .search(&system, &query)
            .await
            .map_err(content_error)?;
        Ok(hits.into_iter().map(passage).collect())
    }
}
