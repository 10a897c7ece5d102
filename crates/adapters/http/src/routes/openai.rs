//! `GET /v1/models` and `POST /v1/chat/completions`: an OpenAI-compatible face on the
//! tenant's agents, so that any OpenAI SDK can talk to them unchanged. The `model` is
//! an agent's name; the API key (or access token) says which tenant's. Answers are
//! grounded like conversation answers but nothing is stored (see the content domain's
//! `complete_chat`).
//!
//! Errors stay RFC 9457 problem documents like everywhere else, with one extra member
//! SDKs understand: `"error": {"message", "type", "code", "param"}`, which the
//! [`openai_errors`] middleware adds. Request fields OpenAI clients send that mean
//! nothing here (`user`, `stop`, `tools`, `presence_penalty`, …) are ignored rather
//! than refused; only those whose answer would differ in a way that matters (`n` > 1)
//! are refused.

use crate::auth::TenantAuth;
use crate::extract::Json;
use crate::middleware::RequestId;
use crate::problem::{ApiError, FieldError, PROBLEM_JSON, Problem, ProblemType};
use crate::state::AppState;
use axum::Router;
use axum::body::Body;
use axum::extract::{DefaultBodyLimit, Request, State};
use axum::http::{HeaderValue, header};
use axum::middleware::Next;
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use futures::StreamExt as _;
use serde::{Deserialize, Serialize};
use serde_json::json;
use std::convert::Infallible;
use std::sync::Arc;
use tower_http::limit::RequestBodyLimitLayer;
use trellis_content::{
    ChatMessage, Citation, Completed, CompletionEvent, CompletionId, CompletionReply,
    CompletionRequest, CompletionStream, ContentError, ContentService, FinishReason, TokenUsage,
    completion_role,
};
use trellis_tenancy::TenancyError;
use utoipa::ToSchema;

/// The routes, with the body limit applied inside the error middleware so that even a
/// refused oversized body gets the OpenAI-style `error` member.
pub fn router(body_limit: usize) -> Router<AppState> {
    Router::new()
        .route("/v1/models", get(list_models))
        .route("/v1/chat/completions", post(chat_completions))
        .layer(DefaultBodyLimit::disable())
        .layer(RequestBodyLimitLayer::new(body_limit))
        .layer(axum::middleware::from_fn(openai_errors))
}

fn content(state: &AppState) -> Result<Arc<ContentService>, ApiError> {
    state.content.clone().ok_or_else(|| {
        ApiError::new(
            ProblemType::NotReady,
            "chat is not configured on this server",
        )
    })
}

// ----- errors ------------------------------------------------------------------------

/// An OpenAI error `code` that is more precise than the problem type, left in the
/// response extensions for [`openai_errors`].
#[derive(Debug, Clone, Copy)]
struct ErrorCode(&'static str);

/// A handler error: a problem, optionally with a precise OpenAI `code`.
#[derive(Debug)]
pub struct OpenAiError {
    api: ApiError,
    code: Option<&'static str>,
}

impl From<ApiError> for OpenAiError {
    fn from(api: ApiError) -> Self {
        Self { api, code: None }
    }
}

impl From<ContentError> for OpenAiError {
    fn from(e: ContentError) -> Self {
        ApiError::from(e).into()
    }
}

impl IntoResponse for OpenAiError {
    fn into_response(self) -> Response {
        let mut res = self.api.into_response();
        if let Some(code) = self.code {
            res.extensions_mut().insert(ErrorCode(code));
        }
        res
    }
}

/// The `model` names no agent the caller may use. Worded as OpenAI does, since SDK
/// users will recognise it.
fn model_not_found(model: &str) -> OpenAiError {
    OpenAiError {
        api: ApiError::not_found(format!(
            "The model `{model}` does not exist or you do not have access to it."
        )),
        code: Some("model_not_found"),
    }
}

/// OpenAI's error `type` for a status.
fn error_type(problem: &Problem) -> &'static str {
    match problem.status {
        401 => "authentication_error",
        403 => "permission_error",
        429 if problem.type_uri == ProblemType::QuotaExceeded.uri() => "insufficient_quota",
        429 => "rate_limit_error",
        s if s >= 500 => "server_error",
        _ => "invalid_request_error",
    }
}

