//! Answering a message: quota first, then retrieval, memories and the prompt, then
//! the model's stream relayed to the client as [`AnswerEvent`]s, and finally exactly
//! one stored assistant message and one usage event.
//!
//! # Why a spawned task, and why nothing half-written is ever stored
//!
//! Everything that can fail cheaply (permissions, quota, retrieval) happens before
//! the user's message is stored, so a refused request leaves nothing behind. Then a
//! task started through the [`TaskSpawner`](crate::TaskSpawner) port drives the model
//! and sends events through a bounded channel to the [`AnswerStream`] the caller
//! holds. The task opens the model while the user's message is being stored (a
//! model's first token takes far longer than an insert, so the answer no longer waits
//! for both in turn) but relays nothing until that message is stored; if storing it
//! fails, the task drops the model's request and stores nothing. From then on the
//! task, not the client's connection, owns the answer:
//!
//! - the stream ends → the message is stored whole, usage is recorded, `Done` is sent;
//! - the provider fails (before or during the stream) → an error message is stored
//!   with what had arrived and the provider's error, and an `Error` event is sent;
//! - the client goes away (the `AnswerStream` is dropped: the HTTP body was dropped)
//!   → the task notices at once (a oneshot whose receiver lives in the stream is
//!   cancelled), drops the model stream (which cancels the upstream request), and
//!   stores what had arrived marked `unfinished`, and still records the usage.
//!
//! The assistant message is written once, with one `insert`, after the outcome is
//! known: there is no row that is updated as tokens arrive, so no reader ever sees a
//! half answer. Usage is keyed `answer:<message id>`, so a repeated write counts once.
//! A process killed mid-answer stores nothing for that answer (its user message
//! stays, and can be regenerated).

use super::relay::{self, Ending, Produced, send};
use super::{ContentService, acting_user, may_read_conversation, may_write_conversation, require};
use crate::model::text;
use crate::prompt::{self, AttachedText, PromptParts};
use crate::tree;
use crate::{
    Agent, ChatModel, ChatRequest, Citation, ContentError, Conversation, ConversationId, FileId,
    FinishReason, KnowledgeCollectionId, Memory, Message, MessageId, MessageRepo, MessageRole,
    ModelParameters, NewMessage, Result, Thread, TokenUsage, UsageEvent, UsageEventId, UsageMeter,
};
use futures::channel::{mpsc, oneshot};
use futures::future::{Either, select};
use futures::{Stream, StreamExt};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use trellis_kernel::{Clock, InvalidValue, Permission, TenantCtx, UserId};
use trellis_tenancy::LlmProvider;

/// At most this many attached files are read into one prompt.
const MAX_PROMPT_FILES: usize = 8;

/// At most this many files per message.
pub const MAX_MESSAGE_FILES: usize = 10;

/// A message a user sends.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct UserMessage {
    pub content: String,
    /// The message it answers; `None`: the end of the current branch.
    pub parent: Option<MessageId>,
    pub files: Vec<FileId>,
}

/// What the client is told while an answer is written (mapped 1:1 onto SSE events).
#[derive(Debug, Clone, PartialEq)]
pub enum AnswerEvent {
    /// The sources the answer may cite, numbered as in the prompt. First, if any.
    Citations(Vec<Citation>),
    /// More answer text.
    Delta(String),
    /// The tokens the answer consumed (estimated if the provider reported none).
    Usage(TokenUsage),
    /// The answer is complete and stored. Last.
    Done(Message),
    /// The answer failed. Last.
    Error {
        /// The stored error message; `None` only when even storing it failed.
        message: Option<Message>,
        /// A [`ProviderErrorKind`] name, or `internal` when storing failed.
        code: &'static str,
        /// Safe to show to the user.
        detail: String,
    },
}

/// A started answer.
#[derive(Debug)]
pub struct Answer {
    /// The user's message, when this answer came with a new one (not on regenerate).
    pub user_message: Option<Message>,
    /// The id the assistant message will be stored under.
    pub assistant_message_id: MessageId,
    pub events: AnswerStream,
}

