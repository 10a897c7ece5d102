//! Picking a client by provider. [`LlmConfig`] is what the app knows about one
//! provider (for a tenant: its provider, decrypted key and model); [`LlmFactory`]
//! turns it into a [`ChatModel`], sharing connection pools between the clients it
//! builds; [`LlmRegistry`] holds one client per provider and routes each request by
//! its `provider`.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use async_trait::async_trait;
use trellis_content::{ChatModel, ChatRequest, ChatStream, Completion, ContentError, Result};
use trellis_kernel::TenantCtx;
use trellis_tenancy::LlmProvider;

use crate::config::{ApiKey, AuthStyle, ConfigError, RetryPolicy, Timeouts};
use crate::{AnthropicClient, AnthropicConfig, MaxTokensField, OpenAiClient, OpenAiConfig};

/// One provider's settings; every `None` means the provider's default.
#[derive(Debug, Clone)]
pub struct LlmConfig {
    pub provider: LlmProvider,
    /// Required for Azure OpenAI and generic OpenAI-compatible servers; see
    /// [`LlmConfig::default_base_url`] for the others.
    pub base_url: Option<String>,
    pub api_key: Option<ApiKey>,
    /// The model when a request names none.
    pub model: Option<String>,
    /// Bearer, except `api-key` for Azure and `x-api-key` for Anthropic.
    pub auth: Option<AuthStyle>,
    /// Azure's `api-version` (ignored by Anthropic).
    pub api_version: Option<String>,
    /// OpenAI-compatible only: `max_completion_tokens` for OpenAI itself, else
    /// `max_tokens`.
    pub max_tokens_field: Option<MaxTokensField>,
    pub extra_headers: Vec<(String, String)>,
    pub timeouts: Timeouts,
    pub retry: RetryPolicy,
}

impl LlmConfig {
    /// The provider's defaults, no key.
    #[must_use]
    pub fn new(provider: LlmProvider) -> Self {
        Self {
            provider,
            base_url: None,
            api_key: None,
            model: None,
            auth: None,
            api_version: None,
            max_tokens_field: None,
            extra_headers: Vec::new(),
            timeouts: Timeouts::default(),
            retry: RetryPolicy::default(),
        }
    }

    /// The defaults of the provider named as in configuration (`openai`,
    /// `azure_openai`, `anthropic`, `google`, `mistral`, `ollama`,
    /// `openai_compatible`).
    ///
    /// # Errors
    /// `UnknownProvider` for any other name.
    pub fn for_provider_name(name: &str) -> Result<Self, ConfigError> {
        LlmProvider::parse(name.trim())
            .map(Self::new)
            .map_err(|_| ConfigError::UnknownProvider(name.to_owned()))
    }

    /// Where the provider's API is when no base URL is configured. Google and Mistral
    /// are reached through their OpenAI-compatible endpoints.
    #[must_use]
    pub fn default_base_url(provider: LlmProvider) -> Option<&'static str> {
        match provider {
            LlmProvider::Openai => Some("https://api.openai.com/v1"),
            LlmProvider::Anthropic => Some(AnthropicConfig::DEFAULT_BASE_URL),
            LlmProvider::Google => Some("https://generativelanguage.googleapis.com/v1beta/openai"),
            LlmProvider::Mistral => Some("https://api.mistral.ai/v1"),
            LlmProvider::Ollama => Some("http://localhost:11434/v1"),
            // A resource or a server of the operator's own: nothing to guess.
            LlmProvider::AzureOpenai | LlmProvider::OpenaiCompatible => None,
        }
    }

    fn base_url(&self) -> Result<String, ConfigError> {
        self.base_url
            .clone()
            .filter(|u| !u.trim().is_empty())
            .or_else(|| Self::default_base_url(self.provider).map(str::to_owned))
            .ok_or(ConfigError::MissingBaseUrl(self.provider.as_str()))
    }

    fn openai_config(&self) -> Result<OpenAiConfig, ConfigError> {
        let provider = self.provider;
        let auth = self
            .auth
            .clone()
            .unwrap_or(if provider == LlmProvider::AzureOpenai {
                AuthStyle::azure()
            } else {
                AuthStyle::Bearer
            });
        let max_tokens_field =
            self.max_tokens_field
                .unwrap_or(if provider == LlmProvider::Openai {
                    MaxTokensField::MaxCompletionTokens
                } else {
                    MaxTokensField::MaxTokens
                });
        Ok(OpenAiConfig {
            base_url: self.base_url()?,
            api_key: self.api_key.clone(),
            auth,
            api_version: self.api_version.clone(),
            default_model: self.model.clone(),
            extra_headers: self.extra_headers.clone(),
            // Mistral validates request fields strictly and sends usage unasked anyway.
            include_usage: provider != LlmProvider::Mistral,
            max_tokens_field,
            timeouts: self.timeouts,
            retry: self.retry,
        })
    }

    fn anthropic_config(&self) -> Result<AnthropicConfig, ConfigError> {
        Ok(AnthropicConfig {
            base_url: self.base_url()?,
            api_key: self.api_key.clone(),
            auth: self.auth.clone().unwrap_or_else(AuthStyle::anthropic),
            version: AnthropicConfig::API_VERSION.to_owned(),
            default_model: self.model.clone(),
            default_max_tokens: AnthropicConfig::DEFAULT_MAX_TOKENS,
            extra_headers: self.extra_headers.clone(),
            timeouts: self.timeouts,
            retry: self.retry,
        })
    }
}

