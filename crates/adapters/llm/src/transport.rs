//! The HTTP side both clients share: one POST to a fixed endpoint with the timeouts
//! and retry policy applied, the error body read into a [`ProviderError`], and a
//! streamed body driven through a provider's decoder into a [`ChatStream`].
//!
//! A stream is a plain state machine polled by its consumer (no spawned task), so
//! dropping it drops the response and with it the upstream connection. It retries a
//! broken or overloaded stream by itself while nothing has been handed to the caller:
//! until then a retry is invisible; after it, the caller would see text twice.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use reqwest::header::{ACCEPT, AUTHORIZATION, CONTENT_TYPE, HeaderMap, HeaderName, HeaderValue};
use reqwest::{Response, Url};
use tokio::time::{Instant, sleep, timeout};
use trellis_content::{
    ChatChunk, ChatRequest, ChatStream, Completion, ContentError, ProviderError, ProviderErrorKind,
};
use trellis_kernel::TenantCtx;

use crate::config::{ApiKey, AuthStyle, ConfigError, RetryPolicy, Timeouts};
use crate::decode::{ChatDecoder, EventHandler, protocol, push_end};
use crate::failure::{
    Failure, classify_status, error_message, excerpt, kind_is_transient, next_delay, redact,
    retry_after,
};

/// Reads a whole-answer body (or a JSON body sent where a stream was asked for).
pub(crate) type ParseCompletion = fn(&[u8]) -> Result<Completion, ProviderError>;

/// Error bodies are read up to this much: enough for any JSON error, not a whole
/// HTML error page from a misconfigured proxy.
const MAX_ERROR_BODY: usize = 64 * 1024;
/// How long the end of a finished stream's body is waited for (see `drain`).
const DRAIN_TIME: Duration = Duration::from_millis(250);
/// Whole-answer bodies beyond this are refused rather than held in memory.
const MAX_BODY: usize = 32 * 1024 * 1024;

/// One provider endpoint and how to call it.
#[derive(Debug)]
pub(crate) struct Transport {
    pub http: reqwest::Client,
    pub endpoint: Url,
    /// Authentication, API version and any configured extras.
    pub headers: HeaderMap,
    pub timeouts: Timeouts,
    pub retry: RetryPolicy,
    /// Kept only to scrub it from error messages.
    pub api_key: Option<ApiKey>,
    /// Names the provider in messages: "OpenAI-compatible API", "Anthropic API".
    pub label: &'static str,
}

impl Transport {
    /// A whole answer, retried as the policy allows.
    pub async fn complete(
        &self,
        body: Vec<u8>,
        parse: ParseCompletion,
    ) -> Result<Completion, ProviderError> {
        let deadline = Instant::now() + self.timeouts.overall;
        let mut retries = 0;
        loop {
            let failure = match self.try_complete(&body, deadline, parse).await {
                Ok(completion) => return Ok(completion),
                Err(failure) => failure,
            };
            self.pause_before_retry(failure, deadline, &mut retries)
                .await?;
        }
    }

    async fn try_complete(
        &self,
        body: &[u8],
        deadline: Instant,
        parse: ParseCompletion,
    ) -> Result<Completion, Failure> {
        let remaining = deadline.saturating_duration_since(Instant::now());
        let mut response = self.send(body, false, remaining, deadline).await?;
        let bytes = self
            .read_body(&mut response, MAX_BODY, Overflow::Fail, deadline, None)
            .await?;
        parse(&bytes).map_err(|error| Failure {
            retryable: kind_is_transient(error.kind),
            error,
            retry_after: None,
        })
    }

