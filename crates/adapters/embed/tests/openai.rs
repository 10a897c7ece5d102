//! `OpenAiEmbedder` against a fake OpenAI-compatible server on 127.0.0.1: batching and
//! ordering, retries on 429 and 5xx (honouring `Retry-After`), no retries on other 4xx,
//! response validation, timeouts and credentials.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a failure should panic

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Json;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use serde_json::{Value, json};
use trellis_embed::{ApiKeyStyle, OpenAiConfig, OpenAiEmbedder, RemoteEmbedError};
use trellis_rag::Embedder;

/// What the fake server does with one request.
#[derive(Clone)]
enum Reply {
    /// Answers with `[n + 1, 1, 0, ...]` for input text `n` (so order can be checked
    /// after normalisation), in reverse order with correct `index` fields.
    Ok,
    /// Like `Ok` but with vectors of this length.
    Dimension(usize),
    /// One embedding fewer than inputs.
    MissingOne,
    Status(u16, &'static str, Option<(&'static str, &'static str)>),
    /// Waits this long, then answers `Ok`.
    Slow(Duration),
}

/// One request as the fake server saw it: inputs, headers, query string.
type Seen = (Vec<String>, HeaderMap, Option<String>);

#[derive(Default)]
struct Fake {
    /// Replies in order; `Ok` once exhausted.
    script: Mutex<VecDeque<Reply>>,
    /// Inputs, headers and query string of every request received.
    requests: Mutex<Vec<Seen>>,
}

const DIMENSION: usize = 8;

async fn embeddings(
    State(fake): State<Arc<Fake>>,
    headers: HeaderMap,
    uri: Uri,
    Json(body): Json<Value>,
) -> Response {
    let inputs: Vec<String> = body["input"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|v| v.as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default();
    fake.requests
        .lock()
        .unwrap()
        .push((inputs.clone(), headers, uri.query().map(str::to_owned)));
    let reply = fake.script.lock().unwrap().pop_front().unwrap_or(Reply::Ok);
    let vectors = |dimension: usize| -> Vec<Value> {
        let mut data: Vec<Value> = inputs
            .iter()
            .enumerate()
            .map(|(index, text)| {
                let n: f32 = text.parse().unwrap_or(0.0);
                let mut v = vec![0.0f32; dimension];
                v[0] = n + 1.0;
                v[1] = 1.0;
                json!({"object": "embedding", "index": index, "embedding": v})
            })
            .collect();
        data.reverse();
        data
    };
    match reply {
        Reply::Ok => Json(json!({"object": "list", "data": vectors(DIMENSION), "model": "fake"}))
            .into_response(),
        Reply::Dimension(d) => Json(json!({"data": vectors(d)})).into_response(),
        Reply::MissingOne => {
            let mut data = vectors(DIMENSION);
            data.pop();
            Json(json!({"data": data})).into_response()
        }
        Reply::Status(code, body, header) => {
            let mut response =
                (StatusCode::from_u16(code).unwrap(), body.to_owned()).into_response();
            if let Some((name, value)) = header {
                response.headers_mut().insert(name, value.parse().unwrap());
            }
            response
        }
        Reply::Slow(delay) => {
            tokio::time::sleep(delay).await;
            Json(json!({"data": vectors(DIMENSION)})).into_response()
        }
    }
}

/// Starts a fake server with `script` and returns it with its base URL (`.../v1`).
async fn serve(script: Vec<Reply>) -> (Arc<Fake>, String) {
    let fake = Arc::new(Fake {
        script: Mutex::new(script.into()),
        requests: Mutex::default(),
    });
    let app = axum::Router::new()
        .route("/v1/embeddings", post(embeddings))
        .with_state(Arc::clone(&fake));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    (fake, format!("http://{addr}/v1"))
}

/// Quick retries so the tests take milliseconds.
fn config(base_url: &str) -> OpenAiConfig {
    let mut config = OpenAiConfig::new(base_url, "fake-embed", DIMENSION as u32);
    config.initial_backoff = Duration::from_millis(1);
    config.max_backoff = Duration::from_millis(5);
    config.max_retries = 2;
    config.timeout = Duration::from_secs(5);
    config
}

fn texts(n: usize) -> Vec<String> {
    (0..n).map(|i| i.to_string()).collect()
}

/// The `n` the fake server encoded in an embedding.
fn decode(e: &trellis_rag::index::Embedding) -> usize {
    let v = e.as_slice();
    (v[0] / v[1] - 1.0).round() as usize
}

fn requests(fake: &Fake) -> usize {
    fake.requests.lock().unwrap().len()
}

#[tokio::test]
async fn inputs_are_split_into_batches_and_come_back_in_order() {
    let (fake, url) = serve(vec![]).await;
    let embedder = OpenAiEmbedder::new(config(&url)).unwrap();
    let out = embedder.embed(&texts(150)).await.unwrap();

    assert_eq!(out.len(), 150);
    for (i, e) in out.iter().enumerate() {
        assert_eq!(decode(e), i);
        assert_eq!(e.dimension(), DIMENSION);
    }
    let sizes: Vec<usize> = fake
        .requests
        .lock()
        .unwrap()
        .iter()
        .map(|r| r.0.len())
        .collect();
    assert_eq!(sizes, vec![64, 64, 22]);
    let first_of_last = &fake.requests.lock().unwrap()[2].0[0];
    assert_eq!(first_of_last, "128");
}

#[tokio::test]
async fn no_texts_means_no_request() {
    let (fake, url) = serve(vec![]).await;
    let embedder = OpenAiEmbedder::new(config(&url)).unwrap();
    assert!(embedder.embed(&[]).await.unwrap().is_empty());
    assert_eq!(requests(&fake), 0);
}

#[tokio::test]
async fn a_429_is_retried_after_the_delay_the_server_asks_for_and_then_succeeds() {
    let (fake, url) = serve(vec![Reply::Status(
        429,
        "slow down",
        Some(("retry-after-ms", "200")),
    )])
    .await;
    let embedder = OpenAiEmbedder::new(config(&url)).unwrap();
    let started = Instant::now();
    let out = embedder.embed(&texts(3)).await.unwrap();

    assert!(started.elapsed() >= Duration::from_millis(200));
    assert_eq!(out.iter().map(decode).collect::<Vec<_>>(), vec![0, 1, 2]);
    assert_eq!(requests(&fake), 2);
}

#[tokio::test]
async fn a_retry_after_longer_than_we_wait_fails_at_once() {
    let (fake, url) = serve(vec![Reply::Status(
        429,
        "quota",
        Some(("retry-after", "3600")),
    )])
    .await;
    let embedder = OpenAiEmbedder::new(config(&url)).unwrap();
    let message = format!("{:#}", embedder.embed(&texts(1)).await.unwrap_err());
    assert!(message.contains("retry after"), "{message}");
    assert_eq!(requests(&fake), 1);
}

#[tokio::test]
async fn three_500s_fail_with_a_clear_error_after_three_attempts() {
    let error = Reply::Status(500, "upstream exploded", None);
    let (fake, url) = serve(vec![error.clone(), error.clone(), error]).await;
    let embedder = OpenAiEmbedder::new(config(&url)).unwrap();
    let err = embedder.embed(&texts(2)).await.unwrap_err();
    let message = format!("{err:#}");

    assert!(message.contains("gave up after 3 attempts"), "{message}");
    assert!(message.contains("HTTP 500"), "{message}");
    assert!(message.contains("upstream exploded"), "{message}");
    assert!(message.contains("fake-embed"), "{message}");
    assert!(message.contains("batch 1 of 1"), "{message}");
    assert_eq!(requests(&fake), 3);
}

#[tokio::test]
async fn a_503_then_success_recovers() {
    let (fake, url) = serve(vec![Reply::Status(503, "busy", None)]).await;
    let embedder = OpenAiEmbedder::new(config(&url)).unwrap();
    assert_eq!(embedder.embed(&texts(2)).await.unwrap().len(), 2);
    assert_eq!(requests(&fake), 2);
}

#[tokio::test]
async fn a_400_is_not_retried_and_keeps_the_servers_message() {
    let (fake, url) = serve(vec![Reply::Status(
        400,
        r#"{"error":{"message":"input too long"}}"#,
        None,
    )])
    .await;
    let embedder = OpenAiEmbedder::new(config(&url)).unwrap();
    let err = embedder.embed(&texts(2)).await.unwrap_err();
    let message = format!("{err:#}");

    assert!(message.contains("HTTP 400"), "{message}");
    assert!(message.contains("input too long"), "{message}");
    assert_eq!(requests(&fake), 1);
    let cause = err.downcast_ref::<RemoteEmbedError>().unwrap();
    assert!(matches!(
        cause,
        RemoteEmbedError::Status { status: 400, .. }
    ));
    assert!(!cause.is_retryable());
}

#[tokio::test]
async fn a_401_is_not_retried_either() {
    let (fake, url) = serve(vec![Reply::Status(401, "bad key", None)]).await;
    let embedder = OpenAiEmbedder::new(config(&url)).unwrap();
    assert!(embedder.embed(&texts(1)).await.is_err());
    assert_eq!(requests(&fake), 1);
}

#[tokio::test]
async fn vectors_of_the_wrong_dimension_are_an_error() {
    let (fake, url) = serve(vec![Reply::Dimension(4)]).await;
    let embedder = OpenAiEmbedder::new(config(&url)).unwrap();
    let message = format!("{:#}", embedder.embed(&texts(2)).await.unwrap_err());

    assert!(
        message.contains("expected 8 dimensions, got 4"),
        "{message}"
    );
    assert_eq!(requests(&fake), 1);
}

#[tokio::test]
async fn fewer_vectors_than_inputs_are_an_error() {
    let (_fake, url) = serve(vec![Reply::MissingOne]).await;
    let embedder = OpenAiEmbedder::new(config(&url)).unwrap();
    let message = format!("{:#}", embedder.embed(&texts(3)).await.unwrap_err());
    assert!(message.contains("2 embeddings for 3 inputs"), "{message}");
}

#[tokio::test]
async fn a_slow_server_hits_the_timeout() {
    let (fake, url) = serve(vec![Reply::Slow(Duration::from_secs(3))]).await;
    let mut config = config(&url);
    config.timeout = Duration::from_millis(200);
    config.max_retries = 0;
    let embedder = OpenAiEmbedder::new(config).unwrap();
    let started = Instant::now();
    let err = embedder.embed(&texts(1)).await.unwrap_err();

    assert!(started.elapsed() < Duration::from_secs(3));
    assert!(matches!(
        err.downcast_ref::<RemoteEmbedError>(),
        Some(RemoteEmbedError::Timeout(_))
    ));
    assert_eq!(requests(&fake), 1);
}

#[tokio::test]
async fn a_timeout_is_retried() {
    let (fake, url) = serve(vec![Reply::Slow(Duration::from_secs(3))]).await;
    let mut config = config(&url);
    config.timeout = Duration::from_millis(200);
    let embedder = OpenAiEmbedder::new(config).unwrap();
    assert_eq!(embedder.embed(&texts(2)).await.unwrap().len(), 2);
    assert_eq!(requests(&fake), 2);
}

#[tokio::test]
async fn an_unreachable_server_is_a_transport_error() {
    // Bind then drop a listener: nothing listens on that port any more.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mut config = config(&format!("http://127.0.0.1:{port}/v1"));
    config.max_retries = 1;
    let embedder = OpenAiEmbedder::new(config).unwrap();
    let err = embedder.embed(&texts(1)).await.unwrap_err();
    let message = format!("{err:#}");
    assert!(message.contains("gave up after 2 attempts"), "{message}");
    assert!(matches!(
        err.downcast_ref::<RemoteEmbedError>(),
        Some(RemoteEmbedError::Transport(_))
    ));
}

#[tokio::test]
async fn a_bearer_key_is_sent_as_authorization() {
    let (fake, url) = serve(vec![]).await;
    let mut config = config(&url);
    config.api_key = Some("sk-test".to_owned());
    OpenAiEmbedder::new(config)
        .unwrap()
        .embed(&texts(1))
        .await
        .unwrap();

    let requests = fake.requests.lock().unwrap();
    assert_eq!(requests[0].1["authorization"], "Bearer sk-test");
    assert!(requests[0].1.get("api-key").is_none());
    assert_eq!(requests[0].2, None);
}

#[tokio::test]
async fn azure_gets_an_api_key_header_and_the_api_version() {
    let (fake, url) = serve(vec![]).await;
    let mut config = config(&url);
    config.api_key = Some("azure-key".to_owned());
    config.api_key_style = ApiKeyStyle::AzureApiKey;
    config.api_version = Some("2024-10-21".to_owned());
    OpenAiEmbedder::new(config)
        .unwrap()
        .embed(&texts(1))
        .await
        .unwrap();

    let requests = fake.requests.lock().unwrap();
    assert_eq!(requests[0].1["api-key"], "azure-key");
    assert!(requests[0].1.get("authorization").is_none());
    assert_eq!(requests[0].2.as_deref(), Some("api-version=2024-10-21"));
}
