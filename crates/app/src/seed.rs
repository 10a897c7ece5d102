//! Demo data: a platform superadmin and a `demo` tenant with an admin, so a new user
//! can log in straight away. Idempotent: running it again resets the demo admin's
//! password to the printed one instead of failing.

use crate::App;
use anyhow::Context;
use trellis_identity::IdentityError;
use trellis_kernel::{Email, Password, PlatformCtx, Slug, TenantCtx, secrets::random_token};
use trellis_tenancy::service::CreateTenant;
use trellis_tenancy::{Branding, Plan, TenancyError, TenantConfig};

/// The demo tenant's slug.
pub const DEMO_TENANT: &str = "demo";
/// The demo tenant admin's email.
pub const DEMO_ADMIN_EMAIL: &str = "admin@demo.example.com";
/// The platform superadmin's email.
pub const SUPERADMIN_EMAIL: &str = "root@trellis.example.com";

/// What seeding did, with the credentials to print.
#[derive(Debug, Clone)]
pub struct SeedReport {
    pub tenant_slug: String,
    pub admin_email: String,
    pub admin_password: String,
    pub superadmin_email: String,
    /// `None` when the superadmin already existed (its password is unchanged).
    pub superadmin_password: Option<String>,
}

impl std::fmt::Display for SeedReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(f, "demo tenant:  {}", self.tenant_slug)?;
        writeln!(
            f,
            "tenant admin: {} / {}",
            self.admin_email, self.admin_password
        )?;
        match &self.superadmin_password {
            Some(p) => writeln!(f, "superadmin:   {} / {}", self.superadmin_email, p),
            None => writeln!(
                f,
                "superadmin:   {} (already existed; password unchanged)",
                self.superadmin_email
            ),
        }
    }
}

/// Seeds the demo tenant and superadmin. `password` (else a random one) becomes the
/// demo admin's and, when newly created, the superadmin's password.
///
/// # Errors
/// On storage failures.
pub async fn seed_demo(app: &App, password: Option<String>) -> anyhow::Result<SeedReport> {
    let password_text = password.unwrap_or_else(|| random_token(12));
    let password = Password::parse(&password_text).context("TRELLIS_SEED_PASSWORD")?;
    let platform = PlatformCtx::system();
    let slug = Slug::parse(DEMO_TENANT)?;
    let admin_email = Email::parse(DEMO_ADMIN_EMAIL)?;

    let created = app
        .tenancy
        .create_tenant(
            &platform,
            CreateTenant {
                name: "Demo Company".into(),
                slug: slug.clone(),
                subdomain: None,
                custom_domain: None,
                plan: Plan::Pro,
                branding: Branding::default(),
                config: TenantConfig::default(),
                admin_email: admin_email.clone(),
                admin_name: "Demo Admin".into(),
                admin_password: password.clone(),
            },
        )
        .await;
    match created {
        Ok(_) => {}
        Err(TenancyError::Conflict(_)) => {
            let tenant = app
                .tenancy
                .repo()
                .resolve_slug(&platform, &slug)
                .await?
                .context("the demo slug is taken by a deleted tenant")?;
            let ctx = TenantCtx::system(tenant.id);
            let admin = app
                .identity
                .list_users(
                    &ctx,
                    &trellis_identity::UserFilter::default(),
                    trellis_kernel::PageRequest::default(),
                )
                .await?
                .items
                .into_iter()
                .find(|u| u.email == admin_email)
                .context("the demo tenant has no demo admin")?;
            app.identity
                .change_password(&ctx, admin.id, None, password.clone())
                .await?;
        }
        Err(e) => return Err(e.into()),
    }

    let superadmin_password = match app
        .identity
        .create_platform_admin(
            &platform,
            Email::parse(SUPERADMIN_EMAIL)?,
            "Platform Admin",
            &password,
        )
        .await
    {
        Ok(_) => Some(password_text.clone()),
        Err(IdentityError::Conflict(_)) => None,
        Err(e) => return Err(e.into()),
    };

    Ok(SeedReport {
        tenant_slug: DEMO_TENANT.into(),
        admin_email: DEMO_ADMIN_EMAIL.into(),
        admin_password: password_text,
        superadmin_email: SUPERADMIN_EMAIL.into(),
        superadmin_password,
    })
}
