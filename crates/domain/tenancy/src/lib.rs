//! Tenancy: the companies, organisations or workspaces that own all other data.
//! Superadmins create tenants (each with its first admin), suspend and delete them;
//! tenant admins change their own branding, chat widget and LLM configuration.

pub mod endpoints;
pub mod error;
pub mod model;
pub mod ports;
pub mod service;

pub use endpoints::LlmEndpointPolicy;
pub use error::{Result, TenancyError};
pub use model::*;
pub use ports::*;
pub use service::TenancyService;
