//! RFC 9457 problem details: the one error shape every endpoint answers with.
//!
//! Handlers return [`ApiError`]; domain errors become one through a single exhaustive
//! `match` per domain (no `_` arm, so a new domain variant does not compile until it
//! is mapped here). The `type` URIs are a stable contract: clients branch on them,
//! never on `title` or `detail`.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use trellis_identity::IdentityError;
use trellis_kernel::{InvalidPage, InvalidValue};
use trellis_tenancy::TenancyError;
use utoipa::ToSchema;

/// The media type of every error body.
pub const PROBLEM_JSON: &str = "application/problem+json";

/// The kinds of problem this API reports. Each has a stable `type` URI.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ProblemType {
    NotFound,
    Conflict,
    Validation,
    Unauthenticated,
    Forbidden,
    TenantSuspended,
    Throttled,
    LimitReached,
    /// A token budget is used up until `resets_at` (429 with `Retry-After`).
    QuotaExceeded,
    PayloadTooLarge,
    MalformedBody,
    BadRequest,
    UnsupportedMediaType,
    MethodNotAllowed,
    NotReady,
    Internal,
}

impl ProblemType {
    /// The stable identifier clients branch on.
    #[must_use]
    pub fn uri(self) -> &'static str {
        match self {
            ProblemType::NotFound => "https://trellis.dev/problems/not-found",
            ProblemType::Conflict => "https://trellis.dev/problems/conflict",
            ProblemType::Validation => "https://trellis.dev/problems/validation",
            ProblemType::Unauthenticated => "https://trellis.dev/problems/unauthenticated",
            ProblemType::Forbidden => "https://trellis.dev/problems/forbidden",
            ProblemType::TenantSuspended => "https://trellis.dev/problems/tenant-suspended",
            ProblemType::Throttled => "https://trellis.dev/problems/throttled",
            ProblemType::LimitReached => "https://trellis.dev/problems/limit-reached",
            ProblemType::QuotaExceeded => "https://trellis.dev/problems/quota-exceeded",
            ProblemType::PayloadTooLarge => "https://trellis.dev/problems/payload-too-large",
            ProblemType::MalformedBody => "https://trellis.dev/problems/malformed-body",
            ProblemType::BadRequest => "https://trellis.dev/problems/bad-request",
            ProblemType::UnsupportedMediaType => {
                "https://trellis.dev/problems/unsupported-media-type"
            }
            ProblemType::MethodNotAllowed => "https://trellis.dev/problems/method-not-allowed",
            ProblemType::NotReady => "https://trellis.dev/problems/not-ready",
            ProblemType::Internal => "https://trellis.dev/problems/internal",
        }
    }

    /// A short, human-readable summary that does not change between occurrences.
    #[must_use]
    pub fn title(self) -> &'static str {
        match self {
            ProblemType::NotFound => "Not found",
            ProblemType::Conflict => "Conflict",
            ProblemType::Validation => "Validation failed",
            ProblemType::Unauthenticated => "Authentication required",
            ProblemType::Forbidden => "Forbidden",
            ProblemType::TenantSuspended => "Tenant suspended",
            ProblemType::Throttled => "Too many attempts",
            ProblemType::LimitReached => "Limit reached",
            ProblemType::QuotaExceeded => "Token budget used up",
            ProblemType::PayloadTooLarge => "Payload too large",
            ProblemType::MalformedBody => "Malformed request body",
            ProblemType::BadRequest => "Bad request",
            ProblemType::UnsupportedMediaType => "Unsupported media type",
            ProblemType::MethodNotAllowed => "Method not allowed",
            ProblemType::NotReady => "Not ready",
            ProblemType::Internal => "Internal server error",
        }
    }

    #[must_use]
    pub fn status(self) -> StatusCode {
        match self {
            ProblemType::NotFound => StatusCode::NOT_FOUND,
            // A plan limit is a conflict with the tenant's current state, not a
            // permission question: the same request succeeds once a seat is freed.
            ProblemType::Conflict | ProblemType::LimitReached => StatusCode::CONFLICT,
            ProblemType::Validation => StatusCode::UNPROCESSABLE_ENTITY,
            ProblemType::Unauthenticated => StatusCode::UNAUTHORIZED,
            ProblemType::Forbidden | ProblemType::TenantSuspended => StatusCode::FORBIDDEN,
            ProblemType::Throttled | ProblemType::QuotaExceeded => StatusCode::TOO_MANY_REQUESTS,
            ProblemType::PayloadTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            ProblemType::MalformedBody | ProblemType::BadRequest => StatusCode::BAD_REQUEST,
            ProblemType::UnsupportedMediaType => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            ProblemType::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            ProblemType::NotReady => StatusCode::SERVICE_UNAVAILABLE,
            ProblemType::Internal => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// The closest problem type for an error status produced outside our handlers
    /// (the router's 405, the body-limit layer's 413, ...).
    #[must_use]
    pub fn from_status(status: StatusCode) -> Self {
        match status {
            StatusCode::NOT_FOUND => ProblemType::NotFound,
            StatusCode::CONFLICT => ProblemType::Conflict,
            StatusCode::UNPROCESSABLE_ENTITY => ProblemType::Validation,
            StatusCode::UNAUTHORIZED => ProblemType::Unauthenticated,
            StatusCode::FORBIDDEN => ProblemType::Forbidden,
            StatusCode::TOO_MANY_REQUESTS => ProblemType::Throttled,
            StatusCode::PAYLOAD_TOO_LARGE => ProblemType::PayloadTooLarge,
            StatusCode::UNSUPPORTED_MEDIA_TYPE => ProblemType::UnsupportedMediaType,
            StatusCode::METHOD_NOT_ALLOWED => ProblemType::MethodNotAllowed,
            StatusCode::SERVICE_UNAVAILABLE => ProblemType::NotReady,
            s if s.is_client_error() => ProblemType::BadRequest,
            _ => ProblemType::Internal,
        }
    }
}

/// One invalid input field.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, ToSchema)]
pub struct FieldError {
    /// The field as named in the request (`email`, `admin.password`, `limit`).
    pub field: String,
    pub reason: String,
}

impl FieldError {
    #[must_use]
    pub fn new(field: impl Into<String>, reason: impl Into<String>) -> Self {
        Self {
            field: field.into(),
            reason: reason.into(),
        }
    }
}

impl From<InvalidValue> for FieldError {
    fn from(v: InvalidValue) -> Self {
        Self::new(v.field, v.reason)
    }
}

/// An RFC 9457 problem document, as sent with `application/problem+json`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, ToSchema)]
pub struct Problem {
    /// Stable URI identifying the kind of problem.
    #[serde(rename = "type")]
    #[schema(example = "https://trellis.dev/problems/not-found")]
    pub type_uri: String,
    pub title: String,
    pub status: u16,
    pub detail: String,
    /// The request path this occurrence refers to.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub instance: Option<String>,
    /// Quote this when reporting a problem; it is in our logs too.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub request_id: Option<String>,
    /// Per-field reasons, for validation problems.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub errors: Vec<FieldError>,
    /// For `quota-exceeded`: when the budget resets (RFC 3339).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub resets_at: Option<String>,
}

impl Problem {
    #[must_use]
    pub fn new(kind: ProblemType, detail: impl Into<String>) -> Self {
        Self {
            type_uri: kind.uri().to_owned(),
            title: kind.title().to_owned(),
            status: kind.status().as_u16(),
            detail: detail.into(),
            instance: None,
            request_id: None,
            errors: Vec::new(),
            resets_at: None,
        }
    }

    /// The JSON body. Serialising these plain strings cannot fail; should it ever, a
    /// fixed body still keeps the response well-formed.
    #[must_use]
    pub fn to_body(&self) -> String {
        serde_json::to_string(self).unwrap_or_else(|_| {
            format!(
                r#"{{"type":"{}","title":"Internal server error","status":500,"detail":"error body could not be rendered"}}"#,
                ProblemType::Internal.uri()
            )
        })
    }
}

/// The error every handler returns.
#[derive(Debug)]
pub struct ApiError {
    kind: ProblemType,
    detail: String,
    errors: Vec<FieldError>,
    retry_after_secs: Option<u64>,
    resets_at: Option<String>,
    /// The cause of a 500, logged in full and never shown.
    source: Option<anyhow::Error>,
}

impl ApiError {
    #[must_use]
    pub fn new(kind: ProblemType, detail: impl Into<String>) -> Self {
        Self {
            kind,
            detail: detail.into(),
            errors: Vec::new(),
            retry_after_secs: None,
            resets_at: None,
            source: None,
        }
    }

    /// A 429 for a used-up token budget, with `Retry-After` and `resets_at`.
    #[must_use]
    pub fn quota_exceeded(
        detail: impl Into<String>,
        retry_after_secs: u64,
        resets_at: String,
    ) -> Self {
        Self {
            retry_after_secs: Some(retry_after_secs),
            resets_at: Some(resets_at),
            ..Self::new(ProblemType::QuotaExceeded, detail)
        }
    }

    /// A 422 listing every invalid field.
    #[must_use]
    pub fn validation(errors: Vec<FieldError>) -> Self {
        let detail = match errors.as_slice() {
            [one] => format!("{}: {}", one.field, one.reason),
            _ => format!("{} fields are invalid", errors.len()),
        };
        Self {
            errors,
            ..Self::new(ProblemType::Validation, detail)
        }
    }

    /// A 400 about the query string or path, naming the offending parameter.
    #[must_use]
    pub fn bad_parameter(field: &str, reason: impl Into<String>) -> Self {
        let reason = reason.into();
        Self {
            errors: vec![FieldError::new(field, reason.clone())],
            ..Self::new(ProblemType::BadRequest, format!("{field}: {reason}"))
        }
    }

    #[must_use]
    pub fn not_found(detail: impl Into<String>) -> Self {
        Self::new(ProblemType::NotFound, detail)
    }

    #[must_use]
    pub fn forbidden(detail: impl Into<String>) -> Self {
        Self::new(ProblemType::Forbidden, detail)
    }

    #[must_use]
    pub fn unauthenticated(detail: impl Into<String>) -> Self {
        Self::new(ProblemType::Unauthenticated, detail)
    }

    #[must_use]
    pub fn throttled(retry_after_secs: u64) -> Self {
        Self {
            retry_after_secs: Some(retry_after_secs),
            ..Self::new(
                ProblemType::Throttled,
                format!("too many failed attempts; retry in {retry_after_secs} s"),
            )
        }
    }

    /// A 500. The cause goes to the log, the client sees only the request id.
    #[must_use]
    pub fn internal(source: anyhow::Error) -> Self {
        Self {
            source: Some(source),
            ..Self::new(
                ProblemType::Internal,
                "an unexpected error occurred; quote the request id when reporting it",
            )
        }
    }

    #[must_use]
    pub fn kind(&self) -> ProblemType {
        self.kind
    }

    #[must_use]
    pub fn detail(&self) -> &str {
        &self.detail
    }

    #[must_use]
    pub fn errors(&self) -> &[FieldError] {
        &self.errors
    }

    /// The problem document (without request id and instance, which the problem
    /// middleware adds because only it sees the request).
    #[must_use]
    pub fn problem(&self) -> Problem {
        Problem {
            errors: self.errors.clone(),
            resets_at: self.resets_at.clone(),
            ..Problem::new(self.kind, self.detail.clone())
        }
    }
}

impl From<IdentityError> for ApiError {
    fn from(e: IdentityError) -> Self {
        match e {
            IdentityError::NotFound(what) => Self::not_found(format!("{what} not found")),
            IdentityError::Conflict(msg) => Self::new(ProblemType::Conflict, msg),
            IdentityError::Invalid(v) => Self::validation(vec![v.into()]),
            IdentityError::Page(p) => p.into(),
            IdentityError::Forbidden => Self::forbidden("you may not do this"),
            // One wording for every credential failure, so the body never tells an
            // unknown account from a wrong password.
            IdentityError::Unauthenticated => Self::unauthenticated("invalid credentials"),
            IdentityError::Throttled { retry_after_secs } => Self::throttled(retry_after_secs),
            IdentityError::LimitReached(max) => Self::new(
                ProblemType::LimitReached,
                format!("this tenant has reached its user limit of {max}"),
            ),
            IdentityError::Unexpected(e) => Self::internal(e),
        }
    }
}

impl From<TenancyError> for ApiError {
    fn from(e: TenancyError) -> Self {
        match e {
            TenancyError::NotFound => Self::not_found("tenant not found"),
            TenancyError::Conflict(msg) => Self::new(ProblemType::Conflict, msg),
            TenancyError::Invalid(v) => Self::validation(vec![v.into()]),
            TenancyError::Forbidden => Self::forbidden("you may not do this"),
            TenancyError::Suspended => {
                Self::new(ProblemType::TenantSuspended, "the tenant is suspended")
            }
            TenancyError::Unexpected(e) => Self::internal(e),
        }
    }
}

impl From<InvalidPage> for ApiError {
    fn from(p: InvalidPage) -> Self {
        let field = match p {
            InvalidPage::Limit => "limit",
            InvalidPage::Cursor => "cursor",
        };
        Self::bad_parameter(field, p.to_string())
    }
}

/// `a: b: c` from an error and its sources, for one greppable log line.
#[must_use]
pub fn error_chain(e: &anyhow::Error) -> String {
    e.chain()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(": ")
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        if let Some(source) = &self.source {
            // Runs inside the request's tracing span, which carries the request id.
            tracing::error!(error = %error_chain(source), "request failed");
        }
        let problem = self.problem();
        let mut res = problem_response(&problem);
        if self.kind == ProblemType::Unauthenticated {
            res.headers_mut()
                .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        if let Some(secs) = self.retry_after_secs {
            res.headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(secs));
        }
        // The problem middleware finds this and re-renders it with the request id.
        res.extensions_mut().insert(problem);
        res
    }
}

