//! `/v1/rag`: knowledge collections, document uploads (multipart, type sniffed from
//! the content), document status and chunks, reindexing, and cited search.

use super::{PageQuery, created, list_response};
use crate::auth::TenantAuth;
use crate::extract::{Json, Multipart, Path, Query, multipart_problem};
use crate::problem::{ApiError, Problem, ProblemType};
use crate::state::AppState;
use crate::validate::{Fields, double_option};
use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::sync::Arc;
use trellis_rag::index::{ChunkId, CollectionId};
use trellis_rag::service::{CreateCollection, RagService, Upload};
use trellis_rag::{
    Chunk, ChunkingSettings, Collection, CollectionPatch, Document, DocumentFilter, DocumentId,
    DocumentStatus, RagError, SearchFilter, SearchHit, SearchMode, SearchQuery, SourceType,
    TextMatch,
};
use utoipa::{IntoParams, ToSchema};
use uuid::Uuid;

/// Routes whose bodies are small JSON (the global body limit applies).
pub fn router() -> Router<AppState> {
    Router::new()
        .route(
            "/v1/rag/collections",
            get(list_collections).post(create_collection),
        )
        .route(
            "/v1/rag/collections/{id}",
            get(get_collection)
                .patch(update_collection)
                .delete(delete_collection),
        )
        .route("/v1/rag/collections/{id}/reindex", post(reindex_collection))
        .route(
            "/v1/rag/collections/{id}/embedding-model",
            get(get_model_change)
                .put(change_model)
                .delete(cancel_model_change),
        )
        .route("/v1/rag/embedding-models", get(list_embedding_models))
        .route("/v1/rag/documents", get(list_documents))
        .route(
            "/v1/rag/documents/{id}",
            get(get_document).delete(delete_document),
        )
        .route("/v1/rag/documents/{id}/chunks", get(document_chunks))
        .route("/v1/rag/documents/{id}/reindex", post(reindex_document))
        .route("/v1/rag/search", post(search))
}

/// The upload route, which gets its own (larger) body limit.
pub fn upload_router() -> Router<AppState> {
    Router::new().route("/v1/rag/collections/{id}/documents", post(upload))
}

fn rag(state: &AppState) -> Result<Arc<RagService>, ApiError> {
    state.rag.clone().ok_or_else(|| {
        ApiError::new(
            ProblemType::NotReady,
            "retrieval is not configured on this server",
        )
    })
}

impl From<RagError> for ApiError {
    fn from(e: RagError) -> Self {
        match e {
            RagError::NotFound(what) => Self::not_found(format!("{what} not found")),
            RagError::Conflict(msg) => Self::new(ProblemType::Conflict, msg),
            RagError::Invalid(v) => Self::validation(vec![v.into()]),
            RagError::Page(p) => p.into(),
            RagError::Forbidden => Self::forbidden("you may not do this"),
            RagError::TooLarge { limit_bytes } => Self::new(
                ProblemType::PayloadTooLarge,
                format!("the file is larger than the limit of {limit_bytes} bytes"),
            ),
            RagError::Unsupported(name) => Self::new(
                ProblemType::UnsupportedMediaType,
                format!(
                    "`{name}` is not a supported file type (plain text, Markdown, HTML or PDF)"
                ),
            ),
            RagError::ModelUnavailable(model) => {
                Self::validation(vec![crate::problem::FieldError::new(
                    "embedding_model",
                    format!("`{model}` is not available on this server"),
                )])
            }
            RagError::Unexpected(e) => Self::internal(e),
        }
    }
}

// ----- collections -------------------------------------------------------------------

/// How documents are cut into chunks.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ChunkingBody {
    /// 16–2048 (default 200).
    #[schema(minimum = 16, maximum = 2048)]
    pub max_tokens: u32,
    /// Below half of `max_tokens` (default 30).
    #[schema(maximum = 1023)]
    pub overlap_tokens: u32,
}

