//! Users, guest memberships, API keys, refresh tokens, platform admins and the claims
//! carried in access tokens.

use serde::{Deserialize, Serialize};
use trellis_kernel::{
    ApiKeyId, Email, HttpUrl, InvalidValue, MembershipId, PasswordHash, Permission,
    PlatformAdminId, RefreshTokenId, Role, SessionFamilyId, TenantId, Timestamp, UserId,
};
use trellis_tenancy::bounded_text;

/// A user's subscription tier inside their tenant (seed 002 `tier`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Tier {
    #[default]
    Free,
    Basic,
    Pro,
    Enterprise,
}

impl Tier {
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Tier::Free => "free",
            Tier::Basic => "basic",
            Tier::Pro => "pro",
            Tier::Enterprise => "enterprise",
        }
    }

    /// # Errors
    /// For an unknown tier name.
    pub fn parse(s: &str) -> Result<Self, InvalidValue> {
        [Tier::Free, Tier::Basic, Tier::Pro, Tier::Enterprise]
            .into_iter()
            .find(|t| t.as_str() == s)
            .ok_or_else(|| InvalidValue::new("tier", "must be free, basic, pro or enterprise"))
    }
}

/// A username: 2–64 letters, digits, `.`, `_` or `-`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Username(String);

impl Username {
    /// # Errors
    /// When the text breaks the rules above.
    pub fn parse(s: &str) -> Result<Self, InvalidValue> {
        let ok = (2..=64).contains(&s.len())
            && s.chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'));
        if ok {
            Ok(Self(s.to_owned()))
        } else {
            Err(InvalidValue::new(
                "username",
                "must be 2 to 64 letters, digits, '.', '_' or '-'",
            ))
        }
    }

    #[must_use]
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The text, without copying it.
    #[must_use]
    pub fn into_string(self) -> String {
        self.0
    }
}

/// A display name: 1–200 characters.
///
/// # Errors
/// When empty or too long.
pub fn parse_name(s: &str) -> Result<String, InvalidValue> {
    bounded_text("name", s, 200, false)
}

/// A link to an external identity provider (seed 002 `provider`, `provider_id`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OAuthLink {
    pub provider: String,
    pub subject: String,
}

impl OAuthLink {
    /// # Errors
    /// When the provider is not a short lower-case name or the subject is empty/long.
    pub fn new(provider: &str, subject: &str) -> Result<Self, InvalidValue> {
        if !(2..=32).contains(&provider.len())
            || !provider.chars().all(|c| c.is_ascii_lowercase() || c == '_')
        {
            return Err(InvalidValue::new(
                "oauth_provider",
                "must be a lower-case name like google or github",
            ));
        }
        let subject = bounded_text("oauth_subject", subject, 255, false)?;
        Ok(Self {
            provider: provider.to_owned(),
            subject,
        })
    }
}

/// UI preferences (seed 002 `preferences`); free-form but bounded.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Preferences {
    pub theme: Option<String>,
    pub language: Option<String>,
    pub font_size: Option<String>,
}

impl Preferences {
    /// # Errors
    /// When any value is longer than 32 characters.
    pub fn new(
        theme: Option<&str>,
        language: Option<&str>,
        font_size: Option<&str>,
    ) -> Result<Self, InvalidValue> {
        let f = |field, v: Option<&str>| v.map(|v| bounded_text(field, v, 32, false)).transpose();
        Ok(Self {
            theme: f("theme", theme)?,
            language: f("language", language)?,
            font_size: f("font_size", font_size)?,
        })
    }
}

/// A user of one tenant.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct User {
    pub id: UserId,
    pub tenant_id: TenantId,
    pub email: Email,
    pub email_verified: bool,
    pub name: String,
    pub username: Option<Username>,
    pub avatar_url: Option<HttpUrl>,
    pub role: Role,
    pub tier: Tier,
    pub oauth: Option<OAuthLink>,
    pub preferences: Preferences,
    pub active: bool,
    pub last_login_at: Option<Timestamp>,
    pub created_at: Timestamp,
    pub updated_at: Timestamp,
}

/// A user to insert.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewUser {
    pub id: UserId,
    pub email: Email,
    pub email_verified: bool,
    pub name: String,
    pub username: Option<Username>,
    pub avatar_url: Option<HttpUrl>,
    pub role: Role,
    pub tier: Tier,
    pub password_hash: Option<PasswordHash>,
    pub oauth: Option<OAuthLink>,
    pub preferences: Preferences,
}

