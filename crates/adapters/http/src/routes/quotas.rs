//! Token budgets: `/v1/tenants/{id}/quota` lets platform superadmins read and set a
//! tenant's budgets (one for the whole tenant, one per user, each over a UTC day or
//! month), and `/v1/usage` shows a tenant user what they used and where their
//! budgets stand. A used-up budget makes sending a message answer 429 with
//! `Retry-After` and `resets_at`, before any model is called.

use crate::auth::{PlatformAuth, TenantAuth};
use crate::extract::{Json, Path};
use crate::problem::{ApiError, Problem, ProblemType};
use crate::routes::content::content;
use crate::state::AppState;
use crate::validate::Fields;
use axum::Router;
use axum::extract::State;
use axum::routing::get;
use serde::{Deserialize, Serialize};
use std::sync::Arc;
use trellis_content::{
    BudgetPeriod, BudgetStatus, MAX_BUDGET_TOKENS, Quota, QuotaAdministration, QuotaScope,
    TokenBudget,
};
use trellis_kernel::{InvalidValue, TenantId};
use utoipa::ToSchema;
use uuid::Uuid;

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/v1/tenants/{id}/quota", get(get_quota).put(put_quota))
        .route("/v1/usage", get(usage))
}

fn admin(state: &AppState) -> Result<Arc<QuotaAdministration>, ApiError> {
    state.quota_admin.clone().ok_or_else(|| {
        ApiError::new(
            ProblemType::NotReady,
            "quotas are not configured on this server",
        )
    })
}

/// At most `limit_tokens` (prompt plus completion) per `period`.
#[derive(Debug, Clone, Deserialize, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct BudgetBody {
    /// 0 refuses every model call.
    pub limit_tokens: i64,
    /// `day` or `month` (UTC calendar periods).
    #[schema(example = "month")]
    pub period: String,
}

/// A tenant's budgets; a missing or `null` budget is unlimited.
#[derive(Debug, Clone, Default, Deserialize, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct QuotaBody {
    /// For the whole tenant.
    #[serde(default)]
    pub tenant: Option<BudgetBody>,
    /// For each user of the tenant.
    #[serde(default)]
    pub per_user: Option<BudgetBody>,
}

fn budget(
    f: &mut Fields,
    field: &'static str,
    body: Option<&BudgetBody>,
) -> Option<Option<TokenBudget>> {
    let Some(b) = body else {
        return Some(None);
    };
    let limit = f.check(
        u64::try_from(b.limit_tokens)
            .ok()
            .filter(|l| *l <= MAX_BUDGET_TOKENS)
            .ok_or_else(|| {
                InvalidValue::new(
                    field,
                    format!("limit_tokens must be 0 to {MAX_BUDGET_TOKENS}"),
                )
            }),
    );
    let period = f.check(match b.period.as_str() {
        "day" => Ok(BudgetPeriod::Day),
        "month" => Ok(BudgetPeriod::Month),
        _ => Err(InvalidValue::new(field, "period must be day or month")),
    });
    Some(Some(TokenBudget {
        limit_tokens: limit?,
        period: period?,
    }))
}

impl QuotaBody {
    /// # Errors
    /// A 422 naming `tenant` or `per_user`.
    pub fn try_into_domain(&self) -> Result<Quota, ApiError> {
        let mut f = Fields::new();
        let tenant = budget(&mut f, "tenant", self.tenant.as_ref());
        let per_user = budget(&mut f, "per_user", self.per_user.as_ref());
        f.finish(|| {
            Some(Quota {
                tenant: tenant?,
                per_user: per_user?,
            })
        })
    }
}

/// A budget as set.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct BudgetResponse {
    pub limit_tokens: u64,
    /// `day` or `month`.
    pub period: &'static str,
}

fn period_name(p: BudgetPeriod) -> &'static str {
    match p {
        BudgetPeriod::Day => "day",
        BudgetPeriod::Month => "month",
    }
}

impl From<TokenBudget> for BudgetResponse {
    fn from(b: TokenBudget) -> Self {
        Self {
            limit_tokens: b.limit_tokens,
            period: period_name(b.period),
        }
    }
}

/// A tenant's budgets; `null` is unlimited.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct QuotaResponse {
    pub tenant_id: Uuid,
    pub tenant: Option<BudgetResponse>,
    pub per_user: Option<BudgetResponse>,
}

