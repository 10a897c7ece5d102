//! Turns a streamed response body into the domain's [`ChatChunk`]s: bytes go through
//! the SSE decoder, each event through a provider's [`EventHandler`]. Whatever the
//! bytes, the result ends exactly once, with `Finish` (the provider's end marker was
//! seen) or `Error` (malformed JSON, invalid SSE, an error event, or a body that ended
//! before the end marker), and nothing follows. Pure: no I/O.

use std::collections::VecDeque;

use trellis_content::{ChatChunk, FinishReason, ProviderError, ProviderErrorKind, TokenUsage};

use crate::sse::{SseDecoder, SseEvent};

/// A provider's meaning of SSE events.
pub(crate) trait EventHandler: Default + Send + 'static {
    /// The end marker, as named in the "truncated" error.
    const END_MARKER: &'static str;

    /// Handles one event, appending the chunks it yields. Returns `true` for the end
    /// marker, after appending the final `Usage` (if known) and `Finish`.
    ///
    /// # Errors
    /// A malformed event or one that reports a provider failure.
    fn event(
        &mut self,
        event: &SseEvent,
        out: &mut VecDeque<ChatChunk>,
    ) -> Result<bool, ProviderError>;
}

/// Bytes in, chunks out, for one response body.
#[derive(Debug, Default)]
pub(crate) struct ChatDecoder<H> {
    sse: SseDecoder,
    handler: H,
    /// Scratch space for the events one push completes (kept to reuse its allocation).
    events: Vec<SseEvent>,
    /// `Finish` or `Error` was emitted: everything after is ignored.
    over: bool,
}

impl<H: EventHandler> ChatDecoder<H> {
    /// Decodes `bytes`, appending the chunks they complete.
    pub fn push(&mut self, bytes: &[u8], out: &mut VecDeque<ChatChunk>) {
        if self.over {
            return;
        }
        let decoded = self.sse.push(bytes, &mut self.events);
        self.handle(out);
        if let Err(e) = decoded {
            self.fail(out, protocol(format!("malformed event stream: {e}")));
        }
    }

    /// The body ended: flushes the last event and, without the end marker, reports the
    /// answer as truncated.
    pub fn finish(&mut self, out: &mut VecDeque<ChatChunk>) {
        if self.over {
            return;
        }
        let decoded = self.sse.finish(&mut self.events);
        self.handle(out);
        if let Err(e) = decoded {
            self.fail(out, protocol(format!("malformed event stream: {e}")));
        }
        if !self.over {
            self.fail(
                out,
                protocol(format!(
                    "the stream ended before {}: the answer is truncated",
                    H::END_MARKER
                )),
            );
        }
    }

    fn handle(&mut self, out: &mut VecDeque<ChatChunk>) {
        for event in self.events.drain(..) {
            if self.over {
                break;
            }
            match self.handler.event(&event, out) {
                Ok(true) => self.over = true,
                Ok(false) => {}
                Err(e) => {
                    out.push_back(ChatChunk::Error(e));
                    self.over = true;
                }
            }
        }
        self.events.clear();
    }

    fn fail(&mut self, out: &mut VecDeque<ChatChunk>, error: ProviderError) {
        if !self.over {
            out.push_back(ChatChunk::Error(error));
            self.over = true;
        }
    }
}

pub(crate) fn protocol(message: impl Into<String>) -> ProviderError {
    ProviderError::new(ProviderErrorKind::Protocol, message)
}

/// Token counts as the domain keeps them; absurd counts saturate rather than wrap.
pub(crate) fn usage(prompt: u64, completion: u64) -> TokenUsage {
    TokenUsage {
        prompt_tokens: u32::try_from(prompt).unwrap_or(u32::MAX),
        completion_tokens: u32::try_from(completion).unwrap_or(u32::MAX),
    }
}

/// The final chunks of a well-formed stream: usage (if reported), then why it stopped.
pub(crate) fn push_end(
    out: &mut VecDeque<ChatChunk>,
    usage: Option<TokenUsage>,
    finish: FinishReason,
) {
    out.extend(usage.map(ChatChunk::Usage));
    out.push_back(ChatChunk::Finish(finish));
}
