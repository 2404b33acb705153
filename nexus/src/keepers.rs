//! Talking to keepers: fetching and pushing shares, and whether each keeper is reachable.
//!
//! This module only moves shares; what they mean (which split, when to open, when a change is
//! confirmed) is decided by its callers. Reachability is learned from the share fetches the
//! recovery timer makes every interval; a change of a keeper's state (unreachable, back, or
//! answering with the wrong identity) is logged once, and the number of reachable keepers is
//! exported as a gauge.

use std::sync::Arc;
use std::sync::atomic::{AtomicU8, AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use http::{Method, StatusCode};
use spike_core::api::{ShareBody, WitnessBody};
use spike_core::crypto::Share;
use spike_core::id::{Builtin, TrustDomain};
use spike_runtime::net::{ClientError, MtlsClient};
use spike_runtime::svid::SvidSource;

use crate::fault;

/// A keeper that does not answer within this is treated as unreachable for this round (a
/// frozen keeper accepts TCP but never finishes the handshake).
const KEEPER_CALL_TIMEOUT: Duration = Duration::from_secs(2);

/// What one keeper holds, as fetched.
#[derive(Debug, Default)]
pub(crate) struct Held {
    /// Whether it answered as itself (with a share or without one).
    pub(crate) answered: bool,
    /// Its share of the split it was last given.
    pub(crate) current: Option<ShareBody>,
    /// The share of the split it keeps while a rotation or rekey is unconfirmed.
    pub(crate) previous: Option<ShareBody>,
}

/// How a round of fetches found the keepers, for the sealed reason: an operator must tell
/// keepers that are only unreachable (they still hold their shares: fix the network) from
/// keepers that answer empty (they restarted; a sealed Nexus cannot refill them).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Census {
    /// Keepers holding a share of split `epoch`.
    pub(crate) holding: usize,
    /// Keepers that answered but hold no share of that split.
    pub(crate) empty: usize,
    /// Keepers that did not answer as themselves.
    pub(crate) unreachable: usize,
}

impl Census {
    /// Counts `held` against split `epoch`.
    pub(crate) fn of(held: &[(u8, Held)], epoch: u32) -> Self {
        let holds = |h: &Held| {
            h.current
                .iter()
                .chain(&h.previous)
                .any(|b| b.epoch == epoch)
        };
        let count = |f: &dyn Fn(&Held) -> bool| held.iter().filter(|(_, h)| f(h)).count();
        Self {
            holding: count(&|h| h.answered && holds(h)),
            empty: count(&|h| h.answered && !holds(h)),
            unreachable: count(&|h| !h.answered),
        }
    }
}

impl std::fmt::Display for Census {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} keepers: {} holding a share, {} reachable but holding none, {} unreachable",
            self.holding + self.empty + self.unreachable,
            self.holding,
            self.empty,
            self.unreachable
        )
    }
}

/// The last thing a keeper's answers showed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
enum Reach {
    /// Not asked yet.
    Unknown = 0,
    /// Answered as itself.
    Reachable = 1,
    /// No answer (connect, handshake timeout, HTTP failure).
    Unreachable = 2,
    /// Refused by the TLS check of its identity, or serving another keeper's share.
    WrongIdentity = 3,
}

impl Reach {
    fn from_u8(v: u8) -> Self {
        match v {
            1 => Self::Reachable,
            2 => Self::Unreachable,
            3 => Self::WrongIdentity,
            _ => Self::Unknown,
        }
    }
}

/// One configured keeper.
struct Keeper {
    index: u8,
    client: MtlsClient,
    reach: AtomicU8,
    /// Whether the keeper may hold a previous share. It gets one only from a push with `keep`,
    /// and loses it on a push without `keep` or a restart, so once it is known to hold none it
    /// is not asked again until this Nexus pushes with `keep`. Counted, not a flag, so a push
    /// with `keep` racing a "none" answer is never forgotten: the keeper may hold one while
    /// `keep_pushes > clean_as_of`. It may at start (`1 > 0`): a Nexus that crashed after
    /// confirming a change may have left previous shares to drop.
    keep_pushes: AtomicU64,
    /// The `keep_pushes` count as of which the keeper was seen to hold no previous share.
    clean_as_of: AtomicU64,
}

impl Keeper {
    /// Records what the latest answer showed; logs only when it differs from the last one.
    fn observe(&self, now: Reach, why: Option<&dyn std::fmt::Display>) {
        let before = Reach::from_u8(self.reach.swap(now as u8, Ordering::Relaxed));
        if before == now {
            return;
        }
        let (keeper, addr) = (self.index, self.client.addr());
        let why = why.map(ToString::to_string).unwrap_or_default();
        match (before, now) {
            (Reach::Unknown, Reach::Reachable) => {
                tracing::info!(keeper, %addr, "keeper is reachable");
            }
            (_, Reach::Reachable) => {
                tracing::info!(keeper, %addr, "keeper is reachable again");
            }
            (_, Reach::Unreachable) => {
                tracing::warn!(keeper, %addr, error = %why, "keeper is unreachable");
            }
            (_, Reach::WrongIdentity) => {
                tracing::warn!(
                    keeper,
                    %addr,
                    error = %why,
                    "keeper answered with the wrong identity (or failed the TLS check); its shares are ignored"
                );
            }
            (_, Reach::Unknown) => {}
        }
    }

