//! `/v1/tenants`: platform superadmins create tenants (each with its first admin),
//! list, inspect, suspend or reactivate, and delete them. Tenant tokens get 403 here.

use super::{PageQuery, created, list_response};
use crate::auth::PlatformAuth;
use crate::extract::{Json, Path, Query};
use crate::problem::{ApiError, Problem};
use crate::routes::tenancy::{BrandingBody, ConfigChangeBody, TenantConfigBody, TenantResponse};
use crate::state::AppState;
use crate::validate::Fields;
use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::Response;
use axum::routing::get;
use serde::{Deserialize, Serialize};
use std::sync::Arc;
use trellis_kernel::{Email, Password, Slug, TenantId};
use trellis_tenancy::service::{CreateTenant, CreatedTenant};
use trellis_tenancy::{
    Branding, ConfigChange, Hostname, Plan, TenancyService, TenantConfig, TenantStatus,
    bounded_text,
};
use utoipa::ToSchema;
use uuid::Uuid;

/// The routes of this module.
pub fn router() -> Router<AppState> {
    Router::new()
        .route("/v1/tenants", get(list_tenants).post(create_tenant))
        .route(
            "/v1/tenants/{id}",
            get(get_tenant).patch(set_status).delete(delete_tenant),
        )
}

list_response!(
    /// One page of tenants.
    TenantListResponse,
    TenantResponse
);

/// The tenant's first administrator.
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct FirstAdminBody {
    #[schema(format = Email, max_length = 254)]
    pub email: String,
    #[schema(min_length = 1, max_length = 200)]
    pub name: String,
    /// 8–256 characters.
    #[schema(min_length = 8, max_length = 256)]
    pub password: String,
}

/// A tenant to create, with its first admin.
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateTenantBody {
    #[schema(min_length = 1, max_length = 200)]
    pub name: String,
    /// A lower-case DNS label, unique among tenants.
    #[schema(
        example = "acme",
        pattern = "^[a-z0-9]+(-[a-z0-9]+)*$",
        min_length = 2,
        max_length = 63
    )]
    pub slug: String,
    /// Defaults to the slug.
    #[schema(pattern = "^[a-z0-9]+(-[a-z0-9]+)*$", min_length = 2, max_length = 63)]
    pub subdomain: Option<String>,
    #[schema(format = Hostname)]
    pub custom_domain: Option<String>,
    /// `free` (default), `starter`, `pro` or `enterprise`.
    #[schema(value_type = Option<Plan>)]
    pub plan: Option<String>,
    pub branding: Option<BrandingBody>,
    pub config: Option<TenantConfigBody>,
    pub admin: FirstAdminBody,
}

impl CreateTenantBody {
    /// # Errors
    /// A 422 naming every invalid field (`admin.email` for the admin's).
    pub fn try_into_domain(self) -> Result<CreateTenant, ApiError> {
        let mut f = Fields::new();
        let name = f.check(bounded_text("name", &self.name, 200, false));
        let slug = f.check(Slug::parse(&self.slug));
        let subdomain = f.check_opt("subdomain", self.subdomain.as_deref(), |s| {
            Slug::parse_field("subdomain", s)
        });
        let custom_domain = f.check_opt(
            "custom_domain",
            self.custom_domain.as_deref(),
            Hostname::parse,
        );
        let plan = f.check_opt("plan", self.plan.as_deref(), Plan::parse);
        let branding = match &self.branding {
            None => Some(Branding::default()),
            Some(b) => b.convert(&mut f, "branding"),
        };
        let config = match &self.config {
            None => Some(TenantConfig::default()),
            Some(c) => c.convert(&mut f, "config"),
        };
        let admin_email = f.check_as("admin.email", Email::parse(&self.admin.email));
        let admin_name = f.check_as(
            "admin.name",
            bounded_text("name", &self.admin.name, 200, false),
        );
        let admin_password = f.check_as("admin.password", Password::parse(&self.admin.password));
        f.finish(|| {
            Some(CreateTenant {
                name: name?,
                slug: slug?,
                subdomain: subdomain?,
                custom_domain: custom_domain?,
                plan: plan?.unwrap_or_default(),
                branding: branding?,
                config: config?,
                admin_email: admin_email?,
                admin_name: admin_name?,
                admin_password: admin_password?,
            })
        })
    }
}

/// A created tenant and the id of its first admin.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct CreatedTenantResponse {
    #[serde(flatten)]
    pub tenant: TenantResponse,
    pub admin_id: Uuid,
}

impl From<CreatedTenant> for CreatedTenantResponse {
    fn from(c: CreatedTenant) -> Self {
        Self {
            tenant: c.tenant.into(),
            admin_id: c.admin_id.as_uuid(),
        }
    }
}

/// Suspend or reactivate a tenant, and/or change its plan limits.
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UpdateTenantStatusBody {
    /// `active` or `suspended`. Suspended tenants cannot log in.
    #[schema(example = "suspended", value_type = Option<TenantStatus>)]
    pub status: Option<String>,
    /// User limit, allowed LLM providers, default model; absent fields are kept.
    pub config: Option<ConfigChangeBody>,
}

