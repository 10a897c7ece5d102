//! What went wrong with a provider call, in the domain's terms, and whether trying
//! again could help: HTTP statuses and provider error types mapped to
//! [`ProviderErrorKind`], the provider's own words pulled out of an error body,
//! `Retry-After`, and the backoff between tries. Pure: no I/O.

use std::time::{Duration, SystemTime};

use reqwest::header::{HeaderMap, RETRY_AFTER};
use serde_json::Value;
use trellis_content::{ProviderError, ProviderErrorKind};

use crate::config::RetryPolicy;

/// How much of a provider's error text reaches the user (bodies can be whole HTML pages).
const MAX_MESSAGE: usize = 300;

/// One failed try.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Failure {
    pub error: ProviderError,
    /// Another try could succeed.
    pub retryable: bool,
    /// How long the server asked us to wait first.
    pub retry_after: Option<Duration>,
}

impl Failure {
    pub fn new(kind: ProviderErrorKind, message: impl Into<String>, retryable: bool) -> Self {
        Self {
            error: ProviderError::new(kind, message),
            retryable,
            retry_after: None,
        }
    }

    pub fn fatal(kind: ProviderErrorKind, message: impl Into<String>) -> Self {
        Self::new(kind, message, false)
    }
}

/// The kind of failure an HTTP status means, and whether it is worth retrying.
pub(crate) fn classify_status(status: u16) -> (ProviderErrorKind, bool) {
    match status {
        401 | 403 => (ProviderErrorKind::Unauthorized, false),
        408 => (ProviderErrorKind::Timeout, true),
        429 => (ProviderErrorKind::RateLimited, true),
        // 529 is Anthropic's "overloaded".
        500..=599 => (ProviderErrorKind::Unavailable, true),
        // 404 is an unknown model or deployment, 413/422 a prompt too long or invalid:
        // all the request's fault, so all "bad request" for the user.
        400..=499 => (ProviderErrorKind::BadRequest, false),
        _ => (ProviderErrorKind::Protocol, false),
    }
}

/// The kind an error *type* or *code* names, as OpenAI (`error.code`, `error.type`)
/// and Anthropic (`error.type`) report them; `None` for a name we do not know.
pub(crate) fn classify_error_type(error_type: &str) -> Option<ProviderErrorKind> {
    let t = error_type.to_ascii_lowercase();
    let kind = if t.contains("rate_limit") || t.contains("quota") || t.contains("too_many") {
        ProviderErrorKind::RateLimited
    } else if t.contains("auth") || t.contains("permission") || t.contains("api_key") {
        ProviderErrorKind::Unauthorized
    } else if t.contains("timeout") {
        ProviderErrorKind::Timeout
    } else if t.contains("invalid_request")
        || t.contains("not_found")
        || t.contains("too_large")
        || t.contains("badrequest")
        || t.contains("bad_request")
        || t.contains("context_length")
    {
        ProviderErrorKind::BadRequest
    } else if t.contains("server_error")
        || t.contains("api_error")
        || t.contains("overloaded")
        || t.contains("unavailable")
    {
        ProviderErrorKind::Unavailable
    } else {
        return None;
    };
    Some(kind)
}

/// The kind of failure an error object describes (a 200 body that is an error, or an
/// error event mid-stream). OpenAI's `error.code` is the most specific (its `type` can
/// be as vague as `requests`), then `error.type`, then a top-level `type` or numeric
/// `code` (vLLM). Unknown errors are the provider's trouble: `Unavailable`.
pub(crate) fn error_kind(value: &Value) -> ProviderErrorKind {
    let error = value.get("error");
    let field = |name: &str| error.and_then(|e| e.get(name)).or_else(|| value.get(name));
    let mut names = [
        field("code"),
        error.and_then(|e| e.get("type")),
        value.get("type"),
    ]
    .into_iter()
    .flatten()
    .filter_map(Value::as_str);
    if let Some(kind) = names.find_map(classify_error_type) {
        return kind;
    }
    match field("code")
        .and_then(Value::as_u64)
        .and_then(|c| u16::try_from(c).ok())
    {
        Some(status @ 400..=599) => classify_status(status).0,
        _ => ProviderErrorKind::Unavailable,
    }
}

