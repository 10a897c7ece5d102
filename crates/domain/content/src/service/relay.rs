//! Relaying a model's answer to whoever asked: the part that chat answers and the
//! OpenAI-compatible completions share. It opens the model's stream (or a whole
//! completion, for models that cannot stream), forwards every delta through a
//! bounded channel, notices at once when the client goes away, and keeps what the
//! model produced so the caller can store it and meter it exactly once.

use crate::prompt;
use crate::{
    ChatChunk, ChatModel, ChatRequest, ChatStream, ContentError, FinishReason, ProviderError,
    ProviderErrorKind, Result, TokenUsage,
};
use futures::StreamExt;
use futures::channel::{mpsc, oneshot};
use futures::future::{Either, select};
use std::future::Future;
use std::pin::Pin;
use trellis_kernel::TenantCtx;

/// How the model's part of an answer ended.
pub(super) enum Ending {
    /// The stream ended (with or without a finish reason).
    Finished,
    /// The provider failed.
    Failed(ProviderError),
    /// The client went away.
    Disconnected,
}

/// What the model produced so far.
#[derive(Default)]
pub(super) struct Produced {
    pub(super) text: String,
    pub(super) usage: Option<TokenUsage>,
    pub(super) finish: Option<FinishReason>,
    /// The provider accepted the request (so tokens may have been consumed).
    pub(super) called: bool,
}

impl Produced {
    /// The tokens to meter and whether they are an estimate: once the provider
    /// accepted the request tokens were consumed, whether it reported them or not.
    pub(super) fn consumed(&self, prompt_tokens: u32) -> Option<(TokenUsage, bool)> {
        if !self.called {
            return None;
        }
        Some(match self.usage {
            Some(u) => (u, false),
            None => (
                TokenUsage {
                    prompt_tokens,
                    completion_tokens: if self.text.is_empty() {
                        0
                    } else {
                        prompt::estimate_tokens(&self.text)
                    },
                },
                true,
            ),
        })
    }
}

/// Sends an event; `false` when the client has gone.
pub(super) async fn send<T>(tx: &mut mpsc::Sender<T>, event: T) -> bool {
    if futures::future::poll_fn(|cx| tx.poll_ready(cx))
        .await
        .is_err()
    {
        return false;
    }
    tx.start_send(event).is_ok()
}

/// A provider failure from a port error; anything but a provider error is logged
/// and shown generically (it may carry internals).
pub(super) fn provider_error(e: ContentError) -> ProviderError {
    match e {
        ContentError::Provider(p) => p,
        other => {
            tracing::warn!(error = %format!("{other:#}"), "the chat model failed to start");
            ProviderError::new(
                ProviderErrorKind::Unavailable,
                "the model could not be reached",
            )
        }
    }
}

/// The model's answer as a stream; a model that cannot stream is asked for a
/// whole completion, relayed as one delta.
pub(super) fn open<'a>(
    chat: &'a dyn ChatModel,
    ctx: &'a TenantCtx,
    request: &ChatRequest,
    streaming: bool,
) -> Pin<Box<dyn Future<Output = Result<ChatStream>> + Send + 'a>> {
    let request = request.clone();
    if streaming {
        return chat.stream(ctx, request);
    }
    Box::pin(async move {
        let c = chat.complete(ctx, request).await?;
        let mut chunks = vec![ChatChunk::Delta(c.content)];
        chunks.extend(c.usage.map(ChatChunk::Usage));
        chunks.push(ChatChunk::Finish(c.finish_reason));
        let s: ChatStream = Box::pin(futures::stream::iter(chunks));
        Ok(s)
    })
}

/// Waits for the model to accept the request, then forwards its deltas (wrapped by
/// `delta`) until the stream ends, fails or the client leaves (`alive` cancelled).
pub(super) async fn relay<E>(
    opening: Pin<Box<dyn Future<Output = Result<ChatStream>> + Send + '_>>,
    tx: &mut mpsc::Sender<E>,
    alive: &mut oneshot::Sender<()>,
    produced: &mut Produced,
    delta: impl Fn(String) -> E,
) -> Ending {
    let mut stream = match select(opening, alive.cancellation()).await {
        Either::Left((Ok(s), _)) => s,
        Either::Left((Err(e), _)) => return Ending::Failed(provider_error(e)),
        Either::Right(_) => return Ending::Disconnected,
    };
    produced.called = true;
    loop {
        match select(stream.next(), alive.cancellation()).await {
            Either::Right(_) => return Ending::Disconnected,
            Either::Left((None, _)) => return Ending::Finished,
            Either::Left((Some(chunk), _)) => match chunk {
                ChatChunk::Delta(t) if t.is_empty() => {}
                ChatChunk::Delta(t) => {
                    produced.text.push_str(&t);
                    if !send(tx, delta(t)).await {
                        return Ending::Disconnected;
                    }
                }
                ChatChunk::Usage(u) => produced.usage = Some(u),
                ChatChunk::Finish(r) => produced.finish = Some(r),
                ChatChunk::Error(e) => return Ending::Failed(e),
            },
        }
    }
}
