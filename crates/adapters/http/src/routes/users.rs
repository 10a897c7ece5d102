//! `/v1/users`: listing, inviting, viewing, updating, deleting the users of the
//! caller's tenant, and admin password resets. Every lookup runs in the caller's
//! tenant, so another tenant's user id is simply not found (404, never 403).

use super::{PageQuery, created, list_response};
use crate::auth::TenantAuth;
use crate::extract::{Json, Path, Query};
use crate::problem::{ApiError, Problem};
use crate::validate::{Fields, double_option};
use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use std::sync::Arc;
use trellis_identity::service::CreateUser;
use trellis_identity::{
    IdentityService, Preferences, Tier, User, UserFilter, UserPatch, Username, parse_name,
};
use trellis_kernel::{Email, HttpUrl, Password, Role, UserId};
use utoipa::{IntoParams, ToSchema};
use uuid::Uuid;

use crate::state::AppState;

/// The routes of this module.
pub fn router() -> Router<AppState> {
    Router::new()
        .route("/v1/users", get(list_users).post(create_user))
        .route(
            "/v1/users/{id}",
            get(get_user).patch(update_user).delete(delete_user),
        )
        .route("/v1/users/{id}/password", post(reset_password))
}

/// UI preferences.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct PreferencesResponse {
    pub theme: Option<String>,
    pub language: Option<String>,
    pub font_size: Option<String>,
}

impl From<Preferences> for PreferencesResponse {
    fn from(p: Preferences) -> Self {
        Self {
            theme: p.theme,
            language: p.language,
            font_size: p.font_size,
        }
    }
}

/// A user as admins and the user themself see it.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct UserResponse {
    pub id: Uuid,
    pub tenant_id: Uuid,
    pub email: String,
    pub email_verified: bool,
    pub name: String,
    pub username: Option<String>,
    pub avatar_url: Option<String>,
    /// One of the role names of the permission model, e.g. `tenant_admin`, `user`.
    #[schema(example = "user")]
    pub role: &'static str,
    /// `free`, `basic`, `pro` or `enterprise`.
    #[schema(example = "free")]
    pub tier: &'static str,
    /// The external identity provider the user signs in with, if any.
    pub oauth_provider: Option<String>,
    pub preferences: PreferencesResponse,
    pub active: bool,
    #[serde(serialize_with = "trellis_kernel::timestamp::rfc3339_opt")]
    pub last_login_at: Option<DateTime<Utc>>,
    #[serde(serialize_with = "trellis_kernel::timestamp::rfc3339")]
    pub created_at: DateTime<Utc>,
    #[serde(serialize_with = "trellis_kernel::timestamp::rfc3339")]
    pub updated_at: DateTime<Utc>,
}

impl From<User> for UserResponse {
    fn from(u: User) -> Self {
        Self {
            id: u.id.as_uuid(),
            tenant_id: u.tenant_id.as_uuid(),
            email: u.email.into_string(),
            email_verified: u.email_verified,
            name: u.name,
            username: u.username.map(|n| n.into_string()),
            avatar_url: u.avatar_url.map(|a| a.into_string()),
            role: u.role.as_str(),
            tier: u.tier.as_str(),
            oauth_provider: u.oauth.map(|o| o.provider),
            preferences: u.preferences.into(),
            active: u.active,
            last_login_at: u.last_login_at,
            created_at: u.created_at,
            updated_at: u.updated_at,
        }
    }
}

list_response!(
    /// One page of users.
    UserListResponse,
    UserResponse
);

/// `?limit=&cursor=&role=&active=`.
#[derive(Debug, Clone, Default, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct UserListQuery {
    /// Items per page, 1 to 100 (default 20).
    pub limit: Option<u32>,
    /// `next_cursor` of the previous page.
    pub cursor: Option<String>,
    /// Only users with this role.
    pub role: Option<String>,
    /// Only active (`true`) or deactivated (`false`) users.
    pub active: Option<bool>,
}