impl UpdateTenantStatusBody {
    /// # Errors
    /// A 422 naming `status` or a config field.
    pub fn try_into_domain(self) -> Result<(Option<TenantStatus>, Option<ConfigChange>), ApiError> {
        let mut f = Fields::new();
        let status = match &self.status {
            None => Some(None),
            Some(s) => f.check(TenantStatus::parse(s)).map(Some),
        };
        let config = match &self.config {
            None => Some(None),
            Some(c) => c.convert(&mut f, "config").map(Some),
        };
        f.finish(|| Some((status?, config?)))
    }
}

/// List tenants, oldest first.
#[utoipa::path(
    get, path = "/v1/tenants", tag = "platform",
    params(PageQuery),
    responses(
        (status = 200, body = TenantListResponse),
        (status = 400, body = Problem, content_type = "application/problem+json"),
        (status = 403, body = Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = []))
)]
pub async fn list_tenants(
    State(tenancy): State<Arc<TenancyService>>,
    PlatformAuth(ctx): PlatformAuth,
    Query(q): Query<PageQuery>,
) -> Result<Json<TenantListResponse>, ApiError> {
    let page = tenancy.list_tenants(&ctx, q.page()?).await?;
    Ok(Json(TenantListResponse::from_page(
        page,
        TenantResponse::from,
    )))
}

/// Create a tenant with its first admin.
#[utoipa::path(
    post, path = "/v1/tenants", tag = "platform",
    request_body = CreateTenantBody,
    responses(
        (status = 201, body = CreatedTenantResponse),
        (status = 403, body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "Slug, subdomain or domain taken", body = Problem, content_type = "application/problem+json"),
        (status = 422, body = Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = []))
)]
pub async fn create_tenant(
    State(tenancy): State<Arc<TenancyService>>,
    PlatformAuth(ctx): PlatformAuth,
    Json(body): Json<CreateTenantBody>,
) -> Result<Response, ApiError> {
    let cmd = body.try_into_domain()?;
    let created_tenant = tenancy.create_tenant(&ctx, cmd).await?;
    Ok(created(
        format!("/v1/tenants/{}", created_tenant.tenant.id),
        CreatedTenantResponse::from(created_tenant),
    ))
}

/// One tenant.
#[utoipa::path(
    get, path = "/v1/tenants/{id}", tag = "platform",
    params(("id" = Uuid, Path, description = "Tenant id")),
    responses(
        (status = 200, body = TenantResponse),
        (status = 403, body = Problem, content_type = "application/problem+json"),
        (status = 404, body = Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = []))
)]
pub async fn get_tenant(
    State(tenancy): State<Arc<TenancyService>>,
    PlatformAuth(ctx): PlatformAuth,
    Path(id): Path<Uuid>,
) -> Result<Json<TenantResponse>, ApiError> {
    let t = tenancy.get_tenant(&ctx, TenantId::from_uuid(id)).await?;
    Ok(Json(t.into()))
}

/// Suspend or reactivate a tenant, or change its plan limits.
#[utoipa::path(
    patch, path = "/v1/tenants/{id}", tag = "platform",
    params(("id" = Uuid, Path, description = "Tenant id")),
    request_body = UpdateTenantStatusBody,
    responses(
        (status = 200, body = TenantResponse),
        (status = 403, body = Problem, content_type = "application/problem+json"),
        (status = 404, body = Problem, content_type = "application/problem+json"),
        (status = 422, body = Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = []))
)]
pub async fn set_status(
    State(tenancy): State<Arc<TenancyService>>,
    PlatformAuth(ctx): PlatformAuth,
    Path(id): Path<Uuid>,
    Json(body): Json<UpdateTenantStatusBody>,
) -> Result<Json<TenantResponse>, ApiError> {
    let (status, config) = body.try_into_domain()?;
    let id = TenantId::from_uuid(id);
    let mut tenant = tenancy.get_tenant(&ctx, id).await?;
    if let Some(config) = config {
        tenant = tenancy.set_config(&ctx, id, config).await?;
    }
    if let Some(status) = status {
        tenant = tenancy.set_status(&ctx, id, status).await?;
    }
    Ok(Json(tenant.into()))
}

/// Delete a tenant. Its slug stays reserved.
#[utoipa::path(
    delete, path = "/v1/tenants/{id}", tag = "platform",
    params(("id" = Uuid, Path, description = "Tenant id")),
    responses(
        (status = 204, description = "Deleted"),
        (status = 403, body = Problem, content_type = "application/problem+json"),
        (status = 404, body = Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = []))
)]
pub async fn delete_tenant(
    State(tenancy): State<Arc<TenancyService>>,
    PlatformAuth(ctx): PlatformAuth,
    Path(id): Path<Uuid>,
) -> Result<StatusCode, ApiError> {
    tenancy.delete_tenant(&ctx, TenantId::from_uuid(id)).await?;
    Ok(StatusCode::NO_CONTENT)
}
