//! Lease-based leader election on a `coordination.k8s.io/v1` Lease.
//!
//! Several operator replicas compete for one Lease; only its holder runs the controllers. The
//! elector uses exactly the verbs the chart grants (`get`, `create`, and `update` on the one
//! Lease name): no patch, list or watch. Every write is an `update` carrying the
//! `resourceVersion` that was read, so two candidates that both see an expired Lease cannot both
//! win: the API server accepts the first write and answers the second with 409 Conflict.
//!
//! # The contract with the caller
//!
//! [`LeaderElector::leadership`] hands out a `watch::Receiver<bool>`: `true` while this replica
//! holds the Lease. The controllers run only while it is `true`. When the Lease is lost (another
//! holder is seen, a renewal is refused with 409, or no renewal succeeded within the renew
//! deadline) the value flips to `false` and [`LeaderElector::run`] returns
//! [`LeaderError::LeadershipLost`]; the process should then exit, so Kubernetes restarts it clean
//! as a standby, rather than stop and restart controllers in place (whose caches and in-flight
//! reconciles would have to be proven quiet first). On graceful shutdown `run` releases the
//! Lease (empty holder, a duration of one second), so a standby takes over at its next retry
//! instead of waiting for the Lease to expire.
//!
//! # Why a Lease is judged expired by local observation
//!
//! A candidate does not compare the holder's `renewTime` with its own clock: the nodes' clocks may
//! disagree. As in client-go, it notes *when it first saw* the Lease in its current state and
//! takes over only when the Lease has not changed for a whole `leaseDurationSeconds` of its own
//! clock. The holder, in turn, gives up when it could not renew for `renew_deadline`, which is
//! shorter than the lease duration, so it stops before any standby may start.
//!
//! No crate was used: `kube-lease-manager` and `kube-leader-election` (and `kubert::lease`)
//! write the Lease with `patch` (and the first also deletes it), verbs the chart's least-privilege
//! Role does not grant, and they bring their own time crates; the algorithm is small.

use std::fmt;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use k8s_openapi::jiff::{SignedDuration, Timestamp};
use kube::Client;
use kube::api::{Api, PostParams};
use tokio::sync::watch;

/// The durations that govern the election, as in client-go's `LeaderElectionConfig`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LeaseTimings {
    /// How long a Lease stays valid without renewal; written as `leaseDurationSeconds`. A
    /// standby takes over a Lease that has not changed for this long.
    pub lease_duration: Duration,
    /// How long the leader keeps trying to renew before it gives up leadership. Shorter than
    /// `lease_duration`, so the old leader stops before a standby may start.
    pub renew_deadline: Duration,
    /// The pause between two attempts to acquire or renew.
    pub retry_period: Duration,
}

impl Default for LeaseTimings {
    /// client-go's defaults: 15 s lease, 10 s renew deadline, 2 s retry period.
    fn default() -> Self {
        Self {
            lease_duration: Duration::from_secs(15),
            renew_deadline: Duration::from_secs(10),
            retry_period: Duration::from_secs(2),
        }
    }
}

impl LeaseTimings {
    /// Checks the ordering the algorithm's safety rests on: `retry_period < renew_deadline <
    /// lease_duration`, and a lease duration of whole seconds (at least one), as the Lease
    /// stores it.
    pub fn validate(&self) -> Result<(), LeaderError> {
        let bad = |reason: &'static str| Err(LeaderError::InvalidTimings { reason });
        if self.lease_duration.subsec_nanos() != 0 || self.lease_duration < Duration::from_secs(1) {
            return bad("the lease duration must be a whole number of seconds, at least 1");
        }
        if i32::try_from(self.lease_duration.as_secs()).is_err() {
            return bad("the lease duration does not fit leaseDurationSeconds");
        }
        if self.renew_deadline >= self.lease_duration {
            return bad("the renew deadline must be shorter than the lease duration");
        }
        if self.retry_period.is_zero() || self.retry_period >= self.renew_deadline {
            return bad("the retry period must be positive and shorter than the renew deadline");
        }
        Ok(())
    }

