//! Computing a status' conditions, purely: the old conditions, what this reconcile found and
//! the time in, the new conditions out.
//!
//! Kubernetes' conventions (api-conventions.md): `lastTransitionTime` changes only when a
//! condition's `status` flips, and `observedGeneration` says which spec the condition
//! describes. Keeping the time when nothing flipped is also what makes a no-op reconcile
//! compute exactly the status it read, so it writes nothing.

use crate::crd::{Condition, ConditionStatus};
use crate::nexus::SyncError;

/// The summary condition: the resource is what its spec declares.
pub const READY: &str = "Ready";
/// The operator is still working towards the spec.
pub const PROGRESSING: &str = "Progressing";
/// Something keeps the resource from its spec; the message says what.
pub const DEGRADED: &str = "Degraded";

/// One condition as a reconcile computes it, before the bookkeeping fields are added.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Observed {
    /// The condition type, such as [`READY`].
    pub type_: &'static str,
    /// Whether it holds.
    pub status: ConditionStatus,
    /// A CamelCase reason.
    pub reason: &'static str,
    /// A sentence for humans (never a secret value).
    pub message: String,
}

impl Observed {
    /// A condition that holds.
    pub fn yes(type_: &'static str, reason: &'static str, message: impl Into<String>) -> Self {
        Self {
            type_,
            status: ConditionStatus::True,
            reason,
            message: message.into(),
        }
    }

    /// A condition that does not hold.
    pub fn no(type_: &'static str, reason: &'static str, message: impl Into<String>) -> Self {
        Self {
            type_,
            status: ConditionStatus::False,
            reason,
            message: message.into(),
        }
    }
}

/// `old` with each of `observed` set by type: a condition whose `status` did not change keeps
/// its `lastTransitionTime`; one that flipped or is new gets `now`. Every condition set here
/// gets `generation` as its `observedGeneration`; conditions of other types are kept as they
/// were, and the order is the old order, then new types in the order given.
pub fn set_conditions(
    old: &[Condition],
    observed: &[Observed],
    generation: Option<i64>,
    now: &str,
) -> Vec<Condition> {
    let mut out = old.to_vec();
    for o in observed {
        let transition = |prev: Option<&Condition>| match prev {
            Some(p) if p.status == o.status => p.last_transition_time.clone(),
            _ => now.to_owned(),
        };
        let existing = out.iter_mut().find(|c| c.type_ == o.type_);
        let new = Condition {
            type_: o.type_.to_owned(),
            status: o.status,
            observed_generation: generation,
            last_transition_time: transition(existing.as_deref()),
            reason: o.reason.to_owned(),
            message: o.message.clone(),
        };
        match existing {
            Some(slot) => *slot = new,
            None => out.push(new),
        }
    }
    out
}

/// The condition of type `type_`, if present.
pub fn find<'a>(conditions: &'a [Condition], type_: &str) -> Option<&'a Condition> {
    conditions.iter().find(|c| c.type_ == type_)
}

/// How a reconcile ended, as the three standard conditions see it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// The resource is as declared.
    Ready {
        /// Why (`Synced`).
        reason: &'static str,
        /// What holds.
        message: String,
    },
    /// The spec cannot be made true as it stands (bad spec, a tenancy escape, a refusal):
    /// only a change of the spec or of its cluster helps.
    Failed {
        /// Why (`InvalidSpec`, `TenancyViolation`, `RefusedByNexus`…).
        reason: &'static str,
        /// What is wrong and which field.
        message: String,
    },
    /// A failure that retrying may cure (Nexus unreachable, a concurrent change): the
    /// operator keeps trying.
    Retrying {
        /// Why (`NexusUnavailable`, `ConcurrentChange`…).
        reason: &'static str,
        /// What failed.
        message: String,
    },
}

impl Outcome {
    /// `Ready`, `Progressing` and `Degraded` for this outcome.
    pub fn conditions(&self) -> [Observed; 3] {
        match self {
            Self::Ready { reason, message } => [
                Observed::yes(READY, reason, message.clone()),
                Observed::no(PROGRESSING, reason, "nothing left to do"),
                Observed::no(DEGRADED, reason, "no failure"),
            ],
            Self::Failed { reason, message } => [
                Observed::no(READY, reason, message.clone()),
                Observed::no(
                    PROGRESSING,
                    reason,
                    "waiting for a change of the spec or of its SpikeCluster",
                ),
                Observed::yes(DEGRADED, reason, message.clone()),
            ],
            Self::Retrying { reason, message } => [
                Observed::no(READY, reason, message.clone()),
                Observed::yes(PROGRESSING, reason, "retrying with backoff"),
                Observed::yes(DEGRADED, reason, message.clone()),
            ],
        }
    }

