//! Reconcile scenarios of the `SpikeCluster` controller on the scripted API server
//! ([`crate::fixtures::ApiServerVerifier`]): each runs one reconcile against the exact
//! requests it must make, and fails on one more or one fewer.

use std::sync::Arc;
use std::time::Duration;

use http::{Method, StatusCode};
use serde_json::{Value, json};
use spike_core::id::{Builtin, TrustDomain};
use spike_runtime::svid::{Identity, StaticSource};

use super::*;
use crate::controller::NexusConnector;
use crate::crd::ClusterPhase;
use crate::fixtures::{self, ApiServerVerifier, CLUSTER_NS};

const APPLY_QUERY: &str = "?&force=true&fieldManager=spike-operator";

/// A context whose Nexus connector makes real (lazy) clients as `/spike/operator`, so the
/// tests can see the deletion forget the cluster's.
fn context() -> (Arc<Context>, ApiServerVerifier) {
    let td = TrustDomain::new("spike.dev").unwrap();
    let ca = spike_agent::CertificateAuthority::new(&td).unwrap();
    let svid = ca
        .issue(&Builtin::Operator.id(&td), Duration::from_secs(3600))
        .unwrap();
    let identity = Identity::from_pem(
        &td,
        svid.chain_pem.as_bytes(),
        svid.key_pem.as_bytes(),
        svid.bundle_pem.as_bytes(),
    )
    .unwrap();
    let source = Arc::new(StaticSource::new(td, identity));
    let (ctx, server) = fixtures::context(NexusConnector::service(source, Duration::from_secs(1)));
    (Arc::new(ctx), server)
}

/// The sample cluster with the finalizer, as after its first reconcile.
fn finalized(mut c: SpikeCluster) -> SpikeCluster {
    c.metadata.finalizers = Some(vec![FINALIZER.into()]);
    c
}

fn deleting(mut c: SpikeCluster) -> SpikeCluster {
    c.metadata.deletion_timestamp = Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
        k8s_openapi::jiff::Timestamp::now(),
    ));
    c
}

fn cluster_path(c: &SpikeCluster) -> String {
    format!(
        "/apis/spike.spiffe.io/v1alpha1/namespaces/{}/spikeclusters/{}",
        c.namespace().unwrap(),
        c.name_any()
    )
}

/// Every object the builder makes of `c`, as JSON in apply order.
fn desired(c: &SpikeCluster) -> Vec<Value> {
    cluster_objects(c, &validate_cluster(c).unwrap())
        .unwrap()
        .to_json()
        .unwrap()
}

/// The API path of an object from its `apiVersion`, `kind`, namespace and name.
fn path_of(obj: &Value) -> String {
    let api_version = obj["apiVersion"].as_str().unwrap();
    let kind = obj["kind"].as_str().unwrap();
    let plural = match kind {
        "NetworkPolicy" => "networkpolicies".to_owned(),
        "PodDisruptionBudget" => "poddisruptionbudgets".to_owned(),
        "ClusterSPIFFEID" => "clusterspiffeids".to_owned(),
        k => format!("{}s", k.to_lowercase()),
    };
    let root = if api_version.contains('/') {
        format!("/apis/{api_version}")
    } else {
        format!("/api/{api_version}")
    };
    let name = obj["metadata"]["name"].as_str().unwrap();
    match obj["metadata"]["namespace"].as_str() {
        Some(ns) => format!("{root}/namespaces/{ns}/{plural}/{name}"),
        None => format!("{root}/{plural}/{name}"),
    }
}

fn not_found() -> (StatusCode, Value) {
    (
        StatusCode::NOT_FOUND,
        json!({"kind": "Status", "apiVersion": "v1", "status": "Failure",
               "reason": "NotFound", "code": 404, "message": "not found"}),
    )
}

/// How the scripted server answers the applies.
#[derive(Default)]
struct World {
    /// The bootstrap Job as it exists, if it does.
    job: Option<Value>,
    /// Ready keepers and whether Nexus is ready, in the StatefulSets' answers.
    ready_keepers: i32,
    nexus_ready: bool,
}

