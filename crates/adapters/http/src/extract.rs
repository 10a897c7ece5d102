//! Extractors that wrap axum's own so that every rejection is a problem document
//! instead of axum's plain-text default: bad JSON, wrong types and unknown fields are
//! 400 `malformed-body`, a missing JSON content type is 415, an oversized body is 413,
//! and bad path or query parameters are 400 `bad-request`.

use crate::problem::{ApiError, ProblemType};
use axum::extract::rejection::{JsonRejection, PathRejection, QueryRejection};
use axum::extract::{ConnectInfo, FromRequest, FromRequestParts, Request};
use axum::http::StatusCode;
use axum::http::request::Parts;
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use serde::de::DeserializeOwned;
use std::net::{IpAddr, SocketAddr};

/// Maps a rejection's status to our problem type, keeping axum's explanation (which
/// names the offending field or position) as the detail.
fn body_problem(status: StatusCode, text: String) -> ApiError {
    let kind = match status {
        StatusCode::PAYLOAD_TOO_LARGE => ProblemType::PayloadTooLarge,
        StatusCode::UNSUPPORTED_MEDIA_TYPE => ProblemType::UnsupportedMediaType,
        s if s.is_server_error() => {
            return ApiError::internal(anyhow::anyhow!("failed to read request body: {text}"));
        }
        // axum answers 422 for well-formed JSON of the wrong shape; for us any body
        // that does not deserialise is malformed (422 is kept for value validation).
        _ => ProblemType::MalformedBody,
    };
    ApiError::new(kind, text)
}

/// A JSON request body or response. As an extractor, rejections are problems.
#[derive(Debug, Clone, Copy, Default)]
pub struct Json<T>(pub T);

impl<T, S> FromRequest<S> for Json<T>
where
    T: DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        match axum::Json::<T>::from_request(req, state).await {
            Ok(axum::Json(v)) => Ok(Json(v)),
            Err(rejection) => Err(json_rejection(&rejection)),
        }
    }
}

fn json_rejection(r: &JsonRejection) -> ApiError {
    body_problem(r.status(), r.body_text())
}

/// `multipart/form-data`: a request that is not one is a 415 problem. Read its parts
/// with errors mapped by [`multipart_problem`].
pub struct Multipart(pub axum::extract::Multipart);

impl<S: Send + Sync> FromRequest<S> for Multipart {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        axum::extract::Multipart::from_request(req, state)
            .await
            .map(Multipart)
            .map_err(|e| {
                ApiError::new(
                    ProblemType::UnsupportedMediaType,
                    format!("expected multipart/form-data: {e}"),
                )
            })
    }
}

/// A part that cannot be read: 413 past the body limit, 400 `malformed-body` otherwise.
pub fn multipart_problem(e: axum::extract::multipart::MultipartError) -> ApiError {
    if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
        ApiError::new(
            ProblemType::PayloadTooLarge,
            "the upload is larger than allowed",
        )
    } else {
        ApiError::new(
            ProblemType::MalformedBody,
            format!("malformed multipart body: {e}"),
        )
    }
}

/// Room a response body starts with. axum's `Json` starts at 128 bytes and doubles:
/// a page of twenty users (about 9 KB) was copied six times on its way to the socket.
/// Most bodies fit in this; a larger one grows from here.
const RESPONSE_CAPACITY: usize = 4096;

impl<T: Serialize> IntoResponse for Json<T> {
    fn into_response(self) -> Response {
        let mut body = Vec::with_capacity(RESPONSE_CAPACITY);
        match serde_json::to_writer(&mut body, &self.0) {
            Ok(()) => (
                [(
                    axum::http::header::CONTENT_TYPE,
                    axum::http::HeaderValue::from_static("application/json"),
                )],
                body,
            )
                .into_response(),
            // A value that cannot be written as JSON (a map with non-string keys) is
            // our bug, not the caller's.
            Err(e) => {
                ApiError::internal(anyhow::Error::new(e).context("could not write the response"))
                    .into_response()
            }
        }
    }
}

/// Path parameters; a malformed id is a 400 problem.
#[derive(Debug, Clone, Copy)]
pub struct Path<T>(pub T);

impl<T, S> FromRequestParts<S> for Path<T>
where
    T: DeserializeOwned + Send,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        match axum::extract::Path::<T>::from_request_parts(parts, state).await {
            Ok(axum::extract::Path(v)) => Ok(Path(v)),
            Err(r) => Err(path_rejection(&r)),
        }
    }
}

