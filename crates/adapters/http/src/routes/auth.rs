//! `/v1/auth`: logging in (tenant users, guests and platform superadmins), refreshing
//! and ending sessions, the signed-in user's own profile and password.

use super::NO_STORE;
use crate::auth::TenantAuth;
use crate::extract::{ClientAddr, Json};
use crate::problem::{ApiError, Problem};
use crate::routes::users::UserResponse;
use crate::state::AppState;
use crate::validate::Fields;
use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde::{Deserialize, Serialize};
use std::sync::Arc;
use trellis_identity::service::LoginCmd;
use trellis_identity::{IdentityService, Me, Session};
use trellis_kernel::{Actor, Email, Password, Slug};
use utoipa::ToSchema;
use uuid::Uuid;

/// The routes of this module.
pub fn router() -> Router<AppState> {
    Router::new()
        .route("/v1/auth/login", post(login))
        .route("/v1/auth/refresh", post(refresh))
        .route("/v1/auth/logout", post(logout))
        .route("/v1/auth/me", get(me))
        .route("/v1/auth/password", post(change_own_password))
}

/// Credentials. Without `tenant` this is a platform superadmin login.
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct LoginBody {
    /// The tenant's slug.
    #[schema(
        example = "acme",
        pattern = "^[a-z0-9]+(-[a-z0-9]+)*$",
        min_length = 2,
        max_length = 63
    )]
    pub tenant: Option<String>,
    #[schema(format = Email, max_length = 254)]
    pub email: String,
    #[schema(max_length = 256)]
    pub password: String,
}

impl LoginBody {
    /// # Errors
    /// A 422 naming every malformed field.
    pub fn try_into_domain(self, client: ClientAddr) -> Result<LoginCmd, ApiError> {
        let mut f = Fields::new();
        let tenant = f.check_opt("tenant", self.tenant.as_deref(), Slug::parse);
        let email = f.check(Email::parse(&self.email));
        let password = f.check(Password::parse(&self.password));
        f.finish(|| {
            Some(LoginCmd {
                tenant: tenant?,
                email: email?,
                password: password?,
                client: client.0.map(|ip| ip.to_string()),
            })
        })
    }
}

/// A session: a short-lived access token and, for tenant sessions, a refresh token.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct SessionResponse {
    pub access_token: String,
    #[schema(example = "Bearer")]
    pub token_type: &'static str,
    /// Seconds until the access token expires.
    pub expires_in: i64,
    /// Single use: trade it at `/v1/auth/refresh`. Absent for superadmin sessions.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub refresh_token: Option<String>,
    /// Absent for superadmin sessions.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tenant_id: Option<Uuid>,
    #[schema(example = "tenant_admin")]
    pub role: String,
}

impl From<Session> for SessionResponse {
    fn from(s: Session) -> Self {
        Self {
            access_token: s.access_token,
            token_type: "Bearer",
            expires_in: s.expires_in_secs,
            refresh_token: s.refresh_token,
            tenant_id: s.tenant_id.map(|t| t.as_uuid()),
            role: s.role.as_str().to_owned(),
        }
    }
}

fn session_response(s: Session) -> Response {
    (NO_STORE, Json(SessionResponse::from(s))).into_response()
}

/// A refresh token to trade or revoke.
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RefreshBody {
    pub refresh_token: String,
}

/// The signed-in user, where they act and what they may do.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct MeResponse {
    pub user: UserResponse,
    /// The tenant the session acts in (for a guest, not the user's home tenant).
    pub tenant_id: Uuid,
    pub role: String,
    /// True when the user is a guest in this tenant.
    pub guest: bool,
    /// Permission names, e.g. `users_read`.
    pub permissions: Vec<String>,
}

impl From<Me> for MeResponse {
    fn from(m: Me) -> Self {
        Self {
            user: m.user.into(),
            tenant_id: m.tenant_id.as_uuid(),
            role: m.role.as_str().to_owned(),
            guest: m.guest,
            permissions: m
                .permissions
                .into_iter()
                .map(|p| p.as_str().to_owned())
                .collect(),
        }
    }
}