/// Builds chat models from [`LlmConfig`]s. Clients built by one factory share
/// connection pools (one per connect timeout), so building a client per tenant and
/// call is cheap and keeps TLS connections warm.
#[derive(Debug, Default)]
pub struct LlmFactory {
    pools: Mutex<HashMap<Duration, reqwest::Client>>,
}

impl LlmFactory {
    #[must_use]
    pub fn new() -> Self {
        Self::default()
    }

    /// The client `config.provider` calls for: Anthropic's own API for `anthropic`,
    /// the OpenAI-compatible client for every other provider.
    ///
    /// # Errors
    /// When a setting is unusable or a needed base URL is missing.
    pub fn build(&self, config: &LlmConfig) -> Result<Arc<dyn ChatModel>, ConfigError> {
        let http = self.pool(config.timeouts.connect)?;
        Ok(match config.provider {
            LlmProvider::Anthropic => Arc::new(AnthropicClient::with_http_client(
                config.anthropic_config()?,
                http,
            )?),
            LlmProvider::Openai
            | LlmProvider::AzureOpenai
            | LlmProvider::Google
            | LlmProvider::Mistral
            | LlmProvider::Ollama
            | LlmProvider::OpenaiCompatible => Arc::new(OpenAiClient::with_http_client(
                config.openai_config()?,
                http,
            )?),
        })
    }

    fn pool(&self, connect_timeout: Duration) -> Result<reqwest::Client, ConfigError> {
        // A panic elsewhere while holding the lock leaves the map intact: carry on.
        let mut pools = self.pools.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(client) = pools.get(&connect_timeout) {
            return Ok(client.clone());
        }
        let client = crate::transport::http_client(connect_timeout)?;
        pools.insert(connect_timeout, client.clone());
        Ok(client)
    }
}

/// One chat model per provider, itself a [`ChatModel`] that routes each request by
/// its `provider`.
#[derive(Clone, Default)]
pub struct LlmRegistry {
    models: HashMap<LlmProvider, Arc<dyn ChatModel>>,
}

impl std::fmt::Debug for LlmRegistry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LlmRegistry")
            .field("providers", &self.providers())
            .finish()
    }
}

impl LlmRegistry {
    #[must_use]
    pub fn new() -> Self {
        Self::default()
    }

    /// Builds one client per configuration.
    ///
    /// # Errors
    /// When a configuration is unusable, or two name the same provider (which one
    /// was meant would be a guess).
    pub fn from_configs(factory: &LlmFactory, configs: &[LlmConfig]) -> Result<Self, ConfigError> {
        let mut registry = Self::new();
        for config in configs {
            if registry.models.contains_key(&config.provider) {
                return Err(ConfigError::DuplicateProvider(config.provider.as_str()));
            }
            registry.insert(config.provider, factory.build(config)?);
        }
        Ok(registry)
    }

    /// Sets (or replaces) the model for `provider`.
    pub fn insert(&mut self, provider: LlmProvider, model: Arc<dyn ChatModel>) {
        self.models.insert(provider, model);
    }

