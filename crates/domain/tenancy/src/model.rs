//! Tenants and their per-tenant configuration: branding, limits, the chat widget and
//! the LLM provider settings with an encrypted API key.

use serde::{Deserialize, Serialize};
use trellis_kernel::{
    Email, HexColor, HttpUrl, InvalidValue, PasswordHash, Slug, TenantId, Timestamp,
};

/// The commercial plan a tenant is on (seed 002 `plan`, seed 000 tiers).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum Plan {
    #[default]
    Free,
    Starter,
    Pro,
    Enterprise,
}

impl Plan {
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Plan::Free => "free",
            Plan::Starter => "starter",
            Plan::Pro => "pro",
            Plan::Enterprise => "enterprise",
        }
    }

    /// # Errors
    /// For a name that is not a plan.
    pub fn parse(s: &str) -> Result<Self, InvalidValue> {
        [Plan::Free, Plan::Starter, Plan::Pro, Plan::Enterprise]
            .into_iter()
            .find(|p| p.as_str() == s)
            .ok_or_else(|| InvalidValue::new("plan", "must be free, starter, pro or enterprise"))
    }
}

/// Whether a tenant may be used. Suspended tenants cannot log in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum TenantStatus {
    #[default]
    Active,
    Suspended,
}

impl TenantStatus {
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            TenantStatus::Active => "active",
            TenantStatus::Suspended => "suspended",
        }
    }

    /// # Errors
    /// For a name that is not a status.
    pub fn parse(s: &str) -> Result<Self, InvalidValue> {
        match s {
            "active" => Ok(TenantStatus::Active),
            "suspended" => Ok(TenantStatus::Suspended),
            _ => Err(InvalidValue::new("status", "must be active or suspended")),
        }
    }
}

/// An LLM vendor a tenant may be allowed to use.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum LlmProvider {
    Openai,
    AzureOpenai,
    Anthropic,
    Google,
    Mistral,
    Ollama,
    OpenaiCompatible,
}

impl LlmProvider {
    pub const ALL: [LlmProvider; 7] = [
        LlmProvider::Openai,
        LlmProvider::AzureOpenai,
        LlmProvider::Anthropic,
        LlmProvider::Google,
        LlmProvider::Mistral,
        LlmProvider::Ollama,
        LlmProvider::OpenaiCompatible,
    ];

    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            LlmProvider::Openai => "openai",
            LlmProvider::AzureOpenai => "azure_openai",
            LlmProvider::Anthropic => "anthropic",
            LlmProvider::Google => "google",
            LlmProvider::Mistral => "mistral",
            LlmProvider::Ollama => "ollama",
            LlmProvider::OpenaiCompatible => "openai_compatible",
        }
    }

    /// Whether a tenant names the endpoint: `openai_compatible` and `azure_openai`
    /// have no public one, and `ollama` runs wherever its owner put it.
    #[must_use]
    pub fn takes_base_url(self) -> bool {
        matches!(
            self,
            LlmProvider::OpenaiCompatible | LlmProvider::AzureOpenai | LlmProvider::Ollama
        )
    }

    /// # Errors
    /// For an unknown provider name.
    pub fn parse(s: &str) -> Result<Self, InvalidValue> {
        LlmProvider::ALL
            .into_iter()
            .find(|p| p.as_str() == s)
            .ok_or_else(|| InvalidValue::new("provider", format!("unknown LLM provider `{s}`")))
    }
}

/// A DNS host name such as `chat.example.com`, stored lower-case.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Hostname(String);

impl Hostname {
    /// # Errors
    /// When the text is not a multi-label DNS host name.
    pub fn parse(s: &str) -> Result<Self, InvalidValue> {
        let s = s.trim().to_lowercase();
        let labels: Vec<&str> = s.split('.').collect();
        let ok = s.len() <= 253
            && labels.len() >= 2
            && labels.iter().all(|l| {
                !l.is_empty()
                    && l.len() <= 63
                    && !l.starts_with('-')
                    && !l.ends_with('-')
                    && l.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
            });
        if ok {
            Ok(Self(s))
        } else {
            Err(InvalidValue::new(
                "custom_domain",
                "must be a DNS host name like chat.example.com",
            ))
        }
    }