    /// `GET path`: the share, `None` when the keeper holds none, `Err` when it did not answer
    /// as itself.
    async fn get(&self, path: &str) -> Result<Option<ShareBody>, ()> {
        match self.client.send(Method::GET, path, None).await {
            Ok(r) if r.status == StatusCode::OK => {
                // The body holds the share in clear: parse it from a buffer that is wiped.
                match ShareBody::from_json(Vec::from(r.body)) {
                    Ok(body) if body.share.index() == self.index => Ok(Some(body)),
                    Ok(body) => {
                        let why = format!("it serves the share of keeper {}", body.share.index());
                        self.observe(Reach::WrongIdentity, Some(&why));
                        Err(())
                    }
                    Err(e) => {
                        tracing::debug!(keeper = self.index, error = %e, "keeper sent a bad share body");
                        Ok(None)
                    }
                }
            }
            Ok(r) => {
                if r.status != StatusCode::NOT_FOUND {
                    tracing::debug!(keeper = self.index, status = %r.status, "keeper answered unexpectedly");
                }
                Ok(None)
            }
            Err(e @ ClientError::Tls { .. }) => {
                self.observe(Reach::WrongIdentity, Some(&e));
                Err(())
            }
            Err(e) => {
                self.observe(Reach::Unreachable, Some(&e));
                Err(())
            }
        }
    }

    async fn fetch(&self, with_previous: bool) -> Held {
        let Ok(current) = self.get("/v1/share").await else {
            return Held::default();
        };
        self.observe(Reach::Reachable, None);
        let pushes = self.keep_pushes.load(Ordering::SeqCst);
        let previous = if with_previous && pushes > self.clean_as_of.load(Ordering::SeqCst) {
            match self.get("/v1/share/previous").await {
                Ok(None) => {
                    self.clean_as_of.fetch_max(pushes, Ordering::SeqCst);
                    None
                }
                Ok(some) => some,
                Err(()) => None,
            }
        } else {
            None
        };
        Held {
            answered: true,
            current,
            previous,
        }
    }

    /// The freshness witness the keeper holds; `None` if it holds none or did not answer.
    async fn witness(&self) -> Option<WitnessBody> {
        match self.client.send(Method::GET, "/v1/witness", None).await {
            Ok(r) if r.status == StatusCode::OK => match serde_json::from_slice(&r.body) {
                Ok(body) => Some(body),
                Err(e) => {
                    tracing::warn!(keeper = self.index, error = %e, "keeper sent a bad witness");
                    None
                }
            },
            Ok(_) => None,
            Err(e) => {
                tracing::debug!(keeper = self.index, error = %e, "keeper unreachable for its witness");
                None
            }
        }
    }

    async fn push_witness(&self, body: &[u8]) -> bool {
        match self
            .client
            .send(Method::PUT, "/v1/witness", Some(body.to_vec()))
            .await
        {
            Ok(r) if r.status.is_success() => true,
            Ok(r) => {
                tracing::debug!(keeper = self.index, status = %r.status, "keeper refused the witness");
                false
            }
            Err(e) => {
                tracing::debug!(keeper = self.index, error = %e, "keeper unreachable for the witness");
                false
            }
        }
    }

    async fn push(&self, share: &Share, epoch: u32, keep: Option<u32>) -> bool {
        let body = ShareBody {
            share: share.clone(),
            epoch,
        };
        let Ok(bytes) = body.to_json() else {
            return false;
        };
        let path = match keep {
            Some(k) => {
                self.keep_pushes.fetch_add(1, Ordering::SeqCst);
                format!("/v1/share?keep={k}")
            }
            None => "/v1/share".to_owned(),
        };
        let pushes = self.keep_pushes.load(Ordering::SeqCst);
        match self.client.send_secret(Method::PUT, &path, bytes).await {
            Ok(r) if r.status.is_success() => {
                if keep.is_none() {
                    // A push without `keep` drops the keeper's previous share.
                    self.clean_as_of.fetch_max(pushes, Ordering::SeqCst);
                }
                true
            }
            Ok(r) => {
                tracing::warn!(keeper = self.index, status = %r.status, "keeper refused its share");
                false
            }
            Err(e) => {
                tracing::debug!(keeper = self.index, error = %e, "keeper unreachable");
                false
            }
        }
    }
}

