//! The `ChatModel` the content service talks to: per request, it reads the tenant's
//! LLM configuration (provider, default model, sealed API key) and builds a client
//! with [`LlmFactory`] (which shares connection pools, so this is cheap). A tenant
//! without a configuration gets a provider error, which the answer use case stores
//! and streams as an `error` event. Also: the model catalogue as a tenant sees it,
//! which always includes the model the tenant configured itself.

use async_trait::async_trait;
use std::sync::Arc;
use trellis_content::{
    ChatModel, ChatRequest, ChatStream, Completion, ContentError, LlmCatalog, LlmModel, MicroUsd,
    ProviderError, ProviderErrorKind, Result,
};
use trellis_kernel::TenantCtx;
use trellis_llm::{ApiKey, LlmConfig, LlmFactory};
use trellis_tenancy::{LlmProvider, TenancyService};

/// What a tenant without an LLM configuration is told.
pub const NO_LLM_CONFIGURED: &str = "no LLM configured for this tenant";

/// What a tenant whose own endpoint the server no longer allows is told.
pub const ENDPOINT_NOT_ALLOWED: &str =
    "this tenant's LLM endpoint is no longer allowed by the server; ask an admin to change it";

/// Context window assumed for a tenant's own model the catalogue does not know.
const DEFAULT_CONTEXT_WINDOW: u32 = 8192;

/// Reads the tenant's LLM configuration as the tenant: the user chatting may not
/// read the settings themselves, yet their answers use the tenant's key.
async fn tenant_llm(
    tenancy: &TenancyService,
    ctx: &TenantCtx,
) -> Result<Option<(trellis_tenancy::LlmConfig, Option<String>)>> {
    let system = TenantCtx::system(ctx.tenant_id());
    let unexpected = |e: trellis_tenancy::TenancyError| ContentError::Unexpected(e.into());
    tenancy.llm_with_api_key(&system).await.map_err(unexpected)
}

/// Routes each request to a client built from the tenant's configuration.
pub struct TenantChatModel {
    tenancy: Arc<TenancyService>,
    factory: LlmFactory,
    base_url: Option<String>,
}

impl TenantChatModel {
    /// `base_url`: where `openai_compatible` and `azure_openai` tenants are sent (and
    /// an override of `ollama`'s local default) unless they set an endpoint of their
    /// own within the operator's allowlist.
    #[must_use]
    pub fn new(tenancy: Arc<TenancyService>, base_url: Option<String>) -> Self {
        Self {
            tenancy,
            factory: LlmFactory::new(),
            base_url,
        }
    }

    async fn client(&self, ctx: &TenantCtx, request: &ChatRequest) -> Result<Arc<dyn ChatModel>> {
        let Some((tenant, key)) = tenant_llm(&self.tenancy, ctx).await? else {
            return Err(
                ProviderError::new(ProviderErrorKind::Unauthorized, NO_LLM_CONFIGURED).into(),
            );
        };
        let mut config = LlmConfig::new(request.provider);
        // A key (and an endpoint) belong to their provider: never send one provider's
        // key to another.
        let own = tenant.provider == request.provider;
        if own {
            config.api_key = key.map(ApiKey::new);
            config.model = Some(tenant.model);
        }
        if request.provider.takes_base_url() {
            match tenant.base_url.filter(|_| own) {
                // Checked again on every call: the operator may have narrowed the list
                // since the tenant saved its endpoint.
                Some(url) if self.tenancy.llm_endpoints().allows(&url) => {
                    config.base_url = Some(url.as_str().to_owned());
                }
                Some(_) => {
                    return Err(ProviderError::new(
                        ProviderErrorKind::BadRequest,
                        ENDPOINT_NOT_ALLOWED,
                    )
                    .into());
                }
                None => config.base_url.clone_from(&self.base_url),
            }
        }
        self.factory.build(&config).map_err(|e| {
            ProviderError::new(
                ProviderErrorKind::BadRequest,
                format!("the LLM provider is not usable: {e}"),
            )
            .into()
        })
    }
}

#[async_trait]
impl ChatModel for TenantChatModel {
    async fn complete(&self, ctx: &TenantCtx, request: ChatRequest) -> Result<Completion> {
        let client = self.client(ctx, &request).await?;
        client.complete(ctx, request).await
    }

    async fn stream(&self, ctx: &TenantCtx, request: ChatRequest) -> Result<ChatStream> {
        let client = self.client(ctx, &request).await?;
        client.stream(ctx, request).await
    }
}

/// The platform catalogue, plus the model the tenant configured (a tenant running its
/// own server names models the platform cannot know of).
pub struct TenantCatalog {
    inner: Arc<dyn LlmCatalog>,
    tenancy: Arc<TenancyService>,
}

impl TenantCatalog {
    #[must_use]
    pub fn new(inner: Arc<dyn LlmCatalog>, tenancy: Arc<TenancyService>) -> Self {
        Self { inner, tenancy }
    }

    async fn own_model(&self, ctx: &TenantCtx) -> Result<Option<LlmModel>> {
        Ok(tenant_llm(&self.tenancy, ctx)
            .await?
            .map(|(c, _)| LlmModel {
                provider: c.provider,
                name: c.model,
                context_window: DEFAULT_CONTEXT_WINDOW.max(c.max_tokens.saturating_mul(2)),
                supports_streaming: true,
                input_price_per_1k: MicroUsd(0),
                output_price_per_1k: MicroUsd(0),
            }))
    }
}

#[async_trait]
impl LlmCatalog for TenantCatalog {
    async fn list(&self, ctx: &TenantCtx) -> Result<Vec<LlmModel>> {
        let mut models = self.inner.list(ctx).await?;
        if let Some(own) = self.own_model(ctx).await?
            && !models
                .iter()
                .any(|m| m.provider == own.provider && m.name == own.name)
        {
            models.push(own);
        }
        Ok(models)
    }

    async fn get(&self, ctx: &TenantCtx, provider: LlmProvider, model: &str) -> Result<LlmModel> {
        match self.inner.get(ctx, provider, model).await {
            Err(ContentError::ModelUnavailable(name)) => match self.own_model(ctx).await? {
                Some(own) if own.provider == provider && own.name == model => Ok(own),
                _ => Err(ContentError::ModelUnavailable(name)),
            },
            other => other,
        }
    }
}
