//! What every controller shares: the Kubernetes client, the event recorder, the metrics, the
//! way to reach each cluster's Nexus and the per-object retry backoff.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use k8s_openapi::api::core::v1::ObjectReference;
use kube::Client;
use kube::api::DynamicObject;
use kube::runtime::events::{Event, EventType, Recorder, Reporter};
use kube::runtime::reflector::ObjectRef;
use spike_runtime::svid::SvidSource;

use crate::crd::SpikeCluster;
use crate::metrics::Metrics;
use crate::names;
use crate::nexus::{NexusSync, SyncError};

/// The controller name on events (`reportingController`) and the field manager of every
/// server-side apply.
pub const MANAGER: &str = "spike-operator";

/// How long a call to Nexus may take before the reconcile counts Nexus as unavailable.
pub const NEXUS_TIMEOUT: Duration = Duration::from_secs(10);

/// The state shared by every controller.
pub struct Context {
    /// The Kubernetes client.
    pub client: Client,
    /// Publishes events on the resources.
    pub recorder: Recorder,
    /// Reconcile counts, durations and errors.
    pub metrics: Arc<Metrics>,
    /// Reaches a cluster's Nexus.
    pub nexus: NexusConnector,
    /// Each failing object's retry delay.
    pub backoff: Backoff,
}

impl std::fmt::Debug for Context {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Context")
            .field("nexus", &self.nexus)
            .finish_non_exhaustive()
    }
}

impl Context {
    /// A context on `client`; `instance` (the pod's name) tells replicas apart on events.
    pub fn new(
        client: Client,
        instance: Option<String>,
        metrics: Arc<Metrics>,
        nexus: NexusConnector,
    ) -> Self {
        let reporter = Reporter {
            controller: MANAGER.to_owned(),
            instance,
        };
        Self {
            recorder: Recorder::new(client.clone(), reporter),
            client,
            metrics,
            nexus,
            backoff: Backoff::default(),
        }
    }

    /// Publishes an event on `regarding`. Events are for people: a failure to publish one is
    /// logged and does not fail the reconcile (a missing `events` grant must not stop syncing).
    /// `note` never holds a secret value.
    pub async fn publish(
        &self,
        regarding: &ObjectReference,
        type_: EventType,
        reason: &str,
        action: &str,
        note: String,
    ) {
        let event = Event {
            type_,
            reason: reason.to_owned(),
            note: Some(note),
            action: action.to_owned(),
            secondary: None,
        };
        if let Err(e) = self.recorder.publish(&event, regarding).await {
            tracing::warn!(reason, error = %e, "could not publish an event");
        }
    }
}

impl Context {
    /// Writes `status` of `obj` with server-side apply on its status subresource (field manager
    /// `spike-operator`, forced). Callers write only a status that differs from the object's,
    /// so a reconcile that changes nothing writes nothing.
    pub async fn write_status<K, S>(&self, obj: &K, status: &S) -> Result<(), super::Error>
    where
        K: kube::Resource<DynamicType = (), Scope = k8s_openapi::NamespaceResourceScope>
            + Clone
            + serde::de::DeserializeOwned
            + std::fmt::Debug,
        S: serde::Serialize,
    {
        use kube::ResourceExt;
        use kube::api::{Api, Patch, PatchParams};
        let ns = crate::validate::namespace_of(obj.meta()).map_err(super::Error::InvalidSpec)?;
        let api: Api<K> = Api::namespaced(self.client.clone(), ns);
        let patch = Patch::Apply(serde_json::json!({
            "apiVersion": K::api_version(&()),
            "kind": K::kind(&()),
            "status": status,
        }));
        api.patch_status(
            &obj.name_any(),
            &PatchParams::apply(MANAGER).force(),
            &patch,
        )
        .await?;
        Ok(())
    }

    /// What follows a failed reconcile of `obj`, for every controller's `error_policy`:
    /// counted by reason, logged (the error names no value), retried after the object's
    /// backoff; never a crash, never a hot loop.
    pub fn failed<K>(
        &self,
        controller: crate::metrics::ControllerName,
        obj: &K,
        error: &super::Error,
    ) -> kube::runtime::controller::Action
    where
        K: kube::Resource<DynamicType = ()>,
    {
        self.metrics.reconcile_failed(controller, error.reason());
        let delay = self.backoff.failed(ObjectRef::from_obj(obj).erase());
        tracing::warn!(
            object = %ObjectRef::from_obj(obj),
            reason = error.reason(),
            error = %error,
            retry_in = ?delay,
            "{} reconcile failed",
            K::kind(&())
        );
        kube::runtime::controller::Action::requeue(delay)
    }

    /// Publishes an event about `obj` (see [`Context::publish`]), its note bounded.
    pub async fn event_about<K: kube::Resource<DynamicType = ()>>(
        &self,
        obj: &K,
        type_: EventType,
        reason: &str,
        action: &str,
        note: String,
    ) {
        let note = super::conditions::bounded(note);
        self.publish(&obj.object_ref(&()), type_, reason, action, note)
            .await;
    }

