//! Turning database errors into domain errors. Unique-constraint violations become
//! `Conflict`s with a message a user can act on, foreign-key violations on the keys
//! the domain knows about become `NotFound`, and everything else is `Unexpected` with
//! the operation as context (the HTTP layer logs the chain and shows a request id).

use sea_orm::sqlx::error::Error as SqlxError;
use sea_orm::{DbErr, RuntimeErr};
use trellis_identity::IdentityError;
use trellis_tenancy::TenancyError;

/// A domain error type this adapter can produce.
pub(crate) trait DomainError: From<anyhow::Error> + Send + 'static {
    fn conflict(message: String) -> Self;
    fn not_found(what: &'static str) -> Self;

    /// Maps a database error raised while trying to `what` ("insert user").
    fn db(what: &'static str) -> impl FnOnce(DbErr) -> Self {
        move |err| classify(err, what)
    }
}

impl DomainError for TenancyError {
    fn conflict(message: String) -> Self {
        TenancyError::Conflict(message)
    }

    fn not_found(_what: &'static str) -> Self {
        TenancyError::NotFound
    }
}

impl DomainError for IdentityError {
    fn conflict(message: String) -> Self {
        IdentityError::Conflict(message)
    }

    fn not_found(what: &'static str) -> Self {
        IdentityError::NotFound(what)
    }
}

/// SQLSTATE codes we branch on.
const UNIQUE_VIOLATION: &str = "23505";
const FOREIGN_KEY_VIOLATION: &str = "23503";

fn classify<E: DomainError>(err: DbErr, what: &'static str) -> E {
    if let Some((code, constraint)) = violation(&err) {
        match code.as_str() {
            UNIQUE_VIOLATION => return E::conflict(conflict_message(constraint.as_deref())),
            FOREIGN_KEY_VIOLATION => {
                if let Some(missing) = constraint.as_deref().and_then(missing_parent) {
                    return E::not_found(missing);
                }
            }
            _ => {}
        }
    }
    E::from(anyhow::Error::new(err).context(format!("failed to {what}")))
}

/// The SQLSTATE and constraint name of a database-reported error, if it is one.
fn violation(err: &DbErr) -> Option<(String, Option<String>)> {
    let (DbErr::Exec(RuntimeErr::SqlxError(e)) | DbErr::Query(RuntimeErr::SqlxError(e))) = err
    else {
        return None;
    };
    let SqlxError::Database(db) = e.as_ref() else {
        return None;
    };
    Some((
        db.code().map(|c| c.into_owned()).unwrap_or_default(),
        db.constraint().map(str::to_owned),
    ))
}

/// What the user is told when a unique constraint (named in the migrations) fails.
fn conflict_message(constraint: Option<&str>) -> String {
    match constraint {
        Some("tenants_slug_key") => "a tenant with this slug already exists",
        Some("tenants_subdomain_key") => "a tenant with this subdomain already exists",
        Some("tenants_custom_domain_key") => "a tenant with this custom domain already exists",
        Some("tenants_pkey") => "a tenant with this id already exists",
        Some("users_tenant_id_email_key") => "a user with this email already exists",
        Some("users_tenant_id_username_key") => "a user with this username already exists",
        Some("users_tenant_id_oauth_key") => "this OAuth identity is already linked",
        Some("users_pkey") => "a user with this id already exists",
        Some("memberships_tenant_id_email_key") => "this email is already a guest here",
        Some("memberships_pkey") => "a guest membership with this id already exists",
        Some("api_keys_tenant_id_prefix_key") => "an API key with this prefix already exists",
        Some("api_keys_pkey") => "an API key with this id already exists",
        Some("refresh_tokens_tenant_id_token_hash_key" | "refresh_tokens_pkey") => {
            "duplicate refresh token"
        }
        Some("platform_admins_email_key") => "a platform admin with this email already exists",
        Some("platform_admins_pkey") => "a platform admin with this id already exists",
        _ => "this conflicts with an existing record",
    }
    .to_owned()
}

/// The domain name of the row a failed foreign key points at, for the keys whose
/// absence is a caller's mistake rather than a bug.
fn missing_parent(constraint: &str) -> Option<&'static str> {
    match constraint {
        "api_keys_created_by_fkey" => Some("user"),
        "memberships_home_tenant_id_fkey" => Some("home tenant"),
        "refresh_tokens_membership_fkey" => Some("guest"),
        c if c.ends_with("_tenant_id_fkey") => Some("tenant"),
        _ => None,
    }
}

/// Context for a row that does not parse into its domain model: a bug or a manual
/// edit, never the caller's fault, so it surfaces as `Unexpected`.
pub(crate) fn bad_row(table: &str, id: impl std::fmt::Display, field: &str) -> String {
    format!("{table} row {id} has an invalid {field}")
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    #[test]
    fn unknown_constraints_still_get_a_human_message() {
        assert_eq!(
            conflict_message(Some("users_tenant_id_email_key")),
            "a user with this email already exists"
        );
        assert_eq!(
            conflict_message(None),
            "this conflicts with an existing record"
        );
    }

    #[test]
    fn a_missing_creator_is_a_missing_user() {
        assert_eq!(missing_parent("api_keys_created_by_fkey"), Some("user"));
        assert_eq!(missing_parent("users_tenant_id_fkey"), Some("tenant"));
        assert_eq!(missing_parent("something_else"), None);
    }

    #[test]
    fn other_errors_are_unexpected_with_context() {
        let err: IdentityError = IdentityError::db("insert user")(DbErr::Custom("boom".into()));
        let IdentityError::Unexpected(e) = err else {
            panic!("expected Unexpected, got {err:?}");
        };
        assert!(format!("{e:#}").contains("failed to insert user"));
    }
}
