//! What the content repositories share: `ContentError` as a [`DomainError`], the
//! content constraints that become `Conflict` or `NotFound` rather than `Unexpected`,
//! and the search-box query the full-text searches of messages and memories run.

use crate::error::DomainError;
use sea_orm::sqlx::error::Error as SqlxError;
use sea_orm::{DbErr, RuntimeErr};
use trellis_content::ContentError;

impl DomainError for ContentError {
    fn conflict(message: String) -> Self {
        ContentError::Conflict(message)
    }

    fn not_found(what: &'static str) -> Self {
        ContentError::NotFound(what)
    }
}

/// Maps a database error raised while trying to `what`, knowing the content tables'
/// constraints; anything else goes through the adapter's general classification.
pub(super) fn db(what: &'static str) -> impl FnOnce(DbErr) -> ContentError {
    move |err| {
        if let Some(mapped) = constraint_name(&err).and_then(known_constraint) {
            return mapped;
        }
        ContentError::db(what)(err)
    }
}

/// Whether `err` is a violation of the constraint named `name`.
pub(super) fn violates(err: &DbErr, name: &str) -> bool {
    constraint_name(err) == Some(name)
}

/// The constraints a caller can break by what they ask (names from the migration
/// `m20261122_000005_create_content`). The messages match the in-memory adapter's.
fn known_constraint(constraint: &str) -> Option<ContentError> {
    let conflict = |m: &str| Some(ContentError::Conflict(m.to_owned()));
    let not_found = |what| Some(ContentError::NotFound(what));
    match constraint {
        "agents_tenant_id_name_key" => conflict("an agent with this name already exists"),
        "agents_pkey" => conflict("an agent with this id already exists"),
        // Two updates from the same version: the compare-and-set lets one through, so
        // this only fires if a version row was written some other way.
        "agent_versions_pkey" => conflict("the agent was changed meanwhile"),
        // Naming a tool that is not in the tenant. (Deleting a tool in use breaks the
        // same key from the other side; the tool repository reports that itself.)
        "agent_tools_tool_fkey" => not_found("tool"),
        "agent_tools_pkey" => conflict("an agent lists the same tool twice"),
        "tool_configs_tenant_id_name_key" => conflict("a tool with this name already exists"),
        "tool_configs_pkey" => conflict("a tool with this id already exists"),
        "conversations_pkey" => conflict("a conversation with this id already exists"),
        "messages_pkey" => conflict("this message already exists"),
        "messages_conversation_fkey" | "files_conversation_fkey" => not_found("conversation"),
        // A parent that is not a message of the same conversation (or the message
        // itself) is not found, as in the in-memory adapter.
        "messages_parent_fkey" | "messages_not_own_parent" => not_found("message"),
        "message_files_file_fkey" => not_found("file"),
        "files_pkey" => conflict("a file with this id already exists"),
        "memories_tenant_id_owner_id_key_key" => conflict("a memory with this key already exists"),
        "memories_pkey" => conflict("a memory with this id already exists"),
        "usage_events_pkey" => conflict("a usage event with this id already exists"),
        _ => None,
    }
}

/// The constraint a database error names, if it names one.
fn constraint_name(err: &DbErr) -> Option<&str> {
    let (DbErr::Exec(RuntimeErr::SqlxError(e)) | DbErr::Query(RuntimeErr::SqlxError(e))) = err
    else {
        return None;
    };
    let SqlxError::Database(db) = e.as_ref() else {
        return None;
    };
    db.constraint()
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    #[test]
    fn taken_names_are_conflicts_and_missing_parents_not_found() {
        assert!(matches!(
            known_constraint("agents_tenant_id_name_key"),
            Some(ContentError::Conflict(m)) if m.contains("name")
        ));
        assert!(matches!(
            known_constraint("messages_parent_fkey"),
            Some(ContentError::NotFound("message"))
        ));
        assert!(matches!(
            known_constraint("files_conversation_fkey"),
            Some(ContentError::NotFound("conversation"))
        ));
        assert!(known_constraint("messages_role_check").is_none());
    }

    #[test]
    fn other_errors_are_unexpected_with_context() {
        let err = db("insert message")(DbErr::Custom("boom".into()));
        let ContentError::Unexpected(e) = err else {
            panic!("expected Unexpected, got {err:?}");
        };
        assert!(format!("{e:#}").contains("failed to insert message"));
    }
}