/// The OpenAI-style `error` member for a problem: the problem type's last path
/// segment is the default `code` (`not-found` → `not_found`).
fn error_member(problem: &Problem, code: Option<&'static str>) -> serde_json::Value {
    let code = code.map_or_else(
        || {
            problem
                .type_uri
                .rsplit('/')
                .next()
                .unwrap_or("error")
                .replace('-', "_")
        },
        str::to_owned,
    );
    json!({
        "message": problem.detail,
        "type": error_type(problem),
        "code": code,
        "param": problem.errors.first().map(|e| e.field.clone()),
    })
}

/// Middleware: every error response of these routes leaves as the problem document
/// the rest of the API sends (with request id and path), plus the `error` member.
/// Because it takes the problem out of the response extensions, the global problem
/// middleware passes the finished body through untouched.
pub async fn openai_errors(req: Request, next: Next) -> Response {
    let request_id = req.extensions().get::<RequestId>().map(|r| r.0.clone());
    let path = req.uri().path().to_owned();
    let res = next.run(req).await;
    let status = res.status();
    if !(status.is_client_error() || status.is_server_error()) {
        return res;
    }
    let (mut parts, body) = res.into_parts();
    let code = parts.extensions.remove::<ErrorCode>().map(|c| c.0);
    let problem = match parts.extensions.remove::<Problem>() {
        Some(p) => p,
        None => {
            // From a layer or the framework (413 from the body limit, 405, ...).
            let kind = ProblemType::from_status(status);
            let detail = match kind {
                ProblemType::PayloadTooLarge => "the request body is too large".to_owned(),
                ProblemType::MethodNotAllowed => format!("{path} does not support this method"),
                _ => status
                    .canonical_reason()
                    .unwrap_or("request failed")
                    .to_owned(),
            };
            let mut p = Problem::new(kind, detail);
            p.status = status.as_u16();
            p
        }
    };
    let problem = Problem {
        request_id,
        instance: Some(path),
        ..problem
    };
    let body_text = match serde_json::to_value(&problem) {
        Ok(serde_json::Value::Object(mut doc)) => {
            doc.insert("error".into(), error_member(&problem, code));
            serde_json::Value::Object(doc).to_string()
        }
        // Cannot happen for this plain struct; the bare problem still informs.
        _ => problem.to_body(),
    };
    drop(body);
    parts
        .headers
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(PROBLEM_JSON));
    parts.headers.remove(header::CONTENT_LENGTH);
    Response::from_parts(parts, Body::from(body_text))
}

// ----- models ------------------------------------------------------------------------

/// One agent, as an OpenAI model.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct ModelObject {
    /// The agent's name: pass it as `model`.
    pub id: String,
    /// Always `model`.
    pub object: &'static str,
    /// When the agent was created (Unix seconds).
    pub created: i64,
    /// The tenant's slug (`trellis` when the caller may not read the tenant).
    pub owned_by: String,
}

/// `GET /v1/models`.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct ModelList {
    /// Always `list`.
    pub object: &'static str,
    pub data: Vec<ModelObject>,
}

/// The agents the caller may use, as OpenAI models.
#[utoipa::path(get, path = "/v1/models", tag = "openai",
    responses((status = 200, body = ModelList),
              (status = 401, body = Problem, content_type = "application/problem+json")),
    security(("bearer" = []), ("api_key" = [])))]
pub async fn list_models(
    State(state): State<AppState>,
    TenantAuth(ctx): TenantAuth,
) -> Result<Json<ModelList>, OpenAiError> {
    let agents = content(&state)?.completion_agents(&ctx).await?;
    let owner = match state.tenancy.settings(&ctx).await {
        Ok(t) => t.slug.as_str().to_owned(),
        // A key without `tenant_read` still lists its models.
        Err(TenancyError::Forbidden) => "trellis".to_owned(),
        Err(e) => return Err(ApiError::from(e).into()),
    };
    Ok(Json(ModelList {
        object: "list",
        data: agents
            .into_iter()
            .map(|a| ModelObject {
                id: a.config.name,
                object: "model",
                created: a.created_at.timestamp(),
                owned_by: owner.clone(),
            })
            .collect(),
    }))
}

// ----- chat completions --------------------------------------------------------------

/// One part of a multi-part message content; only text parts are understood.
#[derive(Debug, Clone, Deserialize, ToSchema)]
pub struct ContentPart {
    /// `text` (images and audio are not supported).
    #[serde(rename = "type")]
    pub kind: String,
    pub text: Option<String>,
}

