//! The Anthropic Messages API wire format: the request body (system prompt at the top
//! level, `max_tokens` required), the whole-message response, and the streamed events
//! `message_start`, `content_block_start`/`_delta`/`_stop`, `message_delta` (stop
//! reason, cumulative usage), `message_stop`, `ping` and `error`. Pure: no I/O.

use std::collections::VecDeque;

use serde::{Deserialize, Serialize};
use serde_json::Value;
use trellis_content::{
    ChatChunk, ChatRequest, ChatRole, Completion, FinishReason, ProviderError, TokenUsage,
};

use crate::decode::{EventHandler, protocol, push_end, usage};
use crate::failure::{error_kind, error_message, excerpt};
use crate::sse::SseEvent;

#[derive(Serialize)]
struct Body<'a> {
    model: &'a str,
    max_tokens: u32,
    #[serde(skip_serializing_if = "Option::is_none")]
    system: Option<String>,
    messages: Vec<WireMessage<'a>>,
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    stream: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    temperature: Option<f32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    top_p: Option<f32>,
}

#[derive(Serialize)]
struct WireMessage<'a> {
    role: &'static str,
    content: &'a str,
}

/// The JSON body of `POST /v1/messages`. `default_max_tokens` is used when the
/// request sets no limit, as the API requires one.
pub(crate) fn request_body(
    request: &ChatRequest,
    model: &str,
    default_max_tokens: u32,
    stream: bool,
) -> Result<Vec<u8>, serde_json::Error> {
    let system: Vec<&str> = request
        .messages
        .iter()
        .filter(|m| m.role == ChatRole::System)
        .map(|m| m.content.as_str())
        .collect();
    let messages = request
        .messages
        .iter()
        // The API refuses empty text blocks; an empty turn carries nothing anyway, and
        // the API merges the same-role turns its removal may leave adjacent.
        .filter(|m| m.role != ChatRole::System && !m.content.trim().is_empty())
        .map(|m| WireMessage {
            role: if m.role == ChatRole::User {
                "user"
            } else {
                "assistant"
            },
            content: &m.content,
        })
        .collect();
    let parameters = &request.parameters;
    // Anthropic's temperature range is 0–1 where the domain allows OpenAI's 0–2, and
    // its newer models refuse temperature and top_p together: temperature wins.
    let temperature = parameters.temperature().map(|t| t.clamp(0.0, 1.0));
    let top_p = parameters.top_p().filter(|_| temperature.is_none());
    let body = Body {
        model,
        max_tokens: parameters.max_tokens().unwrap_or(default_max_tokens),
        system: (!system.is_empty()).then(|| system.join("\n\n")),
        messages,
        stream,
        temperature,
        top_p,
    };
    serde_json::to_vec(&body)
}

/// Anthropic's usage: prompt tokens are split into fresh, cache-written and cache-read.
#[derive(Deserialize, Default)]
struct WireUsage {
    input_tokens: Option<u64>,
    output_tokens: Option<u64>,
    cache_creation_input_tokens: Option<u64>,
    cache_read_input_tokens: Option<u64>,
}

impl WireUsage {
    /// All prompt tokens the model read, cached or not: what the call consumed.
    fn prompt(&self) -> Option<u64> {
        let parts = [
            self.input_tokens,
            self.cache_creation_input_tokens,
            self.cache_read_input_tokens,
        ];
        parts
            .iter()
            .any(Option::is_some)
            .then(|| parts.iter().flatten().sum())
    }
}

fn finish_reason(reason: &str) -> FinishReason {
    match reason {
        "max_tokens" | "model_context_window_exceeded" => FinishReason::Length,
        "tool_use" => FinishReason::ToolCalls,
        "refusal" => FinishReason::ContentFilter,
        // "end_turn", "stop_sequence", "pause_turn", and anything new.
        _ => FinishReason::Stop,
    }
}

fn error_from_json(raw: &str) -> ProviderError {
    let value: Value = serde_json::from_str(raw).unwrap_or(Value::Null);
    let message = error_message(raw.as_bytes()).unwrap_or_else(|| "unknown error".to_owned());
    ProviderError::new(
        error_kind(&value),
        format!("the provider reported an error: {message}"),
    )
}

#[derive(Deserialize)]
struct MessageBody {
    #[serde(rename = "type")]
    kind: Option<String>,
    #[serde(default)]
    content: Vec<ContentBlock>,
    stop_reason: Option<String>,
    #[serde(default)]
    usage: WireUsage,
}

#[derive(Deserialize)]
struct ContentBlock {
    #[serde(rename = "type")]
    kind: String,
    text: Option<String>,
}