/// A knowledge collection.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct CollectionResponse {
    pub id: Uuid,
    pub name: String,
    pub description: Option<String>,
    pub agent_id: Option<Uuid>,
    /// `manual`, `upload`, `shopify` or `wordpress`.
    pub source_type: String,
    pub chunking: ChunkingBody,
    /// The embedding model the collection's vectors come from.
    pub embedding_model: String,
    pub embedding_dimension: u32,
    /// A move to another embedding model, while it runs or after it failed.
    pub model_change: Option<ModelChangeBody>,
    #[serde(serialize_with = "trellis_kernel::timestamp::rfc3339")]
    pub created_at: DateTime<Utc>,
    #[serde(serialize_with = "trellis_kernel::timestamp::rfc3339")]
    pub updated_at: DateTime<Utc>,
}

/// A collection's move to another embedding model.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct ModelChangeBody {
    pub target_model: String,
    pub target_dimension: u32,
    /// `running` or `failed` (search stays on the current model either way).
    pub status: String,
    pub error: Option<String>,
    #[serde(serialize_with = "trellis_kernel::timestamp::rfc3339")]
    pub started_at: DateTime<Utc>,
}

impl From<Collection> for CollectionResponse {
    fn from(c: Collection) -> Self {
        Self {
            id: c.id.as_uuid(),
            name: c.name,
            description: c.description,
            agent_id: c.agent_id,
            source_type: c.source_type.as_str().to_owned(),
            chunking: ChunkingBody {
                max_tokens: c.chunking.max_tokens,
                overlap_tokens: c.chunking.overlap_tokens,
            },
            embedding_model: c.embedding_model.id,
            embedding_dimension: c.embedding_model.dimension,
            model_change: c.model_change.map(|m| ModelChangeBody {
                target_model: m.target.id,
                target_dimension: m.target.dimension,
                status: m.status.as_str().to_owned(),
                error: m.error,
                started_at: m.started_at,
            }),
            created_at: c.created_at,
            updated_at: c.updated_at,
        }
    }
}

list_response!(
    /// A page of collections.
    CollectionListResponse,
    CollectionResponse
);

/// A collection to create.
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateCollectionBody {
    /// One line of 1 to 200 characters.
    #[schema(
        min_length = 1,
        max_length = 200,
        pattern = "^[^\\x00-\\x1F\\x7F-\\x9F]+$"
    )]
    pub name: String,
    /// One line of up to 2000 characters.
    #[schema(max_length = 2000, pattern = "^[^\\x00-\\x1F\\x7F-\\x9F]+$")]
    pub description: Option<String>,
    pub agent_id: Option<Uuid>,
    /// `manual`, `upload` (default), `shopify` or `wordpress`.
    #[schema(value_type = Option<SourceTypeName>)]
    pub source_type: Option<String>,
    pub chunking: Option<ChunkingBody>,
    /// An embedding model id this server runs; default: the server's default model.
    pub embedding_model: Option<String>,
}

fn chunking(f: &mut Fields, body: Option<&ChunkingBody>) -> Option<ChunkingSettings> {
    match body {
        None => Some(ChunkingSettings::default()),
        Some(c) => f.check(ChunkingSettings::new(c.max_tokens, c.overlap_tokens)),
    }
}

impl CreateCollectionBody {
    /// # Errors
    /// A 422 naming each invalid field.
    pub fn try_into_domain(self) -> Result<CreateCollection, ApiError> {
        let mut f = Fields::new();
        let source_type = match &self.source_type {
            None => Some(SourceType::Upload),
            Some(s) => f.check(SourceType::parse(s)),
        };
        let chunking = chunking(&mut f, self.chunking.as_ref());
        f.finish(|| {
            Some(CreateCollection {
                name: self.name,
                description: self.description,
                agent_id: self.agent_id,
                source_type: source_type?,
                chunking: chunking?,
                embedding_model: self.embedding_model,
            })
        })
    }
}

