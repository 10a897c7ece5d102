//! The message tree, as pure functions over a conversation's messages: the active
//! path, branching by edit and regeneration, forking, and the flat rendering the API
//! returns. A conversation can be thousands of turns deep, so nothing here recurses.
//!
//! Branch rules: editing a user message adds a user message with the same parent (a
//! sibling); regenerating an answer adds an assistant message with the same parent.
//! Nothing is overwritten. The conversation's current branch is the one ending in its
//! newest message (a child is always newer than its parent, so that is a leaf).

use crate::{ContentError, ConversationId, Message, MessageId, MessageRole, NewMessage, Result};
use serde::Serialize;
use std::collections::{HashMap, HashSet};
use trellis_kernel::{InvalidValue, UserId};

/// The newest message, which ends the current branch.
#[must_use]
pub fn latest_leaf(messages: &[Message]) -> Option<MessageId> {
    messages
        .iter()
        .max_by_key(|m| (m.created_at, m.id))
        .map(|m| m.id)
}

/// The leaf of the branch through `message`: from it, follow the newest child down.
/// Picking a sibling in the UI shows that sibling's latest continuation.
///
/// # Errors
/// `NotFound` when `message` is not in the conversation.
pub fn leaf_through(messages: &[Message], message: MessageId) -> Result<MessageId> {
    let children = children_of(messages);
    if !messages.iter().any(|m| m.id == message) {
        return Err(ContentError::NotFound("message"));
    }
    let mut at = message;
    // Children are newer than their parents, so this walk ends; the bound is a guard
    // against a corrupt tree.
    for _ in 0..=messages.len() {
        match children.get(&Some(at)).and_then(|c| c.last()) {
            Some(newest) => at = newest.id,
            None => break,
        }
    }
    Ok(at)
}

/// The path from the root to `leaf`, root first.
///
/// # Errors
/// `NotFound` when `leaf` is not in the conversation.
pub fn path_to(messages: &[Message], leaf: MessageId) -> Result<Vec<&Message>> {
    let by_id: HashMap<MessageId, &Message> = messages.iter().map(|m| (m.id, m)).collect();
    let mut at = *by_id.get(&leaf).ok_or(ContentError::NotFound("message"))?;
    let mut path = vec![at];
    // At most one step per message: a parent cycle (a corrupt tree) cannot loop.
    for _ in 0..messages.len() {
        match at.parent_id.and_then(|p| by_id.get(&p)) {
            Some(parent) => {
                at = parent;
                path.push(at);
            }
            None => break,
        }
    }
    path.reverse();
    Ok(path)
}

/// The active path: through `through` if given (see [`leaf_through`]), else the
/// current branch. Empty for an empty conversation.
///
/// # Errors
/// `NotFound` when `through` is not in the conversation.
pub fn active_path(messages: &[Message], through: Option<MessageId>) -> Result<Vec<&Message>> {
    let leaf = match through {
        Some(m) => leaf_through(messages, m)?,
        None => match latest_leaf(messages) {
            Some(l) => l,
            None => return Ok(Vec::new()),
        },
    };
    path_to(messages, leaf)
}

/// The message that replaces `original` on a new branch: same parent, new content.
///
/// # Errors
/// `Invalid` unless `original` is a user message.
pub fn edited(original: &Message, content: String, author: UserId) -> Result<NewMessage> {
    if original.role != MessageRole::User {
        return Err(InvalidValue::new("message", "only a user message can be edited").into());
    }
    Ok(NewMessage::from_user(
        original.conversation_id,
        original.parent_id,
        author,
        content,
        original.files.clone(),
    ))
}

/// The message a regenerated answer hangs under: the parent of `answer`.
///
/// # Errors
/// `NotFound` when `answer` is not in the conversation; `Invalid` unless it is an
/// assistant message with a parent.
pub fn regeneration_parent(messages: &[Message], answer: MessageId) -> Result<&Message> {
    let m = messages
        .iter()
        .find(|m| m.id == answer)
        .ok_or(ContentError::NotFound("message"))?;
    if m.role != MessageRole::Assistant {
        return Err(InvalidValue::new("message", "only an answer can be regenerated").into());
    }
    m.parent_id
        .and_then(|p| messages.iter().find(|x| x.id == p))
        .ok_or_else(|| InvalidValue::new("message", "this answer has no question").into())
}

/// Copies of `path` (root first) for the conversation `into`, under new ids, each the
/// child of the previous: the fork's whole history is that one branch.
#[must_use]
pub fn fork_copy(path: &[&Message], into: ConversationId) -> Vec<NewMessage> {
    let mut out: Vec<NewMessage> = Vec::with_capacity(path.len());
    for m in path {
        let parent = out.last().map(|p| p.id);
        out.push(NewMessage::copy_of(m, into, parent));
    }
    out
}

/// One message of a rendered tree.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct TreeNode {
    pub message: Message,
    /// 0 for roots.
    pub depth: u32,
    /// Its children, oldest first.
    pub children: Vec<MessageId>,
    /// Its place among its siblings (0-based, oldest first) and how many there are:
    /// what a "2 / 3" branch switcher shows.
    pub sibling_index: u32,
    pub sibling_count: u32,
    /// On the active path.
    pub active: bool,
}

