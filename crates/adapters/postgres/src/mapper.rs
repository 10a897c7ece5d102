//! Rows to domain models. Every stored string is re-validated through the domain's
//! own parsers, so a malformed row (a bug or a manual edit) surfaces as an
//! `Unexpected` error naming the table, row and field, never as a panic or as an
//! invalid value inside the domain.

use crate::entity::{
    api_key, membership, platform_admin, refresh_token, tenant, tenant_llm_config,
    tenant_widget_config, user,
};
use crate::error::bad_row;
use anyhow::Context as _;
use trellis_identity::{
    ApiKey, ApiKeyRecord, LoginRecord, Membership, OAuthLink, PlatformAdmin, Preferences,
    RefreshToken, Tier, User, Username,
};
use trellis_kernel::{
    ApiKeyId, Email, HexColor, HttpUrl, MembershipId, PasswordHash, PlatformAdminId,
    RefreshTokenId, Role, SessionFamilyId, Slug, TenantId, UserId,
};
use trellis_tenancy::{
    Hostname, LlmConfig, LlmProvider, Plan, SealedSecret, Tenant, TenantStatus, WidgetConfig,
    WidgetPosition,
};

pub(crate) fn tenant(row: tenant::Model) -> anyhow::Result<Tenant> {
    let bad = |field| bad_row("tenants", row.id, field);
    Ok(Tenant {
        id: TenantId::from_uuid(row.id),
        slug: Slug::parse(&row.slug).with_context(|| bad("slug"))?,
        subdomain: Slug::parse_field("subdomain", &row.subdomain)
            .with_context(|| bad("subdomain"))?,
        custom_domain: row
            .custom_domain
            .as_deref()
            .map(Hostname::parse)
            .transpose()
            .with_context(|| bad("custom_domain"))?,
        branding: serde_json::from_value(row.branding.clone()).with_context(|| bad("branding"))?,
        config: serde_json::from_value(row.config.clone()).with_context(|| bad("config"))?,
        plan: Plan::parse(&row.plan).with_context(|| bad("plan"))?,
        status: TenantStatus::parse(&row.status).with_context(|| bad("status"))?,
        name: row.name,
        billing_customer_id: row.billing_customer_id,
        created_at: row.created_at,
        updated_at: row.updated_at,
    })
}

pub(crate) fn widget(row: tenant_widget_config::Model) -> anyhow::Result<WidgetConfig> {
    let bad = |field| bad_row("tenant_widget_configs", row.tenant_id, field);
    Ok(WidgetConfig {
        primary_color: HexColor::parse(&row.primary_color).with_context(|| bad("primary_color"))?,
        position: WidgetPosition::parse(&row.position).with_context(|| bad("position"))?,
        allowed_origins: serde_json::from_value(row.allowed_origins.clone())
            .with_context(|| bad("allowed_origins"))?,
        welcome_message: row.welcome_message,
        enabled: row.enabled,
    })
}

pub(crate) fn llm(row: tenant_llm_config::Model) -> anyhow::Result<LlmConfig> {
    let bad = |field| bad_row("tenant_llm_configs", row.tenant_id, field);
    let api_key = match (row.api_key_key_id, row.api_key_ciphertext) {
        (Some(key_id), Some(ciphertext)) => Some(SealedSecret { key_id, ciphertext }),
        (None, None) => None,
        _ => anyhow::bail!(bad("api_key (key id and ciphertext must come together)")),
    };
    Ok(LlmConfig {
        provider: LlmProvider::parse(&row.provider).with_context(|| bad("provider"))?,
        max_tokens: u32::try_from(row.max_tokens).with_context(|| bad("max_tokens"))?,
        model: row.model,
        temperature: row.temperature,
        api_key,
        api_key_hint: row.api_key_hint,
        base_url: row
            .base_url
            .as_deref()
            .map(HttpUrl::parse)
            .transpose()
            .with_context(|| bad("base_url"))?,
        updated_at: row.updated_at,
    })
}

pub(crate) fn user(mut row: user::Model) -> anyhow::Result<User> {
    let preferences = serde_json::from_value(row.preferences.take())
        .with_context(|| bad_row("users", row.id, "preferences"))?;
    user_with(row, preferences)
}

/// A user from `row` and its preferences, decoded apart from the row (the reads decode
/// them from the column's JSON text straight into their type, without a JSON tree in
/// between); `row.preferences` is not read.
pub(crate) fn user_with(row: user::Model, preferences: Preferences) -> anyhow::Result<User> {
    let bad = |field| bad_row("users", row.id, field);
    let oauth = match (row.oauth_provider, row.oauth_subject) {
        (Some(provider), Some(subject)) => Some(OAuthLink { provider, subject }),
        (None, None) => None,
        _ => anyhow::bail!(bad("oauth link (provider and subject must come together)")),
    };
    Ok(User {
        id: UserId::from_uuid(row.id),
        tenant_id: TenantId::from_uuid(row.tenant_id),
        email: Email::parse_owned(row.email).with_context(|| bad("email"))?,
        username: row
            .username
            .as_deref()
            .map(Username::parse)
            .transpose()
            .with_context(|| bad("username"))?,
        avatar_url: row
            .avatar_url
            .as_deref()
            .map(HttpUrl::parse)
            .transpose()
            .with_context(|| bad("avatar_url"))?,
        role: row.role.parse::<Role>().with_context(|| bad("role"))?,
        tier: Tier::parse(&row.tier).with_context(|| bad("tier"))?,
        preferences,
        oauth,
        email_verified: row.email_verified,
        name: row.name,
        active: row.active,
        last_login_at: row.last_login_at,
        created_at: row.created_at,
        updated_at: row.updated_at,
    })
}