/// A role name from the request, as a field error when unknown.
pub(crate) fn parse_role(s: &str) -> Result<Role, trellis_kernel::InvalidValue> {
    s.parse::<Role>()
        .map_err(|e| trellis_kernel::InvalidValue::new("role", e.to_string()))
}

/// Invite a user into the caller's tenant.
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateUserBody {
    #[schema(format = Email, max_length = 254)]
    pub email: String,
    #[schema(min_length = 1, max_length = 200)]
    pub name: String,
    #[schema(example = "user", value_type = Role)]
    pub role: String,
    /// Without one the user signs in through OAuth or after a reset. 8–256 characters.
    #[schema(min_length = 8, max_length = 256)]
    pub password: Option<String>,
    /// 2 to 64 letters, digits, `.`, `_` or `-`.
    #[schema(pattern = "^[A-Za-z0-9._-]{2,64}$")]
    pub username: Option<String>,
    /// An absolute http(s) URL.
    #[schema(
        format = "uri",
        max_length = 2048,
        pattern = "^[Hh][Tt][Tt][Pp][Ss]?://[^/?#]"
    )]
    pub avatar_url: Option<String>,
    /// `free` (default), `basic`, `pro` or `enterprise`.
    #[schema(pattern = "^(free|basic|pro|enterprise)$")]
    pub tier: Option<String>,
}

impl CreateUserBody {
    /// # Errors
    /// A 422 naming every invalid field.
    pub fn try_into_domain(self) -> Result<CreateUser, ApiError> {
        let mut f = Fields::new();
        let email = f.check(Email::parse(&self.email));
        let name = f.check(parse_name(&self.name));
        let role = f.check(parse_role(&self.role));
        let password = f.check_opt("password", self.password.as_deref(), Password::parse);
        let username = f.check_opt("username", self.username.as_deref(), Username::parse);
        let avatar_url = f.check_opt("avatar_url", self.avatar_url.as_deref(), HttpUrl::parse);
        let tier = f.check_opt("tier", self.tier.as_deref(), Tier::parse);
        f.finish(|| {
            Some(CreateUser {
                email: email?,
                name: name?,
                role: role?,
                password: password?,
                username: username?,
                avatar_url: avatar_url?,
                tier: tier?.unwrap_or_default(),
                oauth: None,
                preferences: Preferences::default(),
            })
        })
    }
}

/// UI preferences; each at most 32 characters.
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PreferencesBody {
    pub theme: Option<String>,
    pub language: Option<String>,
    pub font_size: Option<String>,
}

/// A partial update: absent fields stay as they are; `null` clears `username` and
/// `avatar_url`. Role, tier and `active` need the `users_manage` permission.
#[derive(Debug, Clone, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UpdateUserBody {
    #[schema(min_length = 1, max_length = 200)]
    pub name: Option<String>,
    #[serde(default, deserialize_with = "double_option")]
    #[schema(value_type = Option<String>, pattern = "^[A-Za-z0-9._-]{2,64}$")]
    pub username: Option<Option<String>>,
    #[serde(default, deserialize_with = "double_option")]
    #[schema(value_type = Option<String>, format = "uri", max_length = 2048, pattern = "^[Hh][Tt][Tt][Pp][Ss]?://[^/?#]")]
    pub avatar_url: Option<Option<String>>,
    #[schema(value_type = Option<Role>)]
    pub role: Option<String>,
    /// `free`, `basic`, `pro` or `enterprise`.
    #[schema(pattern = "^(free|basic|pro|enterprise)$")]
    pub tier: Option<String>,
    pub active: Option<bool>,
    /// Replaces all preferences.
    pub preferences: Option<PreferencesBody>,
}