    /// A streamed answer: resolves once the provider accepted the request (retrying
    /// until then as the policy allows); the stream retries on its own while nothing
    /// has been delivered.
    pub async fn stream<H: EventHandler>(
        self: Arc<Self>,
        body: Vec<u8>,
        parse: ParseCompletion,
    ) -> Result<ChatStream, ProviderError> {
        let deadline = Instant::now() + self.timeouts.overall;
        let mut retries = 0;
        let response = self.send_retrying(&body, deadline, &mut retries).await?;
        let state = Streaming::<H> {
            mode: Mode::of(&response),
            transport: self,
            body,
            parse,
            response: Some(response),
            decoder: ChatDecoder::default(),
            pending: VecDeque::new(),
            delivered: false,
            retries,
            deadline,
            done: false,
        };
        Ok(Box::pin(futures::stream::unfold(
            state,
            |mut state| async move {
                let chunk = state.next().await?;
                Some((chunk, state))
            },
        )))
    }

    /// Sends until a 2xx arrives, the policy gives up, or the deadline passes.
    async fn send_retrying(
        &self,
        body: &[u8],
        deadline: Instant,
        retries: &mut u32,
    ) -> Result<Response, ProviderError> {
        loop {
            // A streaming server sends its headers as soon as it accepts the request,
            // so silence longer than the idle limit means it is stuck.
            let remaining = deadline.saturating_duration_since(Instant::now());
            let wait = self.timeouts.idle.min(remaining);
            match self.send(body, true, wait, deadline).await {
                Ok(response) => return Ok(response),
                Err(failure) => self.pause_before_retry(failure, deadline, retries).await?,
            }
        }
    }

    /// Waits before the next try, or turns the failure into the caller's error when
    /// there is to be none.
    async fn pause_before_retry(
        &self,
        failure: Failure,
        deadline: Instant,
        retries: &mut u32,
    ) -> Result<(), ProviderError> {
        let remaining = deadline.saturating_duration_since(Instant::now());
        let Some(delay) = next_delay(&self.retry, &failure, *retries, remaining, rand::random())
        else {
            return Err(self.give_up(failure, *retries));
        };
        tracing::warn!(
            provider = self.label,
            endpoint = %self.endpoint,
            attempt = *retries + 1,
            kind = failure.error.kind.as_str(),
            error = %self.seal(failure.error.clone()).message,
            delay_ms = u64::try_from(delay.as_millis()).unwrap_or(u64::MAX),
            "model request failed; retrying"
        );
        sleep(delay).await;
        *retries += 1;
        Ok(())
    }

    /// The error the caller sees: the key scrubbed, and how hard we tried.
    fn give_up(&self, failure: Failure, retries: u32) -> ProviderError {
        let mut error = self.seal(failure.error);
        if retries > 0 {
            error.message = format!("{} (gave up after {} attempts)", error.message, retries + 1);
        } else if failure.retryable
            && failure
                .retry_after
                .is_some_and(|d| d > self.retry.max_retry_after)
        {
            error.message = format!(
                "{} (the provider asked to wait longer than we do)",
                error.message
            );
        }
        error
    }

    /// Every error leaving the transport passes here, so no path can leak the key.
    fn seal(&self, mut error: ProviderError) -> ProviderError {
        error.message = redact(error.message, self.api_key.as_ref().map(ApiKey::expose));
        error
    }

