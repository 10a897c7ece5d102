//! Files attached to conversations: multipart upload to one's conversation (type
//! sniffed from the bytes, size bounded), listing, metadata, download, deletion, and
//! sending a file to a knowledge collection, where it is ingested like any upload.
//! Messages reference attached files by id (`file_ids` when sending).

use super::created;
use crate::auth::TenantAuth;
use crate::extract::{Json, Multipart, Path, multipart_problem};
use crate::problem::{ApiError, FieldError, Problem, ProblemType};
use crate::state::AppState;
use axum::Router;
use axum::extract::State;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde::{Deserialize, Serialize};
use std::sync::Arc;
use trellis_content::{
    ConversationId, FileAttachment, FileId, FileService, KnowledgeCollectionId, UploadFile,
};
use utoipa::ToSchema;
use uuid::Uuid;

/// Every route but the upload, under the ordinary body limit.
pub fn router() -> Router<AppState> {
    Router::new()
        .route("/v1/conversations/{id}/files", get(list_files))
        .route("/v1/files/{id}", get(get_file).delete(delete_file))
        .route("/v1/files/{id}/content", get(download))
        .route(
            "/v1/files/{id}/send-to-collection",
            post(send_to_collection),
        )
}

/// The upload, which the app mounts under a body limit that fits the largest file.
pub fn upload_router() -> Router<AppState> {
    Router::new().route("/v1/conversations/{id}/files", post(upload))
}

fn files(state: &AppState) -> Result<Arc<FileService>, ApiError> {
    state.files.clone().ok_or_else(|| {
        ApiError::new(
            ProblemType::NotReady,
            "file attachments are not configured on this server",
        )
    })
}

/// An attached file's metadata.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct FileResponse {
    pub id: Uuid,
    pub owner_id: Uuid,
    pub conversation_id: Option<Uuid>,
    pub filename: String,
    /// Sniffed from the bytes.
    pub mime_type: String,
    pub size_bytes: u64,
    /// Hex SHA-256 of the bytes.
    pub checksum: String,
    /// The knowledge document made from it, once sent to a collection.
    pub knowledge_document_id: Option<Uuid>,
    pub created_at: chrono::DateTime<chrono::Utc>,
}

impl From<FileAttachment> for FileResponse {
    fn from(f: FileAttachment) -> Self {
        Self {
            id: f.id.as_uuid(),
            owner_id: f.owner_id.as_uuid(),
            conversation_id: f.conversation_id.map(|c| c.as_uuid()),
            filename: f.filename,
            mime_type: f.mime_type,
            size_bytes: f.size_bytes,
            checksum: f.checksum,
            knowledge_document_id: f.knowledge_document_id.map(|d| d.as_uuid()),
            created_at: f.created_at,
        }
    }
}

/// A conversation's files, oldest first.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct FileListResponse {
    pub items: Vec<FileResponse>,
}

/// Where to send a file.
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SendToCollectionBody {
    pub collection_id: Uuid,
}

/// Attach a file to one's own conversation. Multipart with one `file` part; the type
/// is sniffed from the bytes (415 for types we do not accept, 413 when too large).
#[utoipa::path(post, path = "/v1/conversations/{id}/files", tag = "chat",
    params(("id" = Uuid, Path)),
    request_body(content_type = "multipart/form-data", description = "`file` (required)"),
    responses((status = 201, body = FileResponse),
              (status = 404, body = Problem, content_type = "application/problem+json"),
              (status = 413, body = Problem, content_type = "application/problem+json"),
              (status = 415, body = Problem, content_type = "application/problem+json"),
              (status = 422, body = Problem, content_type = "application/problem+json")),
    security(("bearer" = []), ("api_key" = [])))]
pub async fn upload(
    State(state): State<AppState>,
    TenantAuth(ctx): TenantAuth,
    Path(id): Path<Uuid>,
    Multipart(mut multipart): Multipart,
) -> Result<Response, ApiError> {
    let service = files(&state)?;
    let mut file = None;
    while let Some(field) = multipart.next_field().await.map_err(multipart_problem)? {
        if field.name() != Some("file") || file.is_some() {
            return Err(ApiError::new(
                ProblemType::MalformedBody,
                "send exactly one form field, `file`",
            ));
        }
        let filename = field.file_name().unwrap_or("upload").to_owned();
        let bytes = field.bytes().await.map_err(multipart_problem)?;
        file = Some(UploadFile {
            filename,
            bytes: bytes.to_vec(),
        });
    }
    let Some(file) = file else {
        return Err(ApiError::validation(vec![FieldError::new(
            "file",
            "a `file` part is required",
        )]));
    };
    let f = service
        .upload(&ctx, ConversationId::from_uuid(id), file)
        .await?;
    Ok(created(
        format!("/v1/files/{}", f.id),
        FileResponse::from(f),
    ))
}