impl UpdateUserBody {
    /// # Errors
    /// A 422 naming every invalid field.
    pub fn try_into_domain(self) -> Result<UserPatch, ApiError> {
        let mut f = Fields::new();
        let name = f.check_opt("name", self.name.as_deref(), parse_name);
        let username = match self.username {
            None => Some(None),
            Some(None) => Some(Some(None)),
            Some(Some(u)) => f.check(Username::parse(&u)).map(|u| Some(Some(u))),
        };
        let avatar_url = match self.avatar_url {
            None => Some(None),
            Some(None) => Some(Some(None)),
            Some(Some(u)) => f
                .check_as("avatar_url", HttpUrl::parse(&u))
                .map(|u| Some(Some(u))),
        };
        let role = f.check_opt("role", self.role.as_deref(), parse_role);
        let tier = f.check_opt("tier", self.tier.as_deref(), Tier::parse);
        let preferences = match &self.preferences {
            None => Some(None),
            Some(p) => f
                .check(Preferences::new(
                    p.theme.as_deref(),
                    p.language.as_deref(),
                    p.font_size.as_deref(),
                ))
                .map(Some),
        };
        f.finish(|| {
            Some(UserPatch {
                name: name?,
                username: username?,
                avatar_url: avatar_url?,
                role: role?,
                tier: tier?,
                active: self.active,
                preferences: preferences?,
                email_verified: None,
            })
        })
    }
}

/// An admin setting another user's password. All of that user's sessions end.
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ResetPasswordBody {
    /// 8–256 characters.
    #[schema(min_length = 8, max_length = 256)]
    pub new_password: String,
}

impl ResetPasswordBody {
    /// # Errors
    /// A 422 naming `new_password`.
    pub fn try_into_domain(self) -> Result<Password, ApiError> {
        let mut f = Fields::new();
        let new = f.check_as("new_password", Password::parse(&self.new_password));
        f.finish(|| new)
    }
}

/// List the tenant's users, oldest first.
#[utoipa::path(
    get, path = "/v1/users", tag = "users",
    params(UserListQuery),
    responses(
        (status = 200, body = UserListResponse),
        (status = 400, body = Problem, content_type = "application/problem+json"),
        (status = 401, body = Problem, content_type = "application/problem+json"),
        (status = 403, body = Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = []), ("api_key" = []))
)]
pub async fn list_users(
    State(identity): State<Arc<IdentityService>>,
    TenantAuth(ctx): TenantAuth,
    Query(q): Query<UserListQuery>,
) -> Result<Json<UserListResponse>, ApiError> {
    let page = PageQuery {
        limit: q.limit,
        cursor: q.cursor,
    }
    .page()?;
    let role = q
        .role
        .as_deref()
        .map(|r| parse_role(r).map_err(|e| ApiError::bad_parameter("role", e.reason)))
        .transpose()?;
    let filter = UserFilter {
        role,
        active: q.active,
    };
    let users = identity.list_users(&ctx, &filter, page).await?;
    Ok(Json(UserListResponse::from_page(users, UserResponse::from)))
}

/// Invite a user into the caller's tenant.
#[utoipa::path(
    post, path = "/v1/users", tag = "users",
    request_body = CreateUserBody,
    responses(
        (status = 201, body = UserResponse),
        (status = 400, body = Problem, content_type = "application/problem+json"),
        (status = 403, body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "Email taken, or the tenant's user limit is reached", body = Problem, content_type = "application/problem+json"),
        (status = 422, body = Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = []), ("api_key" = []))
)]
pub async fn create_user(
    State(identity): State<Arc<IdentityService>>,
    TenantAuth(ctx): TenantAuth,
    Json(body): Json<CreateUserBody>,
) -> Result<Response, ApiError> {
    let cmd = body.try_into_domain()?;
    let user = identity.create_user(&ctx, cmd).await?;
    Ok(created(
        format!("/v1/users/{}", user.id),
        UserResponse::from(user),
    ))
}

/// One user of the caller's tenant (anyone may read themself).
#[utoipa::path(
    get, path = "/v1/users/{id}", tag = "users",
    params(("id" = Uuid, Path, description = "User id")),
    responses(
        (status = 200, body = UserResponse),
        (status = 404, body = Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = []), ("api_key" = []))
)]
pub async fn get_user(
    State(identity): State<Arc<IdentityService>>,
    TenantAuth(ctx): TenantAuth,
    Path(id): Path<Uuid>,
) -> Result<Json<UserResponse>, ApiError> {
    let user = identity.get_user(&ctx, UserId::from_uuid(id)).await?;
    Ok(Json(user.into()))
}

