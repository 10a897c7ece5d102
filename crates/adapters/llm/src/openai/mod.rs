//! `OpenAiClient`: a [`ChatModel`] over the OpenAI-compatible
//! `POST {base}/chat/completions`, spoken by OpenAI, Azure OpenAI, Ollama, vLLM,
//! LM Studio, llama.cpp's server, Mistral and Gemini's compatibility endpoint. The
//! differences between them are settings: the base URL, how the key is sent, Azure's
//! `api-version`, the name of the length limit, and whether usage is asked for.

mod wire;

use std::sync::Arc;

use async_trait::async_trait;
use tracing::Instrument;
use trellis_content::{ChatModel, ChatRequest, ChatStream, Completion, Result};
use trellis_kernel::TenantCtx;

use crate::config::{ApiKey, AuthStyle, ConfigError, RetryPolicy, Timeouts};
use crate::transport::{self, Transport, encode_error, model_for, span};
pub use wire::MaxTokensField;
use wire::{BodyOptions, OpenAiEvents};

/// Where and how to call an OpenAI-compatible chat completions API.
#[derive(Debug, Clone)]
pub struct OpenAiConfig {
    /// Everything before `/chat/completions`: `https://api.openai.com/v1`,
    /// `http://localhost:11434/v1` (Ollama), `http://localhost:8000/v1` (vLLM),
    /// `http://localhost:1234/v1` (LM Studio), `http://localhost:8080/v1` (llama.cpp),
    /// `https://<resource>.openai.azure.com/openai/deployments/<deployment>` (Azure).
    pub base_url: String,
    /// `None` sends no credentials (local servers).
    pub api_key: Option<ApiKey>,
    pub auth: AuthStyle,
    /// Azure's `api-version` query parameter, e.g. `2024-10-21`.
    pub api_version: Option<String>,
    /// The model when a request names none (Azure ignores it: the deployment decides).
    pub default_model: Option<String>,
    /// Sent with every request (`OpenAI-Organization`, gateway headers, ...).
    pub extra_headers: Vec<(String, String)>,
    /// Ask for token usage at the end of a stream (`stream_options.include_usage`).
    /// Turn off for servers that reject unknown fields.
    pub include_usage: bool,
    pub max_tokens_field: MaxTokensField,
    pub timeouts: Timeouts,
    pub retry: RetryPolicy,
}

impl OpenAiConfig {
    /// Bearer auth, no key, usage asked for, `max_tokens`, default timeouts and retries.
    #[must_use]
    pub fn new(base_url: impl Into<String>) -> Self {
        Self {
            base_url: base_url.into(),
            api_key: None,
            auth: AuthStyle::Bearer,
            api_version: None,
            default_model: None,
            extra_headers: Vec::new(),
            include_usage: true,
            max_tokens_field: MaxTokensField::MaxTokens,
            timeouts: Timeouts::default(),
            retry: RetryPolicy::default(),
        }
    }

    /// An Azure OpenAI deployment: `{resource_url}/openai/deployments/{deployment}`,
    /// the key in an `api-key` header, and the `api-version`.
    #[must_use]
    pub fn azure(
        resource_url: &str,
        deployment: &str,
        api_version: impl Into<String>,
        api_key: ApiKey,
    ) -> Self {
        Self {
            api_key: Some(api_key),
            auth: AuthStyle::azure(),
            api_version: Some(api_version.into()),
            default_model: Some(deployment.to_owned()),
            ..Self::new(format!(
                "{}/openai/deployments/{deployment}",
                resource_url.trim_end_matches('/')
            ))
        }
    }
}

/// A chat model behind an OpenAI-compatible API.
#[derive(Debug, Clone)]
pub struct OpenAiClient {
    transport: Arc<Transport>,
    default_model: Option<String>,
    options: BodyOptions,
}

impl OpenAiClient {
    /// A client with its own connection pool.
    ///
    /// # Errors
    /// When the base URL, the key or a header is unusable.
    pub fn new(config: OpenAiConfig) -> Result<Self, ConfigError> {
        let http = transport::http_client(config.timeouts.connect)?;
        Self::with_http_client(config, http)
    }

