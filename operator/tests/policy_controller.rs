//! The `SpikePolicy` controller end to end: reconciles against a scripted Kubernetes API
//! server (`spike_operator::fixtures`) and a real Nexus started in the test (`spike-bench`'s
//! in-process stack: keepers, Nexus with redb, bootstrap, mTLS on loopback).

mod common;

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use http::Method;
use kube::runtime::controller::Action;
use serde_json::{Value, json};
use spike::client::CliError;
use spike_bench::Stack;
use spike_core::api::PolicyResponse;
use spike_core::error::ErrorCode;
use spike_core::id::Builtin;
use spike_core::policy::Permission;
use spike_operator::controller::policy::{REFUSED_REQUEUE, RESYNC, error_policy, reconcile};
use spike_operator::controller::{Backoff, Error, NexusConnector};
use spike_operator::crd::{SpikePolicy, SpikePolicyStatus};
use spike_operator::fixtures::{
    self, ApiServerVerifier, CLUSTER_NS, deleting, finalized, tenant_policy_for,
};

use common::{Setup, TIMEOUT, setup, setup_with};

const NAME: &str = "k8s.team-a.readers";

impl Setup {
    fn policy(&self) -> SpikePolicy {
        finalized(tenant_policy_for(&self.td))
    }

    /// Runs one reconcile of `p` while `script` plays the API server; checks that the
    /// script's every step happened and that nothing else was asked.
    async fn reconcile<F, T>(
        &mut self,
        p: &SpikePolicy,
        script: impl FnOnce(ApiServerVerifier) -> F,
    ) -> (Result<Action, Error>, T)
    where
        F: Future<Output = (ApiServerVerifier, T)> + Send + 'static,
        T: Send + 'static,
    {
        let ctx = self.ctx.clone();
        self.scripted(reconcile(Arc::new(p.clone()), ctx), script)
            .await
    }

    async fn stored(&self) -> Result<PolicyResponse, CliError> {
        self.stack
            .client
            .call(Method::GET, &format!("/v1/policies/{NAME}"), None::<&()>)
            .await
    }

    /// How many times Nexus audited a write of the policy.
    fn audited_puts(&self) -> usize {
        let log = std::fs::read_to_string(self.stack.data_dir.join("audit.log")).expect("audit");
        log.lines()
            .filter_map(|l| serde_json::from_str::<Value>(l).ok())
            .filter(|v| v["action"] == "policy.put" && v["path"] == NAME)
            .count()
    }
}

fn condition<'a>(status: &'a Value, type_: &str) -> &'a Value {
    status["conditions"]
        .as_array()
        .expect("conditions")
        .iter()
        .find(|c| c["type"] == type_)
        .unwrap_or_else(|| panic!("no {type_} condition in {status}"))
}

fn with_status(mut p: SpikePolicy, status: &Value) -> SpikePolicy {
    p.status = Some(serde_json::from_value::<SpikePolicyStatus>(status.clone()).expect("status"));
    p
}

