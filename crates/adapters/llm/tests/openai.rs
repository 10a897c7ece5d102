//! `OpenAiClient` against a fake OpenAI-compatible server replaying recorded
//! responses (OpenAI, Azure OpenAI, llama-cpp-python): what a caller of `stream` and
//! `complete` sees for whole, split, malformed, truncated and stalled streams, for
//! rate limits, server errors and rejected keys, and what the server is sent.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a failure should panic

mod support;

use std::time::{Duration, Instant};

use futures::StreamExt;
use support::{
    FakeServer, Reply, collect, ctx, cut_before, ending, error, provider_error, refused_base_url,
    request, retry, text, timeouts,
};
use trellis_content::{ChatChunk, ChatModel, FinishReason, ProviderErrorKind, TokenUsage};
use trellis_llm::{ApiKey, MaxTokensField, OpenAiClient, OpenAiConfig};
use trellis_tenancy::LlmProvider;

const OPENAI_STREAM: &str = include_str!("fixtures/openai_stream.sse");
const AZURE_STREAM: &str = include_str!("fixtures/azure_stream.sse");
const LLAMA_CPP_STREAM: &str = include_str!("fixtures/llama_cpp_python_stream.sse");
const COMPLETION: &str = include_str!("fixtures/openai_completion.json");

const ANSWER: &str = "Memory safety without a garbage collector: the compiler proves every borrow valid—no data races, no use-after-free 🦀.";
const KEY: &str = "sk-test-0123456789abcdef";

fn client(server: &FakeServer) -> OpenAiClient {
    OpenAiClient::new(OpenAiConfig {
        api_key: Some(ApiKey::new(KEY)),
        timeouts: timeouts(),
        retry: retry(),
        ..OpenAiConfig::new(format!("{}/v1", server.base_url))
    })
    .unwrap()
}

/// An Azure client on its deployment `gpt-4o-prod`, API version 2024-10-21.
fn azure_client(server: &FakeServer) -> OpenAiClient {
    OpenAiClient::new(OpenAiConfig {
        timeouts: timeouts(),
        retry: retry(),
        ..OpenAiConfig::azure(
            &server.base_url,
            "gpt-4o-prod",
            "2024-10-21",
            ApiKey::new(KEY),
        )
    })
    .unwrap()
}

async fn stream_from(server: &FakeServer) -> Vec<ChatChunk> {
    let stream = client(server)
        .stream(&ctx(), request(LlmProvider::Openai, "gpt-4o-mini"))
        .await
        .unwrap();
    collect(stream).await
}

#[tokio::test]
async fn a_streamed_answer_arrives_as_deltas_then_usage_then_the_finish_reason() {
    let server = FakeServer::start(vec![Reply::sse(OPENAI_STREAM)]).await;
    let chunks = stream_from(&server).await;
    assert_eq!(text(&chunks), ANSWER);
    assert_eq!(
        ending(&chunks),
        (
            Some(TokenUsage {
                prompt_tokens: 27,
                completion_tokens: 24
            }),
            FinishReason::Stop
        )
    );
    // Usage sits right before the finish, never between deltas.
    assert!(matches!(chunks[chunks.len() - 2], ChatChunk::Usage(_)));
}

#[tokio::test]
async fn the_server_is_sent_the_model_messages_parameters_bearer_key_and_a_request_for_usage() {
    let server = FakeServer::start(vec![Reply::sse(OPENAI_STREAM)]).await;
    stream_from(&server).await;
    let seen = &server.seen()[0];
    assert_eq!(seen.method, "POST");
    assert_eq!(seen.target, "/v1/chat/completions");
    assert_eq!(
        seen.header("authorization"),
        Some(format!("Bearer {KEY}").as_str())
    );
    assert_eq!(seen.header("accept"), Some("text/event-stream"));
    assert_eq!(
        seen.body,
        serde_json::json!({
            "model": "gpt-4o-mini",
            "messages": [
                {"role": "system", "content": "You are a concise assistant."},
                {"role": "user", "content": "What does Rust's ownership model buy me?"}
            ],
            "stream": true,
            "stream_options": {"include_usage": true},
            "temperature": 0.2,
            "max_tokens": 256
        })
    );
}

