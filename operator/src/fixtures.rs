//! Test support: sample resources and a scripted Kubernetes API server.
//!
//! [`ApiServerVerifier`] is the other end of a [`tower_test`] mock under a real
//! [`kube::Client`] (kube-rs controller-rs' fixtures): each of its steps awaits the next
//! request, asserts its method, exact URI and body, and answers it. A reconcile that makes a
//! request the script does not expect hangs (the test's timeout fails it); one that skips an
//! expected request fails the step's timeout.

use std::time::Duration;

use http::{Method, Request, Response, StatusCode};
use kube::client::Body;
use kube::{Client, ResourceExt};
use serde_json::{Value, json};
use tower_test::mock::{Handle, SendResponse};

use crate::controller::policy::FINALIZER;
use crate::controller::{MANAGER, NexusConnector};
use crate::crd::{SpikeCluster, SpikePolicy, SpikePolicySpec, SpikeSecret, SpikeSecretSpec};
use crate::metrics::Metrics;

/// The namespace of the sample cluster.
pub const CLUSTER_NS: &str = "spike-system";
/// The namespace of the sample tenant policy.
pub const TENANT_NS: &str = "team-a";

fn meta(name: &str, ns: &str) -> kube::api::ObjectMeta {
    kube::api::ObjectMeta {
        name: Some(name.into()),
        namespace: Some(ns.into()),
        uid: Some(format!("uid-{ns}-{name}")),
        generation: Some(1),
        resource_version: Some("1".into()),
        ..Default::default()
    }
}

/// A default `SpikeCluster` `spike` in [`CLUSTER_NS`] serving `spike.dev`.
pub fn cluster() -> SpikeCluster {
    cluster_for("spike.dev")
}

/// A default `SpikeCluster` `spike` in [`CLUSTER_NS`] serving `trust_domain`.
pub fn cluster_for(trust_domain: &str) -> SpikeCluster {
    let spec = serde_json::from_value(json!({ "trustDomain": trust_domain }))
        .expect("a default cluster spec");
    SpikeCluster {
        metadata: meta("spike", CLUSTER_NS),
        spec,
        status: None,
    }
}

/// `SpikePolicy` `name` in `ns` on the sample cluster.
pub fn policy(ns: &str, name: &str, id: &str, path: &str, perms: &[&str]) -> SpikePolicy {
    let spec: SpikePolicySpec = serde_json::from_value(json!({
        "clusterRef": { "name": "spike", "namespace": CLUSTER_NS },
        "spiffeIdPattern": id,
        "pathPattern": path,
        "permissions": perms,
    }))
    .expect("a policy spec");
    SpikePolicy {
        metadata: meta(name, ns),
        spec,
        status: None,
    }
}

/// `readers` in [`TENANT_NS`]: read and list on its own paths, for `spike.dev`.
pub fn tenant_policy() -> SpikePolicy {
    tenant_policy_for("spike.dev")
}

/// `readers` in [`TENANT_NS`] for `trust_domain`.
pub fn tenant_policy_for(trust_domain: &str) -> SpikePolicy {
    policy(
        TENANT_NS,
        "readers",
        &format!("spiffe://{trust_domain}/ns/team-a/**"),
        "k8s/team-a/**",
        &["read", "list"],
    )
}

/// `admins` in the cluster's own namespace (which may grant `super`).
pub fn local_policy() -> SpikePolicy {
    let mut p = policy(
        CLUSTER_NS,
        "admins",
        "spiffe://spike.dev/ns/ops/**",
        "**",
        &["super"],
    );
    // The cluster's own namespace may leave the namespace out of the reference.
    p.spec.cluster_ref.namespace = None;
    p
}

/// `p` with the operator's finalizer, as after the first reconcile.
pub fn finalized(mut p: SpikePolicy) -> SpikePolicy {
    p.metadata.finalizers = Some(vec![FINALIZER.into()]);
    p
}

/// `p` being deleted (its finalizers keep it).
pub fn deleting(mut p: SpikePolicy) -> SpikePolicy {
    p.metadata.deletion_timestamp = Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
        k8s_openapi::jiff::Timestamp::now(),
    ));
    p
}