/// A partial update of a collection.
#[derive(Debug, Clone, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UpdateCollectionBody {
    #[schema(
        min_length = 1,
        max_length = 200,
        pattern = "^[^\\x00-\\x1F\\x7F-\\x9F]+$"
    )]
    pub name: Option<String>,
    #[serde(default, deserialize_with = "double_option")]
    #[schema(value_type = Option<String>, max_length = 2000, pattern = "^[^\\x00-\\x1F\\x7F-\\x9F]+$")]
    pub description: Option<Option<String>>,
    #[serde(default, deserialize_with = "double_option")]
    #[schema(value_type = Option<Uuid>)]
    pub agent_id: Option<Option<Uuid>>,
    /// New chunking applies to documents processed from now on (reindex to apply it
    /// to existing ones).
    pub chunking: Option<ChunkingBody>,
}

#[utoipa::path(get, path = "/v1/rag/collections", tag = "rag", params(PageQuery),
    responses((status = 200, body = CollectionListResponse)), security(("bearer" = []), ("api_key" = [])))]
pub async fn list_collections(
    State(state): State<AppState>,
    TenantAuth(ctx): TenantAuth,
    Query(q): Query<PageQuery>,
) -> Result<Json<CollectionListResponse>, ApiError> {
    let page = rag(&state)?.list_collections(&ctx, q.page()?).await?;
    Ok(Json(CollectionListResponse::from_page(page, Into::into)))
}

#[utoipa::path(post, path = "/v1/rag/collections", tag = "rag", request_body = CreateCollectionBody,
    responses((status = 201, body = CollectionResponse),
              (status = 409, body = Problem, content_type = "application/problem+json"),
              (status = 422, body = Problem, content_type = "application/problem+json")),
    security(("bearer" = []), ("api_key" = [])))]
pub async fn create_collection(
    State(state): State<AppState>,
    TenantAuth(ctx): TenantAuth,
    Json(body): Json<CreateCollectionBody>,
) -> Result<Response, ApiError> {
    let cmd = body.try_into_domain()?;
    let c = rag(&state)?.create_collection(&ctx, cmd).await?;
    Ok(created(
        format!("/v1/rag/collections/{}", c.id),
        CollectionResponse::from(c),
    ))
}

#[utoipa::path(get, path = "/v1/rag/collections/{id}", tag = "rag", params(("id" = Uuid, Path)),
    responses((status = 200, body = CollectionResponse),
              (status = 404, body = Problem, content_type = "application/problem+json")),
    security(("bearer" = []), ("api_key" = [])))]
pub async fn get_collection(
    State(state): State<AppState>,
    TenantAuth(ctx): TenantAuth,
    Path(id): Path<Uuid>,
) -> Result<Json<CollectionResponse>, ApiError> {
    let c = rag(&state)?
        .get_collection(&ctx, CollectionId::from_uuid(id))
        .await?;
    Ok(Json(c.into()))
}

#[utoipa::path(patch, path = "/v1/rag/collections/{id}", tag = "rag", params(("id" = Uuid, Path)),
    request_body = UpdateCollectionBody,
    responses((status = 200, body = CollectionResponse),
              (status = 404, body = Problem, content_type = "application/problem+json"),
              (status = 409, description = "Another collection has this name", body = Problem, content_type = "application/problem+json")),
    security(("bearer" = []), ("api_key" = [])))]
pub async fn update_collection(
    State(state): State<AppState>,
    TenantAuth(ctx): TenantAuth,
    Path(id): Path<Uuid>,
    Json(body): Json<UpdateCollectionBody>,
) -> Result<Json<CollectionResponse>, ApiError> {
    let mut f = Fields::new();
    let chunking = match &body.chunking {
        None => Some(None),
        Some(c) => f
            .check(ChunkingSettings::new(c.max_tokens, c.overlap_tokens))
            .map(Some),
    };
    let patch = f.finish(|| {
        Some(CollectionPatch {
            name: body.name,
            description: body.description,
            agent_id: body.agent_id,
            chunking: chunking?,
        })
    })?;
    let c = rag(&state)?
        .update_collection(&ctx, CollectionId::from_uuid(id), patch)
        .await?;
    Ok(Json(c.into()))
}

#[utoipa::path(delete, path = "/v1/rag/collections/{id}", tag = "rag", params(("id" = Uuid, Path)),
    responses((status = 204), (status = 404, body = Problem, content_type = "application/problem+json")),
    security(("bearer" = []), ("api_key" = [])))]
