//! Content and AI chat: the LLM model catalogue, versioned agents with their tools
//! and knowledge collections, conversations whose messages form a branching tree,
//! user memories, attached files, token metering and quotas, and the use case that
//! answers a message with a streamed, cited reply. Pure: adapters provide the ports.

pub mod error;
pub mod model;
pub mod ports;
pub mod prompt;
pub mod service;
pub mod tree;

pub use error::{ContentError, Result};
pub use model::*;
pub use ports::*;
pub use service::{
    Answer, AnswerEvent, AnswerStream, Completed, CompletionEvent, CompletionId, CompletionReply,
    CompletionRequest, CompletionStream, ContentConfig, ContentPorts, ContentService,
    ConversationQuery, CreateTool, DEFAULT_MAX_CONVERSATION_MESSAGES, DEFAULT_MAX_FILE_BYTES,
    FilePorts, FileService, MAX_BUDGET_TOKENS, QuotaAdministration, Remember, StartConversation,
    UploadFile, UsageReport, UserMessage, Whose, completion_role,
};