    #[must_use]
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// Checks a short human-readable text: trimmed, non-empty unless `allow_empty`, at most
/// `max` characters, no control characters.
///
/// # Errors
/// When any of those rules fails; the error names `field`.
pub fn bounded_text(
    field: &'static str,
    s: &str,
    max: usize,
    allow_empty: bool,
) -> Result<String, InvalidValue> {
    let t = s.trim();
    if (!allow_empty && t.is_empty()) || t.chars().count() > max {
        return Err(InvalidValue::new(
            field,
            format!("must be 1 to {max} characters"),
        ));
    }
    if t.chars().any(|c| c.is_control() && c != '\n') {
        return Err(InvalidValue::new(
            field,
            "must not contain control characters",
        ));
    }
    Ok(t.to_owned())
}

/// White-label look of the tenant's apps (seed 002 `branding`).
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Branding {
    pub logo_url: Option<HttpUrl>,
    pub primary_color: Option<HexColor>,
    pub secondary_color: Option<HexColor>,
    pub font_family: Option<String>,
}

impl Branding {
    /// # Errors
    /// When the font family is empty or longer than 100 characters.
    pub fn new(
        logo_url: Option<HttpUrl>,
        primary_color: Option<HexColor>,
        secondary_color: Option<HexColor>,
        font_family: Option<&str>,
    ) -> Result<Self, InvalidValue> {
        let font_family = font_family
            .map(|f| bounded_text("font_family", f, 100, false))
            .transpose()?;
        Ok(Self {
            logo_url,
            primary_color,
            secondary_color,
            font_family,
        })
    }
}

/// Limits and AI defaults (seed 002 `config`, seed 000 `settings`).
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct TenantConfig {
    /// Empty means every provider is allowed.
    pub allowed_llm_providers: Vec<LlmProvider>,
    pub default_model: Option<String>,
    /// `None` means unlimited.
    pub max_users: Option<u32>,
}

impl TenantConfig {
    #[must_use]
    pub fn allows(&self, provider: LlmProvider) -> bool {
        self.allowed_llm_providers.is_empty() || self.allowed_llm_providers.contains(&provider)
    }
}

/// A tenant as its admins and the platform see it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tenant {
    pub id: TenantId,
    pub name: String,
    pub slug: Slug,
    pub subdomain: Slug,
    pub custom_domain: Option<Hostname>,
    pub branding: Branding,
    pub config: TenantConfig,
    pub plan: Plan,
    pub status: TenantStatus,
    pub billing_customer_id: Option<String>,
    pub created_at: Timestamp,
    pub updated_at: Timestamp,
}

/// The few facts login needs about a tenant, found by slug before anyone is signed in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TenantRef {
    pub id: TenantId,
    pub status: TenantStatus,
}

/// A tenant to create.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewTenant {
    pub id: TenantId,
    pub name: String,
    pub slug: Slug,
    pub subdomain: Slug,
    pub custom_domain: Option<Hostname>,
    pub branding: Branding,
    pub config: TenantConfig,
    pub plan: Plan,
}

/// The first administrator created together with a tenant, in the same transaction.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FirstAdmin {
    pub id: trellis_kernel::UserId,
    pub email: Email,
    pub name: String,
    pub password_hash: PasswordHash,
}

/// A partial update of a tenant's own settings; `None` leaves a field as it is.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct TenantPatch {
    pub name: Option<String>,
    pub custom_domain: Option<Option<Hostname>>,
    pub branding: Option<Branding>,
    pub config: Option<TenantConfig>,
}

/// A change to the plan-related config; `None` keeps a field as it is.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ConfigChange {
    pub allowed_llm_providers: Option<Vec<LlmProvider>>,
    pub default_model: Option<Option<String>>,
    pub max_users: Option<Option<u32>>,
}