    fn lease_duration_seconds(&self) -> i32 {
        // `validate` ran in `LeaderElector::new`, so this fits.
        i32::try_from(self.lease_duration.as_secs()).unwrap_or(i32::MAX)
    }
}

/// Why leader election stopped or could not start.
#[derive(Debug, thiserror::Error)]
pub enum LeaderError {
    /// The timings break `retry_period < renew_deadline < lease_duration`.
    #[error("invalid leader election timings: {reason}")]
    InvalidTimings {
        /// Which rule was broken.
        reason: &'static str,
    },
    /// The holder identity is empty (an empty holder means "released").
    #[error("the leader election identity (the pod name) is empty")]
    EmptyIdentity,
    /// This replica held the Lease and lost it; the process should exit.
    #[error("lost the leader election lease {namespace}/{name}: {cause}")]
    LeadershipLost {
        /// The Lease's namespace.
        namespace: String,
        /// The Lease's name.
        name: String,
        /// What showed the loss.
        cause: LossCause,
    },
}

/// How a leader learnt that it lost the Lease.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum LossCause {
    /// The Lease names another holder.
    TakenOver {
        /// The new holder (a pod name; `None` when the Lease was released).
        holder: Option<String>,
    },
    /// An update of the Lease was refused with 409: someone else wrote it.
    Conflict,
    /// No renewal succeeded within the renew deadline.
    RenewDeadlinePassed,
}

impl fmt::Display for LossCause {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::TakenOver { holder: Some(h) } => write!(f, "the lease is now held by {h}"),
            Self::TakenOver { holder: None } => f.write_str("the lease was released by another"),
            Self::Conflict => f.write_str("a renewal conflicted with another writer (409)"),
            Self::RenewDeadlinePassed => f.write_str("no renewal succeeded within the deadline"),
        }
    }
}

/// The wall clock the elector writes into the Lease and measures expiry with; injectable so
/// tests can drive time.
pub trait Clock: Send + Sync {
    /// The current time.
    fn now(&self) -> Timestamp;
}

/// The system's real-time clock.
#[derive(Clone, Copy, Debug, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> Timestamp {
        Timestamp::now()
    }
}

/// The Prometheus text of the `spike_operator_leader` gauge (1 while this replica holds the
/// Lease), for the caller to append to its `/metrics` render: with it a dashboard shows which
/// replica leads and alerts when none or two do.
pub fn leadership_metric(leading: bool) -> String {
    format!(
        "# HELP spike_operator_leader Whether this replica holds the leader election Lease.\n\
         # TYPE spike_operator_leader gauge\n\
         spike_operator_leader {}\n",
        u8::from(leading)
    )
}

/// What one round of the election should do, given the Lease as read.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Decision {
    /// No Lease exists: create it, naming this replica.
    Create,
    /// The Lease is free (released or expired): take it over, counting a transition.
    Acquire,
    /// This replica holds the Lease: renew it.
    Renew,
    /// Another replica holds a live Lease: stand by.
    Wait,
    /// This replica was leader and no longer is.
    Lost(LossCause),
}

/// Everything [`decide`] needs, read or remembered; no I/O.
#[derive(Clone, Copy, Debug)]
pub struct View<'a> {
    /// The Lease's spec as read, or `None` when the Lease does not exist.
    pub lease: Option<&'a LeaseSpec>,
    /// This replica's identity.
    pub me: &'a str,
    /// When this replica last renewed successfully, if it is the leader.
    pub leader_since_renew: Option<Timestamp>,
    /// When this replica first saw the Lease in exactly its current state (local clock).
    pub unchanged_since: Timestamp,
    /// The current time.
    pub now: Timestamp,
}

