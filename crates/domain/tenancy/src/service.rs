//! Tenancy use cases: one method per thing a superadmin or tenant admin can do.

use crate::{
    ApiKeyChange, Branding, ConfigChange, FirstAdmin, Hostname, LlmConfig, LlmConfigInput,
    LlmEndpointPolicy, NewTenant, Plan, Result, SecretCipher, SettingsChange, TenancyError, Tenant,
    TenantConfig, TenantPatch, TenantRepo, TenantStatus, WidgetConfig, bounded_text, mask_api_key,
};
use std::sync::Arc;
use trellis_kernel::{
    Clock, Email, Page, PageRequest, Password, PasswordHasher, Permission, PlatformCtx, Slug,
    TenantCtx, TenantId, UserId,
};

/// What a superadmin supplies to create a tenant.
#[derive(Debug, Clone)]
pub struct CreateTenant {
    pub name: String,
    pub slug: Slug,
    /// Defaults to the slug.
    pub subdomain: Option<Slug>,
    pub custom_domain: Option<Hostname>,
    pub plan: Plan,
    pub branding: Branding,
    pub config: TenantConfig,
    pub admin_email: Email,
    pub admin_name: String,
    pub admin_password: Password,
}

/// A newly created tenant and the id of its first admin.
#[derive(Debug, Clone)]
pub struct CreatedTenant {
    pub tenant: Tenant,
    pub admin_id: UserId,
}

/// Tenancy use cases.
#[derive(Clone)]
pub struct TenancyService {
    repo: Arc<dyn TenantRepo>,
    hasher: Arc<dyn PasswordHasher>,
    cipher: Arc<dyn SecretCipher>,
    clock: Arc<dyn Clock>,
    llm_endpoints: LlmEndpointPolicy,
}

fn require(ctx: &TenantCtx, p: Permission) -> Result<()> {
    if ctx.can(p) {
        Ok(())
    } else {
        Err(TenancyError::Forbidden)
    }
}

impl TenancyService {
    #[must_use]
    pub fn new(
        repo: Arc<dyn TenantRepo>,
        hasher: Arc<dyn PasswordHasher>,
        cipher: Arc<dyn SecretCipher>,
        clock: Arc<dyn Clock>,
    ) -> Self {
        Self {
            repo,
            hasher,
            cipher,
            clock,
            llm_endpoints: LlmEndpointPolicy::default(),
        }
    }

    /// Lets tenants set their own LLM `base_url` within `policy` (by default they
    /// cannot).
    #[must_use]
    pub fn with_llm_endpoints(mut self, policy: LlmEndpointPolicy) -> Self {
        self.llm_endpoints = policy;
        self
    }

    /// The endpoints tenants may use, for the code that makes the calls to check again.
    #[must_use]
    pub fn llm_endpoints(&self) -> &LlmEndpointPolicy {
        &self.llm_endpoints
    }

    /// The underlying repository, for other domains' services that read tenant facts.
    #[must_use]
    pub fn repo(&self) -> Arc<dyn TenantRepo> {
        self.repo.clone()
    }

    /// Creates a tenant with its first admin (superadmin only).
    ///
    /// # Errors
    /// `Invalid` for a bad name, `Conflict` for a taken slug or domain.
    pub async fn create_tenant(
        &self,
        ctx: &PlatformCtx,
        cmd: CreateTenant,
    ) -> Result<CreatedTenant> {
        let name = bounded_text("name", &cmd.name, 200, false)?;
        let admin_name = bounded_text("admin_name", &cmd.admin_name, 200, false)?;
        let password_hash = self.hasher.hash(&cmd.admin_password).await?;
        let admin = FirstAdmin {
            id: UserId::new(),
            email: cmd.admin_email,
            name: admin_name,
            password_hash,
        };
        let admin_id = admin.id;
        let new = NewTenant {
            id: TenantId::new(),
            name,
            subdomain: cmd.subdomain.unwrap_or_else(|| cmd.slug.clone()),
            slug: cmd.slug,
            custom_domain: cmd.custom_domain,
            branding: cmd.branding,
            config: cmd.config,
            plan: cmd.plan,
        };
        let tenant = self.repo.create(ctx, new, admin).await?;
        Ok(CreatedTenant { tenant, admin_id })
    }