pub async fn delete_collection(
    State(state): State<AppState>,
    TenantAuth(ctx): TenantAuth,
    Path(id): Path<Uuid>,
) -> Result<StatusCode, ApiError> {
    rag(&state)?
        .delete_collection(&ctx, CollectionId::from_uuid(id))
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

/// How many documents were queued.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct ReindexResponse {
    pub queued: u64,
}

#[utoipa::path(post, path = "/v1/rag/collections/{id}/reindex", tag = "rag", params(("id" = Uuid, Path)),
    responses((status = 202, body = ReindexResponse)), security(("bearer" = []), ("api_key" = [])))]
pub async fn reindex_collection(
    State(state): State<AppState>,
    TenantAuth(ctx): TenantAuth,
    Path(id): Path<Uuid>,
) -> Result<Response, ApiError> {
    let queued = rag(&state)?
        .reindex_collection(&ctx, CollectionId::from_uuid(id))
        .await?;
    Ok((StatusCode::ACCEPTED, Json(ReindexResponse { queued })).into_response())
}

/// A collection's embedding model and the progress of a change to another one.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct ModelChangeResponse {
    /// The model search uses now.
    pub embedding_model: String,
    pub embedding_dimension: u32,
    /// `null` when no change is pending.
    pub change: Option<ModelChangeBody>,
    /// Chunks embedded with the target model so far.
    pub embedded: u64,
    /// All chunks of the collection.
    pub total: u64,
}

fn model_change_response(
    (c, p): (Collection, trellis_rag::ModelChangeProgress),
) -> ModelChangeResponse {
    let c = CollectionResponse::from(c);
    let pending = c.model_change.is_some();
    ModelChangeResponse {
        embedding_model: c.embedding_model,
        embedding_dimension: c.embedding_dimension,
        change: c.model_change,
        embedded: if pending { p.embedded } else { p.total },
        total: p.total,
    }
}

/// Which model to move the collection to.
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ChangeModelBody {
    /// An id from `GET /v1/rag/embedding-models`. The collection's current model
    /// cancels a pending change.
    pub model: String,
}

#[utoipa::path(put, path = "/v1/rag/collections/{id}/embedding-model", tag = "rag",
    params(("id" = Uuid, Path)), request_body = ChangeModelBody,
    responses((status = 202, body = ModelChangeResponse), (status = 422, body = Problem, content_type = "application/problem+json")),
    security(("bearer" = []), ("api_key" = [])))]
/// Re-embeds the collection with another model in the background; search keeps using
/// the current model until every chunk is done, then switches in one step.
pub async fn change_model(
    State(state): State<AppState>,
    TenantAuth(ctx): TenantAuth,
    Path(id): Path<Uuid>,
    Json(body): Json<ChangeModelBody>,
) -> Result<Response, ApiError> {
    let out = rag(&state)?
        .change_embedding_model(&ctx, CollectionId::from_uuid(id), &body.model)
        .await?;
    Ok((StatusCode::ACCEPTED, Json(model_change_response(out))).into_response())
}

#[utoipa::path(get, path = "/v1/rag/collections/{id}/embedding-model", tag = "rag",
    params(("id" = Uuid, Path)), responses((status = 200, body = ModelChangeResponse)),
    security(("bearer" = []), ("api_key" = [])))]
pub async fn get_model_change(
    State(state): State<AppState>,
    TenantAuth(ctx): TenantAuth,
    Path(id): Path<Uuid>,
) -> Result<Json<ModelChangeResponse>, ApiError> {
    let out = rag(&state)?
        .model_change_progress(&ctx, CollectionId::from_uuid(id))
        .await?;
    Ok(Json(model_change_response(out)))
}

#[utoipa::path(delete, path = "/v1/rag/collections/{id}/embedding-model", tag = "rag",
    params(("id" = Uuid, Path)), responses((status = 204)),
    security(("bearer" = []), ("api_key" = [])))]