    /// The client of `cluster`'s Nexus.
    pub fn nexus_of(&self, cluster: &SpikeCluster) -> Result<NexusSync, SyncError> {
        use kube::ResourceExt;
        self.nexus.for_cluster(
            cluster.namespace().as_deref().unwrap_or_default(),
            &cluster.name_any(),
        )
    }
}

/// How a controller reaches the Nexus of a `SpikeCluster`.
#[derive(Debug)]
pub enum NexusConnector {
    /// Each cluster's Nexus at its Service (`<cluster>-nexus.<ns>.svc:8553`), as the
    /// operator's SVID; one pooled client per cluster, created on first use.
    Service(ServiceConnector),
    /// One Nexus for every cluster, whatever its name: for tests against a Nexus started in
    /// the test, and for running the operator outside the cluster. (Boxed: a client is large.)
    Fixed(Box<NexusSync>),
}

impl NexusConnector {
    /// Connects to Services as the SVID `source` holds (which must be `/spike/operator`).
    pub fn service(source: Arc<dyn SvidSource>, timeout: Duration) -> Self {
        Self::Service(ServiceConnector {
            source,
            timeout,
            clients: Mutex::default(),
        })
    }

    /// Every cluster's Nexus is the one `sync` reaches.
    pub fn fixed(sync: NexusSync) -> Self {
        Self::Fixed(Box::new(sync))
    }

    /// The client of the Nexus of cluster `name` in `namespace`.
    pub fn for_cluster(&self, namespace: &str, name: &str) -> Result<NexusSync, SyncError> {
        match self {
            Self::Fixed(sync) => Ok((**sync).clone()),
            Self::Service(s) => s.for_cluster(namespace, name),
        }
    }

    /// Drops the cached client of a cluster (deleted, or its Nexus moved).
    pub fn forget(&self, namespace: &str, name: &str) {
        if let Self::Service(s) = self {
            s.clients
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .remove(&(namespace.to_owned(), name.to_owned()));
        }
    }
}

#[cfg(test)]
impl NexusConnector {
    /// True when a client of cluster `name` in `namespace` is cached (for the tests of
    /// [`NexusConnector::forget`]'s callers).
    pub(crate) fn is_cached(&self, namespace: &str, name: &str) -> bool {
        match self {
            Self::Fixed(_) => false,
            Self::Service(s) => s
                .clients
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .contains_key(&(namespace.to_owned(), name.to_owned())),
        }
    }
}

/// Clients of each cluster's Nexus Service, cached by (namespace, name).
pub struct ServiceConnector {
    source: Arc<dyn SvidSource>,
    timeout: Duration,
    clients: Mutex<HashMap<(String, String), NexusSync>>,
}

impl std::fmt::Debug for ServiceConnector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServiceConnector")
            .field("timeout", &self.timeout)
            .finish_non_exhaustive()
    }
}

impl ServiceConnector {
    fn for_cluster(&self, namespace: &str, name: &str) -> Result<NexusSync, SyncError> {
        let key = (namespace.to_owned(), name.to_owned());
        let mut clients = self.clients.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(c) = clients.get(&key) {
            return Ok(c.clone());
        }
        let sync = NexusSync::connect(
            &names::nexus_addr(name, namespace),
            self.source.clone(),
            self.timeout,
        )?;
        clients.insert(key, sync.clone());
        Ok(sync)
    }
}

/// Per-object exponential backoff: the first retry after [`Backoff::FIRST`], doubling up to
/// [`Backoff::MAX`], back to the start once a reconcile of the object succeeds. One object
/// failing never slows the retries of another.
#[derive(Debug, Default)]
pub struct Backoff {
    failures: Mutex<HashMap<ObjectRef<DynamicObject>, u32>>,
}

impl Backoff {
    /// The first retry delay.
    pub const FIRST: Duration = Duration::from_secs(5);
    /// The longest retry delay.
    pub const MAX: Duration = Duration::from_secs(300);

    /// Counts a failure of `obj` and returns how long to wait before retrying it.
    pub fn failed(&self, obj: ObjectRef<DynamicObject>) -> Duration {
        let mut failures = self.failures.lock().unwrap_or_else(PoisonError::into_inner);
        let n = failures.entry(obj).or_insert(0);
        let delay = Self::FIRST
            .saturating_mul(2u32.saturating_pow((*n).min(16)))
            .min(Self::MAX);
        *n = n.saturating_add(1);
        delay
    }

    /// Forgets the failures of `obj` (it reconciled, or it is gone).
    pub fn succeeded(&self, obj: &ObjectRef<DynamicObject>) {
        self.failures
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(obj);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crd::SpikePolicy;

    fn obj(name: &str) -> ObjectRef<DynamicObject> {
        ObjectRef::<SpikePolicy>::new(name).within("team-a").erase()
    }

    #[test]
    fn backoff_doubles_per_object_up_to_the_cap_and_resets() {
        let b = Backoff::default();
        let delays: Vec<u64> = (0..9).map(|_| b.failed(obj("a")).as_secs()).collect();
        assert_eq!(delays, [5, 10, 20, 40, 80, 160, 300, 300, 300]);
        // Another object starts from the beginning.
        assert_eq!(b.failed(obj("b")), Backoff::FIRST);
        b.succeeded(&obj("a"));
        assert_eq!(b.failed(obj("a")), Backoff::FIRST);
    }
}