    /// # Errors
    /// Storage failures only.
    pub async fn list_tenants(&self, ctx: &PlatformCtx, page: PageRequest) -> Result<Page<Tenant>> {
        self.repo.list(ctx, page).await
    }

    /// # Errors
    /// `NotFound` for an unknown tenant.
    pub async fn get_tenant(&self, ctx: &PlatformCtx, id: TenantId) -> Result<Tenant> {
        self.repo.get(ctx, id).await
    }

    /// Suspends or reactivates a tenant.
    ///
    /// # Errors
    /// `NotFound` for an unknown tenant.
    pub async fn set_status(
        &self,
        ctx: &PlatformCtx,
        id: TenantId,
        status: TenantStatus,
    ) -> Result<Tenant> {
        self.repo.set_status(ctx, id, status).await
    }

    /// Changes a tenant's plan limits (user limit, allowed LLM providers, default
    /// model): a platform decision, not the tenant admin's.
    ///
    /// # Errors
    /// `NotFound` for an unknown tenant.
    pub async fn set_config(
        &self,
        ctx: &PlatformCtx,
        id: TenantId,
        change: ConfigChange,
    ) -> Result<Tenant> {
        let current = self.repo.get(ctx, id).await?;
        let tenant_ctx = TenantCtx::system(id);
        let patch = TenantPatch {
            config: Some(change.apply(&current.config)),
            ..TenantPatch::default()
        };
        self.repo.update(&tenant_ctx, patch).await
    }

    /// # Errors
    /// `NotFound` for an unknown tenant.
    pub async fn delete_tenant(&self, ctx: &PlatformCtx, id: TenantId) -> Result<()> {
        self.repo.soft_delete(ctx, id).await
    }

    /// The caller's own tenant settings.
    ///
    /// # Errors
    /// `Forbidden` without `tenant_read`.
    pub async fn settings(&self, ctx: &TenantCtx) -> Result<Tenant> {
        require(ctx, Permission::TenantRead)?;
        self.repo.current(ctx).await
    }

    /// Changes the caller's own tenant. The user limit and allowed providers are part
    /// of the plan the platform sells, so a tenant admin may change only the default
    /// model of the config; asking to change the others is `Forbidden`.
    ///
    /// # Errors
    /// `Forbidden` without `tenant_manage` or for a plan limit; `Invalid` for a bad name.
    pub async fn update_settings(&self, ctx: &TenantCtx, change: SettingsChange) -> Result<Tenant> {
        require(ctx, Permission::TenantManage)?;
        let name = change
            .name
            .as_deref()
            .map(|n| bounded_text("name", n, 200, false))
            .transpose()?;
        let config = match change.config {
            None => None,
            Some(c) => {
                let current = self.repo.current(ctx).await?.config;
                let next = c.apply(&current);
                if next.max_users != current.max_users
                    || next.allowed_llm_providers != current.allowed_llm_providers
                {
                    return Err(TenancyError::Forbidden);
                }
                Some(next)
            }
        };
        let patch = TenantPatch {
            name,
            custom_domain: change.custom_domain,
            branding: change.branding,
            config,
        };
        self.repo.update(ctx, patch).await
    }

    /// The widget configuration (defaults if never written).
    ///
    /// # Errors
    /// `Forbidden` without `tenant_read`.
    pub async fn widget(&self, ctx: &TenantCtx) -> Result<WidgetConfig> {
        require(ctx, Permission::TenantRead)?;
        Ok(self.repo.widget(ctx).await?.unwrap_or_default())
    }

    /// # Errors
    /// `Forbidden` without `tenant_manage`.
    pub async fn put_widget(&self, ctx: &TenantCtx, widget: WidgetConfig) -> Result<WidgetConfig> {
        require(ctx, Permission::TenantManage)?;
        self.repo.put_widget(ctx, widget).await
    }

