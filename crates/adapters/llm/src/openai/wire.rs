//! The OpenAI chat completions wire format: the request body, the whole-answer
//! response, and the streamed `chat.completion.chunk` events ending with
//! `data: [DONE]`. Written against OpenAI's documentation and checked with what Azure
//! OpenAI (empty `choices` carrying filter results), vLLM, Ollama, LM Studio and
//! llama.cpp send. Pure: no I/O.

use std::collections::VecDeque;

use serde::{Deserialize, Serialize};
use serde_json::Value;
use trellis_content::{
    ChatChunk, ChatRequest, ChatRole, Completion, FinishReason, ProviderError, TokenUsage,
};

use crate::decode::{EventHandler, protocol, push_end, usage};
use crate::failure::{error_kind, error_message, excerpt};
use crate::sse::SseEvent;

/// Which field carries the answer length limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum MaxTokensField {
    /// `max_tokens`: what Ollama, llama.cpp, LM Studio and older deployments know.
    #[default]
    MaxTokens,
    /// `max_completion_tokens`: what OpenAI's reasoning models require (and OpenAI
    /// and vLLM accept for every model), `max_tokens` being deprecated there.
    MaxCompletionTokens,
}

/// Request options that are settings of the client, not of the call.
#[derive(Debug, Clone, Copy)]
pub(crate) struct BodyOptions {
    pub include_usage: bool,
    pub max_tokens_field: MaxTokensField,
}

#[derive(Serialize)]
struct Body<'a> {
    model: &'a str,
    messages: Vec<WireMessage<'a>>,
    stream: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    stream_options: Option<StreamOptions>,
    #[serde(skip_serializing_if = "Option::is_none")]
    temperature: Option<f32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    top_p: Option<f32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    max_tokens: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    max_completion_tokens: Option<u32>,
}

#[derive(Serialize)]
struct WireMessage<'a> {
    role: &'static str,
    content: &'a str,
}

#[derive(Serialize)]
struct StreamOptions {
    include_usage: bool,
}

/// The JSON body of `POST /chat/completions`.
pub(crate) fn request_body(
    request: &ChatRequest,
    model: &str,
    options: BodyOptions,
    stream: bool,
) -> Result<Vec<u8>, serde_json::Error> {
    let parameters = &request.parameters;
    let max = parameters.max_tokens();
    let body = Body {
        model,
        messages: request
            .messages
            .iter()
            .map(|m| WireMessage {
                role: match m.role {
                    ChatRole::System => "system",
                    ChatRole::User => "user",
                    ChatRole::Assistant => "assistant",
                },
                content: &m.content,
            })
            .collect(),
        stream,
        // Without it no usage is streamed at all; only sent when streaming, as some
        // servers reject `stream_options` on a plain request.
        stream_options: (stream && options.include_usage).then_some(StreamOptions {
            include_usage: true,
        }),
        temperature: parameters.temperature(),
        top_p: parameters.top_p(),
        max_tokens: max.filter(|_| options.max_tokens_field == MaxTokensField::MaxTokens),
        max_completion_tokens: max
            .filter(|_| options.max_tokens_field == MaxTokensField::MaxCompletionTokens),
    };
    serde_json::to_vec(&body)
}

#[derive(Deserialize)]
struct WireUsage {
    prompt_tokens: Option<u64>,
    completion_tokens: Option<u64>,
}

impl WireUsage {
    fn to_domain(&self) -> TokenUsage {
        usage(
            self.prompt_tokens.unwrap_or(0),
            self.completion_tokens.unwrap_or(0),
        )
    }
}

/// Fields every response or chunk may carry to say it is really an error.
#[derive(Deserialize)]
struct ErrorMarkers {
    error: Option<Value>,
    object: Option<String>,
}

impl ErrorMarkers {
    fn is_error(&self) -> bool {
        self.error.as_ref().is_some_and(|e| !e.is_null()) || self.object.as_deref() == Some("error")
    }
}

/// The provider failure an error object (in a 200 body or mid-stream) describes.
fn error_from_json(raw: &str) -> ProviderError {
    let value: Value = serde_json::from_str(raw).unwrap_or(Value::Null);
    let message = error_message(raw.as_bytes()).unwrap_or_else(|| "unknown error".to_owned());
    ProviderError::new(
        error_kind(&value),
        format!("the provider reported an error: {message}"),
    )
}

