//! `/v1/tenant`: the caller's own tenant — settings (name, custom domain, branding,
//! limits), the chat widget and the LLM configuration, whose API key is write-only.

use crate::auth::TenantAuth;
use crate::extract::Json;
use crate::problem::{ApiError, Problem};
use crate::state::AppState;
use crate::validate::{Fields, double_option};
use axum::Router;
use axum::extract::State;
use axum::routing::get;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use std::sync::Arc;
use trellis_kernel::{HexColor, HttpUrl};
use trellis_tenancy::{
    ApiKeyChange, Branding, ConfigChange, Hostname, LlmConfig, LlmConfigInput, LlmProvider, Plan,
    SettingsChange, TenancyService, Tenant, TenantConfig, TenantStatus, WidgetConfig,
    WidgetPosition, bounded_text,
};
use utoipa::ToSchema;
use uuid::Uuid;

/// The routes of this module.
pub fn router() -> Router<AppState> {
    Router::new()
        .route("/v1/tenant", get(get_settings).patch(update_settings))
        .route("/v1/tenant/widget", get(get_widget).put(put_widget))
        .route("/v1/tenant/llm", get(get_llm).put(put_llm))
}

// ----- shared tenant shapes (also used by the platform routes) -----------------------

/// White-label look of the tenant's apps.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct BrandingResponse {
    pub logo_url: Option<String>,
    pub primary_color: Option<String>,
    pub secondary_color: Option<String>,
    #[schema(max_length = 100)]
    pub font_family: Option<String>,
}

impl From<Branding> for BrandingResponse {
    fn from(b: Branding) -> Self {
        Self {
            logo_url: b.logo_url.map(|u| u.as_str().to_owned()),
            primary_color: b.primary_color.map(|c| c.as_str().to_owned()),
            secondary_color: b.secondary_color.map(|c| c.as_str().to_owned()),
            font_family: b.font_family,
        }
    }
}

/// Limits and AI defaults.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct TenantConfigResponse {
    /// Empty means every provider is allowed.
    pub allowed_llm_providers: Vec<String>,
    pub default_model: Option<String>,
    /// `null` means unlimited.
    pub max_users: Option<u32>,
}

impl From<TenantConfig> for TenantConfigResponse {
    fn from(c: TenantConfig) -> Self {
        Self {
            allowed_llm_providers: c
                .allowed_llm_providers
                .iter()
                .map(|p| p.as_str().to_owned())
                .collect(),
            default_model: c.default_model,
            max_users: c.max_users,
        }
    }
}

/// A tenant.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct TenantResponse {
    pub id: Uuid,
    pub name: String,
    pub slug: String,
    pub subdomain: String,
    pub custom_domain: Option<String>,
    pub branding: BrandingResponse,
    pub config: TenantConfigResponse,
    /// `free`, `starter`, `pro` or `enterprise`.
    #[schema(value_type = Plan)]
    pub plan: String,
    /// `active` or `suspended`.
    #[schema(value_type = TenantStatus)]
    pub status: String,
    #[serde(serialize_with = "trellis_kernel::timestamp::rfc3339")]
    pub created_at: DateTime<Utc>,
    #[serde(serialize_with = "trellis_kernel::timestamp::rfc3339")]
    pub updated_at: DateTime<Utc>,
}

impl From<Tenant> for TenantResponse {
    fn from(t: Tenant) -> Self {
        Self {
            id: t.id.as_uuid(),
            name: t.name,
            slug: t.slug.as_str().to_owned(),
            subdomain: t.subdomain.as_str().to_owned(),
            custom_domain: t.custom_domain.map(|d| d.as_str().to_owned()),
            branding: t.branding.into(),
            config: t.config.into(),
            plan: t.plan.as_str().to_owned(),
            status: t.status.as_str().to_owned(),
            created_at: t.created_at,
            updated_at: t.updated_at,
        }
    }
}

/// Branding to set; replaces the whole branding.
#[derive(Debug, Clone, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct BrandingBody {
    /// An absolute http(s) URL.
    #[schema(
        format = "uri",
        max_length = 2048,
        pattern = "^[Hh][Tt][Tt][Pp][Ss]?://[^/?#]"
    )]
    pub logo_url: Option<String>,
    /// `#rgb` or `#rrggbb`.
    #[schema(example = "#2563eb", pattern = "^#([0-9a-fA-F]{3}|[0-9a-fA-F]{6})$")]
    pub primary_color: Option<String>,
    #[schema(pattern = "^#([0-9a-fA-F]{3}|[0-9a-fA-F]{6})$")]
    pub secondary_color: Option<String>,
    pub font_family: Option<String>,
}