/// Abandons a pending model change.
pub async fn cancel_model_change(
    State(state): State<AppState>,
    TenantAuth(ctx): TenantAuth,
    Path(id): Path<Uuid>,
) -> Result<StatusCode, ApiError> {
    rag(&state)?
        .cancel_model_change(&ctx, CollectionId::from_uuid(id))
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

/// An embedding model this server can run.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct EmbeddingModelBody {
    pub id: String,
    pub dimension: u32,
}

/// The embedding models available.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct EmbeddingModelsResponse {
    pub items: Vec<EmbeddingModelBody>,
}

#[utoipa::path(get, path = "/v1/rag/embedding-models", tag = "rag",
    responses((status = 200, body = EmbeddingModelsResponse)),
    security(("bearer" = []), ("api_key" = [])))]
pub async fn list_embedding_models(
    State(state): State<AppState>,
    TenantAuth(_ctx): TenantAuth,
) -> Result<Json<EmbeddingModelsResponse>, ApiError> {
    let items = rag(&state)?
        .embedding_models()
        .into_iter()
        .map(|m| EmbeddingModelBody {
            id: m.id,
            dimension: m.dimension,
        })
        .collect();
    Ok(Json(EmbeddingModelsResponse { items }))
}

// ----- documents ---------------------------------------------------------------------

/// A document and where it is in processing.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct DocumentResponse {
    pub id: Uuid,
    pub collection_id: Uuid,
    pub original_name: String,
    /// Sniffed from the content.
    pub mime_type: String,
    pub size_bytes: u64,
    /// Hex SHA-256 of the file.
    pub checksum: String,
    /// `uploaded`, `processing`, `processed` or `error`.
    pub status: String,
    pub error: Option<String>,
    #[serde(serialize_with = "trellis_kernel::timestamp::rfc3339_opt")]
    pub processed_at: Option<DateTime<Utc>>,
    pub source_type: String,
    pub source_id: Option<String>,
    pub metadata: BTreeMap<String, String>,
    pub chunk_count: u32,
    #[serde(serialize_with = "trellis_kernel::timestamp::rfc3339")]
    pub created_at: DateTime<Utc>,
    #[serde(serialize_with = "trellis_kernel::timestamp::rfc3339")]
    pub updated_at: DateTime<Utc>,
}

impl From<Document> for DocumentResponse {
    fn from(d: Document) -> Self {
        Self {
            id: d.id.as_uuid(),
            collection_id: d.collection_id.as_uuid(),
            original_name: d.original_name,
            mime_type: d.mime_type,
            size_bytes: d.size_bytes,
            checksum: d.checksum,
            status: d.status.as_str().to_owned(),
            error: d.error,
            processed_at: d.processed_at,
            source_type: d.source_type.as_str().to_owned(),
            source_id: d.source_id,
            metadata: d.metadata,
            chunk_count: d.chunk_count,
            created_at: d.created_at,
            updated_at: d.updated_at,
        }
    }
}

list_response!(
    /// A page of documents.
    DocumentListResponse,
    DocumentResponse
);

/// The result of an upload.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct UploadResponse {
    #[serde(flatten)]
    pub document: DocumentResponse,
    /// True when the same file was already in the collection (nothing new stored).
    pub duplicate: bool,
}

/// Upload a file (`multipart/form-data` with a `file` part and an optional
/// `metadata` part holding a JSON object of strings). 201 for a new document, 200 when
/// the same bytes are already in the collection.
#[utoipa::path(post, path = "/v1/rag/collections/{id}/documents", tag = "rag", params(("id" = Uuid, Path)),
    request_body(content_type = "multipart/form-data", description = "`file` (required), `metadata` (JSON object of strings)"),
    responses((status = 201, body = UploadResponse), (status = 200, body = UploadResponse),
              (status = 413, body = Problem, content_type = "application/problem+json"),
              (status = 415, body = Problem, content_type = "application/problem+json")),
    security(("bearer" = []), ("api_key" = [])))]
