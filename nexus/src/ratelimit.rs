//! Per-caller rate limits on the expensive or sensitive routes.
//!
//! A token bucket per (route class, SPIFFE ID): `burst` requests at once, refilled at
//! `per_minute`, in the runtime's bounded table ([`TokenBuckets`]).

use std::time::Instant;

use serde::{Deserialize, Serialize};
use spike_core::error::ErrorCode;
use spike_core::id::SpiffeId;
pub use spike_runtime::ratelimit::Rate;
use spike_runtime::ratelimit::TokenBuckets;

use crate::error::AppError;

/// Most buckets kept.
const MAX_BUCKETS: usize = 10_000;

/// The routes that are rate limited.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) enum RateClass {
    /// `/v1/cipher/*`
    Cipher,
    /// `/v1/tokens/resolve`, per gateway.
    Resolve,
    /// Break-glass restore.
    Restore,
    /// Break-glass recover (export of custodian shares).
    Recover,
    /// Audit lines of refused requests (see `Nexus::audit`), on every route: beyond it a
    /// caller's refusals are answered `429` and counted instead of written one by one.
    Refused,
}

/// The limits of every class.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RateLimits {
    /// Cipher API, per caller.
    pub cipher: Rate,
    /// Token resolution, per gateway.
    pub resolve: Rate,
    /// Break-glass restore, per caller.
    pub restore: Rate,
    /// Break-glass recover, per caller.
    pub recover: Rate,
    /// Refused requests (and batches with refused items), per caller, on every route.
    pub refused: Rate,
}

impl Default for RateLimits {
    fn default() -> Self {
        Self {
            cipher: Rate {
                per_minute: 6000,
                burst: 200,
            },
            resolve: Rate {
                per_minute: 6000,
                burst: 200,
            },
            restore: Rate {
                per_minute: 10,
                burst: 5,
            },
            recover: Rate {
                per_minute: 2,
                burst: 2,
            },
            // One refusal line a second per caller at most, once a burst is spent: about
            // 3 MB an hour of summary-sized lines, where one caller could write megabytes a
            // second before.
            refused: Rate {
                per_minute: 60,
                burst: 30,
            },
        }
    }
}

pub(crate) struct RateLimiter {
    limits: RateLimits,
    buckets: TokenBuckets<(RateClass, SpiffeId)>,
}

impl RateLimiter {
    pub(crate) fn new(limits: RateLimits) -> Self {
        Self {
            limits,
            buckets: TokenBuckets::new(MAX_BUCKETS),
        }
    }

    fn rate(&self, class: RateClass) -> Rate {
        match class {
            RateClass::Cipher => self.limits.cipher,
            RateClass::Resolve => self.limits.resolve,
            RateClass::Restore => self.limits.restore,
            RateClass::Recover => self.limits.recover,
            RateClass::Refused => self.limits.refused,
        }
    }

    /// Takes one token for `caller` in `class`, or answers `429 rate_limited`.
    pub(crate) fn check(&self, class: RateClass, caller: &SpiffeId) -> Result<(), AppError> {
        self.check_at(class, caller, Instant::now())
    }

    /// True when `caller` has no token left in `class` now (nothing is taken).
    pub(crate) fn exhausted(&self, class: RateClass, caller: &SpiffeId) -> bool {
        self.buckets
            .exhausted(&(class, caller.clone()), Instant::now())
    }

    fn check_at(&self, class: RateClass, caller: &SpiffeId, now: Instant) -> Result<(), AppError> {
        if self
            .buckets
            .take(&(class, caller.clone()), self.rate(class), now)
        {
            Ok(())
        } else {
            Err(limited())
        }
    }
}

fn limited() -> AppError {
    AppError::new(
        ErrorCode::RateLimited,
        "too many requests from this SPIFFE ID on this route; slow down and retry",
    )
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn bursts_then_refills_per_caller() {
        let limiter = RateLimiter::new(RateLimits {
            restore: Rate {
                per_minute: 60,
                burst: 3,
            },
            ..RateLimits::default()
        });
        let a = SpiffeId::new("spiffe://spike.dev/a").unwrap();
        let b = SpiffeId::new("spiffe://spike.dev/b").unwrap();
        let t0 = Instant::now();
        for _ in 0..3 {
            assert!(limiter.check_at(RateClass::Restore, &a, t0).is_ok());
        }
        let e = limiter.check_at(RateClass::Restore, &a, t0).unwrap_err();
        assert_eq!(e.code(), ErrorCode::RateLimited);
        // Another caller, or another class, has its own bucket.
        assert!(limiter.check_at(RateClass::Restore, &b, t0).is_ok());
        assert!(limiter.check_at(RateClass::Cipher, &a, t0).is_ok());
        // One token per second comes back.
        let t1 = t0 + Duration::from_millis(1100);
        assert!(limiter.check_at(RateClass::Restore, &a, t1).is_ok());
        assert!(limiter.check_at(RateClass::Restore, &a, t1).is_err());
    }
}