    #[must_use]
    pub fn get(&self, provider: LlmProvider) -> Option<Arc<dyn ChatModel>> {
        self.models.get(&provider).cloned()
    }

    /// The configured providers, in the catalogue's order.
    #[must_use]
    pub fn providers(&self) -> Vec<LlmProvider> {
        LlmProvider::ALL
            .into_iter()
            .filter(|p| self.models.contains_key(p))
            .collect()
    }

    fn route(&self, request: &ChatRequest) -> Result<&Arc<dyn ChatModel>> {
        self.models.get(&request.provider).ok_or_else(|| {
            ContentError::ModelUnavailable(format!(
                "{}/{} (the provider is not configured)",
                request.provider.as_str(),
                request.model
            ))
        })
    }
}

#[async_trait]
impl ChatModel for LlmRegistry {
    async fn complete(&self, ctx: &TenantCtx, request: ChatRequest) -> Result<Completion> {
        self.route(&request)?.complete(ctx, request).await
    }

    async fn stream(&self, ctx: &TenantCtx, request: ChatRequest) -> Result<ChatStream> {
        self.route(&request)?.stream(ctx, request).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_provider_but_azure_and_generic_servers_has_a_default_base_url() {
        let factory = LlmFactory::new();
        for provider in LlmProvider::ALL {
            let built = factory.build(&LlmConfig::new(provider));
            match provider {
                LlmProvider::AzureOpenai | LlmProvider::OpenaiCompatible => assert_eq!(
                    built.err(),
                    Some(ConfigError::MissingBaseUrl(provider.as_str()))
                ),
                _ => assert!(built.is_ok(), "{provider:?}"),
            }
        }
    }

    #[test]
    fn providers_are_found_by_their_configuration_names() {
        assert_eq!(
            LlmConfig::for_provider_name(" anthropic ")
                .unwrap()
                .provider,
            LlmProvider::Anthropic
        );
        assert_eq!(
            LlmConfig::for_provider_name("azure_openai")
                .unwrap()
                .provider,
            LlmProvider::AzureOpenai
        );
        assert_eq!(
            LlmConfig::for_provider_name("gpt").unwrap_err(),
            ConfigError::UnknownProvider("gpt".into())
        );
    }

    #[test]
    fn provider_defaults_pick_the_auth_header_and_limit_field() {
        let azure = LlmConfig {
            base_url: Some("https://r.openai.azure.com/openai/deployments/d".into()),
            ..LlmConfig::new(LlmProvider::AzureOpenai)
        };
        let config = azure.openai_config().unwrap();
        assert_eq!(config.auth, AuthStyle::azure());
        assert_eq!(config.max_tokens_field, MaxTokensField::MaxTokens);
        let openai = LlmConfig::new(LlmProvider::Openai).openai_config().unwrap();
        assert_eq!(openai.auth, AuthStyle::Bearer);
        assert_eq!(openai.max_tokens_field, MaxTokensField::MaxCompletionTokens);
        assert!(openai.include_usage);
        let anthropic = LlmConfig::new(LlmProvider::Anthropic)
            .anthropic_config()
            .unwrap();
        assert_eq!(anthropic.auth, AuthStyle::anthropic());
        assert_eq!(anthropic.base_url, "https://api.anthropic.com");
    }

    #[test]
    fn clients_with_the_same_connect_timeout_share_one_pool() {
        let factory = LlmFactory::new();
        factory.build(&LlmConfig::new(LlmProvider::Openai)).unwrap();
        factory
            .build(&LlmConfig::new(LlmProvider::Anthropic))
            .unwrap();
        let mut other = LlmConfig::new(LlmProvider::Ollama);
        other.timeouts.connect = Duration::from_secs(1);
        factory.build(&other).unwrap();
        assert_eq!(factory.pools.lock().unwrap().len(), 2);
    }

    #[test]
    fn a_registry_refuses_two_configurations_for_one_provider() {
        let configs = [
            LlmConfig::new(LlmProvider::Openai),
            LlmConfig::new(LlmProvider::Openai),
        ];
        assert_eq!(
            LlmRegistry::from_configs(&LlmFactory::new(), &configs).unwrap_err(),
            ConfigError::DuplicateProvider("openai")
        );
    }
}
