//! `AnthropicClient` against a fake Messages API replaying recorded responses: what a
//! caller of `stream` and `complete` sees for whole, split, malformed, truncated and
//! stalled streams, overload and error events, rate limits, server errors and
//! rejected keys, and what the server is sent.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a failure should panic

mod support;

use std::time::{Duration, Instant};

use support::{
    FakeServer, Reply, collect, ctx, cut_before, ending, error, provider_error, request, retry,
    text, timeouts,
};
use trellis_content::{ChatChunk, ChatModel, FinishReason, ProviderErrorKind, TokenUsage};
use trellis_llm::{AnthropicClient, AnthropicConfig, ApiKey, Timeouts};
use trellis_tenancy::LlmProvider;

const STREAM: &str = include_str!("fixtures/anthropic_stream.sse");
const OVERLOADED: &str = include_str!("fixtures/anthropic_overloaded.sse");
const MESSAGE: &str = include_str!("fixtures/anthropic_message.json");

const ANSWER: &str = "Memory safety without a garbage collector: the borrow checker rejects dangling references and data races at compile time — zero runtime cost. 🦀";
const KEY: &str = "sk-ant-api03-test-0123456789";
const MODEL: &str = "claude-sonnet-4-5";

fn config(server: &FakeServer) -> AnthropicConfig {
    AnthropicConfig {
        base_url: server.base_url.clone(),
        timeouts: timeouts(),
        retry: retry(),
        ..AnthropicConfig::new(ApiKey::new(KEY))
    }
}

fn client(server: &FakeServer) -> AnthropicClient {
    AnthropicClient::new(config(server)).unwrap()
}

async fn stream_from(server: &FakeServer) -> Vec<ChatChunk> {
    let stream = client(server)
        .stream(&ctx(), request(LlmProvider::Anthropic, MODEL))
        .await
        .unwrap();
    collect(stream).await
}

fn usage(prompt_tokens: u32, completion_tokens: u32) -> Option<TokenUsage> {
    Some(TokenUsage {
        prompt_tokens,
        completion_tokens,
    })
}

#[tokio::test]
async fn a_streamed_answer_arrives_as_text_deltas_then_usage_then_the_stop_reason() {
    let server = FakeServer::start(vec![Reply::sse(STREAM)]).await;
    let chunks = stream_from(&server).await;
    assert_eq!(text(&chunks), ANSWER);
    assert_eq!(ending(&chunks), (usage(31, 29), FinishReason::Stop));
}

#[tokio::test]
async fn the_server_is_sent_the_key_the_version_and_the_system_prompt_at_the_top_level() {
    let server = FakeServer::start(vec![Reply::sse(STREAM)]).await;
    stream_from(&server).await;
    let seen = &server.seen()[0];
    assert_eq!(seen.method, "POST");
    assert_eq!(seen.target, "/v1/messages");
    assert_eq!(seen.header("x-api-key"), Some(KEY));
    assert_eq!(seen.header("anthropic-version"), Some("2023-06-01"));
    assert_eq!(seen.header("authorization"), None);
    assert_eq!(
        seen.body,
        serde_json::json!({
            "model": MODEL,
            "max_tokens": 256,
            "system": "You are a concise assistant.",
            "messages": [
                {"role": "user", "content": "What does Rust's ownership model buy me?"}
            ],
            "stream": true,
            "temperature": 0.2
        })
    );
}

#[tokio::test]
async fn a_stream_written_one_to_seven_bytes_at_a_time_reads_the_same_as_one_written_at_once() {
    let whole = FakeServer::start(vec![Reply::sse(STREAM)]).await;
    let split = FakeServer::start(vec![Reply::sse(STREAM).in_tiny_pieces()]).await;
    let expected = stream_from(&whole).await;
    assert_eq!(stream_from(&split).await, expected);
}

