//! Token budgets per tenant and per user over a calendar period (UTC day or month),
//! and the pure rule that decides, from what was used, whether a model may be called
//! now or when the budget resets. Enforced before every model call.

use chrono::{Datelike, Duration, NaiveDate, TimeZone, Utc};
use serde::{Deserialize, Serialize};
use trellis_kernel::Timestamp;

/// The calendar period a budget covers, in UTC.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BudgetPeriod {
    Day,
    Month,
}

impl BudgetPeriod {
    /// The period containing `now`: `[start, end)`.
    #[must_use]
    pub fn window(self, now: Timestamp) -> (Timestamp, Timestamp) {
        let today = now.date_naive();
        match self {
            BudgetPeriod::Day => {
                let start = midnight(today);
                (start, start + Duration::days(1))
            }
            BudgetPeriod::Month => {
                let first = NaiveDate::from_ymd_opt(today.year(), today.month(), 1);
                let next = if today.month() == 12 {
                    NaiveDate::from_ymd_opt(today.year() + 1, 1, 1)
                } else {
                    NaiveDate::from_ymd_opt(today.year(), today.month() + 1, 1)
                };
                match (first, next) {
                    (Some(f), Some(n)) => (midnight(f), midnight(n)),
                    // Only at the very end of chrono's calendar: never reset.
                    _ => (midnight(today), chrono::DateTime::<Utc>::MAX_UTC),
                }
            }
        }
    }
}

fn midnight(d: NaiveDate) -> Timestamp {
    Utc.from_utc_datetime(&d.and_time(chrono::NaiveTime::MIN))
}

/// At most `limit_tokens` (prompt plus completion) per period.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct TokenBudget {
    pub limit_tokens: u64,
    pub period: BudgetPeriod,
}

/// A tenant's budgets: one for the whole tenant and one each user gets. `None` means
/// unlimited.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Quota {
    pub tenant: Option<TokenBudget>,
    pub per_user: Option<TokenBudget>,
}

/// Which budget an outcome is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum QuotaScope {
    Tenant,
    User,
}

/// A budget and what was used of it in its current period.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BudgetUse {
    pub scope: QuotaScope,
    pub budget: TokenBudget,
    pub used_tokens: u64,
}

/// Where one budget stands now (for showing the user).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct BudgetStatus {
    pub scope: QuotaScope,
    pub period: BudgetPeriod,
    pub limit_tokens: u64,
    pub used_tokens: u64,
    pub remaining_tokens: u64,
    pub resets_at: Timestamp,
}

impl BudgetUse {
    #[must_use]
    pub fn status(&self, now: Timestamp) -> BudgetStatus {
        BudgetStatus {
            scope: self.scope,
            period: self.budget.period,
            limit_tokens: self.budget.limit_tokens,
            used_tokens: self.used_tokens,
            remaining_tokens: self.budget.limit_tokens.saturating_sub(self.used_tokens),
            resets_at: self.budget.period.window(now).1,
        }
    }
}

/// Whether a model may be called.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum QuotaDecision {
    Allowed,
    /// A budget is used up; calls are refused until `resets_at`.
    Exceeded {
        scope: QuotaScope,
        limit_tokens: u64,
        used_tokens: u64,
        resets_at: Timestamp,
    },
}

