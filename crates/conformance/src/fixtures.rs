//! Builders for the conformance cases: unique tenants with a first admin, users,
//! tokens; and walking a listing page by page.

use crate::Ports;
use trellis_identity::{NewUser, Preferences, RefreshToken, Tier, User};
use trellis_kernel::{
    Email, MembershipId, Page, PageRequest, PasswordHash, PlatformCtx, RefreshTokenId, Role,
    SessionFamilyId, Slug, TenantCtx, TenantId, UserId,
};
use trellis_tenancy::{Branding, FirstAdmin, NewTenant, Plan, Tenant, TenantConfig};

/// A slug no other test uses.
pub fn unique_slug(prefix: &str) -> Slug {
    let id = uuid::Uuid::now_v7().simple().to_string();
    Slug::parse(&format!("{prefix}-{}", &id[id.len() - 12..])).unwrap()
}

pub fn email(s: &str) -> Email {
    Email::parse(s).unwrap()
}

pub fn new_tenant(slug: &Slug) -> NewTenant {
    NewTenant {
        id: TenantId::new(),
        name: format!("Tenant {slug}"),
        slug: slug.clone(),
        subdomain: slug.clone(),
        custom_domain: None,
        branding: Branding::default(),
        config: TenantConfig::default(),
        plan: Plan::Free,
    }
}

pub fn first_admin() -> FirstAdmin {
    FirstAdmin {
        id: UserId::new(),
        email: email("admin@example.com"),
        name: "First Admin".into(),
        password_hash: PasswordHash::from_phc("$argon2id$fake"),
    }
}

/// A fresh tenant; returns it, a system context in it and the first admin's id.
pub async fn tenant(ports: &Ports) -> (Tenant, TenantCtx, UserId) {
    let slug = unique_slug("t");
    let admin = first_admin();
    let admin_id = admin.id;
    let t = ports
        .tenants
        .create(&PlatformCtx::system(), new_tenant(&slug), admin)
        .await
        .unwrap();
    let ctx = TenantCtx::system(t.id);
    (t, ctx, admin_id)
}

pub fn new_user(email_addr: &str, role: Role) -> NewUser {
    NewUser {
        id: UserId::new(),
        email: email(email_addr),
        email_verified: false,
        name: "Some One".into(),
        username: None,
        avatar_url: None,
        role,
        tier: Tier::Free,
        password_hash: Some(PasswordHash::from_phc(
            "$argon2id$hash-of-".to_owned() + email_addr,
        )),
        oauth: None,
        preferences: Preferences::default(),
    }
}

pub async fn user(ports: &Ports, ctx: &TenantCtx, email_addr: &str, role: Role) -> User {
    ports
        .users
        .insert(ctx, new_user(email_addr, role))
        .await
        .unwrap()
}

pub fn refresh_token(
    user: UserId,
    family: SessionFamilyId,
    membership: Option<MembershipId>,
) -> RefreshToken {
    let now = chrono::Utc::now();
    RefreshToken {
        id: RefreshTokenId::new(),
        family_id: family,
        user_id: user,
        membership_id: membership,
        token_hash: uuid::Uuid::now_v7().simple().to_string(),
        expires_at: now + chrono::Duration::days(1),
        used_at: None,
        revoked_at: None,
        created_at: now,
    }
}

/// Every page of a listing, first to last, asking for `size` items at a time and
/// following each page's cursor.
pub async fn every_page<T>(
    size: u32,
    mut list: impl AsyncFnMut(PageRequest) -> Page<T>,
) -> Vec<Page<T>> {
    let mut pages = Vec::new();
    let mut page = PageRequest::new(Some(size), None).unwrap();
    loop {
        let got = list(page).await;
        let next = got.next_cursor.clone();
        pages.push(got);
        match next {
            Some(cursor) => page = PageRequest::new(Some(size), Some(&cursor)).unwrap(),
            None => return pages,
        }
    }
}