/// The events of one answer. Dropping it tells the answering task the client left.
pub struct AnswerStream {
    events: mpsc::Receiver<AnswerEvent>,
    // Never read: dropping it with the stream cancels the task's `oneshot::Sender`.
    _alive: oneshot::Receiver<()>,
}

impl std::fmt::Debug for AnswerStream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AnswerStream").finish_non_exhaustive()
    }
}

impl Stream for AnswerStream {
    type Item = AnswerEvent;
    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<AnswerEvent>> {
        self.events.poll_next_unpin(cx)
    }
}

/// The model, parameters and grounding an answer in a conversation uses (what the
/// catalogue says of the model is looked up while retrieval runs).
struct Setup {
    provider: LlmProvider,
    model: String,
    parameters: ModelParameters,
    instructions: String,
    output_format: Option<String>,
    collections: Vec<KnowledgeCollectionId>,
}

impl ContentService {
    /// Sends a message in one's own conversation and starts the answer.
    ///
    /// # Errors
    /// Before anything is stored: `Forbidden`; `NotFound` for the conversation, the
    /// parent or a file; `Conflict` for an archived conversation or one without room
    /// for two more messages ([`crate::ContentConfig::max_conversation_messages`]); `Invalid`;
    /// `QuotaExceeded` (the model is not called); `ModelUnavailable`; retrieval
    /// failures. Provider failures are not errors here: they arrive as an
    /// [`AnswerEvent::Error`] with a stored error message.
    pub async fn answer(
        &self,
        ctx: &TenantCtx,
        conversation: ConversationId,
        message: UserMessage,
    ) -> Result<Answer> {
        require(ctx, Permission::ChatUse)?;
        let me = acting_user(ctx)?;
        let content = self.message_text(&message.content)?;
        let Thread {
            conversation: conv,
            messages,
            agent,
        } = self.postable_thread(ctx, conversation, 2).await?;
        self.check_files(ctx, me, conv.id, &message.files).await?;
        let parent = match message.parent {
            Some(p) if messages.iter().any(|m| m.id == p) => Some(p),
            Some(_) => return Err(ContentError::NotFound("message")),
            None => tree::latest_leaf(&messages),
        };
        let history = match parent {
            Some(p) => tree::path_to(&messages, p)?.into_iter().cloned().collect(),
            None => Vec::new(),
        };
        let new = NewMessage::from_user(conv.id, parent, me, content, message.files);
        self.respond(ctx, &conv, agent, history, Some(new)).await
    }

    /// Edits a user message: a new sibling with the new text, then its answer. The
    /// original and its answers stay on their branch.
    ///
    /// # Errors
    /// As [`Self::answer`]; `Invalid` for a message that is not the user's.
    pub async fn edit_and_answer(
        &self,
        ctx: &TenantCtx,
        conversation: ConversationId,
        message: MessageId,
        content: String,
    ) -> Result<Answer> {
        require(ctx, Permission::ChatUse)?;
        let me = acting_user(ctx)?;
        let content = self.message_text(&content)?;
        let Thread {
            conversation: conv,
            messages,
            agent,
        } = self.postable_thread(ctx, conversation, 2).await?;
        let original = messages
            .iter()
            .find(|m| m.id == message)
            .ok_or(ContentError::NotFound("message"))?;
        let new = tree::edited(original, content, me)?;
        let history = match original.parent_id {
            Some(p) => tree::path_to(&messages, p)?.into_iter().cloned().collect(),
            None => Vec::new(),
        };
        self.respond(ctx, &conv, agent, history, Some(new)).await
    }