pub(crate) fn login_record(mut row: user::Model) -> anyhow::Result<LoginRecord> {
    let password_hash = row.password_hash.take().map(PasswordHash::from_phc);
    Ok(LoginRecord {
        user: user(row)?,
        password_hash,
    })
}

pub(crate) fn membership(row: membership::Model) -> anyhow::Result<Membership> {
    let bad = |field| bad_row("memberships", row.id, field);
    Ok(Membership {
        id: MembershipId::from_uuid(row.id),
        tenant_id: TenantId::from_uuid(row.tenant_id),
        home_tenant_id: TenantId::from_uuid(row.home_tenant_id),
        user_id: UserId::from_uuid(row.user_id),
        email: Email::parse(&row.email).with_context(|| bad("email"))?,
        role: row.role.parse::<Role>().with_context(|| bad("role"))?,
        created_at: row.created_at,
    })
}

pub(crate) fn api_key(row: api_key::Model) -> anyhow::Result<ApiKey> {
    let bad = |field| bad_row("api_keys", row.id, field);
    Ok(ApiKey {
        id: ApiKeyId::from_uuid(row.id),
        scopes: serde_json::from_value(row.scopes).with_context(|| bad("scopes"))?,
        created_by: UserId::from_uuid(row.created_by),
        name: row.name,
        prefix: row.prefix,
        expires_at: row.expires_at,
        last_used_at: row.last_used_at,
        revoked_at: row.revoked_at,
        created_at: row.created_at,
    })
}

pub(crate) fn api_key_record(mut row: api_key::Model) -> anyhow::Result<ApiKeyRecord> {
    let secret_hash = std::mem::take(&mut row.secret_hash);
    Ok(ApiKeyRecord {
        key: api_key(row)?,
        secret_hash,
    })
}

pub(crate) fn refresh_token(row: refresh_token::Model) -> RefreshToken {
    RefreshToken {
        id: RefreshTokenId::from_uuid(row.id),
        family_id: SessionFamilyId::from_uuid(row.family_id),
        user_id: UserId::from_uuid(row.user_id),
        membership_id: row.membership_id.map(MembershipId::from_uuid),
        token_hash: row.token_hash,
        expires_at: row.expires_at,
        used_at: row.used_at,
        revoked_at: row.revoked_at,
        created_at: row.created_at,
    }
}

pub(crate) fn platform_admin(
    row: platform_admin::Model,
) -> anyhow::Result<(PlatformAdmin, PasswordHash)> {
    let email =
        Email::parse(&row.email).with_context(|| bad_row("platform_admins", row.id, "email"))?;
    Ok((
        PlatformAdmin {
            id: PlatformAdminId::from_uuid(row.id),
            email,
            name: row.name,
            active: row.active,
            created_at: row.created_at,
        },
        PasswordHash::from_phc(row.password_hash),
    ))
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    fn user_row() -> user::Model {
        let now = chrono::Utc::now();
        user::Model {
            tenant_id: uuid::Uuid::now_v7(),
            id: uuid::Uuid::now_v7(),
            email: "ann@example.com".into(),
            email_verified: false,
            password_hash: Some("$argon2id$x".into()),
            name: "Ann".into(),
            username: None,
            avatar_url: None,
            role: "sales".into(),
            tier: "free".into(),
            oauth_provider: None,
            oauth_subject: None,
            preferences: serde_json::json!({}),
            active: true,
            last_login_at: None,
            created_at: now,
            updated_at: now,
            deleted_at: None,
        }
    }

    #[test]
    fn a_valid_row_maps_to_a_user() {
        let rec = login_record(user_row()).unwrap();
        assert_eq!(rec.user.role, Role::Sales);
        assert_eq!(rec.password_hash.unwrap().as_str(), "$argon2id$x");
    }

    #[test]
    fn a_corrupt_row_is_an_error_that_names_the_field_not_a_panic() {
        let row = user::Model {
            role: "emperor".into(),
            ..user_row()
        };
        let id = row.id;
        let err = user(row).unwrap_err();
        assert_eq!(
            err.to_string(),
            format!("users row {id} has an invalid role")
        );
    }

    #[test]
    fn half_an_oauth_link_is_refused() {
        let row = user::Model {
            oauth_provider: Some("google".into()),
            ..user_row()
        };
        assert!(user(row).is_err());
    }
}
