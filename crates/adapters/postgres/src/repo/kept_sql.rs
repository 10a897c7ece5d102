//! List queries' SQL rendered once per shape of request, and bound afresh each time.
//!
//! A list request's SQL depends only on its shape: which optional filters it has and
//! whether it continues after a cursor. Building and rendering the query with
//! sea-query on every request cost about 5 % of a list's CPU, for text that repeats.
//! So each list keeps one rendered text per shape, made by sea-query the first time
//! the shape is asked for, and binds only the request's values. The values must be
//! the ones sea-query would bind, in its order; each list's tests compare the two for
//! every shape.

use sea_orm::sea_query::Value;
use sea_orm::{DbBackend, Statement, Values};
use std::sync::OnceLock;
use trellis_kernel::PageRequest;

/// One list query's SQL for each of its `SHAPES` shapes.
pub(crate) struct KeptSql<const SHAPES: usize>([OnceLock<String>; SHAPES]);

impl<const SHAPES: usize> KeptSql<SHAPES> {
    pub(crate) const fn new() -> Self {
        Self([const { OnceLock::new() }; SHAPES])
    }

    /// The statement for `bound`'s shape and values. `build` is the query as
    /// sea-query builds it for this request; it runs only the first time the shape is
    /// seen (and for a shape beyond `SHAPES`, which a list's bits never reach).
    pub(crate) fn statement(&self, bound: Bound, build: impl FnOnce() -> Statement) -> Statement {
        let Some(kept) = self.0.get(bound.shape) else {
            return build();
        };
        let sql = kept.get_or_init(|| build().sql);
        Statement {
            sql: sql.clone(),
            values: Some(Values(bound.values)),
            db_backend: DbBackend::Postgres,
        }
    }
}

/// A list request's shape and the values it binds, collected in the order the query
/// binds them: the tenant, each filter in turn, then the page.
pub(crate) struct Bound {
    shape: usize,
    next_bit: u32,
    values: Vec<Value>,
}

impl Bound {
    /// Starts with the tenant id every list filters on.
    pub(crate) fn tenant(tenant: uuid::Uuid) -> Self {
        Self {
            shape: 0,
            next_bit: 0,
            values: vec![Value::from(tenant)],
        }
    }

    /// An optional filter: one bit of the shape, and its value when present.
    #[must_use]
    pub(crate) fn optional<T: Into<Value>>(mut self, value: Option<T>) -> Self {
        if let Some(value) = value {
            self.shape |= 1 << self.next_bit;
            self.values.push(value.into());
        }
        self.next_bit += 1;
        self
    }

    /// The page, as `keyset` binds it: the cursor's id (one more bit) and the limit
    /// plus the one row that tells whether another page follows.
    #[must_use]
    pub(crate) fn page(self, page: PageRequest) -> Self {
        let mut bound = self.optional(page.after().map(|cursor| cursor.id()));
        bound.values.push(Value::from(u64::from(page.limit()) + 1));
        bound
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
pub(crate) mod tests {
    use trellis_kernel::{Cursor, PageRequest};

    /// Two pages for each cursor shape (`bit` set: after a cursor), with other limits,
    /// so that the second request of a shape is served from the kept SQL.
    pub(crate) fn pages(with_cursor: bool) -> [PageRequest; 2] {
        let cursor = Cursor::after(uuid::Uuid::now_v7()).encode();
        let cursor = with_cursor.then_some(cursor.as_str());
        [
            PageRequest::new(Some(20), cursor).unwrap(),
            PageRequest::new(Some(7), cursor).unwrap(),
        ]
    }
}