pub async fn upload(
    State(state): State<AppState>,
    TenantAuth(ctx): TenantAuth,
    Path(id): Path<Uuid>,
    Multipart(mut multipart): Multipart,
) -> Result<Response, ApiError> {
    let service = rag(&state)?;
    let mut file: Option<(String, Vec<u8>)> = None;
    let mut metadata = BTreeMap::new();
    while let Some(field) = multipart.next_field().await.map_err(multipart_problem)? {
        match field.name() {
            Some("file") => {
                let name = field.file_name().unwrap_or("upload").to_owned();
                let bytes = field.bytes().await.map_err(multipart_problem)?;
                file = Some((name, bytes.to_vec()));
            }
            Some("metadata") => {
                let text = field.text().await.map_err(multipart_problem)?;
                metadata = serde_json::from_str(&text).map_err(|_| {
                    ApiError::validation(vec![crate::problem::FieldError::new(
                        "metadata",
                        "must be a JSON object of strings",
                    )])
                })?;
            }
            _ => {
                return Err(ApiError::new(
                    ProblemType::MalformedBody,
                    "unexpected form field; send `file` and optionally `metadata`",
                ));
            }
        }
    }
    let Some((original_name, bytes)) = file else {
        return Err(ApiError::validation(vec![crate::problem::FieldError::new(
            "file",
            "a `file` part is required",
        )]));
    };
    let outcome = service
        .upload(
            &ctx,
            CollectionId::from_uuid(id),
            Upload {
                original_name,
                bytes,
                metadata,
            },
        )
        .await?;
    let body = UploadResponse {
        duplicate: outcome.duplicate,
        document: outcome.document.into(),
    };
    if body.duplicate {
        Ok(Json(body).into_response())
    } else {
        Ok(created(
            format!("/v1/rag/documents/{}", body.document.id),
            body,
        ))
    }
}

/// `?collection_id=&status=&limit=&cursor=`
#[derive(Debug, Clone, Default, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct DocumentListQuery {
    pub collection_id: Option<Uuid>,
    /// `uploaded`, `processing`, `processed` or `error`.
    pub status: Option<String>,
    pub limit: Option<u32>,
    pub cursor: Option<String>,
}

#[utoipa::path(get, path = "/v1/rag/documents", tag = "rag", params(DocumentListQuery),
    responses((status = 200, body = DocumentListResponse)), security(("bearer" = []), ("api_key" = [])))]
pub async fn list_documents(
    State(state): State<AppState>,
    TenantAuth(ctx): TenantAuth,
    Query(q): Query<DocumentListQuery>,
) -> Result<Json<DocumentListResponse>, ApiError> {
    let mut f = Fields::new();
    let status = f.check_opt("status", q.status.as_deref(), DocumentStatus::parse);
    let status = f.finish(|| status)?;
    let page = PageQuery {
        limit: q.limit,
        cursor: q.cursor,
    }
    .page()?;
    let filter = DocumentFilter {
        collection: q.collection_id.map(CollectionId::from_uuid),
        status,
    };
    let page = rag(&state)?.list_documents(&ctx, &filter, page).await?;
    Ok(Json(DocumentListResponse::from_page(page, Into::into)))
}

#[utoipa::path(get, path = "/v1/rag/documents/{id}", tag = "rag", params(("id" = Uuid, Path)),
    responses((status = 200, body = DocumentResponse),
              (status = 404, body = Problem, content_type = "application/problem+json")),
    security(("bearer" = []), ("api_key" = [])))]
pub async fn get_document(
    State(state): State<AppState>,
    TenantAuth(ctx): TenantAuth,
    Path(id): Path<Uuid>,
) -> Result<Json<DocumentResponse>, ApiError> {
    Ok(Json(
        rag(&state)?
            .get_document(&ctx, DocumentId::from_uuid(id))
            .await?
            .into(),
    ))
}

#[utoipa::path(delete, path = "/v1/rag/documents/{id}", tag = "rag", params(("id" = Uuid, Path)),
    responses((status = 204), (status = 404, body = Problem, content_type = "application/problem+json")),
    security(("bearer" = []), ("api_key" = [])))]