    /// One POST; a non-2xx status becomes a failure carrying the provider's words.
    async fn send(
        &self,
        body: &[u8],
        stream: bool,
        wait: Duration,
        deadline: Instant,
    ) -> Result<Response, Failure> {
        let accept = if stream {
            "text/event-stream"
        } else {
            "application/json"
        };
        let request = self
            .http
            .post(self.endpoint.clone())
            .headers(self.headers.clone())
            .header(CONTENT_TYPE, HeaderValue::from_static("application/json"))
            .header(ACCEPT, HeaderValue::from_static(accept))
            .body(body.to_vec());
        let response = match timeout(wait, request.send()).await {
            Err(_) => {
                return Err(Failure::fatal(
                    ProviderErrorKind::Timeout,
                    format!("the {} did not answer within {}", self.label, seconds(wait)),
                ));
            }
            Ok(Err(e)) => return Err(self.request_failure(&e)),
            Ok(Ok(response)) => response,
        };
        let status = response.status();
        if status.is_success() {
            return Ok(response);
        }
        let (kind, retryable) = classify_status(status.as_u16());
        let headers = response.headers();
        let retry_after = retry_after(headers, SystemTime::now());
        // OpenAI and Anthropic say outright whether a retry can help; their SDKs obey.
        let retryable = match header(headers, "x-should-retry") {
            Some("true") => true,
            Some("false") => false,
            _ => retryable,
        };
        // Quoted in the message so that a user's report can be traced at the provider.
        let request_id = ["x-request-id", "request-id", "apim-request-id"]
            .into_iter()
            .find_map(|name| header(headers, name))
            .map(|id| format!(" [request id {}]", excerpt(id)));
        let mut response = response;
        // The error body is a courtesy: if it does not come, the status says enough.
        let body = self
            .read_body(
                &mut response,
                MAX_ERROR_BODY,
                Overflow::Truncate,
                deadline,
                Some(self.timeouts.idle),
            )
            .await
            .unwrap_or_default();
        let detail = error_message(&body).map_or_else(String::new, |m| format!(": {m}"));
        Err(Failure {
            error: ProviderError::new(
                kind,
                format!(
                    "the {} answered {status}{detail}{}",
                    self.label,
                    request_id.unwrap_or_default()
                ),
            ),
            retryable,
            retry_after,
        })
    }

    /// A failure to get any response at all.
    fn request_failure(&self, e: &reqwest::Error) -> Failure {
        let cause = causes(e);
        if e.is_builder() {
            return Failure::fatal(
                ProviderErrorKind::BadRequest,
                format!(
                    "the request to the {} could not be built: {cause}",
                    self.label
                ),
            );
        }
        if e.is_timeout() {
            // Only connecting can time out inside reqwest (we time the rest ourselves),
            // and a connect timeout is as worth retrying as a refused connection.
            return Failure::new(
                ProviderErrorKind::Timeout,
                format!("could not connect to the {} in time: {cause}", self.label),
                true,
            );
        }
        let what = if e.is_connect() {
            "could not connect to"
        } else {
            "the request failed before any answer from"
        };
        // Refused, reset or closed connections (including a pooled connection the
        // server had just closed): the request never got an answer, so trying again
        // is safe.
        Failure::new(
            ProviderErrorKind::Unavailable,
            format!("{what} the {}: {cause}", self.label),
            true,
        )
    }

    /// The body, up to `limit` bytes, within the deadline (and `idle` between chunks).
    async fn read_body(
        &self,
        response: &mut Response,
        limit: usize,
        overflow: Overflow,
        deadline: Instant,
        idle: Option<Duration>,
    ) -> Result<Vec<u8>, Failure> {
        let mut body = Vec::new();
        loop {
            let remaining = deadline.saturating_duration_since(Instant::now());
            let wait = idle.map_or(remaining, |i| i.min(remaining));
            match timeout(wait, response.chunk()).await {
                Err(_) => {
                    return Err(Failure::fatal(
                        ProviderErrorKind::Timeout,
                        format!(
                            "the {} did not finish its answer within {}",
                            self.label,
                            seconds(wait)
                        ),
                    ));
                }
                Ok(Err(e)) => {
                    return Err(Failure::new(
                        ProviderErrorKind::Protocol,
                        format!("the {} response broke off: {}", self.label, causes(&e)),
                        true,
                    ));
                }
                Ok(Ok(None)) => return Ok(body),
                Ok(Ok(Some(bytes))) => {
                    if body.len() + bytes.len() > limit {
                        if overflow == Overflow::Truncate {
                            body.extend_from_slice(&bytes[..limit - body.len()]);
                            return Ok(body);
                        }
                        return Err(Failure::fatal(
                            ProviderErrorKind::Protocol,
                            format!("the {} response is larger than {limit} bytes", self.label),
                        ));
                    }
                    body.extend_from_slice(&bytes);
                }
            }
        }
    }
}