#[tokio::test]
async fn a_malformed_json_event_ends_the_stream_with_a_protocol_error() {
    let corrupt = STREAM.replacen(
        r#""text":" the borrow checker"#,
        r#""text":" the borrow checker\"#,
        1,
    );
    assert_ne!(corrupt, STREAM);
    let server = FakeServer::start(vec![Reply::sse(corrupt).in_tiny_pieces()]).await;
    let chunks = stream_from(&server).await;
    assert_eq!(text(&chunks), "Memory safety without a garbage collector:");
    let e = error(&chunks);
    assert_eq!(e.kind, ProviderErrorKind::Protocol);
    assert!(e.message.contains("malformed JSON"), "{e}");
    assert_eq!(server.requests(), 1);
}

#[tokio::test]
async fn a_stream_that_ends_before_message_stop_is_reported_as_truncated() {
    let cut = cut_before(STREAM, "event: message_stop");
    let server = FakeServer::start(vec![Reply::sse(cut).in_tiny_pieces()]).await;
    let chunks = stream_from(&server).await;
    assert_eq!(text(&chunks), ANSWER);
    let e = error(&chunks);
    assert_eq!(e.kind, ProviderErrorKind::Protocol);
    assert!(e.message.contains("message_stop"), "{e}");
}

#[tokio::test]
async fn a_connection_dropped_mid_answer_ends_the_stream_with_an_error_and_no_retry() {
    let cut = cut_before(STREAM, "event: content_block_stop");
    let server = FakeServer::start(vec![
        Reply::sse(cut).in_tiny_pieces().hang_up(),
        Reply::sse(STREAM),
    ])
    .await;
    let chunks = stream_from(&server).await;
    assert_eq!(text(&chunks), ANSWER);
    assert_eq!(error(&chunks).kind, ProviderErrorKind::Protocol);
    assert_eq!(server.requests(), 1);
}

#[tokio::test]
async fn an_overloaded_error_event_before_any_text_is_retried_invisibly() {
    let server = FakeServer::start(vec![
        Reply::sse(OVERLOADED).in_tiny_pieces(),
        Reply::sse(STREAM).in_tiny_pieces(),
    ])
    .await;
    let chunks = stream_from(&server).await;
    assert_eq!(text(&chunks), ANSWER);
    assert_eq!(ending(&chunks).1, FinishReason::Stop);
    assert_eq!(server.requests(), 2);
}

#[tokio::test]
async fn an_overloaded_error_event_after_text_ends_the_stream_as_unavailable() {
    let before_stop = cut_before(STREAM, "event: content_block_stop");
    let error_event = &OVERLOADED[OVERLOADED.find("event: error").unwrap()..];
    let server = FakeServer::start(vec![
        Reply::sse(format!("{before_stop}{error_event}")),
        Reply::sse(STREAM),
    ])
    .await;
    let chunks = stream_from(&server).await;
    assert_eq!(text(&chunks), ANSWER);
    let e = error(&chunks);
    assert_eq!(e.kind, ProviderErrorKind::Unavailable);
    assert!(e.message.contains("Overloaded"), "{e}");
    assert_eq!(server.requests(), 1);
}

#[tokio::test]
async fn a_429_is_retried_after_the_retry_after_delay_and_then_succeeds() {
    let server = FakeServer::start(vec![
        Reply::json(
            429,
            r#"{"type":"error","error":{"type":"rate_limit_error","message":"Number of request tokens has exceeded your per-minute rate limit"},"request_id":"req_011CSHoEeqs5C35K2UUqR7Fy"}"#,
        )
        .header("retry-after", "1")
        .header("anthropic-ratelimit-requests-remaining", "0"),
        Reply::sse(STREAM),
    ])
    .await;
    let started = Instant::now();
    let chunks = stream_from(&server).await;
    assert_eq!(text(&chunks), ANSWER);
    assert_eq!(server.requests(), 2);
    assert!(started.elapsed() >= Duration::from_secs(1));
}