    /// True when the reconcile finished, successfully or for good, so that
    /// `observedGeneration` may advance (not while retrying: the spec is not yet handled).
    pub fn finished(&self) -> bool {
        !matches!(self, Self::Retrying { .. })
    }
}

impl Outcome {
    /// The outcome of a failed Nexus call: retrying when retrying may cure it, failed for
    /// good otherwise.
    pub fn of_sync_error(e: &SyncError) -> Self {
        let message = bounded(e.to_string());
        if e.is_transient() {
            Self::Retrying {
                reason: e.reason(),
                message,
            }
        } else {
            Self::Failed {
                reason: e.reason(),
                message,
            }
        }
    }
}

/// The longest message a condition or event carries: error texts quote addresses and codes,
/// and a status stays small.
pub const MAX_MESSAGE: usize = 1024;

/// `message`, cut to [`MAX_MESSAGE`] bytes at a character boundary.
pub fn bounded(mut message: String) -> String {
    if message.len() > MAX_MESSAGE {
        let mut end = MAX_MESSAGE;
        while !message.is_char_boundary(end) {
            end -= 1;
        }
        message.truncate(end);
        message.push('…');
    }
    message
}

/// The conditions of a resource the operator leaves alone because of `spec.paused` (its own
/// or its cluster's): `Progressing=False` with reason `Paused` and `message`; each of `others`
/// that `old` lacks as `Unknown` (the first visit while paused still writes every condition);
/// the rest kept as they were.
pub fn paused(old: &[Condition], others: &[&'static str], message: &str) -> Vec<Observed> {
    let unknown = others
        .iter()
        .filter(|t| find(old, t).is_none())
        .map(|&type_| Observed {
            type_,
            status: ConditionStatus::Unknown,
            reason: "Paused",
            message: "not reconciled while paused".to_owned(),
        });
    std::iter::once(Observed::no(PROGRESSING, "Paused", message))
        .chain(unknown)
        .collect()
}

/// Now, as the RFC 3339 UTC timestamp conditions carry (whole seconds, like the API server's).
pub fn now_rfc3339() -> String {
    let now = time::OffsetDateTime::now_utc()
        .replace_nanosecond(0)
        .unwrap_or_else(|_| time::OffsetDateTime::now_utc());
    now.format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_else(|_| "1970-01-01T00:00:00Z".to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    const T0: &str = "2026-01-01T00:00:00Z";
    const T1: &str = "2026-01-01T00:05:00Z";

    fn ready(message: &str) -> Outcome {
        Outcome::Ready {
            reason: "Synced",
            message: message.into(),
        }
    }

    #[test]
    fn first_conditions_all_start_now_with_the_generation() {
        let c = set_conditions(&[], &ready("in Nexus").conditions(), Some(3), T0);
        assert_eq!(
            c.iter().map(|c| c.type_.as_str()).collect::<Vec<_>>(),
            [READY, PROGRESSING, DEGRADED]
        );
        for c in &c {
            assert_eq!(c.last_transition_time, T0);
            assert_eq!(c.observed_generation, Some(3));
            assert_eq!(c.reason, "Synced");
        }
        assert_eq!(find(&c, READY).unwrap().status, ConditionStatus::True);
        assert_eq!(find(&c, READY).unwrap().message, "in Nexus");
        assert_eq!(find(&c, DEGRADED).unwrap().status, ConditionStatus::False);
    }

    #[test]
    fn the_transition_time_moves_only_when_the_status_flips() {
        let first = set_conditions(&[], &ready("a").conditions(), Some(1), T0);
        // Same statuses, new message and generation: times kept, the rest updated.
        let same = set_conditions(&first, &ready("b").conditions(), Some(2), T1);
        for c in &same {
            assert_eq!(c.last_transition_time, T0, "{}", c.type_);
            assert_eq!(c.observed_generation, Some(2));
        }
        assert_eq!(find(&same, READY).unwrap().message, "b");
        // A failure flips Ready and Degraded; Progressing stays False, and keeps its time.
        let failed = Outcome::Failed {
            reason: "InvalidSpec",
            message: "spec.pathPattern: bad".into(),
        };
        let flipped = set_conditions(&same, &failed.conditions(), Some(3), T1);
        assert_eq!(find(&flipped, READY).unwrap().last_transition_time, T1);
        assert_eq!(find(&flipped, DEGRADED).unwrap().last_transition_time, T1);
        assert_eq!(
            find(&flipped, PROGRESSING).unwrap().last_transition_time,
            T0
        );
        assert_eq!(
            find(&flipped, READY).unwrap().status,
            ConditionStatus::False
        );
        assert_eq!(
            find(&flipped, DEGRADED).unwrap().message,
            "spec.pathPattern: bad"
        );
    }

    #[test]
    fn a_repeated_computation_is_identical() {
        // What makes a no-op reconcile write nothing.
        let once = set_conditions(&[], &ready("a").conditions(), Some(1), T0);
        let twice = set_conditions(&once, &ready("a").conditions(), Some(1), T1);
        assert_eq!(once, twice);
    }

    #[test]
    fn other_condition_types_are_kept() {
        let other = Condition {
            type_: "Bootstrapped".into(),
            status: ConditionStatus::True,
            observed_generation: Some(1),
            last_transition_time: T0.into(),
            reason: "JobSucceeded".into(),
            message: String::new(),
        };
        let c = set_conditions(
            std::slice::from_ref(&other),
            &ready("a").conditions(),
            Some(2),
            T1,
        );
        assert_eq!(c[0], other);
        assert_eq!(c.len(), 4);
    }

    #[test]
    fn retrying_is_progressing_and_degraded_and_not_finished() {
        let r = Outcome::Retrying {
            reason: "NexusUnavailable",
            message: "Nexus is unavailable: connection refused".into(),
        };
        let [ready, progressing, degraded] = r.conditions();
        assert_eq!(ready.status, ConditionStatus::False);
        assert_eq!(progressing.status, ConditionStatus::True);
        assert_eq!(degraded.status, ConditionStatus::True);
        assert!(!r.finished());
        assert!(
            Outcome::Failed {
                reason: "InvalidSpec",
                message: String::new()
            }
            .finished()
        );
    }

    #[test]
    fn messages_are_bounded() {
        let long = "é".repeat(MAX_MESSAGE);
        let b = bounded(long);
        assert!(b.len() <= MAX_MESSAGE + '…'.len_utf8());
        assert!(b.ends_with('…'));
        assert_eq!(bounded("short".into()), "short");
    }

    #[test]
    fn nexus_errors_map_to_retrying_or_failed() {
        let down = SyncError::Unavailable {
            reason: "connection refused".into(),
        };
        assert!(matches!(
            Outcome::of_sync_error(&down),
            Outcome::Retrying {
                reason: "NexusUnavailable",
                ..
            }
        ));
        let unsupported = SyncError::Unsupported("secret k8s/a/b: no".into());
        assert_eq!(
            Outcome::of_sync_error(&unsupported),
            Outcome::Failed {
                reason: "UnsupportedChange",
                message: "secret k8s/a/b: no".into()
            }
        );
    }

    #[test]
    fn paused_sets_progressing_and_fills_only_missing_types() {
        let old = set_conditions(&[], &ready("a").conditions(), Some(1), T0);
        let p = paused(&old, &[READY, "Sealed"], "paused");
        assert_eq!(p.len(), 2);
        assert_eq!(p[0], Observed::no(PROGRESSING, "Paused", "paused"));
        assert_eq!(p[1].type_, "Sealed");
        assert_eq!(p[1].status, ConditionStatus::Unknown);
        let c = set_conditions(&old, &p, Some(1), T1);
        assert_eq!(find(&c, READY).unwrap(), find(&old, READY).unwrap());
    }

    #[test]
    fn now_is_rfc3339_in_whole_seconds() {
        let now = now_rfc3339();
        assert!(now.ends_with('Z') && now.len() == 20, "{now}");
    }
}