/// The pure election step: what to do with the Lease as read, who I am and what time it is.
pub fn decide(view: &View<'_>, timings: &LeaseTimings) -> Decision {
    if let Some(last_renew) = view.leader_since_renew
        && renew_deadline_passed(last_renew, view.now, timings)
    {
        return Decision::Lost(LossCause::RenewDeadlinePassed);
    }
    let leading = view.leader_since_renew.is_some();
    let Some(spec) = view.lease else {
        // A leader whose Lease vanished lost it: someone deleted it and may recreate it.
        return if leading {
            Decision::Lost(LossCause::TakenOver { holder: None })
        } else {
            Decision::Create
        };
    };
    let holder = spec.holder_identity.as_deref().filter(|h| !h.is_empty());
    match holder {
        Some(h) if h == view.me => Decision::Renew,
        _ if leading => Decision::Lost(LossCause::TakenOver {
            holder: holder.map(str::to_owned),
        }),
        None => Decision::Acquire,
        Some(_) => {
            let duration = spec
                .lease_duration_seconds
                .filter(|s| *s > 0)
                .map_or(timings.lease_duration, |s| {
                    Duration::from_secs(s.unsigned_abs().into())
                });
            if elapsed(view.unchanged_since, view.now) >= duration {
                Decision::Acquire
            } else {
                Decision::Wait
            }
        }
    }
}

/// Whether a leader that last renewed at `last_renew` must give up at `now`.
pub fn renew_deadline_passed(
    last_renew: Timestamp,
    now: Timestamp,
    timings: &LeaseTimings,
) -> bool {
    elapsed(last_renew, now) > timings.renew_deadline
}

/// `now - since`, or zero when the clock went backwards.
fn elapsed(since: Timestamp, now: Timestamp) -> Duration {
    let d: SignedDuration = now.duration_since(since);
    if d.is_negative() {
        Duration::ZERO
    } else {
        d.unsigned_abs()
    }
}

/// The Lease spec this replica writes for `decision` over `old` (the spec as read).
fn desired_spec(
    decision: &Decision,
    old: Option<&LeaseSpec>,
    me: &str,
    now: Timestamp,
    timings: &LeaseTimings,
) -> LeaseSpec {
    let transitions = old.and_then(|s| s.lease_transitions).unwrap_or(0);
    let (acquire_time, transitions) = match decision {
        // Renewing keeps the acquisition time and the count.
        Decision::Renew => (
            old.and_then(|s| s.acquire_time.clone())
                .unwrap_or(MicroTime(now)),
            transitions,
        ),
        Decision::Acquire => (MicroTime(now), transitions.saturating_add(1)),
        _ => (MicroTime(now), 0),
    };
    LeaseSpec {
        holder_identity: Some(me.to_owned()),
        lease_duration_seconds: Some(timings.lease_duration_seconds()),
        acquire_time: Some(acquire_time),
        renew_time: Some(MicroTime(now)),
        lease_transitions: Some(transitions),
        ..LeaseSpec::default()
    }
}

/// The spec of a released Lease: no holder and a one-second duration, so the next candidate
/// takes it at once; the transition count is kept.
fn released_spec(old: &LeaseSpec, now: Timestamp) -> LeaseSpec {
    LeaseSpec {
        holder_identity: None,
        lease_duration_seconds: Some(1),
        acquire_time: Some(MicroTime(now)),
        renew_time: Some(MicroTime(now)),
        lease_transitions: old.lease_transitions,
        ..LeaseSpec::default()
    }
}

/// The outcome of one round against the API server.
enum Round {
    /// This replica holds the Lease, renewed at the given time.
    Leading(Timestamp),
    /// Another replica holds it, or this one lost a race for it.
    Standby,
    /// This replica was leader and is not any more.
    Lost(LossCause),
}

/// Competes for one Lease and publishes whether this replica holds it.
pub struct LeaderElector {
    leases: Api<Lease>,
    namespace: String,
    name: String,
    me: String,
    timings: LeaseTimings,
    clock: Arc<dyn Clock>,
    leading: watch::Sender<bool>,
    /// The Lease spec last seen and since when (local clock), to judge expiry by observation.
    observed: Option<(Option<LeaseSpec>, Timestamp)>,
    /// When this replica last renewed, while it leads.
    last_renew: Option<Timestamp>,
}