fn finish_reason(reason: &str) -> FinishReason {
    match reason {
        "length" | "max_tokens" => FinishReason::Length,
        "content_filter" => FinishReason::ContentFilter,
        "tool_calls" | "function_call" => FinishReason::ToolCalls,
        // "stop", "eos" (some local servers), and anything new: it did stop normally.
        _ => FinishReason::Stop,
    }
}

#[derive(Deserialize)]
struct CompletionBody {
    #[serde(default)]
    choices: Option<Vec<CompletionChoice>>,
    usage: Option<WireUsage>,
}

#[derive(Deserialize)]
struct CompletionChoice {
    #[serde(default)]
    index: u32,
    message: Option<CompletionMessage>,
    finish_reason: Option<String>,
}

#[derive(Deserialize)]
struct CompletionMessage {
    content: Option<String>,
    refusal: Option<String>,
}

/// A whole-answer response body.
///
/// # Errors
/// `Protocol` for a body that is not a chat completion; the provider's kind for an
/// error object.
pub(crate) fn parse_completion(body: &[u8]) -> Result<Completion, ProviderError> {
    let text = std::str::from_utf8(body)
        .map_err(|_| protocol("the response is not valid UTF-8".to_owned()))?;
    if let Ok(markers) = serde_json::from_str::<ErrorMarkers>(text)
        && markers.is_error()
    {
        return Err(error_from_json(text));
    }
    let parsed: CompletionBody = serde_json::from_str(text).map_err(|e| {
        protocol(format!(
            "the response is not a chat completion ({e}): {}",
            excerpt(text)
        ))
    })?;
    let choice = parsed
        .choices
        .unwrap_or_default()
        .into_iter()
        .find(|c| c.index == 0)
        .ok_or_else(|| protocol("the response has no choices".to_owned()))?;
    let message = choice.message;
    // A refusal comes instead of content; it is what the user should read.
    let content = message
        .and_then(|m| m.content.or(m.refusal))
        .unwrap_or_default();
    Ok(Completion {
        content,
        finish_reason: choice
            .finish_reason
            .as_deref()
            .map_or(FinishReason::Stop, finish_reason),
        usage: parsed.usage.as_ref().map(WireUsage::to_domain),
    })
}

#[derive(Deserialize)]
struct StreamChunk {
    #[serde(default)]
    choices: Option<Vec<StreamChoice>>,
    usage: Option<WireUsage>,
    error: Option<Value>,
    object: Option<String>,
}

#[derive(Deserialize)]
struct StreamChoice {
    #[serde(default)]
    index: u32,
    delta: Option<StreamDelta>,
    finish_reason: Option<String>,
}

#[derive(Deserialize)]
struct StreamDelta {
    // Tool calls, `reasoning_content` (vLLM, DeepSeek) and roles are not shown.
    content: Option<String>,
}

/// The meaning of `chat.completion.chunk` events.
#[derive(Debug, Default)]
pub(crate) struct OpenAiEvents {
    finish: Option<FinishReason>,
    usage: Option<TokenUsage>,
}

impl EventHandler for OpenAiEvents {
    const END_MARKER: &'static str = "[DONE]";

