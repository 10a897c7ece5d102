//! Counting failed logins in process memory. Each key (an account or a client
//! address) keeps the times of its recent failures; at the limit, further attempts
//! wait until the oldest failure leaves the window. With several app instances each
//! counts on its own, which still bounds guessing to instances × limit per window.

use chrono::Duration;
use std::collections::HashMap;
use std::sync::Mutex;
use trellis_identity::LoginThrottle;
use trellis_kernel::Timestamp;

/// How many failures each kind of key may have per window.
#[derive(Debug, Clone, Copy)]
pub struct ThrottleLimits {
    pub per_account: usize,
    pub per_client: usize,
    pub window: Duration,
}

impl Default for ThrottleLimits {
    fn default() -> Self {
        Self {
            per_account: 5,
            per_client: 50,
            window: Duration::minutes(15),
        }
    }
}

/// Bounds the map so a flood of distinct keys cannot exhaust memory.
const MAX_KEYS: usize = 100_000;

/// The in-process login throttle.
#[derive(Debug, Default)]
pub struct InMemoryLoginThrottle {
    limits: ThrottleLimits,
    failures: Mutex<HashMap<String, Vec<Timestamp>>>,
}

impl InMemoryLoginThrottle {
    #[must_use]
    pub fn new(limits: ThrottleLimits) -> Self {
        Self {
            limits,
            failures: Mutex::new(HashMap::new()),
        }
    }

    fn limit_for(&self, key: &str) -> usize {
        if key.starts_with("ip:") {
            self.limits.per_client
        } else {
            self.limits.per_account
        }
    }
}

impl LoginThrottle for InMemoryLoginThrottle {
    fn retry_after(&self, keys: &[String], now: Timestamp) -> Option<u64> {
        let mut map = self
            .failures
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let window = self.limits.window;
        keys.iter()
            .filter_map(|k| {
                let times = map.get_mut(k)?;
                times.retain(|t| *t + window > now);
                let limit = self.limit_for(k);
                if times.len() < limit {
                    return None;
                }
                let oldest_that_counts = times[times.len() - limit];
                let secs = (oldest_that_counts + window - now).num_seconds().max(1);
                u64::try_from(secs).ok()
            })
            .max()
    }

    fn record_failure(&self, keys: &[String], now: Timestamp) {
        let mut map = self
            .failures
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if map.len() >= MAX_KEYS {
            let window = self.limits.window;
            map.retain(|_, times| times.last().is_some_and(|t| *t + window > now));
        }
        for k in keys {
            map.entry(k.clone()).or_default().push(now);
        }
    }

    fn record_success(&self, keys: &[String]) {
        let mut map = self
            .failures
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        for k in keys {
            map.remove(k);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_sixth_failure_on_an_account_is_throttled_until_the_window_passes() {
        let t = InMemoryLoginThrottle::new(ThrottleLimits::default());
        let keys = vec!["acct:acme:ann@example.com".to_owned()];
        let now = chrono::Utc::now();
        for _ in 0..5 {
            assert_eq!(t.retry_after(&keys, now), None);
            t.record_failure(&keys, now);
        }
        let wait = t.retry_after(&keys, now).unwrap();
        assert!(wait > 800 && wait <= 900, "{wait}");
        assert_eq!(t.retry_after(&keys, now + Duration::minutes(16)), None);
    }

    #[test]
    fn a_success_clears_the_account_count() {
        let t = InMemoryLoginThrottle::new(ThrottleLimits::default());
        let keys = vec!["acct:x:y@example.com".to_owned()];
        let now = chrono::Utc::now();
        for _ in 0..4 {
            t.record_failure(&keys, now);
        }
        t.record_success(&keys);
        for _ in 0..4 {
            t.record_failure(&keys, now);
        }
        assert_eq!(t.retry_after(&keys, now), None);
    }

    #[test]
    fn a_client_address_has_its_own_larger_budget() {
        let t = InMemoryLoginThrottle::new(ThrottleLimits::default());
        let ip = vec!["ip:10.0.0.1".to_owned()];
        let now = chrono::Utc::now();
        for _ in 0..49 {
            t.record_failure(&ip, now);
        }
        assert_eq!(t.retry_after(&ip, now), None);
        t.record_failure(&ip, now);
        assert!(t.retry_after(&ip, now).is_some());
    }
}