/// `SpikeSecret` `name` in `ns` on the sample cluster, with `spec` (JSON, `clusterRef` added).
pub fn spike_secret(ns: &str, name: &str, mut spec: Value) -> SpikeSecret {
    spec["clusterRef"] = json!({ "name": "spike", "namespace": CLUSTER_NS });
    let spec: SpikeSecretSpec = serde_json::from_value(spec).expect("a SpikeSecret spec");
    SpikeSecret {
        metadata: meta(name, ns),
        spec,
        status: None,
    }
}

/// `db` in [`TENANT_NS`]: `k8s/team-a/db`, key `password` from Secret `db-creds`, `Replace`,
/// `Retain` (so no finalizer).
pub fn tenant_secret() -> SpikeSecret {
    spike_secret(
        TENANT_NS,
        "db",
        json!({
            "path": "k8s/team-a/db",
            "data": [{ "key": "password", "fromSecret": { "name": "db-creds", "key": "password" } }],
            "writePolicy": "Replace",
        }),
    )
}

/// A Kubernetes `Secret` `name` in `ns` holding `pairs`, at `resourceVersion` `rv`.
pub fn source_secret(
    ns: &str,
    name: &str,
    rv: &str,
    pairs: &[(&str, &str)],
) -> k8s_openapi::api::core::v1::Secret {
    let mut metadata = meta(name, ns);
    metadata.resource_version = Some(rv.into());
    metadata.generation = None;
    k8s_openapi::api::core::v1::Secret {
        metadata,
        data: Some(
            pairs
                .iter()
                .map(|(k, v)| {
                    (
                        (*k).to_owned(),
                        k8s_openapi::ByteString(v.as_bytes().to_vec()),
                    )
                })
                .collect(),
        ),
        type_: Some("Opaque".into()),
        ..Default::default()
    }
}

/// `obj` with the operator's finalizer.
pub fn with_finalizer<K: kube::Resource>(mut obj: K) -> K {
    obj.meta_mut().finalizers = Some(vec![FINALIZER.into()]);
    obj
}

/// `obj` being deleted (its finalizers keep it).
pub fn being_deleted<K: kube::Resource>(mut obj: K) -> K {
    obj.meta_mut().deletion_timestamp = Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
        k8s_openapi::jiff::Timestamp::now(),
    ));
    obj
}

/// The API path of a namespaced object.
fn object_path<K: kube::Resource<DynamicType = ()>>(obj: &K) -> String {
    format!(
        "{}/{}",
        K::url_path(&(), obj.meta().namespace.as_deref()),
        obj.meta().name.as_deref().unwrap_or_default()
    )
}

fn not_found(what: &str) -> Value {
    json!({"kind": "Status", "apiVersion": "v1", "status": "Failure", "reason": "NotFound",
           "code": 404, "message": format!("{what} not found")})
}

/// A [`Context`](crate::controller::Context) on a mock API server, reaching Nexus through
/// `nexus`, and the server's script.
pub fn context(nexus: NexusConnector) -> (crate::controller::Context, ApiServerVerifier) {
    let (service, handle) = tower_test::mock::pair::<Request<Body>, Response<Body>>();
    let client = Client::new(service, "default");
    let ctx = crate::controller::Context::new(
        client,
        Some("spike-operator-0".into()),
        std::sync::Arc::new(Metrics::new()),
        nexus,
    );
    (ctx, ApiServerVerifier(handle))
}

/// How long a step waits for the request it expects.
const STEP: Duration = Duration::from_secs(5);

/// The scripted API server (see the module docs).
pub struct ApiServerVerifier(Handle<Request<Body>, Response<Body>>);

/// One request the server received: its URI and JSON body.
#[derive(Debug)]
pub struct Received {
    /// Path and query.
    pub uri: String,
    /// The `Content-Type` header.
    pub content_type: String,
    /// The body (`Null` when empty).
    pub body: Value,
}

fn policy_path(p: &SpikePolicy) -> String {
    format!(
        "/apis/spike.spiffe.io/v1alpha1/namespaces/{}/spikepolicies/{}",
        p.namespace().expect("namespaced"),
        p.name_any()
    )
}

