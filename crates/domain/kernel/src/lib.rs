//! The shared kernel of Trellis: identifiers, the tenant context every port takes,
//! the one role → permission table, cursor paging, the value objects that more than
//! one domain validates, and the ports more than one domain uses (the clock, password
//! hashing, running blocking steps). Nothing here does I/O.

pub mod blocking;
pub mod clock;
pub mod ctx;
pub mod ids;
pub mod page;
pub mod password;
pub mod roles;
pub mod search;
pub mod secrets;
pub mod timestamp;
pub mod values;

pub use blocking::{BlockingFailure, BlockingRunner, RunInline, inspect_upload, run_blocking};
pub use clock::{Clock, SystemClock};
pub use ctx::{Actor, PlatformCtx, TenantCtx};
pub use ids::*;
pub use page::{Cursor, InvalidPage, Page, PageRequest};
pub use password::{Password, PasswordHash, PasswordHasher};
pub use roles::{Permission, Role, UnknownRole};
pub use values::{Email, HexColor, HttpUrl, InvalidValue, Slug};

/// What the id schemas `define_id!` writes refer to, so a crate defining ids needs no
/// `utoipa` of its own.
#[cfg(feature = "openapi")]
#[doc(hidden)]
pub use utoipa as __utoipa;

/// UTC timestamps everywhere; the database stores `timestamptz`.
pub type Timestamp = chrono::DateTime<chrono::Utc>;
