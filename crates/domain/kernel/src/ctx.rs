//! Who is acting, and in which tenant. Every port method that touches tenant data takes
//! a `&TenantCtx`; the fields are private so that a context can only be made by the
//! constructors below, whose names are meant to be grepped in review.

use crate::{ApiKeyId, Permission, PlatformAdminId, Role, TenantId, UserId};

/// The principal behind a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Actor {
    /// A signed-in user (possibly a guest from another tenant).
    User(UserId),
    /// An API key, acting with the rights of the user who created it, narrowed by scopes.
    ApiKey { key: ApiKeyId, owner: UserId },
    /// Trusted platform code (login, seeding, background jobs).
    System,
}

/// The tenant a unit of work runs in, and who runs it with which rights.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TenantCtx {
    tenant_id: TenantId,
    actor: Actor,
    role: Role,
    scopes: Option<Vec<Permission>>,
}

impl TenantCtx {
    /// For the HTTP auth layer, after it verified a token or API key.
    #[must_use]
    pub fn authenticated(
        tenant_id: TenantId,
        actor: Actor,
        role: Role,
        scopes: Option<Vec<Permission>>,
    ) -> Self {
        Self {
            tenant_id,
            actor,
            role,
            scopes,
        }
    }

    /// For trusted system code only (login, seeding, jobs): acts with admin rights in
    /// one tenant. Grep for `TenantCtx::system` when reviewing tenancy.
    #[must_use]
    pub fn system(tenant_id: TenantId) -> Self {
        Self {
            tenant_id,
            actor: Actor::System,
            role: Role::TenantAdmin,
            scopes: None,
        }
    }

    #[must_use]
    pub fn tenant_id(&self) -> TenantId {
        self.tenant_id
    }

    #[must_use]
    pub fn actor(&self) -> Actor {
        self.actor
    }

    #[must_use]
    pub fn role(&self) -> Role {
        self.role
    }

    /// The user behind the request, if any (an API key answers for its owner).
    #[must_use]
    pub fn user_id(&self) -> Option<UserId> {
        match self.actor {
            Actor::User(id) | Actor::ApiKey { owner: id, .. } => Some(id),
            Actor::System => None,
        }
    }

    #[must_use]
    pub fn scopes(&self) -> Option<&[Permission]> {
        self.scopes.as_deref()
    }

    /// The role allows it and, for an API key, so do the key's scopes.
    #[must_use]
    pub fn can(&self, permission: Permission) -> bool {
        self.role.can(permission) && self.scopes.as_ref().is_none_or(|s| s.contains(&permission))
    }
}

/// A platform superadmin acting outside any tenant.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PlatformCtx {
    admin: Option<PlatformAdminId>,
}

impl PlatformCtx {
    /// For the HTTP auth layer, after it verified a superadmin token.
    #[must_use]
    pub fn authenticated(admin: PlatformAdminId) -> Self {
        Self { admin: Some(admin) }
    }

    /// For trusted system code only (seeding, the CLI).
    #[must_use]
    pub fn system() -> Self {
        Self { admin: None }
    }

    #[must_use]
    pub fn admin_id(&self) -> Option<PlatformAdminId> {
        self.admin
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_api_key_cannot_do_more_than_its_scopes_allow() {
        let ctx = TenantCtx::authenticated(
            TenantId::new(),
            Actor::ApiKey {
                key: ApiKeyId::new(),
                owner: UserId::new(),
            },
            Role::TenantAdmin,
            Some(vec![Permission::UsersRead]),
        );
        assert!(ctx.can(Permission::UsersRead));
        assert!(!ctx.can(Permission::UsersManage));
    }

    #[test]
    fn scopes_never_widen_a_role() {
        let ctx = TenantCtx::authenticated(
            TenantId::new(),
            Actor::User(UserId::new()),
            Role::User,
            Some(vec![Permission::UsersManage]),
        );
        assert!(!ctx.can(Permission::UsersManage));
    }
}