    /// A client sharing `http`'s connection pool (its connect timeout then applies,
    /// not `config.timeouts.connect`).
    ///
    /// # Errors
    /// When the base URL, the key or a header is unusable.
    pub fn with_http_client(
        config: OpenAiConfig,
        http: reqwest::Client,
    ) -> Result<Self, ConfigError> {
        let endpoint = transport::endpoint(
            &config.base_url,
            "/chat/completions",
            config.api_version.as_deref(),
        )?;
        let headers =
            transport::headers(&config.auth, config.api_key.as_ref(), &config.extra_headers)?;
        Ok(Self {
            transport: Arc::new(Transport {
                http,
                endpoint,
                headers,
                timeouts: config.timeouts,
                retry: config.retry,
                api_key: config.api_key,
                label: "OpenAI-compatible API",
            }),
            default_model: config.default_model.filter(|m| !m.trim().is_empty()),
            options: BodyOptions {
                include_usage: config.include_usage,
                max_tokens_field: config.max_tokens_field,
            },
        })
    }

    /// Where requests go (for logs and diagnostics; carries no secret).
    #[must_use]
    pub fn endpoint(&self) -> &str {
        self.transport.endpoint.as_str()
    }

    fn body(&self, request: &ChatRequest, stream: bool) -> Result<Vec<u8>> {
        let model = model_for(request, self.default_model.as_deref())?;
        wire::request_body(request, model, self.options, stream).map_err(encode_error)
    }
}

#[async_trait]
impl ChatModel for OpenAiClient {
    async fn complete(&self, ctx: &TenantCtx, request: ChatRequest) -> Result<Completion> {
        let body = self.body(&request, false)?;
        let span = span(ctx, "openai_compatible", &request);
        Ok(self
            .transport
            .complete(body, wire::parse_completion)
            .instrument(span)
            .await?)
    }

    async fn stream(&self, ctx: &TenantCtx, request: ChatRequest) -> Result<ChatStream> {
        let body = self.body(&request, true)?;
        let span = span(ctx, "openai_compatible", &request);
        Ok(Arc::clone(&self.transport)
            .stream::<OpenAiEvents>(body, wire::parse_completion)
            .instrument(span)
            .await?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn azure_calls_the_deployment_with_its_api_version() {
        let client = OpenAiClient::new(OpenAiConfig::azure(
            "https://res.openai.azure.com/",
            "gpt4o",
            "2024-10-21",
            ApiKey::new("k"),
        ))
        .unwrap();
        assert_eq!(
            client.endpoint(),
            "https://res.openai.azure.com/openai/deployments/gpt4o/chat/completions?api-version=2024-10-21"
        );
        assert!(client.transport.headers.contains_key("api-key"));
        assert!(!client.transport.headers.contains_key("authorization"));
    }

    #[test]
    fn the_api_key_never_appears_in_debug_output() {
        let mut config = OpenAiConfig::new("http://localhost:1/v1");
        config.api_key = Some(ApiKey::new("sk-very-secret"));
        assert!(!format!("{config:?}").contains("sk-very-secret"));
        let client = OpenAiClient::new(config).unwrap();
        assert!(!format!("{client:?}").contains("sk-very-secret"));
    }

    #[test]
    fn unusable_settings_are_refused() {
        let refused = |config: OpenAiConfig| OpenAiClient::new(config).is_err();
        assert!(refused(OpenAiConfig::new("not a url")));
        assert!(refused(OpenAiConfig::new("ftp://x/v1")));
        assert!(refused(OpenAiConfig::new("http://x/v1?api-version=1")));
        let mut bad_key = OpenAiConfig::new("http://x/v1");
        bad_key.api_key = Some(ApiKey::new("line\nbreak"));
        assert!(refused(bad_key));
        let mut bad_header = OpenAiConfig::new("http://x/v1");
        bad_header.extra_headers = vec![("bad header".into(), "v".into())];
        assert!(refused(bad_header));
    }
}