    /// Writes another answer to the question `answer` answered, as its sibling.
    ///
    /// # Errors
    /// As [`Self::answer`]; `Invalid` for a message that is not an answer.
    pub async fn regenerate(
        &self,
        ctx: &TenantCtx,
        conversation: ConversationId,
        answer: MessageId,
    ) -> Result<Answer> {
        require(ctx, Permission::ChatUse)?;
        let Thread {
            conversation: conv,
            messages,
            agent,
        } = self.postable_thread(ctx, conversation, 1).await?;
        let question = tree::regeneration_parent(&messages, answer)?;
        let history = tree::path_to(&messages, question.id)?
            .into_iter()
            .cloned()
            .collect();
        self.respond(ctx, &conv, agent, history, None).await
    }

    /// One's own conversation, not archived and with room for `adding` more messages,
    /// with its messages and its agent, in one read: the messages and agent of a
    /// conversation the caller may not post in are read for nothing (and never
    /// returned), which costs less than a read before the others.
    async fn postable_thread(
        &self,
        ctx: &TenantCtx,
        id: ConversationId,
        adding: usize,
    ) -> Result<Thread> {
        let thread = self.conversations.thread(ctx, id).await?;
        let conv = &thread.conversation;
        if !may_read_conversation(ctx, conv) {
            return Err(ContentError::NotFound("conversation"));
        }
        if !may_write_conversation(ctx, conv) {
            return Err(ContentError::Forbidden);
        }
        if conv.archived {
            return Err(ContentError::Conflict(
                "the conversation is archived; unarchive it to continue".into(),
            ));
        }
        let max = self.config.max_conversation_messages;
        if thread.messages.len() + adding > max {
            // Requests racing each other may each pass this check and leave the
            // conversation a few messages over; what matters is that growth stops.
            return Err(ContentError::Conflict(format!(
                "the conversation holds {} messages and may hold at most {max}; start a new conversation",
                thread.messages.len()
            )));
        }
        Ok(thread)
    }

    fn message_text(&self, content: &str) -> Result<String> {
        Ok(text::body(
            "content",
            content,
            self.config.max_message_chars,
        )?)
    }

    /// Attached files must be the sender's, and not attached to another conversation.
    async fn check_files(
        &self,
        ctx: &TenantCtx,
        me: UserId,
        conv: ConversationId,
        files: &[FileId],
    ) -> Result<()> {
        if files.len() > MAX_MESSAGE_FILES {
            return Err(InvalidValue::new(
                "files",
                format!("at most {MAX_MESSAGE_FILES} files per message"),
            )
            .into());
        }
        for id in files {
            let f = self.files.get(ctx, *id).await?;
            if f.owner_id != me || f.conversation_id.is_some_and(|c| c != conv) {
                return Err(ContentError::NotFound("file"));
            }
        }
        Ok(())
    }

    /// The conversation's (or its agent's) model and grounding. `agent`: the agent as
    /// read with the conversation, on the same snapshot ([`crate::ConversationRepo::thread`]),
    /// so `None` for a conversation that names one means the agent is gone.
    fn setup(ctx: &TenantCtx, conv: &Conversation, agent: Option<Agent>) -> Result<Setup> {
        let (provider, model, parameters, instructions, output_format, collections) =
            match conv.agent_id {
                Some(id) => {
                    let agent = match agent {
                        Some(a) if a.id == id && a.usable_by(ctx) => a,
                        _ => return Err(ContentError::NotFound("agent")),
                    };
                    let c = agent.config;
                    (
                        c.provider,
                        c.model,
                        conv.parameters.over(c.parameters),
                        c.instructions,
                        c.output_format,
                        c.knowledge_collections,
                    )
                }
                None => (
                    conv.provider,
                    conv.model.clone(),
                    conv.parameters,
                    String::new(),
                    None,
                    Vec::new(),
                ),
            };
        Ok(Setup {
            provider,
            model,
            parameters,
            instructions,
            output_format,
            collections,
        })
    }