/// Change a user's profile, role, tier or active flag.
#[utoipa::path(
    patch, path = "/v1/users/{id}", tag = "users",
    params(("id" = Uuid, Path, description = "User id")),
    request_body = UpdateUserBody,
    responses(
        (status = 200, body = UserResponse),
        (status = 403, body = Problem, content_type = "application/problem+json"),
        (status = 404, body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "Another user of the tenant has this username", body = Problem, content_type = "application/problem+json"),
        (status = 422, body = Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = []), ("api_key" = []))
)]
pub async fn update_user(
    State(identity): State<Arc<IdentityService>>,
    TenantAuth(ctx): TenantAuth,
    Path(id): Path<Uuid>,
    Json(body): Json<UpdateUserBody>,
) -> Result<Json<UserResponse>, ApiError> {
    let patch = body.try_into_domain()?;
    let user = identity
        .update_user(&ctx, UserId::from_uuid(id), patch)
        .await?;
    Ok(Json(user.into()))
}

/// Delete a user: their sessions end and their API keys are revoked.
#[utoipa::path(
    delete, path = "/v1/users/{id}", tag = "users",
    params(("id" = Uuid, Path, description = "User id")),
    responses(
        (status = 204, description = "Deleted"),
        (status = 403, body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "One cannot delete oneself", body = Problem, content_type = "application/problem+json"),
        (status = 404, body = Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = []), ("api_key" = []))
)]
pub async fn delete_user(
    State(identity): State<Arc<IdentityService>>,
    TenantAuth(ctx): TenantAuth,
    Path(id): Path<Uuid>,
) -> Result<StatusCode, ApiError> {
    identity.delete_user(&ctx, UserId::from_uuid(id)).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Set another user's password (admins). Use `/v1/auth/password` for your own.
#[utoipa::path(
    post, path = "/v1/users/{id}/password", tag = "users",
    params(("id" = Uuid, Path, description = "User id")),
    request_body = ResetPasswordBody,
    responses(
        (status = 204, description = "Password set; the user's sessions ended"),
        (status = 403, body = Problem, content_type = "application/problem+json"),
        (status = 404, body = Problem, content_type = "application/problem+json"),
        (status = 422, body = Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = []), ("api_key" = []))
)]
pub async fn reset_password(
    State(identity): State<Arc<IdentityService>>,
    TenantAuth(ctx): TenantAuth,
    Path(id): Path<Uuid>,
    Json(body): Json<ResetPasswordBody>,
) -> Result<Response, ApiError> {
    let new = body.try_into_domain()?;
    identity
        .change_password(&ctx, UserId::from_uuid(id), None, new)
        .await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    #[test]
    fn a_create_body_reports_every_bad_field() {
        let body: CreateUserBody = serde_json::from_value(serde_json::json!({
            "email": "nope", "name": "", "role": "emperor", "password": "short"
        }))
        .unwrap();
        let err = body.try_into_domain().unwrap_err();
        let mut fields: Vec<&str> = err.errors().iter().map(|e| e.field.as_str()).collect();
        fields.sort_unstable();
        assert_eq!(fields, vec!["email", "name", "password", "role"]);
    }

    #[test]
    fn a_patch_distinguishes_clearing_from_keeping() {
        let keep: UpdateUserBody = serde_json::from_str("{}").unwrap();
        let clear: UpdateUserBody = serde_json::from_str(r#"{"avatar_url":null}"#).unwrap();
        assert_eq!(keep.try_into_domain().unwrap().avatar_url, None);
        assert_eq!(clear.try_into_domain().unwrap().avatar_url, Some(None));
    }

    #[test]
    fn unknown_fields_in_a_patch_are_refused() {
        assert!(serde_json::from_str::<UpdateUserBody>(r#"{"email":"x@y.z"}"#).is_err());
    }
}
