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
