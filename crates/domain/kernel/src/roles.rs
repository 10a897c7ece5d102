//! The one permission model. Every role of the five seed systems maps here to a set of
//! permissions, and code asks `role.can(Permission::X)`; nothing else compares roles.
//!
//! Seed roles and where they land: superadmin (000, 003) → `Superadmin`;
//! company_admin (000), admin (001, 002, 004), tenant_admin (003) → `TenantAdmin`;
//! content_manager, content_writer, client (000); sales, support, tech, manager (001);
//! supporter (004); user (002, 003, 004) → `User`.

use serde::{Deserialize, Serialize};
use std::fmt;
use std::str::FromStr;

/// What a role may do. Grouped by domain; the spine enforces the first block.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub enum Permission {
    /// Read the tenant's own settings (branding, widget, masked LLM config).
    TenantRead,
    /// Change the tenant's settings, widget and LLM configuration.
    TenantManage,
    /// List and view users of the tenant.
    UsersRead,
    /// Invite, update, deactivate and delete users; manage guest memberships.
    UsersManage,
    /// Create, list and revoke API keys.
    ApiKeysManage,
    /// Read content requests, agents and their output.
    ContentRead,
    /// Write content assigned to oneself.
    ContentWrite,
    /// Assign, review and publish content; configure agents.
    ContentManage,
    /// Read customers, leads and projects.
    CrmRead,
    /// Create and change customers, leads and projects.
    CrmWrite,
    /// Search the tenant's knowledge collections.
    KnowledgeRead,
    /// Create collections, upload and delete documents.
    KnowledgeManage,
    /// Chat with the tenant's agents.
    ChatUse,
    /// Take over escalated chat sessions as a human supporter.
    ChatSupport,
    /// Take courses.
    CoursesRead,
    /// Author courses and modules.
    CoursesManage,
    /// See and change the subscription, invoices and payment methods.
    BillingManage,
    /// Platform operations: create, suspend and delete tenants.
    PlatformManage,
}

impl Permission {
    pub const ALL: [Permission; 18] = [
        Permission::TenantRead,
        Permission::TenantManage,
        Permission::UsersRead,
        Permission::UsersManage,
        Permission::ApiKeysManage,
        Permission::ContentRead,
        Permission::ContentWrite,
        Permission::ContentManage,
        Permission::CrmRead,
        Permission::CrmWrite,
        Permission::KnowledgeRead,
        Permission::KnowledgeManage,
        Permission::ChatUse,
        Permission::ChatSupport,
        Permission::CoursesRead,
        Permission::CoursesManage,
        Permission::BillingManage,
        Permission::PlatformManage,
    ];

    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Permission::TenantRead => "tenant_read",
            Permission::TenantManage => "tenant_manage",
            Permission::UsersRead => "users_read",
            Permission::UsersManage => "users_manage",
            Permission::ApiKeysManage => "api_keys_manage",
            Permission::ContentRead => "content_read",
            Permission::ContentWrite => "content_write",
            Permission::ContentManage => "content_manage",
            Permission::CrmRead => "crm_read",
            Permission::CrmWrite => "crm_write",
            Permission::KnowledgeRead => "knowledge_read",
            Permission::KnowledgeManage => "knowledge_manage",
            Permission::ChatUse => "chat_use",
            Permission::ChatSupport => "chat_support",
            Permission::CoursesRead => "courses_read",
            Permission::CoursesManage => "courses_manage",
            Permission::BillingManage => "billing_manage",
            Permission::PlatformManage => "platform_manage",
        }
    }
}

impl FromStr for Permission {
    type Err = UnknownRole;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Permission::ALL
            .into_iter()
            .find(|p| p.as_str() == s)
            .ok_or_else(|| UnknownRole(s.to_owned()))
    }
}

impl fmt::Display for Permission {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A role held by a user in a tenant (or, for `Superadmin`, on the platform).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum Role {
    Superadmin,
    TenantAdmin,
    ContentManager,
    ContentWriter,
    Client,
    Sales,
    Support,
    Tech,
    Manager,
    Supporter,
    User,
}

/// A role or permission name that is not part of the model.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown role or permission `{0}`")]
pub struct UnknownRole(pub String);

impl Role {
    pub const ALL: [Role; 11] = [
        Role::Superadmin,
        Role::TenantAdmin,
        Role::ContentManager,
        Role::ContentWriter,
        Role::Client,
        Role::Sales,
        Role::Support,
        Role::Tech,
        Role::Manager,
        Role::Supporter,
        Role::User,
    ];