pub async fn delete_document(
    State(state): State<AppState>,
    TenantAuth(ctx): TenantAuth,
    Path(id): Path<Uuid>,
) -> Result<StatusCode, ApiError> {
    rag(&state)?
        .delete_document(&ctx, DocumentId::from_uuid(id))
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

#[utoipa::path(post, path = "/v1/rag/documents/{id}/reindex", tag = "rag", params(("id" = Uuid, Path)),
    responses((status = 202, body = DocumentResponse)), security(("bearer" = []), ("api_key" = [])))]
pub async fn reindex_document(
    State(state): State<AppState>,
    TenantAuth(ctx): TenantAuth,
    Path(id): Path<Uuid>,
) -> Result<Response, ApiError> {
    let d = rag(&state)?
        .reindex_document(&ctx, DocumentId::from_uuid(id))
        .await?;
    Ok((StatusCode::ACCEPTED, Json(DocumentResponse::from(d))).into_response())
}

/// Where a chunk or hit sits in its document's extracted text.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct SpanResponse {
    /// Byte offsets into the extracted text.
    pub start: u32,
    pub end: u32,
    /// 1-based page, for paged formats (PDF).
    pub page: Option<u32>,
    /// Heading path, e.g. `Guide > Install`.
    pub section: Option<String>,
}

/// One chunk of a document.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct ChunkResponse {
    pub id: Uuid,
    pub position: u32,
    pub content: String,
    pub token_count: u32,
    pub span: SpanResponse,
}

impl From<Chunk> for ChunkResponse {
    fn from(c: Chunk) -> Self {
        Self {
            id: c.id.as_uuid(),
            position: c.position,
            content: c.content,
            token_count: c.token_count,
            span: SpanResponse {
                start: c.span.start,
                end: c.span.end,
                page: c.span.page,
                section: c.span.section,
            },
        }
    }
}

/// The chunks of a document, in order.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct ChunkListResponse {
    pub items: Vec<ChunkResponse>,
}

#[utoipa::path(get, path = "/v1/rag/documents/{id}/chunks", tag = "rag", params(("id" = Uuid, Path)),
    responses((status = 200, body = ChunkListResponse)), security(("bearer" = []), ("api_key" = [])))]
pub async fn document_chunks(
    State(state): State<AppState>,
    TenantAuth(ctx): TenantAuth,
    Path(id): Path<Uuid>,
) -> Result<Json<ChunkListResponse>, ApiError> {
    let chunks = rag(&state)?
        .document_chunks(&ctx, DocumentId::from_uuid(id))
        .await?;
    Ok(Json(ChunkListResponse {
        items: chunks.into_iter().map(Into::into).collect(),
    }))
}

// ----- search ------------------------------------------------------------------------

/// A source type's name, as a new collection and search filters take it.
#[derive(ToSchema)]
#[schema(rename_all = "lowercase")]
#[allow(dead_code)] // Describes the document only; the names arrive as strings.
pub enum SourceTypeName {
    Manual,
    Upload,
    Shopify,
    Wordpress,
}

/// A search request.
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SearchBody {
    /// 1–2000 characters.
    #[schema(min_length = 1, max_length = 2000, pattern = "\\S")]
    pub query: String,
    /// `vector`, `text` or `hybrid` (default).
    #[schema(pattern = "^(vector|text|hybrid)$")]
    pub mode: Option<String>,
    /// How the full-text half reads the query. `all` (default): web-search syntax,
    /// every word required (`"a phrase"`, `or`, `-word`); `any`: any of its words, the
    /// more the better (for questions).
    #[schema(pattern = "^(all|any)$")]
    pub text_match: Option<String>,
    /// Restrict to these collections (default: all of the tenant's); at most 100.
    #[serde(default)]
    #[schema(max_items = 100)]
    pub collection_ids: Vec<Uuid>,
    /// `manual`, `upload`, `shopify` or `wordpress`.
    #[serde(default)]
    #[schema(value_type = Vec<SourceTypeName>)]
    pub source_types: Vec<String>,
    /// Exact matches on document metadata: at most 32 entries, keys of 1 to 64
    /// characters and values of up to 1024, without control characters.
    #[serde(default)]
    #[schema(value_type = HashMap<String, String>)]
    pub metadata: BTreeMap<String, String>,
    /// 1–50 (default 10).
    #[schema(minimum = 1, maximum = 50)]
    pub top_k: Option<u32>,
    /// Drop results scoring below this.
    pub min_score: Option<f32>,
}

