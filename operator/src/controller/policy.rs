//! The `SpikePolicy` controller: each resource becomes one Nexus policy, `k8s.<ns>.<name>`.
//!
//! The pipeline of a reconcile: fetch the `SpikeCluster` of `spec.clusterRef` → validate
//! (pure: the cluster, the namespace's tenancy, SPIKE's policy rules) → apply to Nexus (read,
//! then write only what differs) → status (server-side apply, only when it changed). A
//! finalizer is always on the resource so that deleting it deletes the policy from Nexus.
//!
//! - **Paused cluster** (`spec.paused`): nothing changes in Nexus, not even a deletion; the
//!   resource shows `Progressing=False` with reason `Paused` and keeps its other conditions
//!   (and a deleted resource keeps its finalizer until the cluster is unpaused).
//! - **Refusals** (a missing or invalid cluster, a bad spec, a tenancy escape, a refusal by
//!   Nexus): `Ready=False`, `Degraded=True` with the reason and the field, a warning event
//!   when that is news, and a long requeue: only a change cures it, and changes trigger a
//!   reconcile anyway.
//! - **Nexus unreachable** (or a concurrent change): `Degraded=True`, `Progressing=True`, and
//!   the error policy's per-object backoff.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use kube::api::Api;
use kube::runtime::controller::{Action, Controller};
use kube::runtime::events::EventType;
use kube::runtime::finalizer::{Event as Finalizer, finalizer};
use kube::runtime::reflector::ObjectRef;
use kube::runtime::watcher;
use kube::{Resource, ResourceExt};
use spike_core::policy::Permission;

use super::conditions::{self, DEGRADED, Outcome, READY, bounded};
use super::context::Context;
use super::error::Error;
use crate::crd::{SpikeCluster, SpikePolicy, SpikePolicyStatus};
use crate::metrics::ControllerName;
use crate::nexus::{DeleteOutcome, DeletionPolicy, DesiredPolicy, PolicyOutcome};
use crate::validate::{InvalidSpec, policy_name, validate_cluster, validate_policy};

/// The finalizer that keeps a deleted `SpikePolicy` until its policy is gone from Nexus.
pub const FINALIZER: &str = "spike.spiffe.io/nexus-cleanup";

/// When a synced policy is read from Nexus again, to undo changes made there directly.
pub const RESYNC: Duration = Duration::from_secs(5 * 60);
/// When a refused resource is looked at again without any change (changes come sooner).
pub const REFUSED_REQUEUE: Duration = Duration::from_secs(60 * 60);

/// Runs the `SpikePolicy` controller until `shutdown` completes, also watching
/// `SpikeCluster`s: a change of a cluster (an unpause, a new trust domain) reconciles the
/// policies that refer to it.
pub async fn run(
    ctx: Arc<Context>,
    shutdown: impl Future<Output = ()> + Send + Sync + 'static,
) -> Result<(), Error> {
    // `controller::run` has checked that the CRD is installed.
    let policies = Api::<SpikePolicy>::all(ctx.client.clone());
    let clusters = Api::<SpikeCluster>::all(ctx.client.clone());
    let controller = Controller::new(policies, watcher::Config::default().any_semantic());
    let store = controller.store();
    controller
        .watches(
            clusters,
            watcher::Config::default().any_semantic(),
            move |cluster| policies_of(&store.state(), &cluster),
        )
        .graceful_shutdown_on(shutdown)
        .run(reconcile, error_policy, ctx)
        .for_each(|result| async move {
            match result {
                Ok((obj, _)) => tracing::debug!(%obj, "reconciled"),
                Err(e) => tracing::warn!(error = %e, "reconcile failed"),
            }
        })
        .await;
    Ok(())
}

/// The policies among `policies` whose `clusterRef` names `cluster`.
pub fn policies_of(
    policies: &[Arc<SpikePolicy>],
    cluster: &SpikeCluster,
) -> Vec<ObjectRef<SpikePolicy>> {
    let (Some(cluster_ns), name) = (cluster.namespace(), cluster.name_any()) else {
        return Vec::new();
    };
    policies
        .iter()
        .filter(|p| {
            let own = p.namespace().unwrap_or_default();
            p.spec.cluster_ref.name == name && p.spec.cluster_ref.namespace_or(&own) == cluster_ns
        })
        .map(|p| ObjectRef::from_obj(&**p))
        .collect()
}

