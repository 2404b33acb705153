//! Refused requests cannot flood the audit log: each caller may have a bounded rate of
//! refusal lines ([`RateClass::Refused`](crate::ratelimit::RateClass::Refused)); beyond it, its refusals are answered
//! `429 rate_limited` and only counted, per reason, and the counts are written as one
//! `audit.suppressed` summary line with the caller's next audited refusal (or by the periodic
//! check, once the caller has a token again).

use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use spike_core::id::SpiffeId;

/// Most callers with pending counts; beyond, counts go to one caller-less entry.
const MAX_CALLERS: usize = 10_000;

/// Counts of refusals not written one by one, per caller (`None`: callers beyond the cap).
#[derive(Debug, Default)]
pub(crate) struct Suppressed {
    pending: Mutex<HashMap<Option<SpiffeId>, BTreeMap<&'static str, u64>>>,
    total: AtomicU64,
}

impl Suppressed {
    /// Counts `n` refusals of `caller` for `reason`.
    pub(crate) fn add(&self, caller: &SpiffeId, reason: &'static str, n: u64) {
        self.total.fetch_add(n, Ordering::Relaxed);
        let mut p = self.pending.lock().unwrap_or_else(|e| e.into_inner());
        let key = if p.len() < MAX_CALLERS || p.contains_key(&Some(caller.clone())) {
            Some(caller.clone())
        } else {
            None
        };
        *p.entry(key).or_default().entry(reason).or_default() += n;
    }

    /// Takes `caller`'s pending counts (and those of callers beyond the cap), to write.
    pub(crate) fn take(
        &self,
        caller: &SpiffeId,
    ) -> Vec<(Option<SpiffeId>, BTreeMap<&'static str, u64>)> {
        let mut p = self.pending.lock().unwrap_or_else(|e| e.into_inner());
        [Some(caller.clone()), None]
            .into_iter()
            .filter_map(|k| p.remove(&k).map(|c| (k, c)))
            .collect()
    }

    /// The callers with pending counts.
    pub(crate) fn callers(&self) -> Vec<SpiffeId> {
        let p = self.pending.lock().unwrap_or_else(|e| e.into_inner());
        p.keys().flatten().cloned().collect()
    }

    /// Puts counts back that could not be written.
    pub(crate) fn restore(&self, caller: Option<SpiffeId>, counts: BTreeMap<&'static str, u64>) {
        let mut p = self.pending.lock().unwrap_or_else(|e| e.into_inner());
        let entry = p.entry(caller).or_default();
        for (reason, n) in counts {
            *entry.entry(reason).or_default() += n;
        }
    }

    /// Refusals counted instead of written since start, for `/metrics`.
    pub(crate) fn total(&self) -> u64 {
        self.total.load(Ordering::Relaxed)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use std::time::{Duration, SystemTime};

    use axum::body::Body;
    use axum::http::{Request, StatusCode};
    use spike_runtime::tls::PeerIdentity;
    use tower::ServiceExt as _;

    use super::*;
    use crate::ratelimit::Rate;

    async fn get(router: &axum::Router, caller: &SpiffeId) -> StatusCode {
        let req = Request::builder()
            .uri("/v1/secrets/data/db/x")
            .extension(PeerIdentity {
                id: caller.clone(),
                not_after: SystemTime::now() + Duration::from_secs(3600),
            })
            .body(Body::empty())
            .unwrap();
        router.clone().oneshot(req).await.unwrap().status()
    }

    #[tokio::test]
    async fn refusals_beyond_the_rate_are_answered_429_and_summarized_later() {
        let served = crate::fixtures::served(
            |c| {
                c.rate_limits.refused = Rate {
                    per_minute: 1,
                    burst: 2,
                }
            },
            true,
        )
        .await;
        let nobody = SpiffeId::new("spiffe://spike.test/ns/x/sa/nobody").unwrap();
        let log = served.dir.path().join("audit.log");
        let lines = || std::fs::read_to_string(&log).unwrap().lines().count();
        assert_eq!(get(&served.router, &nobody).await, StatusCode::FORBIDDEN);
        assert_eq!(lines(), 1);
        // Refusals counted meanwhile are written with the caller's next audited refusal.
        served.nexus.suppressed().add(&nobody, "forbidden", 5);
        assert_eq!(get(&served.router, &nobody).await, StatusCode::FORBIDDEN);
        let text = std::fs::read_to_string(&log).unwrap();
        let summary = text.lines().nth(1).unwrap();
        assert!(summary.contains("\"audit.suppressed\""), "{text}");
        assert!(summary.contains("\"counts\":{\"forbidden\":5}"), "{text}");
        assert_eq!(lines(), 3);
        // Out of tokens: answered before running, and no line.
        for _ in 0..20 {
            assert_eq!(
                get(&served.router, &nobody).await,
                StatusCode::TOO_MANY_REQUESTS
            );
        }
        assert_eq!(lines(), 3);
        assert_eq!(served.nexus.suppressed().total(), 25);
        // The periodic flush writes nothing while the caller has no token.
        let opened = served.nexus.opened().unwrap();
        served.nexus.flush_suppressed(&opened).await;
        assert_eq!(lines(), 3);
        assert_eq!(served.nexus.suppressed().callers(), vec![nobody]);
    }
}
