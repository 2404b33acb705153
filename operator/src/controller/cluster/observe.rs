//! The pure "observe" step of the `SpikeCluster` controller: what the applied objects report
//! (ready keepers, a ready Nexus, the bootstrap Job's state) becomes the cluster's phase and
//! conditions. No Kubernetes call happens here.
//!
//! What the operator can see without a Nexus client: Nexus's readiness probe is `/readyz`,
//! which is 200 only while Nexus is unsealed, so a ready Nexus pod *is* an unsealed Nexus; a
//! keeper's readiness probe passes only while it holds its share. `Sealed` is inferred from
//! those, not asked of Nexus.

use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::batch::v1::Job;

use crate::controller::conditions::{
    self, DEGRADED, Observed, PROGRESSING, READY, bounded, set_conditions,
};
use crate::crd::{AppliedPart, ClusterPhase, ConditionStatus, SpikeClusterStatus};

/// Bootstrap ran: Nexus has a root key and the keepers their shares.
pub const BOOTSTRAPPED: &str = "Bootstrapped";
/// Nexus holds no root key in memory and serves nothing.
pub const SEALED: &str = "Sealed";

/// Where the bootstrap Job is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BootstrapState {
    /// Created, no pod running yet (or not created yet).
    NotStarted,
    /// A pod is running `spike bootstrap`.
    Running,
    /// It completed.
    Succeeded,
    /// It gave up (its backoff limit, a deadline): the Job's own reason and message.
    Failed {
        /// The Job's `Failed` condition reason (`BackoffLimitExceeded`…).
        reason: String,
        /// Its message.
        message: String,
    },
}

/// The state of `job` from its status.
pub fn bootstrap_state(job: &Job) -> BootstrapState {
    let Some(status) = &job.status else {
        return BootstrapState::NotStarted;
    };
    let holds = |type_: &str| {
        status
            .conditions
            .iter()
            .flatten()
            .find(|c| c.type_ == type_ && c.status == "True")
    };
    if holds("Complete").is_some() || status.succeeded.unwrap_or(0) > 0 {
        return BootstrapState::Succeeded;
    }
    if let Some(failed) = holds("Failed") {
        return BootstrapState::Failed {
            reason: failed.reason.clone().unwrap_or_else(|| "Failed".to_owned()),
            message: failed.message.clone().unwrap_or_default(),
        };
    }
    if status.active.unwrap_or(0) > 0 {
        BootstrapState::Running
    } else {
        BootstrapState::NotStarted
    }
}

/// True when the existing bootstrap Job would run something else than `desired` (another
/// image, or other `--shares`/`--threshold`): a Job's pod template is immutable, and bootstrap
/// runs once, so the controller leaves the Job and says so. Only the image and arguments are
/// compared: the API server fills in defaults everywhere else.
pub fn bootstrap_differs(existing: &Job, desired: &Job) -> bool {
    let run = |job: &Job| {
        job.spec
            .as_ref()
            .and_then(|s| s.template.spec.as_ref())
            .map(|p| {
                p.containers
                    .iter()
                    .map(|c| (c.image.clone(), c.args.clone()))
                    .collect::<Vec<_>>()
            })
    };
    run(existing) != run(desired)
}

/// A StatefulSet's ready pods.
pub fn ready_replicas(sts: &StatefulSet) -> i32 {
    sts.status
        .as_ref()
        .and_then(|s| s.ready_replicas)
        .unwrap_or(0)
}

/// What the applied objects report.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Workloads {
    /// `spec.keepers.replicas`.
    pub keepers: i32,
    /// `spec.keepers.threshold`.
    pub threshold: i32,
    /// Keepers that are ready (each holds its share).
    pub ready_keepers: i32,
    /// Nexus's pod is ready, which is to say unsealed.
    pub nexus_ready: bool,
    /// The bootstrap Job.
    pub bootstrap: BootstrapState,
    /// Set when the existing Job runs other settings than the spec's now
    /// ([`bootstrap_differs`]).
    pub bootstrap_outdated: bool,
    /// The bootstrap Job's name, for messages.
    pub bootstrap_job: String,
}