    fn event(
        &mut self,
        event: &SseEvent,
        out: &mut VecDeque<ChatChunk>,
    ) -> Result<bool, ProviderError> {
        let data = event.data.trim();
        if data == "[DONE]" {
            // Finish is held back until here so that it comes last, after the usage
            // chunk OpenAI sends once the choice has finished. A server that never
            // names a reason still ended normally.
            push_end(out, self.usage, self.finish.unwrap_or(FinishReason::Stop));
            return Ok(true);
        }
        if data.is_empty() {
            return Ok(false);
        }
        if event.event.as_deref() == Some("error") {
            return Err(error_from_json(data));
        }
        let chunk: StreamChunk = serde_json::from_str(data).map_err(|e| {
            protocol(format!(
                "malformed JSON in the stream ({e}): {}",
                excerpt(data)
            ))
        })?;
        let markers = ErrorMarkers {
            error: chunk.error,
            object: chunk.object,
        };
        if markers.is_error() {
            return Err(error_from_json(data));
        }
        if let Some(u) = &chunk.usage {
            self.usage = Some(u.to_domain());
        }
        // Azure's first chunk has no choices, only prompt filter results.
        for choice in chunk.choices.unwrap_or_default() {
            // Only the first choice is the answer (n > 1 is never asked for).
            if choice.index != 0 {
                continue;
            }
            if let Some(text) = choice.delta.and_then(|d| d.content)
                && !text.is_empty()
            {
                out.push_back(ChatChunk::Delta(text));
            }
            if let Some(reason) = choice.finish_reason.as_deref() {
                self.finish = Some(finish_reason(reason));
            }
        }
        Ok(false)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::decode::ChatDecoder;
    use trellis_content::{ChatMessage, ModelParameters, ProviderErrorKind};
    use trellis_tenancy::LlmProvider;

    const STREAM: &str = concat!(
        "data: {\"id\":\"c1\",\"object\":\"chat.completion.chunk\",\"choices\":[{\"index\":0,\"delta\":{\"role\":\"assistant\",\"content\":\"\"},\"finish_reason\":null}],\"usage\":null}\n\n",
        "data: {\"id\":\"c1\",\"object\":\"chat.completion.chunk\",\"choices\":[{\"index\":0,\"delta\":{\"content\":\"Grüß \"},\"finish_reason\":null}],\"usage\":null}\n\n",
        ": keep-alive\n\n",
        "data: {\"id\":\"c1\",\"object\":\"chat.completion.chunk\",\"choices\":[{\"index\":0,\"delta\":{\"content\":\"dich 👋\"},\"finish_reason\":null}],\"usage\":null}\r\n\r\n",
        "data: {\"id\":\"c1\",\"object\":\"chat.completion.chunk\",\"choices\":[{\"index\":0,\"delta\":{},\"finish_reason\":\"length\"}],\"usage\":null}\n\n",
        "data: {\"id\":\"c1\",\"object\":\"chat.completion.chunk\",\"choices\":[],\"usage\":{\"prompt_tokens\":9,\"completion_tokens\":4,\"total_tokens\":13}}\n\n",
        "data: [DONE]\n\n",
    );

    fn expected() -> Vec<ChatChunk> {
        vec![
            ChatChunk::Delta("Grüß ".into()),
            ChatChunk::Delta("dich 👋".into()),
            ChatChunk::Usage(usage(9, 4)),
            ChatChunk::Finish(FinishReason::Length),
        ]
    }

    fn decode(pieces: &[&[u8]]) -> Vec<ChatChunk> {
        let mut d = ChatDecoder::<OpenAiEvents>::default();
        let mut out = VecDeque::new();
        for p in pieces {
            d.push(p, &mut out);
        }
        d.finish(&mut out);
        out.into()
    }

    fn last_error(chunks: &[ChatChunk]) -> Option<ProviderErrorKind> {
        match chunks.last() {
            Some(ChatChunk::Error(e)) => Some(e.kind),
            _ => None,
        }
    }

    #[test]
    fn a_stream_yields_deltas_then_usage_then_the_finish_reason() {
        assert_eq!(decode(&[STREAM.as_bytes()]), expected());
    }

    #[test]
    fn every_split_point_yields_the_same_chunks() {
        let bytes = STREAM.as_bytes();
        for cut in 0..=bytes.len() {
            let (a, b) = bytes.split_at(cut);
            assert_eq!(decode(&[a, b]), expected(), "cut at {cut}");
        }
        for size in 1..=7 {
            let pieces: Vec<&[u8]> = bytes.chunks(size).collect();
            assert_eq!(decode(&pieces), expected(), "pieces of {size}");
        }
    }

    #[test]
    fn a_stream_without_done_is_reported_as_truncated() {
        let cut = STREAM.find("data: [DONE]").unwrap();
        let chunks = decode(&[&STREAM.as_bytes()[..cut]]);
        assert_eq!(last_error(&chunks), Some(ProviderErrorKind::Protocol));
        assert_eq!(chunks.len(), 3, "{chunks:?}");
    }

    #[test]
    fn malformed_json_ends_the_stream_with_a_protocol_error_and_nothing_after() {
        let stream = "data: {\"choices\":[{\"index\":0,\"delta\":{\"content\":\"ok\"}}]}\n\ndata: {\"choices\":[{\"ind\n\ndata: {\"choices\":[{\"index\":0,\"delta\":{\"content\":\"never\"}}]}\n\ndata: [DONE]\n\n";
        let chunks = decode(&[stream.as_bytes()]);
        assert_eq!(chunks.len(), 2);
        assert_eq!(chunks[0], ChatChunk::Delta("ok".into()));
        assert_eq!(last_error(&chunks), Some(ProviderErrorKind::Protocol));
    }

    #[test]
    fn an_error_object_in_the_stream_becomes_an_error_of_its_kind() {
        let stream = "data: {\"error\":{\"message\":\"Rate limit reached\",\"type\":\"requests\",\"code\":\"rate_limit_exceeded\"}}\n\n";
        let chunks = decode(&[stream.as_bytes()]);
        assert_eq!(last_error(&chunks), Some(ProviderErrorKind::RateLimited));
        let vllm = "data: {\"object\":\"error\",\"message\":\"prompt too long\",\"type\":\"BadRequestError\",\"code\":400}\n\n";
        assert_eq!(
            last_error(&decode(&[vllm.as_bytes()])),
            Some(ProviderErrorKind::BadRequest)
        );
    }

    #[test]
    fn the_whole_answer_body_is_read_with_its_usage() {
        let body = br#"{"id":"c","object":"chat.completion","choices":[{"index":0,"message":{"role":"assistant","content":"Hi!","refusal":null},"finish_reason":"stop"}],"usage":{"prompt_tokens":5,"completion_tokens":2,"total_tokens":7}}"#;
        assert_eq!(
            parse_completion(body).unwrap(),
            Completion {
                content: "Hi!".into(),
                finish_reason: FinishReason::Stop,
                usage: Some(usage(5, 2)),
            }
        );
        assert_eq!(
            parse_completion(b"{\"choices\":[]}").unwrap_err().kind,
            ProviderErrorKind::Protocol
        );
        assert_eq!(
            parse_completion(b"not json").unwrap_err().kind,
            ProviderErrorKind::Protocol
        );
        assert_eq!(
            parse_completion(br#"{"error":{"message":"bad key","type":"invalid_api_key"}}"#)
                .unwrap_err()
                .kind,
            ProviderErrorKind::Unauthorized
        );
    }

    #[test]
    fn the_request_body_names_the_limit_as_configured_and_asks_for_streamed_usage() {
        let request = ChatRequest {
            provider: LlmProvider::Openai,
            model: "gpt-4o-mini".into(),
            messages: vec![
                ChatMessage {
                    role: ChatRole::System,
                    content: "Be brief.".into(),
                },
                ChatMessage {
                    role: ChatRole::User,
                    content: "Hi".into(),
                },
            ],
            parameters: ModelParameters::new(Some(0.5), None, Some(64)).unwrap(),
        };
        let options = BodyOptions {
            include_usage: true,
            max_tokens_field: MaxTokensField::MaxCompletionTokens,
        };
        let body: Value =
            serde_json::from_slice(&request_body(&request, "gpt-4o-mini", options, true).unwrap())
                .unwrap();
        assert_eq!(
            body,
            serde_json::json!({
                "model": "gpt-4o-mini",
                "messages": [
                    {"role": "system", "content": "Be brief."},
                    {"role": "user", "content": "Hi"}
                ],
                "stream": true,
                "stream_options": {"include_usage": true},
                "temperature": 0.5,
                "max_completion_tokens": 64
            })
        );
        let plain: Value = serde_json::from_slice(
            &request_body(
                &request,
                "m",
                BodyOptions {
                    include_usage: true,
                    max_tokens_field: MaxTokensField::MaxTokens,
                },
                false,
            )
            .unwrap(),
        )
        .unwrap();
        assert_eq!(plain["max_tokens"], 64);
        assert!(plain.get("stream_options").is_none());
        assert_eq!(plain["stream"], false);
    }
}
