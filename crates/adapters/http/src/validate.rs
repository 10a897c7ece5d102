//! Helpers for turning request bodies into domain commands: a collector that gathers
//! every invalid field (so a client sees all its mistakes in one 422, not one per
//! round trip), and the "absent / null / value" distinction of partial updates.

use crate::problem::{ApiError, FieldError};
use serde::{Deserialize, Deserializer};
use trellis_kernel::InvalidValue;

/// Collects field errors while a body is converted.
#[derive(Debug, Default)]
pub struct Fields {
    errors: Vec<FieldError>,
}

impl Fields {
    #[must_use]
    pub fn new() -> Self {
        Self::default()
    }

    /// Keeps the value, or records the error under its own field name.
    pub fn check<T>(&mut self, r: Result<T, InvalidValue>) -> Option<T> {
        r.map_err(|e| self.errors.push(e.into())).ok()
    }

    /// Keeps the value, or records the error under `field` (the name the client used,
    /// e.g. `admin.email`, where the value object reports plain `email`).
    pub fn check_as<T>(&mut self, field: &str, r: Result<T, InvalidValue>) -> Option<T> {
        r.map_err(|e| self.errors.push(FieldError::new(field, e.reason)))
            .ok()
    }

    /// Like [`Fields::check_as`] for an optional input.
    pub fn check_opt<T>(
        &mut self,
        field: &str,
        v: Option<&str>,
        parse: impl FnOnce(&str) -> Result<T, InvalidValue>,
    ) -> Option<Option<T>> {
        match v {
            None => Some(None),
            Some(s) => self.check_as(field, parse(s)).map(Some),
        }
    }

    /// Records a failure found by the adapter itself.
    pub fn push(&mut self, field: &str, reason: impl Into<String>) {
        self.errors.push(FieldError::new(field, reason));
    }

    /// `Ok(value)` when no field failed, else a 422 listing them all. `build` runs only
    /// when every check passed, so it may rely on every `Option` being `Some`.
    ///
    /// # Errors
    /// The collected validation problem.
    pub fn finish<T>(self, build: impl FnOnce() -> Option<T>) -> Result<T, ApiError> {
        if !self.errors.is_empty() {
            return Err(ApiError::validation(self.errors));
        }
        build().ok_or_else(|| {
            // Only reachable if a conversion forgot to record its error; fail loudly
            // in logs but still answer with a 422 rather than a 500.
            tracing::warn!("a body conversion failed without naming a field");
            ApiError::validation(vec![FieldError::new("body", "is not valid")])
        })
    }
}

/// Deserialises a field of a partial update into `Option<Option<T>>`: absent → `None`
/// (keep), `null` → `Some(None)` (clear), a value → `Some(Some(v))` (set). Use with
/// `#[serde(default, deserialize_with = "double_option")]`.
///
/// # Errors
/// When the value does not deserialise as `T`.
pub fn double_option<'de, T, D>(d: D) -> Result<Option<Option<T>>, D::Error>
where
    T: Deserialize<'de>,
    D: Deserializer<'de>,
{
    Option::<T>::deserialize(d).map(Some)
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;
    use serde::Deserialize;
    use trellis_kernel::Email;

    #[derive(Debug, Deserialize)]
    struct Patch {
        #[serde(default, deserialize_with = "double_option")]
        domain: Option<Option<String>>,
    }

    #[test]
    fn absent_null_and_a_value_are_three_different_patches() {
        let absent: Patch = serde_json::from_str("{}").unwrap();
        let null: Patch = serde_json::from_str(r#"{"domain":null}"#).unwrap();
        let set: Patch = serde_json::from_str(r#"{"domain":"x.example.com"}"#).unwrap();
        assert_eq!(absent.domain, None);
        assert_eq!(null.domain, Some(None));
        assert_eq!(set.domain, Some(Some("x.example.com".into())));
    }

    #[test]
    fn every_invalid_field_is_reported_at_once() {
        let mut f = Fields::new();
        let a = f.check(Email::parse("nope"));
        let b = f.check_as("admin.email", Email::parse("also-nope"));
        let err = f.finish(|| Some((a?, b?))).unwrap_err();
        let fields: Vec<&str> = err.errors().iter().map(|e| e.field.as_str()).collect();
        assert_eq!(fields, vec!["email", "admin.email"]);
    }
}
