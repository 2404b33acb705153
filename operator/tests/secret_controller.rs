//! The `SpikeSecret` controller end to end: reconciles against a scripted Kubernetes API
//! server (`spike_operator::fixtures`) and a real Nexus started in the test, with the
//! operator's scope as the chart configures it (`k8s/**`, `ns/**`).

mod common;

use std::future::Future;
use std::sync::Arc;

use http::Method;
use k8s_openapi::api::core::v1::Secret;
use kube::runtime::controller::Action;
use serde_json::{Value, json};
use spike_core::api::{GetSecretResponse, SecretMetadata, TokenInfo};
use spike_operator::controller::secret::{
    REFUSED_REQUEUE, RESYNC, SOURCE_REQUEUE, error_policy, reconcile,
};
use spike_operator::controller::{Backoff, Error};
use spike_operator::crd::{SpikeSecret, SpikeSecretStatus};
use spike_operator::fixtures::{
    ApiServerVerifier, CLUSTER_NS, TENANT_NS, being_deleted, source_secret, spike_secret,
    with_finalizer,
};

use common::{Setup, setup, setup_with};

const PATH: &str = "k8s/team-a/db";

impl Setup {
    /// `db`: key `password` from Secret `db-creds`, under `write_policy` and `deletion`.
    fn secret(&self, write_policy: &str, deletion: &str) -> SpikeSecret {
        spike_secret(
            TENANT_NS,
            "db",
            json!({
                "path": PATH,
                "data": [{ "key": "password", "fromSecret": { "name": "db-creds", "key": "password" } }],
                "writePolicy": write_policy,
                "deletionPolicy": deletion,
            }),
        )
    }

    async fn reconcile<F, T>(
        &mut self,
        s: &SpikeSecret,
        script: impl FnOnce(ApiServerVerifier) -> F,
    ) -> (Result<Action, Error>, T)
    where
        F: Future<Output = (ApiServerVerifier, T)> + Send + 'static,
        T: Send + 'static,
    {
        let ctx = self.ctx.clone();
        self.scripted(reconcile(Arc::new(s.clone()), ctx), script)
            .await
    }

    async fn metadata(&self) -> Option<SecretMetadata> {
        self.stack
            .client
            .call(
                Method::GET,
                &format!("/v1/secrets/metadata/{PATH}"),
                None::<&()>,
            )
            .await
            .ok()
    }

