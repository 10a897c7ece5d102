//! What the RAG repositories share: `RagError` as a [`DomainError`], the RAG
//! constraints that become `Conflict` or `NotFound` rather than `Unexpected`, and
//! Postgres array literals (this sea-orm build has no array support, so lists are
//! bound as one text value and cast, e.g. `$2::uuid[]`).

use crate::error::DomainError;
use sea_orm::sqlx::error::Error as SqlxError;
use sea_orm::{DbErr, RuntimeErr};
use std::borrow::Cow;
use trellis_rag::RagError;

impl DomainError for RagError {
    fn conflict(message: String) -> Self {
        RagError::Conflict(message)
    }

    fn not_found(what: &'static str) -> Self {
        RagError::NotFound(what)
    }
}

/// Maps a database error raised while trying to `what`, knowing the RAG tables'
/// constraints; anything else goes through the adapter's general classification.
pub(super) fn db(what: &'static str) -> impl FnOnce(DbErr) -> RagError {
    move |err| {
        if let Some(mapped) = constraint_name(&err).and_then(known_constraint) {
            return mapped;
        }
        RagError::db(what)(err)
    }
}

/// The constraints a caller can break by what they ask (names from the migration).
fn known_constraint(constraint: &str) -> Option<RagError> {
    let conflict = |m: &str| Some(RagError::Conflict(m.to_owned()));
    match constraint {
        "knowledge_collections_tenant_id_name_key" => {
            conflict("a collection with this name already exists")
        }
        "knowledge_collections_pkey" => conflict("a collection with this id already exists"),
        "documents_checksum_key" => conflict("this file is already in the collection"),
        "documents_pkey" => conflict("a document with this id already exists"),
        "chunks_pkey" => conflict("a chunk with this id already exists"),
        "documents_collection_fkey" => Some(RagError::NotFound("collection")),
        "chunks_document_fkey" => Some(RagError::NotFound("document")),
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

/// Postgres text cannot hold NUL, which text extracted from a PDF occasionally does.
/// A space keeps the byte length, so spans into the extracted text stay true.
pub(super) fn without_nul(s: &str) -> Cow<'_, str> {
    if s.contains('\0') {
        Cow::Owned(s.replace('\0', " "))
    } else {
        Cow::Borrowed(s)
    }
}

/// A Postgres array literal of values that need no quoting (UUIDs, the fixed source
/// type names): `{a,b,c}`.
pub(super) fn array_literal<T: std::fmt::Display>(items: impl IntoIterator<Item = T>) -> String {
    let mut out = String::from("{");
    for (i, item) in items.into_iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        out.push_str(&item.to_string());
    }
    out.push('}');
    out
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    #[test]
    fn array_literals_list_their_items_in_braces() {
        assert_eq!(array_literal(Vec::<String>::new()), "{}");
        assert_eq!(array_literal(["upload", "manual"]), "{upload,manual}");
    }

    #[test]
    fn nul_bytes_become_spaces_of_the_same_length() {
        assert_eq!(without_nul("x\0y"), "x y");
        assert!(matches!(without_nul("plain"), Cow::Borrowed("plain")));
    }

    #[test]
    fn a_taken_collection_name_is_a_conflict_and_a_missing_collection_not_found() {
        assert!(matches!(
            known_constraint("knowledge_collections_tenant_id_name_key"),
            Some(RagError::Conflict(m)) if m.contains("name")
        ));
        assert!(matches!(
            known_constraint("documents_collection_fkey"),
            Some(RagError::NotFound("collection"))
        ));
        assert!(known_constraint("chunks_embedding_dim_check").is_none());
    }

    #[test]
    fn other_errors_are_unexpected_with_context() {
        let err = db("store chunks")(DbErr::Custom("boom".into()));
        let RagError::Unexpected(e) = err else {
            panic!("expected Unexpected, got {err:?}");
        };
        assert!(format!("{e:#}").contains("failed to store chunks"));
    }
}
