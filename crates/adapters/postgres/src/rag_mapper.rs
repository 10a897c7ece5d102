//! RAG rows to domain models, and the few domain values that need an encoding of
//! their own in storage (job payloads, metadata). As in `crate::mapper`, every stored
//! value is re-validated through the domain's parsers, so a malformed row surfaces as
//! an `Unexpected` error naming the table, row and field, never as a panic.

use crate::entity::{chunk, document, job, knowledge_collection};
use crate::error::bad_row;
use anyhow::Context as _;
use serde_json::json;
use trellis_kernel::{TenantId, UserId};
use trellis_rag::index::{ChunkId, CollectionId};
use trellis_rag::{
    Chunk, ChunkingSettings, ClaimedJob, Collection, Document, DocumentId, DocumentStatus,
    EmbeddingModel, JobId, JobKind, Metadata, ModelChange, ModelChangeStatus, SourceType, Span,
};

pub(crate) fn collection(row: knowledge_collection::Model) -> anyhow::Result<Collection> {
    let bad = |field| bad_row("knowledge_collections", row.id, field);
    let max = u32::try_from(row.chunk_max_tokens).with_context(|| bad("chunk_max_tokens"))?;
    let overlap =
        u32::try_from(row.chunk_overlap_tokens).with_context(|| bad("chunk_overlap_tokens"))?;
    let dimension =
        u32::try_from(row.embedding_dimension).with_context(|| bad("embedding_dimension"))?;
    let model_change = match (
        &row.next_embedding_model,
        row.next_embedding_dimension,
        row.model_change_status.as_deref(),
        row.model_change_started_at,
    ) {
        (Some(model), Some(dim), Some(status), Some(started_at)) => Some(ModelChange {
            target: EmbeddingModel::new(
                model,
                u32::try_from(dim).with_context(|| bad("next_embedding_dimension"))?,
            )
            .with_context(|| bad("next_embedding_model"))?,
            status: match status {
                "running" => ModelChangeStatus::Running,
                "failed" => ModelChangeStatus::Failed,
                _ => anyhow::bail!(bad("model_change_status")),
            },
            error: row.model_change_error.clone(),
            started_at,
        }),
        (None, None, None, None) => None,
        _ => anyhow::bail!(bad("model_change")),
    };
    Ok(Collection {
        id: CollectionId::from_uuid(row.id),
        model_change,
        tenant_id: TenantId::from_uuid(row.tenant_id),
        source_type: SourceType::parse(&row.source_type).with_context(|| bad("source_type"))?,
        chunking: ChunkingSettings::new(max, overlap).with_context(|| bad("chunking"))?,
        embedding_model: EmbeddingModel::new(&row.embedding_model, dimension)
            .with_context(|| bad("embedding_model"))?,
        name: row.name,
        description: row.description,
        agent_id: row.agent_id,
        created_by: row.created_by.map(UserId::from_uuid),
        created_at: row.created_at,
        updated_at: row.updated_at,
    })
}

pub(crate) fn document(row: document::Model) -> anyhow::Result<Document> {
    let bad = |field| bad_row("documents", row.id, field);
    Ok(Document {
        id: DocumentId::from_uuid(row.id),
        collection_id: CollectionId::from_uuid(row.collection_id),
        size_bytes: u64::try_from(row.size_bytes).with_context(|| bad("size_bytes"))?,
        status: DocumentStatus::parse(&row.status).with_context(|| bad("status"))?,
        source_type: SourceType::parse(&row.source_type).with_context(|| bad("source_type"))?,
        metadata: metadata_from_json(row.metadata).with_context(|| bad("metadata"))?,
        chunk_count: u32::try_from(row.chunk_count).with_context(|| bad("chunk_count"))?,
        filename: row.filename,
        original_name: row.original_name,
        mime_type: row.mime_type,
        checksum: row.checksum,
        storage_key: row.storage_key,
        error: row.error,
        processed_at: row.processed_at,
        source_id: row.source_id,
        uploaded_by: row.uploaded_by.map(UserId::from_uuid),
        created_at: row.created_at,
        updated_at: row.updated_at,
    })
}