impl ConfigChange {
    /// The config after this change.
    #[must_use]
    pub fn apply(&self, current: &TenantConfig) -> TenantConfig {
        TenantConfig {
            allowed_llm_providers: self
                .allowed_llm_providers
                .clone()
                .unwrap_or_else(|| current.allowed_llm_providers.clone()),
            default_model: self
                .default_model
                .clone()
                .unwrap_or_else(|| current.default_model.clone()),
            max_users: self.max_users.unwrap_or(current.max_users),
        }
    }
}

/// What a tenant admin asks to change about their own tenant; `None` keeps a field.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct SettingsChange {
    pub name: Option<String>,
    pub custom_domain: Option<Option<Hostname>>,
    pub branding: Option<Branding>,
    pub config: Option<ConfigChange>,
}

/// Where the chat widget sits on the page.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum WidgetPosition {
    #[default]
    BottomRight,
    BottomLeft,
}

impl WidgetPosition {
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            WidgetPosition::BottomRight => "bottom_right",
            WidgetPosition::BottomLeft => "bottom_left",
        }
    }

    /// # Errors
    /// For anything but `bottom_right` / `bottom_left`.
    pub fn parse(s: &str) -> Result<Self, InvalidValue> {
        match s {
            "bottom_right" | "bottom-right" => Ok(WidgetPosition::BottomRight),
            "bottom_left" | "bottom-left" => Ok(WidgetPosition::BottomLeft),
            _ => Err(InvalidValue::new(
                "position",
                "must be bottom_right or bottom_left",
            )),
        }
    }
}

/// The embeddable chat widget's configuration (seed 004 `tenant_widget_configs`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WidgetConfig {
    pub primary_color: HexColor,
    pub welcome_message: String,
    pub position: WidgetPosition,
    pub enabled: bool,
    /// Origins (`https://shop.example.com`) allowed to embed the widget.
    pub allowed_origins: Vec<String>,
}

/// The most origins a widget may list.
pub const MAX_WIDGET_ORIGINS: usize = 50;

impl WidgetConfig {
    /// # Errors
    /// When the welcome message is over 1000 characters, or an origin is not an http(s)
    /// URL, or there are more than [`MAX_WIDGET_ORIGINS`].
    pub fn new(
        primary_color: HexColor,
        welcome_message: &str,
        position: WidgetPosition,
        enabled: bool,
        allowed_origins: &[String],
    ) -> Result<Self, InvalidValue> {
        let welcome_message = bounded_text("welcome_message", welcome_message, 1000, true)?;
        if allowed_origins.len() > MAX_WIDGET_ORIGINS {
            return Err(InvalidValue::new(
                "allowed_origins",
                format!("at most {MAX_WIDGET_ORIGINS} origins"),
            ));
        }
        let allowed_origins = allowed_origins
            .iter()
            .map(|o| {
                HttpUrl::parse(o)
                    .map(|u| u.origin())
                    .map_err(|e| InvalidValue::new("allowed_origins", e.reason))
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Self {
            primary_color,
            welcome_message,
            position,
            enabled,
            allowed_origins,
        })
    }
}

impl Default for WidgetConfig {
    fn default() -> Self {
        Self {
            primary_color: HexColor::parse("#2563eb").unwrap_or_else(|_| unreachable_color()),
            welcome_message: "Hi! How can we help?".to_owned(),
            position: WidgetPosition::BottomRight,
            enabled: false,
            allowed_origins: Vec::new(),
        }
    }
}

#[allow(clippy::panic)]
fn unreachable_color() -> HexColor {
    // The literal above is a valid colour; this exists only to avoid `unwrap`.
    panic!("built-in default colour is invalid")
}

/// An encrypted secret: AES-256-GCM output (nonce then ciphertext) and the id of the
/// key that sealed it, so keys can be rotated while old ciphertexts still open.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SealedSecret {
    pub key_id: String,
    pub ciphertext: Vec<u8>,
}