/// A message's content: a string, or a list of text parts.
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(untagged)]
pub enum MessageContent {
    Text(String),
    Parts(Vec<ContentPart>),
}

/// One message of the conversation.
#[derive(Debug, Clone, Deserialize, ToSchema)]
pub struct ChatMessageBody {
    /// `system` (or `developer`), `user` or `assistant`.
    pub role: String,
    /// May be null for an assistant message.
    #[serde(default)]
    pub content: Option<MessageContent>,
}

/// `stream_options`.
#[derive(Debug, Clone, Default, Deserialize, ToSchema)]
pub struct StreamOptions {
    /// Send a last chunk with the token usage before `[DONE]`.
    #[serde(default)]
    pub include_usage: bool,
}

/// An OpenAI chat completion request. Unknown fields are ignored, as OpenAI clients
/// send many this API has no use for.
#[derive(Debug, Clone, Deserialize, ToSchema)]
pub struct ChatCompletionBody {
    /// The name of one of the tenant's agents (see `GET /v1/models`).
    pub model: String,
    pub messages: Vec<ChatMessageBody>,
    /// Stream `chat.completion.chunk` events as Server-Sent Events.
    pub stream: Option<bool>,
    pub stream_options: Option<StreamOptions>,
    /// 0–2; overrides the agent's.
    pub temperature: Option<f32>,
    /// (0, 1]; overrides the agent's.
    pub top_p: Option<f32>,
    /// Overrides the agent's.
    pub max_tokens: Option<u32>,
    /// OpenAI's newer name for `max_tokens`; wins when both are given.
    pub max_completion_tokens: Option<u32>,
    /// Only 1 is supported.
    pub n: Option<u32>,
}

impl ChatCompletionBody {
    fn into_domain(self) -> Result<(CompletionRequest, bool), OpenAiError> {
        if self.n.is_some_and(|n| n != 1) {
            return Err(ApiError::new(
                ProblemType::BadRequest,
                "n: only one choice (n = 1) is supported",
            )
            .into());
        }
        let mut messages = Vec::with_capacity(self.messages.len());
        for (i, m) in self.messages.into_iter().enumerate() {
            let role = completion_role(&m.role)
                .map_err(|e| invalid("messages", format!("message {i}: {}", e.reason)))?;
            let content = match m.content {
                None => String::new(),
                Some(MessageContent::Text(t)) => t,
                Some(MessageContent::Parts(parts)) => {
                    let mut text = Vec::with_capacity(parts.len());
                    for p in parts {
                        match (p.kind.as_str(), p.text) {
                            ("text", Some(t)) => text.push(t),
                            (kind, _) => {
                                return Err(invalid(
                                    "messages",
                                    format!(
                                        "message {i}: content parts of type `{kind}` are not supported; send text"
                                    ),
                                ));
                            }
                        }
                    }
                    text.join("\n")
                }
            };
            messages.push(ChatMessage { role, content });
        }
        let include_usage = self.stream_options.is_some_and(|o| o.include_usage);
        Ok((
            CompletionRequest {
                agent: self.model,
                messages,
                temperature: self.temperature,
                top_p: self.top_p,
                max_tokens: self.max_completion_tokens.or(self.max_tokens),
                stream: self.stream.unwrap_or(false),
            },
            include_usage,
        ))
    }
}

fn invalid(field: &str, reason: String) -> OpenAiError {
    ApiError::validation(vec![FieldError::new(field, reason)]).into()
}

/// The assistant's message.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct AssistantMessage {
    /// Always `assistant`.
    pub role: &'static str,
    pub content: String,
    /// Always null (kept because SDKs expect the member).
    pub refusal: Option<String>,
}

/// The one choice of a completion.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct Choice {
    pub index: u32,
    pub message: AssistantMessage,
    /// `stop`, `length` or `content_filter`.
    pub finish_reason: &'static str,
    /// Always null.
    #[schema(value_type = Option<Object>)]
    pub logprobs: Option<serde_json::Value>,
}

/// Tokens the completion consumed.
#[derive(Debug, Clone, Copy, Serialize, ToSchema)]
pub struct UsageObject {
    pub prompt_tokens: u32,
    pub completion_tokens: u32,
    pub total_tokens: u64,
}

impl From<TokenUsage> for UsageObject {
    fn from(u: TokenUsage) -> Self {
        Self {
            prompt_tokens: u.prompt_tokens,
            completion_tokens: u.completion_tokens,
            total_tokens: u.total(),
        }
    }
}