fn respond(status: StatusCode, body: &impl serde::Serialize) -> Response<Body> {
    Response::builder()
        .status(status)
        .header("content-type", "application/json")
        .body(Body::from(serde_json::to_vec(body).expect("json")))
        .expect("response")
}

/// Answers a request [`ApiServerVerifier::next`] handed over with `status` and the JSON `body`.
pub fn answer(send: SendResponse<Response<Body>>, status: StatusCode, body: &Value) {
    send.send_response(respond(status, body));
}

impl ApiServerVerifier {
    /// Awaits the next request and reads it.
    async fn receive(
        &mut self,
        expected: &str,
    ) -> (Method, Received, SendResponse<Response<Body>>) {
        let (request, send) = tokio::time::timeout(STEP, self.0.next_request())
            .await
            .unwrap_or_else(|_| panic!("no request came; expected {expected}"))
            .expect("the client is gone");
        let method = request.method().clone();
        let uri = request
            .uri()
            .path_and_query()
            .map(|p| p.to_string())
            .unwrap_or_default();
        let content_type = request
            .headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned();
        let bytes = request.into_body().collect_bytes().await.expect("body");
        let body = if bytes.is_empty() {
            Value::Null
        } else {
            serde_json::from_slice(&bytes).expect("a JSON body")
        };
        let received = Received {
            uri,
            content_type,
            body,
        };
        (method, received, send)
    }

    /// Awaits the next request, checks its method and exact URI, and answers with what
    /// `answer` makes of the request.
    pub async fn expect(
        &mut self,
        method: Method,
        uri: &str,
        answer: impl FnOnce(&Received) -> (StatusCode, Value),
    ) -> Received {
        let (got, received, send) = self.receive(&format!("{method} {uri}")).await;
        assert_eq!(got, method, "{}", received.uri);
        assert_eq!(received.uri, uri);
        let (status, answer) = answer(&received);
        send.send_response(respond(status, &answer));
        received
    }

    /// Awaits the next request, whatever it is, and answers with what `answer` makes of it
    /// (for the controller's watches, whose exact queries are kube's business).
    pub async fn any(
        &mut self,
        answer: impl FnOnce(&Method, &Received) -> (StatusCode, Value),
    ) -> (Method, Received) {
        let (method, received, send) = self.receive("any request").await;
        let (status, body) = answer(&method, &received);
        send.send_response(respond(status, &body));
        (method, received)
    }

    /// `GET` of the sample cluster, answered with `cluster` or `404`.
    pub async fn get_cluster(&mut self, name: &str, ns: &str, cluster: Option<&SpikeCluster>) {
        let uri = format!("/apis/spike.spiffe.io/v1alpha1/namespaces/{ns}/spikeclusters/{name}");
        self.expect(Method::GET, &uri, |_| match cluster {
            Some(c) => (StatusCode::OK, serde_json::to_value(c).expect("json")),
            None => (
                StatusCode::NOT_FOUND,
                json!({"kind": "Status", "apiVersion": "v1", "status": "Failure",
                       "reason": "NotFound", "code": 404,
                       "message": format!("spikeclusters {name} not found")}),
            ),
        })
        .await;
    }

    /// The JSON patch adding the finalizer to `p` (which has none).
    pub async fn add_finalizer(&mut self, p: &SpikePolicy) {
        let uri = format!("{}?", policy_path(p));
        let answer = serde_json::to_value(finalized(p.clone())).expect("json");
        let r = self
            .expect(Method::PATCH, &uri, |_| (StatusCode::OK, answer))
            .await;
        assert_eq!(r.content_type, "application/json-patch+json");
        assert_eq!(
            r.body,
            json!([
                {"op": "test", "path": "/metadata/finalizers", "value": null},
                {"op": "add", "path": "/metadata/finalizers", "value": [FINALIZER]},
            ])
        );
    }