/// A duration as people read it in an error message ("2.5 s", not "2.499871s").
fn seconds(d: Duration) -> String {
    format!("{:.1} s", d.as_secs_f64())
}

/// A header's value, if present and text.
fn header<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .map(str::trim)
        .filter(|v| !v.is_empty())
}

/// What to do with a body longer than wanted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Overflow {
    /// Keep its start (error bodies: the start says what went wrong).
    Truncate,
    /// Refuse it (an answer cut short would be a wrong answer).
    Fail,
}

/// An error's message with its causes (reqwest keeps "connection refused" in the
/// source chain), without the URL (it may name internal hosts; users see this).
fn causes(e: &reqwest::Error) -> String {
    let mut message = match e.url() {
        // reqwest says "error sending request for url (http://...)".
        Some(url) => e
            .to_string()
            .replace(&format!(" for url ({url})"), "")
            .replace(&format!(" ({url})"), "")
            .replace(url.as_str(), "the endpoint"),
        None => e.to_string(),
    };
    let mut source = std::error::Error::source(e);
    while let Some(cause) = source {
        let text = cause.to_string();
        if !message.contains(&text) {
            message.push_str(": ");
            message.push_str(&text);
        }
        source = cause.source();
    }
    message
}

/// How the response body is to be read.
enum Mode {
    /// Server-sent events, as asked for.
    Sse,
    /// A whole JSON answer, sent by a server that ignores `stream: true`: collected,
    /// then replayed as chunks.
    Json(Vec<u8>),
}

impl Mode {
    fn of(response: &Response) -> Self {
        let json = response
            .headers()
            .get(CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.trim_start().starts_with("application/json"));
        if json {
            Self::Json(Vec::new())
        } else {
            Self::Sse
        }
    }
}

/// The state of one streamed answer.
struct Streaming<H> {
    transport: Arc<Transport>,
    body: Vec<u8>,
    parse: ParseCompletion,
    mode: Mode,
    /// `None` once the body ended or failed.
    response: Option<Response>,
    decoder: ChatDecoder<H>,
    /// Decoded chunks not yet handed out.
    pending: VecDeque<ChatChunk>,
    /// Something has been handed out: no more retries.
    delivered: bool,
    retries: u32,
    deadline: Instant,
    /// `Finish` or `Error` was handed out.
    done: bool,
}

impl<H: EventHandler> Streaming<H> {
    async fn next(&mut self) -> Option<ChatChunk> {
        loop {
            if let Some(chunk) = self.pending.pop_front() {
                return match chunk {
                    ChatChunk::Error(error) => {
                        if !self.delivered && kind_is_transient(error.kind) {
                            let failure = Failure::new(error.kind, error.message, true);
                            match self.restart(failure).await {
                                Ok(()) => continue,
                                Err(error) => Some(self.end_with(error)),
                            }
                        } else {
                            let error = self.transport.seal(error);
                            Some(self.end_with(error))
                        }
                    }
                    ChatChunk::Finish(reason) => {
                        // The response is kept: see `drain`.
                        self.done = true;
                        self.delivered = true;
                        Some(ChatChunk::Finish(reason))
                    }
                    chunk => {
                        self.delivered = true;
                        Some(chunk)
                    }
                };
            }
            if self.done {
                self.drain().await;
                return None;
            }
            let Some(response) = self.response.as_mut() else {
                // Unreachable in practice: the decoder always ends with Finish or Error.
                self.done = true;
                return None;
            };
            let remaining = self.deadline.saturating_duration_since(Instant::now());
            let wait = self.transport.timeouts.idle.min(remaining);
            match timeout(wait, response.chunk()).await {
                Ok(Ok(Some(bytes))) => self.take(&bytes),
                Ok(Ok(None)) => {
                    self.response = None;
                    self.end_of_body();
                }
                Ok(Err(e)) => {
                    self.response = None;
                    let failure = Failure::new(
                        ProviderErrorKind::Protocol,
                        format!(
                            "the {} stream broke off before its end: {}",
                            self.transport.label,
                            causes(&e)
                        ),
                        true,
                    );
                    if self.delivered {
                        self.pending.push_back(ChatChunk::Error(failure.error));
                    } else if let Err(error) = self.restart(failure).await {
                        return Some(self.end_with(error));
                    }
                }
                Err(_) => {
                    self.response = None;
                    let message = if wait < self.transport.timeouts.idle {
                        format!(
                            "the answer took longer than the {} allowed",
                            seconds(self.transport.timeouts.overall)
                        )
                    } else {
                        format!(
                            "the {} sent nothing for {}",
                            self.transport.label,
                            seconds(wait)
                        )
                    };
                    self.pending.push_back(ChatChunk::Error(ProviderError::new(
                        ProviderErrorKind::Timeout,
                        message,
                    )));
                }
            }
        }
    }

