//! A `jsonb` column read straight into the type it holds, from either client.
//!
//! Reading it as `serde_json::Value` first builds a tree of the document (a map, a
//! string per key and value) only to walk it again into the domain type; on a page of
//! twenty users that tree was several per cent of the list's CPU. The pipelined reads
//! (tokio-postgres) and the sqlx path each have a JSON wrapper of their own, and a
//! by-position decoder is one expression for both ([`crate::store::by_position`]), so
//! this wrapper speaks both clients' decoding traits.

use sea_orm::sqlx::postgres::{PgTypeInfo, PgValueRef};
use sea_orm::sqlx::{self, Postgres};
use serde::de::DeserializeOwned;
use tokio_postgres::types::{FromSql, Type};

/// The value of a `jsonb` (or `json`) column, deserialised as `T`.
pub(crate) struct Jsonb<T>(pub T);

impl<'a, T: DeserializeOwned> FromSql<'a> for Jsonb<T> {
    fn from_sql(
        ty: &Type,
        raw: &'a [u8],
    ) -> Result<Self, Box<dyn std::error::Error + Sync + Send>> {
        tokio_postgres::types::Json::<T>::from_sql(ty, raw).map(|json| Self(json.0))
    }

    fn accepts(ty: &Type) -> bool {
        <tokio_postgres::types::Json<T> as FromSql<'a>>::accepts(ty)
    }
}

impl<T> sqlx::Type<Postgres> for Jsonb<T> {
    fn type_info() -> PgTypeInfo {
        <sqlx::types::Json<T> as sqlx::Type<Postgres>>::type_info()
    }

    fn compatible(ty: &PgTypeInfo) -> bool {
        <sqlx::types::Json<T> as sqlx::Type<Postgres>>::compatible(ty)
    }
}

impl<'r, T: DeserializeOwned + 'r> sqlx::Decode<'r, Postgres> for Jsonb<T> {
    fn decode(value: PgValueRef<'r>) -> Result<Self, sqlx::error::BoxDynError> {
        <sqlx::types::Json<T> as sqlx::Decode<'r, Postgres>>::decode(value).map(|json| Self(json.0))
    }
}
