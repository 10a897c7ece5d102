//! `OpenAiEmbedder`: a client of the OpenAI-compatible `POST {base}/embeddings` API,
//! spoken by OpenAI, Azure OpenAI, Ollama, vLLM and Hugging Face TEI.
//!
//! Inputs are sent in batches (64 by default), one request at a time so that a rate
//! limit is met by one client, not a burst. A request that times out, cannot connect,
//! or gets 429 or a 5xx is retried with exponential backoff and jitter, waiting at least
//! what `Retry-After` (or Azure's `retry-after-ms`) asks for; any other 4xx fails at once,
//! as repeating a rejected request cannot succeed. Responses are checked: one vector per
//! input, in `index` order, of the configured dimension.

use std::time::Duration;

use anyhow::{Context, Result, bail, ensure};
use async_trait::async_trait;
use reqwest::Url;
use reqwest::header::{AUTHORIZATION, HeaderMap, HeaderName, HeaderValue, RETRY_AFTER};
use serde::{Deserialize, Serialize};
use trellis_rag::index::Embedding;
use trellis_rag::{Embedder, EmbeddingModel};

/// How the API key is sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ApiKeyStyle {
    /// `Authorization: Bearer <key>` (OpenAI, vLLM, TEI, Ollama behind a proxy).
    #[default]
    Bearer,
    /// `api-key: <key>` (Azure OpenAI).
    AzureApiKey,
}

/// Where and how to call an OpenAI-compatible embeddings API.
#[derive(Clone)]
pub struct OpenAiConfig {
    /// Everything before `/embeddings`: `https://api.openai.com/v1`,
    /// `http://localhost:11434/v1` (Ollama), `http://tei:8080/v1`, or for Azure
    /// `https://<resource>.openai.azure.com/openai/deployments/<deployment>`.
    pub base_url: String,
    /// Sent as configured by `api_key_style`; `None` sends no credentials (local servers).
    pub api_key: Option<String>,
    pub api_key_style: ApiKeyStyle,
    /// Azure's `api-version` query parameter, e.g. `2024-10-21`.
    pub api_version: Option<String>,
    /// The model name the server knows (`text-embedding-3-small`, `nomic-embed-text`).
    pub model: String,
    /// The id collections bind to; `None` means `openai/<model>`.
    pub model_id: Option<String>,
    /// The vector length the server returns; every response is checked against it.
    pub dimension: u32,
    /// Also send `"dimensions": <dimension>`, for models that can shorten their vectors
    /// (OpenAI's text-embedding-3-*). Off by default: other servers may reject it.
    pub send_dimensions: bool,
    /// Inputs per request.
    pub batch_size: usize,
    /// Limit for one request, from connecting to the end of the response body.
    pub timeout: Duration,
    /// Further tries after the first, for retryable failures.
    pub max_retries: u32,
    /// The first backoff; it doubles with every retry up to `max_backoff`.
    pub initial_backoff: Duration,
    pub max_backoff: Duration,
    /// A `Retry-After` longer than this is not waited out: the call fails instead of
    /// hanging an ingestion job (the job queue retries later).
    pub max_retry_after: Duration,
}

impl OpenAiConfig {
    /// A configuration with the defaults: no key, bearer auth, 64 inputs per request,
    /// 30 s per request, 3 retries backing off from 500 ms to 20 s, `Retry-After` up to 60 s.
    #[must_use]
    pub fn new(base_url: impl Into<String>, model: impl Into<String>, dimension: u32) -> Self {
        Self {
            base_url: base_url.into(),
            api_key: None,
            api_key_style: ApiKeyStyle::Bearer,
            api_version: None,
            model: model.into(),
            model_id: None,
            dimension,
            send_dimensions: false,
            batch_size: 64,
            timeout: Duration::from_secs(30),
            max_retries: 3,
            initial_backoff: Duration::from_millis(500),
            max_backoff: Duration::from_secs(20),
            max_retry_after: Duration::from_secs(60),
        }
    }

