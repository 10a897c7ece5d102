//! Authentication extractors. `Authorization: Bearer <jwt>` is an access token;
//! `Authorization: Bearer trl_…` or `X-API-Key: trl_…` is an API key. Both are
//! verified by the identity service; this module only reads headers and checks that
//! the principal suits the route: a platform token on a tenant route (or a tenant
//! token on a platform route) is 403, a missing or bad credential 401.

use crate::problem::ApiError;
use axum::extract::{FromRef, FromRequestParts};
use axum::http::HeaderMap;
use axum::http::header::AUTHORIZATION;
use axum::http::request::Parts;
use std::sync::Arc;
use trellis_identity::{IdentityService, Principal};
use trellis_kernel::{PlatformCtx, TenantCtx};

/// The header some clients prefer for API keys.
pub const API_KEY_HEADER: &str = "x-api-key";

/// What every API key starts with (see `trellis_identity::service::API_KEY_PREFIX`).
const API_KEY_MARK: &str = "trl_";

/// A credential as presented, not yet verified.
#[derive(Debug, PartialEq, Eq)]
enum Credential<'a> {
    AccessToken(&'a str),
    ApiKey(&'a str),
}

fn credential(headers: &HeaderMap) -> Result<Credential<'_>, ApiError> {
    if let Some(value) = headers.get(AUTHORIZATION) {
        let value = value
            .to_str()
            .map_err(|_| ApiError::unauthenticated("the Authorization header is not valid"))?;
        let (scheme, token) = value.split_once(' ').unwrap_or((value, ""));
        let token = token.trim();
        if !scheme.eq_ignore_ascii_case("bearer") || token.is_empty() {
            return Err(ApiError::unauthenticated(
                "use `Authorization: Bearer <token>` or `X-API-Key: <key>`",
            ));
        }
        return Ok(if token.starts_with(API_KEY_MARK) {
            Credential::ApiKey(token)
        } else {
            Credential::AccessToken(token)
        });
    }
    if let Some(value) = headers.get(API_KEY_HEADER) {
        let key = value
            .to_str()
            .map_err(|_| ApiError::unauthenticated("the X-API-Key header is not valid"))?
            .trim();
        if key.is_empty() {
            return Err(ApiError::unauthenticated("the X-API-Key header is empty"));
        }
        return Ok(Credential::ApiKey(key));
    }
    Err(ApiError::unauthenticated(
        "missing credentials: send a bearer token or an API key",
    ))
}

/// Verifies the request's credential once; later extractors reuse the result.
async fn principal(parts: &mut Parts, identity: &IdentityService) -> Result<Principal, ApiError> {
    if let Some(p) = parts.extensions.get::<Principal>() {
        return Ok(p.clone());
    }
    let principal = match credential(&parts.headers)? {
        Credential::AccessToken(t) => identity.authenticate_token(t)?,
        Credential::ApiKey(k) => Principal::Tenant(identity.authenticate_api_key(k).await?),
    };
    let span = tracing::Span::current();
    match &principal {
        Principal::Tenant(ctx) => {
            span.record("tenant_id", tracing::field::display(ctx.tenant_id()));
        }
        Principal::Platform(_) => {
            span.record("tenant_id", tracing::field::display("platform"));
        }
    }
    parts.extensions.insert(principal.clone());
    Ok(principal)
}

/// A request authenticated as a user or API key of one tenant.
#[derive(Debug, Clone)]
pub struct TenantAuth(pub TenantCtx);

impl<S> FromRequestParts<S> for TenantAuth
where
    Arc<IdentityService>: FromRef<S>,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        let identity = Arc::<IdentityService>::from_ref(state);
        match principal(parts, &identity).await? {
            Principal::Tenant(ctx) => Ok(TenantAuth(ctx)),
            Principal::Platform(_) => Err(ApiError::forbidden(
                "this endpoint acts inside a tenant; a platform token cannot use it",
            )),
        }
    }
}

/// A request authenticated as a platform superadmin.
#[derive(Debug, Clone)]
pub struct PlatformAuth(pub PlatformCtx);

impl<S> FromRequestParts<S> for PlatformAuth
where
    Arc<IdentityService>: FromRef<S>,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        let identity = Arc::<IdentityService>::from_ref(state);
        match principal(parts, &identity).await? {
            Principal::Platform(ctx) => Ok(PlatformAuth(ctx)),
            Principal::Tenant(_) => Err(ApiError::forbidden(
                "this endpoint is for platform superadmins only",
            )),
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;
    use crate::problem::ProblemType;
    use axum::http::HeaderValue;

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.insert(*k, HeaderValue::from_str(v).unwrap());
        }
        h
    }

    #[test]
    fn a_bearer_jwt_is_an_access_token() {
        let h = headers(&[("authorization", "Bearer eyJhbGciOi.x.y")]);
        assert_eq!(
            credential(&h).unwrap(),
            Credential::AccessToken("eyJhbGciOi.x.y")
        );
    }

    #[test]
    fn a_bearer_trl_token_is_an_api_key() {
        let h = headers(&[("authorization", "bearer trl_abc_def_ghi")]);
        assert_eq!(
            credential(&h).unwrap(),
            Credential::ApiKey("trl_abc_def_ghi")
        );
    }

    #[test]
    fn the_x_api_key_header_is_an_api_key() {
        let h = headers(&[("x-api-key", "trl_abc_def_ghi")]);
        assert_eq!(
            credential(&h).unwrap(),
            Credential::ApiKey("trl_abc_def_ghi")
        );
    }

    #[test]
    fn no_credential_is_unauthenticated() {
        let err = credential(&HeaderMap::new()).unwrap_err();
        assert_eq!(err.kind(), ProblemType::Unauthenticated);
    }

    #[test]
    fn basic_auth_is_refused() {
        let h = headers(&[("authorization", "Basic dXNlcjpwYXNz")]);
        assert_eq!(
            credential(&h).unwrap_err().kind(),
            ProblemType::Unauthenticated
        );
    }

    #[test]
    fn an_empty_bearer_is_refused() {
        let h = headers(&[("authorization", "Bearer ")]);
        assert_eq!(
            credential(&h).unwrap_err().kind(),
            ProblemType::Unauthenticated
        );
    }
}