/// A partial update; `None` leaves a field as it is.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct UserPatch {
    pub name: Option<String>,
    pub username: Option<Option<Username>>,
    pub avatar_url: Option<Option<HttpUrl>>,
    pub role: Option<Role>,
    pub tier: Option<Tier>,
    pub active: Option<bool>,
    pub preferences: Option<Preferences>,
    pub email_verified: Option<bool>,
}

/// Which users to list.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct UserFilter {
    pub role: Option<Role>,
    pub active: Option<bool>,
}

/// What login needs: the user and their password hash (absent for OAuth-only users).
#[derive(Debug, Clone)]
pub struct LoginRecord {
    pub user: User,
    pub password_hash: Option<PasswordHash>,
}

/// A user of another tenant admitted to this one as a guest (seed 000 `guest_companies`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Membership {
    pub id: MembershipId,
    pub tenant_id: TenantId,
    pub home_tenant_id: TenantId,
    pub user_id: UserId,
    pub email: Email,
    pub role: Role,
    pub created_at: Timestamp,
}

/// An API key as listed: its secret is never shown again after creation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiKey {
    pub id: ApiKeyId,
    pub name: String,
    /// The public part, shown in lists so users can tell keys apart.
    pub prefix: String,
    pub scopes: Vec<Permission>,
    pub created_by: UserId,
    pub expires_at: Option<Timestamp>,
    pub last_used_at: Option<Timestamp>,
    pub revoked_at: Option<Timestamp>,
    pub created_at: Timestamp,
}

/// An API key to insert, with the fingerprint of its secret.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewApiKey {
    pub id: ApiKeyId,
    pub name: String,
    pub prefix: String,
    pub secret_hash: String,
    pub scopes: Vec<Permission>,
    pub created_by: UserId,
    pub expires_at: Option<Timestamp>,
}

/// An API key with what authentication needs to check.
#[derive(Debug, Clone)]
pub struct ApiKeyRecord {
    pub key: ApiKey,
    pub secret_hash: String,
}

/// One refresh token. Tokens of one login form a family; using a token marks it used
/// and issues its successor, and presenting a used token again revokes the family.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RefreshToken {
    pub id: RefreshTokenId,
    pub family_id: SessionFamilyId,
    pub user_id: UserId,
    /// Set when the session is a guest's; the role then comes from the membership.
    pub membership_id: Option<MembershipId>,
    pub token_hash: String,
    pub expires_at: Timestamp,
    pub used_at: Option<Timestamp>,
    pub revoked_at: Option<Timestamp>,
    pub created_at: Timestamp,
}

/// A platform superadmin (belongs to no tenant).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlatformAdmin {
    pub id: PlatformAdminId,
    pub email: Email,
    pub name: String,
    pub active: bool,
    pub created_at: Timestamp,
}

/// A superadmin to insert.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewPlatformAdmin {
    pub id: PlatformAdminId,
    pub email: Email,
    pub name: String,
    pub password_hash: PasswordHash,
}

/// What a signed access token says. `tid` is absent for superadmins.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AccessClaims {
    /// User id, or platform admin id when `tid` is `None`.
    pub sub: uuid::Uuid,
    pub tid: Option<uuid::Uuid>,
    pub role: Role,
    /// True when the user is a guest in `tid`.
    #[serde(default)]
    pub guest: bool,
    pub iat: i64,
    pub exp: i64,
}

/// The tokens handed out by login and refresh.
#[derive(Debug, Clone)]
pub struct Session {
    pub access_token: String,
    pub expires_in_secs: i64,
    /// Absent for superadmin sessions, which are short and not refreshable.
    pub refresh_token: Option<String>,
    pub tenant_id: Option<TenantId>,
    pub role: Role,
}

/// Who a verified request acts as.
#[derive(Debug, Clone)]
pub enum Principal {
    Tenant(trellis_kernel::TenantCtx),
    Platform(trellis_kernel::PlatformCtx),
}

/// The answer of `/me`.
#[derive(Debug, Clone)]
pub struct Me {
    pub user: User,
    pub tenant_id: TenantId,
    pub role: Role,
    pub guest: bool,
    pub permissions: Vec<Permission>,
}