    /// The id collections bind to.
    #[must_use]
    pub fn model_id(&self) -> String {
        self.model_id
            .clone()
            .unwrap_or_else(|| format!("openai/{}", self.model))
    }
}

impl std::fmt::Debug for OpenAiConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OpenAiConfig")
            .field("base_url", &self.base_url)
            // Never print the key itself (configs end up in logs).
            .field("api_key", &self.api_key.as_ref().map(|_| "<redacted>"))
            .field("api_key_style", &self.api_key_style)
            .field("api_version", &self.api_version)
            .field("model", &self.model)
            .field("model_id", &self.model_id)
            .field("dimension", &self.dimension)
            .field("send_dimensions", &self.send_dimensions)
            .field("batch_size", &self.batch_size)
            .field("timeout", &self.timeout)
            .field("max_retries", &self.max_retries)
            .field("initial_backoff", &self.initial_backoff)
            .field("max_backoff", &self.max_backoff)
            .field("max_retry_after", &self.max_retry_after)
            .finish()
    }
}

/// Why one request failed; [`RemoteEmbedError::is_retryable`] says whether another try
/// may succeed. Errors from [`OpenAiEmbedder`] carry it in their chain (`downcast_ref`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RemoteEmbedError {
    #[error("HTTP {status}: {body}")]
    Status { status: u16, body: String },
    #[error("no complete response within {0:?}")]
    Timeout(Duration),
    #[error("transport error: {0}")]
    Transport(String),
    #[error("invalid response: {0}")]
    InvalidResponse(String),
}

impl RemoteEmbedError {
    /// 429, 5xx, timeouts and transport failures; never another 4xx or a bad response.
    #[must_use]
    pub fn is_retryable(&self) -> bool {
        match self {
            Self::Status { status, .. } => *status == 429 || (500..600).contains(status),
            Self::Timeout(_) | Self::Transport(_) => true,
            Self::InvalidResponse(_) => false,
        }
    }
}

/// An embedder backed by an OpenAI-compatible HTTP API.
#[derive(Debug, Clone)]
pub struct OpenAiEmbedder {
    config: OpenAiConfig,
    model: EmbeddingModel,
    endpoint: Url,
    client: reqwest::Client,
}

#[derive(Serialize)]
struct EmbeddingsRequest<'a> {
    model: &'a str,
    input: &'a [String],
    #[serde(skip_serializing_if = "Option::is_none")]
    dimensions: Option<u32>,
}

#[derive(Deserialize)]
struct EmbeddingsResponse {
    data: Vec<EmbeddingItem>,
}

#[derive(Deserialize)]
struct EmbeddingItem {
    embedding: Vec<f32>,
    /// Position of the input; OpenAI documents it, some servers omit it.
    index: Option<usize>,
}

/// A failed try, with how long the server asked us to wait before the next.
struct Failure {
    error: RemoteEmbedError,
    retry_after: Option<Duration>,
}

/// How much of an error body goes into the message (bodies can be whole HTML pages).
const MAX_ERROR_BODY: usize = 500;

impl OpenAiEmbedder {
    /// # Errors
    /// When the URL, the model id or dimension, the batch size or the API key is unusable.
    pub fn new(config: OpenAiConfig) -> Result<Self> {
        ensure!(
            config.batch_size > 0,
            "the embedding batch size must be at least 1"
        );
        ensure!(
            !config.model.trim().is_empty(),
            "the embedding model name is empty"
        );
        let model = EmbeddingModel::new(&config.model_id(), config.dimension)?;
        let base = config.base_url.trim_end_matches('/');
        let mut endpoint = Url::parse(&format!("{base}/embeddings"))
            .with_context(|| format!("invalid embeddings base URL {:?}", config.base_url))?;
        ensure!(
            matches!(endpoint.scheme(), "http" | "https"),
            "the embeddings base URL must be http or https, not {:?}",
            config.base_url
        );
        if let Some(version) = &config.api_version {
            endpoint
                .query_pairs_mut()
                .append_pair("api-version", version);
        }

        let mut headers = HeaderMap::new();
        if let Some(key) = &config.api_key {
            let (name, value) = match config.api_key_style {
                ApiKeyStyle::Bearer => (AUTHORIZATION, format!("Bearer {key}")),
                ApiKeyStyle::AzureApiKey => (HeaderName::from_static("api-key"), key.clone()),
            };
            let mut value = HeaderValue::from_str(&value)
                .context("the API key contains characters not allowed in a header")?;
            value.set_sensitive(true);
            headers.insert(name, value);
        }
        let client = reqwest::Client::builder()
            .default_headers(headers)
            .connect_timeout(config.timeout.min(Duration::from_secs(10)))
            .build()
            .context("could not build the HTTP client")?;
        Ok(Self {
            config,
            model,
            endpoint,
            client,
        })
    }

