//! The content domain's entities, value objects and commands, one module per concept;
//! everything is re-exported flat.

pub mod agent;
pub mod catalog;
pub mod chat;
pub mod conversation;
pub mod file;
pub mod ids;
pub mod memory;
pub mod message;
pub mod quota;
pub(crate) mod text;
pub mod tool;
pub mod usage;

pub use agent::*;
pub use catalog::*;
pub use chat::*;
pub use conversation::*;
pub use file::*;
pub use ids::*;
pub use memory::*;
pub use message::*;
pub use quota::{
    BudgetPeriod, BudgetStatus, BudgetUse, Quota, QuotaDecision, QuotaScope, TokenBudget,
};
pub use tool::*;
pub use usage::*;