/// Allowed while every budget has tokens left. When several are used up, the answer
/// names the one that resets last: nothing can be called before then.
#[must_use]
pub fn decide(uses: &[BudgetUse], now: Timestamp) -> QuotaDecision {
    uses.iter()
        .filter(|u| u.used_tokens >= u.budget.limit_tokens)
        .map(|u| QuotaDecision::Exceeded {
            scope: u.scope,
            limit_tokens: u.budget.limit_tokens,
            used_tokens: u.used_tokens,
            resets_at: u.budget.period.window(now).1,
        })
        .max_by_key(|d| match d {
            QuotaDecision::Exceeded { resets_at, .. } => Some(*resets_at),
            QuotaDecision::Allowed => None,
        })
        .unwrap_or(QuotaDecision::Allowed)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(s: &str) -> Timestamp {
        chrono::DateTime::parse_from_rfc3339(s)
            .unwrap()
            .with_timezone(&Utc)
    }

    fn used(scope: QuotaScope, period: BudgetPeriod, limit: u64, used: u64) -> BudgetUse {
        BudgetUse {
            scope,
            budget: TokenBudget {
                limit_tokens: limit,
                period,
            },
            used_tokens: used,
        }
    }

    #[test]
    fn a_day_runs_from_utc_midnight_to_the_next() {
        let (s, e) = BudgetPeriod::Day.window(at("2026-03-14T17:30:00Z"));
        assert_eq!(
            (s, e),
            (at("2026-03-14T00:00:00Z"), at("2026-03-15T00:00:00Z"))
        );
    }

    #[test]
    fn a_month_runs_from_the_first_to_the_first_of_the_next_even_in_december() {
        let (s, e) = BudgetPeriod::Month.window(at("2026-12-31T23:59:59Z"));
        assert_eq!(
            (s, e),
            (at("2026-12-01T00:00:00Z"), at("2027-01-01T00:00:00Z"))
        );
        let (s, e) = BudgetPeriod::Month.window(at("2028-02-29T12:00:00Z"));
        assert_eq!(
            (s, e),
            (at("2028-02-01T00:00:00Z"), at("2028-03-01T00:00:00Z"))
        );
    }

    #[test]
    fn calls_are_allowed_while_every_budget_has_tokens_left() {
        let now = at("2026-03-14T10:00:00Z");
        let uses = [
            used(QuotaScope::Tenant, BudgetPeriod::Month, 1000, 999),
            used(QuotaScope::User, BudgetPeriod::Day, 100, 0),
        ];
        assert_eq!(decide(&uses, now), QuotaDecision::Allowed);
        assert_eq!(decide(&[], now), QuotaDecision::Allowed);
    }

    #[test]
    fn a_used_up_budget_refuses_until_its_period_ends() {
        let now = at("2026-03-14T10:00:00Z");
        let uses = [used(QuotaScope::User, BudgetPeriod::Day, 100, 100)];
        assert_eq!(
            decide(&uses, now),
            QuotaDecision::Exceeded {
                scope: QuotaScope::User,
                limit_tokens: 100,
                used_tokens: 100,
                resets_at: at("2026-03-15T00:00:00Z"),
            }
        );
    }

    #[test]
    fn when_several_budgets_are_used_up_the_latest_reset_is_reported() {
        let now = at("2026-03-14T10:00:00Z");
        let uses = [
            used(QuotaScope::User, BudgetPeriod::Day, 100, 150),
            used(QuotaScope::Tenant, BudgetPeriod::Month, 1000, 1000),
        ];
        let QuotaDecision::Exceeded {
            scope, resets_at, ..
        } = decide(&uses, now)
        else {
            panic!("expected a refusal");
        };
        assert_eq!(
            (scope, resets_at),
            (QuotaScope::Tenant, at("2026-04-01T00:00:00Z"))
        );
    }

    #[test]
    fn a_zero_budget_refuses_everything() {
        let now = at("2026-03-14T10:00:00Z");
        let uses = [used(QuotaScope::Tenant, BudgetPeriod::Day, 0, 0)];
        assert!(matches!(decide(&uses, now), QuotaDecision::Exceeded { .. }));
    }

    #[test]
    fn status_shows_what_is_left_and_when_it_resets() {
        let now = at("2026-03-14T10:00:00Z");
        let s = used(QuotaScope::User, BudgetPeriod::Day, 100, 130).status(now);
        assert_eq!(
            (s.remaining_tokens, s.resets_at),
            (0, at("2026-03-15T00:00:00Z"))
        );
    }
}
