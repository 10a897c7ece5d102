//! Cross-cutting middleware: the request id, the problem finaliser that stamps every
//! error body with that id (and turns the framework's plain-text errors into problem
//! documents), the tracing span, and CORS.

use crate::problem::{PROBLEM_JSON, Problem, ProblemType};
use axum::body::Body;
use axum::extract::Request;
use axum::http::{HeaderName, HeaderValue, Method, header};
use axum::middleware::Next;
use axum::response::Response;
use tower_http::cors::{AllowOrigin, CorsLayer};

/// The header that carries the request id in and out.
pub static REQUEST_ID_HEADER: HeaderName = HeaderName::from_static("x-request-id");

/// The id of the current request, in request extensions.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestId(pub String);

/// Whether a client-supplied id may be reused: short and made of characters that are
/// safe in logs and headers, so nobody can inject log lines or bloat every record.
fn is_sane(id: &str) -> bool {
    (1..=128).contains(&id.len())
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b':'))
}

/// Middleware: accepts a sane incoming `x-request-id` or makes a UUIDv7, puts it in
/// the request (headers and extensions) and echoes it on the response.
pub async fn request_id(mut req: Request, next: Next) -> Response {
    let id = req
        .headers()
        .get(&REQUEST_ID_HEADER)
        .and_then(|v| v.to_str().ok())
        .filter(|v| is_sane(v))
        .map_or_else(|| uuid::Uuid::now_v7().to_string(), str::to_owned);
    // Sane ids and UUIDs are visible ASCII, so this cannot fail; if it somehow did,
    // the request proceeds without the header rather than failing.
    let value = HeaderValue::from_str(&id).ok();
    if let Some(v) = &value {
        req.headers_mut()
            .insert(REQUEST_ID_HEADER.clone(), v.clone());
    }
    req.extensions_mut().insert(RequestId(id));
    let mut res = next.run(req).await;
    if let Some(v) = value {
        res.headers_mut().insert(REQUEST_ID_HEADER.clone(), v);
    }
    res
}

/// Middleware: every error response leaves as `application/problem+json` carrying the
/// request id and path. Our own errors are re-rendered from the [`Problem`] they left
/// in the response extensions; errors of the framework or of layers (405, 413 from the
/// body limit, ...) get a problem made from their status, keeping their headers.
pub async fn problems(req: Request, next: Next) -> Response {
    let request_id = req.extensions().get::<RequestId>().map(|r| r.0.clone());
    let path = req.uri().path().to_owned();
    let res = next.run(req).await;
    let (mut parts, body) = res.into_parts();
    let problem = match parts.extensions.remove::<Problem>() {
        Some(p) => p,
        None => {
            let status = parts.status;
            let is_problem = parts
                .headers
                .get(header::CONTENT_TYPE)
                .is_some_and(|v| v.as_bytes().starts_with(PROBLEM_JSON.as_bytes()));
            if !(status.is_client_error() || status.is_server_error()) || is_problem {
                return Response::from_parts(parts, body);
            }
            let kind = ProblemType::from_status(status);
            let detail = match kind {
                ProblemType::NotFound => format!("no resource at {path}"),
                ProblemType::MethodNotAllowed => {
                    format!("{path} does not support this method")
                }
                ProblemType::PayloadTooLarge => "the request body is too large".to_owned(),
                _ => status
                    .canonical_reason()
                    .unwrap_or("request failed")
                    .to_owned(),
            };
            let mut p = Problem::new(kind, detail);
            // Keep the real status (e.g. 408) even when the type is a generic one.
            p.status = status.as_u16();
            p
        }
    };
    let problem = Problem {
        request_id,
        instance: Some(path),
        ..problem
    };
    parts
        .headers
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(PROBLEM_JSON));
    parts.headers.remove(header::CONTENT_LENGTH);
    Response::from_parts(parts, Body::from(problem.to_body()))
}

/// CORS: off (no headers) unless origins are configured; then exactly those origins,
/// the methods the API uses, and the headers clients send. No credentials mode: the
/// API authenticates with bearer headers, never cookies.
#[must_use]
pub fn cors(allowed_origins: &[String]) -> Option<CorsLayer> {
    let origins: Vec<HeaderValue> = allowed_origins
        .iter()
        .filter_map(|o| {
            let v = HeaderValue::from_str(o.trim_end_matches('/')).ok();
            if v.is_none() {
                tracing::warn!(origin = %o, "ignoring a CORS origin that is not a valid header value");
            }
            v
        })
        .collect();
    if origins.is_empty() {
        return None;
    }
    Some(
        CorsLayer::new()
            .allow_origin(AllowOrigin::list(origins))
            .allow_methods([
                Method::GET,
                Method::POST,
                Method::PUT,
                Method::PATCH,
                Method::DELETE,
            ])
            .allow_headers([
                header::AUTHORIZATION,
                header::CONTENT_TYPE,
                HeaderName::from_static("x-api-key"),
                REQUEST_ID_HEADER.clone(),
            ])
            .expose_headers([
                REQUEST_ID_HEADER.clone(),
                header::RETRY_AFTER,
                header::LOCATION,
            ])
            .max_age(std::time::Duration::from_secs(600)),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ordinary_request_ids_are_accepted() {
        assert!(is_sane("0190f3a4-7b2c-7d3e-9f00-123456789abc"));
        assert!(is_sane("req_42.abc:1"));
    }

    #[test]
    fn hostile_request_ids_are_replaced() {
        assert!(!is_sane(""));
        assert!(!is_sane("a b"));
        assert!(!is_sane("line\ninjection"));
        assert!(!is_sane(&"x".repeat(129)));
    }

    #[test]
    fn cors_is_off_without_origins() {
        assert!(cors(&[]).is_none());
        assert!(cors(&["https://app.example.com".to_owned()]).is_some());
    }
}
