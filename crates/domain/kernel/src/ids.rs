//! Typed identifiers. Every id is a UUIDv7 (time ordered, so it doubles as a stable
//! paging key) wrapped in its own newtype, so a `UserId` can never be passed where a
//! `TenantId` is expected.

/// Defines a UUIDv7 newtype id with parsing, display and serde as a plain UUID string.
#[macro_export]
macro_rules! define_id {
    ($(#[$meta:meta])* $name:ident) => {
        $(#[$meta])*
        #[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, ::serde::Serialize, ::serde::Deserialize)]
        #[serde(transparent)]
        pub struct $name(::uuid::Uuid);

        impl $name {
            /// A fresh, time-ordered id.
            #[must_use]
            pub fn new() -> Self {
                Self(::uuid::Uuid::now_v7())
            }

            /// Wraps an id read back from storage or a trusted token.
            #[must_use]
            pub const fn from_uuid(id: ::uuid::Uuid) -> Self {
                Self(id)
            }

            #[must_use]
            pub const fn as_uuid(&self) -> ::uuid::Uuid {
                self.0
            }
        }

        impl Default for $name {
            fn default() -> Self {
                Self::new()
            }
        }

        impl ::std::fmt::Display for $name {
            fn fmt(&self, f: &mut ::std::fmt::Formatter<'_>) -> ::std::fmt::Result {
                ::std::fmt::Display::fmt(&self.0, f)
            }
        }

        impl ::std::fmt::Debug for $name {
            fn fmt(&self, f: &mut ::std::fmt::Formatter<'_>) -> ::std::fmt::Result {
                write!(f, "{}({})", stringify!($name), self.0)
            }
        }

        impl ::std::str::FromStr for $name {
            type Err = ::uuid::Error;
            fn from_str(s: &str) -> Result<Self, Self::Err> {
                ::uuid::Uuid::parse_str(s).map(Self)
            }
        }

        impl From<$name> for ::uuid::Uuid {
            fn from(id: $name) -> Self {
                id.0
            }
        }

        $crate::__id_schema!($name);
    };
}

/// With the kernel's `openapi` feature: an id's OpenAPI schema, a UUID string. Decided
/// by the kernel's feature rather than the calling crate's, so a domain defining ids
/// needs no `utoipa` of its own for them.
#[cfg(feature = "openapi")]
#[doc(hidden)]
#[macro_export]
macro_rules! __id_schema {
    ($name:ident) => {
        impl $crate::__utoipa::PartialSchema for $name {
            fn schema()
            -> $crate::__utoipa::openapi::RefOr<$crate::__utoipa::openapi::schema::Schema> {
                $crate::__utoipa::openapi::ObjectBuilder::new()
                    .schema_type($crate::__utoipa::openapi::schema::Type::String)
                    .format(Some($crate::__utoipa::openapi::SchemaFormat::KnownFormat(
                        $crate::__utoipa::openapi::KnownFormat::Uuid,
                    )))
                    .into()
            }
        }

        impl $crate::__utoipa::ToSchema for $name {}
    };
}

/// Without the `openapi` feature ids have no schema.
#[cfg(not(feature = "openapi"))]
#[doc(hidden)]
#[macro_export]
macro_rules! __id_schema {
    ($name:ident) => {};
}

define_id!(
    /// A tenant (company, organisation, workspace).
    TenantId
);
define_id!(
    /// A user account; it belongs to exactly one home tenant.
    UserId
);
define_id!(
    /// A platform superadmin, who belongs to no tenant.
    PlatformAdminId
);
define_id!(
    /// A guest membership of a user in a tenant other than their own.
    MembershipId
);
define_id!(
    /// An API key.
    ApiKeyId
);
define_id!(
    /// One refresh token of a login session.
    RefreshTokenId
);
define_id!(
    /// A refresh-token family: all tokens rotated from one login.
    SessionFamilyId
);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_made_later_sort_after_ids_made_earlier() {
        let a = UserId::new();
        let b = UserId::new();
        assert!(a < b);
    }

    #[test]
    fn an_id_round_trips_through_its_string_form() {
        let a = TenantId::new();
        let parsed: TenantId = a.to_string().parse().unwrap();
        assert_eq!(a, parsed);
    }
}