impl fmt::Debug for LeaderElector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LeaderElector")
            .field("namespace", &self.namespace)
            .field("name", &self.name)
            .field("me", &self.me)
            .field("timings", &self.timings)
            .field("leading", &self.last_renew.is_some())
            .finish_non_exhaustive()
    }
}

impl LeaderElector {
    /// An elector for the Lease `lease_name` in `namespace`, holding it as `holder` (the pod
    /// name), with the system clock.
    pub fn new(
        client: Client,
        namespace: &str,
        lease_name: &str,
        holder: &str,
        timings: LeaseTimings,
    ) -> Result<Self, LeaderError> {
        Self::with_clock(
            client,
            namespace,
            lease_name,
            holder,
            timings,
            Arc::new(SystemClock),
        )
    }

    /// As [`LeaderElector::new`], with the given clock.
    pub fn with_clock(
        client: Client,
        namespace: &str,
        lease_name: &str,
        holder: &str,
        timings: LeaseTimings,
        clock: Arc<dyn Clock>,
    ) -> Result<Self, LeaderError> {
        timings.validate()?;
        if holder.is_empty() {
            return Err(LeaderError::EmptyIdentity);
        }
        Ok(Self {
            leases: Api::namespaced(client, namespace),
            namespace: namespace.to_owned(),
            name: lease_name.to_owned(),
            me: holder.to_owned(),
            timings,
            clock,
            leading: watch::Sender::new(false),
            observed: None,
            last_renew: None,
        })
    }

    /// `true` while this replica holds the Lease; the controllers run only then.
    pub fn leadership(&self) -> watch::Receiver<bool> {
        self.leading.subscribe()
    }

    /// Runs the election until `shutdown` completes (then releases the Lease if held and
    /// returns `Ok`) or the Lease is lost (then returns [`LeaderError::LeadershipLost`], and
    /// the process should exit). API errors while standing by are logged and retried.
    pub async fn run(mut self, shutdown: impl Future<Output = ()>) -> Result<(), LeaderError> {
        tokio::pin!(shutdown);
        loop {
            let round = tokio::select! {
                biased;
                () = &mut shutdown => break,
                round = self.attempt() => round,
            };
            match round {
                Round::Leading(at) => {
                    if self.last_renew.is_none() {
                        tracing::info!(lease = %self.name, holder = %self.me, "became the leader");
                    }
                    self.last_renew = Some(at);
                    self.leading
                        .send_if_modified(|l| !std::mem::replace(l, true));
                }
                Round::Standby => {}
                Round::Lost(cause) => return Err(self.lose(cause)),
            }
            tokio::select! {
                biased;
                () = &mut shutdown => break,
                () = tokio::time::sleep(self.timings.retry_period) => {}
            }
        }
        self.leading.send_replace(false);
        if self.last_renew.is_some() {
            self.release().await;
        }
        Ok(())
    }

    /// Flips leadership off and builds the error `run` returns.
    fn lose(&mut self, cause: LossCause) -> LeaderError {
        self.leading.send_replace(false);
        self.last_renew = None;
        tracing::error!(lease = %self.name, %cause, "lost leadership; exiting so a clean restart stands by");
        LeaderError::LeadershipLost {
            namespace: self.namespace.clone(),
            name: self.name.clone(),
            cause,
        }
    }

    /// One round, bounded in time: a leader must learn of a hung API server before its renew
    /// deadline passes, so the round gets at most what remains of it.
    async fn attempt(&mut self) -> Round {
        let budget = match self.last_renew {
            Some(at) => self
                .timings
                .renew_deadline
                .saturating_sub(elapsed(at, self.clock.now())),
            None => self.timings.renew_deadline,
        };
        match tokio::time::timeout(budget, self.try_acquire_or_renew()).await {
            Ok(Ok(round)) => round,
            Ok(Err(error)) => {
                tracing::warn!(lease = %self.name, %error, "leader election round failed");
                self.after_failure()
            }
            Err(_) => {
                tracing::warn!(lease = %self.name, "leader election round timed out");
                self.after_failure()
            }
        }
    }

