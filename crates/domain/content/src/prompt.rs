//! Builds the prompt an answer is written from: the agent's instructions and output
//! format, what is remembered about the user, the retrieved passages numbered for
//! citation, and the conversation's active path. When it would not fit the model's
//! context window, the oldest turns go first, then the weakest passages; the question
//! itself always stays.

use crate::{ChatMessage, ChatRole, Citation, Memory, Message, MessageRole, Passage};
use std::collections::VecDeque;

/// Everything a prompt is made of.
#[derive(Debug, Clone, Copy)]
pub struct PromptParts<'a> {
    pub instructions: &'a str,
    pub output_format: Option<&'a str>,
    pub memories: &'a [Memory],
    /// Text of the files attached on the conversation's path, newest first.
    pub attachments: &'a [AttachedText],
    /// Best first.
    pub passages: &'a [Passage],
    /// The active path, root first, ending with the question.
    pub history: &'a [&'a Message],
    pub context_window: u32,
    /// Tokens kept free for the answer.
    pub reserve_tokens: u32,
}

/// An attached file's text as it goes into a prompt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AttachedText {
    pub filename: String,
    pub text: String,
}

/// A built prompt and the citations its numbered sources stand for.
#[derive(Debug, Clone, PartialEq)]
pub struct Prompt {
    pub messages: Vec<ChatMessage>,
    pub citations: Vec<Citation>,
    pub estimated_tokens: u32,
}

/// A rough token count: about four characters per token, plus a little per message
/// for the role markup. Only used to fit the window and to estimate usage when a
/// provider reports none; never billed as exact.
#[must_use]
pub fn estimate_tokens(text: &str) -> u32 {
    u32::try_from(text.chars().count().div_ceil(4))
        .unwrap_or(u32::MAX)
        .saturating_add(4)
}

fn chat_role(role: MessageRole) -> ChatRole {
    match role {
        MessageRole::User => ChatRole::User,
        MessageRole::Assistant | MessageRole::Supporter => ChatRole::Assistant,
        MessageRole::System => ChatRole::System,
    }
}

fn system_text(
    parts: &PromptParts<'_>,
    attachments: &[AttachedText],
    passages: &[Passage],
) -> String {
    let mut sections: Vec<String> = Vec::new();
    if !parts.instructions.trim().is_empty() {
        sections.push(parts.instructions.trim().to_owned());
    }
    if let Some(format) = parts.output_format.filter(|f| !f.trim().is_empty()) {
        sections.push(format!("Format your answer like this:\n{}", format.trim()));
    }
    if !parts.memories.is_empty() {
        let lines: Vec<String> = parts
            .memories
            .iter()
            .map(|m| format!("- {}: {}", m.key, m.value))
            .collect();
        sections.push(format!(
            "What you know about the user:\n{}",
            lines.join("\n")
        ));
    }
    if !attachments.is_empty() {
        let mut s = String::from("The user attached these files:");
        for a in attachments {
            s.push_str(&format!(
                "\n\n<file name=\"{}\">\n{}\n</file>",
                a.filename,
                a.text.trim()
            ));
        }
        sections.push(s);
    }
    if !passages.is_empty() {
        let mut s = String::from(
            "Answer from these sources and cite them by number, like [1]. \
             If they do not contain the answer, say so.",
        );
        for (i, p) in passages.iter().enumerate() {
            let page = p.page.map(|n| format!(", page {n}")).unwrap_or_default();
            s.push_str(&format!(
                "\n\n[{}] {}{page}\n{}",
                i + 1,
                p.filename,
                p.content.trim()
            ));
        }
        sections.push(s);
    }
    sections.join("\n\n")
}

fn citations(passages: &[Passage]) -> Vec<Citation> {
    passages
        .iter()
        .enumerate()
        .map(|(i, p)| Citation {
            index: u32::try_from(i + 1).unwrap_or(u32::MAX),
            collection_id: p.collection_id,
            document_id: p.document_id,
            filename: p.filename.clone(),
            span_start: p.span_start,
            span_end: p.span_end,
            page: p.page,
            score: p.score,
        })
        .collect()
}

/// Builds the prompt (see the module docs for what is dropped when it is too long).
#[must_use]
pub fn build(parts: &PromptParts<'_>) -> Prompt {
    // Failed answers are not something the model said.
    let turns = parts
        .history
        .iter()
        .filter(|m| !m.is_error())
        .map(|m| ChatMessage {
            role: chat_role(m.role),
            content: m.content.clone(),
        })
        .collect();
    build_from_turns(parts, turns)
}

