//! The `SpikeCluster` controller: each resource becomes the keepers, Nexus, bootstrap and
//! (optionally) a gateway and SPIRE registrations, all built by [`crate::build`].
//!
//! The pipeline of a reconcile: validate (pure, [`validate_cluster`]) → build every object
//! (pure, [`cluster_objects`]) → server-side apply of each, in the builder's order (field
//! manager `spike-operator`, forced) → prune what the spec no longer asks for → observe
//! ([`observe`]: ready keepers, a ready — so unsealed — Nexus, the bootstrap Job) → status
//! (server-side apply, only when it changed).
//!
//! - **Bootstrap runs once.** A Job's pod template is immutable: once the bootstrap Job exists
//!   it is read, never applied again. A Job that no longer matches the spec is left and named
//!   in `Bootstrapped`'s message; a failed one makes the cluster `Degraded` with the Job's
//!   reason (deleting the Job runs bootstrap again).
//! - **Pruning.** Owned objects go with the cluster by garbage collection; while it lives,
//!   dropping `spec.gateway` deletes the gateway's objects (its settings file leaves the
//!   ConfigMap by server-side apply itself) and dropping `spec.clusterSpiffeIds` deletes the
//!   cluster's `ClusterSPIFFEID`s by label. What was applied is remembered in
//!   `status.appliedParts`, so nothing is listed or deleted for a part that never ran.
//! - **Deletion** is held by the [`FINALIZER`] until the annotation [`EXPORTED_ANNOTATION`] is
//!   `"true"`: the keepers' shares go with their pods, and only a break-glass export can then
//!   unseal the retained Nexus volume. Once acknowledged, the `ClusterSPIFFEID`s (which no
//!   owner reference can delete) are deleted and the finalizer removed.
//! - **`spec.paused`**: no apply, no delete; phase `Paused`, `Progressing=False`.
//! - **Bad spec**: `Ready=False`, `Degraded=True` with the validation message, a warning event,
//!   nothing applied.

pub mod observe;

use std::fmt::Debug;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::NamespaceResourceScope;
use k8s_openapi::api::apps::v1::{Deployment, StatefulSet};
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{ConfigMap, Service, ServiceAccount};
use k8s_openapi::api::networking::v1::NetworkPolicy;
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams};
use kube::runtime::controller::{Action, Controller};
use kube::runtime::events::EventType;
use kube::runtime::finalizer::{Event as Finalizer, finalizer};
use kube::runtime::reflector::ObjectRef;
use kube::runtime::watcher;
use kube::{Resource, ResourceExt};
use serde::Serialize;
use serde::de::DeserializeOwned;

use super::conditions::{self, bounded};
use super::context::{Context, MANAGER};
use super::error::Error;
use crate::build::meta::{LABEL_MANAGED_BY, MANAGED_BY};
use crate::build::nexus::DATA_VOLUME;
use crate::build::{ClusterObjects, ClusterSpiffeId, cluster_objects, cluster_scoped_selector};
use crate::crd::{AppliedPart, SpikeCluster, SpikeClusterStatus};
use crate::metrics::ControllerName;
use crate::names;
use crate::validate::validate_cluster;
use observe::{Observation, Workloads, bootstrap_differs, bootstrap_state, ready_replicas};

/// The finalizer that holds a deleted `SpikeCluster` until its break-glass export is
/// acknowledged.
pub const FINALIZER: &str = "spike.spiffe.io/break-glass";
/// The annotation that acknowledges the break-glass export (value `"true"`).
pub const EXPORTED_ANNOTATION: &str = "spike.spiffe.io/break-glass-exported";

/// When an applied cluster is looked at again without a change: watches on its objects bring
/// changes sooner, this undoes edits the watches cannot see (a ClusterSPIFFEID).
pub const RESYNC: Duration = Duration::from_secs(5 * 60);
/// When a refused, paused or held cluster is looked at again without any change.
pub const IDLE_REQUEUE: Duration = Duration::from_secs(60 * 60);
/// When a deletion waiting for the annotation is looked at again (the annotation itself is a
/// change, which reconciles at once).
pub const HELD_REQUEUE: Duration = Duration::from_secs(10 * 60);

