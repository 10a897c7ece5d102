//! Token usage and budgets as people see them: a tenant user's own usage this day
//! and month with where their budgets stand, and the platform's administration of
//! each tenant's budgets (a tenant reads its budgets but never sets them).

use super::{ContentService, acting_user, require};
use crate::quota::BudgetStatus;
use crate::{BudgetPeriod, Quota, QuotaAdmin, Result, TokenBudget, UsageScope};
use serde::Serialize;
use std::sync::Arc;
use trellis_kernel::{InvalidValue, Permission, PlatformCtx, TenantCtx, TenantId};

/// The largest budget that can be set, in tokens: far beyond any plan, and well inside
/// what storage can count.
pub const MAX_BUDGET_TOKENS: u64 = 1_000_000_000_000_000;

/// The caller's usage and budgets.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct UsageReport {
    /// Tokens the caller used since UTC midnight.
    pub user_tokens_today: u64,
    /// Tokens the caller used since the first of the month (UTC).
    pub user_tokens_this_month: u64,
    /// The tenant's and the per-user budget, where set (none: unlimited).
    pub budgets: Vec<BudgetStatus>,
}

impl ContentService {
    /// What the caller used today and this month, and where their budgets stand.
    ///
    /// # Errors
    /// `Forbidden` without `chat_use` or without a user.
    pub async fn usage_report(&self, ctx: &TenantCtx) -> Result<UsageReport> {
        require(ctx, Permission::ChatUse)?;
        let me = acting_user(ctx)?;
        let now = self.clock.now();
        let mut used = [0u64; 2];
        for (slot, period) in used
            .iter_mut()
            .zip([BudgetPeriod::Day, BudgetPeriod::Month])
        {
            let (from, until) = period.window(now);
            *slot = self
                .usage
                .total_tokens(ctx, UsageScope::User(me), from, until)
                .await?;
        }
        Ok(UsageReport {
            user_tokens_today: used[0],
            user_tokens_this_month: used[1],
            budgets: self.quota_status(ctx).await?,
        })
    }
}

/// Setting tenants' budgets, for platform superadmins.
#[derive(Clone)]
pub struct QuotaAdministration {
    quotas: Arc<dyn QuotaAdmin>,
}

impl QuotaAdministration {
    #[must_use]
    pub fn new(quotas: Arc<dyn QuotaAdmin>) -> Self {
        Self { quotas }
    }

    /// The tenant's budgets (unlimited when never set). The caller checks that the
    /// tenant exists.
    ///
    /// # Errors
    /// When storage fails.
    pub async fn quota(&self, ctx: &PlatformCtx, tenant: TenantId) -> Result<Quota> {
        self.quotas.quota_of(ctx, tenant).await
    }

    /// Replaces the tenant's budgets and returns them as stored.
    ///
    /// # Errors
    /// `Invalid` for a budget above [`MAX_BUDGET_TOKENS`].
    pub async fn set_quota(
        &self,
        ctx: &PlatformCtx,
        tenant: TenantId,
        quota: Quota,
    ) -> Result<Quota> {
        check_budget("tenant", quota.tenant)?;
        check_budget("per_user", quota.per_user)?;
        self.quotas.replace_quota(ctx, tenant, quota).await?;
        self.quotas.quota_of(ctx, tenant).await
    }
}

fn check_budget(field: &'static str, budget: Option<TokenBudget>) -> Result<()> {
    match budget {
        Some(b) if b.limit_tokens > MAX_BUDGET_TOKENS => {
            Err(InvalidValue::new(field, format!("must be at most {MAX_BUDGET_TOKENS}")).into())
        }
        _ => Ok(()),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::MockQuotaAdmin;

    #[tokio::test]
    async fn a_budget_beyond_the_maximum_is_refused_before_anything_is_stored() {
        let mut port = MockQuotaAdmin::new();
        port.expect_replace_quota().never();
        let admin = QuotaAdministration::new(Arc::new(port));
        let quota = Quota {
            tenant: None,
            per_user: Some(TokenBudget {
                limit_tokens: MAX_BUDGET_TOKENS + 1,
                period: BudgetPeriod::Day,
            }),
        };
        let err = admin
            .set_quota(&PlatformCtx::system(), TenantId::new(), quota)
            .await
            .unwrap_err();
        assert!(matches!(err, crate::ContentError::Invalid(_)), "{err:?}");
    }
}