impl QuotaResponse {
    fn new(tenant: TenantId, q: Quota) -> Self {
        Self {
            tenant_id: tenant.as_uuid(),
            tenant: q.tenant.map(Into::into),
            per_user: q.per_user.map(Into::into),
        }
    }
}

/// Where one budget stands this period.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct BudgetStatusResponse {
    /// `tenant` or `user`.
    pub scope: &'static str,
    /// `day` or `month`.
    pub period: &'static str,
    pub limit_tokens: u64,
    pub used_tokens: u64,
    pub remaining_tokens: u64,
    /// When the period ends and the budget is whole again (RFC 3339).
    pub resets_at: chrono::DateTime<chrono::Utc>,
}

impl From<BudgetStatus> for BudgetStatusResponse {
    fn from(s: BudgetStatus) -> Self {
        Self {
            scope: match s.scope {
                QuotaScope::Tenant => "tenant",
                QuotaScope::User => "user",
            },
            period: period_name(s.period),
            limit_tokens: s.limit_tokens,
            used_tokens: s.used_tokens,
            remaining_tokens: s.remaining_tokens,
            resets_at: s.resets_at,
        }
    }
}

/// The caller's token usage and budgets.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct UsageResponse {
    /// Tokens the caller used since UTC midnight.
    pub user_tokens_today: u64,
    /// Tokens the caller used this calendar month (UTC).
    pub user_tokens_this_month: u64,
    /// The tenant's and the per-user budget, where set; empty means unlimited.
    pub budgets: Vec<BudgetStatusResponse>,
}

/// A tenant's token budgets.
#[utoipa::path(get, path = "/v1/tenants/{id}/quota", tag = "platform",
    params(("id" = Uuid, Path, description = "Tenant id")),
    responses((status = 200, body = QuotaResponse),
              (status = 403, body = Problem, content_type = "application/problem+json"),
              (status = 404, body = Problem, content_type = "application/problem+json")),
    security(("bearer" = [])))]
pub async fn get_quota(
    State(state): State<AppState>,
    PlatformAuth(ctx): PlatformAuth,
    Path(id): Path<Uuid>,
) -> Result<Json<QuotaResponse>, ApiError> {
    let tenant = TenantId::from_uuid(id);
    // Budgets of a tenant that does not exist are a 404, not "unlimited".
    state.tenancy.get_tenant(&ctx, tenant).await?;
    let q = admin(&state)?.quota(&ctx, tenant).await?;
    Ok(Json(QuotaResponse::new(tenant, q)))
}

/// Replaces a tenant's token budgets (a missing budget becomes unlimited).
#[utoipa::path(put, path = "/v1/tenants/{id}/quota", tag = "platform",
    params(("id" = Uuid, Path, description = "Tenant id")),
    request_body = QuotaBody,
    responses((status = 200, body = QuotaResponse),
              (status = 403, body = Problem, content_type = "application/problem+json"),
              (status = 404, body = Problem, content_type = "application/problem+json"),
              (status = 422, body = Problem, content_type = "application/problem+json")),
    security(("bearer" = [])))]
pub async fn put_quota(
    State(state): State<AppState>,
    PlatformAuth(ctx): PlatformAuth,
    Path(id): Path<Uuid>,
    Json(body): Json<QuotaBody>,
) -> Result<Json<QuotaResponse>, ApiError> {
    let quota = body.try_into_domain()?;
    let tenant = TenantId::from_uuid(id);
    state.tenancy.get_tenant(&ctx, tenant).await?;
    let q = admin(&state)?.set_quota(&ctx, tenant, quota).await?;
    Ok(Json(QuotaResponse::new(tenant, q)))
}

/// The caller's token usage today and this month, and where their budgets stand.
#[utoipa::path(get, path = "/v1/usage", tag = "chat",
    responses((status = 200, body = UsageResponse),
              (status = 403, body = Problem, content_type = "application/problem+json")),
    security(("bearer" = []), ("api_key" = [])))]
pub async fn usage(
    State(state): State<AppState>,
    TenantAuth(ctx): TenantAuth,
) -> Result<Json<UsageResponse>, ApiError> {
    let r = content(&state)?.usage_report(&ctx).await?;
    Ok(Json(UsageResponse {
        user_tokens_today: r.user_tokens_today,
        user_tokens_this_month: r.user_tokens_this_month,
        budgets: r.budgets.into_iter().map(Into::into).collect(),
    }))
}