    /// The current value of `password`, read by the superuser.
    async fn value(&self) -> String {
        let r: GetSecretResponse = self
            .stack
            .client
            .call(
                Method::GET,
                &format!("/v1/secrets/data/{PATH}"),
                None::<&()>,
            )
            .await
            .expect("read");
        r.data
            .get("password")
            .expect("key")
            .expose_secret()
            .to_owned()
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

fn with_status(mut s: SpikeSecret, status: &Value) -> SpikeSecret {
    s.status = Some(serde_json::from_value::<SpikeSecretStatus>(status.clone()).expect("status"));
    s
}

/// Standard base64 (what the API carries a Secret's data in), for the test's own reading.
fn base64_decode(s: &str) -> String {
    let v: Vec<u8> = serde_json::from_value::<k8s_openapi::ByteString>(Value::String(s.into()))
        .expect("base64")
        .0;
    String::from_utf8(v).expect("text")
}

fn creds(rv: &str, password: &str) -> Secret {
    source_secret(TENANT_NS, "db-creds", rv, &[("password", password)])
}

/// One reconcile that reads the cluster and the source and writes what `then` scripts.
async fn synced(
    s: &mut Setup,
    obj: &SpikeSecret,
    source: Secret,
    written: Option<&'static str>,
) -> (Result<Action, Error>, Option<Value>) {
    let (c, o) = (s.cluster(), obj.clone());
    s.reconcile(obj, |mut api| async move {
        api.get_cluster("spike", CLUSTER_NS, Some(&c)).await;
        api.get_secret(TENANT_NS, "db-creds", Some(&source)).await;
        let status = match written {
            Some(reason) => {
                let note = api.event_of(&o, "Normal", reason).await;
                assert!(note.contains(PATH), "{note}");
                assert!(!note.contains("hunter"), "{note}");
                Some(api.status_patch_of(&o).await)
            }
            None => None,
        };
        (api, status)
    })
    .await
}

#[tokio::test(flavor = "multi_thread")]
async fn a_secret_is_created_left_alone_and_replaced_when_its_source_changes() {
    let mut s = setup().await;
    let obj = s.secret("Replace", "Retain");
    // Retain without tokens: no finalizer, straight to the apply.
    let (action, status) = synced(&mut s, &obj, creds("10", "hunter2"), Some("Created")).await;
    assert_eq!(action.expect("reconcile"), Action::requeue(RESYNC));
    let status = status.expect("a status");
    assert_eq!(status["storedVersion"], 1);
    assert_eq!(status["applied"]["version"], 1);
    let revision = status["applied"]["sourceRevision"]
        .as_str()
        .expect("rev")
        .to_owned();
    assert!(revision.starts_with("sha256:"), "{revision}");
    assert_eq!(status["observedGeneration"], 1);
    assert_eq!(condition(&status, "Ready")["status"], "True");
    assert_eq!(condition(&status, "Ready")["reason"], "Synced");
    assert!(!status.to_string().contains("hunter2"));
    assert_eq!(s.value().await, "hunter2");

    // The same source again: nothing written, in Nexus or in Kubernetes.
    let obj = with_status(obj, &status);
    let (action, none) = synced(&mut s, &obj, creds("10", "hunter2"), None).await;
    assert_eq!(action.expect("reconcile"), Action::requeue(RESYNC));
    assert!(none.is_none());
    assert_eq!(s.metadata().await.expect("meta").current_version, 1);

    // The source changed under Replace: a new version with the new value.
    let (_, status2) = synced(&mut s, &obj, creds("11", "hunter3"), Some("Updated")).await;
    let status2 = status2.expect("a status");
    assert_eq!(status2["storedVersion"], 2);
    assert_ne!(status2["applied"]["sourceRevision"], revision.as_str());
    assert_eq!(s.value().await, "hunter3");
    // Condition times kept: nothing flipped.
    assert_eq!(
        condition(&status2, "Ready")["lastTransitionTime"],
        condition(&status, "Ready")["lastTransitionTime"]
    );

    // Under IfNotExists a changed source writes nothing more than the status' record.
    let mut keep = with_status(s.secret("IfNotExists", "Retain"), &status2);
    keep.metadata.generation = Some(2);
    let (c, o) = (s.cluster(), keep.clone());
    let (_, st) = s
        .reconcile(&keep, |mut api| async move {
            api.get_cluster("spike", CLUSTER_NS, Some(&c)).await;
            api.get_secret(TENANT_NS, "db-creds", Some(&creds("12", "hunter4")))
                .await;
            // Only observedGeneration moves.
            let st = api.status_patch_of(&o).await;
            (api, st)
        })
        .await;
    assert_eq!(st["observedGeneration"], 2);
    assert_eq!(st["storedVersion"], 2);
    assert_eq!(s.value().await, "hunter3");
    assert_eq!(s.metadata().await.expect("meta").current_version, 2);
    s.stack.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn deletion_soft_deletes_under_delete_and_touches_nothing_under_retain() {
    let mut s = setup().await;
    // Delete: the finalizer comes first, then the apply.
    let obj = s.secret("Replace", "Delete");
    let (c, o) = (s.cluster(), obj.clone());
    let (action, status) = s
        .reconcile(&obj, |mut api| async move {
            api.add_finalizer_of(&o).await;
            api.get_cluster("spike", CLUSTER_NS, Some(&c)).await;
            api.get_secret(TENANT_NS, "db-creds", Some(&creds("1", "pw")))
                .await;
            api.event_of(&o, "Normal", "Created").await;
            let st = api.status_patch_of(&o).await;
            (api, st)
        })
        .await;
    action.expect("reconcile");
    let obj = being_deleted(with_finalizer(with_status(obj, &status)));
    let (c, o) = (s.cluster(), obj.clone());
    let (action, note) = s
        .reconcile(&obj, |mut api| async move {
            api.get_cluster("spike", CLUSTER_NS, Some(&c)).await;
            let note = api.event_of(&o, "Normal", "Deleted").await;
            api.remove_finalizer_of(&o).await;
            (api, note)
        })
        .await;
    assert_eq!(action.expect("cleanup"), Action::await_change());
    assert_eq!(note, format!("secret {PATH} soft-deleted in Nexus"));
    let meta = s.metadata().await.expect("metadata is kept");
    assert!(
        meta.versions.iter().all(|v| v.deleted_at.is_some()),
        "{meta:?}"
    );

    // Retain, no tokens: no finalizer, so deleting it asks nothing of anyone.
    let obj = being_deleted(s.secret("Replace", "Retain"));
    let (action, ()) = s.reconcile(&obj, |api| async move { (api, ()) }).await;
    assert_eq!(action.expect("nothing to do"), Action::await_change());
    s.stack.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_token_is_minted_into_an_owned_secret_and_revoked_when_undeclared() {
    let mut s = setup().await;
    let agent = format!("spiffe://{}/ns/team-a/sa/agent", s.td);
    let obj = spike_secret(
        TENANT_NS,
        "db",
        json!({
            "path": PATH,
            "data": [{ "key": "password", "fromSecret": { "name": "db-creds", "key": "password" } }],
            "allowedDestinations": ["api.example.com"],
            "tokens": [{ "agent": agent, "secretName": "agent-token", "ttl": "15m" }],
        }),
    );
    let (c, o) = (s.cluster(), obj.clone());
    let (action, (applied, status)) = s
        .reconcile(&obj, |mut api| async move {
            api.add_finalizer_of(&o).await;
            api.get_cluster("spike", CLUSTER_NS, Some(&c)).await;
            api.get_secret(TENANT_NS, "db-creds", Some(&creds("1", "pw")))
                .await;
            api.get_secret(TENANT_NS, "agent-token", None).await;
            let applied = api.apply_secret(TENANT_NS, "agent-token").await;
            api.event_of(&o, "Normal", "Created").await;
            let note = api.event_of(&o, "Normal", "TokenMinted").await;
            assert!(!note.contains("SPIKE{ref"), "{note}");
            let st = api.status_patch_of(&o).await;
            (api, (applied, st))
        })
        .await;
    // Re-minted at two thirds of 15 minutes, later than the resync.
    assert_eq!(action.expect("reconcile"), Action::requeue(RESYNC));
    assert_eq!(
        (&applied["apiVersion"], &applied["kind"]),
        (&json!("v1"), &json!("Secret"))
    );
    assert_eq!(applied["type"], "Opaque");
    assert_eq!(applied["metadata"]["namespace"], TENANT_NS);
    assert_eq!(
        applied["metadata"]["labels"]["app.kubernetes.io/component"],
        "reference-token"
    );
    assert_eq!(
        applied["metadata"]["labels"]["app.kubernetes.io/instance"],
        "db"
    );
    assert_eq!(
        applied["metadata"]["ownerReferences"][0]["kind"],
        "SpikeSecret"
    );
    assert_eq!(
        applied["metadata"]["ownerReferences"][0]["controller"],
        true
    );
    assert_eq!(
        applied["metadata"]["labels"]["app.kubernetes.io/managed-by"],
        "spike-operator"
    );
    let token = applied["data"]["token"].as_str().expect("token data");
    assert!(!token.is_empty());
    let tokens = status["tokens"].as_array().expect("tokens");
    assert_eq!(tokens.len(), 1);
    let id = tokens[0]["tokenId"].as_str().expect("id").to_owned();
    assert!(tokens[0]["issuedAt"].is_string() && tokens[0]["expiresAt"].is_string());
    assert!(
        !status.to_string().contains(token),
        "no token value in status"
    );
    let info: TokenInfo = s
        .stack
        .client
        .call(Method::GET, &format!("/v1/tokens/{id}"), None::<&()>)
        .await
        .expect("the token is known to Nexus");
    assert_eq!(info.spiffe_id, agent);
    assert_eq!(format!("{:?}", info.state).to_lowercase(), "active");

    let value = base64_decode(token);
    assert!(
        value.starts_with("$SPIKE{ref:"),
        "the Secret holds the reference"
    );

    // Two thirds through its life (as status records it): a new token, then the old revoked.
    let mut due = with_finalizer(with_status(obj.clone(), &status));
    let t = &mut due.status.as_mut().expect("status").tokens[0];
    t.issued_at = Some("2026-01-01T00:00:00Z".into());
    t.expires_at = "2026-01-01T00:15:00Z".into();
    let mut owned = source_secret(TENANT_NS, "agent-token", "1", &[("token", &value)]);
    owned.metadata.owner_references =
        serde_json::from_value(applied["metadata"]["ownerReferences"].clone()).expect("refs");
    let (c, o, held) = (s.cluster(), due.clone(), owned.clone());
    let (action, status) = s
        .reconcile(&due, |mut api| async move {
            api.get_cluster("spike", CLUSTER_NS, Some(&c)).await;
            api.get_secret(TENANT_NS, "db-creds", Some(&creds("1", "pw")))
                .await;
            api.get_secret(TENANT_NS, "agent-token", Some(&held)).await;
            api.apply_secret(TENANT_NS, "agent-token").await;
            // (The recorder counts this into the first TokenMinted event's series.)
            api.event_of(&o, "Normal", "TokenMinted").await;
            let st = api.status_patch_of(&o).await;
            (api, st)
        })
        .await;
    action.expect("re-mint");
    let new_id = status["tokens"][0]["tokenId"]
        .as_str()
        .expect("id")
        .to_owned();
    assert_ne!(new_id, id);
    let state = |id: String| {
        let admin = s.stack.client.clone();
        async move {
            let t: TokenInfo = admin
                .call(Method::GET, &format!("/v1/tokens/{id}"), None::<&()>)
                .await
                .expect("token");
            format!("{:?}", t.state).to_lowercase()
        }
    };
    assert_eq!(state(id.clone()).await, "revoked");
    assert_eq!(state(new_id.clone()).await, "active");
    let id = new_id;

    // The token dropped from the spec: revoked, its Secret deleted, the finalizer released.
    let mut no_token = with_finalizer(with_status(obj.clone(), &status));
    no_token.spec.tokens.clear();
    no_token.metadata.generation = Some(2);
    let mut owned = source_secret(TENANT_NS, "agent-token", "1", &[("token", "x")]);
    owned.metadata.owner_references =
        serde_json::from_value(applied["metadata"]["ownerReferences"].clone()).expect("refs");
    let (c, o) = (s.cluster(), no_token.clone());
    let (action, st) = s
        .reconcile(&no_token, |mut api| async move {
            api.get_cluster("spike", CLUSTER_NS, Some(&c)).await;
            api.get_secret(TENANT_NS, "db-creds", Some(&creds("1", "pw")))
                .await;
            api.get_secret(TENANT_NS, "agent-token", Some(&owned)).await;
            api.delete_secret(TENANT_NS, "agent-token").await;
            api.event_of(&o, "Normal", "TokenRevoked").await;
            let st = api.status_patch_of(&o).await;
            api.remove_finalizer_of(&o).await;
            (api, st)
        })
        .await;
    assert_eq!(action.expect("reconcile"), Action::requeue(RESYNC));
    assert!(st.get("tokens").is_none(), "{st}");
    let info: TokenInfo = s
        .stack
        .client
        .call(Method::GET, &format!("/v1/tokens/{id}"), None::<&()>)
        .await
        .expect("token");
    assert_eq!(format!("{:?}", info.state).to_lowercase(), "revoked");
    s.stack.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_paused_cluster_and_a_missing_source_change_nothing_in_nexus() {
    let mut s = setup().await;
    let obj = s.secret("Replace", "Retain");
    let mut paused = s.cluster();
    paused.spec.paused = true;
    let o = obj.clone();
    let (action, st) = s
        .reconcile(&obj, |mut api| async move {
            api.get_cluster("spike", CLUSTER_NS, Some(&paused)).await;
            api.event_of(&o, "Normal", "Paused").await;
            let st = api.status_patch_of(&o).await;
            (api, st)
        })
        .await;
    assert_eq!(action.expect("paused"), Action::requeue(REFUSED_REQUEUE));
    assert_eq!(condition(&st, "Progressing")["reason"], "Paused");
    assert!(s.metadata().await.is_none());

    let (c, o) = (s.cluster(), obj.clone());
    let (action, st) = s
        .reconcile(&obj, |mut api| async move {
            api.get_cluster("spike", CLUSTER_NS, Some(&c)).await;
            api.get_secret(TENANT_NS, "db-creds", None).await;
            let note = api.event_of(&o, "Warning", "SourceMissing").await;
            assert_eq!(
                note,
                "Secret team-a/db-creds (for key password) does not exist"
            );
            let st = api.status_patch_of(&o).await;
            (api, st)
        })
        .await;
    assert_eq!(action.expect("refused"), Action::requeue(SOURCE_REQUEUE));
    assert_eq!(condition(&st, "Ready")["reason"], "SourceMissing");
    assert!(s.metadata().await.is_none());
    s.stack.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn an_unreachable_nexus_is_degraded_and_retried_with_backoff() {
    let mut s = setup_with(true).await;
    let obj = s.secret("Replace", "Retain");
    let (c, o) = (s.cluster(), obj.clone());
    let (e, st) = s
        .reconcile(&obj, |mut api| async move {
            api.get_cluster("spike", CLUSTER_NS, Some(&c)).await;
            api.get_secret(TENANT_NS, "db-creds", Some(&creds("1", "pw")))
                .await;
            api.event_of(&o, "Warning", "NexusUnavailable").await;
            let st = api.status_patch_of(&o).await;
            (api, st)
        })
        .await;
    let e = e.unwrap_err();
    assert!(e.is_transient());
    assert_eq!(condition(&st, "Degraded")["status"], "True");
    assert_eq!(condition(&st, "Progressing")["status"], "True");
    assert!(st.get("observedGeneration").is_none());
    let first = error_policy(Arc::new(obj), &e, s.ctx.clone());
    assert_eq!(first, Action::requeue(Backoff::FIRST));
    assert!(
        s.ctx
            .metrics
            .render()
            .contains("controller=\"spikesecret\",reason=\"NexusUnavailable\"")
    );
    s.stack.stop().await;
}

/// Reconciles `obj`, expecting a refusal with `reason` whose message starts with `message`;
/// no Secret is fetched and nothing reaches Nexus.
async fn refused(s: &mut Setup, obj: SpikeSecret, reason: &'static str, message: &str) {
    let (c, o) = (s.cluster(), obj.clone());
    let (action, st) = s
        .reconcile(&obj, |mut api| async move {
            api.get_cluster("spike", CLUSTER_NS, Some(&c)).await;
            api.event_of(&o, "Warning", reason).await;
            let st = api.status_patch_of(&o).await;
            (api, st)
        })
        .await;
    assert_eq!(action.expect("refused"), Action::requeue(REFUSED_REQUEUE));
    let ready = condition(&st, "Ready");
    assert_eq!(ready["reason"], reason);
    let text = ready["message"].as_str().expect("message");
    assert!(text.starts_with(message), "{text}");
    assert!(s.metadata().await.is_none());
}

#[tokio::test(flavor = "multi_thread")]
async fn every_tenancy_escape_and_a_bad_spec_are_refused_with_the_field() {
    let mut s = setup().await;
    let base = s.secret("Replace", "Retain");

    let mut other_ns = base.clone();
    other_ns.spec.data[0]
        .from_secret
        .as_mut()
        .expect("from")
        .namespace = Some("team-b".into());
    refused(
        &mut s,
        other_ns,
        "TenancyViolation",
        "spec.data[0].fromSecret.namespace: ",
    )
    .await;

    let mut other_path = base.clone();
    other_path.spec.path = "k8s/team-b/db".into();
    refused(&mut s, other_path, "TenancyViolation", "spec.path: ").await;

    let mut other_ids = base.clone();
    other_ids.spec.allowed_spiffe_ids = vec![format!("spiffe://{}/ns/team-b/**", s.td)];
    refused(
        &mut s,
        other_ids,
        "TenancyViolation",
        "spec.allowedSpiffeIds[0]: ",
    )
    .await;

    let mut other_agent = base.clone();
    other_agent.spec.allowed_destinations = vec!["api.example.com".into()];
    other_agent.spec.tokens = vec![
        serde_json::from_value(json!({
            "agent": format!("spiffe://{}/ns/team-b/sa/agent", s.td),
            "secretName": "agent-token",
        }))
        .expect("token"),
    ];
    // A token needs the finalizer, which comes first.
    let with_fin = with_finalizer(other_agent);
    refused(
        &mut s,
        with_fin,
        "TenancyViolation",
        "spec.tokens[0].agent: ",
    )
    .await;

    let mut bad_ttl = base;
    bad_ttl.spec.ttl = Some("soon".into());
    refused(&mut s, bad_ttl, "InvalidSpec", "spec.ttl: ").await;
    s.stack.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_spec_change_of_the_scope_writes_a_scope_only_version() {
    let mut s = setup().await;
    let obj = s.secret("IfNotExists", "Retain");
    let (_, status) = synced(&mut s, &obj, creds("1", "hunter2"), Some("Created")).await;
    let mut changed = with_status(obj, &status.expect("status"));
    changed.spec.ttl = Some("1h".into());
    changed.metadata.generation = Some(2);
    let (action, st) = synced(&mut s, &changed, creds("1", "hunter2"), Some("Updated")).await;
    assert_eq!(action.expect("reconcile"), Action::requeue(RESYNC));
    let st = st.expect("status");
    assert_eq!(st["storedVersion"], 2);
    assert_eq!(st["observedGeneration"], 2);
    let meta = s.metadata().await.expect("meta");
    assert_eq!(meta.ttl_seconds, Some(3600));
    // The values were carried over by Nexus, not rewritten.
    assert_eq!(s.value().await, "hunter2");
    s.stack.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn generated_values_are_written_once_and_kept() {
    let mut s = setup().await;
    let obj = spike_secret(
        TENANT_NS,
        "db",
        json!({"path": PATH, "data": [{"key": "password", "generate": {"length": 24, "alphabet": "Hex"}}],
               "writePolicy": "Replace"}),
    );
    let o = obj.clone();
    let c = s.cluster();
    // No source to fetch: straight from the cluster to Nexus.
    let (_, status) = s
        .reconcile(&obj, |mut api| async move {
            api.get_cluster("spike", CLUSTER_NS, Some(&c)).await;
            api.event_of(&o, "Normal", "Created").await;
            let st = api.status_patch_of(&o).await;
            (api, st)
        })
        .await;
    let first = s.value().await;
    assert_eq!(first.len(), 24);
    assert!(first.bytes().all(|b| b.is_ascii_hexdigit()));
    assert!(!status.to_string().contains(&first));
    let again = with_status(obj, &status);
    let c = s.cluster();
    let (action, ()) = s
        .reconcile(&again, |mut api| async move {
            api.get_cluster("spike", CLUSTER_NS, Some(&c)).await;
            (api, ())
        })
        .await;
    assert_eq!(action.expect("reconcile"), Action::requeue(RESYNC));
    assert_eq!(s.value().await, first);
    s.stack.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn deleting_a_retained_secret_with_tokens_revokes_them_and_keeps_the_secret() {
    let mut s = setup().await;
    let agent = format!("spiffe://{}/ns/team-a/sa/agent", s.td);
    let obj = with_finalizer(spike_secret(
        TENANT_NS,
        "db",
        json!({
            "path": PATH,
            "data": [{ "key": "password", "fromSecret": { "name": "db-creds", "key": "password" } }],
            "allowedDestinations": ["api.example.com"],
            "tokens": [{ "agent": agent, "secretName": "agent-token" }],
        }),
    ));
    let (c, o) = (s.cluster(), obj.clone());
    let (_, status) = s
        .reconcile(&obj, |mut api| async move {
            api.get_cluster("spike", CLUSTER_NS, Some(&c)).await;
            api.get_secret(TENANT_NS, "db-creds", Some(&creds("1", "pw")))
                .await;
            api.get_secret(TENANT_NS, "agent-token", None).await;
            api.apply_secret(TENANT_NS, "agent-token").await;
            api.event_of(&o, "Normal", "Created").await;
            api.event_of(&o, "Normal", "TokenMinted").await;
            let st = api.status_patch_of(&o).await;
            (api, st)
        })
        .await;
    let id = status["tokens"][0]["tokenId"]
        .as_str()
        .expect("id")
        .to_owned();
    let gone = being_deleted(with_status(obj, &status));
    let (c, o) = (s.cluster(), gone.clone());
    let (action, note) = s
        .reconcile(&gone, |mut api| async move {
            api.get_cluster("spike", CLUSTER_NS, Some(&c)).await;
            let note = api.event_of(&o, "Normal", "Retained").await;
            api.remove_finalizer_of(&o).await;
            (api, note)
        })
        .await;
    assert_eq!(action.expect("cleanup"), Action::await_change());
    assert!(note.contains("1 token(s) revoked"), "{note}");
    let info: TokenInfo = s
        .stack
        .client
        .call(Method::GET, &format!("/v1/tokens/{id}"), None::<&()>)
        .await
        .expect("token");
    assert_eq!(format!("{:?}", info.state).to_lowercase(), "revoked");
    assert_eq!(s.metadata().await.expect("retained").current_version, 1);
    s.stack.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_token_is_never_written_into_a_secret_the_operator_does_not_own() {
    let mut s = setup().await;
    let agent = format!("spiffe://{}/ns/team-a/sa/agent", s.td);
    let obj = with_finalizer(spike_secret(
        TENANT_NS,
        "db",
        json!({
            "path": PATH,
            "data": [{ "key": "password", "fromSecret": { "name": "db-creds", "key": "password" } }],
            "allowedDestinations": ["api.example.com"],
            "tokens": [{ "agent": agent, "secretName": "app-config" }],
        }),
    ));
    let theirs = source_secret(TENANT_NS, "app-config", "3", &[("token", "their-own")]);
    let (c, o) = (s.cluster(), obj.clone());
    let (action, st) = s
        .reconcile(&obj, |mut api| async move {
            api.get_cluster("spike", CLUSTER_NS, Some(&c)).await;
            api.get_secret(TENANT_NS, "db-creds", Some(&creds("1", "pw")))
                .await;
            api.get_secret(TENANT_NS, "app-config", Some(&theirs)).await;
            api.event_of(&o, "Normal", "Created").await;
            let note = api.event_of(&o, "Warning", "InvalidSpec").await;
            assert!(!note.contains("their-own"), "{note}");
            let st = api.status_patch_of(&o).await;
            (api, st)
        })
        .await;
    assert_eq!(action.expect("refused"), Action::requeue(REFUSED_REQUEUE));
    let ready = condition(&st, "Ready");
    assert!(
        ready["message"]
            .as_str()
            .expect("message")
            .contains("Secret team-a/app-config exists and is not owned by this SpikeSecret"),
        "{ready}"
    );
    // The secret itself was written; no token was minted.
    assert_eq!(st["storedVersion"], 1);
    assert!(st.get("tokens").is_none(), "{st}");
    s.stack.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_deletion_waits_for_a_paused_cluster_and_never_deletes_outside_the_tenancy() {
    let mut s = setup().await;
    let obj = being_deleted(with_finalizer(s.secret("Replace", "Delete")));
    let mut paused = s.cluster();
    paused.spec.paused = true;
    let (e, ()) = s
        .reconcile(&obj, |mut api| async move {
            api.get_cluster("spike", CLUSTER_NS, Some(&paused)).await;
            (api, ())
        })
        .await;
    let e = e.unwrap_err();
    assert_eq!(e.reason(), "Paused");
    assert!(
        e.is_transient(),
        "the finalizer stays; retried with backoff"
    );

    // A path of another tenant that slipped past the schema: nothing is deleted there.
    let mut escape = s.secret("Replace", "Delete");
    escape.spec.path = "k8s/team-b/db".into();
    let escape = being_deleted(with_finalizer(escape));
    let (c, o) = (s.cluster(), escape.clone());
    let (action, note) = s
        .reconcile(&escape, |mut api| async move {
            api.get_cluster("spike", CLUSTER_NS, Some(&c)).await;
            let note = api.event_of(&o, "Warning", "NotDeleted").await;
            api.remove_finalizer_of(&o).await;
            (api, note)
        })
        .await;
    assert_eq!(action.expect("released"), Action::await_change());
    assert!(note.contains("spec.path: "), "{note}");
    s.stack.stop().await;
}