/// Expects the server-side applies of exactly `objects`, in order, each with the field
/// manager, `force` and the builder's object as body; for the Job, its read first and the
/// apply only when it does not exist.
async fn expect_applies(server: &mut ApiServerVerifier, objects: &[Value], world: &World) {
    for obj in objects {
        let path = path_of(obj);
        if obj["kind"] == "Job" {
            let existing = world.job.clone();
            server
                .expect(Method::GET, &path, |_| match existing {
                    Some(j) => (StatusCode::OK, j),
                    None => not_found(),
                })
                .await;
            if world.job.is_some() {
                continue;
            }
        }
        let name = obj["metadata"]["name"].as_str().unwrap().to_owned();
        let r = server
            .expect(Method::PATCH, &format!("{path}{APPLY_QUERY}"), |r| {
                let mut answer = r.body.clone();
                if r.body["kind"] == "StatefulSet" {
                    let ready = if name.ends_with("-keeper") {
                        world.ready_keepers
                    } else {
                        i32::from(world.nexus_ready)
                    };
                    answer["status"] = json!({"replicas": 0, "readyReplicas": ready});
                }
                (StatusCode::OK, answer)
            })
            .await;
        assert_eq!(r.content_type, "application/apply-patch+yaml", "{path}");
        assert_eq!(&r.body, obj, "the applied {path} is the builder's object");
    }
}

/// An event of `type_` and `reason` about the cluster; returns its note.
async fn expect_event(server: &mut ApiServerVerifier, type_: &str, reason: &str) -> String {
    let (method, r) = server.any(|_, r| (StatusCode::OK, r.body.clone())).await;
    assert_eq!(method, Method::POST, "{}", r.uri);
    assert_eq!(
        r.uri,
        format!("/apis/events.k8s.io/v1/namespaces/{CLUSTER_NS}/events?")
    );
    assert_eq!(r.body["type"], type_, "{}", r.body);
    assert_eq!(r.body["reason"], reason, "{}", r.body);
    assert_eq!(r.body["regarding"]["kind"], "SpikeCluster");
    r.body["note"].as_str().unwrap_or_default().to_owned()
}

/// The server-side apply of the cluster's status; returns the status written.
async fn expect_status(server: &mut ApiServerVerifier, c: &SpikeCluster) -> SpikeClusterStatus {
    let uri = format!("{}/status{APPLY_QUERY}", cluster_path(c));
    let base = serde_json::to_value(c).unwrap();
    let r = server
        .expect(Method::PATCH, &uri, |r| {
            let mut obj = base;
            obj["status"] = r.body["status"].clone();
            (StatusCode::OK, obj)
        })
        .await;
    assert_eq!(r.body["kind"], "SpikeCluster");
    serde_json::from_value(r.body["status"].clone()).unwrap()
}

/// Runs one reconcile of `c` on `ctx` while `script` plays the server, then checks that
/// nothing else was asked; returns the reconcile's result.
async fn scenario<F>(
    ctx: &Arc<Context>,
    server: ApiServerVerifier,
    c: SpikeCluster,
    script: impl FnOnce(ApiServerVerifier) -> F,
) -> Result<Action, Error>
where
    F: Future<Output = ApiServerVerifier>,
{
    let reconciling = tokio::spawn(reconcile(Arc::new(c), ctx.clone()));
    let mut server = tokio::time::timeout(Duration::from_secs(30), script(server))
        .await
        .expect("the script finished in time");
    server.no_more_requests().await;
    reconciling.await.expect("the reconcile did not panic")
}

/// The first creation's script: every apply, the `Pending` event, the status.
async fn create(c: &SpikeCluster) -> SpikeClusterStatus {
    let (ctx, server) = context();
    let objects = desired(c);
    let written = Arc::new(std::sync::Mutex::new(None));
    let out = written.clone();
    let cluster = c.clone();
    let action = scenario(&ctx, server, c.clone(), |mut server| async move {
        expect_applies(&mut server, &objects, &World::default()).await;
        let note = expect_event(&mut server, "Normal", "PhaseChanged").await;
        assert!(note.starts_with("Pending: "), "{note}");
        *out.lock().unwrap() = Some(expect_status(&mut server, &cluster).await);
        server
    })
    .await
    .unwrap();
    assert_eq!(action, Action::requeue(RESYNC));
    written
        .lock()
        .unwrap()
        .take()
        .expect("a status was written")
}

#[tokio::test]
async fn the_first_reconcile_adds_the_finalizer_and_nothing_else() {
    let (ctx, server) = context();
    let c = fixtures::cluster();
    let path = cluster_path(&c);
    let answer = serde_json::to_value(finalized(c.clone())).unwrap();
    scenario(&ctx, server, c, |mut server| async move {
        let r = server
            .expect(Method::PATCH, &format!("{path}?"), |_| {
                (StatusCode::OK, answer)
            })
            .await;
        assert_eq!(
            r.body,
            json!([
                {"op": "test", "path": "/metadata/finalizers", "value": null},
                {"op": "add", "path": "/metadata/finalizers", "value": [FINALIZER]},
            ])
        );
        server
    })
    .await
    .unwrap();
}