/// The watches' selector of what the operator creates: the operator never caches every
/// StatefulSet, Service, Job, Deployment or ConfigMap of the cluster.
fn managed_selector() -> String {
    format!("{LABEL_MANAGED_BY}={MANAGED_BY}")
}

/// Runs the `SpikeCluster` controller until `shutdown` completes, watching the objects the
/// clusters own.
pub async fn run(
    ctx: Arc<Context>,
    shutdown: impl Future<Output = ()> + Send + Sync + 'static,
) -> Result<(), Error> {
    // `controller::run` has checked that the CRDs are installed.
    let clusters = Api::<SpikeCluster>::all(ctx.client.clone());
    let owned = || watcher::Config::default().labels(&managed_selector());
    let client = &ctx.client;
    Controller::new(clusters, watcher::Config::default().any_semantic())
        .owns(Api::<StatefulSet>::all(client.clone()), owned())
        .owns(Api::<Service>::all(client.clone()), owned())
        .owns(Api::<Job>::all(client.clone()), owned())
        .owns(Api::<Deployment>::all(client.clone()), owned())
        .owns(Api::<ConfigMap>::all(client.clone()), owned())
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

/// One reconcile of a `SpikeCluster`: a held deletion first (which the finalizer helper cannot
/// express: its cleanup removes the finalizer when it succeeds), then the finalizer with
/// [`SpikeCluster`]'s apply or cleanup.
pub async fn reconcile(cluster: Arc<SpikeCluster>, ctx: Arc<Context>) -> Result<Action, Error> {
    let _timer = ctx.metrics.reconcile(ControllerName::spikecluster);
    let key = ObjectRef::from_obj(&*cluster).erase();
    let ns = cluster.ns()?;
    let action = if cluster.deletion_held() {
        cluster.hold_deletion(&ctx).await?
    } else {
        let api: Api<SpikeCluster> = Api::namespaced(ctx.client.clone(), &ns);
        finalizer(&api, FINALIZER, cluster, |event| async {
            match event {
                Finalizer::Apply(c) => c.apply(&ctx).await,
                Finalizer::Cleanup(c) => c.cleanup(&ctx).await,
            }
        })
        .await
        .map_err(|e| Error::Finalizer(Box::new(e)))?
    };
    ctx.backoff.succeeded(&key);
    Ok(action)
}

/// What happens after a failed reconcile: counted by reason, retried after the object's
/// backoff.
pub fn error_policy(cluster: Arc<SpikeCluster>, error: &Error, ctx: Arc<Context>) -> Action {
    ctx.failed(ControllerName::spikecluster, &*cluster, error)
}

/// The message of a held deletion: exactly what to run and which annotation to set.
pub fn held_message(namespace: &str, name: &str) -> String {
    format!(
        "deletion is held until a break-glass export of the root key is acknowledged: while Nexus is open, \
         run `spike operator recover` (docs/runbooks/all-keepers-lost.md), then \
         `kubectl -n {namespace} annotate spikecluster {name} {EXPORTED_ANNOTATION}=true`"
    )
}

/// The optional parts `objects` has.
pub fn wanted_parts(objects: &ClusterObjects) -> Vec<AppliedPart> {
    let mut parts = Vec::new();
    if objects.gateway.is_some() {
        parts.push(AppliedPart::Gateway);
    }
    if objects.spiffe_ids.is_some() {
        parts.push(AppliedPart::ClusterSpiffeIds);
    }
    parts
}

/// The names of the `ClusterSPIFFEID`s `objects` wants.
pub fn wanted_spiffe_ids(objects: &ClusterObjects) -> Vec<String> {
    objects
        .spiffe_ids
        .iter()
        .flat_map(|ids| {
            [
                Some(&ids.nexus),
                Some(&ids.keeper),
                Some(&ids.bootstrap),
                ids.gateway.as_ref(),
            ]
        })
        .flatten()
        .map(ResourceExt::name_any)
        .collect()
}

/// Server-side applies `object` in `namespace` and returns what the API server stored.
async fn apply_in<K>(ctx: &Context, namespace: &str, object: &K) -> Result<K, Error>
where
    K: Resource<Scope = NamespaceResourceScope, DynamicType = ()>
        + Serialize
        + DeserializeOwned
        + Clone
        + Debug,
{
    let api: Api<K> = Api::namespaced(ctx.client.clone(), namespace);
    api.patch(
        &object.name_any(),
        &PatchParams::apply(MANAGER).force(),
        &Patch::Apply(object),
    )
    .await
    .map_err(object_error::<K>(namespace, &object.name_any()))
}

/// Names the object a failed call was about.
fn object_error<K: Resource<DynamicType = ()>>(
    namespace: &str,
    name: &str,
) -> impl FnOnce(kube::Error) -> Error {
    let object = if namespace.is_empty() {
        format!("{} {name}", K::kind(&()))
    } else {
        format!("{} {namespace}/{name}", K::kind(&()))
    };
    move |source| Error::Object { object, source }
}

/// A failure as a condition message: the object and the API server's own words (the whole
/// `Status` it answered is noise to a reader).
pub fn failure_message(e: &Error) -> String {
    let message = match e {
        Error::Object {
            object,
            source: kube::Error::Api(s),
        } => format!("{object}: {} ({}, {})", s.message, s.reason, s.code),
        e => e.to_string(),
    };
    bounded(message)
}

/// Deletes `name` in `namespace` if it exists.
async fn delete_in<K>(ctx: &Context, namespace: &str, name: &str) -> Result<(), Error>
where
    K: Resource<Scope = NamespaceResourceScope, DynamicType = ()>
        + DeserializeOwned
        + Clone
        + Debug,
{
    let api: Api<K> = Api::namespaced(ctx.client.clone(), namespace);
    match api.delete(name, &DeleteParams::background()).await {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(s)) if s.code == 404 => Ok(()),
        Err(e) => Err(object_error::<K>(namespace, name)(e)),
    }
}