#[tokio::test(flavor = "multi_thread")]
async fn the_first_reconcile_adds_the_finalizer_and_nothing_else() {
    let mut s = setup().await;
    let p = tenant_policy_for(&s.td);
    let expected = p.clone();
    let (action, ()) = s
        .reconcile(&p, |mut api| async move {
            api.add_finalizer(&expected).await;
            (api, ())
        })
        .await;
    let action = action.expect("reconcile");
    // The patch's watch event brings the next reconcile.
    assert_eq!(action, Action::await_change());
    assert!(matches!(
        s.stored().await,
        Err(CliError::Api {
            code: ErrorCode::NotFound,
            ..
        })
    ));
    s.stack.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_policy_is_created_left_alone_updated_and_deleted() {
    let mut s = setup().await;
    let cluster = s.cluster();
    let p = s.policy();

    // Created: the policy in Nexus, an event, the exact status.
    let (c, q) = (cluster.clone(), p.clone());
    let (action, written) = s
        .reconcile(&p, |mut api| async move {
            api.get_cluster("spike", CLUSTER_NS, Some(&c)).await;
            let note = api.event(&q, "Normal", "Created").await;
            assert_eq!(note, format!("policy {NAME} created in Nexus"));
            let status = api.status_patch(&q).await;
            (api, status)
        })
        .await;
    let action = action.expect("reconcile");
    assert_eq!(action, Action::requeue(RESYNC));
    let ready = condition(&written, "Ready");
    let since = ready["lastTransitionTime"].clone();
    assert_eq!(
        written,
        json!({
            "observedGeneration": 1,
            "policyName": NAME,
            "conditions": [
                {"type": "Ready", "status": "True", "observedGeneration": 1,
                 "lastTransitionTime": since, "reason": "Synced",
                 "message": "policy k8s.team-a.readers is in the Nexus of SpikeCluster spike-system/spike"},
                {"type": "Progressing", "status": "False", "observedGeneration": 1,
                 "lastTransitionTime": since, "reason": "Synced", "message": "nothing left to do"},
                {"type": "Degraded", "status": "False", "observedGeneration": 1,
                 "lastTransitionTime": since, "reason": "Synced", "message": "no failure"},
            ]
        })
    );
    let stored = s.stored().await.expect("the policy is in Nexus");
    assert_eq!(
        stored.spiffe_id_pattern,
        format!("spiffe://{}/ns/team-a/**", s.td)
    );
    assert_eq!(stored.path_pattern, "k8s/team-a/**");
    assert_eq!(s.audited_puts(), 1);

    // A second reconcile of the same spec: the cluster is read, nothing is written anywhere.
    let p = with_status(p, &written);
    let c = cluster.clone();
    let (action, ()) = s
        .reconcile(&p, |mut api| async move {
            api.get_cluster("spike", CLUSTER_NS, Some(&c)).await;
            (api, ())
        })
        .await;
    let action = action.expect("reconcile");
    assert_eq!(action, Action::requeue(RESYNC));
    assert_eq!(s.audited_puts(), 1, "no write to Nexus");

    // A spec change: replaced in Nexus, the generation observed, Ready's time kept.
    let mut changed = p.clone();
    changed.metadata.generation = Some(2);
    changed.spec.path_pattern = "k8s/team-a/db/**".into();
    changed.spec.permissions.pop();
    let (c, q) = (cluster.clone(), changed.clone());
    let (result, written) = s
        .reconcile(&changed, |mut api| async move {
            api.get_cluster("spike", CLUSTER_NS, Some(&c)).await;
            api.event(&q, "Normal", "Updated").await;
            let status = api.status_patch(&q).await;
            (api, status)
        })
        .await;
    result.expect("reconcile");
    assert_eq!(written["observedGeneration"], 2);
    let ready = condition(&written, "Ready");
    assert_eq!(ready["observedGeneration"], 2);
    assert_eq!(ready["lastTransitionTime"], since);
    let stored = s.stored().await.expect("still in Nexus");
    assert_eq!(stored.path_pattern, "k8s/team-a/db/**");
    assert_eq!(stored.permissions, [Permission::Read]);

    // Deleted: gone from Nexus, then the finalizer goes.
    let gone = deleting(with_status(changed, &written));
    let (c, q) = (cluster.clone(), gone.clone());
    let (action, ()) = s
        .reconcile(&gone, |mut api| async move {
            api.get_cluster("spike", CLUSTER_NS, Some(&c)).await;
            let note = api.event(&q, "Normal", "Deleted").await;
            assert_eq!(note, format!("policy {NAME} deleted from Nexus"));
            api.remove_finalizer(&q).await;
            (api, ())
        })
        .await;
    let action = action.expect("reconcile");
    assert_eq!(action, Action::await_change());
    assert!(matches!(
        s.stored().await,
        Err(CliError::Api {
            code: ErrorCode::NotFound,
            ..
        })
    ));

    // Deleted after its cluster: nothing to delete it from, and the finalizer still goes
    // (holding it would block the deletion forever).
    let q = gone.clone();
    let (action, ()) = s
        .reconcile(&gone, |mut api| async move {
            api.get_cluster("spike", CLUSTER_NS, None).await;
            api.event(&q, "Normal", "ClusterGone").await;
            api.remove_finalizer(&q).await;
            (api, ())
        })
        .await;
    assert_eq!(action.expect("reconcile"), Action::await_change());
    s.stack.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_paused_cluster_changes_nothing_in_nexus_not_even_a_deletion() {
    let mut s = setup().await;
    let mut cluster = s.cluster();
    cluster.spec.paused = true;
    let p = s.policy();
    let (c, q) = (cluster.clone(), p.clone());
    let (action, written) = s
        .reconcile(&p, |mut api| async move {
            api.get_cluster("spike", CLUSTER_NS, Some(&c)).await;
            api.event(&q, "Normal", "Paused").await;
            let status = api.status_patch(&q).await;
            (api, status)
        })
        .await;
    let action = action.expect("reconcile");
    assert_eq!(action, Action::requeue(REFUSED_REQUEUE));
    let progressing = condition(&written, "Progressing");
    assert_eq!(progressing["status"], "False");
    assert_eq!(progressing["reason"], "Paused");
    assert_eq!(condition(&written, "Ready")["status"], "Unknown");
    assert_eq!(condition(&written, "Degraded")["status"], "Unknown");
    assert!(written.get("observedGeneration").is_none(), "{written}");
    assert!(matches!(
        s.stored().await,
        Err(CliError::Api {
            code: ErrorCode::NotFound,
            ..
        })
    ));

    // Paused again: nothing new to say, nothing written.
    let p = with_status(p, &written);
    let c = cluster.clone();
    let (result, ()) = s
        .reconcile(&p, |mut api| async move {
            api.get_cluster("spike", CLUSTER_NS, Some(&c)).await;
            (api, ())
        })
        .await;
    result.expect("reconcile");

    // A deletion waits, finalizer kept, for the unpause.
    let gone = deleting(p);
    let c = cluster.clone();
    let (e, ()) = s
        .reconcile(&gone, |mut api| async move {
            api.get_cluster("spike", CLUSTER_NS, Some(&c)).await;
            (api, ())
        })
        .await;
    let e = e.unwrap_err();
    assert_eq!(e.reason(), "Paused");
    assert!(e.is_transient());
    s.stack.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn an_unreachable_nexus_is_degraded_and_retried_with_backoff() {
    let mut s = setup_with(true).await;
    let cluster = s.cluster();
    let p = s.policy();
    let (c, q) = (cluster.clone(), p.clone());
    let (e, written) = s
        .reconcile(&p, |mut api| async move {
            api.get_cluster("spike", CLUSTER_NS, Some(&c)).await;
            let note = api.event(&q, "Warning", "NexusUnavailable").await;
            assert!(note.starts_with("Nexus is unavailable: "), "{note}");
            let status = api.status_patch(&q).await;
            (api, status)
        })
        .await;
    let e = e.unwrap_err();
    assert!(e.is_transient(), "{e}");
    assert_eq!(e.reason(), "NexusUnavailable");
    assert_eq!(condition(&written, "Degraded")["status"], "True");
    assert_eq!(condition(&written, "Progressing")["status"], "True");
    assert_eq!(condition(&written, "Ready")["status"], "False");
    // Not finished: the generation is not observed yet.
    assert!(written.get("observedGeneration").is_none(), "{written}");

    // The error policy: per-object exponential backoff, counted by reason.
    let p = Arc::new(p);
    let first = error_policy(p.clone(), &e, s.ctx.clone());
    let second = error_policy(p.clone(), &e, s.ctx.clone());
    assert_eq!(first, Action::requeue(Backoff::FIRST));
    assert_eq!(second, Action::requeue(Backoff::FIRST * 2));
    let metrics = s.ctx.metrics.render();
    assert!(
        metrics.contains(
            "spike_operator_reconcile_errors_total{controller=\"spikepolicy\",reason=\"NexusUnavailable\"} 2"
        ),
        "{metrics}"
    );
    s.stack.stop().await;
}

/// Reconciles `p`, expecting a refusal with `reason` whose message starts with `message`;
/// nothing reaches Nexus.
async fn refused(s: &mut Setup, p: SpikePolicy, reason: &'static str, message: &str) -> Value {
    let (c, q) = (s.cluster(), p.clone());
    let (action, written) = s
        .reconcile(&p, |mut api| async move {
            api.get_cluster("spike", CLUSTER_NS, Some(&c)).await;
            api.event(&q, "Warning", reason).await;
            let status = api.status_patch(&q).await;
            (api, status)
        })
        .await;
    let action = action.expect("a refusal is not an error");
    // No requeue storm: only a change helps, and a change triggers a reconcile anyway.
    assert_eq!(action, Action::requeue(REFUSED_REQUEUE));
    let ready = condition(&written, "Ready");
    assert_eq!(ready["status"], "False");
    assert_eq!(ready["reason"], reason);
    let text = ready["message"].as_str().unwrap_or_default();
    assert!(text.starts_with(message), "{text}");
    assert_eq!(condition(&written, "Degraded")["status"], "True");
    assert_eq!(written["observedGeneration"], 1);
    assert!(matches!(
        s.stored().await,
        Err(CliError::Api {
            code: ErrorCode::NotFound,
            ..
        })
    ));
    written
}

#[tokio::test(flavor = "multi_thread")]
async fn a_bad_spec_is_refused_with_a_clear_condition_once() {
    let mut s = setup().await;
    let mut p = s.policy();
    p.spec.permissions.clear();
    let written = refused(
        &mut s,
        p.clone(),
        "InvalidSpec",
        "a policy must grant at least one permission",
    )
    .await;
    // The same refusal again: no event, no status write.
    let p = with_status(p, &written);
    let c = s.cluster();
    let (result, ()) = s
        .reconcile(&p, |mut api| async move {
            api.get_cluster("spike", CLUSTER_NS, Some(&c)).await;
            (api, ())
        })
        .await;
    result.expect("reconcile");

    // A cluster that does not exist.
    let p = s.policy();
    let q = p.clone();
    let (result, written) = s
        .reconcile(&p, |mut api| async move {
            api.get_cluster("spike", CLUSTER_NS, None).await;
            api.event(&q, "Warning", "ClusterNotFound").await;
            let status = api.status_patch(&q).await;
            (api, status)
        })
        .await;
    result.expect("reconcile");
    assert_eq!(
        condition(&written, "Ready")["message"],
        "SpikeCluster spike-system/spike does not exist"
    );
    s.stack.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn every_tenancy_escape_is_refused_with_the_field() {
    let mut s = setup().await;
    let td = s.td.clone();
    let base = s.policy();
    let escape = |f: &dyn Fn(&mut SpikePolicy)| {
        let mut p = base.clone();
        f(&mut p);
        p
    };
    let cases: Vec<(SpikePolicy, String)> = vec![
        // Paths of namespace B.
        (
            escape(&|p| p.spec.path_pattern = "k8s/team-b/**".into()),
            "spec.pathPattern: pathPattern k8s/team-b/** can reach paths outside namespace team-a's prefix".to_owned(),
        ),
        // Every path.
        (
            escape(&|p| p.spec.path_pattern = "**".into()),
            "spec.pathPattern: pathPattern ** can reach paths outside".to_owned(),
        ),
        // Identities of namespace B.
        (
            escape(&|p| p.spec.spiffe_id_pattern = format!("spiffe://{td}/ns/team-b/**")),
            format!("spec.spiffeIdPattern: spiffe://{td}/ns/team-b/** can reach identities outside"),
        ),
        // Identities of every namespace.
        (
            escape(&|p| p.spec.spiffe_id_pattern = format!("spiffe://{td}/ns/*/**")),
            "spec.spiffeIdPattern: ".to_owned(),
        ),
        // Another trust domain.
        (
            escape(&|p| p.spec.spiffe_id_pattern = "spiffe://other.dev/ns/team-a/**".into()),
            "spec.spiffeIdPattern: spiffe://other.dev/ns/team-a/** is not in trust domain".to_owned(),
        ),
        // `super` from a tenant namespace.
        (
            escape(&|p| {
                p.spec.permissions =
                    serde_json::from_value(json!(["read", "super"])).expect("permissions")
            }),
            "spec.permissions: only the SpikeCluster's own namespace (spike-system) may grant 'super'".to_owned(),
        ),
    ];
    for (p, message) in cases {
        refused(&mut s, p, "TenancyViolation", &message).await;
    }
    s.stack.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn the_controller_refuses_to_start_without_the_crds_and_stops_on_shutdown() {
    let mut s = setup().await;
    let list = "/apis/spike.spiffe.io/v1alpha1/spikepolicies?&limit=1";

    let mut api = s.api.take().expect("api");
    let missing = tokio::spawn(async move {
        api.expect(Method::GET, list, |_| {
            (
                http::StatusCode::NOT_FOUND,
                json!({"kind": "Status", "apiVersion": "v1", "status": "Failure",
                       "reason": "NotFound", "code": 404, "message": "the server could not find the requested resource"}),
            )
        })
        .await;
        api
    });
    let e = tokio::time::timeout(
        TIMEOUT,
        spike_operator::controller::run(s.ctx.clone(), std::future::pending()),
    )
    .await
    .expect("run returns")
    .unwrap_err();
    assert_eq!(e.reason(), "KubeApi");
    let mut api = missing.await.expect("script");

    // With the CRDs: it runs (its watches wait on the mock) until the shutdown signal. Every
    // controller first lists its kind (`limit=1`), then each watch lists once: all answered
    // empty, in whatever order the controllers ask. Their watches then wait.
    let started = tokio::spawn(async move {
        let mut asked = Vec::new();
        let mut watches = Vec::new();
        while let Ok((method, r, send)) =
            tokio::time::timeout(Duration::from_millis(500), api.next()).await
        {
            assert_eq!(method, Method::GET, "{}", r.uri);
            if r.uri.contains("watch=true") {
                // Held open and never answered: the watch waits.
                watches.push(send);
            } else {
                let empty = json!({"apiVersion": "v1", "kind": "List",
                                   "metadata": {"resourceVersion": "1"}, "items": []});
                fixtures::answer(send, http::StatusCode::OK, &empty);
                asked.push(r.uri);
            }
        }
        (api, asked, watches)
    });
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let run = tokio::spawn(spike_operator::controller::run(s.ctx.clone(), async move {
        let _ = rx.await;
    }));
    let (_api, asked, _watches) = started.await.expect("script");
    let asked_for = |path: &str, query: &str| {
        asked
            .iter()
            .any(|u| u.starts_with(&format!("{path}?")) && u.contains(query))
    };
    assert!(
        asked_for("/apis/spike.spiffe.io/v1alpha1/spikepolicies", "limit=1"),
        "{asked:?}"
    );
    assert!(
        asked_for("/apis/spike.spiffe.io/v1alpha1/spikeclusters", "limit=1"),
        "{asked:?}"
    );
    assert!(
        asked_for("/apis/spike.spiffe.io/v1alpha1/spikesecrets", "limit=1"),
        "{asked:?}"
    );
    // The SpikeCluster controller watches what it owns by the operator's label only.
    for owned in [
        "/apis/apps/v1/statefulsets",
        "/api/v1/services",
        "/apis/batch/v1/jobs",
        "/apis/apps/v1/deployments",
        "/api/v1/configmaps",
    ] {
        assert!(
            asked_for(
                owned,
                "labelSelector=app.kubernetes.io%2Fmanaged-by%3Dspike-operator"
            ),
            "{owned}: {asked:?}"
        );
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(!run.is_finished(), "the controller runs until told to stop");
    tx.send(()).expect("signal");
    tokio::time::timeout(TIMEOUT, run)
        .await
        .expect("the controller stops on shutdown")
        .expect("join")
        .expect("a clean stop");
    s.stack.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn the_service_connector_reaches_each_clusters_nexus_service_as_the_operator() {
    let stack = Stack::start(None).await.expect("stack");
    let td = stack.trust_domain().clone();
    let operator = Builtin::Operator.id(&td);
    let connector = NexusConnector::service(stack.svid_source(&operator).expect("svid"), TIMEOUT);
    let a = connector
        .for_cluster("spike-system", "spike")
        .expect("client");
    assert_eq!(a.addr(), "spike-nexus.spike-system.svc:8553");
    let b = connector.for_cluster("team-a", "dev").expect("client");
    assert_eq!(b.addr(), "dev-nexus.team-a.svc:8553");
    connector.forget("team-a", "dev");
    assert_eq!(
        connector
            .for_cluster("team-a", "dev")
            .expect("client")
            .addr(),
        "dev-nexus.team-a.svc:8553"
    );

    // Any SVID but /spike/operator is refused before a connection is made.
    let other = td.id("/ns/spike-system/operator").expect("id");
    let connector = NexusConnector::service(stack.svid_source(&other).expect("svid"), TIMEOUT);
    let e = connector.for_cluster("spike-system", "spike").unwrap_err();
    assert!(e.to_string().contains("/spike/operator"), "{e}");
    stack.stop().await;
}