    /// One batch, retried as configured.
    async fn embed_batch(&self, input: &[String]) -> Result<Vec<Embedding>> {
        let mut attempt: u32 = 0;
        loop {
            let failure = match self.try_once(input).await {
                Ok(embeddings) => return Ok(embeddings),
                Err(failure) => failure,
            };
            let tries = attempt + 1;
            if !failure.error.is_retryable() {
                return Err(failure.error).context(format!("not retried (attempt {tries})"));
            }
            if attempt >= self.config.max_retries {
                return Err(failure.error).context(format!("gave up after {tries} attempts"));
            }
            let backoff = self.backoff(attempt);
            let delay = match failure.retry_after {
                Some(asked) if asked > self.config.max_retry_after => {
                    return Err(failure.error).context(format!(
                        "the server asked to retry after {asked:?}, longer than the {:?} we wait",
                        self.config.max_retry_after
                    ));
                }
                Some(asked) => asked.max(backoff),
                None => backoff,
            };
            tracing::warn!(
                endpoint = %self.endpoint,
                attempt = tries,
                error = %failure.error,
                delay_ms = u64::try_from(delay.as_millis()).unwrap_or(u64::MAX),
                "embedding request failed; retrying"
            );
            tokio::time::sleep(delay).await;
            attempt += 1;
        }
    }

    /// Exponential backoff with "equal jitter": half the delay is fixed so retries never
    /// bunch up at zero, the other half random so clients that failed together spread out.
    fn backoff(&self, attempt: u32) -> Duration {
        let factor = 2u32.saturating_pow(attempt.min(16));
        let full = self
            .config
            .initial_backoff
            .saturating_mul(factor)
            .min(self.config.max_backoff);
        full / 2 + full.mul_f64(rand::random::<f64>() / 2.0)
    }

    async fn try_once(&self, input: &[String]) -> std::result::Result<Vec<Embedding>, Failure> {
        let body = EmbeddingsRequest {
            model: &self.config.model,
            input,
            dimensions: self.config.send_dimensions.then_some(self.config.dimension),
        };
        let fail = |error| Failure {
            error,
            retry_after: None,
        };
        let transport = |e: reqwest::Error| {
            if e.is_timeout() {
                RemoteEmbedError::Timeout(self.config.timeout)
            } else {
                // `{:#}` is not enough for reqwest: the cause (refused, reset, DNS) is
                // in its source chain.
                let mut message = e.to_string();
                let mut source = std::error::Error::source(&e);
                while let Some(cause) = source {
                    message.push_str(": ");
                    message.push_str(&cause.to_string());
                    source = cause.source();
                }
                RemoteEmbedError::Transport(message)
            }
        };
        let response = self
            .client
            .post(self.endpoint.clone())
            .timeout(self.config.timeout)
            .json(&body)
            .send()
            .await
            .map_err(|e| fail(transport(e)))?;
        let status = response.status();
        if !status.is_success() {
            let retry_after = retry_after(response.headers());
            let text = response.text().await.unwrap_or_default();
            return Err(Failure {
                error: RemoteEmbedError::Status {
                    status: status.as_u16(),
                    body: excerpt(&text),
                },
                retry_after,
            });
        }
        let bytes = response.bytes().await.map_err(|e| fail(transport(e)))?;
        let parsed: EmbeddingsResponse = serde_json::from_slice(&bytes).map_err(|e| {
            fail(RemoteEmbedError::InvalidResponse(format!(
                "not an embeddings response ({e}): {}",
                excerpt(&String::from_utf8_lossy(&bytes))
            )))
        })?;
        self.validate(parsed, input.len())
            .map_err(|message| fail(RemoteEmbedError::InvalidResponse(message)))
    }