impl BrandingBody {
    /// Converts, recording errors under `prefix.field`.
    pub(crate) fn convert(&self, f: &mut Fields, prefix: &str) -> Option<Branding> {
        let logo = f.check_opt(
            &format!("{prefix}.logo_url"),
            self.logo_url.as_deref(),
            HttpUrl::parse,
        );
        let primary = f.check_opt(
            &format!("{prefix}.primary_color"),
            self.primary_color.as_deref(),
            HexColor::parse,
        );
        let secondary = f.check_opt(
            &format!("{prefix}.secondary_color"),
            self.secondary_color.as_deref(),
            HexColor::parse,
        );
        let (logo, primary, secondary) = (logo?, primary?, secondary?);
        f.check_as(
            &format!("{prefix}.font_family"),
            Branding::new(logo, primary, secondary, self.font_family.as_deref()),
        )
    }
}

/// Limits and AI defaults to set; replaces the whole config.
#[derive(Debug, Clone, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TenantConfigBody {
    /// Provider names (`openai`, `anthropic`, ...); empty allows all.
    #[serde(default)]
    #[schema(value_type = Vec<LlmProvider>)]
    pub allowed_llm_providers: Vec<String>,
    pub default_model: Option<String>,
    /// Absent or `null` means unlimited.
    pub max_users: Option<u32>,
}

impl TenantConfigBody {
    /// Converts, recording errors under `prefix.field`.
    pub(crate) fn convert(&self, f: &mut Fields, prefix: &str) -> Option<TenantConfig> {
        let mut providers = Vec::with_capacity(self.allowed_llm_providers.len());
        let mut ok = true;
        for p in &self.allowed_llm_providers {
            match f.check_as(
                &format!("{prefix}.allowed_llm_providers"),
                LlmProvider::parse(p),
            ) {
                Some(p) if !providers.contains(&p) => providers.push(p),
                Some(_) => {}
                None => ok = false,
            }
        }
        let model = f.check_opt(
            &format!("{prefix}.default_model"),
            self.default_model.as_deref(),
            |m| bounded_text("default_model", m, 200, false),
        );
        if self.max_users == Some(0) {
            f.push(&format!("{prefix}.max_users"), "must be at least 1");
            ok = false;
        }
        let model = model?;
        ok.then_some(TenantConfig {
            allowed_llm_providers: providers,
            default_model: model,
            max_users: self.max_users,
        })
    }
}

/// A partial change of the config: absent fields keep their value, `null` clears
/// `default_model` or makes `max_users` unlimited.
#[derive(Debug, Clone, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ConfigChangeBody {
    #[schema(value_type = Option<Vec<LlmProvider>>)]
    pub allowed_llm_providers: Option<Vec<String>>,
    #[serde(default, deserialize_with = "double_option")]
    #[schema(value_type = Option<String>)]
    pub default_model: Option<Option<String>>,
    #[serde(default, deserialize_with = "double_option")]
    #[schema(value_type = Option<u32>)]
    pub max_users: Option<Option<u32>>,
}

impl ConfigChangeBody {
    /// Converts, recording errors under `prefix.field`.
    pub(crate) fn convert(&self, f: &mut Fields, prefix: &str) -> Option<ConfigChange> {
        let mut ok = true;
        let providers = self.allowed_llm_providers.as_ref().map(|list| {
            let mut providers = Vec::with_capacity(list.len());
            for p in list {
                match f.check_as(
                    &format!("{prefix}.allowed_llm_providers"),
                    LlmProvider::parse(p),
                ) {
                    Some(p) if !providers.contains(&p) => providers.push(p),
                    Some(_) => {}
                    None => ok = false,
                }
            }
            providers
        });
        let default_model = match &self.default_model {
            None => Some(None),
            Some(None) => Some(Some(None)),
            Some(Some(m)) => f
                .check_as(
                    &format!("{prefix}.default_model"),
                    bounded_text("default_model", m, 200, false),
                )
                .map(|m| Some(Some(m))),
        };
        if self.max_users == Some(Some(0)) {
            f.push(&format!("{prefix}.max_users"), "must be at least 1");
            ok = false;
        }
        let default_model = default_model?;
        ok.then_some(ConfigChange {
            allowed_llm_providers: providers,
            default_model,
            max_users: self.max_users,
        })
    }
}