impl SearchBody {
    /// # Errors
    /// A 422 naming each invalid field.
    pub fn try_into_domain(self) -> Result<SearchQuery, ApiError> {
        let mut f = Fields::new();
        let mode = match self.mode.as_deref() {
            None | Some("hybrid") => Some(SearchMode::Hybrid),
            Some("vector") => Some(SearchMode::Vector),
            Some("text") => Some(SearchMode::Text),
            Some(_) => {
                f.push("mode", "must be vector, text or hybrid");
                None
            }
        };
        let text_match = match self.text_match.as_deref() {
            None => Some(TextMatch::All),
            Some("all") => Some(TextMatch::All),
            Some("any") => Some(TextMatch::Any),
            Some(_) => {
                f.push("text_match", "must be all or any");
                None
            }
        };
        let mut source_types = Vec::new();
        for s in &self.source_types {
            if let Some(t) = f.check(SourceType::parse(s)) {
                source_types.push(t);
            }
        }
        let query = SearchQuery {
            text: self.query,
            mode: mode.unwrap_or_default(),
            text_match: text_match.unwrap_or_default(),
            filter: SearchFilter {
                collections: self
                    .collection_ids
                    .into_iter()
                    .map(CollectionId::from_uuid)
                    .collect(),
                source_types,
                metadata: self.metadata,
            },
            top_k: self.top_k.unwrap_or(10),
            min_score: self.min_score,
        };
        f.check(query.validate());
        f.finish(|| mode.and(text_match).map(|_| query))
    }
}

/// Where a hit comes from.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct CitationResponse {
    pub document_id: Uuid,
    pub filename: String,
    pub span: SpanResponse,
}

/// One search result.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct SearchHitResponse {
    pub chunk_id: Uuid,
    pub collection_id: Uuid,
    pub content: String,
    /// What results are ordered by: cosine (vector), rank (text) or fused rank (hybrid).
    pub score: f32,
    pub vector_score: Option<f32>,
    pub text_score: Option<f32>,
    pub citation: CitationResponse,
}

impl From<SearchHit> for SearchHitResponse {
    fn from(h: SearchHit) -> Self {
        let id: ChunkId = h.chunk_id;
        Self {
            chunk_id: id.as_uuid(),
            collection_id: h.collection_id.as_uuid(),
            content: h.content,
            score: h.score,
            vector_score: h.vector_score,
            text_score: h.text_score,
            citation: CitationResponse {
                document_id: h.citation.document_id.as_uuid(),
                filename: h.citation.filename,
                span: SpanResponse {
                    start: h.citation.span.start,
                    end: h.citation.span.end,
                    page: h.citation.span.page,
                    section: h.citation.span.section,
                },
            },
        }
    }
}

/// Search results, best first.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct SearchResponse {
    pub results: Vec<SearchHitResponse>,
}

#[utoipa::path(post, path = "/v1/rag/search", tag = "rag", request_body = SearchBody,
    responses((status = 200, body = SearchResponse),
              (status = 404, description = "A collection named in the filter is not the tenant's", body = Problem, content_type = "application/problem+json"),
              (status = 422, body = Problem, content_type = "application/problem+json")),
    security(("bearer" = []), ("api_key" = [])))]
pub async fn search(
    State(state): State<AppState>,
    TenantAuth(ctx): TenantAuth,
    Json(body): Json<SearchBody>,
) -> Result<Json<SearchResponse>, ApiError> {
    let query = body.try_into_domain()?;
    let hits = rag(&state)?.search(&ctx, &query).await?;
    Ok(Json(SearchResponse {
        results: hits.into_iter().map(Into::into).collect(),
    }))
}
