//! Identity: who may act in a tenant and how they prove it. Users (one home tenant
//! each, with guest memberships elsewhere), the login / refresh / logout session cycle
//! with refresh-token rotation and reuse detection, API keys with scopes, and the
//! platform superadmins who belong to no tenant.

pub mod error;
pub mod model;
pub mod ports;
pub mod service;

pub use error::{IdentityError, Result};
pub use model::*;
pub use ports::*;
pub use service::{IdentityConfig, IdentityService};