/// Like [`build`], with the conversation given as prompt messages instead of stored
/// ones (the stateless OpenAI-compatible API has none); `parts.history` is not read.
/// `turns` run oldest first and end with the question.
#[must_use]
pub fn build_from_turns(parts: &PromptParts<'_>, turns: Vec<ChatMessage>) -> Prompt {
    // Empty turns carry nothing.
    let mut turns: VecDeque<ChatMessage> = turns
        .into_iter()
        .filter(|t| !t.content.trim().is_empty())
        .collect();
    let budget = parts.context_window.saturating_sub(parts.reserve_tokens);
    let mut passages: Vec<Passage> = parts.passages.to_vec();
    let mut attachments: Vec<AttachedText> = parts.attachments.to_vec();
    let mut system = system_text(parts, &attachments, &passages);
    let system_tokens = |s: &str| if s.is_empty() { 0 } else { estimate_tokens(s) };
    let mut history_tokens: u32 = turns.iter().map(|t| estimate_tokens(&t.content)).sum();
    let total = |system: &str, history: u32| system_tokens(system).saturating_add(history);

    while total(&system, history_tokens) > budget && turns.len() > 1 {
        if let Some(t) = turns.pop_front() {
            history_tokens -= estimate_tokens(&t.content);
        }
    }
    // A history that starts with the model's turn confuses some providers.
    while turns.len() > 1 && turns.front().is_some_and(|t| t.role != ChatRole::User) {
        if let Some(t) = turns.pop_front() {
            history_tokens -= estimate_tokens(&t.content);
        }
    }
    while total(&system, history_tokens) > budget && !passages.is_empty() {
        passages.pop();
        system = system_text(parts, &attachments, &passages);
    }
    // Then the oldest attachments: the question is usually about the newest.
    while total(&system, history_tokens) > budget && !attachments.is_empty() {
        attachments.pop();
        system = system_text(parts, &attachments, &passages);
    }

    let estimated_tokens = total(&system, history_tokens);
    let mut messages = Vec::with_capacity(turns.len() + 1);
    if !system.is_empty() {
        messages.push(ChatMessage {
            role: ChatRole::System,
            content: system,
        });
    }
    messages.extend(turns);
    Prompt {
        messages,
        citations: citations(&passages),
        estimated_tokens,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{
        ConversationId, KnowledgeCollectionId, KnowledgeDocumentId, MemoryId, MemorySource,
        MessageId,
    };
    use trellis_kernel::UserId;

    fn msg(role: MessageRole, content: &str) -> Message {
        Message {
            id: MessageId::new(),
            conversation_id: ConversationId::new(),
            parent_id: None,
            role,
            content: content.into(),
            author_id: None,
            provider: None,
            model: None,
            finish_reason: None,
            usage: None,
            error: None,
            unfinished: false,
            files: vec![],
            citations: vec![],
            created_at: chrono::Utc::now(),
        }
    }

    fn passage(name: &str, content: &str, score: f32) -> Passage {
        Passage {
            collection_id: KnowledgeCollectionId::new(),
            document_id: KnowledgeDocumentId::new(),
            filename: name.into(),
            content: content.into(),
            span_start: 0,
            span_end: 10,
            page: Some(2),
            score,
        }
    }

    fn memory(key: &str, value: &str) -> Memory {
        Memory {
            id: MemoryId::new(),
            owner_id: UserId::new(),
            key: key.into(),
            value: value.into(),
            category: None,
            source: MemorySource::Manual,
            source_id: None,
            created_at: chrono::Utc::now(),
            updated_at: chrono::Utc::now(),
        }
    }

    fn parts<'a>(history: &'a [&'a Message], passages: &'a [Passage]) -> PromptParts<'a> {
        PromptParts {
            instructions: "You are the Acme helper.",
            output_format: Some("A short paragraph."),
            memories: &[],
            attachments: &[],
            passages,
            history,
            context_window: 100_000,
            reserve_tokens: 1000,
        }
    }

    #[test]
    fn the_system_prompt_carries_instructions_format_memories_and_numbered_sources() {
        let q = msg(MessageRole::User, "What is the refund window?");
        let history = [&q];
        let passages = [
            passage("policy.pdf", "Refunds within 14 days.", 0.9),
            passage("faq.md", "Ask support.", 0.5),
        ];
        let memories = [memory("name", "Ada")];
        let p = build(&PromptParts {
            memories: &memories,
            ..parts(&history, &passages)
        });
        let system = &p.messages[0];
        assert_eq!(system.role, ChatRole::System);
        for needle in [
            "You are the Acme helper.",
            "A short paragraph.",
            "- name: Ada",
            "[1] policy.pdf, page 2\nRefunds within 14 days.",
            "[2] faq.md, page 2\nAsk support.",
        ] {
            assert!(system.content.contains(needle), "missing {needle:?}");
        }
        assert_eq!(p.messages[1].content, "What is the refund window?");
        let idx: Vec<u32> = p.citations.iter().map(|c| c.index).collect();
        assert_eq!(idx, [1, 2]);
        assert_eq!(p.citations[0].document_id, passages[0].document_id);
    }

    #[test]
    fn attached_files_reach_the_model_and_the_oldest_go_first_when_the_window_is_full() {
        let q = msg(
            MessageRole::User,
            "What does the contract say about notice?",
        );
        let history = [&q];
        let attachments = [
            AttachedText {
                filename: "contract.md".into(),
                text: "Either party may end this with 30 days' notice.".into(),
            },
            AttachedText {
                filename: "old-notes.txt".into(),
                text: "x".repeat(4000),
            },
        ];
        let p = build(&PromptParts {
            attachments: &attachments,
            ..parts(&history, &[])
        });
        let system = &p.messages[0].content;
        assert!(
            system.contains(
                "<file name=\"contract.md\">\nEither party may end this with 30 days' notice.\n</file>"
            ),
            "{system}"
        );
        assert!(system.contains("<file name=\"old-notes.txt\">"), "{system}");

        let tight = build(&PromptParts {
            attachments: &attachments,
            context_window: 600,
            reserve_tokens: 100,
            ..parts(&history, &[])
        });
        let system = &tight.messages[0].content;
        assert!(system.contains("30 days' notice"), "{system}");
        assert!(!system.contains("old-notes.txt"), "{system}");
        assert!(tight.estimated_tokens <= 500, "{}", tight.estimated_tokens);
    }

    #[test]
    fn supporter_turns_count_as_the_assistant_and_failed_answers_are_left_out() {
        let q = msg(MessageRole::User, "hi");
        let s = msg(MessageRole::Supporter, "Human here.");
        let mut e = msg(MessageRole::Assistant, "partial");
        e.error = Some("provider down".into());
        let q2 = msg(MessageRole::User, "again");
        let history = [&q, &s, &e, &q2];
        let p = build(&parts(&history, &[]));
        let roles: Vec<ChatRole> = p.messages.iter().map(|m| m.role).collect();
        assert_eq!(
            roles,
            [
                ChatRole::System,
                ChatRole::User,
                ChatRole::Assistant,
                ChatRole::User
            ]
        );
    }

    #[test]
    fn without_instructions_or_sources_there_is_no_system_message() {
        let q = msg(MessageRole::User, "hi");
        let history = [&q];
        let p = build(&PromptParts {
            instructions: "  ",
            output_format: None,
            ..parts(&history, &[])
        });
        assert_eq!(p.messages.len(), 1);
        assert!(p.citations.is_empty());
    }

    #[test]
    fn a_long_history_loses_its_oldest_turns_first_but_keeps_the_question() {
        let old_q = msg(MessageRole::User, &"old question ".repeat(200));
        let old_a = msg(MessageRole::Assistant, &"old answer ".repeat(200));
        let q = msg(MessageRole::User, "new question");
        let history = [&old_q, &old_a, &q];
        let p = build(&PromptParts {
            context_window: 700,
            reserve_tokens: 100,
            ..parts(&history, &[])
        });
        let contents: Vec<&str> = p.messages.iter().map(|m| m.content.as_str()).collect();
        assert_eq!(contents.last(), Some(&"new question"));
        assert!(!contents.iter().any(|c| c.starts_with("old question")));
        assert!(p.estimated_tokens <= 600);
    }

    #[test]
    fn when_the_question_alone_barely_fits_the_weakest_sources_are_dropped() {
        let q = msg(MessageRole::User, "q");
        let history = [&q];
        let passages = [
            passage("best.md", &"best ".repeat(100), 0.9),
            passage("worst.md", &"worst ".repeat(400), 0.1),
        ];
        let p = build(&PromptParts {
            context_window: 400,
            reserve_tokens: 100,
            ..parts(&history, &passages)
        });
        assert_eq!(p.citations.len(), 1);
        assert_eq!(p.citations[0].filename, "best.md");
        assert!(!p.messages[0].content.contains("worst.md"));
    }

    #[test]
    fn token_estimates_grow_with_the_text() {
        assert!(estimate_tokens("a") < estimate_tokens(&"a".repeat(400)));
        assert_eq!(estimate_tokens(&"a".repeat(400)), 104);
    }
}