#[utoipa::path(get, path = "/v1/conversations/{id}/files", tag = "chat",
    params(("id" = Uuid, Path)),
    responses((status = 200, body = FileListResponse),
              (status = 404, body = Problem, content_type = "application/problem+json")),
    security(("bearer" = []), ("api_key" = [])))]
pub async fn list_files(
    State(state): State<AppState>,
    TenantAuth(ctx): TenantAuth,
    Path(id): Path<Uuid>,
) -> Result<Json<FileListResponse>, ApiError> {
    let items = files(&state)?
        .list(&ctx, ConversationId::from_uuid(id))
        .await?;
    Ok(Json(FileListResponse {
        items: items.into_iter().map(Into::into).collect(),
    }))
}

#[utoipa::path(get, path = "/v1/files/{id}", tag = "chat", params(("id" = Uuid, Path)),
    responses((status = 200, body = FileResponse),
              (status = 404, body = Problem, content_type = "application/problem+json")),
    security(("bearer" = []), ("api_key" = [])))]
pub async fn get_file(
    State(state): State<AppState>,
    TenantAuth(ctx): TenantAuth,
    Path(id): Path<Uuid>,
) -> Result<Json<FileResponse>, ApiError> {
    let f = files(&state)?.get(&ctx, FileId::from_uuid(id)).await?;
    Ok(Json(f.into()))
}

/// `attachment; filename="…"` with characters that could break the header dropped.
fn disposition(filename: &str) -> HeaderValue {
    let safe: String = filename
        .chars()
        .filter(|c| c.is_ascii() && !c.is_ascii_control() && *c != '"' && *c != '\\')
        .collect();
    HeaderValue::from_str(&format!("attachment; filename=\"{safe}\""))
        .unwrap_or_else(|_| HeaderValue::from_static("attachment"))
}

/// The file's bytes, as the sniffed type, to be saved rather than shown.
#[utoipa::path(get, path = "/v1/files/{id}/content", tag = "chat", params(("id" = Uuid, Path)),
    responses((status = 200, description = "The file's bytes, as the media type it was stored with (its `mime_type`; \
                `application/octet-stream` when that is not a valid header value)", content_type = "*/*"),
              (status = 404, body = Problem, content_type = "application/problem+json")),
    security(("bearer" = []), ("api_key" = [])))]
pub async fn download(
    State(state): State<AppState>,
    TenantAuth(ctx): TenantAuth,
    Path(id): Path<Uuid>,
) -> Result<Response, ApiError> {
    let (f, bytes) = files(&state)?.download(&ctx, FileId::from_uuid(id)).await?;
    let content_type = HeaderValue::from_str(&f.mime_type)
        .unwrap_or_else(|_| HeaderValue::from_static("application/octet-stream"));
    Ok((
        [
            (header::CONTENT_TYPE, content_type),
            (header::CONTENT_DISPOSITION, disposition(&f.filename)),
            // Stored user content must never be rendered as something else.
            (
                header::X_CONTENT_TYPE_OPTIONS,
                HeaderValue::from_static("nosniff"),
            ),
        ],
        bytes,
    )
        .into_response())
}

#[utoipa::path(delete, path = "/v1/files/{id}", tag = "chat", params(("id" = Uuid, Path)),
    responses((status = 204),
              (status = 404, body = Problem, content_type = "application/problem+json")),
    security(("bearer" = []), ("api_key" = [])))]
pub async fn delete_file(
    State(state): State<AppState>,
    TenantAuth(ctx): TenantAuth,
    Path(id): Path<Uuid>,
) -> Result<StatusCode, ApiError> {
    files(&state)?.delete(&ctx, FileId::from_uuid(id)).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Add one's own file to a knowledge collection as a document (needs
/// `knowledge_manage`); it is ingested like any upload. Returns the file with its
/// `knowledge_document_id`.
#[utoipa::path(post, path = "/v1/files/{id}/send-to-collection", tag = "chat",
    params(("id" = Uuid, Path)), request_body = SendToCollectionBody,
    responses((status = 200, body = FileResponse),
              (status = 403, body = Problem, content_type = "application/problem+json"),
              (status = 404, body = Problem, content_type = "application/problem+json"),
              (status = 415, body = Problem, content_type = "application/problem+json")),
    security(("bearer" = []), ("api_key" = [])))]
pub async fn send_to_collection(
    State(state): State<AppState>,
    TenantAuth(ctx): TenantAuth,
    Path(id): Path<Uuid>,
    Json(body): Json<SendToCollectionBody>,
) -> Result<Json<FileResponse>, ApiError> {
    let f = files(&state)?
        .send_to_collection(
            &ctx,
            FileId::from_uuid(id),
            KnowledgeCollectionId::from_uuid(body.collection_id),
        )
        .await?;
    Ok(Json(f.into()))
}