/// A whole-message response body.
///
/// # Errors
/// `Protocol` for a body that is not a message; the provider's kind for an error.
pub(crate) fn parse_message(body: &[u8]) -> Result<Completion, ProviderError> {
    let text = std::str::from_utf8(body)
        .map_err(|_| protocol("the response is not valid UTF-8".to_owned()))?;
    let parsed: MessageBody = serde_json::from_str(text).map_err(|e| {
        protocol(format!(
            "the response is not a message ({e}): {}",
            excerpt(text)
        ))
    })?;
    if parsed.kind.as_deref() == Some("error") {
        return Err(error_from_json(text));
    }
    if parsed.kind.as_deref() != Some("message") {
        return Err(protocol(format!(
            "the response is not a message: {}",
            excerpt(text)
        )));
    }
    // Thinking and tool-use blocks are not part of the answer text.
    let content = parsed
        .content
        .iter()
        .filter(|b| b.kind == "text")
        .filter_map(|b| b.text.as_deref())
        .collect::<String>();
    let usage =
        (parsed.usage.prompt().is_some() || parsed.usage.output_tokens.is_some()).then(|| {
            usage(
                parsed.usage.prompt().unwrap_or(0),
                parsed.usage.output_tokens.unwrap_or(0),
            )
        });
    Ok(Completion {
        content,
        finish_reason: parsed
            .stop_reason
            .as_deref()
            .map_or(FinishReason::Stop, finish_reason),
        usage,
    })
}

/// The fields of any streamed event that we read.
#[derive(Deserialize)]
struct StreamEvent {
    #[serde(rename = "type")]
    kind: Option<String>,
    message: Option<StartedMessage>,
    delta: Option<Delta>,
    usage: Option<WireUsage>,
}

#[derive(Deserialize)]
struct StartedMessage {
    usage: Option<WireUsage>,
}

#[derive(Deserialize)]
struct Delta {
    #[serde(rename = "type")]
    kind: Option<String>,
    text: Option<String>,
    stop_reason: Option<String>,
}

/// The meaning of Messages API stream events.
#[derive(Debug, Default)]
pub(crate) struct AnthropicEvents {
    prompt: Option<u64>,
    completion: Option<u64>,
    stop_reason: Option<String>,
}

impl AnthropicEvents {
    fn take_usage(&mut self, u: &WireUsage) {
        // `message_delta` counts are cumulative: the latest replaces the earlier.
        if let Some(p) = u.prompt() {
            self.prompt = Some(p);
        }
        if let Some(c) = u.output_tokens {
            self.completion = Some(c);
        }
    }

    fn usage(&self) -> Option<TokenUsage> {
        (self.prompt.is_some() || self.completion.is_some())
            .then(|| usage(self.prompt.unwrap_or(0), self.completion.unwrap_or(0)))
    }
}

impl EventHandler for AnthropicEvents {
    const END_MARKER: &'static str = "message_stop";