    /// The LLM configuration, with the API key masked (the sealed key stays inside).
    ///
    /// # Errors
    /// `Forbidden` without `tenant_read`.
    pub async fn llm(&self, ctx: &TenantCtx) -> Result<Option<LlmConfig>> {
        require(ctx, Permission::TenantRead)?;
        self.repo.llm(ctx).await
    }

    /// Writes the LLM configuration; a new API key is sealed with the tenant id as
    /// associated data and only its masked hint is kept in clear.
    ///
    /// # Errors
    /// `Forbidden` without `tenant_manage`; `Invalid` for out-of-range values, a
    /// provider the tenant's config does not allow, or a `base_url` for a provider that
    /// takes none or outside the operator's allowlist.
    pub async fn put_llm(&self, ctx: &TenantCtx, input: LlmConfigInput) -> Result<LlmConfig> {
        require(ctx, Permission::TenantManage)?;
        input.validate()?;
        if let Some(url) = &input.base_url {
            let refusal = if !input.provider.takes_base_url() {
                Some(format!(
                    "provider `{}` has a fixed endpoint; only `openai_compatible`, `azure_openai` and `ollama` take a base_url",
                    input.provider.as_str()
                ))
            } else if self.llm_endpoints.is_empty() {
                Some("this server does not let tenants choose their LLM endpoint".to_owned())
            } else if !self.llm_endpoints.allows(url) {
                Some("this endpoint is not among those the server allows".to_owned())
            } else {
                None
            };
            if let Some(reason) = refusal {
                return Err(trellis_kernel::InvalidValue::new("base_url", reason).into());
            }
        }
        let tenant = self.repo.current(ctx).await?;
        if !tenant.config.allows(input.provider) {
            return Err(trellis_kernel::InvalidValue::new(
                "provider",
                format!(
                    "provider `{}` is not allowed for this tenant",
                    input.provider.as_str()
                ),
            )
            .into());
        }
        let existing = self.repo.llm(ctx).await?;
        let (api_key, api_key_hint) = match input.api_key {
            ApiKeyChange::Keep => existing
                .map(|e| (e.api_key, e.api_key_hint))
                .unwrap_or((None, None)),
            ApiKeyChange::Clear => (None, None),
            ApiKeyChange::Set(plain) => {
                let sealed = self
                    .cipher
                    .seal(plain.trim(), ctx.tenant_id().as_uuid().as_bytes())?;
                (Some(sealed), Some(mask_api_key(plain.trim())))
            }
        };
        let llm = LlmConfig {
            provider: input.provider,
            model: input.model.trim().to_owned(),
            temperature: input.temperature,
            max_tokens: input.max_tokens,
            api_key,
            api_key_hint,
            base_url: input.base_url,
            updated_at: self.clock.now(),
        };
        self.repo.put_llm(ctx, llm).await
    }