/// Change your own password; all your sessions end.
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ChangePasswordBody {
    /// Required: proves it is you.
    #[schema(max_length = 256)]
    pub current_password: Option<String>,
    /// 8–256 characters.
    #[schema(min_length = 8, max_length = 256)]
    pub new_password: String,
}

impl ChangePasswordBody {
    /// The current (if given) and new password.
    ///
    /// # Errors
    /// A 422 naming every malformed field.
    pub fn try_into_domain(self) -> Result<(Option<Password>, Password), ApiError> {
        let mut f = Fields::new();
        let current = f.check_opt(
            "current_password",
            self.current_password.as_deref(),
            Password::parse,
        );
        let new = f.check_as("new_password", Password::parse(&self.new_password));
        f.finish(|| Some((current?, new?)))
    }
}

/// Log in. Unknown tenant, unknown user and wrong password all answer the same 401.
#[utoipa::path(
    post, path = "/v1/auth/login", tag = "auth",
    request_body = LoginBody,
    responses(
        (status = 200, body = SessionResponse),
        (status = 401, body = Problem, content_type = "application/problem+json"),
        (status = 422, body = Problem, content_type = "application/problem+json"),
        (status = 429, description = "Too many failed attempts; see Retry-After", body = Problem, content_type = "application/problem+json"),
    )
)]
pub async fn login(
    State(identity): State<Arc<IdentityService>>,
    client: ClientAddr,
    Json(body): Json<LoginBody>,
) -> Result<Response, ApiError> {
    let cmd = body.try_into_domain(client)?;
    Ok(session_response(identity.login(cmd).await?))
}

/// Trade a refresh token for a new session. Each refresh token works once.
#[utoipa::path(
    post, path = "/v1/auth/refresh", tag = "auth",
    request_body = RefreshBody,
    responses(
        (status = 200, body = SessionResponse),
        (status = 401, body = Problem, content_type = "application/problem+json"),
    )
)]
pub async fn refresh(
    State(identity): State<Arc<IdentityService>>,
    Json(body): Json<RefreshBody>,
) -> Result<Response, ApiError> {
    Ok(session_response(
        identity.refresh(&body.refresh_token).await?,
    ))
}

/// End the session a refresh token belongs to. Unknown tokens are ignored.
#[utoipa::path(
    post, path = "/v1/auth/logout", tag = "auth",
    request_body = RefreshBody,
    responses((status = 204, description = "Logged out"))
)]
pub async fn logout(
    State(identity): State<Arc<IdentityService>>,
    Json(body): Json<RefreshBody>,
) -> Result<StatusCode, ApiError> {
    identity.logout(&body.refresh_token).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// The signed-in user.
#[utoipa::path(
    get, path = "/v1/auth/me", tag = "auth",
    responses(
        (status = 200, body = MeResponse),
        (status = 401, body = Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = []), ("api_key" = []))
)]
pub async fn me(
    State(identity): State<Arc<IdentityService>>,
    TenantAuth(ctx): TenantAuth,
) -> Result<Json<MeResponse>, ApiError> {
    Ok(Json(identity.me(&ctx).await?.into()))
}

/// Change your own password.
#[utoipa::path(
    post, path = "/v1/auth/password", tag = "auth",
    request_body = ChangePasswordBody,
    responses(
        (status = 204, description = "Password changed; all sessions ended"),
        (status = 401, description = "Not signed in, or the current password is wrong", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "Called with an API key", body = Problem, content_type = "application/problem+json"),
        (status = 422, body = Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = []))
)]
pub async fn change_own_password(
    State(identity): State<Arc<IdentityService>>,
    TenantAuth(ctx): TenantAuth,
    Json(body): Json<ChangePasswordBody>,
) -> Result<StatusCode, ApiError> {
    // A password belongs to a person: an API key, even one acting for that person,
    // may not change it.
    let Actor::User(me) = ctx.actor() else {
        return Err(ApiError::forbidden(
            "sign in as the user to change their password",
        ));
    };
    let (current, new) = body.try_into_domain()?;
    identity.change_password(&ctx, me, current, new).await?;
    Ok(StatusCode::NO_CONTENT)
}
