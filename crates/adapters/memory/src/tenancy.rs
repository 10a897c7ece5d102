//! `TenantRepo` in memory.

use crate::store::{MemoryStore, TenantRow, UserRow, now, page_of};
use async_trait::async_trait;
use trellis_identity::{Preferences, Tier, User};
use trellis_kernel::{Page, PageRequest, PlatformCtx, Role, Slug, TenantCtx, TenantId};
use trellis_tenancy::{
    FirstAdmin, LlmConfig, NewTenant, Result, TenancyError, Tenant, TenantPatch, TenantRef,
    TenantRepo, TenantStatus, WidgetConfig,
};

fn live(row: &TenantRow) -> Option<&Tenant> {
    (!row.deleted).then_some(&row.tenant)
}

#[async_trait]
impl TenantRepo for MemoryStore {
    async fn create(
        &self,
        _ctx: &PlatformCtx,
        new: NewTenant,
        admin: FirstAdmin,
    ) -> Result<Tenant> {
        let mut db = self.write();
        for row in db.tenants.values() {
            let t = &row.tenant;
            if t.slug == new.slug {
                return Err(TenancyError::Conflict(
                    "a tenant with this slug already exists".into(),
                ));
            }
            if t.subdomain == new.subdomain {
                return Err(TenancyError::Conflict(
                    "a tenant with this subdomain already exists".into(),
                ));
            }
            if !row.deleted && new.custom_domain.is_some() && t.custom_domain == new.custom_domain {
                return Err(TenancyError::Conflict(
                    "a tenant with this custom domain already exists".into(),
                ));
            }
        }
        let at = now();
        let tenant = Tenant {
            id: new.id,
            name: new.name,
            slug: new.slug,
            subdomain: new.subdomain,
            custom_domain: new.custom_domain,
            branding: new.branding,
            config: new.config,
            plan: new.plan,
            status: TenantStatus::Active,
            billing_customer_id: None,
            created_at: at,
            updated_at: at,
        };
        let user = User {
            id: admin.id,
            tenant_id: tenant.id,
            email: admin.email,
            email_verified: false,
            name: admin.name,
            username: None,
            avatar_url: None,
            role: Role::TenantAdmin,
            tier: Tier::Free,
            oauth: None,
            preferences: Preferences::default(),
            active: true,
            last_login_at: None,
            created_at: at,
            updated_at: at,
        };
        db.users.insert(
            (tenant.id, user.id),
            UserRow {
                user,
                password_hash: Some(admin.password_hash),
                deleted_at: None,
            },
        );
        db.tenants.insert(
            tenant.id,
            TenantRow {
                tenant: tenant.clone(),
                deleted: false,
                widget: None,
                llm: None,
            },
        );
        Ok(tenant)
    }

    async fn list(&self, _ctx: &PlatformCtx, page: PageRequest) -> Result<Page<Tenant>> {
        let db = self.read();
        Ok(page_of(
            db.tenants.values().filter_map(live).cloned(),
            page,
            |t| t.id.as_uuid(),
        ))
    }

    async fn get(&self, _ctx: &PlatformCtx, id: TenantId) -> Result<Tenant> {
        self.read()
            .tenants
            .get(&id)
            .and_then(live)
            .cloned()
            .ok_or(TenancyError::NotFound)
    }

    async fn set_status(
        &self,
        _ctx: &PlatformCtx,
        id: TenantId,
        status: TenantStatus,
    ) -> Result<Tenant> {
        let mut db = self.write();
        let row = db
            .tenants
            .get_mut(&id)
            .filter(|r| !r.deleted)
            .ok_or(TenancyError::NotFound)?;
        row.tenant.status = status;
        row.tenant.updated_at = now();
        Ok(row.tenant.clone())
    }

    async fn soft_delete(&self, _ctx: &PlatformCtx, id: TenantId) -> Result<()> {
        let mut db = self.write();
        let row = db
            .tenants
            .get_mut(&id)
            .filter(|r| !r.deleted)
            .ok_or(TenancyError::NotFound)?;
        row.deleted = true;
        Ok(())
    }

    async fn resolve_slug(&self, _ctx: &PlatformCtx, slug: &Slug) -> Result<Option<TenantRef>> {
        Ok(self
            .read()
            .tenants
            .values()
            .filter_map(live)
            .find(|t| &t.slug == slug)
            .map(|t| TenantRef {
                id: t.id,
                status: t.status,
            }))
    }

    async fn current(&self, ctx: &TenantCtx) -> Result<Tenant> {
        self.read()
            .tenants
            .get(&ctx.tenant_id())
            .and_then(live)
            .cloned()
            .ok_or(TenancyError::NotFound)
    }

    async fn update(&self, ctx: &TenantCtx, patch: TenantPatch) -> Result<Tenant> {
        let mut db = self.write();
        if let Some(Some(domain)) = &patch.custom_domain {
            let taken = db.tenants.values().any(|r| {
                !r.deleted
                    && r.tenant.id != ctx.tenant_id()
                    && r.tenant.custom_domain.as_ref() == Some(domain)
            });
            if taken {
                return Err(TenancyError::Conflict(
                    "a tenant with this custom domain already exists".into(),
                ));
            }
        }
        let row = db
            .tenants
            .get_mut(&ctx.tenant_id())
            .filter(|r| !r.deleted)
            .ok_or(TenancyError::NotFound)?;
        let t = &mut row.tenant;
        if let Some(name) = patch.name {
            t.name = name;
        }
        if let Some(domain) = patch.custom_domain {
            t.custom_domain = domain;
        }
        if let Some(branding) = patch.branding {
            t.branding = branding;
        }
        if let Some(config) = patch.config {
            t.config = config;
        }
        t.updated_at = now();
        Ok(t.clone())
    }

    async fn widget(&self, ctx: &TenantCtx) -> Result<Option<WidgetConfig>> {
        let db = self.read();
        let row = db
            .tenants
            .get(&ctx.tenant_id())
            .filter(|r| !r.deleted)
            .ok_or(TenancyError::NotFound)?;
        Ok(row.widget.clone())
    }

    async fn put_widget(&self, ctx: &TenantCtx, widget: WidgetConfig) -> Result<WidgetConfig> {
        let mut db = self.write();
        let row = db
            .tenants
            .get_mut(&ctx.tenant_id())
            .filter(|r| !r.deleted)
            .ok_or(TenancyError::NotFound)?;
        row.widget = Some(widget.clone());
        Ok(widget)
    }

    async fn llm(&self, ctx: &TenantCtx) -> Result<Option<LlmConfig>> {
        let db = self.read();
        let row = db
            .tenants
            .get(&ctx.tenant_id())
            .filter(|r| !r.deleted)
            .ok_or(TenancyError::NotFound)?;
        Ok(row.llm.clone())
    }

    async fn put_llm(&self, ctx: &TenantCtx, llm: LlmConfig) -> Result<LlmConfig> {
        let mut db = self.write();
        let row = db
            .tenants
            .get_mut(&ctx.tenant_id())
            .filter(|r| !r.deleted)
            .ok_or(TenancyError::NotFound)?;
        row.llm = Some(llm.clone());
        Ok(llm)
    }
}