    /// Reads what is left of a finished answer's body (the end of the chunked
    /// encoding, usually already in flight) so that the connection goes back to the
    /// pool instead of being closed: a new TLS handshake per answer would add
    /// latency to every call. A server that keeps talking is cut off.
    async fn drain(&mut self) {
        let Some(mut response) = self.response.take() else {
            return;
        };
        let mut left = MAX_ERROR_BODY;
        let _ = timeout(DRAIN_TIME, async {
            while let Ok(Some(bytes)) = response.chunk().await {
                left = left.saturating_sub(bytes.len());
                if left == 0 {
                    break;
                }
            }
        })
        .await;
    }

    fn take(&mut self, bytes: &[u8]) {
        match &mut self.mode {
            Mode::Sse => self.decoder.push(bytes, &mut self.pending),
            Mode::Json(body) => {
                if body.len() + bytes.len() > MAX_BODY {
                    self.response = None;
                    self.pending.push_back(ChatChunk::Error(protocol(format!(
                        "the response is larger than {MAX_BODY} bytes"
                    ))));
                } else {
                    body.extend_from_slice(bytes);
                }
            }
        }
    }

    fn end_of_body(&mut self) {
        match &mut self.mode {
            Mode::Sse => self.decoder.finish(&mut self.pending),
            Mode::Json(body) => match (self.parse)(body) {
                Ok(completion) => {
                    if !completion.content.is_empty() {
                        self.pending.push_back(ChatChunk::Delta(completion.content));
                    }
                    push_end(
                        &mut self.pending,
                        completion.usage,
                        completion.finish_reason,
                    );
                }
                Err(error) => self.pending.push_back(ChatChunk::Error(error)),
            },
        }
    }

    /// Tries the whole request again after `failure`, if the policy allows, with a
    /// fresh decoder; nothing from the failed try was handed out.
    async fn restart(&mut self, failure: Failure) -> Result<(), ProviderError> {
        self.response = None;
        self.pending.clear();
        self.transport
            .pause_before_retry(failure, self.deadline, &mut self.retries)
            .await?;
        let response = self
            .transport
            .send_retrying(&self.body, self.deadline, &mut self.retries)
            .await?;
        self.mode = Mode::of(&response);
        self.response = Some(response);
        self.decoder = ChatDecoder::default();
        Ok(())
    }

    fn end_with(&mut self, error: ProviderError) -> ChatChunk {
        self.done = true;
        self.response = None;
        self.pending.clear();
        ChatChunk::Error(error)
    }
}