fn path_rejection(r: &PathRejection) -> ApiError {
    if r.status().is_server_error() {
        return ApiError::internal(anyhow::anyhow!("path extraction failed: {}", r.body_text()));
    }
    ApiError::new(ProblemType::BadRequest, r.body_text())
}

/// Query parameters; a wrong type or unknown value is a 400 problem.
#[derive(Debug, Clone, Copy, Default)]
pub struct Query<T>(pub T);

impl<T, S> FromRequestParts<S> for Query<T>
where
    T: DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        match axum::extract::Query::<T>::from_request_parts(parts, state).await {
            Ok(axum::extract::Query(v)) => Ok(Query(v)),
            Err(r) => Err(query_rejection(&r)),
        }
    }
}

fn query_rejection(r: &QueryRejection) -> ApiError {
    ApiError::new(ProblemType::BadRequest, r.body_text())
}

/// The peer address of the connection, when the server was started with connect info
/// (see [`crate::serve`]). Used only to throttle logins; proxies' forwarding headers
/// are deliberately not trusted here, since any client can forge them.
#[derive(Debug, Clone, Copy)]
pub struct ClientAddr(pub Option<IpAddr>);

impl<S: Send + Sync> FromRequestParts<S> for ClientAddr {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        Ok(ClientAddr(
            parts
                .extensions
                .get::<ConnectInfo<SocketAddr>>()
                .map(|ConnectInfo(addr)| addr.ip()),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::body::Body;
    use axum::http::header;
    use serde::Deserialize;

    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Thing {
        #[allow(dead_code)]
        n: u32,
    }

    fn json_request(body: &str) -> Request {
        Request::builder()
            .method("POST")
            .header(header::CONTENT_TYPE, "application/json")
            .body(Body::from(body.to_owned()))
            .unwrap_or_default()
    }

    async fn reject(req: Request) -> ApiError {
        match Json::<Thing>::from_request(req, &()).await {
            Ok(_) => panic!("the body was accepted"),
            Err(e) => e,
        }
    }

    #[tokio::test]
    async fn broken_json_is_a_malformed_body() {
        let e = reject(json_request("{\"n\":")).await;
        assert_eq!(e.kind(), ProblemType::MalformedBody);
    }

    #[tokio::test]
    async fn an_unknown_field_is_a_malformed_body_that_names_it() {
        let e = reject(json_request(r#"{"n":1,"evil":true}"#)).await;
        assert_eq!(e.kind(), ProblemType::MalformedBody);
        assert!(e.detail().contains("evil"), "{}", e.detail());
    }

    #[tokio::test]
    async fn a_wrong_type_is_a_malformed_body() {
        let e = reject(json_request(r#"{"n":"one"}"#)).await;
        assert_eq!(e.kind(), ProblemType::MalformedBody);
    }

    #[tokio::test]
    async fn a_body_without_a_json_content_type_is_unsupported() {
        let req = Request::builder()
            .method("POST")
            .body(Body::from("{\"n\":1}"))
            .unwrap_or_default();
        let e = reject(req).await;
        assert_eq!(e.kind(), ProblemType::UnsupportedMediaType);
    }

    async fn body_of(res: Response) -> Vec<u8> {
        axum::body::to_bytes(res.into_body(), usize::MAX)
            .await
            .unwrap()
            .to_vec()
    }

    #[tokio::test]
    async fn a_json_response_is_the_value_as_application_json_whatever_its_size() {
        let small = serde_json::json!({"n": 1});
        let large: Vec<String> = (0..2000).map(|i| format!("item-{i}")).collect();
        for value in [small, serde_json::json!(large)] {
            let res = Json(&value).into_response();
            assert_eq!(res.status(), StatusCode::OK);
            assert_eq!(res.headers()[header::CONTENT_TYPE], "application/json");
            let back: serde_json::Value = serde_json::from_slice(&body_of(res).await).unwrap();
            assert_eq!(back, value);
        }
    }

    #[tokio::test]
    async fn a_value_json_cannot_express_is_an_internal_error_not_a_half_written_body() {
        // JSON object keys are strings; a map keyed by pairs cannot be written.
        let map: std::collections::BTreeMap<(u8, u8), u8> = [((1, 2), 3)].into();
        let res = Json(map).into_response();
        assert_eq!(res.status(), StatusCode::INTERNAL_SERVER_ERROR);
    }
}