impl SpikeCluster {
    /// The namespace (every `SpikeCluster` has one; the API server guarantees it).
    fn ns(&self) -> Result<String, Error> {
        crate::validate::namespace_of(self.meta())
            .map(str::to_owned)
            .map_err(Error::InvalidSpec)
    }

    /// True when the break-glass export has been acknowledged.
    pub fn export_acknowledged(&self) -> bool {
        self.annotations()
            .get(EXPORTED_ANNOTATION)
            .is_some_and(|v| v == "true")
    }

    /// Deleted, holding the finalizer, and not yet acknowledged.
    fn deletion_held(&self) -> bool {
        self.metadata.deletion_timestamp.is_some()
            && self.finalizers().iter().any(|f| f == FINALIZER)
            && !self.export_acknowledged()
    }

    /// The parts applied before this reconcile.
    fn applied_parts(&self) -> &[AppliedPart] {
        self.status
            .as_ref()
            .map(|s| s.applied_parts.as_slice())
            .unwrap_or_default()
    }

    /// Makes the cluster's objects what the spec declares (the finalizer is in place).
    async fn apply(&self, ctx: &Context) -> Result<Action, Error> {
        if self.spec.paused {
            let parts = self.applied_parts().to_vec();
            self.finish(ctx, Observation::Paused, parts).await?;
            return Ok(Action::requeue(IDLE_REQUEUE));
        }
        let objects = match validate_cluster(self)
            .map_err(|e| e.to_string())
            .and_then(|valid| cluster_objects(self, &valid).map_err(|e| e.to_string()))
        {
            Ok(o) => o,
            Err(message) => {
                let invalid = Observation::Invalid {
                    message: bounded(message),
                };
                let parts = self.applied_parts().to_vec();
                self.finish(ctx, invalid, parts).await?;
                return Ok(Action::requeue(IDLE_REQUEUE));
            }
        };
        let wanted = wanted_parts(&objects);
        let applied = async {
            let workloads = self.apply_objects(ctx, &objects).await?;
            self.prune(ctx, &objects, &wanted).await?;
            Ok::<_, Error>(workloads)
        }
        .await;
        match applied {
            Ok(workloads) => {
                self.finish(ctx, Observation::Applied(workloads), wanted)
                    .await?;
                Ok(Action::requeue(RESYNC))
            }
            Err(e) => {
                // Shown in the status, then retried with backoff. What was applied so far
                // is remembered with what was before, so a later prune misses nothing.
                let mut parts = self.applied_parts().to_vec();
                for part in wanted {
                    if !parts.contains(&part) {
                        parts.push(part);
                    }
                }
                parts.sort_unstable();
                let failed = Observation::ApplyFailed {
                    message: failure_message(&e),
                };
                if let Err(status_error) = self.finish(ctx, failed, parts).await {
                    tracing::warn!(error = %status_error, "could not write the status of a failed apply");
                }
                Err(e)
            }
        }
    }