pub(crate) fn chunk(row: chunk::ChunkRow) -> anyhow::Result<Chunk> {
    let bad = |field| bad_row("chunks", row.id, field);
    let unsigned = |v: i32, field| u32::try_from(v).with_context(|| bad(field));
    Ok(Chunk {
        id: ChunkId::from_uuid(row.id),
        document_id: DocumentId::from_uuid(row.document_id),
        collection_id: CollectionId::from_uuid(row.collection_id),
        position: unsigned(row.position, "position")?,
        span: Span {
            start: unsigned(row.start_offset, "start_offset")?,
            end: unsigned(row.end_offset, "end_offset")?,
            page: row.page.map(|p| unsigned(p, "page")).transpose()?,
            section: row.section,
        },
        token_count: unsigned(row.token_count, "token_count")?,
        source_type: SourceType::parse(&row.source_type).with_context(|| bad("source_type"))?,
        metadata: metadata_from_json(row.metadata).with_context(|| bad("metadata"))?,
        content: row.content,
    })
}

/// The `kind` and `payload` columns of a job.
pub(crate) fn job_columns(kind: &JobKind) -> (&'static str, serde_json::Value) {
    match kind {
        JobKind::ProcessDocument(doc) => ("process_document", json!({ "document_id": doc })),
        JobKind::ChangeModel(coll) => ("change_model", json!({ "collection_id": coll })),
    }
}

pub(crate) fn claimed_job(row: job::Model) -> anyhow::Result<ClaimedJob> {
    let bad = |field| bad_row("jobs", row.id, field);
    let kind = match row.kind.as_str() {
        "process_document" => {
            let doc = row
                .payload
                .get("document_id")
                .and_then(serde_json::Value::as_str)
                .and_then(|s| s.parse::<DocumentId>().ok())
                .with_context(|| bad("payload"))?;
            JobKind::ProcessDocument(doc)
        }
        "change_model" => {
            let coll = row
                .payload
                .get("collection_id")
                .and_then(serde_json::Value::as_str)
                .and_then(|s| s.parse::<CollectionId>().ok())
                .with_context(|| bad("payload"))?;
            JobKind::ChangeModel(coll)
        }
        _ => anyhow::bail!(bad("kind")),
    };
    Ok(ClaimedJob {
        id: JobId::from_uuid(row.id),
        tenant_id: TenantId::from_uuid(row.tenant_id),
        kind,
        attempt: u32::try_from(row.attempts).with_context(|| bad("attempts"))?,
        lease_until: row.lease_until.with_context(|| bad("lease_until"))?,
    })
}

/// Metadata is stored as a flat JSON object of strings, which is also what
/// `metadata @> $filter` compares against.
pub(crate) fn metadata_to_json(m: &Metadata) -> serde_json::Value {
    serde_json::Value::Object(
        m.iter()
            .map(|(k, v)| (k.clone(), serde_json::Value::String(v.clone())))
            .collect(),
    )
}

fn metadata_from_json(value: serde_json::Value) -> anyhow::Result<Metadata> {
    Ok(serde_json::from_value(value)?)
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    fn job_row(kind: &str, payload: serde_json::Value) -> job::Model {
        let now = chrono::Utc::now();
        job::Model {
            tenant_id: uuid::Uuid::now_v7(),
            id: uuid::Uuid::now_v7(),
            kind: kind.into(),
            payload,
            status: "running".into(),
            attempts: 1,
            run_at: now,
            lease_until: Some(now),
            last_error: None,
            created_at: now,
            updated_at: now,
        }
    }

    #[test]
    fn a_job_kind_survives_its_round_trip_through_the_columns() {
        let doc = DocumentId::new();
        let (kind, payload) = job_columns(&JobKind::ProcessDocument(doc));
        let job = claimed_job(job_row(kind, payload)).unwrap();
        assert_eq!(job.kind, JobKind::ProcessDocument(doc));
        assert_eq!(job.attempt, 1);
    }

    #[test]
    fn an_unknown_job_kind_or_a_broken_payload_is_an_error_not_a_panic() {
        assert!(claimed_job(job_row("mine_bitcoin", json!({}))).is_err());
        let err = claimed_job(job_row("process_document", json!({"document_id": 7})));
        assert!(err.unwrap_err().to_string().contains("invalid payload"));
    }

    #[test]
    fn metadata_is_a_flat_object_of_strings() {
        let m = Metadata::from([("lang".to_owned(), "de".to_owned())]);
        let v = metadata_to_json(&m);
        assert_eq!(v, json!({"lang": "de"}));
        assert_eq!(metadata_from_json(v).unwrap(), m);
        assert!(metadata_from_json(json!({"n": 1})).is_err());
    }
}