    /// The text of the files attached on the path (the new message's first, then
    /// newest to oldest), at most [`MAX_PROMPT_FILES`] of them. A file deleted since it
    /// was attached is left out; one without text (an unreadable type) too.
    async fn attached_texts(
        &self,
        ctx: &TenantCtx,
        history: &[Message],
        new_user: Option<&NewMessage>,
    ) -> Result<Vec<AttachedText>> {
        let mut ids: Vec<FileId> = Vec::new();
        let newest_first = new_user
            .map(|m| m.files.as_slice())
            .into_iter()
            .chain(history.iter().rev().map(|m| m.files.as_slice()));
        for id in newest_first.flatten() {
            if ids.len() == MAX_PROMPT_FILES {
                break;
            }
            if !ids.contains(id) {
                ids.push(*id);
            }
        }
        let mut out = Vec::with_capacity(ids.len());
        for id in ids {
            let file = match self.files.get(ctx, id).await {
                Ok(f) => f,
                Err(ContentError::NotFound(_)) => continue,
                Err(e) => return Err(e),
            };
            let limit = self.config.attachment_chars;
            if let Some(text) = self.attachments.text(ctx, &file, limit).await? {
                out.push(AttachedText {
                    filename: file.filename,
                    text,
                });
            }
        }
        Ok(out)
    }

    /// The common tail of answer, edit and regenerate. `history` is the path from the
    /// root to the message the answer hangs under (or to its parent, when `new_user`
    /// is that message and is yet to be stored).
    async fn respond(
        &self,
        ctx: &TenantCtx,
        conv: &Conversation,
        agent: Option<Agent>,
        mut history: Vec<Message>,
        new_user: Option<NewMessage>,
    ) -> Result<Answer> {
        let me = acting_user(ctx)?;
        let question: String = new_user
            .as_ref()
            .map(|m| m.content.as_str())
            .or_else(|| history.last().map(|m| m.content.as_str()))
            .unwrap_or_default()
            .chars()
            // Retrieval and full-text search take bounded queries.
            .take(2000)
            .collect();
        // Everything below only reads, so it runs side by side: an answer's first token
        // waits for the slowest of these, not for their sum. The first failure (a spent
        // quota, typically the quickest read) drops the others, embedding call included.
        let setup_and_passages = async {
            let setup = Self::setup(ctx, conv, agent)?;
            let passages = async {
                if setup.collections.is_empty() || question.trim().is_empty() {
                    return Ok(Vec::new());
                }
                self.retriever
                    .retrieve(ctx, &setup.collections, &question, self.config.retrieval_k)
                    .await
            };
            let (entry, passages) = futures::future::try_join(
                self.catalog.get(ctx, setup.provider, &setup.model),
                passages,
            )
            .await?;
            Ok::<_, ContentError>((setup, entry, passages))
        };
        let memories = async {
            if self.config.memory_k == 0 || question.trim().is_empty() {
                return Ok(Vec::new());
            }
            Ok::<_, ContentError>(
                self.memories
                    .search(ctx, me, &question, self.config.memory_k)
                    .await?
                    .into_iter()
                    .map(|s| s.memory)
                    .collect::<Vec<Memory>>(),
            )
        };
        // The question is written meanwhile but not committed: if anything above
        // refuses, the pending write is dropped with the rest and nothing is stored.
        let prepared = async {
            match &new_user {
                Some(new) => self
                    .messages
                    .prepare_insert(ctx, new.clone())
                    .await
                    .map(Some),
                None => Ok(None),
            }
        };
        let (((), (setup, entry, passages), memories, attachments), pending) =
            futures::future::try_join(
                futures::future::try_join4(
                    self.enforce_quota(ctx, me),
                    setup_and_passages,
                    memories,
                    self.attached_texts(ctx, &history, new_user.as_ref()),
                ),
                prepared,
            )
            .await?;

        // With nothing left to refuse, the user's message is committed; the model is
        // opened at the same time (below), so the answer waits for the slower of the two.
        let parent = match new_user {
            Some(new) => {
                let id = new.id;
                history.push(new.stored_at(self.clock.now()));
                id
            }
            None => history
                .last()
                .map(|m| m.id)
                .ok_or(ContentError::NotFound("message"))?,
        };
        let path: Vec<&Message> = history.iter().collect();
        let reserve = setup
            .parameters
            .max_tokens()
            .unwrap_or(self.config.default_answer_tokens)
            .min(entry.context_window / 2);
        let built = prompt::build(&PromptParts {
            instructions: &setup.instructions,
            output_format: setup.output_format.as_deref(),
            memories: &memories,
            attachments: &attachments,
            passages: &passages,
            history: &path,
            context_window: entry.context_window,
            reserve_tokens: reserve,
        });

        let assistant_id = MessageId::new();
        let (tx, rx) = mpsc::channel(self.config.event_buffer.max(1));
        let (alive_tx, alive_rx) = oneshot::channel();
        let job = AnswerJob {
            ctx: ctx.clone(),
            user: me,
            conversation: conv.id,
            parent,
            assistant_id,
            provider: setup.provider,
            model: setup.model.clone(),
            streaming: entry.supports_streaming,
            prompt_tokens: built.estimated_tokens,
            request: ChatRequest {
                provider: setup.provider,
                model: setup.model,
                messages: built.messages,
                parameters: setup.parameters,
            },
            citations: built.citations,
            chat: self.chat.clone(),
            messages: self.messages.clone(),
            usage: self.usage.clone(),
            clock: self.clock.clone(),
        };
        let (stored_tx, stored_rx) = oneshot::channel();
        self.spawner.spawn(Box::pin(job.run(
            tx,
            alive_tx,
            pending.is_some().then_some(stored_rx),
        )));
        // A failure here (or this request being dropped) drops `stored_tx`: the job
        // abandons the answer before it relays or stores anything, and the model's
        // request, if already sent, is dropped with it.
        let user_message = match pending {
            Some(pending) => {
                let stored = pending.commit().await?;
                // Fails only if the job is gone (it panicked); the stream then just ends.
                let _ = stored_tx.send(());
                Some(stored)
            }
            None => None,
        };
        Ok(Answer {
            user_message,
            assistant_message_id: assistant_id,
            events: AnswerStream {
                events: rx,
                _alive: alive_rx,
            },
        })
    }
}