    /// The tenant's LLM configuration with its decrypted API key, for server-side calls
    /// to the provider only; one read, since every answer needs both.
    ///
    /// # Errors
    /// `Forbidden` without `tenant_read`; `Unexpected` when the key cannot be opened.
    pub async fn llm_with_api_key(
        &self,
        ctx: &TenantCtx,
    ) -> Result<Option<(LlmConfig, Option<String>)>> {
        require(ctx, Permission::TenantRead)?;
        let Some(cfg) = self.repo.llm(ctx).await? else {
            return Ok(None);
        };
        let key = cfg
            .api_key
            .as_ref()
            .map(|sealed| {
                self.cipher
                    .open(sealed, ctx.tenant_id().as_uuid().as_bytes())
            })
            .transpose()
            .map_err(TenancyError::Unexpected)?;
        Ok(Some((cfg, key)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{LlmProvider, MockSecretCipher, MockTenantRepo, SealedSecret};
    use async_trait::async_trait;
    use trellis_kernel::{Actor, PasswordHash, Role, SystemClock};

    struct PlainHasher;
    #[async_trait]
    impl PasswordHasher for PlainHasher {
        async fn hash(&self, p: &Password) -> anyhow::Result<PasswordHash> {
            Ok(PasswordHash::from_phc(p.expose()))
        }
        async fn verify(&self, p: &Password, h: Option<&PasswordHash>) -> bool {
            h.is_some_and(|h| h.as_str() == p.expose())
        }
    }

    fn tenant(id: TenantId, allowed: Vec<LlmProvider>) -> Tenant {
        Tenant {
            id,
            name: "Acme".into(),
            slug: Slug::parse("acme").unwrap(),
            subdomain: Slug::parse("acme").unwrap(),
            custom_domain: None,
            branding: Branding::default(),
            config: TenantConfig {
                allowed_llm_providers: allowed,
                ..TenantConfig::default()
            },
            plan: Plan::Free,
            status: TenantStatus::Active,
            billing_customer_id: None,
            created_at: chrono::Utc::now(),
            updated_at: chrono::Utc::now(),
        }
    }

    fn input(provider: LlmProvider) -> LlmConfigInput {
        LlmConfigInput {
            provider,
            model: "gpt-4o".into(),
            temperature: 0.2,
            max_tokens: 1000,
            api_key: ApiKeyChange::Set("sk-secret-key-123456".into()),
            base_url: None,
        }
    }

    fn service(repo: MockTenantRepo, cipher: MockSecretCipher) -> TenancyService {
        TenancyService::new(
            Arc::new(repo),
            Arc::new(PlainHasher),
            Arc::new(cipher),
            Arc::new(SystemClock),
        )
    }

    #[tokio::test]
    async fn a_new_llm_api_key_is_stored_sealed_and_only_its_hint_in_clear() {
        let tid = TenantId::new();
        let svc = sealing_service(tid, "");
        let ctx = TenantCtx::system(tid);
        let saved = svc.put_llm(&ctx, input(LlmProvider::Openai)).await.unwrap();
        assert_eq!(saved.api_key_hint.as_deref(), Some("sk-…3456"));
        let sealed = saved.api_key.unwrap();
        assert_eq!(sealed.ciphertext, tid.as_uuid().as_bytes().to_vec());
    }

    #[tokio::test]
    async fn the_llm_configuration_and_its_opened_key_come_from_one_read() {
        let tid = TenantId::new();
        let mut repo = MockTenantRepo::new();
        repo.expect_llm().times(1).returning(|_| {
            Ok(Some(LlmConfig {
                provider: LlmProvider::Openai,
                model: "gpt-4o-mini".into(),
                temperature: 0.2,
                max_tokens: 512,
                api_key: Some(SealedSecret {
                    key_id: "k1".into(),
                    ciphertext: b"sealed".to_vec(),
                }),
                api_key_hint: Some("sk-…3456".into()),
                base_url: None,
                updated_at: chrono::Utc::now(),
            }))
        });
        let mut cipher = MockSecretCipher::new();
        cipher
            .expect_open()
            .times(1)
            .returning(|_, _| Ok("sk-opened".into()));
        let svc = service(repo, cipher);
        let (config, key) = svc
            .llm_with_api_key(&TenantCtx::system(tid))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(config.model, "gpt-4o-mini");
        assert_eq!(key.as_deref(), Some("sk-opened"));
    }

    #[tokio::test]
    async fn a_provider_outside_the_tenants_allowed_list_is_refused() {
        let tid = TenantId::new();
        let mut repo = MockTenantRepo::new();
        repo.expect_current()
            .returning(move |_| Ok(tenant(tid, vec![LlmProvider::Anthropic])));
        repo.expect_put_llm().never();
        let svc = service(repo, MockSecretCipher::new());
        let err = svc
            .put_llm(&TenantCtx::system(tid), input(LlmProvider::Openai))
            .await
            .unwrap_err();
        assert!(matches!(err, TenancyError::Invalid(v) if v.field == "provider"));
    }

    #[tokio::test]
    async fn a_tenant_admin_cannot_raise_their_own_user_limit() {
        let tid = TenantId::new();
        let mut repo = MockTenantRepo::new();
        repo.expect_current()
            .returning(move |_| Ok(tenant(tid, vec![])));
        repo.expect_update().never();
        let svc = service(repo, MockSecretCipher::new());
        let change = SettingsChange {
            config: Some(ConfigChange {
                max_users: Some(Some(10_000)),
                ..ConfigChange::default()
            }),
            ..SettingsChange::default()
        };
        let err = svc
            .update_settings(&TenantCtx::system(tid), change)
            .await
            .unwrap_err();
        assert!(matches!(err, TenancyError::Forbidden));
    }

    #[tokio::test]
    async fn a_plain_user_cannot_change_tenant_settings() {
        let mut repo = MockTenantRepo::new();
        repo.expect_update().never();
        let svc = service(repo, MockSecretCipher::new());
        let ctx = TenantCtx::authenticated(
            TenantId::new(),
            Actor::User(UserId::new()),
            Role::User,
            None,
        );
        let err = svc
            .update_settings(&ctx, SettingsChange::default())
            .await
            .unwrap_err();
        assert!(matches!(err, TenancyError::Forbidden));
    }

    fn with_endpoint(provider: LlmProvider, url: &str) -> LlmConfigInput {
        LlmConfigInput {
            base_url: Some(trellis_kernel::HttpUrl::parse(url).unwrap()),
            ..input(provider)
        }
    }

    /// A service over a tenant with no LLM config yet whose cipher "seals" a key as
    /// its associated data, allowing tenant endpoints within `policy`.
    fn sealing_service(tid: TenantId, policy: &str) -> TenancyService {
        let mut repo = MockTenantRepo::new();
        repo.expect_current()
            .returning(move |_| Ok(tenant(tid, vec![])));
        repo.expect_llm().returning(|_| Ok(None));
        repo.expect_put_llm().returning(|_, llm| Ok(llm));
        let mut cipher = MockSecretCipher::new();
        cipher.expect_seal().returning(|_, aad| {
            Ok(SealedSecret {
                key_id: "k1".into(),
                ciphertext: aad.to_vec(),
            })
        });
        service(repo, cipher).with_llm_endpoints(LlmEndpointPolicy::parse_list(policy).unwrap())
    }

    #[tokio::test]
    async fn a_tenant_endpoint_on_the_operators_allowlist_is_kept() {
        let tid = TenantId::new();
        let svc = sealing_service(tid, "https://*.openai.azure.com");
        let url = "https://acme.openai.azure.com/openai/deployments/gpt-4o";
        let saved = svc
            .put_llm(
                &TenantCtx::system(tid),
                with_endpoint(LlmProvider::AzureOpenai, url),
            )
            .await
            .unwrap();
        assert_eq!(saved.base_url.unwrap().as_str(), url);
    }

    #[tokio::test]
    async fn a_tenant_endpoint_is_refused_off_the_allowlist_without_one_or_for_a_fixed_provider() {
        let tid = TenantId::new();
        let ctx = TenantCtx::system(tid);
        for (policy, cfg, says) in [
            (
                "https://*.openai.azure.com",
                with_endpoint(LlmProvider::AzureOpenai, "http://169.254.169.254/latest"),
                "not among",
            ),
            (
                "",
                with_endpoint(LlmProvider::OpenaiCompatible, "https://llm.example.com/v1"),
                "does not let tenants",
            ),
            (
                "https://api.openai.com",
                with_endpoint(LlmProvider::Openai, "https://api.openai.com/v1"),
                "fixed endpoint",
            ),
        ] {
            let err = sealing_service(tid, policy)
                .put_llm(&ctx, cfg)
                .await
                .unwrap_err();
            let TenancyError::Invalid(v) = err else {
                panic!("{err:?}")
            };
            assert_eq!(v.field, "base_url");
            assert!(v.reason.contains(says), "{}", v.reason);
        }
    }
}