/// The configured keepers, keeper `i` (1-based) at position `i - 1`, and how many took the
/// store's witness at the last push.
pub(crate) struct Keepers(Vec<Keeper>, AtomicUsize);

impl Keepers {
    /// Clients for `addrs`, each checking that its server is `spike/keeper/<i>`.
    pub(crate) fn new(
        td: &TrustDomain,
        addrs: &[String],
        source: &Arc<dyn SvidSource>,
    ) -> Result<Self, spike_runtime::tls::TlsError> {
        addrs
            .iter()
            .enumerate()
            .map(|(i, addr)| {
                let index = u8::try_from(i + 1).unwrap_or(u8::MAX);
                let client =
                    MtlsClient::new(addr.clone(), Builtin::Keeper(index).id(td), source.clone())?
                        .with_timeout(KEEPER_CALL_TIMEOUT);
                Ok(Keeper {
                    index,
                    client,
                    reach: AtomicU8::new(Reach::Unknown as u8),
                    keep_pushes: AtomicU64::new(1),
                    clean_as_of: AtomicU64::new(0),
                })
            })
            .collect::<Result<Vec<_>, _>>()
            .map(|keepers| Self(keepers, AtomicUsize::new(0)))
    }

    /// How many keepers are configured.
    pub(crate) fn len(&self) -> usize {
        self.0.len()
    }

    /// How many keepers answered as themselves last time they were asked.
    pub(crate) fn reachable(&self) -> usize {
        self.0
            .iter()
            .filter(|k| Reach::from_u8(k.reach.load(Ordering::Relaxed)) == Reach::Reachable)
            .count()
    }

    /// Asks every keeper for its share, and for its previous one when `with_previous` (only
    /// kept while a rotation or rekey is unconfirmed) and the keeper may hold one. One entry per keeper, in index order.
    pub(crate) async fn fetch(&self, with_previous: bool) -> Vec<(u8, Held)> {
        let calls = self
            .0
            .iter()
            .map(|k| async move { (k.index, k.fetch(with_previous).await) });
        futures::future::join_all(calls).await
    }

    /// Sends keeper `i` share `i` of split `epoch`, asking it to keep its share of split
    /// `keep` too; returns how many acknowledged. `step` names the caller for the fault hook.
    pub(crate) async fn push(
        &self,
        step: &str,
        epoch: u32,
        shares: &[Share],
        keep: Option<u32>,
    ) -> u8 {
        let mut acked = 0u8;
        if fault::armed() {
            // One at a time, so the hook can stop after exactly n acknowledgements.
            for (k, share) in self.0.iter().zip(shares) {
                if k.push(share, epoch, keep).await {
                    acked = acked.saturating_add(1);
                    fault::step(&format!("{step}:pushed:{acked}")).await;
                }
            }
            return acked;
        }
        let calls = self
            .0
            .iter()
            .zip(shares)
            .map(|(k, share)| k.push(share, epoch, keep));
        for ok in futures::future::join_all(calls).await {
            acked = acked.saturating_add(u8::from(ok));
        }
        acked
    }

    /// The freshness witnesses the keepers hold, as `(keeper index, witness)`, for those that
    /// answered with one.
    pub(crate) async fn witnesses(&self) -> Vec<(u8, WitnessBody)> {
        let calls = self
            .0
            .iter()
            .map(|k| async move { k.witness().await.map(|w| (k.index, w)) });
        futures::future::join_all(calls)
            .await
            .into_iter()
            .flatten()
            .collect()
    }

    /// Sends every keeper the freshness witness; returns how many acknowledged.
    pub(crate) async fn push_witness(&self, witness: &WitnessBody) -> usize {
        let Ok(body) = serde_json::to_vec(witness) else {
            return 0;
        };
        let calls = self.0.iter().map(|k| k.push_witness(&body));
        let acked = futures::future::join_all(calls)
            .await
            .into_iter()
            .filter(|ok| *ok)
            .count();
        self.1.store(acked, Ordering::Relaxed);
        acked
    }

    /// How many keepers took the store's witness at the last push.
    pub(crate) fn witnessing(&self) -> usize {
        self.1.load(Ordering::Relaxed)
    }

    /// Sends one keeper (by 1-based index) its share; true if it acknowledged.
    pub(crate) async fn push_one(&self, share: &Share, epoch: u32, keep: Option<u32>) -> bool {
        match self.0.iter().find(|k| k.index == share.index()) {
            Some(k) => k.push(share, epoch, keep).await,
            None => false,
        }
    }
}

/// Every fetched share, as `(keeper index, share)`.
pub(crate) fn flatten(held: Vec<(u8, Held)>) -> Vec<(u8, ShareBody)> {
    held.into_iter()
        .flat_map(|(i, h)| h.current.into_iter().chain(h.previous).map(move |b| (i, b)))
        .collect()
}