// ----- own settings --------------------------------------------------------------------

/// A partial update of the tenant's settings. `custom_domain: null` removes it.
#[derive(Debug, Clone, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UpdateTenantBody {
    pub name: Option<String>,
    #[serde(default, deserialize_with = "double_option")]
    #[schema(value_type = Option<String>, example = "chat.example.com")]
    pub custom_domain: Option<Option<String>>,
    pub branding: Option<BrandingBody>,
    /// Only `default_model` may change here; the user limit and allowed providers
    /// are the platform's to set (`PATCH /v1/tenants/{id}`), so changing them is 403.
    pub config: Option<ConfigChangeBody>,
}

impl UpdateTenantBody {
    /// # Errors
    /// A 422 naming every invalid field.
    pub fn try_into_domain(self) -> Result<SettingsChange, ApiError> {
        let mut f = Fields::new();
        let name = f.check_opt("name", self.name.as_deref(), |n| {
            bounded_text("name", n, 200, false)
        });
        let custom_domain = match &self.custom_domain {
            None => Some(None),
            Some(None) => Some(Some(None)),
            Some(Some(d)) => f.check(Hostname::parse(d)).map(|d| Some(Some(d))),
        };
        let branding = match &self.branding {
            None => Some(None),
            Some(b) => b.convert(&mut f, "branding").map(Some),
        };
        let config = match &self.config {
            None => Some(None),
            Some(c) => c.convert(&mut f, "config").map(Some),
        };
        f.finish(|| {
            Some(SettingsChange {
                name: name?,
                custom_domain: custom_domain?,
                branding: branding?,
                config: config?,
            })
        })
    }
}

/// The caller's tenant.
#[utoipa::path(
    get, path = "/v1/tenant", tag = "tenant",
    responses(
        (status = 200, body = TenantResponse),
        (status = 401, body = Problem, content_type = "application/problem+json"),
        (status = 403, body = Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = []), ("api_key" = []))
)]
pub async fn get_settings(
    State(tenancy): State<Arc<TenancyService>>,
    TenantAuth(ctx): TenantAuth,
) -> Result<Json<TenantResponse>, ApiError> {
    Ok(Json(tenancy.settings(&ctx).await?.into()))
}

/// Change the caller's tenant settings.
#[utoipa::path(
    patch, path = "/v1/tenant", tag = "tenant",
    request_body = UpdateTenantBody,
    responses(
        (status = 200, body = TenantResponse),
        (status = 403, body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "Custom domain taken", body = Problem, content_type = "application/problem+json"),
        (status = 422, body = Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = []), ("api_key" = []))
)]
pub async fn update_settings(
    State(tenancy): State<Arc<TenancyService>>,
    TenantAuth(ctx): TenantAuth,
    Json(body): Json<UpdateTenantBody>,
) -> Result<Json<TenantResponse>, ApiError> {
    let patch = body.try_into_domain()?;
    Ok(Json(tenancy.update_settings(&ctx, patch).await?.into()))
}

// ----- widget --------------------------------------------------------------------------

/// The embeddable chat widget.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct WidgetResponse {
    pub primary_color: String,
    pub welcome_message: String,
    /// `bottom_right` or `bottom_left`.
    pub position: String,
    pub enabled: bool,
    /// Origins allowed to embed the widget.
    pub allowed_origins: Vec<String>,
}

impl From<WidgetConfig> for WidgetResponse {
    fn from(w: WidgetConfig) -> Self {
        Self {
            primary_color: w.primary_color.as_str().to_owned(),
            welcome_message: w.welcome_message,
            position: w.position.as_str().to_owned(),
            enabled: w.enabled,
            allowed_origins: w.allowed_origins,
        }
    }
}

/// The whole widget configuration.
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct WidgetBody {
    #[schema(example = "#2563eb")]
    pub primary_color: String,
    pub welcome_message: String,
    #[schema(example = "bottom_right")]
    pub position: String,
    pub enabled: bool,
    #[serde(default)]
    pub allowed_origins: Vec<String>,
}

impl WidgetBody {
    /// # Errors
    /// A 422 naming every invalid field.
    pub fn try_into_domain(self) -> Result<WidgetConfig, ApiError> {
        let mut f = Fields::new();
        let color = f.check_as("primary_color", HexColor::parse(&self.primary_color));
        let position = f.check(WidgetPosition::parse(&self.position));
        let widget = match (color, position) {
            (Some(c), Some(p)) => f.check(WidgetConfig::new(
                c,
                &self.welcome_message,
                p,
                self.enabled,
                &self.allowed_origins,
            )),
            _ => None,
        };
        f.finish(|| widget)
    }
}