/// Whether a failure of this kind, reported inside a stream before anything reached
/// the caller, may be retried (the provider's trouble, not the request's).
pub(crate) fn kind_is_transient(kind: ProviderErrorKind) -> bool {
    matches!(
        kind,
        ProviderErrorKind::RateLimited | ProviderErrorKind::Unavailable
    )
}

/// The provider's own explanation in an error body, whatever its dialect:
/// `{"error": {"message"}}` (OpenAI, Anthropic, Azure), `{"error": "..."}` (Ollama),
/// `{"message"}` (vLLM), `{"detail"}` (FastAPI servers); else the start of the body.
pub(crate) fn error_message(body: &[u8]) -> Option<String> {
    let text = String::from_utf8_lossy(body);
    let text = text.trim();
    if text.is_empty() {
        return None;
    }
    let from_json = serde_json::from_str::<Value>(text).ok().and_then(|v| {
        let pick = |v: &Value| v.as_str().map(str::to_owned);
        v.get("error")
            .and_then(|e| e.get("message").and_then(pick).or_else(|| pick(e)))
            .or_else(|| v.get("message").and_then(pick))
            .or_else(|| v.get("detail").and_then(pick))
    });
    Some(excerpt(from_json.as_deref().unwrap_or(text)))
}

/// `text` on one line, cut to a length fit for a message shown to the user.
pub(crate) fn excerpt(text: &str) -> String {
    let one_line = text.split_whitespace().collect::<Vec<_>>().join(" ");
    if one_line.chars().count() <= MAX_MESSAGE {
        return one_line;
    }
    let cut: String = one_line.chars().take(MAX_MESSAGE).collect();
    format!("{cut}…")
}

/// `message` with every occurrence of the API key blanked: some providers echo a
/// rejected key, and these messages are stored and shown to users.
pub(crate) fn redact(message: String, key: Option<&str>) -> String {
    match key {
        // Very short keys are not scrubbed: they would blank ordinary words.
        Some(key) if key.len() >= 8 && message.contains(key) => message.replace(key, "[redacted]"),
        _ => message,
    }
}

/// How long the server asked us to wait: `retry-after-ms` (OpenAI, Azure) wins over
/// `Retry-After` in seconds or as an HTTP date.
pub(crate) fn retry_after(headers: &HeaderMap, now: SystemTime) -> Option<Duration> {
    let header = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::trim)
    };
    if let Some(ms) = header("retry-after-ms").and_then(|v| v.parse::<f64>().ok())
        && ms.is_finite()
        && ms >= 0.0
    {
        return Some(Duration::from_secs_f64(ms / 1000.0));
    }
    let value = header(RETRY_AFTER.as_str())?;
    if let Ok(secs) = value.parse::<f64>() {
        return (secs.is_finite() && secs >= 0.0).then(|| Duration::from_secs_f64(secs));
    }
    let at = chrono::DateTime::parse_from_rfc2822(value).ok()?;
    let at = SystemTime::UNIX_EPOCH + Duration::from_secs(u64::try_from(at.timestamp()).ok()?);
    Some(at.duration_since(now).unwrap_or(Duration::ZERO))
}

/// The pause before retry number `retry` (0 for the first), "equal jitter": half the
/// delay is fixed so retries never bunch up at zero, half random so clients that
/// failed together spread out. `random` is in `[0, 1)`.
pub(crate) fn backoff(policy: &RetryPolicy, retry: u32, random: f64) -> Duration {
    let factor = 2u32.saturating_pow(retry.min(16));
    let full = policy
        .initial_backoff
        .saturating_mul(factor)
        .min(policy.max_backoff);
    full / 2 + full.mul_f64(random.clamp(0.0, 1.0) / 2.0)
}

