//! Settings shared by both clients: the API key (kept out of logs), how it is sent,
//! the three timeouts and the retry policy, and the error for settings that cannot
//! work. Provider-specific settings live next to each client.

use std::fmt;
use std::time::Duration;

/// A provider API key. `Debug` never shows it, because configurations end up in logs.
#[derive(Clone, PartialEq, Eq)]
pub struct ApiKey(String);

impl ApiKey {
    #[must_use]
    pub fn new(key: impl Into<String>) -> Self {
        Self(key.into())
    }

    /// The key itself, for building the request header (and for scrubbing it from
    /// error messages a provider might echo it in).
    pub(crate) fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for ApiKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ApiKey(<redacted>)")
    }
}

impl From<String> for ApiKey {
    fn from(key: String) -> Self {
        Self(key)
    }
}

impl From<&str> for ApiKey {
    fn from(key: &str) -> Self {
        Self(key.to_owned())
    }
}

/// How the API key travels.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AuthStyle {
    /// `Authorization: Bearer <key>`: OpenAI, vLLM, LM Studio, llama.cpp, Ollama behind
    /// a proxy, Azure's v1 API, most gateways.
    Bearer,
    /// `<name>: <key>`: `api-key` for Azure OpenAI deployments, `x-api-key` for
    /// Anthropic.
    Header(String),
}

impl AuthStyle {
    /// Azure OpenAI's deployment API: `api-key: <key>`.
    #[must_use]
    pub fn azure() -> Self {
        Self::Header("api-key".to_owned())
    }

    /// Anthropic's `x-api-key: <key>`.
    #[must_use]
    pub fn anthropic() -> Self {
        Self::Header("x-api-key".to_owned())
    }
}

/// How long to wait, and for what.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timeouts {
    /// Opening the TCP (and TLS) connection.
    pub connect: Duration,
    /// The longest silence accepted while streaming: before the response headers and
    /// between two chunks. A stalled stream fails after this, however long the answer.
    /// Not applied to `complete`, whose server is silent until the answer is whole.
    pub idle: Duration,
    /// The whole call, retries and backoff included, up to the last byte of the answer.
    pub overall: Duration,
}

impl Default for Timeouts {
    /// 10 s to connect, 60 s of silence, 10 minutes in all: long answers from slow
    /// local models must fit, while a dead connection is noticed within a minute.
    fn default() -> Self {
        Self {
            connect: Duration::from_secs(10),
            idle: Duration::from_secs(60),
            overall: Duration::from_secs(600),
        }
    }
}

/// When and how often a failed request is tried again.
///
/// Retried: 408, 429, 5xx, failures to connect or send, and a stream that breaks or
/// reports overload before any of it reached the caller. Never retried: other 4xx
/// (repeating a rejected request cannot succeed), malformed responses, timeouts (the
/// user is already waiting), and anything after the first chunk was delivered (the
/// caller would see text twice).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Further tries after the first.
    pub max_retries: u32,
    /// The first backoff; it doubles with every retry up to `max_backoff`, with jitter.
    pub initial_backoff: Duration,
    pub max_backoff: Duration,
    /// A `Retry-After` longer than this is not waited out: the call fails at once as
    /// rate limited, rather than leave a user staring at a spinner.
    pub max_retry_after: Duration,
}

impl Default for RetryPolicy {
    /// Three attempts in all, backing off from 500 ms to 8 s, `Retry-After` up to 20 s.
    fn default() -> Self {
        Self {
            max_retries: 2,
            initial_backoff: Duration::from_millis(500),
            max_backoff: Duration::from_secs(8),
            max_retry_after: Duration::from_secs(20),
        }
    }
}

impl RetryPolicy {
    /// No retries at all.
    #[must_use]
    pub fn none() -> Self {
        Self {
            max_retries: 0,
            ..Self::default()
        }
    }
}

/// Settings a client cannot be built from.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    #[error("invalid base URL {url:?}: {reason}")]
    BaseUrl { url: String, reason: String },
    #[error("the {0} provider needs a base URL (there is no public default)")]
    MissingBaseUrl(&'static str),
    #[error("the API key contains characters not allowed in an HTTP header")]
    ApiKey,
    #[error("invalid header {name:?}: {reason}")]
    Header { name: String, reason: String },
    #[error("the {0} provider is configured twice")]
    DuplicateProvider(&'static str),
    #[error("unknown LLM provider {0:?}")]
    UnknownProvider(String),
    #[error("could not build the HTTP client: {0}")]
    Http(String),
}