/// A conversation's messages for the API: a flat, depth-first list (children after
/// their parent, oldest sibling first) rather than nested objects, so that a deep
/// conversation does not make serialisers recurse once per turn.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct MessageTree {
    pub nodes: Vec<TreeNode>,
    /// Root first.
    pub active_path: Vec<MessageId>,
}

/// Messages grouped by parent (`None`: roots, including orphans whose parent is
/// missing), each group oldest first.
fn children_of(messages: &[Message]) -> HashMap<Option<MessageId>, Vec<&Message>> {
    let ids: HashSet<MessageId> = messages.iter().map(|m| m.id).collect();
    let mut map: HashMap<Option<MessageId>, Vec<&Message>> = HashMap::new();
    for m in messages {
        let parent = m.parent_id.filter(|p| ids.contains(p) && *p != m.id);
        map.entry(parent).or_default().push(m);
    }
    for group in map.values_mut() {
        group.sort_by_key(|m| (m.created_at, m.id));
    }
    map
}

/// Renders the tree with the active path through `through` (see [`active_path`]).
///
/// # Errors
/// `NotFound` when `through` is not in the conversation.
pub fn render(messages: &[Message], through: Option<MessageId>) -> Result<MessageTree> {
    let active: Vec<MessageId> = active_path(messages, through)?
        .into_iter()
        .map(|m| m.id)
        .collect();
    let on_path: HashSet<MessageId> = active.iter().copied().collect();
    let children = children_of(messages);
    let mut nodes = Vec::with_capacity(messages.len());
    // Explicit stack of (message, depth, index among siblings, sibling count), pushed in
    // reverse so the oldest sibling comes out first.
    let mut stack: Vec<(&Message, u32, u32, u32)> = Vec::new();
    fn push_group<'a>(
        stack: &mut Vec<(&'a Message, u32, u32, u32)>,
        group: &[&'a Message],
        depth: u32,
    ) {
        let count = u32::try_from(group.len()).unwrap_or(u32::MAX);
        for (i, m) in group.iter().enumerate().rev() {
            stack.push((m, depth, u32::try_from(i).unwrap_or(u32::MAX), count));
        }
    }
    push_group(
        &mut stack,
        children.get(&None).map_or(&[][..], Vec::as_slice),
        0,
    );
    let mut seen = HashSet::new();
    while let Some((m, depth, index, count)) = stack.pop() {
        if !seen.insert(m.id) {
            continue;
        }
        let kids = children.get(&Some(m.id)).map_or(&[][..], Vec::as_slice);
        nodes.push(TreeNode {
            message: m.clone(),
            depth,
            children: kids.iter().map(|k| k.id).collect(),
            sibling_index: index,
            sibling_count: count,
            active: on_path.contains(&m.id),
        });
        push_group(&mut stack, kids, depth + 1);
    }
    Ok(MessageTree {
        nodes,
        active_path: active,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::Duration;

    /// Builds messages in creation order, one second apart.
    struct Conv {
        id: ConversationId,
        messages: Vec<Message>,
    }

    impl Conv {
        fn new() -> Self {
            Self {
                id: ConversationId::new(),
                messages: Vec::new(),
            }
        }

        fn add(&mut self, parent: Option<MessageId>, role: MessageRole, text: &str) -> MessageId {
            let at = chrono::Utc::now() + Duration::seconds(self.messages.len() as i64);
            let id = MessageId::new();
            self.messages.push(Message {
                id,
                conversation_id: self.id,
                parent_id: parent,
                role,
                content: text.into(),
                author_id: None,
                provider: None,
                model: None,
                finish_reason: None,
                usage: None,
                error: None,
                unfinished: false,
                files: vec![],
                citations: vec![],
                created_at: at,
            });
            id
        }

        fn contents(&self, path: &[&Message]) -> Vec<String> {
            path.iter().map(|m| m.content.clone()).collect()
        }
    }

    /// q1 → a1 → q2 → a2, then a2 regenerated as a2b, then q2 edited as q2b → a3.
    fn branched() -> (Conv, [MessageId; 7]) {
        let mut c = Conv::new();
        let q1 = c.add(None, MessageRole::User, "q1");
        let a1 = c.add(Some(q1), MessageRole::Assistant, "a1");
        let q2 = c.add(Some(a1), MessageRole::User, "q2");
        let a2 = c.add(Some(q2), MessageRole::Assistant, "a2");
        let a2b = c.add(Some(q2), MessageRole::Assistant, "a2b");
        let q2b = c.add(Some(a1), MessageRole::User, "q2b");
        let a3 = c.add(Some(q2b), MessageRole::Assistant, "a3");
        (c, [q1, a1, q2, a2, a2b, q2b, a3])
    }

    #[test]
    fn the_active_path_runs_from_the_root_to_the_newest_message() {
        let (c, _) = branched();
        let path = active_path(&c.messages, None).unwrap();
        assert_eq!(c.contents(&path), ["q1", "a1", "q2b", "a3"]);
    }

    #[test]
    fn choosing_an_older_sibling_shows_its_latest_continuation() {
        let (c, [_, _, q2, ..]) = branched();
        let path = active_path(&c.messages, Some(q2)).unwrap();
        assert_eq!(c.contents(&path), ["q1", "a1", "q2", "a2b"]);
    }

    #[test]
    fn an_empty_conversation_has_an_empty_path() {
        assert!(active_path(&[], None).unwrap().is_empty());
    }

    #[test]
    fn a_path_to_an_unknown_message_is_not_found() {
        let (c, _) = branched();
        assert!(matches!(
            path_to(&c.messages, MessageId::new()),
            Err(ContentError::NotFound(_))
        ));
    }

    #[test]
    fn editing_a_user_message_makes_a_sibling_with_the_same_parent() {
        let (c, [_, a1, q2, ..]) = branched();
        let original = c.messages.iter().find(|m| m.id == q2).unwrap();
        let user = UserId::new();
        let new = edited(original, "q2 again".into(), user).unwrap();
        assert_eq!(new.parent_id, Some(a1));
        assert_ne!(new.id, q2);
        assert_eq!((new.role, new.author_id), (MessageRole::User, Some(user)));
    }

    #[test]
    fn editing_the_first_message_makes_another_root() {
        let (c, [q1, ..]) = branched();
        let original = c.messages.iter().find(|m| m.id == q1).unwrap();
        let new = edited(original, "q1 again".into(), UserId::new()).unwrap();
        assert_eq!(new.parent_id, None);
    }

    #[test]
    fn an_answer_cannot_be_edited() {
        let (c, [_, a1, ..]) = branched();
        let answer = c.messages.iter().find(|m| m.id == a1).unwrap();
        assert!(matches!(
            edited(answer, "x".into(), UserId::new()),
            Err(ContentError::Invalid(_))
        ));
    }

    #[test]
    fn a_regenerated_answer_hangs_under_the_same_question() {
        let (c, [_, _, q2, a2, ..]) = branched();
        assert_eq!(regeneration_parent(&c.messages, a2).unwrap().id, q2);
        assert!(matches!(
            regeneration_parent(&c.messages, q2),
            Err(ContentError::Invalid(_))
        ));
    }

    #[test]
    fn a_fork_copies_the_path_as_one_branch_under_new_ids() {
        let (c, [.., a2b, _, _]) = branched();
        let path = path_to(&c.messages, a2b).unwrap();
        let into = ConversationId::new();
        let copy = fork_copy(&path, into);
        let contents: Vec<&str> = copy.iter().map(|m| m.content.as_str()).collect();
        assert_eq!(contents, ["q1", "a1", "q2", "a2b"]);
        assert_eq!(copy[0].parent_id, None);
        for pair in copy.windows(2) {
            assert_eq!(pair[1].parent_id, Some(pair[0].id));
        }
        assert!(copy.iter().all(|m| m.conversation_id == into));
        assert!(
            copy.iter()
                .all(|m| !c.messages.iter().any(|o| o.id == m.id))
        );
    }

    #[test]
    fn the_rendered_tree_lists_children_after_parents_with_sibling_positions() {
        let (c, [q1, a1, q2, a2, a2b, q2b, a3]) = branched();
        let tree = render(&c.messages, None).unwrap();
        let order: Vec<MessageId> = tree.nodes.iter().map(|n| n.message.id).collect();
        assert_eq!(order, [q1, a1, q2, a2, a2b, q2b, a3]);
        let node = |id| tree.nodes.iter().find(|n| n.message.id == id).unwrap();
        assert_eq!(node(a1).children, [q2, q2b]);
        assert_eq!((node(q2b).sibling_index, node(q2b).sibling_count), (1, 2));
        assert_eq!((node(a2).sibling_index, node(a2).sibling_count), (0, 2));
        assert_eq!(node(a3).depth, 3);
        assert_eq!(tree.active_path, [q1, a1, q2b, a3]);
        assert!(node(a3).active && !node(a2).active);
    }

    #[test]
    fn a_message_whose_parent_is_missing_renders_as_a_root() {
        let mut c = Conv::new();
        let orphan = c.add(Some(MessageId::new()), MessageRole::User, "orphan");
        let tree = render(&c.messages, None).unwrap();
        assert_eq!(tree.nodes.len(), 1);
        assert_eq!(tree.nodes[0].depth, 0);
        assert_eq!(tree.active_path, [orphan]);
    }

    #[test]
    fn a_deep_conversation_renders_without_recursion() {
        let mut c = Conv::new();
        let mut parent = None;
        for i in 0..20_000 {
            let role = if i % 2 == 0 {
                MessageRole::User
            } else {
                MessageRole::Assistant
            };
            parent = Some(c.add(parent, role, "x"));
        }
        let tree = render(&c.messages, None).unwrap();
        assert_eq!(tree.active_path.len(), 20_000);
        assert_eq!(tree.nodes.last().unwrap().depth, 19_999);
    }
}