    /// One vector per input, in input order, each of the configured dimension.
    fn validate(
        &self,
        response: EmbeddingsResponse,
        expected: usize,
    ) -> std::result::Result<Vec<Embedding>, String> {
        let mut data = response.data;
        if data.len() != expected {
            return Err(format!("{} embeddings for {expected} inputs", data.len()));
        }
        let indexed = data.iter().filter(|item| item.index.is_some()).count();
        if indexed == expected {
            data.sort_by_key(|item| item.index);
            for (position, item) in data.iter().enumerate() {
                if item.index != Some(position) {
                    return Err(format!(
                        "the indexes are not 0..{expected} (duplicate or out of range)"
                    ));
                }
            }
        } else if indexed != 0 {
            return Err("some embeddings have an index and some do not".to_owned());
        }
        let dimension = self.config.dimension as usize;
        data.into_iter()
            .enumerate()
            .map(|(position, item)| {
                Embedding::with_dimension(item.embedding, dimension).map_err(|e| {
                    format!("embedding {position}: {e} (is the configured dimension right?)")
                })
            })
            .collect()
    }
}

#[async_trait]
impl Embedder for OpenAiEmbedder {
    fn model(&self) -> EmbeddingModel {
        self.model.clone()
    }

    async fn embed(&self, texts: &[String]) -> Result<Vec<Embedding>> {
        let batches = texts.len().div_ceil(self.config.batch_size);
        let mut out = Vec::with_capacity(texts.len());
        for (number, batch) in texts.chunks(self.config.batch_size).enumerate() {
            let embeddings = self.embed_batch(batch).await.with_context(|| {
                format!(
                    "embedding with {} at {} failed (batch {} of {batches}, {} inputs)",
                    self.config.model,
                    self.endpoint,
                    number + 1,
                    batch.len()
                )
            })?;
            out.extend(embeddings);
        }
        if out.len() != texts.len() {
            bail!("{} embeddings for {} texts", out.len(), texts.len());
        }
        Ok(out)
    }
}

/// `retry-after-ms` (Azure, milliseconds) or `Retry-After` in seconds. The HTTP-date
/// form is ignored: rate limiters send seconds, and our own backoff applies instead.
fn retry_after(headers: &HeaderMap) -> Option<Duration> {
    let header = |name: &str| headers.get(name)?.to_str().ok().map(str::trim);
    if let Some(ms) = header("retry-after-ms").and_then(|v| v.parse::<f64>().ok()) {
        return Duration::try_from_secs_f64(ms / 1000.0).ok();
    }
    let seconds = header(RETRY_AFTER.as_str())?.parse::<f64>().ok()?;
    Duration::try_from_secs_f64(seconds).ok()
}