/// What to do after a failed try: wait this long and try again, or give up.
pub(crate) fn next_delay(
    policy: &RetryPolicy,
    failure: &Failure,
    retries_done: u32,
    remaining: Duration,
    random: f64,
) -> Option<Duration> {
    if !failure.retryable || retries_done >= policy.max_retries {
        return None;
    }
    let backoff = backoff(policy, retries_done, random);
    let delay = match failure.retry_after {
        Some(asked) if asked > policy.max_retry_after => return None,
        Some(asked) => asked.max(backoff),
        None => backoff,
    };
    // A retry that could not even start before the deadline only delays the error.
    (delay < remaining).then_some(delay)
}

#[cfg(test)]
mod tests {
    use super::*;
    use reqwest::header::HeaderValue;

    #[test]
    fn statuses_map_to_kinds_and_only_transient_ones_are_retryable() {
        use ProviderErrorKind::*;
        assert_eq!(classify_status(401), (Unauthorized, false));
        assert_eq!(classify_status(403), (Unauthorized, false));
        assert_eq!(classify_status(429), (RateLimited, true));
        assert_eq!(classify_status(408), (Timeout, true));
        assert_eq!(classify_status(500), (Unavailable, true));
        assert_eq!(classify_status(529), (Unavailable, true));
        assert_eq!(classify_status(400), (BadRequest, false));
        assert_eq!(classify_status(404), (BadRequest, false));
        assert_eq!(classify_status(302), (Protocol, false));
    }

    #[test]
    fn provider_error_names_map_to_kinds() {
        use ProviderErrorKind::*;
        let c = classify_error_type;
        assert_eq!(c("rate_limit_error"), Some(RateLimited));
        assert_eq!(c("rate_limit_exceeded"), Some(RateLimited));
        assert_eq!(c("insufficient_quota"), Some(RateLimited));
        assert_eq!(c("authentication_error"), Some(Unauthorized));
        assert_eq!(c("permission_error"), Some(Unauthorized));
        assert_eq!(c("invalid_api_key"), Some(Unauthorized));
        assert_eq!(c("invalid_request_error"), Some(BadRequest));
        assert_eq!(c("BadRequestError"), Some(BadRequest));
        assert_eq!(c("context_length_exceeded"), Some(BadRequest));
        assert_eq!(c("overloaded_error"), Some(Unavailable));
        assert_eq!(c("server_error"), Some(Unavailable));
        assert_eq!(c("requests"), None);
    }