/// A `chat.completion`.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct ChatCompletion {
    /// `chatcmpl-…`.
    pub id: String,
    /// Always `chat.completion`.
    pub object: &'static str,
    /// Unix seconds.
    pub created: i64,
    /// The agent's name.
    pub model: String,
    pub choices: Vec<Choice>,
    pub usage: UsageObject,
    /// Trellis's addition: the sources the answer cites as `[n]`.
    #[schema(value_type = Vec<Object>)]
    pub citations: Vec<Citation>,
}

fn completion_id(id: CompletionId) -> String {
    format!("chatcmpl-{}", id.as_uuid().simple())
}

/// OpenAI has no "error" finish reason; a failed answer never gets this far.
fn finish_reason(r: FinishReason) -> &'static str {
    match r {
        FinishReason::Stop | FinishReason::Error => "stop",
        FinishReason::Length => "length",
        FinishReason::ContentFilter => "content_filter",
        FinishReason::ToolCalls => "tool_calls",
    }
}

impl From<Completed> for ChatCompletion {
    fn from(c: Completed) -> Self {
        Self {
            id: completion_id(c.id),
            object: "chat.completion",
            created: c.created.timestamp(),
            model: c.agent,
            choices: vec![Choice {
                index: 0,
                message: AssistantMessage {
                    role: "assistant",
                    content: c.content,
                    refusal: None,
                },
                finish_reason: finish_reason(c.finish_reason),
                logprobs: None,
            }],
            usage: c.usage.into(),
            citations: c.citations,
        }
    }
}

/// The fixed members of every chunk of one stream.
struct ChunkHead {
    id: String,
    created: i64,
    model: String,
}

impl ChunkHead {
    fn chunk(&self, delta: serde_json::Value, finish: Option<&'static str>) -> serde_json::Value {
        json!({
            "id": self.id,
            "object": "chat.completion.chunk",
            "created": self.created,
            "model": self.model,
            "choices": [{"index": 0, "delta": delta, "logprobs": null, "finish_reason": finish}],
        })
    }
}

fn data(v: &serde_json::Value) -> Event {
    Event::default().data(v.to_string())
}

/// The stream as OpenAI sends it: a first chunk with the role (and our citations),
/// content deltas, a chunk with the finish reason, the usage chunk if asked for, then
/// `[DONE]`; a provider failure is a last `{"error": …}` event, as OpenAI's.
fn stream_response(s: CompletionStream, include_usage: bool) -> Response {
    let head = ChunkHead {
        id: completion_id(s.id),
        created: s.created.timestamp(),
        model: s.agent.clone(),
    };
    let mut first = head.chunk(json!({"role": "assistant", "content": ""}), None);
    if let Some(obj) = first.as_object_mut() {
        obj.insert("citations".into(), json!(s.citations));
    }
    let first = futures::stream::iter([data(&first)]);
    let rest = s.flat_map(move |e| {
        let events = match e {
            CompletionEvent::Delta(t) => vec![data(&head.chunk(json!({ "content": t }), None))],
            CompletionEvent::Done {
                finish_reason: r,
                usage,
            } => {
                let mut out = vec![data(&head.chunk(json!({}), Some(finish_reason(r))))];
                if include_usage {
                    out.push(data(&json!({
                        "id": head.id,
                        "object": "chat.completion.chunk",
                        "created": head.created,
                        "model": head.model,
                        "choices": [],
                        "usage": UsageObject::from(usage),
                    })));
                }
                out.push(Event::default().data("[DONE]"));
                out
            }
            CompletionEvent::Error(e) => vec![data(&json!({
                "error": {"message": e.message, "type": "server_error", "code": e.kind.as_str(), "param": null}
            }))],
        };
        futures::stream::iter(events)
    });
    Sse::new(first.chain(rest).map(Ok::<Event, Infallible>))
        .keep_alive(KeepAlive::default())
        .into_response()
}

/// Answer with the agent named by `model`: a `chat.completion`, or with `stream: true`
/// a `text/event-stream` of `chat.completion.chunk`s ending with `data: [DONE]`.
#[utoipa::path(post, path = "/v1/chat/completions", tag = "openai",
    request_body = ChatCompletionBody,
    responses((status = 200, body = ChatCompletion,
               description = "a chat.completion, or with `stream: true` a text/event-stream of chat.completion.chunk objects"),
              (status = 400, body = Problem, content_type = "application/problem+json"),
              (status = 401, body = Problem, content_type = "application/problem+json"),
              (status = 404, body = Problem, content_type = "application/problem+json"),
              (status = 422, body = Problem, content_type = "application/problem+json"),
              (status = 429, body = Problem, content_type = "application/problem+json")),
    security(("bearer" = []), ("api_key" = [])))]