    fn event(
        &mut self,
        event: &SseEvent,
        out: &mut VecDeque<ChatChunk>,
    ) -> Result<bool, ProviderError> {
        let data = event.data.trim();
        if data.is_empty() {
            return Ok(false);
        }
        let parsed: StreamEvent = serde_json::from_str(data).map_err(|e| {
            protocol(format!(
                "malformed JSON in the stream ({e}): {}",
                excerpt(data)
            ))
        })?;
        // The data's `type` repeats the event name; either will do if one is missing.
        let kind = parsed.kind.as_deref().or(event.event.as_deref());
        match kind {
            Some("message_start") => {
                if let Some(u) = parsed.message.and_then(|m| m.usage) {
                    self.take_usage(&u);
                }
            }
            Some("content_block_delta") => {
                if let Some(delta) = parsed.delta
                    && delta.kind.as_deref() == Some("text_delta")
                    && let Some(text) = delta.text
                    && !text.is_empty()
                {
                    out.push_back(ChatChunk::Delta(text));
                }
            }
            Some("message_delta") => {
                if let Some(reason) = parsed.delta.and_then(|d| d.stop_reason) {
                    self.stop_reason = Some(reason);
                }
                if let Some(u) = &parsed.usage {
                    self.take_usage(u);
                }
            }
            Some("message_stop") => {
                let finish = self
                    .stop_reason
                    .as_deref()
                    .map_or(FinishReason::Stop, finish_reason);
                push_end(out, self.usage(), finish);
                return Ok(true);
            }
            Some("error") => return Err(error_from_json(data)),
            // `ping`, block starts and stops, and event types added later (the API
            // promises to add some) carry nothing for us.
            _ => {}
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
        "event: message_start\n",
        "data: {\"type\":\"message_start\",\"message\":{\"id\":\"msg_1\",\"type\":\"message\",\"role\":\"assistant\",\"content\":[],\"model\":\"claude-sonnet-4-5\",\"stop_reason\":null,\"stop_sequence\":null,\"usage\":{\"input_tokens\":21,\"cache_creation_input_tokens\":0,\"cache_read_input_tokens\":4,\"output_tokens\":1}}}\n\n",
        "event: content_block_start\n",
        "data: {\"type\":\"content_block_start\",\"index\":0,\"content_block\":{\"type\":\"text\",\"text\":\"\"}}\n\n",
        "event: ping\n",
        "data: {\"type\": \"ping\"}\n\n",
        "event: content_block_delta\n",
        "data: {\"type\":\"content_block_delta\",\"index\":0,\"delta\":{\"type\":\"text_delta\",\"text\":\"Bonjour, \"}}\n\n",
        "event: content_block_delta\n",
        "data: {\"type\":\"content_block_delta\",\"index\":0,\"delta\":{\"type\":\"text_delta\",\"text\":\"ça va ? 日本\"}}\n\n",
        "event: content_block_stop\n",
        "data: {\"type\":\"content_block_stop\",\"index\":0}\n\n",
        "event: message_delta\n",
        "data: {\"type\":\"message_delta\",\"delta\":{\"stop_reason\":\"max_tokens\",\"stop_sequence\":null},\"usage\":{\"output_tokens\":12}}\n\n",
        "event: message_stop\n",
        "data: {\"type\":\"message_stop\"}\n\n",
    );

    fn expected() -> Vec<ChatChunk> {
        vec![
            ChatChunk::Delta("Bonjour, ".into()),
            ChatChunk::Delta("ça va ? 日本".into()),
            ChatChunk::Usage(usage(25, 12)),
            ChatChunk::Finish(FinishReason::Length),
        ]
    }

    fn decode(pieces: &[&[u8]]) -> Vec<ChatChunk> {
        let mut d = ChatDecoder::<AnthropicEvents>::default();
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
    fn a_stream_yields_text_deltas_then_usage_then_the_stop_reason() {
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
    fn a_stream_without_message_stop_is_reported_as_truncated() {
        let cut = STREAM.find("event: message_stop").unwrap();
        let chunks = decode(&[&STREAM.as_bytes()[..cut]]);
        assert_eq!(chunks.len(), 3);
        assert_eq!(last_error(&chunks), Some(ProviderErrorKind::Protocol));
    }

    #[test]
    fn an_error_event_becomes_an_error_of_its_kind() {
        let stream = "event: error\ndata: {\"type\":\"error\",\"error\":{\"type\":\"overloaded_error\",\"message\":\"Overloaded\"}}\n\n";
        let chunks = decode(&[stream.as_bytes()]);
        assert_eq!(last_error(&chunks), Some(ProviderErrorKind::Unavailable));
        let ChatChunk::Error(e) = &chunks[0] else {
            panic!("{chunks:?}")
        };
        assert!(e.message.contains("Overloaded"), "{e}");
    }

    #[test]
    fn thinking_and_tool_input_deltas_are_not_answer_text() {
        let stream = concat!(
            "data: {\"type\":\"content_block_delta\",\"index\":0,\"delta\":{\"type\":\"thinking_delta\",\"thinking\":\"hmm\"}}\n\n",
            "data: {\"type\":\"content_block_delta\",\"index\":1,\"delta\":{\"type\":\"input_json_delta\",\"partial_json\":\"{\\\"a\"}}\n\n",
            "data: {\"type\":\"message_delta\",\"delta\":{\"stop_reason\":\"tool_use\"},\"usage\":{\"output_tokens\":3}}\n\n",
            "data: {\"type\":\"message_stop\"}\n\n",
        );
        assert_eq!(
            decode(&[stream.as_bytes()]),
            vec![
                ChatChunk::Usage(usage(0, 3)),
                ChatChunk::Finish(FinishReason::ToolCalls)
            ]
        );
    }

    #[test]
    fn a_whole_message_is_read_with_its_usage() {
        let body = br#"{"id":"msg_1","type":"message","role":"assistant","model":"claude-3-5-haiku-latest","content":[{"type":"text","text":"Hello"},{"type":"text","text":"!"}],"stop_reason":"end_turn","stop_sequence":null,"usage":{"input_tokens":10,"output_tokens":2}}"#;
        assert_eq!(
            parse_message(body).unwrap(),
            Completion {
                content: "Hello!".into(),
                finish_reason: FinishReason::Stop,
                usage: Some(usage(10, 2)),
            }
        );
        let error =
            br#"{"type":"error","error":{"type":"rate_limit_error","message":"Slow down"}}"#;
        assert_eq!(
            parse_message(error).unwrap_err().kind,
            ProviderErrorKind::RateLimited
        );
        assert_eq!(
            parse_message(b"[]").unwrap_err().kind,
            ProviderErrorKind::Protocol
        );
    }

    #[test]
    fn the_system_prompt_goes_to_the_top_level_and_a_limit_is_always_sent() {
        let request = ChatRequest {
            provider: LlmProvider::Anthropic,
            model: "claude-sonnet-4-5".into(),
            messages: vec![
                ChatMessage {
                    role: ChatRole::System,
                    content: "Answer in French.".into(),
                },
                ChatMessage {
                    role: ChatRole::User,
                    content: "Hi".into(),
                },
                ChatMessage {
                    role: ChatRole::Assistant,
                    content: String::new(),
                },
            ],
            parameters: ModelParameters::new(Some(1.5), Some(0.9), None).unwrap(),
        };
        let body: Value = serde_json::from_slice(
            &request_body(&request, "claude-sonnet-4-5", 1024, true).unwrap(),
        )
        .unwrap();
        assert_eq!(
            body,
            serde_json::json!({
                "model": "claude-sonnet-4-5",
                "max_tokens": 1024,
                "system": "Answer in French.",
                "messages": [{"role": "user", "content": "Hi"}],
                "stream": true,
                "temperature": 1.0
            })
        );
    }
}