    /// The JSON patch removing the finalizer from `p` (which has only it).
    pub async fn remove_finalizer(&mut self, p: &SpikePolicy) {
        let uri = format!("{}?", policy_path(p));
        let mut gone = p.clone();
        gone.metadata.finalizers = None;
        let answer = serde_json::to_value(gone).expect("json");
        let r = self
            .expect(Method::PATCH, &uri, |_| (StatusCode::OK, answer))
            .await;
        assert_eq!(
            r.body,
            json!([
                {"op": "test", "path": "/metadata/finalizers/0", "value": FINALIZER},
                {"op": "remove", "path": "/metadata/finalizers/0"},
            ])
        );
    }

    /// An event of `type_` (`Normal`, `Warning`) and `reason` about `p`; returns its note.
    /// The recorder creates an event, or patches the series of an earlier one of the same
    /// type, reason and action (whose note is the earlier one's).
    pub async fn event(&mut self, p: &SpikePolicy, type_: &str, reason: &str) -> String {
        let events = format!(
            "/apis/events.k8s.io/v1/namespaces/{}/events",
            p.namespace().expect("namespaced")
        );
        let (method, r, send) = self.receive(&format!("an event at {events}")).await;
        if method == Method::POST {
            assert_eq!(r.uri, format!("{events}?"));
        } else {
            assert_eq!(method, Method::PATCH, "{}", r.uri);
            assert!(r.uri.starts_with(&format!("{events}/")), "{}", r.uri);
            assert!(r.body["series"]["count"].as_i64() >= Some(2), "{}", r.body);
        }
        send.send_response(respond(StatusCode::OK, &r.body));
        assert_eq!(r.body["type"], type_, "{}", r.body);
        assert_eq!(r.body["reason"], reason, "{}", r.body);
        assert_eq!(r.body["reportingController"], MANAGER);
        assert_eq!(r.body["regarding"]["name"], p.name_any());
        r.body["note"].as_str().unwrap_or_default().to_owned()
    }

    /// The server-side apply of `p`'s status; returns the status written.
    pub async fn status_patch(&mut self, p: &SpikePolicy) -> Value {
        let uri = format!(
            "{}/status?&force=true&fieldManager={MANAGER}",
            policy_path(p)
        );
        let base = serde_json::to_value(p).expect("json");
        let r = self
            .expect(Method::PATCH, &uri, |r| {
                let mut obj = base;
                obj["status"] = r.body["status"].clone();
                (StatusCode::OK, obj)
            })
            .await;
        assert_eq!(r.content_type, "application/apply-patch+yaml");
        assert_eq!(r.body["apiVersion"], "spike.spiffe.io/v1alpha1");
        assert_eq!(r.body["kind"], "SpikePolicy");
        r.body["status"].clone()
    }

    /// `GET` of Kubernetes Secret `name` in `ns`, answered with `secret` or `404`.
    pub async fn get_secret(
        &mut self,
        ns: &str,
        name: &str,
        secret: Option<&k8s_openapi::api::core::v1::Secret>,
    ) {
        let uri = format!("/api/v1/namespaces/{ns}/secrets/{name}");
        self.expect(Method::GET, &uri, |_| match secret {
            Some(s) => (StatusCode::OK, serde_json::to_value(s).expect("json")),
            None => (StatusCode::NOT_FOUND, not_found(&format!("secrets {name}"))),
        })
        .await;
    }

    /// The server-side apply of Kubernetes Secret `name` in `ns`; returns the body sent.
    pub async fn apply_secret(&mut self, ns: &str, name: &str) -> Value {
        let uri =
            format!("/api/v1/namespaces/{ns}/secrets/{name}?&force=true&fieldManager={MANAGER}");
        let r = self
            .expect(Method::PATCH, &uri, |r| (StatusCode::OK, r.body.clone()))
            .await;
        assert_eq!(r.content_type, "application/apply-patch+yaml");
        r.body
    }

    /// The deletion of Kubernetes Secret `name` in `ns`.
    pub async fn delete_secret(&mut self, ns: &str, name: &str) {
        let uri = format!("/api/v1/namespaces/{ns}/secrets/{name}?");
        self.expect(Method::DELETE, &uri, |_| {
            (
                StatusCode::OK,
                json!({"kind": "Status", "apiVersion": "v1", "status": "Success"}),
            )
        })
        .await;
    }