#[tokio::test]
async fn a_stream_written_one_to_seven_bytes_at_a_time_reads_the_same_as_one_written_at_once() {
    let whole = FakeServer::start(vec![Reply::sse(OPENAI_STREAM)]).await;
    let split = FakeServer::start(vec![Reply::sse(OPENAI_STREAM).in_tiny_pieces()]).await;
    let expected = stream_from(&whole).await;
    assert_eq!(stream_from(&split).await, expected);
}

#[tokio::test]
async fn the_fake_server_really_splits_the_body_into_pieces_of_at_most_seven_bytes() {
    // Guards the test above: were the pieces merged on the way, it would prove nothing.
    let server = FakeServer::start(vec![Reply::sse(OPENAI_STREAM).in_tiny_pieces()]).await;
    let mut response = reqwest::Client::new()
        .post(format!("{}/v1/chat/completions", server.base_url))
        .send()
        .await
        .unwrap();
    let mut sizes = Vec::new();
    while let Some(bytes) = response.chunk().await.unwrap() {
        sizes.push(bytes.len());
    }
    assert_eq!(sizes.iter().sum::<usize>(), OPENAI_STREAM.len());
    assert!(sizes.iter().all(|&s| (1..=7).contains(&s)), "{sizes:?}");
    assert!(sizes.len() > OPENAI_STREAM.len() / 7);
}

#[tokio::test]
async fn crlf_line_endings_and_keep_alive_comments_split_anywhere_are_understood() {
    let server = FakeServer::start(vec![Reply::sse(LLAMA_CPP_STREAM).in_tiny_pieces()]).await;
    let chunks = stream_from(&server).await;
    assert_eq!(
        text(&chunks),
        "Ownership means one owner; borrowing is checked at compile time (零成本)."
    );
    // llama-cpp-python sends no usage; the length limit is still reported.
    assert_eq!(ending(&chunks), (None, FinishReason::Length));
}