    /// Applies every object in the builder's order and reads what they report.
    async fn apply_objects(&self, ctx: &Context, o: &ClusterObjects) -> Result<Workloads, Error> {
        let ns = self.ns()?;
        let ns = ns.as_str();
        for account in [&o.keeper_account, &o.nexus_account, &o.bootstrap_account]
            .into_iter()
            .chain(&o.gateway_account)
        {
            apply_in(ctx, ns, account).await?;
        }
        apply_in(ctx, ns, &o.config).await?;
        if let Some(ids) = &o.spiffe_ids {
            let api: Api<ClusterSpiffeId> = Api::all(ctx.client.clone());
            for id in [&ids.nexus, &ids.keeper, &ids.bootstrap]
                .into_iter()
                .chain(&ids.gateway)
            {
                api.patch(
                    &id.name_any(),
                    &PatchParams::apply(MANAGER).force(),
                    &Patch::Apply(id),
                )
                .await
                .map_err(object_error::<ClusterSpiffeId>("", &id.name_any()))?;
            }
        }
        for policy in [
            &o.default_deny,
            &o.keeper_policy,
            &o.nexus_policy,
            &o.bootstrap_policy,
        ]
        .into_iter()
        .chain(&o.gateway_policy)
        {
            apply_in(ctx, ns, policy).await?;
        }
        apply_in(ctx, ns, &o.keeper_service).await?;
        let keepers = apply_in(ctx, ns, &o.keepers).await?;
        apply_in(ctx, ns, &o.keeper_budget).await?;
        apply_in(ctx, ns, &o.nexus_service).await?;
        let nexus = apply_in(ctx, ns, &o.nexus).await?;
        let (job, outdated) = self.bootstrap_job(ctx, &o.bootstrap).await?;
        if let Some(s) = &o.gateway_service {
            apply_in(ctx, ns, s).await?;
        }
        if let Some(d) = &o.gateway {
            apply_in(ctx, ns, d).await?;
        }
        Ok(Workloads {
            keepers: self.spec.keepers.replicas,
            threshold: self.spec.keepers.threshold,
            ready_keepers: ready_replicas(&keepers),
            nexus_ready: ready_replicas(&nexus) > 0,
            bootstrap: bootstrap_state(&job),
            bootstrap_outdated: outdated,
            bootstrap_job: job.name_any(),
        })
    }

    /// The bootstrap Job: applied when it does not exist, otherwise read and left alone
    /// (its template is immutable and bootstrap runs once). Also says whether the existing
    /// Job differs from `desired`.
    async fn bootstrap_job(&self, ctx: &Context, desired: &Job) -> Result<(Job, bool), Error> {
        let ns = self.ns()?;
        let api: Api<Job> = Api::namespaced(ctx.client.clone(), &ns);
        match api.get_opt(&desired.name_any()).await? {
            Some(existing) => {
                let outdated = bootstrap_differs(&existing, desired);
                Ok((existing, outdated))
            }
            None => Ok((apply_in(ctx, &ns, desired).await?, false)),
        }
    }