    /// The table: the only place that says what a role may do.
    #[must_use]
    pub fn permissions(self) -> &'static [Permission] {
        use Permission as P;
        match self {
            Role::Superadmin => &Permission::ALL,
            Role::TenantAdmin => &[
                P::TenantRead,
                P::TenantManage,
                P::UsersRead,
                P::UsersManage,
                P::ApiKeysManage,
                P::ContentRead,
                P::ContentWrite,
                P::ContentManage,
                P::CrmRead,
                P::CrmWrite,
                P::KnowledgeRead,
                P::KnowledgeManage,
                P::ChatUse,
                P::ChatSupport,
                P::CoursesRead,
                P::CoursesManage,
                P::BillingManage,
            ],
            Role::ContentManager => &[
                P::TenantRead,
                P::UsersRead,
                P::ContentRead,
                P::ContentWrite,
                P::ContentManage,
                P::KnowledgeRead,
                P::KnowledgeManage,
                P::ChatUse,
            ],
            Role::ContentWriter => &[
                P::TenantRead,
                P::ContentRead,
                P::ContentWrite,
                P::KnowledgeRead,
                P::ChatUse,
            ],
            Role::Client => &[P::TenantRead, P::ContentRead, P::ChatUse, P::CoursesRead],
            Role::Sales => &[
                P::TenantRead,
                P::UsersRead,
                P::CrmRead,
                P::CrmWrite,
                P::ChatUse,
            ],
            Role::Support => &[
                P::TenantRead,
                P::UsersRead,
                P::CrmRead,
                P::KnowledgeRead,
                P::ChatUse,
                P::ChatSupport,
            ],
            Role::Tech => &[
                P::TenantRead,
                P::UsersRead,
                P::CrmRead,
                P::KnowledgeRead,
                P::KnowledgeManage,
                P::ChatUse,
            ],
            Role::Manager => &[
                P::TenantRead,
                P::UsersRead,
                P::CrmRead,
                P::CrmWrite,
                P::ContentRead,
                P::KnowledgeRead,
                P::ChatUse,
                P::CoursesRead,
                P::BillingManage,
            ],
            Role::Supporter => &[P::TenantRead, P::KnowledgeRead, P::ChatUse, P::ChatSupport],
            Role::User => &[P::TenantRead, P::KnowledgeRead, P::ChatUse, P::CoursesRead],
        }
    }

    #[must_use]
    pub fn can(self, permission: Permission) -> bool {
        self.permissions().contains(&permission)
    }

    /// Whether holding this role lets one grant `other`: only roles whose permissions
    /// are a subset of one's own, and never the platform role inside a tenant.
    #[must_use]
    pub fn may_grant(self, other: Role) -> bool {
        other != Role::Superadmin
            && self.can(Permission::UsersManage)
            && other.permissions().iter().all(|p| self.can(*p))
    }

    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Superadmin => "superadmin",
            Role::TenantAdmin => "tenant_admin",
            Role::ContentManager => "content_manager",
            Role::ContentWriter => "content_writer",
            Role::Client => "client",
            Role::Sales => "sales",
            Role::Support => "support",
            Role::Tech => "tech",
            Role::Manager => "manager",
            Role::Supporter => "supporter",
            Role::User => "user",
        }
    }
}

impl FromStr for Role {
    type Err = UnknownRole;

    /// Accepts our names and the seeds' synonyms for a tenant administrator.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "company_admin" | "admin" => Ok(Role::TenantAdmin),
            _ => Role::ALL
                .into_iter()
                .find(|r| r.as_str() == s)
                .ok_or_else(|| UnknownRole(s.to_owned())),
        }
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_seed_role_name_parses_into_the_model() {
        for name in [
            "superadmin",
            "company_admin",
            "content_manager",
            "content_writer",
            "client",
            "admin",
            "sales",
            "support",
            "tech",
            "manager",
            "tenant_admin",
            "supporter",
            "user",
        ] {
            assert!(name.parse::<Role>().is_ok(), "{name} did not parse");
        }
    }

    #[test]
    fn only_the_superadmin_may_manage_the_platform() {
        for role in Role::ALL {
            assert_eq!(
                role.can(Permission::PlatformManage),
                role == Role::Superadmin
            );
        }
    }

    #[test]
    fn a_tenant_admin_may_grant_every_tenant_role_but_not_superadmin() {
        for role in Role::ALL {
            assert_eq!(Role::TenantAdmin.may_grant(role), role != Role::Superadmin);
        }
    }

    #[test]
    fn a_plain_user_may_grant_nothing() {
        assert!(Role::ALL.iter().all(|r| !Role::User.may_grant(*r)));
    }

    #[test]
    fn role_names_round_trip() {
        for role in Role::ALL {
            assert_eq!(role.as_str().parse::<Role>().unwrap(), role);
        }
        for p in Permission::ALL {
            assert_eq!(p.as_str().parse::<Permission>().unwrap(), p);
        }
    }
}