/// An HTTP client for model calls: rustls, the given connect timeout, no overall
/// timeout (calls time themselves, as a streamed answer may rightly take minutes), and
/// no redirects: an endpoint may be a tenant's own (checked against the operator's
/// allowlist), and a redirect would take the call, with Azure's `api-key` header,
/// which reqwest does not strip across hosts, somewhere nobody checked.
pub(crate) fn http_client(connect_timeout: Duration) -> Result<reqwest::Client, ConfigError> {
    reqwest::Client::builder()
        .connect_timeout(connect_timeout)
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .map_err(|e| ConfigError::Http(e.to_string()))
}

/// `{base}{path}`, plus `?api-version=` when given, checked to be HTTP(S).
pub(crate) fn endpoint(
    base_url: &str,
    path: &str,
    api_version: Option<&str>,
) -> Result<Url, ConfigError> {
    let bad = |reason: String| ConfigError::BaseUrl {
        url: base_url.to_owned(),
        reason,
    };
    let base = base_url.trim().trim_end_matches('/');
    let mut url = Url::parse(&format!("{base}{path}")).map_err(|e| bad(e.to_string()))?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(bad("must be http or https".to_owned()));
    }
    if url.query().is_some() {
        return Err(bad(
            "must not have a query (set the API version separately)".to_owned(),
        ));
    }
    if let Some(version) = api_version {
        url.query_pairs_mut().append_pair("api-version", version);
    }
    Ok(url)
}

/// The headers every request carries: the key as `auth` says, then `extra` (which
/// may not override the key's header, so a stray setting cannot leak or drop it).
pub(crate) fn headers(
    auth: &AuthStyle,
    api_key: Option<&ApiKey>,
    extra: &[(String, String)],
) -> Result<HeaderMap, ConfigError> {
    let mut headers = HeaderMap::new();
    for (name, value) in extra {
        let bad = |reason: String| ConfigError::Header {
            name: name.clone(),
            reason,
        };
        let name = HeaderName::from_bytes(name.as_bytes()).map_err(|e| bad(e.to_string()))?;
        let value = HeaderValue::from_str(value).map_err(|e| bad(e.to_string()))?;
        headers.insert(name, value);
    }
    if let Some(key) = api_key {
        let (name, value) = match auth {
            AuthStyle::Bearer => (AUTHORIZATION, format!("Bearer {}", key.expose())),
            AuthStyle::Header(name) => (
                HeaderName::from_bytes(name.as_bytes()).map_err(|e| ConfigError::Header {
                    name: name.clone(),
                    reason: e.to_string(),
                })?,
                key.expose().to_owned(),
            ),
        };
        let mut value = HeaderValue::from_str(&value).map_err(|_| ConfigError::ApiKey)?;
        // Keeps the value out of reqwest's and hyper's debug output.
        value.set_sensitive(true);
        headers.insert(name, value);
    }
    Ok(headers)
}

/// The request's model, else the configured default.
pub(crate) fn model_for<'a>(
    request: &'a ChatRequest,
    default: Option<&'a str>,
) -> Result<&'a str, ContentError> {
    let named = request.model.trim();
    if !named.is_empty() {
        return Ok(named);
    }
    default.ok_or_else(|| {
        ContentError::Provider(ProviderError::new(
            ProviderErrorKind::BadRequest,
            "no model was named and none is configured",
        ))
    })
}

/// A request body that could not be serialised (it cannot happen with these types,
/// but is not worth a panic).
pub(crate) fn encode_error(e: serde_json::Error) -> ContentError {
    ContentError::Provider(ProviderError::new(
        ProviderErrorKind::BadRequest,
        format!("the request could not be encoded: {e}"),
    ))
}

/// The span a model call's logs (retries, give-ups) are recorded in.
pub(crate) fn span(
    ctx: &TenantCtx,
    provider: &'static str,
    request: &ChatRequest,
) -> tracing::Span {
    tracing::info_span!(
        "chat_model",
        tenant_id = %ctx.tenant_id(),
        provider,
        model = %request.model
    )
}
