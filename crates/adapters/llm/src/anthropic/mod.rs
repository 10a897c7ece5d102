//! `AnthropicClient`: a [`ChatModel`] over Anthropic's Messages API
//! (`POST {base}/v1/messages`, `x-api-key`, `anthropic-version`).

mod wire;

use std::sync::Arc;

use async_trait::async_trait;
use reqwest::header::{HeaderName, HeaderValue};
use tracing::Instrument;
use trellis_content::{ChatModel, ChatRequest, ChatStream, Completion, Result};
use trellis_kernel::TenantCtx;

use crate::config::{ApiKey, AuthStyle, ConfigError, RetryPolicy, Timeouts};
use crate::transport::{self, Transport, encode_error, model_for, span};
use wire::AnthropicEvents;

/// Where and how to call the Anthropic Messages API.
#[derive(Debug, Clone)]
pub struct AnthropicConfig {
    /// Everything before `/v1/messages`: `https://api.anthropic.com`, or a gateway.
    pub base_url: String,
    pub api_key: Option<ApiKey>,
    /// `x-api-key` for Anthropic itself; gateways may want `Bearer`.
    pub auth: AuthStyle,
    /// The `anthropic-version` header.
    pub version: String,
    /// The model when a request names none.
    pub default_model: Option<String>,
    /// The answer length limit when a request sets none (the API requires one).
    pub default_max_tokens: u32,
    /// Sent with every request (`anthropic-beta`, gateway headers, ...).
    pub extra_headers: Vec<(String, String)>,
    pub timeouts: Timeouts,
    pub retry: RetryPolicy,
}

impl AnthropicConfig {
    /// Anthropic's public API.
    pub const DEFAULT_BASE_URL: &'static str = "https://api.anthropic.com";
    /// The version this client's wire format follows.
    pub const API_VERSION: &'static str = "2023-06-01";
    /// The answer length limit when a request sets none.
    pub const DEFAULT_MAX_TOKENS: u32 = 4096;

    /// The public API with this key, version `2023-06-01`, 4096 tokens unless asked
    /// otherwise, default timeouts and retries.
    #[must_use]
    pub fn new(api_key: ApiKey) -> Self {
        Self {
            base_url: Self::DEFAULT_BASE_URL.to_owned(),
            api_key: Some(api_key),
            auth: AuthStyle::anthropic(),
            version: Self::API_VERSION.to_owned(),
            default_model: None,
            default_max_tokens: Self::DEFAULT_MAX_TOKENS,
            extra_headers: Vec::new(),
            timeouts: Timeouts::default(),
            retry: RetryPolicy::default(),
        }
    }
}

/// A chat model behind the Anthropic Messages API.
#[derive(Debug, Clone)]
pub struct AnthropicClient {
    transport: Arc<Transport>,
    default_model: Option<String>,
    default_max_tokens: u32,
}

impl AnthropicClient {
    /// A client with its own connection pool.
    ///
    /// # Errors
    /// When the base URL, the key, the version or a header is unusable.
    pub fn new(config: AnthropicConfig) -> Result<Self, ConfigError> {
        let http = transport::http_client(config.timeouts.connect)?;
        Self::with_http_client(config, http)
    }

    /// A client sharing `http`'s connection pool (its connect timeout then applies,
    /// not `config.timeouts.connect`).
    ///
    /// # Errors
    /// When the base URL, the key, the version or a header is unusable.
    pub fn with_http_client(
        config: AnthropicConfig,
        http: reqwest::Client,
    ) -> Result<Self, ConfigError> {
        let endpoint = transport::endpoint(&config.base_url, "/v1/messages", None)?;
        let mut headers =
            transport::headers(&config.auth, config.api_key.as_ref(), &config.extra_headers)?;
        let version = HeaderValue::from_str(&config.version).map_err(|e| ConfigError::Header {
            name: "anthropic-version".to_owned(),
            reason: e.to_string(),
        })?;
        headers.insert(HeaderName::from_static("anthropic-version"), version);
        Ok(Self {
            transport: Arc::new(Transport {
                http,
                endpoint,
                headers,
                timeouts: config.timeouts,
                retry: config.retry,
                api_key: config.api_key,
                label: "Anthropic API",
            }),
            default_model: config.default_model.filter(|m| !m.trim().is_empty()),
            // Zero would be refused by the API on every call: fall back to at least 1.
            default_max_tokens: config.default_max_tokens.max(1),
        })
    }

    /// Where requests go (for logs and diagnostics; carries no secret).
    #[must_use]
    pub fn endpoint(&self) -> &str {
        self.transport.endpoint.as_str()
    }

    fn body(&self, request: &ChatRequest, stream: bool) -> Result<Vec<u8>> {
        let model = model_for(request, self.default_model.as_deref())?;
        wire::request_body(request, model, self.default_max_tokens, stream).map_err(encode_error)
    }
}

#[async_trait]
impl ChatModel for AnthropicClient {
    async fn complete(&self, ctx: &TenantCtx, request: ChatRequest) -> Result<Completion> {
        let body = self.body(&request, false)?;
        let span = span(ctx, "anthropic", &request);
        Ok(self
            .transport
            .complete(body, wire::parse_message)
            .instrument(span)
            .await?)
    }

    async fn stream(&self, ctx: &TenantCtx, request: ChatRequest) -> Result<ChatStream> {
        let body = self.body(&request, true)?;
        let span = span(ctx, "anthropic", &request);
        Ok(Arc::clone(&self.transport)
            .stream::<AnthropicEvents>(body, wire::parse_message)
            .instrument(span)
            .await?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_go_to_v1_messages_with_the_key_and_version_headers() {
        let mut config = AnthropicConfig::new(ApiKey::new("sk-ant-secret-key"));
        config.base_url = "https://gateway.example.com/anthropic/".into();
        let client = AnthropicClient::new(config).unwrap();
        assert_eq!(
            client.endpoint(),
            "https://gateway.example.com/anthropic/v1/messages"
        );
        let headers = &client.transport.headers;
        assert_eq!(headers["anthropic-version"], "2023-06-01");
        assert_eq!(headers["x-api-key"], "sk-ant-secret-key");
        assert!(!format!("{client:?}").contains("sk-ant-secret-key"));
    }
}