/// The widget configuration (defaults if never written).
#[utoipa::path(
    get, path = "/v1/tenant/widget", tag = "tenant",
    responses(
        (status = 200, body = WidgetResponse),
        (status = 403, body = Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = []), ("api_key" = []))
)]
pub async fn get_widget(
    State(tenancy): State<Arc<TenancyService>>,
    TenantAuth(ctx): TenantAuth,
) -> Result<Json<WidgetResponse>, ApiError> {
    Ok(Json(tenancy.widget(&ctx).await?.into()))
}

/// Replace the widget configuration.
#[utoipa::path(
    put, path = "/v1/tenant/widget", tag = "tenant",
    request_body = WidgetBody,
    responses(
        (status = 200, body = WidgetResponse),
        (status = 403, body = Problem, content_type = "application/problem+json"),
        (status = 422, body = Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = []), ("api_key" = []))
)]
pub async fn put_widget(
    State(tenancy): State<Arc<TenancyService>>,
    TenantAuth(ctx): TenantAuth,
    Json(body): Json<WidgetBody>,
) -> Result<Json<WidgetResponse>, ApiError> {
    let widget = body.try_into_domain()?;
    Ok(Json(tenancy.put_widget(&ctx, widget).await?.into()))
}

// ----- LLM -------------------------------------------------------------------------------

/// The LLM configuration. The API key itself is never returned.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct LlmResponse {
    #[schema(example = "openai")]
    pub provider: String,
    pub model: String,
    pub temperature: f32,
    pub max_tokens: u32,
    pub has_api_key: bool,
    /// The key's first three and last four characters, e.g. `sk-…a1b2`.
    pub api_key_hint: Option<String>,
    /// The tenant's own endpoint; `null`: the server's.
    pub base_url: Option<String>,
    #[serde(serialize_with = "trellis_kernel::timestamp::rfc3339")]
    pub updated_at: DateTime<Utc>,
}

impl From<LlmConfig> for LlmResponse {
    fn from(c: LlmConfig) -> Self {
        Self {
            provider: c.provider.as_str().to_owned(),
            model: c.model,
            temperature: c.temperature,
            max_tokens: c.max_tokens,
            has_api_key: c.api_key.is_some(),
            api_key_hint: c.api_key_hint,
            base_url: c.base_url.map(|u| u.as_str().to_owned()),
            updated_at: c.updated_at,
        }
    }
}

/// The whole LLM configuration. `api_key`: absent keeps the stored key, `null`
/// clears it, a string replaces it. `base_url`: absent or `null` sends calls to the
/// server's endpoint.
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct LlmBody {
    #[schema(example = "openai", value_type = LlmProvider)]
    pub provider: String,
    /// 1 to 200 characters, no control characters but line breaks.
    #[schema(
        min_length = 1,
        max_length = 200,
        pattern = "^[^\\x00-\\x09\\x0B-\\x1F\\x7F-\\x9F]+$"
    )]
    pub model: String,
    /// 0 to 2.
    #[schema(minimum = 0, maximum = 2)]
    pub temperature: f32,
    /// 1 to 1,000,000.
    #[schema(minimum = 1, maximum = 1_000_000)]
    pub max_tokens: u32,
    /// A new key (1 to 512 characters), `null` to remove it, absent to keep it.
    #[serde(default, deserialize_with = "double_option")]
    #[schema(value_type = Option<String>, min_length = 1, max_length = 512, pattern = "\\S")]
    pub api_key: Option<Option<String>>,
    /// The tenant's own endpoint, up to the path before `/chat/completions`, for
    /// `azure_openai`, `openai_compatible` or `ollama`: e.g.
    /// `https://acme.openai.azure.com/openai/deployments/gpt-4o`. It must be on the
    /// server's allowlist (`TRELLIS_LLM_ALLOWED_ENDPOINTS`).
    #[schema(example = "https://acme.openai.azure.com/openai/deployments/gpt-4o")]
    pub base_url: Option<String>,
}