    /// A failed round keeps a leader leading until its renew deadline passes.
    fn after_failure(&self) -> Round {
        match self.last_renew {
            Some(at) if renew_deadline_passed(at, self.clock.now(), &self.timings) => {
                Round::Lost(LossCause::RenewDeadlinePassed)
            }
            Some(at) => Round::Leading(at),
            None => Round::Standby,
        }
    }

    /// Reads the Lease, decides, and writes what the decision needs.
    async fn try_acquire_or_renew(&mut self) -> Result<Round, kube::Error> {
        let current = self.leases.get_opt(&self.name).await?;
        let now = self.clock.now();
        let spec = current.as_ref().map(|l| l.spec.clone().unwrap_or_default());
        let unchanged_since = match &self.observed {
            Some((seen, since)) if *seen == spec => *since,
            _ => {
                self.observed = Some((spec.clone(), now));
                now
            }
        };
        let view = View {
            lease: spec.as_ref(),
            me: &self.me,
            leader_since_renew: self.last_renew,
            unchanged_since,
            now,
        };
        let decision = decide(&view, &self.timings);
        let desired = desired_spec(&decision, spec.as_ref(), &self.me, now, &self.timings);
        let written = match (&decision, current) {
            (Decision::Wait, _) => return Ok(Round::Standby),
            (Decision::Lost(cause), _) => return Ok(Round::Lost(cause.clone())),
            (Decision::Create, _) => {
                let lease = Lease {
                    metadata: ObjectMeta {
                        name: Some(self.name.clone()),
                        namespace: Some(self.namespace.clone()),
                        ..ObjectMeta::default()
                    },
                    spec: Some(desired),
                };
                self.leases.create(&PostParams::default(), &lease).await
            }
            (Decision::Acquire | Decision::Renew, Some(mut lease)) => {
                // The resourceVersion as read stays in the metadata: the update is a
                // compare-and-set.
                lease.spec = Some(desired);
                self.leases
                    .replace(&self.name, &PostParams::default(), &lease)
                    .await
            }
            (Decision::Acquire | Decision::Renew, None) => return Ok(Round::Standby),
        };
        match written {
            Ok(lease) => {
                self.observed = Some((lease.spec, now));
                Ok(Round::Leading(now))
            }
            // Someone else created or updated the Lease first.
            Err(kube::Error::Api(status)) if status.is_conflict() || status.is_already_exists() => {
                if self.last_renew.is_some() {
                    Ok(Round::Lost(LossCause::Conflict))
                } else {
                    Ok(Round::Standby)
                }
            }
            Err(error) => Err(error),
        }
    }