/// The tenant's LLM settings (seed 004 `tenant_llm_configs`, seed 000 `llm_providers`).
/// The API key is only ever shown as `api_key_hint` (e.g. `sk-…a1b2`).
#[derive(Debug, Clone, PartialEq)]
pub struct LlmConfig {
    pub provider: LlmProvider,
    pub model: String,
    pub temperature: f32,
    pub max_tokens: u32,
    pub api_key: Option<SealedSecret>,
    pub api_key_hint: Option<String>,
    /// The tenant's own endpoint for a provider that [takes one](LlmProvider::takes_base_url);
    /// `None`: the server's (`TRELLIS_LLM_BASE_URL`).
    pub base_url: Option<HttpUrl>,
    pub updated_at: Timestamp,
}

/// What to do with the stored API key when the LLM config is written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ApiKeyChange {
    Keep,
    Clear,
    Set(String),
}

/// A request to write the LLM config.
#[derive(Debug, Clone, PartialEq)]
pub struct LlmConfigInput {
    pub provider: LlmProvider,
    pub model: String,
    pub temperature: f32,
    pub max_tokens: u32,
    pub api_key: ApiKeyChange,
    /// Checked against the operator's [`LlmEndpointPolicy`](crate::LlmEndpointPolicy)
    /// by the service.
    pub base_url: Option<HttpUrl>,
}

impl LlmConfigInput {
    /// # Errors
    /// When the model name is empty or too long, the temperature is outside 0–2, max
    /// tokens is outside 1–1,000,000, or a new API key is empty or over 512 characters.
    pub fn validate(&self) -> Result<(), InvalidValue> {
        bounded_text("model", &self.model, 200, false)?;
        if !(0.0..=2.0).contains(&self.temperature) || self.temperature.is_nan() {
            return Err(InvalidValue::new("temperature", "must be between 0 and 2"));
        }
        if !(1..=1_000_000).contains(&self.max_tokens) {
            return Err(InvalidValue::new(
                "max_tokens",
                "must be between 1 and 1000000",
            ));
        }
        if let ApiKeyChange::Set(k) = &self.api_key
            && (k.trim().is_empty() || k.chars().count() > 512)
        {
            return Err(InvalidValue::new("api_key", "must be 1 to 512 characters"));
        }
        Ok(())
    }
}

/// The masked form of an API key: its first three and last four characters.
#[must_use]
pub fn mask_api_key(key: &str) -> String {
    let chars: Vec<char> = key.chars().collect();
    if chars.len() <= 8 {
        return "…".to_owned();
    }
    let head: String = chars[..3].iter().collect();
    let tail: String = chars[chars.len() - 4..].iter().collect();
    format!("{head}…{tail}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_masked_key_shows_only_its_ends() {
        assert_eq!(mask_api_key("sk-abcdefghijklmnop1234"), "sk-…1234");
        assert_eq!(mask_api_key("short"), "…");
    }

    #[test]
    fn widget_origins_are_reduced_to_their_origin() {
        let w = WidgetConfig::new(
            HexColor::parse("#fff").unwrap(),
            "hi",
            WidgetPosition::BottomLeft,
            true,
            &["https://shop.example.com/path?q=1".to_owned()],
        )
        .unwrap();
        assert_eq!(w.allowed_origins, vec!["https://shop.example.com"]);
    }

    #[test]
    fn an_out_of_range_temperature_is_refused() {
        let input = LlmConfigInput {
            provider: LlmProvider::Openai,
            model: "gpt-4o".into(),
            temperature: 3.0,
            max_tokens: 100,
            api_key: ApiKeyChange::Keep,
            base_url: None,
        };
        assert_eq!(input.validate().unwrap_err().field, "temperature");
    }

    #[test]
    fn the_default_widget_is_valid_and_disabled() {
        let w = WidgetConfig::default();
        assert!(!w.enabled);
    }
}