#[tokio::test]
async fn first_creation_applies_every_object_in_order_then_the_status() {
    let c = finalized(fixtures::cluster());
    let status = create(&c).await;
    assert_eq!(status.phase, Some(ClusterPhase::Pending));
    assert_eq!(status.observed_generation, Some(1));
    assert_eq!(status.ready_keepers, Some(0));
    assert!(status.applied_parts.is_empty());
    let types: Vec<&str> = status.conditions.iter().map(|c| c.type_.as_str()).collect();
    assert_eq!(
        types,
        ["Bootstrapped", "Sealed", "Ready", "Progressing", "Degraded"]
    );
}

#[tokio::test]
async fn a_second_reconcile_that_changes_nothing_writes_no_status() {
    let mut c = finalized(fixtures::cluster());
    c.status = Some(create(&c).await);
    let (ctx, server) = context();
    let objects = desired(&c);
    // The Job exists now, so it is read and not applied again.
    let job = objects.iter().find(|o| o["kind"] == "Job").cloned();
    scenario(&ctx, server, c, |mut server| async move {
        let world = World {
            job,
            ..World::default()
        };
        expect_applies(&mut server, &objects, &world).await;
        server
    })
    .await
    .unwrap();
}

#[tokio::test]
async fn a_spec_change_reapplies_and_leaves_a_completed_bootstrap_job() {
    let mut c = finalized(fixtures::cluster());
    c.status = Some(create(&c).await);
    let mut job = desired(&c)
        .into_iter()
        .find(|o| o["kind"] == "Job")
        .unwrap();
    job["status"] = json!({"succeeded": 1});
    c.spec.keepers.replicas = 5;
    c.metadata.generation = Some(2);
    let objects = desired(&c);
    let keepers = objects
        .iter()
        .find(|o| o["kind"] == "StatefulSet" && o["metadata"]["name"] == "spike-keeper")
        .unwrap();
    assert_eq!(keepers["spec"]["replicas"], 5);
    let (ctx, server) = context();
    let cluster = c.clone();
    let written = Arc::new(std::sync::Mutex::new(None));
    let out = written.clone();
    scenario(&ctx, server, c, |mut server| async move {
        let world = World {
            job: Some(job),
            ready_keepers: 3,
            nexus_ready: true,
        };
        expect_applies(&mut server, &objects, &world).await;
        let note = expect_event(&mut server, "Normal", "PhaseChanged").await;
        assert!(note.starts_with("Ready: Nexus is unsealed"), "{note}");
        *out.lock().unwrap() = Some(expect_status(&mut server, &cluster).await);
        server
    })
    .await
    .unwrap();
    let status = written.lock().unwrap().take().unwrap();
    assert_eq!(status.phase, Some(ClusterPhase::Ready));
    assert_eq!(status.observed_generation, Some(2));
    assert_eq!(status.ready_keepers, Some(3));
    let progressing = conditions::find(&status.conditions, conditions::PROGRESSING).unwrap();
    assert_eq!(progressing.reason, "KeepersStarting");
    let bootstrapped = conditions::find(&status.conditions, observe::BOOTSTRAPPED).unwrap();
    assert!(
        bootstrapped
            .message
            .contains("Job spike-bootstrap is left as it is"),
        "{}",
        bootstrapped.message
    );
}

#[tokio::test]
async fn a_paused_cluster_gets_only_its_status() {
    let mut c = finalized(fixtures::cluster());
    c.spec.paused = true;
    let (ctx, server) = context();
    let cluster = c.clone();
    let action = scenario(&ctx, server, c, |mut server| async move {
        expect_event(&mut server, "Normal", "PhaseChanged").await;
        let status = expect_status(&mut server, &cluster).await;
        assert_eq!(status.phase, Some(ClusterPhase::Paused));
        let p = conditions::find(&status.conditions, conditions::PROGRESSING).unwrap();
        assert_eq!(
            (p.status, p.reason.as_str()),
            (crate::crd::ConditionStatus::False, "Paused")
        );
        server
    })
    .await
    .unwrap();
    assert_eq!(action, Action::requeue(IDLE_REQUEUE));
}

