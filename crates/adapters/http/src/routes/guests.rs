//! `/v1/guests`: users of other tenants admitted to the caller's tenant with a role.

use super::{PageQuery, created, list_response};
use crate::auth::TenantAuth;
use crate::extract::{Json, Path, Query};
use crate::problem::{ApiError, Problem};
use crate::routes::users::parse_role;
use crate::state::AppState;
use crate::validate::Fields;
use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::Response;
use axum::routing::{delete, get};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use std::sync::Arc;
use trellis_identity::{IdentityService, Membership};
use trellis_kernel::{Email, MembershipId, Role, Slug};
use utoipa::ToSchema;
use uuid::Uuid;

/// The routes of this module.
pub fn router() -> Router<AppState> {
    Router::new()
        .route("/v1/guests", get(list_guests).post(add_guest))
        .route("/v1/guests/{id}", delete(remove_guest))
}

/// A guest membership.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct GuestResponse {
    pub id: Uuid,
    /// The tenant the guest's account belongs to.
    pub home_tenant_id: Uuid,
    pub user_id: Uuid,
    pub email: String,
    /// The role the guest holds here.
    pub role: String,
    #[serde(serialize_with = "trellis_kernel::timestamp::rfc3339")]
    pub created_at: DateTime<Utc>,
}

impl From<Membership> for GuestResponse {
    fn from(m: Membership) -> Self {
        Self {
            id: m.id.as_uuid(),
            home_tenant_id: m.home_tenant_id.as_uuid(),
            user_id: m.user_id.as_uuid(),
            email: m.email.as_str().to_owned(),
            role: m.role.as_str().to_owned(),
            created_at: m.created_at,
        }
    }
}

list_response!(
    /// One page of guests.
    GuestListResponse,
    GuestResponse
);

/// Admit an existing user of another tenant as a guest.
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AddGuestBody {
    /// The slug of the guest's home tenant.
    #[schema(pattern = "^[a-z0-9]+(-[a-z0-9]+)*$", min_length = 2, max_length = 63)]
    pub home_tenant: String,
    #[schema(format = Email, max_length = 254)]
    pub email: String,
    #[schema(example = "user", value_type = Role)]
    pub role: String,
}

impl AddGuestBody {
    /// # Errors
    /// A 422 naming every invalid field.
    pub fn try_into_domain(self) -> Result<(Slug, Email, Role), ApiError> {
        let mut f = Fields::new();
        let home = f.check_as("home_tenant", Slug::parse(&self.home_tenant));
        let email = f.check(Email::parse(&self.email));
        let role = f.check(parse_role(&self.role));
        f.finish(|| Some((home?, email?, role?)))
    }
}

/// List the tenant's guests.
#[utoipa::path(
    get, path = "/v1/guests", tag = "guests",
    params(PageQuery),
    responses(
        (status = 200, body = GuestListResponse),
        (status = 400, body = Problem, content_type = "application/problem+json"),
        (status = 403, body = Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = []), ("api_key" = []))
)]
pub async fn list_guests(
    State(identity): State<Arc<IdentityService>>,
    TenantAuth(ctx): TenantAuth,
    Query(q): Query<PageQuery>,
) -> Result<Json<GuestListResponse>, ApiError> {
    let page = identity.list_guests(&ctx, q.page()?).await?;
    Ok(Json(GuestListResponse::from_page(
        page,
        GuestResponse::from,
    )))
}

/// Admit a guest.
#[utoipa::path(
    post, path = "/v1/guests", tag = "guests",
    request_body = AddGuestBody,
    responses(
        (status = 201, body = GuestResponse),
        (status = 403, body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such home tenant or user there", body = Problem, content_type = "application/problem+json"),
        (status = 409, body = Problem, content_type = "application/problem+json"),
        (status = 422, body = Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = []), ("api_key" = []))
)]
pub async fn add_guest(
    State(identity): State<Arc<IdentityService>>,
    TenantAuth(ctx): TenantAuth,
    Json(body): Json<AddGuestBody>,
) -> Result<Response, ApiError> {
    let (home, email, role) = body.try_into_domain()?;
    let m = identity.add_guest(&ctx, &home, email, role).await?;
    Ok(created(
        format!("/v1/guests/{}", m.id),
        GuestResponse::from(m),
    ))
}

/// Remove a guest; their sessions in this tenant end.
#[utoipa::path(
    delete, path = "/v1/guests/{id}", tag = "guests",
    params(("id" = Uuid, Path, description = "Membership id")),
    responses(
        (status = 204, description = "Removed"),
        (status = 403, body = Problem, content_type = "application/problem+json"),
        (status = 404, body = Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = []), ("api_key" = []))
)]
pub async fn remove_guest(
    State(identity): State<Arc<IdentityService>>,
    TenantAuth(ctx): TenantAuth,
    Path(id): Path<Uuid>,
) -> Result<StatusCode, ApiError> {
    identity
        .remove_guest(&ctx, MembershipId::from_uuid(id))
        .await?;
    Ok(StatusCode::NO_CONTENT)
}