/// Everything the answering task needs, owned, so it outlives the request.
struct AnswerJob {
    ctx: TenantCtx,
    user: UserId,
    conversation: ConversationId,
    parent: MessageId,
    assistant_id: MessageId,
    provider: LlmProvider,
    model: String,
    streaming: bool,
    prompt_tokens: u32,
    request: ChatRequest,
    citations: Vec<Citation>,
    chat: Arc<dyn ChatModel>,
    messages: Arc<dyn MessageRepo>,
    usage: Arc<dyn UsageMeter>,
    clock: Arc<dyn Clock>,
}

impl AnswerJob {
    /// `stored`: resolves once the question this answers is stored (`None`: it was
    /// stored before). Until then the model is opened but nothing is relayed. If it is
    /// cancelled (the insert failed, or the request was dropped while it ran), the
    /// answer is abandoned: nothing is stored, but a model that had already accepted
    /// the request is still metered, so leaving at that moment consumes quota too.
    async fn run(
        self,
        mut tx: mpsc::Sender<AnswerEvent>,
        mut alive: oneshot::Sender<()>,
        stored: Option<oneshot::Receiver<()>>,
    ) {
        let mut produced = Produced::default();
        let Some(ending) = self.drive(&mut tx, &mut alive, &mut produced, stored).await else {
            tracing::debug!(
                message = %self.assistant_id,
                "the question was not stored; its answer is abandoned"
            );
            self.record_usage(produced.consumed(self.prompt_tokens))
                .await;
            return;
        };
        self.finish(ending, produced, &mut tx).await;
    }

