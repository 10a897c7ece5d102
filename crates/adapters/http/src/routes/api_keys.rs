//! `/v1/api-keys`: creating (the secret is shown once), listing and revoking the
//! tenant's API keys.

use super::{NO_STORE, PageQuery, list_response};
use crate::auth::TenantAuth;
use crate::extract::{Json, Path, Query};
use crate::problem::{ApiError, Problem};
use crate::state::AppState;
use crate::validate::Fields;
use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use std::sync::Arc;
use trellis_identity::service::{CreateApiKey, CreatedApiKey};
use trellis_identity::{ApiKey, IdentityService};
use trellis_kernel::{ApiKeyId, Permission};
use utoipa::ToSchema;
use uuid::Uuid;

/// The routes of this module.
pub fn router() -> Router<AppState> {
    Router::new()
        .route("/v1/api-keys", get(list_api_keys).post(create_api_key))
        .route("/v1/api-keys/{id}", delete(revoke_api_key))
}

/// An API key as listed; its secret is never shown again after creation.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct ApiKeyResponse {
    pub id: Uuid,
    pub name: String,
    /// The public part of the key, to tell keys apart.
    pub prefix: String,
    /// Permission names the key is limited to.
    pub scopes: Vec<String>,
    /// The user the key acts for.
    pub created_by: Uuid,
    #[serde(serialize_with = "trellis_kernel::timestamp::rfc3339_opt")]
    pub expires_at: Option<DateTime<Utc>>,
    /// The latest use, to the minute: uses within a minute of it do not move it.
    #[serde(serialize_with = "trellis_kernel::timestamp::rfc3339_opt")]
    pub last_used_at: Option<DateTime<Utc>>,
    #[serde(serialize_with = "trellis_kernel::timestamp::rfc3339_opt")]
    pub revoked_at: Option<DateTime<Utc>>,
    #[serde(serialize_with = "trellis_kernel::timestamp::rfc3339")]
    pub created_at: DateTime<Utc>,
}

impl From<ApiKey> for ApiKeyResponse {
    fn from(k: ApiKey) -> Self {
        Self {
            id: k.id.as_uuid(),
            name: k.name,
            prefix: k.prefix,
            scopes: k.scopes.iter().map(|p| p.as_str().to_owned()).collect(),
            created_by: k.created_by.as_uuid(),
            expires_at: k.expires_at,
            last_used_at: k.last_used_at,
            revoked_at: k.revoked_at,
            created_at: k.created_at,
        }
    }
}

list_response!(
    /// One page of API keys, revoked ones included.
    ApiKeyListResponse,
    ApiKeyResponse
);

/// A newly created key, with its full secret. Store it now: it is not shown again.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct CreatedApiKeyResponse {
    pub id: Uuid,
    pub name: String,
    pub prefix: String,
    pub scopes: Vec<String>,
    #[serde(serialize_with = "trellis_kernel::timestamp::rfc3339_opt")]
    pub expires_at: Option<DateTime<Utc>>,
    #[serde(serialize_with = "trellis_kernel::timestamp::rfc3339")]
    pub created_at: DateTime<Utc>,
    /// The full secret (`trl_…`), for `Authorization: Bearer` or `X-API-Key`.
    pub key: String,
}

impl From<CreatedApiKey> for CreatedApiKeyResponse {
    fn from(c: CreatedApiKey) -> Self {
        Self {
            id: c.key.id.as_uuid(),
            name: c.key.name,
            prefix: c.key.prefix,
            scopes: c.key.scopes.iter().map(|p| p.as_str().to_owned()).collect(),
            expires_at: c.key.expires_at,
            created_at: c.key.created_at,
            key: c.secret,
        }
    }
}

/// A key to create.
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateApiKeyBody {
    /// 1 to 100 characters, no control characters but line breaks.
    #[schema(
        min_length = 1,
        max_length = 100,
        pattern = "^[^\\x00-\\x09\\x0B-\\x1F\\x7F-\\x9F]+$"
    )]
    pub name: String,
    /// Permission names; absent or empty means every permission of your role. Only
    /// permissions your role holds (403 otherwise).
    #[serde(default)]
    #[schema(value_type = Vec<Permission>)]
    pub scopes: Vec<String>,
    /// RFC 3339; absent means the key never expires.
    pub expires_at: Option<DateTime<Utc>>,
}

impl CreateApiKeyBody {
    /// # Errors
    /// A 422 naming every unknown scope.
    pub fn try_into_domain(self) -> Result<CreateApiKey, ApiError> {
        let mut f = Fields::new();
        let mut scopes = Vec::with_capacity(self.scopes.len());
        for s in &self.scopes {
            match s.parse::<Permission>() {
                Ok(p) => scopes.push(p),
                Err(_) => f.push("scopes", format!("unknown permission `{s}`")),
            }
        }
        f.finish(|| {
            Some(CreateApiKey {
                name: self.name,
                scopes,
                expires_at: self.expires_at,
            })
        })
    }
}

/// List the tenant's API keys.
#[utoipa::path(
    get, path = "/v1/api-keys", tag = "api-keys",
    params(PageQuery),
    responses(
        (status = 200, body = ApiKeyListResponse),
        (status = 400, body = Problem, content_type = "application/problem+json"),
        (status = 403, body = Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = []), ("api_key" = []))
)]
pub async fn list_api_keys(
    State(identity): State<Arc<IdentityService>>,
    TenantAuth(ctx): TenantAuth,
    Query(q): Query<PageQuery>,
) -> Result<Json<ApiKeyListResponse>, ApiError> {
    let page = identity.list_api_keys(&ctx, q.page()?).await?;
    Ok(Json(ApiKeyListResponse::from_page(
        page,
        ApiKeyResponse::from,
    )))
}

/// Create an API key acting as you, limited to `scopes`. Only users (not other keys)
/// may create keys.
#[utoipa::path(
    post, path = "/v1/api-keys", tag = "api-keys",
    request_body = CreateApiKeyBody,
    responses(
        (status = 201, body = CreatedApiKeyResponse),
        (status = 403, body = Problem, content_type = "application/problem+json"),
        (status = 422, body = Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = []))
)]
pub async fn create_api_key(
    State(identity): State<Arc<IdentityService>>,
    TenantAuth(ctx): TenantAuth,
    Json(body): Json<CreateApiKeyBody>,
) -> Result<Response, ApiError> {
    let cmd = body.try_into_domain()?;
    let created = identity.create_api_key(&ctx, cmd).await?;
    let location = format!("/v1/api-keys/{}", created.key.id);
    Ok((
        StatusCode::CREATED,
        // The body holds a secret: keep it out of every cache.
        NO_STORE,
        [(header::LOCATION, location)],
        Json(CreatedApiKeyResponse::from(created)),
    )
        .into_response())
}

/// Revoke an API key; it stops working with the next request. Idempotent.
#[utoipa::path(
    delete, path = "/v1/api-keys/{id}", tag = "api-keys",
    params(("id" = Uuid, Path, description = "API key id")),
    responses(
        (status = 200, description = "The revoked key", body = ApiKeyResponse),
        (status = 403, body = Problem, content_type = "application/problem+json"),
        (status = 404, body = Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = []), ("api_key" = []))
)]
pub async fn revoke_api_key(
    State(identity): State<Arc<IdentityService>>,
    TenantAuth(ctx): TenantAuth,
    Path(id): Path<Uuid>,
) -> Result<Json<ApiKeyResponse>, ApiError> {
    let key = identity
        .revoke_api_key(&ctx, ApiKeyId::from_uuid(id))
        .await?;
    Ok(Json(key.into()))
}