/// One reconcile of a `SpikePolicy`: the finalizer first, then [`SpikePolicy`]'s apply or
/// cleanup.
pub async fn reconcile(policy: Arc<SpikePolicy>, ctx: Arc<Context>) -> Result<Action, Error> {
    let _timer = ctx.metrics.reconcile(ControllerName::spikepolicy);
    let key = ObjectRef::from_obj(&*policy).erase();
    let ns = policy
        .namespace()
        .ok_or(Error::InvalidSpec(InvalidSpec::NoNamespace))?;
    let api: Api<SpikePolicy> = Api::namespaced(ctx.client.clone(), &ns);
    let action = finalizer(&api, FINALIZER, policy, |event| async {
        match event {
            Finalizer::Apply(p) => p.apply(&ctx).await,
            Finalizer::Cleanup(p) => p.cleanup(&ctx).await,
        }
    })
    .await
    .map_err(|e| Error::Finalizer(Box::new(e)))?;
    ctx.backoff.succeeded(&key);
    Ok(action)
}

/// What happens after a failed reconcile: counted by reason, retried after the object's
/// backoff (never a crash, never a hot loop).
pub fn error_policy(policy: Arc<SpikePolicy>, error: &Error, ctx: Arc<Context>) -> Action {
    ctx.failed(ControllerName::spikepolicy, &*policy, error)
}

/// What a `SpikePolicy` asks of Nexus, or why it cannot be had: the pure validate step.
pub fn desired_policy(
    policy: &SpikePolicy,
    cluster: &SpikeCluster,
) -> Result<DesiredPolicy, Outcome> {
    let cluster_name = format!(
        "{}/{}",
        cluster.namespace().unwrap_or_default(),
        cluster.name_any()
    );
    let valid_cluster = validate_cluster(cluster).map_err(|e| Outcome::Failed {
        reason: "ClusterInvalid",
        message: bounded(format!("SpikeCluster {cluster_name} is invalid: {e}")),
    })?;
    let valid = validate_policy(policy, &valid_cluster).map_err(|e| Outcome::Failed {
        reason: match e {
            InvalidSpec::Tenancy { .. } => "TenancyViolation",
            _ => "InvalidSpec",
        },
        message: bounded(e.to_string()),
    })?;
    let p = &valid.policy;
    Ok(DesiredPolicy {
        name: p.name().as_str().to_owned(),
        spiffe_id_pattern: p.spiffe_id_pattern().as_str().to_owned(),
        path_pattern: p.path_pattern().as_str().to_owned(),
        permissions: p.permissions().iter().collect::<Vec<Permission>>(),
    })
}

impl SpikePolicy {
    /// The namespace (every `SpikePolicy` has one; the API server guarantees it).
    fn ns(&self) -> Result<String, Error> {
        crate::validate::namespace_of(self.meta())
            .map(str::to_owned)
            .map_err(Error::InvalidSpec)
    }

    /// The `SpikeCluster` of `spec.clusterRef`, if it exists, with its `namespace/name`.
    async fn cluster(&self, ctx: &Context) -> Result<(Option<SpikeCluster>, String), Error> {
        let own = self.ns()?;
        let r = &self.spec.cluster_ref;
        let ns = r.namespace_or(&own);
        let api: Api<SpikeCluster> = Api::namespaced(ctx.client.clone(), ns);
        Ok((api.get_opt(&r.name).await?, format!("{ns}/{}", r.name)))
    }

    /// Makes the Nexus policy what the spec declares (the finalizer is in place).
    async fn apply(&self, ctx: &Context) -> Result<Action, Error> {
        let (cluster, cluster_name) = self.cluster(ctx).await?;
        let Some(cluster) = cluster else {
            let outcome = Outcome::Failed {
                reason: "ClusterNotFound",
                message: format!("SpikeCluster {cluster_name} does not exist"),
            };
            return self.finish(ctx, outcome, None).await;
        };
        if cluster.spec.paused {
            return self.paused(ctx, &cluster_name).await;
        }
        let desired = match desired_policy(self, &cluster) {
            Ok(d) => d,
            Err(outcome) => return self.finish(ctx, outcome, None).await,
        };
        let written = async { ctx.nexus_of(&cluster)?.apply_policy(&desired).await }.await;
        match written {
            Ok(done) => {
                let outcome = Outcome::Ready {
                    reason: "Synced",
                    message: format!(
                        "policy {} is in the Nexus of SpikeCluster {cluster_name}",
                        self.nexus_name()?
                    ),
                };
                self.finish(ctx, outcome, Some(done)).await
            }
            Err(e) => {
                let outcome = Outcome::of_sync_error(&e);
                let action = self.finish(ctx, outcome, None).await?;
                if e.is_transient() {
                    // The status says so; the error policy retries with backoff.
                    Err(e.into())
                } else {
                    Ok(action)
                }
            }
        }
    }