    /// Opens the model's stream (or completion) and relays it until it ends, fails
    /// or the client leaves; `None` when the answer is abandoned (see [`Self::run`]).
    async fn drive(
        &self,
        tx: &mut mpsc::Sender<AnswerEvent>,
        alive: &mut oneshot::Sender<()>,
        produced: &mut Produced,
        stored: Option<oneshot::Receiver<()>>,
    ) -> Option<Ending> {
        let mut opening = relay::open(&*self.chat, &self.ctx, &self.request, self.streaming);
        if let Some(stored) = stored {
            match select(stored, &mut opening).await {
                Either::Left((Ok(()), _)) => {}
                Either::Left((Err(oneshot::Canceled), _)) => return None,
                // Opened first (a fast model): keep its outcome for the relay.
                Either::Right((opened, stored)) => {
                    if stored.await.is_err() {
                        produced.called = opened.is_ok();
                        return None;
                    }
                    opening = Box::pin(futures::future::ready(opened));
                }
            }
        }
        if !self.citations.is_empty()
            && !send(tx, AnswerEvent::Citations(self.citations.clone())).await
        {
            return Some(Ending::Disconnected);
        }
        Some(relay::relay(opening, tx, alive, produced, AnswerEvent::Delta).await)
    }

    /// Stores the one assistant message, records usage, and tells the client.
    async fn finish(self, ending: Ending, p: Produced, tx: &mut mpsc::Sender<AnswerEvent>) {
        let (unfinished, error, finish_reason) = match &ending {
            Ending::Finished => (p.finish.is_none(), None, p.finish),
            Ending::Failed(e) => (false, Some(e.message.clone()), Some(FinishReason::Error)),
            Ending::Disconnected => (true, None, p.finish),
        };
        // Tokens were consumed once the provider accepted the request, reported or not.
        let usage = p.consumed(self.prompt_tokens);
        let new = NewMessage {
            id: self.assistant_id,
            conversation_id: self.conversation,
            parent_id: Some(self.parent),
            role: MessageRole::Assistant,
            content: p.text,
            author_id: None,
            provider: Some(self.provider),
            model: Some(self.model.clone()),
            finish_reason,
            usage: usage.map(|(u, _)| u),
            error,
            unfinished,
            files: Vec::new(),
            citations: self.citations.clone(),
        };
        let stored = match self.messages.insert(&self.ctx, new).await {
            Ok(m) => Some(m),
            Err(e) => {
                tracing::error!(
                    message = %self.assistant_id,
                    conversation = %self.conversation,
                    error = %format!("{e:#}"),
                    "could not store an answer"
                );
                None
            }
        };
        self.record_usage(usage).await;
        match (ending, stored) {
            (Ending::Disconnected, _) => {}
            (Ending::Finished, Some(m)) => {
                if let Some((u, _)) = usage {
                    send(tx, AnswerEvent::Usage(u)).await;
                }
                send(tx, AnswerEvent::Done(m)).await;
            }
            (Ending::Failed(e), stored) => {
                send(
                    tx,
                    AnswerEvent::Error {
                        message: stored,
                        code: e.kind.as_str(),
                        detail: e.message,
                    },
                )
                .await;
            }
            (Ending::Finished, None) => {
                send(
                    tx,
                    AnswerEvent::Error {
                        message: None,
                        code: "internal",
                        detail: "the answer could not be saved".into(),
                    },
                )
                .await;
            }
        }
    }

    /// Records what the model consumed (`Produced::consumed`), if it consumed anything.
    async fn record_usage(&self, consumed: Option<(TokenUsage, bool)>) {
        let Some((usage, estimated)) = consumed.filter(|(u, _)| u.total() > 0) else {
            return;
        };
        let event = UsageEvent {
            id: UsageEventId::new(),
            idempotency_key: format!("answer:{}", self.assistant_id),
            user_id: Some(self.user),
            conversation_id: Some(self.conversation),
            message_id: Some(self.assistant_id),
            provider: self.provider,
            model: self.model.clone(),
            usage,
            estimated,
            occurred_at: self.clock.now(),
        };
        if let Err(e) = self.usage.record(&self.ctx, event).await {
            tracing::error!(
                message = %self.assistant_id,
                error = %format!("{e:#}"),
                "could not record usage"
            );
        }
    }
}