#[tokio::test]
async fn a_bad_spec_is_reported_and_nothing_is_applied() {
    let mut c = finalized(fixtures::cluster());
    c.spec.keepers.threshold = 9;
    let (ctx, server) = context();
    let cluster = c.clone();
    scenario(&ctx, server, c, |mut server| async move {
        let note = expect_event(&mut server, "Warning", "InvalidSpec").await;
        assert!(note.starts_with("spec.keepers.threshold"), "{note}");
        let status = expect_status(&mut server, &cluster).await;
        assert_eq!(status.phase, Some(ClusterPhase::Degraded));
        let d = conditions::find(&status.conditions, conditions::DEGRADED).unwrap();
        assert_eq!(d.reason, "InvalidSpec");
        assert_eq!(d.message, note);
        let r = conditions::find(&status.conditions, conditions::READY).unwrap();
        assert_eq!(r.status, crate::crd::ConditionStatus::False);
        server
    })
    .await
    .unwrap();
}

#[tokio::test]
async fn a_deletion_is_held_until_the_export_is_acknowledged() {
    let c = deleting(finalized(fixtures::cluster()));
    let (ctx, server) = context();
    let cluster = c.clone();
    let action = scenario(&ctx, server, c, |mut server| async move {
        let note = expect_event(&mut server, "Warning", "BreakGlassExportRequired").await;
        assert_eq!(note, held_message(CLUSTER_NS, "spike"));
        let status = expect_status(&mut server, &cluster).await;
        assert_eq!(status.phase, Some(ClusterPhase::Deleting));
        let r = conditions::find(&status.conditions, conditions::READY).unwrap();
        assert_eq!(r.reason, "BreakGlassExportRequired");
        assert!(
            r.message
                .contains("spike.spiffe.io/break-glass-exported=true"),
            "{}",
            r.message
        );
        // No finalizer removal: the script ends here.
        server
    })
    .await
    .unwrap();
    assert_eq!(action, Action::requeue(HELD_REQUEUE));
}

#[tokio::test]
async fn an_acknowledged_deletion_deletes_the_spiffe_ids_and_removes_the_finalizer() {
    let mut c = deleting(finalized(fixtures::cluster()));
    c.spec.cluster_spiffe_ids.enabled = true;
    c.metadata.annotations = Some([(EXPORTED_ANNOTATION.to_owned(), "true".to_owned())].into());
    let (ctx, server) = context();
    // A cached client of this cluster's Nexus, which the deletion must drop.
    ctx.nexus.for_cluster(CLUSTER_NS, "spike").unwrap();
    assert!(ctx.nexus.is_cached(CLUSTER_NS, "spike"));
    let ids: Vec<Value> = desired(&c)
        .into_iter()
        .filter(|o| o["kind"] == "ClusterSPIFFEID")
        .collect();
    assert_eq!(ids.len(), 3);
    let path = cluster_path(&c);
    let mut gone = c.clone();
    gone.metadata.finalizers = None;
    let gone = serde_json::to_value(gone).unwrap();
    scenario(&ctx, server, c, |mut server| async move {
        let list = json!({"apiVersion": "spire.spiffe.io/v1alpha1", "kind": "ClusterSPIFFEIDList",
                          "metadata": {}, "items": ids.clone()});
        let (method, r) = server.any(|_, _| (StatusCode::OK, list)).await;
        assert_eq!(method, Method::GET);
        let selector = r
            .uri
            .replace("%2F", "/")
            .replace("%3D", "=")
            .replace("%2C", ",");
        assert_eq!(
            selector,
            format!(
                "/apis/spire.spiffe.io/v1alpha1/clusterspiffeids?&labelSelector={}",
                cluster_scoped_selector(CLUSTER_NS, "spike")
            )
        );
        for id in &ids {
            let answer = id.clone();
            server
                .expect(Method::DELETE, &format!("{}?", path_of(id)), |_| {
                    (StatusCode::OK, answer)
                })
                .await;
        }
        let note = expect_event(&mut server, "Normal", "Deleted").await;
        assert!(
            note.contains("PersistentVolumeClaim (data-spike-nexus-0) is retained"),
            "{note}"
        );
        let r = server
            .expect(Method::PATCH, &format!("{path}?"), |_| {
                (StatusCode::OK, gone)
            })
            .await;
        assert_eq!(
            r.body,
            json!([
                {"op": "test", "path": "/metadata/finalizers/0", "value": FINALIZER},
                {"op": "remove", "path": "/metadata/finalizers/0"},
            ])
        );
        server
    })
    .await
    .unwrap();
    assert!(!ctx.nexus.is_cached(CLUSTER_NS, "spike"));
}