impl LlmBody {
    /// # Errors
    /// A 422 naming every invalid field.
    pub fn try_into_domain(self) -> Result<LlmConfigInput, ApiError> {
        let mut f = Fields::new();
        let provider = f.check(LlmProvider::parse(&self.provider));
        let base_url = f.check_opt("base_url", self.base_url.as_deref(), HttpUrl::parse);
        let input = provider
            .zip(base_url)
            .map(|(provider, base_url)| LlmConfigInput {
                provider,
                model: self.model,
                temperature: self.temperature,
                max_tokens: self.max_tokens,
                api_key: match self.api_key {
                    None => ApiKeyChange::Keep,
                    Some(None) => ApiKeyChange::Clear,
                    Some(Some(k)) => ApiKeyChange::Set(k),
                },
                base_url,
            });
        // The domain checks ranges too; checking here as well lets one 422 list a
        // bad provider together with the first range error.
        if let Some(i) = &input {
            f.check(i.validate());
        }
        f.finish(|| input)
    }
}

/// The LLM configuration, with the key masked. 404 until one is written.
#[utoipa::path(
    get, path = "/v1/tenant/llm", tag = "tenant",
    responses(
        (status = 200, body = LlmResponse),
        (status = 403, body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No LLM configuration yet", body = Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = []), ("api_key" = []))
)]
pub async fn get_llm(
    State(tenancy): State<Arc<TenancyService>>,
    TenantAuth(ctx): TenantAuth,
) -> Result<Json<LlmResponse>, ApiError> {
    tenancy
        .llm(&ctx)
        .await?
        .map(|c| Json(c.into()))
        .ok_or_else(|| ApiError::not_found("no LLM configuration has been set"))
}

/// Replace the LLM configuration; a new API key is stored encrypted.
#[utoipa::path(
    put, path = "/v1/tenant/llm", tag = "tenant",
    request_body = LlmBody,
    responses(
        (status = 200, body = LlmResponse),
        (status = 403, body = Problem, content_type = "application/problem+json"),
        (status = 422, body = Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = []), ("api_key" = []))
)]
pub async fn put_llm(
    State(tenancy): State<Arc<TenancyService>>,
    TenantAuth(ctx): TenantAuth,
    Json(body): Json<LlmBody>,
) -> Result<Json<LlmResponse>, ApiError> {
    let input = body.try_into_domain()?;
    Ok(Json(tenancy.put_llm(&ctx, input).await?.into()))
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;
    use trellis_tenancy::SealedSecret;

    #[test]
    fn nested_branding_errors_name_their_path() {
        let body: UpdateTenantBody = serde_json::from_value(serde_json::json!({
            "branding": {"primary_color": "red", "logo_url": "javascript:alert(1)"}
        }))
        .unwrap();
        let err = body.try_into_domain().unwrap_err();
        let mut fields: Vec<&str> = err.errors().iter().map(|e| e.field.as_str()).collect();
        fields.sort_unstable();
        assert_eq!(fields, vec!["branding.logo_url", "branding.primary_color"]);
    }

    #[test]
    fn the_llm_api_key_is_kept_cleared_or_set() {
        let body = |v: serde_json::Value| -> LlmConfigInput {
            let mut base = serde_json::json!({
                "provider": "openai", "model": "gpt-4o", "temperature": 0.2, "max_tokens": 100
            });
            if let (Some(b), Some(v)) = (base.as_object_mut(), v.as_object()) {
                b.extend(v.clone());
            }
            serde_json::from_value::<LlmBody>(base)
                .unwrap()
                .try_into_domain()
                .unwrap()
        };
        assert_eq!(body(serde_json::json!({})).api_key, ApiKeyChange::Keep);
        assert_eq!(
            body(serde_json::json!({"api_key": null})).api_key,
            ApiKeyChange::Clear
        );
        assert_eq!(
            body(serde_json::json!({"api_key": "sk-123456789"})).api_key,
            ApiKeyChange::Set("sk-123456789".into())
        );
    }

    #[test]
    fn the_llm_response_never_contains_the_key() {
        let cfg = LlmConfig {
            provider: LlmProvider::Openai,
            model: "gpt-4o".into(),
            temperature: 0.2,
            max_tokens: 100,
            api_key: Some(SealedSecret {
                key_id: "k1".into(),
                ciphertext: b"sealed-bytes".to_vec(),
            }),
            api_key_hint: Some("sk-…1234".into()),
            base_url: None,
            updated_at: Utc::now(),
        };
        let json = serde_json::to_value(LlmResponse::from(cfg)).unwrap();
        assert_eq!(json["has_api_key"], true);
        assert_eq!(json["api_key_hint"], "sk-…1234");
        assert!(json.get("api_key").is_none());
        assert!(!json.to_string().contains("sealed"));
    }
}