    /// Deletes the objects of the parts applied before and no longer `wanted`, and the
    /// `ClusterSPIFFEID`s of this cluster that `objects` does not have.
    async fn prune(
        &self,
        ctx: &Context,
        objects: &ClusterObjects,
        wanted: &[AppliedPart],
    ) -> Result<(), Error> {
        let dropped = |part| self.applied_parts().contains(&part) && !wanted.contains(&part);
        let ns = self.ns()?;
        let name = self.name_any();
        let mut pruned = Vec::new();
        if dropped(AppliedPart::Gateway) {
            let gateway = names::gateway(&name);
            // The Deployment first, so no gateway pod runs without its policy or account.
            delete_in::<Deployment>(ctx, &ns, &gateway).await?;
            delete_in::<Service>(ctx, &ns, &gateway).await?;
            delete_in::<NetworkPolicy>(ctx, &ns, &gateway).await?;
            delete_in::<ServiceAccount>(ctx, &ns, &gateway).await?;
            pruned.push(format!(
                "the gateway {gateway} (Deployment, Service, NetworkPolicy, ServiceAccount)"
            ));
        }
        if self
            .applied_parts()
            .contains(&AppliedPart::ClusterSpiffeIds)
        {
            let deleted = self
                .delete_spiffe_ids(ctx, &wanted_spiffe_ids(objects))
                .await?;
            if !deleted.is_empty() {
                pruned.push(format!("ClusterSPIFFEIDs {}", deleted.join(", ")));
            }
        }
        if !pruned.is_empty() {
            // One event per reconcile: the recorder would fold a second of the same reason
            // into the first one's series.
            let note = format!(
                "deleted what the spec no longer asks for: {}",
                pruned.join("; ")
            );
            self.event(ctx, EventType::Normal, "Pruned", "Prune", note)
                .await;
        }
        Ok(())
    }

    /// Deletes this cluster's `ClusterSPIFFEID`s (found by label) except those named in
    /// `keep`; returns the names deleted.
    async fn delete_spiffe_ids(
        &self,
        ctx: &Context,
        keep: &[String],
    ) -> Result<Vec<String>, Error> {
        let api: Api<ClusterSpiffeId> = Api::all(ctx.client.clone());
        let selector = cluster_scoped_selector(&self.ns()?, &self.name_any());
        let listed = api.list(&ListParams::default().labels(&selector)).await?;
        let mut deleted = Vec::new();
        for id in listed.items {
            let name = id.name_any();
            if keep.contains(&name) {
                continue;
            }
            match api.delete(&name, &DeleteParams::background()).await {
                Ok(_) => deleted.push(name),
                Err(kube::Error::Api(s)) if s.code == 404 => {}
                Err(e) => return Err(object_error::<ClusterSpiffeId>("", &name)(e)),
            }
        }
        Ok(deleted)
    }

    /// A deletion waiting for the annotation: phase `Deleting`, the condition and an event
    /// saying what to do, the finalizer kept.
    async fn hold_deletion(&self, ctx: &Context) -> Result<Action, Error> {
        let message = held_message(&self.ns()?, &self.name_any());
        let parts = self.applied_parts().to_vec();
        self.finish(ctx, Observation::DeletionHeld { message }, parts)
            .await?;
        Ok(Action::requeue(HELD_REQUEUE))
    }

    /// The deletion, once acknowledged: the `ClusterSPIFFEID`s go (no owner reference can
    /// take them), the cached Nexus client is forgotten, and the finalizer is removed when this
    /// succeeds; garbage collection takes the owned objects.
    async fn cleanup(&self, ctx: &Context) -> Result<Action, Error> {
        let ns = self.ns()?;
        let name = self.name_any();
        if self.spec.paused {
            return Err(Error::ClusterPaused(format!("{ns}/{name}")));
        }
        if self.spec.cluster_spiffe_ids.enabled
            || self
                .applied_parts()
                .contains(&AppliedPart::ClusterSpiffeIds)
        {
            self.delete_spiffe_ids(ctx, &[]).await?;
        }
        ctx.nexus.forget(&ns, &name);
        self.event(
            ctx,
            EventType::Normal,
            "Deleted",
            "Delete",
            format!(
                "break-glass export acknowledged: the cluster's objects go by garbage collection; \
                 the Nexus PersistentVolumeClaim ({}-{}-0) is retained: delete it once its data is no longer wanted",
                DATA_VOLUME,
                names::nexus(&name)
            ),
        )
        .await;
        Ok(Action::await_change())
    }

