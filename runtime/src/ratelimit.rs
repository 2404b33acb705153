//! Token buckets: each key may make `burst` requests at once, refilled at `per_minute`.
//!
//! The table is bounded: when it is full, buckets that have refilled completely (forgetting
//! them changes nothing) are dropped first, and a new key finds no room only if every bucket
//! is in use, so a flood of distinct keys cannot grow memory without bound. Nexus limits its
//! routes per caller with it, the gateway its agents.

use std::borrow::Borrow;
use std::collections::HashMap;
use std::hash::Hash;
use std::sync::Mutex;
use std::time::Instant;

use serde::{Deserialize, Serialize};

use crate::config::ConfigError;

/// One limit: `burst` requests at once, refilled at `per_minute`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Rate {
    /// Sustained requests per minute.
    pub per_minute: u32,
    /// Requests allowed at once.
    pub burst: u32,
}

impl Rate {
    /// Checks both numbers are at least 1; `key` names the setting in the error
    /// (`rate_limits.cipher`).
    pub fn validate(self, key: &str) -> Result<(), ConfigError> {
        if self.burst == 0 || self.per_minute == 0 {
            return Err(ConfigError::invalid(format!(
                "{key}: per_minute and burst must be at least 1"
            )));
        }
        Ok(())
    }

    /// The most tokens a bucket holds (at least one).
    fn capacity(self) -> f64 {
        f64::from(self.burst.max(1))
    }
}

struct Bucket {
    rate: Rate,
    tokens: f64,
    at: Instant,
}

impl Bucket {
    /// The tokens this bucket holds at `now`, refilled at its rate and capped at its burst.
    fn refilled(&self, now: Instant) -> f64 {
        let per_sec = f64::from(self.rate.per_minute) / 60.0;
        (self.tokens + now.saturating_duration_since(self.at).as_secs_f64() * per_sec)
            .min(self.rate.capacity())
    }
}

/// A bounded table of token buckets by key.
pub struct TokenBuckets<K> {
    max: usize,
    buckets: Mutex<HashMap<K, Bucket>>,
}

impl<K> std::fmt::Debug for TokenBuckets<K> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenBuckets")
            .field("max", &self.max)
            .finish_non_exhaustive()
    }
}

impl<K: Hash + Eq> TokenBuckets<K> {
    /// An empty table of at most `max` buckets.
    pub fn new(max: usize) -> Self {
        Self {
            max: max.max(1),
            buckets: Mutex::new(HashMap::new()),
        }
    }

    /// Takes one token from `key`'s bucket (a new bucket starts full at `rate`): true if there
    /// was one, false if the key is over its rate or the table has no room for a new key.
    pub fn take<Q>(&self, key: &Q, rate: Rate, now: Instant) -> bool
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ToOwned<Owned = K> + ?Sized,
    {
        let mut buckets = self.buckets.lock().unwrap_or_else(|p| p.into_inner());
        if !buckets.contains_key(key) {
            if buckets.len() >= self.max {
                buckets.retain(|_, b| b.refilled(now) < b.rate.capacity());
                if buckets.len() >= self.max {
                    return false;
                }
            }
            buckets.insert(
                key.to_owned(),
                Bucket {
                    rate,
                    tokens: rate.capacity(),
                    at: now,
                },
            );
        }
        let Some(b) = buckets.get_mut(key) else {
            return false;
        };
        b.tokens = b.refilled(now);
        b.at = now;
        if b.tokens >= 1.0 {
            b.tokens -= 1.0;
            true
        } else {
            false
        }
    }

    /// True when `key` has no token left at `now` (nothing is taken).
    pub fn exhausted<Q>(&self, key: &Q, now: Instant) -> bool
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        let buckets = self.buckets.lock().unwrap_or_else(|p| p.into_inner());
        buckets.get(key).is_some_and(|b| b.refilled(now) < 1.0)
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    const RATE: Rate = Rate {
        per_minute: 60,
        burst: 3,
    };

    #[test]
    fn bursts_then_refills_per_key() {
        let buckets = TokenBuckets::<String>::new(100);
        let t0 = Instant::now();
        for _ in 0..3 {
            assert!(buckets.take("a", RATE, t0));
        }
        assert!(!buckets.take("a", RATE, t0));
        assert!(buckets.exhausted("a", t0));
        // Another key has its own bucket.
        assert!(buckets.take("b", RATE, t0));
        // One token per second comes back.
        let t1 = t0 + Duration::from_millis(1100);
        assert!(!buckets.exhausted("a", t1));
        assert!(buckets.take("a", RATE, t1));
        assert!(!buckets.take("a", RATE, t1));
    }

    #[test]
    fn a_full_table_drops_refilled_buckets_and_refuses_when_all_are_in_use() {
        let buckets = TokenBuckets::<String>::new(2);
        let t0 = Instant::now();
        assert!(buckets.take("a", RATE, t0));
        assert!(buckets.take("b", RATE, t0));
        // Both in use: no room for a third key, and the refusal takes nothing.
        assert!(!buckets.take("c", RATE, t0));
        assert!(buckets.take("a", RATE, t0));
        // Once they have refilled they are forgotten, and a new key fits.
        let later = t0 + Duration::from_secs(10);
        assert!(buckets.take("c", RATE, later));
    }
}