/// What a reconcile found, for the status.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Observation {
    /// `spec.paused`: nothing applied.
    Paused,
    /// The spec (or building from it) was refused; nothing applied.
    Invalid {
        /// What is wrong and which field.
        message: String,
    },
    /// Deleted, and held by the finalizer until the break-glass export is acknowledged.
    DeletionHeld {
        /// What to run and which annotation to set.
        message: String,
    },
    /// Everything was applied; this is what it reports.
    Applied(Workloads),
    /// An apply or a deletion was refused or failed (an admission webhook, a missing grant, an
    /// API server that is down): retried with backoff.
    ApplyFailed {
        /// The API server's answer (objects of a cluster hold no secret value).
        message: String,
    },
}

/// The phase and the five conditions of an applied cluster.
fn applied(w: &Workloads) -> (ClusterPhase, Vec<Observed>) {
    let keepers = format!(
        "{} of {} keepers hold their shares (threshold {})",
        w.ready_keepers, w.keepers, w.threshold
    );
    let not_bootstrapped = Observed::yes(
        SEALED,
        "NotBootstrapped",
        "Nexus has no root key until bootstrap completes",
    );
    let outdated = if w.bootstrap_outdated {
        format!(
            "; the spec's keepers or image changed since, but bootstrap runs once, so Job {} is left as it is",
            w.bootstrap_job
        )
    } else {
        String::new()
    };
    if let BootstrapState::Failed { reason, message } = &w.bootstrap
        && !w.nexus_ready
    {
        let failed = bounded(format!(
            "bootstrap Job {} failed ({reason}): {message}",
            w.bootstrap_job
        ));
        return (
            ClusterPhase::Degraded,
            vec![
                Observed::no(BOOTSTRAPPED, "BootstrapFailed", failed.clone()),
                not_bootstrapped,
                Observed::no(READY, "BootstrapFailed", failed.clone()),
                Observed::no(
                    PROGRESSING,
                    "BootstrapFailed",
                    format!(
                        "waiting for a fix: its pod logs say why; deleting Job {} runs bootstrap again",
                        w.bootstrap_job
                    ),
                ),
                Observed::yes(DEGRADED, "BootstrapFailed", failed),
            ],
        );
    }
    if w.nexus_ready {
        // Only a bootstrapped Nexus can be unsealed, whatever became of the Job since.
        let progressing = if w.ready_keepers < w.keepers {
            Observed::yes(PROGRESSING, "KeepersStarting", keepers.clone())
        } else {
            Observed::no(PROGRESSING, "Ready", "nothing left to do")
        };
        return (
            ClusterPhase::Ready,
            vec![
                Observed::yes(
                    BOOTSTRAPPED,
                    "Bootstrapped",
                    format!("Nexus has its root key{outdated}"),
                ),
                Observed::no(SEALED, "Unsealed", "Nexus is unsealed"),
                Observed::yes(
                    READY,
                    "Unsealed",
                    format!("Nexus is unsealed and serving; {keepers}"),
                ),
                progressing,
                Observed::no(DEGRADED, "Ready", "no failure"),
            ],
        );
    }
    match w.bootstrap {
        BootstrapState::Succeeded => (
            ClusterPhase::Sealed,
            vec![
                Observed::yes(
                    BOOTSTRAPPED,
                    "JobSucceeded",
                    format!("bootstrap Job {} completed{outdated}", w.bootstrap_job),
                ),
                Observed::yes(
                    SEALED,
                    "NexusNotReady",
                    format!(
                        "Nexus is not ready, so sealed: it needs {} keeper shares; {keepers}",
                        w.threshold
                    ),
                ),
                Observed::no(READY, "Sealed", "Nexus is sealed"),
                Observed::yes(PROGRESSING, "Unsealing", keepers),
                Observed::no(DEGRADED, "Sealed", "no failure"),
            ],
        ),
        BootstrapState::Running => (
            ClusterPhase::Bootstrapping,
            vec![
                Observed::no(
                    BOOTSTRAPPED,
                    "BootstrapRunning",
                    format!("bootstrap Job {} is running", w.bootstrap_job),
                ),
                not_bootstrapped,
                Observed::no(READY, "Bootstrapping", "bootstrap is running"),
                Observed::yes(PROGRESSING, "Bootstrapping", "bootstrap is running"),
                Observed::no(DEGRADED, "Bootstrapping", "no failure"),
            ],
        ),
        // `Failed` with a ready Nexus was handled above.
        BootstrapState::NotStarted | BootstrapState::Failed { .. } => (
            ClusterPhase::Pending,
            vec![
                Observed::no(
                    BOOTSTRAPPED,
                    "Pending",
                    format!("bootstrap Job {} has not started", w.bootstrap_job),
                ),
                not_bootstrapped,
                Observed::no(READY, "Pending", "waiting for keepers, Nexus and bootstrap"),
                Observed::yes(
                    PROGRESSING,
                    "Pending",
                    "objects applied; waiting for keepers, Nexus and the bootstrap Job",
                ),
                Observed::no(DEGRADED, "Pending", "no failure"),
            ],
        ),
    }
}