#[tokio::test]
async fn removing_the_gateway_prunes_its_objects() {
    let mut c = finalized(fixtures::cluster());
    let mut status = create(&c).await;
    status.applied_parts = vec![AppliedPart::Gateway];
    c.status = Some(status);
    let objects = desired(&c);
    assert!(
        objects
            .iter()
            .all(|o| o["metadata"]["name"] != "spike-gateway")
    );
    let job = objects.iter().find(|o| o["kind"] == "Job").cloned();
    let (ctx, server) = context();
    let cluster = c.clone();
    scenario(&ctx, server, c, |mut server| async move {
        let world = World {
            job,
            ..World::default()
        };
        expect_applies(&mut server, &objects, &world).await;
        for (i, path) in [
            "/apis/apps/v1/namespaces/spike-system/deployments/spike-gateway",
            "/api/v1/namespaces/spike-system/services/spike-gateway",
            "/apis/networking.k8s.io/v1/namespaces/spike-system/networkpolicies/spike-gateway",
            "/api/v1/namespaces/spike-system/serviceaccounts/spike-gateway",
        ]
        .into_iter()
        .enumerate()
        {
            server
                .expect(Method::DELETE, &format!("{path}?"), |_| {
                    // One already gone: a 404 is as good as a deletion.
                    if i == 1 {
                        not_found()
                    } else {
                        (
                            StatusCode::OK,
                            json!({"kind": "Status", "apiVersion": "v1", "status": "Success"}),
                        )
                    }
                })
                .await;
        }
        let note = expect_event(&mut server, "Normal", "Pruned").await;
        assert_eq!(
            note,
            "deleted what the spec no longer asks for: the gateway spike-gateway (Deployment, Service, NetworkPolicy, ServiceAccount)"
        );
        let status = expect_status(&mut server, &cluster).await;
        assert!(status.applied_parts.is_empty());
        server
    })
    .await
    .unwrap();
}

#[tokio::test]
async fn a_refused_apply_is_degraded_and_retried() {
    let c = finalized(fixtures::cluster());
    let first = desired(&c).remove(0);
    let (ctx, server) = context();
    let cluster = c.clone();
    let e = scenario(&ctx, server, c, |mut server| async move {
        server
            .expect(
                Method::PATCH,
                &format!("{}{APPLY_QUERY}", path_of(&first)),
                |_| {
                    (
                        StatusCode::FORBIDDEN,
                        json!({"kind": "Status", "apiVersion": "v1", "status": "Failure",
                               "reason": "Forbidden", "code": 403,
                               "message": "serviceaccounts is forbidden"}),
                    )
                },
            )
            .await;
        let note = expect_event(&mut server, "Warning", "ApplyFailed").await;
        assert_eq!(
            note,
            "ServiceAccount spike-system/spike-keeper: serviceaccounts is forbidden (Forbidden, 403)"
        );
        let status = expect_status(&mut server, &cluster).await;
        assert_eq!(status.phase, Some(ClusterPhase::Degraded));
        assert_eq!(status.observed_generation, None);
        let d = conditions::find(&status.conditions, conditions::DEGRADED).unwrap();
        assert_eq!(d.reason, "ApplyFailed");
        server
    })
    .await
    .unwrap_err();
    assert_eq!(e.reason(), "KubeApi");
    assert!(e.is_transient());
}

#[tokio::test]
async fn a_gateway_and_spiffe_ids_are_applied_in_order_and_remembered() {
    let mut c = finalized(fixtures::cluster());
    c.spec.cluster_spiffe_ids.enabled = true;
    c.spec.gateway = Some(serde_json::from_value(json!({"name": "edge"})).unwrap());
    let objects = desired(&c);
    let kinds: Vec<&str> = objects
        .iter()
        .map(|o| o["kind"].as_str().unwrap())
        .collect();
    assert_eq!(kinds.iter().filter(|k| **k == "ClusterSPIFFEID").count(), 4);
    assert_eq!(kinds.last(), Some(&"Deployment"));
    // Cluster-scoped: no namespace in the path.
    let id = objects
        .iter()
        .find(|o| o["kind"] == "ClusterSPIFFEID")
        .unwrap();
    assert_eq!(
        path_of(id),
        "/apis/spire.spiffe.io/v1alpha1/clusterspiffeids/spike-system-spike-nexus"
    );
    let (ctx, server) = context();
    let cluster = c.clone();
    scenario(&ctx, server, c, |mut server| async move {
        expect_applies(&mut server, &objects, &World::default()).await;
        expect_event(&mut server, "Normal", "PhaseChanged").await;
        let status = expect_status(&mut server, &cluster).await;
        assert_eq!(
            status.applied_parts,
            [AppliedPart::Gateway, AppliedPart::ClusterSpiffeIds]
        );
        server
    })
    .await
    .unwrap();
}