#[tokio::test]
async fn three_500s_give_up_with_an_unavailable_error_after_three_attempts() {
    let api_error = || {
        Reply::json(
            500,
            r#"{"type":"error","error":{"type":"api_error","message":"Internal server error"}}"#,
        )
    };
    let server = FakeServer::start(vec![api_error(), api_error(), api_error()]).await;
    let e = provider_error(
        client(&server)
            .complete(&ctx(), request(LlmProvider::Anthropic, MODEL))
            .await
            .unwrap_err(),
    );
    assert_eq!(e.kind, ProviderErrorKind::Unavailable);
    assert!(e.message.contains("Internal server error"), "{e}");
    assert!(e.message.contains("3 attempts"), "{e}");
    assert_eq!(server.requests(), 3);
}

#[tokio::test]
async fn overloaded_529s_are_retried_like_other_server_errors() {
    let overloaded = || {
        Reply::json(
            529,
            r#"{"type":"error","error":{"type":"overloaded_error","message":"Overloaded"}}"#,
        )
    };
    let server = FakeServer::start(vec![overloaded(), overloaded(), Reply::sse(STREAM)]).await;
    let chunks = stream_from(&server).await;
    assert_eq!(text(&chunks), ANSWER);
    assert_eq!(server.requests(), 3);
}

#[tokio::test]
async fn a_401_fails_at_once_as_unauthorized() {
    let server = FakeServer::start(vec![Reply::json(
        401,
        r#"{"type":"error","error":{"type":"authentication_error","message":"invalid x-api-key"}}"#,
    )])
    .await;
    let e = provider_error(
        client(&server)
            .stream(&ctx(), request(LlmProvider::Anthropic, MODEL))
            .await
            .err()
            .unwrap(),
    );
    assert_eq!(e.kind, ProviderErrorKind::Unauthorized);
    assert!(e.message.contains("invalid x-api-key"), "{e}");
    assert_eq!(server.requests(), 1);
}

#[tokio::test]
async fn a_server_silent_longer_than_the_idle_timeout_ends_the_stream_with_a_timeout() {
    let stall_at = STREAM.find("event: content_block_stop").unwrap();
    let server = FakeServer::start(vec![
        Reply::sse(STREAM).stall_after(stall_at, Duration::from_secs(5)),
    ])
    .await;
    let client = AnthropicClient::new(AnthropicConfig {
        timeouts: Timeouts {
            idle: Duration::from_millis(300),
            ..timeouts()
        },
        ..config(&server)
    })
    .unwrap();
    let chunks = collect(
        client
            .stream(&ctx(), request(LlmProvider::Anthropic, MODEL))
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(text(&chunks), ANSWER);
    assert_eq!(error(&chunks).kind, ProviderErrorKind::Timeout);
    assert!(server.saw_hang_up().await);
}

#[tokio::test]
async fn headers_that_do_not_come_within_the_idle_timeout_fail_the_stream_call() {
    let server = FakeServer::start(vec![
        Reply::sse(STREAM).delay_headers(Duration::from_secs(5)),
    ])
    .await;
    let client = AnthropicClient::new(AnthropicConfig {
        timeouts: Timeouts {
            idle: Duration::from_millis(300),
            ..timeouts()
        },
        ..config(&server)
    })
    .unwrap();
    let e = provider_error(
        client
            .stream(&ctx(), request(LlmProvider::Anthropic, MODEL))
            .await
            .err()
            .unwrap(),
    );
    assert_eq!(e.kind, ProviderErrorKind::Timeout);
    assert_eq!(server.requests(), 1);
}

#[tokio::test]
async fn a_complete_call_returns_the_whole_message_with_cached_tokens_counted_as_prompt() {
    let server = FakeServer::start(vec![Reply::json(200, MESSAGE).in_tiny_pieces()]).await;
    let completion = client(&server)
        .complete(&ctx(), request(LlmProvider::Anthropic, MODEL))
        .await
        .unwrap();
    assert_eq!(
        completion.content,
        "Memory safety without a garbage collector."
    );
    assert_eq!(completion.finish_reason, FinishReason::Length);
    assert_eq!(completion.usage, usage(43, 8));
    let seen = &server.seen()[0];
    assert!(seen.body.get("stream").is_none());
    assert_eq!(seen.header("accept"), Some("application/json"));
}