/// Each of `types` that `old` lacks, as `Unknown` with `reason` (so a status always carries
/// all five conditions).
fn unknown_if_missing(
    old: &SpikeClusterStatus,
    types: &[&'static str],
    reason: &'static str,
) -> Vec<Observed> {
    types
        .iter()
        .filter(|t| conditions::find(&old.conditions, t).is_none())
        .map(|&type_| Observed {
            type_,
            status: ConditionStatus::Unknown,
            reason,
            message: "not observed".to_owned(),
        })
        .collect()
}

/// The status after a reconcile that found `observation` at `now`, from the `old` status of a
/// cluster at `generation`; `parts` are the optional parts whose objects now exist.
/// Conditions keep their `lastTransitionTime` unless they flip, so computing it again from its
/// own output changes nothing (and a no-op reconcile writes nothing).
pub fn next_status(
    old: Option<&SpikeClusterStatus>,
    generation: Option<i64>,
    observation: &Observation,
    parts: Vec<AppliedPart>,
    now: &str,
) -> SpikeClusterStatus {
    let old = old.cloned().unwrap_or_default();
    let all = [BOOTSTRAPPED, SEALED, READY, PROGRESSING, DEGRADED];
    let (phase, observed, generation, ready_keepers) = match observation {
        Observation::Paused => (
            ClusterPhase::Paused,
            conditions::paused(
                &old.conditions,
                &[BOOTSTRAPPED, SEALED, READY, DEGRADED],
                "spec.paused is true: the operator changes nothing until it is false",
            ),
            // The spec is not acted on, so the status still describes the old one.
            old.observed_generation,
            old.ready_keepers,
        ),
        Observation::Invalid { message } => {
            let mut observed = unknown_if_missing(&old, &[BOOTSTRAPPED, SEALED], "InvalidSpec");
            observed.extend([
                Observed::no(READY, "InvalidSpec", message.clone()),
                Observed::no(
                    PROGRESSING,
                    "InvalidSpec",
                    "waiting for a change of the spec",
                ),
                Observed::yes(DEGRADED, "InvalidSpec", message.clone()),
            ]);
            (
                ClusterPhase::Degraded,
                observed,
                generation,
                old.ready_keepers,
            )
        }
        Observation::DeletionHeld { message } => {
            let mut observed = unknown_if_missing(
                &old,
                &[BOOTSTRAPPED, SEALED, DEGRADED],
                "BreakGlassExportRequired",
            );
            observed.extend([
                Observed::no(READY, "BreakGlassExportRequired", message.clone()),
                Observed::no(
                    PROGRESSING,
                    "BreakGlassExportRequired",
                    "deletion waits for the break-glass-exported annotation",
                ),
            ]);
            (
                ClusterPhase::Deleting,
                observed,
                generation,
                old.ready_keepers,
            )
        }
        Observation::Applied(w) => {
            let (phase, observed) = applied(w);
            (phase, observed, generation, Some(w.ready_keepers))
        }
        Observation::ApplyFailed { message } => {
            let mut observed = unknown_if_missing(&old, &[BOOTSTRAPPED, SEALED], "ApplyFailed");
            observed.extend([
                Observed::no(READY, "ApplyFailed", message.clone()),
                Observed::yes(PROGRESSING, "ApplyFailed", "retrying with backoff"),
                Observed::yes(DEGRADED, "ApplyFailed", message.clone()),
            ]);
            // The spec is not yet made true, so the generation does not advance.
            (
                ClusterPhase::Degraded,
                observed,
                old.observed_generation,
                old.ready_keepers,
            )
        }
    };
    debug_assert!(all.iter().all(|t| {
        observed.iter().any(|o| o.type_ == *t) || conditions::find(&old.conditions, t).is_some()
    }));
    SpikeClusterStatus {
        observed_generation: generation,
        phase: Some(phase),
        ready_keepers,
        conditions: set_conditions(&old.conditions, &observed, generation, now),
        applied_parts: parts,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crd::Condition;
    use k8s_openapi::api::apps::v1::StatefulSetStatus;
    use k8s_openapi::api::batch::v1::{JobCondition, JobStatus};

    const T0: &str = "2026-01-01T00:00:00Z";
    const T1: &str = "2026-01-01T00:05:00Z";

    fn workloads(bootstrap: BootstrapState, nexus_ready: bool, ready_keepers: i32) -> Workloads {
        Workloads {
            keepers: 3,
            threshold: 2,
            ready_keepers,
            nexus_ready,
            bootstrap,
            bootstrap_outdated: false,
            bootstrap_job: "spike-bootstrap".into(),
        }
    }

    fn status_of(o: &Observation) -> SpikeClusterStatus {
        next_status(None, Some(4), o, Vec::new(), T0)
    }

    fn cond<'a>(s: &'a SpikeClusterStatus, type_: &str) -> &'a Condition {
        conditions::find(&s.conditions, type_).unwrap_or_else(|| panic!("no {type_}"))
    }

    fn statuses(s: &SpikeClusterStatus) -> Vec<(String, ConditionStatus, String)> {
        s.conditions
            .iter()
            .map(|c| (c.type_.clone(), c.status, c.reason.clone()))
            .collect()
    }

    fn row(t: &str, s: ConditionStatus, r: &str) -> (String, ConditionStatus, String) {
        (t.into(), s, r.into())
    }

    use ConditionStatus::{False, True, Unknown};

    fn job(status: JobStatus) -> Job {
        Job {
            status: Some(status),
            ..Job::default()
        }
    }

    fn job_condition(type_: &str, reason: &str) -> JobCondition {
        JobCondition {
            type_: type_.into(),
            status: "True".into(),
            reason: Some(reason.into()),
            message: Some("Job has reached the specified backoff limit".into()),
            ..JobCondition::default()
        }
    }

    #[test]
    fn the_job_state_comes_from_its_status_and_conditions() {
        assert_eq!(bootstrap_state(&Job::default()), BootstrapState::NotStarted);
        assert_eq!(
            bootstrap_state(&job(JobStatus::default())),
            BootstrapState::NotStarted
        );
        let running = job(JobStatus {
            active: Some(1),
            ..JobStatus::default()
        });
        assert_eq!(bootstrap_state(&running), BootstrapState::Running);
        let done = job(JobStatus {
            succeeded: Some(1),
            ..JobStatus::default()
        });
        assert_eq!(bootstrap_state(&done), BootstrapState::Succeeded);
        let complete = job(JobStatus {
            conditions: Some(vec![job_condition("Complete", "CompletionsReached")]),
            ..JobStatus::default()
        });
        assert_eq!(bootstrap_state(&complete), BootstrapState::Succeeded);
        let failed = job(JobStatus {
            conditions: Some(vec![job_condition("Failed", "BackoffLimitExceeded")]),
            ..JobStatus::default()
        });
        assert_eq!(
            bootstrap_state(&failed),
            BootstrapState::Failed {
                reason: "BackoffLimitExceeded".into(),
                message: "Job has reached the specified backoff limit".into()
            }
        );
        // A condition that does not hold is not a failure.
        let mut not = job_condition("Failed", "BackoffLimitExceeded");
        not.status = "False".into();
        let not_failed = job(JobStatus {
            active: Some(1),
            conditions: Some(vec![not]),
            ..JobStatus::default()
        });
        assert_eq!(bootstrap_state(&not_failed), BootstrapState::Running);
    }

    #[test]
    fn a_job_differs_only_by_image_or_arguments() {
        let c = crate::build::tests_support::sample();
        let desired = crate::build::cluster_objects(&c, &crate::build::tests_support::valid(&c))
            .unwrap()
            .bootstrap;
        let mut defaulted = desired.clone();
        // What the API server adds does not count.
        let pod = defaulted
            .spec
            .as_mut()
            .unwrap()
            .template
            .spec
            .as_mut()
            .unwrap();
        pod.containers[0].termination_message_path = Some("/dev/termination-log".into());
        pod.dns_policy = Some("ClusterFirst".into());
        assert!(!bootstrap_differs(&defaulted, &desired));
        let mut more = c;
        more.spec.keepers.replicas = 5;
        let other =
            crate::build::cluster_objects(&more, &crate::build::tests_support::valid(&more))
                .unwrap()
                .bootstrap;
        assert!(bootstrap_differs(&defaulted, &other));
    }

    #[test]
    fn ready_replicas_default_to_none_ready() {
        assert_eq!(ready_replicas(&StatefulSet::default()), 0);
        let sts = StatefulSet {
            status: Some(StatefulSetStatus {
                ready_replicas: Some(2),
                ..StatefulSetStatus::default()
            }),
            ..StatefulSet::default()
        };
        assert_eq!(ready_replicas(&sts), 2);
    }

    #[test]
    fn pending_before_the_job_runs() {
        let s = status_of(&Observation::Applied(workloads(
            BootstrapState::NotStarted,
            false,
            0,
        )));
        assert_eq!(s.phase, Some(ClusterPhase::Pending));
        assert_eq!(s.ready_keepers, Some(0));
        assert_eq!(s.observed_generation, Some(4));
        assert_eq!(
            statuses(&s),
            [
                row(BOOTSTRAPPED, False, "Pending"),
                row(SEALED, True, "NotBootstrapped"),
                row(READY, False, "Pending"),
                row(PROGRESSING, True, "Pending"),
                row(DEGRADED, False, "Pending"),
            ]
        );
        for c in &s.conditions {
            assert_eq!(c.observed_generation, Some(4));
            assert_eq!(c.last_transition_time, T0);
        }
    }

    #[test]
    fn bootstrapping_while_the_job_runs() {
        let s = status_of(&Observation::Applied(workloads(
            BootstrapState::Running,
            false,
            0,
        )));
        assert_eq!(s.phase, Some(ClusterPhase::Bootstrapping));
        assert_eq!(cond(&s, BOOTSTRAPPED).reason, "BootstrapRunning");
        assert_eq!(cond(&s, PROGRESSING).status, True);
        assert_eq!(cond(&s, SEALED).status, True);
    }

    #[test]
    fn ready_once_nexus_is_ready_and_progressing_until_every_keeper_is() {
        let s = status_of(&Observation::Applied(workloads(
            BootstrapState::Succeeded,
            true,
            3,
        )));
        assert_eq!(s.phase, Some(ClusterPhase::Ready));
        assert_eq!(
            statuses(&s),
            [
                row(BOOTSTRAPPED, True, "Bootstrapped"),
                row(SEALED, False, "Unsealed"),
                row(READY, True, "Unsealed"),
                row(PROGRESSING, False, "Ready"),
                row(DEGRADED, False, "Ready"),
            ]
        );
        assert_eq!(
            cond(&s, READY).message,
            "Nexus is unsealed and serving; 3 of 3 keepers hold their shares (threshold 2)"
        );
        let rolling = status_of(&Observation::Applied(workloads(
            BootstrapState::Succeeded,
            true,
            2,
        )));
        assert_eq!(rolling.phase, Some(ClusterPhase::Ready));
        assert_eq!(cond(&rolling, PROGRESSING).status, True);
        assert_eq!(cond(&rolling, PROGRESSING).reason, "KeepersStarting");
    }

    #[test]
    fn sealed_when_bootstrapped_but_nexus_is_not_ready() {
        let mut w = workloads(BootstrapState::Succeeded, false, 1);
        w.bootstrap_outdated = true;
        let s = status_of(&Observation::Applied(w));
        assert_eq!(s.phase, Some(ClusterPhase::Sealed));
        assert_eq!(cond(&s, SEALED).status, True);
        assert_eq!(cond(&s, SEALED).reason, "NexusNotReady");
        assert!(
            cond(&s, SEALED)
                .message
                .contains("needs 2 keeper shares; 1 of 3")
        );
        assert_eq!(cond(&s, READY).status, False);
        assert_eq!(cond(&s, DEGRADED).status, False);
        // The outdated Job is named, and left.
        assert!(
            cond(&s, BOOTSTRAPPED)
                .message
                .ends_with("bootstrap runs once, so Job spike-bootstrap is left as it is"),
            "{}",
            cond(&s, BOOTSTRAPPED).message
        );
    }

    #[test]
    fn degraded_with_the_jobs_reason_when_bootstrap_failed() {
        let failed = BootstrapState::Failed {
            reason: "BackoffLimitExceeded".into(),
            message: "Job has reached the specified backoff limit".into(),
        };
        let s = status_of(&Observation::Applied(workloads(failed.clone(), false, 0)));
        assert_eq!(s.phase, Some(ClusterPhase::Degraded));
        assert_eq!(cond(&s, DEGRADED).status, True);
        assert_eq!(
            cond(&s, DEGRADED).message,
            "bootstrap Job spike-bootstrap failed (BackoffLimitExceeded): Job has reached the specified backoff limit"
        );
        assert_eq!(cond(&s, PROGRESSING).status, False);
        // A Nexus that is unsealed anyway (an earlier run succeeded) is what counts.
        let s = status_of(&Observation::Applied(workloads(failed, true, 3)));
        assert_eq!(s.phase, Some(ClusterPhase::Ready));
    }

    #[test]
    fn an_invalid_spec_is_degraded_and_fills_the_other_conditions() {
        let message = "spec.keepers.threshold: 4 exceeds spec.keepers.replicas 3".to_owned();
        let s = status_of(&Observation::Invalid {
            message: message.clone(),
        });
        assert_eq!(s.phase, Some(ClusterPhase::Degraded));
        assert_eq!(
            statuses(&s),
            [
                row(BOOTSTRAPPED, Unknown, "InvalidSpec"),
                row(SEALED, Unknown, "InvalidSpec"),
                row(READY, False, "InvalidSpec"),
                row(PROGRESSING, False, "InvalidSpec"),
                row(DEGRADED, True, "InvalidSpec"),
            ]
        );
        assert_eq!(cond(&s, DEGRADED).message, message);
        assert_eq!(s.ready_keepers, None);
    }

    #[test]
    fn deleting_keeps_what_was_known_and_says_what_to_do() {
        let ready = status_of(&Observation::Applied(workloads(
            BootstrapState::Succeeded,
            true,
            3,
        )));
        let held = Observation::DeletionHeld {
            message: "run this".into(),
        };
        let s = next_status(Some(&ready), Some(4), &held, Vec::new(), T1);
        assert_eq!(s.phase, Some(ClusterPhase::Deleting));
        assert_eq!(s.ready_keepers, Some(3));
        assert_eq!(cond(&s, READY).status, False);
        assert_eq!(cond(&s, READY).reason, "BreakGlassExportRequired");
        assert_eq!(cond(&s, READY).message, "run this");
        assert_eq!(cond(&s, READY).last_transition_time, T1);
        // Kept: Bootstrapped, Sealed, Degraded as they were.
        assert_eq!(cond(&s, SEALED), cond(&ready, SEALED));
        assert_eq!(cond(&s, DEGRADED), cond(&ready, DEGRADED));
    }

    #[test]
    fn paused_keeps_the_generation_and_changes_only_progressing() {
        let ready = status_of(&Observation::Applied(workloads(
            BootstrapState::Succeeded,
            true,
            3,
        )));
        let s = next_status(Some(&ready), Some(5), &Observation::Paused, Vec::new(), T1);
        assert_eq!(s.phase, Some(ClusterPhase::Paused));
        assert_eq!(s.observed_generation, Some(4));
        assert_eq!(cond(&s, PROGRESSING).status, False);
        assert_eq!(cond(&s, PROGRESSING).reason, "Paused");
        assert_eq!(cond(&s, READY), cond(&ready, READY));
        // A first visit while paused writes all five.
        let first = status_of(&Observation::Paused);
        assert_eq!(first.conditions.len(), 5);
        assert_eq!(cond(&first, READY).status, Unknown);
    }

    #[test]
    fn a_failed_apply_is_degraded_and_keeps_the_generation() {
        let ready = status_of(&Observation::Applied(workloads(
            BootstrapState::Succeeded,
            true,
            3,
        )));
        let failed = Observation::ApplyFailed {
            message: "Kubernetes API: admission webhook denied the request".into(),
        };
        let s = next_status(Some(&ready), Some(5), &failed, Vec::new(), T1);
        assert_eq!(s.phase, Some(ClusterPhase::Degraded));
        assert_eq!(s.observed_generation, Some(4));
        assert_eq!(cond(&s, DEGRADED).status, True);
        assert_eq!(cond(&s, DEGRADED).reason, "ApplyFailed");
        assert_eq!(cond(&s, DEGRADED).observed_generation, Some(4));
        assert_eq!(cond(&s, PROGRESSING).status, True);
        assert_eq!(cond(&s, SEALED), cond(&ready, SEALED));
    }

    #[test]
    fn recomputing_the_status_changes_nothing() {
        let o = Observation::Applied(workloads(BootstrapState::Succeeded, true, 3));
        let once = next_status(None, Some(1), &o, vec![AppliedPart::Gateway], T0);
        let twice = next_status(Some(&once), Some(1), &o, vec![AppliedPart::Gateway], T1);
        assert_eq!(once, twice);
    }
}