    /// Deletes the Nexus policy; the finalizer goes once this succeeds.
    async fn cleanup(&self, ctx: &Context) -> Result<Action, Error> {
        let name = self.nexus_name()?;
        let (cluster, cluster_name) = self.cluster(ctx).await?;
        let Some(cluster) = cluster else {
            // Nothing left to delete it from: holding the finalizer would only block the
            // deletion forever.
            self.event(
                ctx,
                EventType::Normal,
                "ClusterGone",
                "Delete",
                format!("SpikeCluster {cluster_name} no longer exists; policy {name} was not deleted from its Nexus"),
            )
            .await;
            return Ok(Action::await_change());
        };
        if cluster.spec.paused {
            return Err(Error::ClusterPaused(cluster_name));
        }
        let sync = ctx.nexus_of(&cluster)?;
        let note = match sync.delete_policy(&name, DeletionPolicy::Delete).await? {
            DeleteOutcome::Deleted => format!("policy {name} deleted from Nexus"),
            DeleteOutcome::AlreadyGone | DeleteOutcome::Retained => {
                format!("policy {name} was not in Nexus")
            }
        };
        self.event(ctx, EventType::Normal, "Deleted", "Delete", note)
            .await;
        Ok(Action::await_change())
    }

    /// A paused cluster: only `Progressing` changes, and only on this resource.
    async fn paused(&self, ctx: &Context, cluster_name: &str) -> Result<Action, Error> {
        let old = self.status.clone().unwrap_or_default();
        // First visit while paused: every condition is written, as Unknown if need be.
        let observed = conditions::paused(
            &old.conditions,
            &[READY, DEGRADED],
            &format!(
                "SpikeCluster {cluster_name} is paused: the operator changes nothing until spec.paused is false"
            ),
        );
        let status = SpikePolicyStatus {
            conditions: conditions::set_conditions(
                &old.conditions,
                &observed,
                old.observed_generation,
                &conditions::now_rfc3339(),
            ),
            ..old
        };
        if self.status.as_ref() != Some(&status) {
            self.event(
                ctx,
                EventType::Normal,
                "Paused",
                "Reconcile",
                format!("SpikeCluster {cluster_name} is paused; nothing is changed in Nexus"),
            )
            .await;
            self.write_status(ctx, status).await?;
        }
        // The cluster watch brings the unpause.
        Ok(Action::requeue(REFUSED_REQUEUE))
    }

    /// Writes the status `outcome` implies (when it changed), with an event for what is news,
    /// and says when to look again.
    async fn finish(
        &self,
        ctx: &Context,
        outcome: Outcome,
        written: Option<PolicyOutcome>,
    ) -> Result<Action, Error> {
        let status = self.next_status(&outcome, &conditions::now_rfc3339())?;
        let changed = self.status.as_ref() != Some(&status);
        let name = self.nexus_name()?;
        // An event for a write to Nexus, or for a new refusal (not for every requeue).
        let event = match (&outcome, written) {
            (_, Some(PolicyOutcome::Created)) => Some((
                EventType::Normal,
                "Created",
                format!("policy {name} created in Nexus"),
            )),
            (_, Some(PolicyOutcome::Replaced)) => Some((
                EventType::Normal,
                "Updated",
                format!("policy {name} replaced in Nexus"),
            )),
            (Outcome::Failed { reason, message } | Outcome::Retrying { reason, message }, _)
                if changed =>
            {
                Some((EventType::Warning, *reason, message.clone()))
            }
            _ => None,
        };
        if let Some((type_, reason, note)) = event {
            self.event(ctx, type_, reason, "Reconcile", note).await;
        }
        if changed {
            self.write_status(ctx, status).await?;
        }
        Ok(match outcome {
            Outcome::Ready { .. } => Action::requeue(RESYNC),
            Outcome::Failed { .. } => Action::requeue(REFUSED_REQUEUE),
            // Only reached with a transient error, which the error policy schedules.
            Outcome::Retrying { .. } => Action::requeue(RESYNC),
        })
    }

    /// The status after `outcome`: conditions set (times kept where nothing flipped), the
    /// generation advanced only when the reconcile finished.
    pub fn next_status(&self, outcome: &Outcome, now: &str) -> Result<SpikePolicyStatus, Error> {
        let old = self.status.clone().unwrap_or_default();
        let generation = if outcome.finished() {
            self.metadata.generation
        } else {
            old.observed_generation
        };
        Ok(SpikePolicyStatus {
            observed_generation: generation,
            policy_name: Some(self.nexus_name()?),
            // Nexus's policy API reports no version, so there is none to record.
            stored_version: old.stored_version,
            conditions: conditions::set_conditions(
                &old.conditions,
                &outcome.conditions(),
                generation,
                now,
            ),
        })
    }