    #[test]
    fn the_providers_message_is_found_in_every_dialect() {
        let m = |s: &str| error_message(s.as_bytes());
        assert_eq!(
            m(r#"{"error":{"message":"Incorrect API key","type":"invalid_request_error"}}"#),
            Some("Incorrect API key".into())
        );
        assert_eq!(
            m(r#"{"type":"error","error":{"type":"overloaded_error","message":"Overloaded"}}"#),
            Some("Overloaded".into())
        );
        assert_eq!(
            m(r#"{"error":"model 'x' not found"}"#),
            Some("model 'x' not found".into())
        );
        assert_eq!(
            m(r#"{"object":"error","message":"too long","code":400}"#),
            Some("too long".into())
        );
        assert_eq!(m(r#"{"detail":"Not Found"}"#), Some("Not Found".into()));
        assert_eq!(
            m("<html>\n  <body>Bad Gateway</body></html>"),
            Some("<html> <body>Bad Gateway</body></html>".into())
        );
        assert_eq!(m("  "), None);
        assert!(m(&"x".repeat(5000)).unwrap().chars().count() <= MAX_MESSAGE + 1);
    }

    #[test]
    fn error_objects_are_classified_by_code_then_type_then_status() {
        use ProviderErrorKind::*;
        let k = |s: &str| error_kind(&serde_json::from_str(s).unwrap());
        assert_eq!(
            k(r#"{"type":"error","error":{"type":"overloaded_error","message":"Overloaded"}}"#),
            Unavailable
        );
        assert_eq!(
            k(
                r#"{"error":{"message":"Rate limit reached","type":"requests","code":"rate_limit_exceeded"}}"#
            ),
            RateLimited
        );
        assert_eq!(
            k(r#"{"object":"error","message":"too long","type":"BadRequestError","code":400}"#),
            BadRequest
        );
        assert_eq!(k(r#"{"error":{"message":"no","code":401}}"#), Unauthorized);
        assert_eq!(k(r#"{"error":"something odd"}"#), Unavailable);
    }

    #[test]
    fn an_echoed_api_key_is_blanked() {
        let message = "Incorrect API key provided: sk-live-123456789".to_owned();
        assert_eq!(
            redact(message, Some("sk-live-123456789")),
            "Incorrect API key provided: [redacted]"
        );
        assert_eq!(redact("a b".into(), Some("a")), "a b");
        assert_eq!(redact("a b".into(), None), "a b");
    }

    #[test]
    fn retry_after_is_read_in_milliseconds_seconds_or_as_a_date() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_445_412_470);
        let mut h = HeaderMap::new();
        assert_eq!(retry_after(&h, now), None);
        h.insert(RETRY_AFTER, HeaderValue::from_static("2"));
        assert_eq!(retry_after(&h, now), Some(Duration::from_secs(2)));
        h.insert(RETRY_AFTER, HeaderValue::from_static("0.5"));
        assert_eq!(retry_after(&h, now), Some(Duration::from_millis(500)));
        h.insert("retry-after-ms", HeaderValue::from_static("150"));
        assert_eq!(retry_after(&h, now), Some(Duration::from_millis(150)));
        let mut date = HeaderMap::new();
        // 2015-10-21 07:28:00 UTC is 1_445_412_480: ten seconds after `now`.
        date.insert(
            RETRY_AFTER,
            HeaderValue::from_static("Wed, 21 Oct 2015 07:28:00 GMT"),
        );
        assert_eq!(retry_after(&date, now), Some(Duration::from_secs(10)));
        date.insert(RETRY_AFTER, HeaderValue::from_static("soon"));
        assert_eq!(retry_after(&date, now), None);
        date.insert(RETRY_AFTER, HeaderValue::from_static("-3"));
        assert_eq!(retry_after(&date, now), None);
    }

    #[test]
    fn backoff_doubles_within_its_jitter_and_stops_at_the_maximum() {
        let policy = RetryPolicy {
            initial_backoff: Duration::from_millis(100),
            max_backoff: Duration::from_millis(1000),
            ..RetryPolicy::default()
        };
        assert_eq!(backoff(&policy, 0, 0.0), Duration::from_millis(50));
        assert_eq!(backoff(&policy, 0, 0.999_999).as_millis(), 99);
        assert_eq!(backoff(&policy, 2, 0.0), Duration::from_millis(200));
        assert_eq!(backoff(&policy, 30, 0.0), Duration::from_millis(500));
        assert!(backoff(&policy, 30, 1.0) <= Duration::from_millis(1000));
    }

    #[test]
    fn retries_stop_when_spent_refused_too_long_or_past_the_deadline() {
        let policy = RetryPolicy {
            max_retries: 2,
            initial_backoff: Duration::from_millis(100),
            max_backoff: Duration::from_secs(1),
            max_retry_after: Duration::from_secs(5),
        };
        let hour = Duration::from_secs(3600);
        let mut f = Failure::new(ProviderErrorKind::RateLimited, "slow down", true);
        assert_eq!(
            next_delay(&policy, &f, 0, hour, 0.0),
            Some(Duration::from_millis(50))
        );
        assert_eq!(next_delay(&policy, &f, 2, hour, 0.0), None);
        f.retry_after = Some(Duration::from_secs(3));
        assert_eq!(
            next_delay(&policy, &f, 0, hour, 0.0),
            Some(Duration::from_secs(3))
        );
        assert_eq!(
            next_delay(&policy, &f, 0, Duration::from_secs(2), 0.0),
            None
        );
        f.retry_after = Some(Duration::from_secs(6));
        assert_eq!(next_delay(&policy, &f, 0, hour, 0.0), None);
        let fatal = Failure::fatal(ProviderErrorKind::Unauthorized, "no");
        assert_eq!(next_delay(&policy, &fatal, 0, hour, 0.0), None);
    }
}