#[tokio::test]
async fn azure_is_called_on_its_deployment_with_the_api_version_and_an_api_key_header() {
    let server = FakeServer::start(vec![Reply::sse(AZURE_STREAM).in_tiny_pieces()]).await;
    let client = azure_client(&server);
    // No model in the request: the deployment decides, and its name is sent.
    let chunks = collect(
        client
            .stream(&ctx(), request(LlmProvider::AzureOpenai, ""))
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(text(&chunks), "Bonjour ! Ça va ?");
    assert_eq!(
        ending(&chunks),
        (
            Some(TokenUsage {
                prompt_tokens: 18,
                completion_tokens: 5
            }),
            FinishReason::Stop
        )
    );
    let seen = &server.seen()[0];
    assert_eq!(
        seen.target,
        "/openai/deployments/gpt-4o-prod/chat/completions?api-version=2024-10-21"
    );
    assert_eq!(seen.header("api-key"), Some(KEY));
    assert_eq!(seen.header("authorization"), None);
    assert_eq!(seen.body["model"], "gpt-4o-prod");
}

#[tokio::test]
async fn a_malformed_json_chunk_ends_the_stream_with_a_protocol_error_after_the_text_before_it() {
    let corrupt = OPENAI_STREAM.replacen(r#"{"content":" garbage"}"#, r#"{"content":" garbage"#, 1);
    let server = FakeServer::start(vec![Reply::sse(corrupt).in_tiny_pieces()]).await;
    let chunks = stream_from(&server).await;
    assert_eq!(text(&chunks), "Memory safety without a");
    let e = error(&chunks);
    assert_eq!(e.kind, ProviderErrorKind::Protocol);
    assert!(e.message.contains("malformed JSON"), "{e}");
    // Text had been delivered: retrying would repeat it.
    assert_eq!(server.requests(), 1);
}

#[tokio::test]
async fn a_stream_that_ends_cleanly_before_done_is_reported_as_truncated() {
    let cut = cut_before(OPENAI_STREAM, "data: [DONE]");
    let server = FakeServer::start(vec![Reply::sse(cut)]).await;
    let chunks = stream_from(&server).await;
    assert_eq!(text(&chunks), ANSWER);
    let e = error(&chunks);
    assert_eq!(e.kind, ProviderErrorKind::Protocol);
    assert!(e.message.contains("truncated"), "{e}");
    assert!(!chunks.iter().any(|c| matches!(c, ChatChunk::Finish(_))));
}

#[tokio::test]
async fn a_connection_dropped_mid_answer_ends_the_stream_with_an_error_and_no_retry() {
    let cut = cut_before(OPENAI_STREAM, r#"{"content":" borrow"}"#);
    let server = FakeServer::start(vec![
        Reply::sse(cut).in_tiny_pieces().hang_up(),
        Reply::sse(OPENAI_STREAM),
    ])
    .await;
    let chunks = stream_from(&server).await;
    assert!(text(&chunks).starts_with("Memory safety"), "{chunks:?}");
    assert_eq!(error(&chunks).kind, ProviderErrorKind::Protocol);
    assert_eq!(server.requests(), 1);
}

#[tokio::test]
async fn a_connection_dropped_before_any_text_is_retried_invisibly() {
    // Only the role chunk arrived: nothing reached the caller, so a retry is safe.
    let cut = cut_before(OPENAI_STREAM, r#"{"content":"Memory"}"#);
    let server = FakeServer::start(vec![
        Reply::sse(cut).hang_up(),
        Reply::sse(OPENAI_STREAM).in_tiny_pieces(),
    ])
    .await;
    let chunks = stream_from(&server).await;
    assert_eq!(text(&chunks), ANSWER);
    assert_eq!(ending(&chunks).1, FinishReason::Stop);
    assert_eq!(server.requests(), 2);
}

#[tokio::test]
async fn a_429_is_retried_after_the_retry_after_delay_and_then_succeeds() {
    let server = FakeServer::start(vec![
        Reply::json(
            429,
            r#"{"error":{"message":"Rate limit reached for gpt-4o-mini on requests per min (RPM): Limit 3, Used 3, Requested 1.","type":"requests","param":null,"code":"rate_limit_exceeded"}}"#,
        )
        .header("retry-after", "1"),
        Reply::sse(OPENAI_STREAM),
    ])
    .await;
    let started = Instant::now();
    let chunks = stream_from(&server).await;
    assert_eq!(text(&chunks), ANSWER);
    assert_eq!(server.requests(), 2);
    // The backoff alone is at most 40 ms: the wait is the server's second.
    assert!(started.elapsed() >= Duration::from_secs(1));
}

#[tokio::test]
async fn three_500s_give_up_with_an_unavailable_error_after_three_attempts() {
    let server_error = || {
        Reply::json(
            500,
            r#"{"error":{"message":"The server had an error while processing your request. Sorry about that!","type":"server_error","param":null,"code":null}}"#,
        )
    };
    let server = FakeServer::start(vec![server_error(), server_error(), server_error()]).await;
    let e = provider_error(
        client(&server)
            .stream(&ctx(), request(LlmProvider::Openai, "gpt-4o-mini"))
            .await
            .err()
            .unwrap(),
    );
    assert_eq!(e.kind, ProviderErrorKind::Unavailable);
    assert!(e.message.contains("500"), "{e}");
    assert!(e.message.contains("Sorry about that"), "{e}");
    assert!(e.message.contains("3 attempts"), "{e}");
    assert_eq!(server.requests(), 3);
}

#[tokio::test]
async fn a_401_fails_at_once_as_unauthorized_without_showing_the_key() {
    let server = FakeServer::start(vec![Reply::json(
        401,
        format!(
            r#"{{"error":{{"message":"Incorrect API key provided: {KEY}. You can find your API key at https://platform.openai.com/account/api-keys.","type":"invalid_request_error","param":null,"code":"invalid_api_key"}}}}"#
        ),
    )])
    .await;
    let e = provider_error(
        client(&server)
            .stream(&ctx(), request(LlmProvider::Openai, "gpt-4o-mini"))
            .await
            .err()
            .unwrap(),
    );
    assert_eq!(e.kind, ProviderErrorKind::Unauthorized);
    assert!(e.message.contains("Incorrect API key"), "{e}");
    assert!(!e.message.contains(KEY), "{e}");
    assert_eq!(server.requests(), 1);
}

#[tokio::test]
async fn a_400_is_a_bad_request_with_the_providers_reason_and_no_retry() {
    let server = FakeServer::start(vec![Reply::json(
        400,
        r#"{"error":{"message":"This model's maximum context length is 128000 tokens.","type":"invalid_request_error","param":"messages","code":"context_length_exceeded"}}"#,
    )])
    .await;
    let e = provider_error(
        client(&server)
            .complete(&ctx(), request(LlmProvider::Openai, "gpt-4o-mini"))
            .await
            .unwrap_err(),
    );
    assert_eq!(e.kind, ProviderErrorKind::BadRequest);
    assert!(e.message.contains("maximum context length"), "{e}");
    assert_eq!(server.requests(), 1);
}

#[tokio::test]
async fn a_server_silent_longer_than_the_idle_timeout_ends_the_stream_with_a_timeout() {
    let stall_at = OPENAI_STREAM.find(r#"{"content":" the"}"#).unwrap();
    let server = FakeServer::start(vec![
        Reply::sse(OPENAI_STREAM).stall_after(stall_at, Duration::from_secs(5)),
    ])
    .await;
    let client = OpenAiClient::new(OpenAiConfig {
        timeouts: trellis_llm::Timeouts {
            idle: Duration::from_millis(300),
            ..timeouts()
        },
        retry: retry(),
        ..OpenAiConfig::new(format!("{}/v1", server.base_url))
    })
    .unwrap();
    let chunks = collect(
        client
            .stream(&ctx(), request(LlmProvider::Ollama, "llama3.2"))
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(text(&chunks), "Memory safety without a garbage collector:");
    let e = error(&chunks);
    assert_eq!(e.kind, ProviderErrorKind::Timeout);
    assert_eq!(server.requests(), 1);
    assert!(
        server.saw_hang_up().await,
        "the stalled connection was left open"
    );
}

#[tokio::test]
async fn a_server_that_never_answers_a_complete_call_times_out_overall() {
    let server = FakeServer::start(vec![
        Reply::json(200, COMPLETION).delay_headers(Duration::from_secs(5)),
    ])
    .await;
    let client = OpenAiClient::new(OpenAiConfig {
        timeouts: trellis_llm::Timeouts {
            overall: Duration::from_millis(400),
            ..timeouts()
        },
        retry: retry(),
        ..OpenAiConfig::new(format!("{}/v1", server.base_url))
    })
    .unwrap();
    let e = provider_error(
        client
            .complete(&ctx(), request(LlmProvider::Openai, "gpt-4o-mini"))
            .await
            .unwrap_err(),
    );
    assert_eq!(e.kind, ProviderErrorKind::Timeout);
    assert_eq!(server.requests(), 1);
}

#[tokio::test]
async fn a_complete_call_returns_the_whole_answer_with_its_usage() {
    let server = FakeServer::start(vec![Reply::json(200, COMPLETION).in_tiny_pieces()]).await;
    let client = OpenAiClient::new(OpenAiConfig {
        max_tokens_field: MaxTokensField::MaxCompletionTokens,
        timeouts: timeouts(),
        retry: retry(),
        ..OpenAiConfig::new(format!("{}/v1", server.base_url))
    })
    .unwrap();
    let completion = client
        .complete(&ctx(), request(LlmProvider::Openai, "gpt-4o-mini"))
        .await
        .unwrap();
    assert_eq!(
        completion.content,
        "Memory safety without a garbage collector."
    );
    assert_eq!(completion.finish_reason, FinishReason::Stop);
    assert_eq!(
        completion.usage,
        Some(TokenUsage {
            prompt_tokens: 27,
            completion_tokens: 8
        })
    );
    let seen = &server.seen()[0];
    assert_eq!(seen.body["stream"], false);
    assert_eq!(seen.body["max_completion_tokens"], 256);
    assert!(seen.body.get("stream_options").is_none());
    assert_eq!(seen.header("authorization"), None);
}

#[tokio::test]
async fn a_server_that_ignores_stream_true_still_yields_a_well_formed_stream() {
    let server = FakeServer::start(vec![Reply::json(200, COMPLETION)]).await;
    let chunks = stream_from(&server).await;
    assert_eq!(
        chunks,
        vec![
            ChatChunk::Delta("Memory safety without a garbage collector.".into()),
            ChatChunk::Usage(TokenUsage {
                prompt_tokens: 27,
                completion_tokens: 8
            }),
            ChatChunk::Finish(FinishReason::Stop),
        ]
    );
}

#[tokio::test]
async fn an_error_object_mid_stream_is_reported_with_its_kind() {
    let cut = cut_before(OPENAI_STREAM, r#"{"content":" the"}"#);
    let body = format!(
        "{}data: {}\n\n",
        &cut[..cut.rfind("data: ").unwrap()],
        r#"{"error":{"message":"The server had an error processing your request.","type":"server_error","param":null,"code":null}}"#
    );
    let server = FakeServer::start(vec![Reply::sse(body), Reply::sse(OPENAI_STREAM)]).await;
    let chunks = stream_from(&server).await;
    assert!(text(&chunks).starts_with("Memory safety"));
    let e = error(&chunks);
    assert_eq!(e.kind, ProviderErrorKind::Unavailable);
    assert!(e.message.contains("server had an error"), "{e}");
    assert_eq!(server.requests(), 1);
}

#[tokio::test]
async fn a_refused_connection_is_retried_then_reported_unavailable() {
    let client = OpenAiClient::new(OpenAiConfig {
        timeouts: timeouts(),
        retry: retry(),
        ..OpenAiConfig::new(format!("{}/v1", refused_base_url().await))
    })
    .unwrap();
    let e = provider_error(
        client
            .stream(&ctx(), request(LlmProvider::Openai, "gpt-4o-mini"))
            .await
            .err()
            .unwrap(),
    );
    assert_eq!(e.kind, ProviderErrorKind::Unavailable);
    assert!(e.message.contains("could not connect"), "{e}");
    assert!(e.message.contains("3 attempts"), "{e}");
    assert!(!e.message.contains("127.0.0.1"), "{e}");
}

#[tokio::test]
async fn a_retry_after_longer_than_we_wait_fails_at_once_as_rate_limited() {
    let server = FakeServer::start(vec![
        Reply::json(
            429,
            r#"{"error":{"message":"Slow down","type":"tokens","code":"rate_limit_exceeded"}}"#,
        )
        .header("retry-after", "3600"),
    ])
    .await;
    let started = Instant::now();
    let e = provider_error(
        client(&server)
            .complete(&ctx(), request(LlmProvider::Openai, "gpt-4o-mini"))
            .await
            .unwrap_err(),
    );
    assert_eq!(e.kind, ProviderErrorKind::RateLimited);
    assert_eq!(server.requests(), 1);
    assert!(started.elapsed() < Duration::from_secs(3));
}

#[tokio::test]
async fn dropping_a_stream_mid_answer_hangs_up_on_the_server() {
    let stall_at = OPENAI_STREAM.find(r#"{"content":" the"}"#).unwrap();
    let server = FakeServer::start(vec![
        Reply::sse(OPENAI_STREAM).stall_after(stall_at, Duration::from_secs(30)),
    ])
    .await;
    let mut stream = client(&server)
        .stream(&ctx(), request(LlmProvider::Openai, "gpt-4o-mini"))
        .await
        .unwrap();
    assert!(matches!(stream.next().await, Some(ChatChunk::Delta(_))));
    drop(stream);
    assert!(server.saw_hang_up().await);
}

#[tokio::test]
async fn a_server_error_marked_not_worth_retrying_fails_at_once_quoting_the_request_id() {
    let server = FakeServer::start(vec![
        Reply::json(
            503,
            r#"{"error":{"message":"Engine is shutting down","type":"server_error"}}"#,
        )
        .header("x-should-retry", "false")
        .header("x-request-id", "req_7f3a9c2e51b04d8e"),
        Reply::sse(OPENAI_STREAM),
    ])
    .await;
    let e = provider_error(
        client(&server)
            .stream(&ctx(), request(LlmProvider::Openai, "gpt-4o-mini"))
            .await
            .err()
            .unwrap(),
    );
    assert_eq!(e.kind, ProviderErrorKind::Unavailable);
    assert!(e.message.contains("req_7f3a9c2e51b04d8e"), "{e}");
    assert_eq!(server.requests(), 1);
}

#[tokio::test]
async fn a_redirect_is_not_followed_so_the_key_never_reaches_where_it_points() {
    let elsewhere = FakeServer::start(vec![Reply::sse(OPENAI_STREAM)]).await;
    let server = FakeServer::start(vec![Reply::json(307, "{}").header(
        "location",
        &format!("{}/v1/chat/completions", elsewhere.base_url),
    )])
    .await;
    let client = azure_client(&server);
    let outcome = client
        .stream(&ctx(), request(LlmProvider::AzureOpenai, ""))
        .await;
    assert!(outcome.is_err(), "a redirected call must not succeed");
    assert_eq!(server.requests(), 1);
    assert_eq!(elsewhere.requests(), 0);
}
