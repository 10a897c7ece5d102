//! `LlmFactory` and `LlmRegistry` against fake servers: a provider name plus base URL,
//! key and model is all it takes to get a working client of the right API, and a
//! registry sends each request to the provider it names.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a failure should panic

mod support;

use support::{FakeServer, Reply, collect, ctx, ending, request, retry, text, timeouts};
use trellis_content::{ChatModel, ContentError, FinishReason};
use trellis_llm::{ApiKey, LlmConfig, LlmFactory, LlmRegistry};
use trellis_tenancy::LlmProvider;

const OPENAI_STREAM: &str = include_str!("fixtures/openai_stream.sse");
const ANTHROPIC_STREAM: &str = include_str!("fixtures/anthropic_stream.sse");

fn config(provider: &str, base_url: String, key: &str, model: &str) -> LlmConfig {
    LlmConfig {
        base_url: Some(base_url),
        api_key: Some(ApiKey::new(key)),
        model: Some(model.to_owned()),
        timeouts: timeouts(),
        retry: retry(),
        ..LlmConfig::for_provider_name(provider).unwrap()
    }
}

#[tokio::test]
async fn a_registry_sends_each_request_to_the_api_of_the_provider_it_names() {
    let openai = FakeServer::start(vec![Reply::sse(OPENAI_STREAM)]).await;
    let anthropic = FakeServer::start(vec![Reply::sse(ANTHROPIC_STREAM)]).await;
    let registry = LlmRegistry::from_configs(
        &LlmFactory::new(),
        &[
            config(
                "openai_compatible",
                format!("{}/v1", openai.base_url),
                "sk-openai-key-123",
                "qwen2.5:7b",
            ),
            config(
                "anthropic",
                anthropic.base_url.clone(),
                "sk-ant-key-123",
                "claude-sonnet-4-5",
            ),
        ],
    )
    .unwrap();
    assert_eq!(
        registry.providers(),
        vec![LlmProvider::Anthropic, LlmProvider::OpenaiCompatible]
    );

    // No model in the requests: each provider's configured model is used.
    let from_openai = collect(
        registry
            .stream(&ctx(), request(LlmProvider::OpenaiCompatible, ""))
            .await
            .unwrap(),
    )
    .await;
    let from_anthropic = collect(
        registry
            .stream(&ctx(), request(LlmProvider::Anthropic, ""))
            .await
            .unwrap(),
    )
    .await;
    assert!(text(&from_openai).starts_with("Memory safety"));
    assert!(text(&from_anthropic).starts_with("Memory safety"));
    assert_eq!(ending(&from_anthropic).1, FinishReason::Stop);

    let to_openai = &openai.seen()[0];
    assert_eq!(to_openai.target, "/v1/chat/completions");
    assert_eq!(to_openai.body["model"], "qwen2.5:7b");
    assert_eq!(
        to_openai.header("authorization"),
        Some("Bearer sk-openai-key-123")
    );
    let to_anthropic = &anthropic.seen()[0];
    assert_eq!(to_anthropic.target, "/v1/messages");
    assert_eq!(to_anthropic.body["model"], "claude-sonnet-4-5");
    assert_eq!(to_anthropic.header("x-api-key"), Some("sk-ant-key-123"));
}

#[tokio::test]
async fn a_request_for_a_provider_that_is_not_configured_is_a_model_unavailable_error() {
    let registry = LlmRegistry::new();
    let err = registry
        .complete(
            &ctx(),
            request(LlmProvider::Mistral, "mistral-large-latest"),
        )
        .await
        .unwrap_err();
    assert!(
        matches!(&err, ContentError::ModelUnavailable(m) if m.contains("mistral")),
        "{err:?}"
    );
}

#[tokio::test]
async fn a_tenants_own_key_reaches_the_provider_through_a_client_built_per_call() {
    let server =
        FakeServer::start(vec![Reply::sse(OPENAI_STREAM), Reply::sse(OPENAI_STREAM)]).await;
    let factory = LlmFactory::new();
    for key in ["sk-tenant-a-0001", "sk-tenant-b-0002"] {
        let model = factory
            .build(&config(
                "ollama",
                format!("{}/v1", server.base_url),
                key,
                "llama3.2",
            ))
            .unwrap();
        collect(
            model
                .stream(&ctx(), request(LlmProvider::Ollama, ""))
                .await
                .unwrap(),
        )
        .await;
    }
    let keys: Vec<_> = server
        .seen()
        .iter()
        .map(|s| s.header("authorization").unwrap().to_owned())
        .collect();
    assert_eq!(
        keys,
        vec!["Bearer sk-tenant-a-0001", "Bearer sk-tenant-b-0002"]
    );
}