    /// The JSON patch adding the finalizer to `obj` (which has none).
    pub async fn add_finalizer_of<K>(&mut self, obj: &K)
    where
        K: kube::Resource<DynamicType = ()> + serde::Serialize + Clone,
    {
        let uri = format!("{}?", object_path(obj));
        let answer = serde_json::to_value(with_finalizer(obj.clone())).expect("json");
        let r = self
            .expect(Method::PATCH, &uri, |_| (StatusCode::OK, answer))
            .await;
        assert_eq!(r.content_type, "application/json-patch+json");
        assert_eq!(
            r.body,
            json!([
                {"op": "test", "path": "/metadata/finalizers", "value": null},
                {"op": "add", "path": "/metadata/finalizers", "value": [FINALIZER]},
            ])
        );
    }

    /// The JSON patch removing the finalizer from `obj` (which has only it).
    pub async fn remove_finalizer_of<K>(&mut self, obj: &K)
    where
        K: kube::Resource<DynamicType = ()> + serde::Serialize + Clone,
    {
        let uri = format!("{}?", object_path(obj));
        let mut gone = obj.clone();
        gone.meta_mut().finalizers = None;
        let answer = serde_json::to_value(gone).expect("json");
        let r = self
            .expect(Method::PATCH, &uri, |_| (StatusCode::OK, answer))
            .await;
        assert_eq!(
            r.body,
            json!([
                {"op": "test", "path": "/metadata/finalizers/0", "value": FINALIZER},
                {"op": "remove", "path": "/metadata/finalizers/0"},
            ])
        );
    }

    /// An event of `type_` and `reason` about `obj`; returns its note (see [`Self::event`]).
    pub async fn event_of<K>(&mut self, obj: &K, type_: &str, reason: &str) -> String
    where
        K: kube::Resource<DynamicType = ()>,
    {
        let ns = obj.meta().namespace.clone().expect("namespaced");
        let events = format!("/apis/events.k8s.io/v1/namespaces/{ns}/events");
        let (method, r, send) = self.receive(&format!("an event at {events}")).await;
        if method == Method::POST {
            assert_eq!(r.uri, format!("{events}?"));
        } else {
            assert_eq!(method, Method::PATCH, "{}", r.uri);
            assert!(r.uri.starts_with(&format!("{events}/")), "{}", r.uri);
        }
        send.send_response(respond(StatusCode::OK, &r.body));
        assert_eq!(r.body["type"], type_, "{}", r.body);
        assert_eq!(r.body["reason"], reason, "{}", r.body);
        assert_eq!(r.body["reportingController"], MANAGER);
        assert_eq!(
            r.body["regarding"]["name"],
            obj.meta().name.clone().unwrap_or_default()
        );
        r.body["note"].as_str().unwrap_or_default().to_owned()
    }

    /// The server-side apply of `obj`'s status; returns the status written.
    pub async fn status_patch_of<K>(&mut self, obj: &K) -> Value
    where
        K: kube::Resource<DynamicType = ()> + serde::Serialize,
    {
        let uri = format!(
            "{}/status?&force=true&fieldManager={MANAGER}",
            object_path(obj)
        );
        let base = serde_json::to_value(obj).expect("json");
        let r = self
            .expect(Method::PATCH, &uri, |r| {
                let mut o = base;
                o["status"] = r.body["status"].clone();
                (StatusCode::OK, o)
            })
            .await;
        assert_eq!(r.content_type, "application/apply-patch+yaml");
        assert_eq!(r.body["kind"], K::kind(&()).as_ref());
        r.body["status"].clone()
    }

    /// Awaits the next request and hands it over unanswered with the means to answer it (see
    /// [`answer`]): a watch that is never answered waits, as on a quiet API server.
    pub async fn next(&mut self) -> (Method, Received, SendResponse<Response<Body>>) {
        self.receive("any request").await
    }

    /// Fails if any request is waiting.
    pub async fn no_more_requests(&mut self) {
        match tokio::time::timeout(Duration::from_millis(100), self.0.next_request()).await {
            Err(_) | Ok(None) => {}
            Ok(Some((r, _))) => panic!("unexpected request {} {}", r.method(), r.uri()),
        }
    }
}