    /// Writes the status `observation` implies when it changed, with an event when the phase
    /// changed (or a refusal is news).
    async fn finish(
        &self,
        ctx: &Context,
        observation: Observation,
        parts: Vec<AppliedPart>,
    ) -> Result<(), Error> {
        let status = observe::next_status(
            self.status.as_ref(),
            self.metadata.generation,
            &observation,
            parts,
            &conditions::now_rfc3339(),
        );
        if self.status.as_ref() == Some(&status) {
            return Ok(());
        }
        let old_phase = self.status.as_ref().and_then(|s| s.phase);
        let event = match &observation {
            Observation::Invalid { message } => {
                Some((EventType::Warning, "InvalidSpec", message.clone()))
            }
            Observation::DeletionHeld { message } => Some((
                EventType::Warning,
                "BreakGlassExportRequired",
                message.clone(),
            )),
            Observation::ApplyFailed { message } => {
                Some((EventType::Warning, "ApplyFailed", message.clone()))
            }
            _ if old_phase != status.phase => {
                let phase = status.phase.map(|p| format!("{p:?}")).unwrap_or_default();
                let ready = conditions::find(&status.conditions, conditions::READY)
                    .map(|c| c.message.clone())
                    .unwrap_or_default();
                Some((
                    EventType::Normal,
                    "PhaseChanged",
                    format!("{phase}: {ready}"),
                ))
            }
            _ => None,
        };
        if let Some((type_, reason, note)) = event {
            self.event(ctx, type_, reason, "Reconcile", note).await;
        }
        self.write_status(ctx, status).await
    }

    /// Writes `status` with server-side apply on the status subresource.
    async fn write_status(&self, ctx: &Context, status: SpikeClusterStatus) -> Result<(), Error> {
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
mod scenarios;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fixtures;
    use serde_json::json;

    #[test]
    fn the_held_message_says_what_to_run_and_which_annotation() {
        let m = held_message("spike-system", "spike");
        assert!(m.contains("spike operator recover"), "{m}");
        assert!(
            m.contains(
                "kubectl -n spike-system annotate spikecluster spike spike.spiffe.io/break-glass-exported=true"
            ),
            "{m}"
        );
    }

    #[test]
    fn only_true_acknowledges_the_export() {
        let mut c = fixtures::cluster();
        assert!(!c.export_acknowledged());
        for (value, acknowledged) in [("false", false), ("yes", false), ("true", true)] {
            c.metadata.annotations =
                Some([(EXPORTED_ANNOTATION.to_owned(), value.to_owned())].into());
            assert_eq!(c.export_acknowledged(), acknowledged, "{value}");
        }
    }

    #[test]
    fn a_deletion_is_held_only_with_the_finalizer_and_without_the_annotation() {
        let mut c = fixtures::cluster();
        assert!(!c.deletion_held());
        c.metadata.deletion_timestamp = Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
            k8s_openapi::jiff::Timestamp::now(),
        ));
        // Without the finalizer there is nothing to hold.
        assert!(!c.deletion_held());
        c.metadata.finalizers = Some(vec![FINALIZER.into()]);
        assert!(c.deletion_held());
        c.metadata.annotations = Some([(EXPORTED_ANNOTATION.to_owned(), "true".to_owned())].into());
        assert!(!c.deletion_held());
    }

    #[test]
    fn the_wanted_parts_and_ids_follow_the_spec() {
        let mut c = fixtures::cluster();
        let objects = |c: &SpikeCluster| cluster_objects(c, &validate_cluster(c).unwrap()).unwrap();
        assert!(wanted_parts(&objects(&c)).is_empty());
        assert!(wanted_spiffe_ids(&objects(&c)).is_empty());
        c.spec.cluster_spiffe_ids.enabled = true;
        c.spec.gateway = Some(serde_json::from_value(json!({"name": "edge"})).unwrap());
        let o = objects(&c);
        assert_eq!(
            wanted_parts(&o),
            [AppliedPart::Gateway, AppliedPart::ClusterSpiffeIds]
        );
        assert_eq!(
            wanted_spiffe_ids(&o),
            [
                "spike-system-spike-nexus",
                "spike-system-spike-keeper",
                "spike-system-spike-bootstrap",
                "spike-system-spike-gateway"
            ]
        );
    }

    #[test]
    fn the_watches_select_what_the_operator_manages() {
        assert_eq!(
            managed_selector(),
            "app.kubernetes.io/managed-by=spike-operator"
        );
    }
}
