//! The per-agent rate limit, the chain's step after the checks on the request and before
//! resolution: a token bucket per agent SPIFFE ID (`burst` at once, refilled at
//! `per_minute`), in the runtime's bounded table. A request over it is refused
//! `429 rate_limited` before Nexus is asked or anything is sent upstream.
//!
//! Callers without a valid SVID share one bucket of their own: they are not agents, so no
//! address or certificate of theirs can be told apart reliably (a source address can be one of
//! many, a certificate anyone's), and one bucket bounds what all of them together cost Nexus
//! without ever touching an agent's budget.

use std::time::Instant;

use serde::{Deserialize, Serialize};
use spike_runtime::config::ConfigError;
use spike_runtime::ratelimit::{Rate, TokenBuckets};

use crate::caller::Caller;
use crate::refusal::{Reason, Refusal};

/// Most agents with a bucket at once; when every bucket is in use, a new agent is refused
/// until one has refilled.
const MAX_AGENTS: usize = 10_000;

/// The `[rate_limits]` settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RateLimits {
    /// Requests per agent SPIFFE ID.
    pub agent: Rate,
    /// Requests of every caller without a valid SVID, together.
    pub unauthenticated: Rate,
}

impl Default for RateLimits {
    fn default() -> Self {
        Self {
            agent: Rate {
                per_minute: 1200,
                burst: 100,
            },
            // Well under what Nexus lets a gateway be refused (`rate_limits.refused`, 30 at
            // once and 60 a minute): every token these callers send is refused there, charged
            // to the gateway, and past that budget Nexus refuses the gateway's resolutions too.
            unauthenticated: Rate {
                per_minute: 20,
                burst: 10,
            },
        }
    }
}

impl RateLimits {
    /// Checks every rate is at least 1.
    pub fn validate(&self) -> Result<(), ConfigError> {
        self.agent.validate("rate_limits.agent")?;
        self.unauthenticated.validate("rate_limits.unauthenticated")
    }
}

/// The buckets.
#[derive(Debug)]
pub(crate) struct RateLimiter {
    limits: RateLimits,
    agents: TokenBuckets<String>,
    unauthenticated: TokenBuckets<()>,
}

impl RateLimiter {
    pub(crate) fn new(limits: RateLimits) -> Self {
        Self {
            limits,
            agents: TokenBuckets::new(MAX_AGENTS),
            unauthenticated: TokenBuckets::new(1),
        }
    }

    /// Takes one request from `caller`'s bucket, or refuses it.
    pub(crate) fn admit(&self, caller: &Caller) -> Result<(), Refusal> {
        if self.admit_at(caller, Instant::now()) {
            return Ok(());
        }
        let rate = match caller.agent() {
            Some(_) => self.limits.agent,
            None => self.limits.unauthenticated,
        };
        // One request is refilled every 60 / per_minute seconds.
        let refill = 60u64.div_ceil(u64::from(rate.per_minute.max(1)));
        Err(Refusal::new(
            Reason::RateLimited,
            "too many requests from this caller: slow down and retry after the Retry-After seconds",
        )
        .retry_after(refill))
    }

    fn admit_at(&self, caller: &Caller, now: Instant) -> bool {
        match caller.agent() {
            Some(id) => self.agents.take(id.as_str(), self.limits.agent, now),
            None => self
                .unauthenticated
                .take(&(), self.limits.unauthenticated, now),
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use std::time::Duration;

    use spike_core::id::SpiffeId;
    use spike_runtime::tls::Unauthenticated;

    use super::*;

    #[test]
    fn each_agent_has_its_bucket_and_unauthenticated_callers_share_one() {
        let limiter = RateLimiter::new(RateLimits {
            agent: Rate {
                per_minute: 60,
                burst: 2,
            },
            unauthenticated: Rate {
                per_minute: 60,
                burst: 1,
            },
        });
        let a = Caller::from(SpiffeId::new("spiffe://spike.dev/agents/a").unwrap());
        let b = Caller::from(SpiffeId::new("spiffe://spike.dev/agents/b").unwrap());
        let none = Caller::Unauthenticated(Unauthenticated {
            reason: "no_certificate",
        });
        let foreign = Caller::Unauthenticated(Unauthenticated {
            reason: "other_trust_domain",
        });
        let t0 = Instant::now();
        assert!(limiter.admit_at(&a, t0));
        assert!(limiter.admit_at(&a, t0));
        assert!(!limiter.admit_at(&a, t0));
        assert!(limiter.admit_at(&b, t0));
        assert!(limiter.admit_at(&none, t0));
        // Whatever their reason, unauthenticated callers draw on the same bucket, and an
        // empty one leaves the agents' alone.
        assert!(!limiter.admit_at(&foreign, t0));
        assert!(limiter.admit_at(&b, t0));
        // One a second comes back.
        let t1 = t0 + Duration::from_millis(1100);
        assert!(limiter.admit_at(&a, t1));
        assert!(limiter.admit_at(&foreign, t1));
    }

    #[test]
    fn a_zero_rate_is_a_configuration_error() {
        assert!(RateLimits::default().validate().is_ok());
        let mut l = RateLimits::default();
        l.unauthenticated.per_minute = 0;
        let e = l.validate().unwrap_err().to_string();
        assert!(e.contains("rate_limits.unauthenticated"), "{e}");
    }
}