/// A complete `application/problem+json` response for `problem`.
#[must_use]
pub fn problem_response(problem: &Problem) -> Response {
    let status = StatusCode::from_u16(problem.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    (
        status,
        [(header::CONTENT_TYPE, HeaderValue::from_static(PROBLEM_JSON))],
        problem.to_body(),
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_identity_error_maps_to_the_documented_status() {
        let cases: Vec<(IdentityError, StatusCode)> = vec![
            (IdentityError::NotFound("user"), StatusCode::NOT_FOUND),
            (
                IdentityError::Conflict("taken".into()),
                StatusCode::CONFLICT,
            ),
            (
                IdentityError::Invalid(InvalidValue::new("email", "bad")),
                StatusCode::UNPROCESSABLE_ENTITY,
            ),
            (
                IdentityError::Page(InvalidPage::Limit),
                StatusCode::BAD_REQUEST,
            ),
            (IdentityError::Forbidden, StatusCode::FORBIDDEN),
            (IdentityError::Unauthenticated, StatusCode::UNAUTHORIZED),
            (
                IdentityError::Throttled {
                    retry_after_secs: 30,
                },
                StatusCode::TOO_MANY_REQUESTS,
            ),
            (IdentityError::LimitReached(5), StatusCode::CONFLICT),
            (
                IdentityError::Unexpected(anyhow::anyhow!("db down")),
                StatusCode::INTERNAL_SERVER_ERROR,
            ),
        ];
        for (err, status) in cases {
            let api: ApiError = err.into();
            assert_eq!(api.kind().status(), status, "{api:?}");
        }
    }

    #[test]
    fn every_tenancy_error_maps_to_the_documented_status() {
        let cases: Vec<(TenancyError, StatusCode)> = vec![
            (TenancyError::NotFound, StatusCode::NOT_FOUND),
            (TenancyError::Conflict("slug".into()), StatusCode::CONFLICT),
            (
                TenancyError::Invalid(InvalidValue::new("slug", "bad")),
                StatusCode::UNPROCESSABLE_ENTITY,
            ),
            (TenancyError::Forbidden, StatusCode::FORBIDDEN),
            (TenancyError::Suspended, StatusCode::FORBIDDEN),
            (
                TenancyError::Unexpected(anyhow::anyhow!("db down")),
                StatusCode::INTERNAL_SERVER_ERROR,
            ),
        ];
        for (err, status) in cases {
            let api: ApiError = err.into();
            assert_eq!(api.kind().status(), status, "{api:?}");
        }
    }

    #[test]
    fn a_validation_problem_names_the_field() {
        let api: ApiError =
            IdentityError::Invalid(InvalidValue::new("email", "must contain @")).into();
        let p = api.problem();
        assert_eq!(p.type_uri, "https://trellis.dev/problems/validation");
        assert_eq!(p.errors, vec![FieldError::new("email", "must contain @")]);
    }

    #[test]
    fn an_internal_error_shows_nothing_of_its_cause() {
        let api = ApiError::internal(anyhow::anyhow!("password=hunter2 leaked in SQL"));
        let body = api.problem().to_body();
        assert!(!body.contains("hunter2"));
        assert!(body.contains("https://trellis.dev/problems/internal"));
    }

    #[test]
    fn the_error_chain_lists_every_cause() {
        let e = anyhow::anyhow!("socket closed").context("failed to insert user");
        assert_eq!(error_chain(&e), "failed to insert user: socket closed");
    }

    #[test]
    fn a_throttled_response_carries_retry_after() {
        let res = ApiError::throttled(42).into_response();
        assert_eq!(res.status(), StatusCode::TOO_MANY_REQUESTS);
        assert_eq!(
            res.headers()
                .get(header::RETRY_AFTER)
                .and_then(|v| v.to_str().ok()),
            Some("42")
        );
        assert_eq!(
            res.headers()
                .get(header::CONTENT_TYPE)
                .and_then(|v| v.to_str().ok()),
            Some(PROBLEM_JSON)
        );
    }

    #[test]
    fn an_unauthenticated_response_asks_for_a_bearer_token() {
        let res = ApiError::from(IdentityError::Unauthenticated).into_response();
        assert_eq!(
            res.headers()
                .get(header::WWW_AUTHENTICATE)
                .and_then(|v| v.to_str().ok()),
            Some("Bearer")
        );
    }

    #[test]
    fn a_page_limit_problem_names_the_limit_parameter() {
        let p = ApiError::from(InvalidPage::Limit).problem();
        assert_eq!(p.status, 400);
        assert_eq!(p.errors[0].field, "limit");
    }
}