/// The start of an error body on one line, for error messages.
fn excerpt(text: &str) -> String {
    let one_line: String = text.split_whitespace().collect::<Vec<_>>().join(" ");
    if one_line.chars().count() <= MAX_ERROR_BODY {
        return one_line;
    }
    let cut: String = one_line.chars().take(MAX_ERROR_BODY).collect();
    format!("{cut}…")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn embedder(config: OpenAiConfig) -> OpenAiEmbedder {
        OpenAiEmbedder::new(config).unwrap()
    }

    #[test]
    fn the_endpoint_appends_embeddings_and_the_azure_api_version() {
        let mut config = OpenAiConfig::new(
            "https://res.openai.azure.com/openai/deployments/emb/",
            "emb",
            1536,
        );
        config.api_version = Some("2024-10-21".to_owned());
        let e = embedder(config);
        assert_eq!(
            e.endpoint.as_str(),
            "https://res.openai.azure.com/openai/deployments/emb/embeddings?api-version=2024-10-21"
        );
        assert_eq!(e.model().id, "openai/emb");
    }

    #[test]
    fn the_api_key_never_appears_in_debug_output() {
        let mut config = OpenAiConfig::new("http://localhost:1/v1", "m", 8);
        config.api_key = Some("sk-very-secret".to_owned());
        let e = embedder(config);
        assert!(!format!("{e:?}").contains("sk-very-secret"));
    }

    #[test]
    fn unusable_settings_are_rejected() {
        assert!(OpenAiEmbedder::new(OpenAiConfig::new("not a url", "m", 8)).is_err());
        assert!(OpenAiEmbedder::new(OpenAiConfig::new("ftp://x/v1", "m", 8)).is_err());
        assert!(OpenAiEmbedder::new(OpenAiConfig::new("http://x/v1", " ", 8)).is_err());
        assert!(OpenAiEmbedder::new(OpenAiConfig::new("http://x/v1", "m", 0)).is_err());
        let mut zero_batch = OpenAiConfig::new("http://x/v1", "m", 8);
        zero_batch.batch_size = 0;
        assert!(OpenAiEmbedder::new(zero_batch).is_err());
    }

    #[test]
    fn only_429_5xx_timeouts_and_transport_errors_are_retryable() {
        let status = |status| RemoteEmbedError::Status {
            status,
            body: String::new(),
        };
        assert!(status(429).is_retryable());
        assert!(status(500).is_retryable());
        assert!(status(503).is_retryable());
        assert!(!status(400).is_retryable());
        assert!(!status(401).is_retryable());
        assert!(!status(404).is_retryable());
        assert!(RemoteEmbedError::Timeout(Duration::from_secs(1)).is_retryable());
        assert!(RemoteEmbedError::Transport("reset".into()).is_retryable());
        assert!(!RemoteEmbedError::InvalidResponse("x".into()).is_retryable());
    }

    #[test]
    fn retry_after_is_read_in_seconds_or_azure_milliseconds() {
        let mut headers = HeaderMap::new();
        assert_eq!(retry_after(&headers), None);
        headers.insert(RETRY_AFTER, HeaderValue::from_static("2"));
        assert_eq!(retry_after(&headers), Some(Duration::from_secs(2)));
        headers.insert("retry-after-ms", HeaderValue::from_static("150"));
        assert_eq!(retry_after(&headers), Some(Duration::from_millis(150)));
        let mut date = HeaderMap::new();
        date.insert(
            RETRY_AFTER,
            HeaderValue::from_static("Wed, 21 Oct 2015 07:28:00 GMT"),
        );
        assert_eq!(retry_after(&date), None);
    }

    #[test]
    fn backoff_doubles_within_jitter_and_stops_at_the_maximum() {
        let mut config = OpenAiConfig::new("http://x/v1", "m", 8);
        config.initial_backoff = Duration::from_millis(100);
        config.max_backoff = Duration::from_millis(1000);
        let e = embedder(config);
        for _ in 0..50 {
            let first = e.backoff(0);
            assert!(first >= Duration::from_millis(50) && first <= Duration::from_millis(100));
            let third = e.backoff(2);
            assert!(third >= Duration::from_millis(200) && third <= Duration::from_millis(400));
            let capped = e.backoff(30);
            assert!(capped >= Duration::from_millis(500) && capped <= Duration::from_millis(1000));
        }
    }

    #[test]
    fn long_error_bodies_are_cut_to_one_short_line() {
        let body = format!("line one\n  line two {}", "x".repeat(2000));
        let short = excerpt(&body);
        assert!(short.starts_with("line one line two"));
        assert!(short.chars().count() <= MAX_ERROR_BODY + 1);
    }
}