    /// Best effort: hands the Lease back so a standby need not wait for it to expire. A failure
    /// is only logged; the Lease then expires on its own.
    async fn release(&self) {
        let released = async {
            let Some(mut lease) = self.leases.get_opt(&self.name).await? else {
                return Ok(false);
            };
            let spec = lease.spec.clone().unwrap_or_default();
            if spec.holder_identity.as_deref() != Some(self.me.as_str()) {
                return Ok(false);
            }
            lease.spec = Some(released_spec(&spec, self.clock.now()));
            self.leases
                .replace(&self.name, &PostParams::default(), &lease)
                .await?;
            Ok::<_, kube::Error>(true)
        };
        match tokio::time::timeout(self.timings.renew_deadline, released).await {
            Ok(Ok(true)) => tracing::info!(lease = %self.name, "released the lease"),
            Ok(Ok(false)) => {
                tracing::info!(lease = %self.name, "the lease was no longer ours to release")
            }
            Ok(Err(error)) => {
                tracing::warn!(lease = %self.name, %error, "could not release the lease")
            }
            Err(_) => tracing::warn!(lease = %self.name, "releasing the lease timed out"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ME: &str = "spike-operator-a";
    const OTHER: &str = "spike-operator-b";

    fn at(second: i64) -> Timestamp {
        Timestamp::from_second(1_800_000_000 + second).expect("a valid time")
    }

    fn held_by(holder: Option<&str>, duration: Option<i32>) -> LeaseSpec {
        LeaseSpec {
            holder_identity: holder.map(str::to_owned),
            lease_duration_seconds: duration,
            renew_time: Some(MicroTime(at(0))),
            acquire_time: Some(MicroTime(at(0))),
            lease_transitions: Some(3),
            ..LeaseSpec::default()
        }
    }

    /// `decide` for a lease, the time of my last renewal (if leading), the time the lease was
    /// first seen unchanged and now.
    fn run(lease: Option<&LeaseSpec>, leading: Option<i64>, since: i64, now: i64) -> Decision {
        let view = View {
            lease,
            me: ME,
            leader_since_renew: leading.map(at),
            unchanged_since: at(since),
            now: at(now),
        };
        decide(&view, &LeaseTimings::default())
    }

    #[test]
    fn an_absent_lease_is_created_by_a_candidate_and_lost_by_a_leader() {
        assert_eq!(run(None, None, 0, 0), Decision::Create);
        assert_eq!(
            run(None, Some(0), 0, 1),
            Decision::Lost(LossCause::TakenOver { holder: None })
        );
    }

    #[test]
    fn my_own_lease_is_renewed_whether_or_not_i_knew_i_led() {
        let mine = held_by(Some(ME), Some(15));
        assert_eq!(run(Some(&mine), Some(0), 0, 2), Decision::Renew);
        // After a container restart the pod name is the same: take the Lease back at once.
        assert_eq!(run(Some(&mine), None, 0, 0), Decision::Renew);
    }

    #[test]
    fn a_released_lease_is_acquired_at_once() {
        for holder in [None, Some("")] {
            let free = held_by(holder, Some(1));
            assert_eq!(run(Some(&free), None, 0, 0), Decision::Acquire);
        }
    }

    #[test]
    fn a_foreign_lease_is_waited_on_until_unchanged_for_its_duration() {
        let theirs = held_by(Some(OTHER), Some(15));
        assert_eq!(run(Some(&theirs), None, 0, 0), Decision::Wait);
        assert_eq!(run(Some(&theirs), None, 0, 14), Decision::Wait);
        assert_eq!(run(Some(&theirs), None, 0, 15), Decision::Acquire);
        assert_eq!(run(Some(&theirs), None, 0, 100), Decision::Acquire);
        // A Lease first seen late is still waited on in full: the holder's clock is not trusted.
        assert_eq!(run(Some(&theirs), None, 90, 100), Decision::Wait);
    }

    #[test]
    fn the_lease_s_own_duration_wins_over_mine_and_a_missing_one_falls_back() {
        let short = held_by(Some(OTHER), Some(3));
        assert_eq!(run(Some(&short), None, 0, 2), Decision::Wait);
        assert_eq!(run(Some(&short), None, 0, 3), Decision::Acquire);
        for duration in [None, Some(0), Some(-5)] {
            let unset = held_by(Some(OTHER), duration);
            assert_eq!(run(Some(&unset), None, 0, 14), Decision::Wait);
            assert_eq!(run(Some(&unset), None, 0, 15), Decision::Acquire);
        }
    }

    #[test]
    fn a_clock_that_went_backwards_counts_as_no_time() {
        let theirs = held_by(Some(OTHER), Some(15));
        assert_eq!(run(Some(&theirs), None, 50, 0), Decision::Wait);
    }

    #[test]
    fn a_leader_that_sees_another_holder_has_lost() {
        let theirs = held_by(Some(OTHER), Some(15));
        assert_eq!(
            run(Some(&theirs), Some(0), 0, 2),
            Decision::Lost(LossCause::TakenOver {
                holder: Some(OTHER.to_owned())
            })
        );
        let free = held_by(None, Some(1));
        assert_eq!(
            run(Some(&free), Some(0), 0, 2),
            Decision::Lost(LossCause::TakenOver { holder: None })
        );
    }

    #[test]
    fn a_leader_past_its_renew_deadline_has_lost_whatever_the_lease_says() {
        let mine = held_by(Some(ME), Some(15));
        assert_eq!(run(Some(&mine), Some(0), 0, 10), Decision::Renew);
        assert_eq!(
            run(Some(&mine), Some(0), 0, 11),
            Decision::Lost(LossCause::RenewDeadlinePassed)
        );
        assert_eq!(
            run(None, Some(0), 0, 11),
            Decision::Lost(LossCause::RenewDeadlinePassed)
        );
    }

    #[test]
    fn renewing_keeps_acquire_time_and_transitions_and_taking_over_counts_one() {
        let t = LeaseTimings::default();
        let mine = held_by(Some(ME), Some(15));
        let renewed = desired_spec(&Decision::Renew, Some(&mine), ME, at(5), &t);
        assert_eq!(renewed.acquire_time, Some(MicroTime(at(0))));
        assert_eq!(renewed.renew_time, Some(MicroTime(at(5))));
        assert_eq!(renewed.lease_transitions, Some(3));
        assert_eq!(renewed.lease_duration_seconds, Some(15));

        let theirs = held_by(Some(OTHER), Some(15));
        let taken = desired_spec(&Decision::Acquire, Some(&theirs), ME, at(20), &t);
        assert_eq!(taken.holder_identity.as_deref(), Some(ME));
        assert_eq!(taken.acquire_time, Some(MicroTime(at(20))));
        assert_eq!(taken.renew_time, Some(MicroTime(at(20))));
        assert_eq!(taken.lease_transitions, Some(4));

        let created = desired_spec(&Decision::Create, None, ME, at(1), &t);
        assert_eq!(created.lease_transitions, Some(0));
        assert_eq!(created.acquire_time, Some(MicroTime(at(1))));
    }

    #[test]
    fn a_release_empties_the_holder_and_shortens_the_duration() {
        let released = released_spec(&held_by(Some(ME), Some(15)), at(9));
        assert_eq!(released.holder_identity, None);
        assert_eq!(released.lease_duration_seconds, Some(1));
        assert_eq!(released.renew_time, Some(MicroTime(at(9))));
        assert_eq!(released.lease_transitions, Some(3));
    }

    #[test]
    fn the_leader_gauge_is_prometheus_text_of_zero_or_one() {
        let standby = leadership_metric(false);
        assert!(standby.starts_with("# HELP spike_operator_leader "));
        assert!(standby.contains("\n# TYPE spike_operator_leader gauge\n"));
        assert!(standby.ends_with("\nspike_operator_leader 0\n"));
        assert!(leadership_metric(true).ends_with("\nspike_operator_leader 1\n"));
    }

    #[test]
    fn timings_must_be_ordered_and_whole_seconds() {
        assert!(LeaseTimings::default().validate().is_ok());
        let s = Duration::from_secs;
        let bad = [
            (s(10), s(10), s(2)),
            (s(15), s(10), s(10)),
            (s(15), s(10), Duration::ZERO),
            (
                Duration::from_millis(1500),
                s(1),
                Duration::from_millis(100),
            ),
            (Duration::ZERO, Duration::ZERO, Duration::ZERO),
            (s(u64::from(u32::MAX)), s(10), s(2)),
        ];
        for (lease_duration, renew_deadline, retry_period) in bad {
            let t = LeaseTimings {
                lease_duration,
                renew_deadline,
                retry_period,
            };
            assert!(
                matches!(t.validate(), Err(LeaderError::InvalidTimings { .. })),
                "{t:?} should be refused"
            );
        }
    }
}