#[tokio::test]
async fn dropping_the_gateway_deletes_its_spiffe_id_and_disabling_them_deletes_all() {
    for disable in [false, true] {
        let mut c = finalized(fixtures::cluster());
        c.spec.cluster_spiffe_ids.enabled = true;
        c.spec.gateway = Some(serde_json::from_value(json!({"name": "edge"})).unwrap());
        let before: Vec<Value> = desired(&c)
            .into_iter()
            .filter(|o| o["kind"] == "ClusterSPIFFEID")
            .collect();
        // What the last reconcile left: everything applied, both parts remembered.
        let mut status = create(&finalized(fixtures::cluster())).await;
        status.applied_parts = vec![AppliedPart::Gateway, AppliedPart::ClusterSpiffeIds];
        c.status = Some(status);
        c.spec.gateway = None;
        c.spec.cluster_spiffe_ids.enabled = !disable;
        let objects = desired(&c);
        let job = objects.iter().find(|o| o["kind"] == "Job").cloned();
        let doomed: Vec<Value> = if disable {
            before.clone()
        } else {
            before
                .iter()
                .filter(|o| o["metadata"]["name"] == "spike-system-spike-gateway")
                .cloned()
                .collect()
        };
        let (ctx, server) = context();
        let cluster = c.clone();
        scenario(&ctx, server, c, |mut server| async move {
            let world = World {
                job,
                ..World::default()
            };
            expect_applies(&mut server, &objects, &world).await;
            for _ in 0..4 {
                let (method, _) = server.any(|_, _| not_found()).await;
                assert_eq!(method, Method::DELETE);
            }
            let list = json!({"apiVersion": "spire.spiffe.io/v1alpha1", "kind": "ClusterSPIFFEIDList",
                              "metadata": {}, "items": before});
            let (method, r) = server.any(|_, _| (StatusCode::OK, list)).await;
            assert_eq!(method, Method::GET);
            assert!(r.uri.contains("labelSelector="), "{}", r.uri);
            for id in &doomed {
                let answer = id.clone();
                server
                    .expect(Method::DELETE, &format!("{}?", path_of(id)), |_| {
                        (StatusCode::OK, answer)
                    })
                    .await;
            }
            let note = expect_event(&mut server, "Normal", "Pruned").await;
            assert!(note.contains("spike-system-spike-gateway"), "{note}");
            let status = expect_status(&mut server, &cluster).await;
            let expected: &[AppliedPart] = if disable {
                &[]
            } else {
                &[AppliedPart::ClusterSpiffeIds]
            };
            assert_eq!(status.applied_parts, expected);
            server
        })
        .await
        .unwrap();
    }
}

#[tokio::test]
async fn a_failed_bootstrap_job_is_degraded_with_its_reason() {
    let mut c = finalized(fixtures::cluster());
    c.status = Some(create(&c).await);
    let objects = desired(&c);
    let mut job = objects
        .iter()
        .find(|o| o["kind"] == "Job")
        .cloned()
        .unwrap();
    job["status"] = json!({"failed": 7, "conditions": [{
        "type": "Failed", "status": "True", "reason": "BackoffLimitExceeded",
        "message": "Job has reached the specified backoff limit"}]});
    let (ctx, server) = context();
    let cluster = c.clone();
    scenario(&ctx, server, c, |mut server| async move {
        let world = World {
            job: Some(job),
            ..World::default()
        };
        expect_applies(&mut server, &objects, &world).await;
        expect_event(&mut server, "Normal", "PhaseChanged").await;
        let status = expect_status(&mut server, &cluster).await;
        assert_eq!(status.phase, Some(ClusterPhase::Degraded));
        let d = conditions::find(&status.conditions, conditions::DEGRADED).unwrap();
        assert_eq!(d.reason, "BootstrapFailed");
        assert!(d.message.contains("BackoffLimitExceeded"), "{}", d.message);
        server
    })
    .await
    .unwrap();
}