pub async fn chat_completions(
    State(state): State<AppState>,
    TenantAuth(ctx): TenantAuth,
    Json(body): Json<ChatCompletionBody>,
) -> Result<Response, OpenAiError> {
    let (request, include_usage) = body.into_domain()?;
    let model = request.agent.clone();
    let reply = match content(&state)?.complete_chat(&ctx, request).await {
        Ok(r) => r,
        Err(ContentError::NotFound("agent")) => return Err(model_not_found(&model)),
        Err(e) => return Err(e.into()),
    };
    Ok(match reply {
        CompletionReply::Whole(c) => Json(ChatCompletion::from(c)).into_response(),
        CompletionReply::Stream(s) => stream_response(s, include_usage),
    })
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    fn body(v: serde_json::Value) -> ChatCompletionBody {
        serde_json::from_value(v).unwrap()
    }

    #[test]
    fn fields_openai_clients_send_are_accepted_and_ignored() {
        let b = body(json!({
            "model": "Support", "messages": [{"role": "user", "content": "hi", "name": "ada"}],
            "user": "u-1", "stop": ["\n"], "presence_penalty": 0.5, "frequency_penalty": 0,
            "tools": [], "seed": 7, "n": 1, "stream": null, "logprobs": false,
            "stream_options": {"include_usage": true}, "max_completion_tokens": 50,
            "max_tokens": 10,
        }));
        let (r, include_usage) = body_ok(b);
        assert!(include_usage);
        assert!(!r.stream);
        assert_eq!(r.max_tokens, Some(50));
        assert_eq!(r.messages[0].content, "hi");
    }

    fn body_ok(b: ChatCompletionBody) -> (CompletionRequest, bool) {
        match b.into_domain() {
            Ok(v) => v,
            Err(e) => panic!("refused: {:?}", e.api),
        }
    }

    fn refused(b: ChatCompletionBody) -> ApiError {
        match b.into_domain() {
            Ok(_) => panic!("accepted"),
            Err(e) => e.api,
        }
    }

    #[test]
    fn more_than_one_choice_is_a_bad_request() {
        let e = refused(body(
            json!({"model": "m", "messages": [{"role": "user", "content": "hi"}], "n": 2}),
        ));
        assert_eq!(e.kind(), ProblemType::BadRequest);
    }

    #[test]
    fn text_parts_are_joined_and_other_parts_are_refused() {
        let (r, _) = body_ok(body(json!({"model": "m", "messages": [{"role": "user",
            "content": [{"type": "text", "text": "a"}, {"type": "text", "text": "b"}]}]})));
        assert_eq!(r.messages[0].content, "a\nb");
        let e = refused(body(json!({"model": "m", "messages": [{"role": "user",
            "content": [{"type": "image_url", "image_url": {"url": "http://x"}}]}]})));
        assert_eq!(e.kind(), ProblemType::Validation);
    }

    #[test]
    fn a_tool_message_is_a_validation_problem_naming_messages() {
        let e = refused(body(json!({"model": "m", "messages": [
            {"role": "user", "content": "hi"},
            {"role": "tool", "content": "{}", "tool_call_id": "x"}]})));
        assert_eq!(e.kind(), ProblemType::Validation);
        assert_eq!(e.errors()[0].field, "messages");
        assert!(e.detail().contains("message 1"), "{}", e.detail());
    }

    #[test]
    fn the_error_member_carries_an_openai_type_and_a_code() {
        let p = ApiError::not_found("no such agent").problem();
        let m = error_member(&p, None);
        assert_eq!(m["type"], "invalid_request_error");
        assert_eq!(m["code"], "not_found");
        let m = error_member(&p, Some("model_not_found"));
        assert_eq!(m["code"], "model_not_found");
        let p = ApiError::quota_exceeded("used up", 10, "2026-01-01T00:00:00Z".into()).problem();
        assert_eq!(error_member(&p, None)["type"], "insufficient_quota");
        let p = ApiError::unauthenticated("invalid credentials").problem();
        assert_eq!(error_member(&p, None)["type"], "authentication_error");
    }
}