    /// The name of its policy in Nexus.
    fn nexus_name(&self) -> Result<String, Error> {
        Ok(policy_name(&self.ns()?, &self.name_any()))
    }

    /// Writes `status` with server-side apply on the status subresource (the callers write
    /// only a status that differs from the resource's, so a no-op reconcile writes nothing).
    async fn write_status(&self, ctx: &Context, status: SpikePolicyStatus) -> Result<(), Error> {
        ctx.write_status(self, &status).await
    }

    async fn event(
        &self,
        ctx: &Context,
        type_: EventType,
        reason: &str,
        action: &str,
        note: String,
    ) {
        ctx.event_about(self, type_, reason, action, note).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fixtures;

    #[test]
    fn a_valid_policy_becomes_the_desired_nexus_policy() {
        let cluster = fixtures::cluster();
        let d = desired_policy(&fixtures::tenant_policy(), &cluster).unwrap();
        assert_eq!(d.name, "k8s.team-a.readers");
        assert_eq!(d.spiffe_id_pattern, "spiffe://spike.dev/ns/team-a/**");
        assert_eq!(d.path_pattern, "k8s/team-a/**");
        let mut perms = d.permissions;
        perms.sort_unstable();
        assert_eq!(perms, [Permission::Read, Permission::List]);
    }

    #[test]
    fn refusals_name_the_field_and_the_reason() {
        let cluster = fixtures::cluster();
        let mut p = fixtures::tenant_policy();
        p.spec.path_pattern = "k8s/team-b/**".into();
        let Err(Outcome::Failed { reason, message }) = desired_policy(&p, &cluster) else {
            panic!("a tenancy escape must be refused");
        };
        assert_eq!(reason, "TenancyViolation");
        assert!(message.starts_with("spec.pathPattern: "), "{message}");

        let mut bad = fixtures::cluster();
        bad.spec.keepers.threshold = 9;
        let Err(Outcome::Failed { reason, message }) =
            desired_policy(&fixtures::tenant_policy(), &bad)
        else {
            panic!("an invalid cluster must be refused");
        };
        assert_eq!(reason, "ClusterInvalid");
        assert!(
            message
                .starts_with("SpikeCluster spike-system/spike is invalid: spec.keepers.threshold"),
            "{message}"
        );
    }

    #[test]
    fn a_recomputed_status_is_unchanged_so_nothing_is_written() {
        let mut p = fixtures::tenant_policy();
        let ready = Outcome::Ready {
            reason: "Synced",
            message: "in Nexus".into(),
        };
        let first = p.next_status(&ready, "2026-01-01T00:00:00Z").unwrap();
        assert_eq!(first.observed_generation, Some(1));
        assert_eq!(first.policy_name.as_deref(), Some("k8s.team-a.readers"));
        p.status = Some(first.clone());
        let again = p.next_status(&ready, "2026-01-01T01:00:00Z").unwrap();
        assert_eq!(again, first);
    }

    #[test]
    fn retrying_keeps_the_observed_generation() {
        let mut p = fixtures::tenant_policy();
        let ready = Outcome::Ready {
            reason: "Synced",
            message: "in Nexus".into(),
        };
        p.status = Some(p.next_status(&ready, "t0").unwrap());
        p.metadata.generation = Some(2);
        let retry = Outcome::Retrying {
            reason: "NexusUnavailable",
            message: "Nexus is unavailable: refused".into(),
        };
        let s = p.next_status(&retry, "t1").unwrap();
        assert_eq!(s.observed_generation, Some(1));
        let degraded = conditions::find(&s.conditions, conditions::DEGRADED).unwrap();
        assert_eq!(degraded.status, crate::crd::ConditionStatus::True);
        assert_eq!(degraded.observed_generation, Some(1));
    }

    #[test]
    fn a_cluster_maps_to_the_policies_that_refer_to_it() {
        let cluster = fixtures::cluster();
        let tenant = Arc::new(fixtures::tenant_policy());
        let local = Arc::new(fixtures::local_policy());
        let mut elsewhere = fixtures::tenant_policy();
        elsewhere.metadata.name = Some("other".into());
        elsewhere.spec.cluster_ref.name = "other-cluster".into();
        let all = [tenant, local, Arc::new(elsewhere)];
        let mut names: Vec<String> = policies_of(&all, &cluster)
            .into_iter()
            .map(|r| format!("{}/{}", r.namespace.unwrap_or_default(), r.name))
            .collect();
        names.sort();
        assert_eq!(names, ["spike-system/admins", "team-a/readers"]);
    }
}
