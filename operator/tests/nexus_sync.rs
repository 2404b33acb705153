//! The Nexus side of the `SpikeSecret` and `SpikePolicy` controllers against a real Nexus:
//! keepers, Nexus with its redb store and bootstrap in this process (`spike-bench`'s stack),
//! over mTLS on loopback.

use std::collections::BTreeMap;
use std::time::{Duration, SystemTime};

use http::Method;
use spike::client::Nexus;
use spike_bench::Stack;
use spike_core::api::{PutSecretRequest, PutSecretResponse, SecretMetadata, TokenInfo};
use spike_core::error::ErrorCode;
use spike_core::policy::Permission;
use spike_core::secret::SecretMap;
use spike_core::token::TokenAction;
use spike_operator::nexus::{
    Alphabet, DeleteOutcome, DeletionPolicy, DesiredPolicy, DesiredScope, DesiredSecret,
    DesiredToken, Generator, NexusSync, PolicyOutcome, SecretOutcome, SecretValues, SyncError,
    WritePolicy, needs_remint,
};

const TIMEOUT: Duration = Duration::from_secs(10);

/// The operator's stand-in: Nexus applies no policy to `/spike/operator` (a reserved
/// identity) until the scoped policy-admin permission lands, so the tests give a workload ID
/// what the operator will hold.
// scoped policy admin: switch when it lands
const OPERATOR: &str = "/ns/spike-system/operator";

async fn put_policy(admin: &Nexus, name: &str, id: &str, path: &str, perms: &[&str]) {
    let body = serde_json::json!({
        "spiffeIdPattern": id, "pathPattern": path, "permissions": perms,
    });
    let _: serde_json::Value = admin
        .call(Method::PUT, &format!("/v1/policies/{name}"), Some(&body))
        .await
        .expect("policy by the superuser");
}

/// A started stack and the operator's client, holding `perms` on `paths`.
async fn operator_with(paths: &str, perms: &[&str]) -> (Stack, NexusSync) {
    let stack = Stack::start(None).await.expect("stack");
    let td = stack.trust_domain().clone();
    let id = td.id(OPERATOR).expect("id");
    put_policy(&stack.client, "operator", id.as_str(), paths, perms).await;
    let source = stack.svid_source(&id).expect("svid");
    let sync = NexusSync::connect_as(stack.nexus_addr(), source, &id, TIMEOUT).expect("client");
    (stack, sync)
}

/// What the secret controller's operator holds.
async fn secret_operator() -> (Stack, NexusSync) {
    operator_with("k8s/**", &["read", "write", "list", "delete", "token"]).await
}

fn map(pairs: &[(&str, &str)]) -> SecretMap {
    let mut m = SecretMap::new();
    for (k, v) in pairs {
        m.insert(*k, (*v).to_owned());
    }
    m
}

fn given(path: &str, pairs: &[(&str, &str)], write_policy: WritePolicy) -> DesiredSecret {
    DesiredSecret {
        path: path.into(),
        values: SecretValues::Given(map(pairs)),
        scope: DesiredScope::default(),
        write_policy,
    }
}

async fn metadata(stack: &Stack, path: &str) -> SecretMetadata {
    stack
        .client
        .call(
            Method::GET,
            &format!("/v1/secrets/metadata/{path}"),
            None::<&()>,
        )
        .await
        .expect("metadata")
}

async fn value(stack: &Stack, path: &str, key: &str) -> String {
    let r: spike_core::api::GetSecretResponse = stack
        .client
        .call(
            Method::GET,
            &format!("/v1/secrets/data/{path}"),
            None::<&()>,
        )
        .await
        .expect("read");
    r.data.get(key).expect("key").expose_secret().to_owned()
}

/// Audit lines of writes (`action`) to `path`: proof of what was written, beyond versions.
fn audited_writes(stack: &Stack, action: &str, path: &str) -> usize {
    let log = std::fs::read_to_string(stack.data_dir.join("audit.log")).expect("audit log");
    log.lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|v| v["action"] == action && v["path"] == path)
        .count()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_secret_is_created_and_a_second_apply_writes_nothing() {
    let (stack, sync) = secret_operator().await;
    let d = given(
        "k8s/web/db",
        &[("pass", "first-value")],
        WritePolicy::Replace,
    );
    assert_eq!(
        sync.apply_secret(&d).await.unwrap(),
        SecretOutcome::Created { version: 1 }
    );
    assert_eq!(value(&stack, "k8s/web/db", "pass").await, "first-value");
    let writes = audited_writes(&stack, "secret.put", "k8s/web/db");
    assert_eq!(writes, 1);
    let before = metadata(&stack, "k8s/web/db").await;

    for _ in 0..2 {
        assert_eq!(
            sync.apply_secret(&d).await.unwrap(),
            SecretOutcome::Unchanged { version: 1 }
        );
    }
    let after = metadata(&stack, "k8s/web/db").await;
    assert_eq!(after, before, "the metadata did not move");
    assert_eq!(audited_writes(&stack, "secret.put", "k8s/web/db"), writes);
    stack.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn replace_writes_a_changed_source_value_and_if_not_exists_leaves_it() {
    let (stack, sync) = secret_operator().await;
    let replace = given("k8s/web/api", &[("key", "v1")], WritePolicy::Replace);
    sync.apply_secret(&replace).await.unwrap();
    let changed = given("k8s/web/api", &[("key", "v2")], WritePolicy::Replace);
    assert_eq!(
        sync.apply_secret(&changed).await.unwrap(),
        SecretOutcome::Updated { version: 2 }
    );
    assert_eq!(value(&stack, "k8s/web/api", "key").await, "v2");

    let keep = given("k8s/web/api", &[("key", "v3")], WritePolicy::IfNotExists);
    assert_eq!(
        sync.apply_secret(&keep).await.unwrap(),
        SecretOutcome::Unchanged { version: 2 }
    );
    assert_eq!(value(&stack, "k8s/web/api", "key").await, "v2");

    // A scope change under IfNotExists carries the current values into a new version.
    let mut scoped = given("k8s/web/api", &[("key", "v3")], WritePolicy::IfNotExists);
    scoped.scope = DesiredScope {
        ttl: Some(Duration::from_secs(3600)),
        // The operator must stay among the readers, or it cannot compare.
        allowed_spiffe_ids: vec![
            format!("spiffe://{}/ns/web/**", stack.trust_domain()),
            format!("spiffe://{}{OPERATOR}", stack.trust_domain()),
        ],
        allowed_destinations: vec!["api.example.com".into()],
    };
    assert_eq!(
        sync.apply_secret(&scoped).await.unwrap(),
        SecretOutcome::Updated { version: 3 }
    );
    let m = metadata(&stack, "k8s/web/api").await;
    assert_eq!(m.ttl_seconds, Some(3600));
    assert_eq!(m.allowed_spiffe_ids.len(), 2);
    assert_eq!(
        m.allowed_destinations,
        vec!["api.example.com:443".to_owned()]
    );
    // And the scope, once stored, is no reason to write again.
    assert_eq!(
        sync.apply_secret(&scoped).await.unwrap(),
        SecretOutcome::Unchanged { version: 3 }
    );
    // Lifting the restriction is a scope change too; the value went along unchanged.
    scoped.scope = DesiredScope::default();
    assert_eq!(
        sync.apply_secret(&scoped).await.unwrap(),
        SecretOutcome::Updated { version: 4 }
    );
    let m = metadata(&stack, "k8s/web/api").await;
    assert_eq!(
        (m.ttl_seconds.filter(|&t| t > 0), m.allowed_spiffe_ids.len()),
        (None, 0)
    );
    assert_eq!(value(&stack, "k8s/web/api", "key").await, "v2");
    stack.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_generated_value_is_generated_once() {
    let (stack, sync) = secret_operator().await;
    let gens: BTreeMap<String, Generator> = [(
        "password".to_owned(),
        Generator {
            length: 32,
            alphabet: Alphabet::alphanumeric(),
        },
    )]
    .into();
    for write_policy in [WritePolicy::IfNotExists, WritePolicy::Replace] {
        let path = format!("k8s/db/{write_policy:?}").to_lowercase();
        let d = DesiredSecret {
            path: path.clone(),
            values: SecretValues::Generated(gens.clone()),
            scope: DesiredScope::default(),
            write_policy,
        };
        assert_eq!(
            sync.apply_secret(&d).await.unwrap(),
            SecretOutcome::Created { version: 1 }
        );
        let first = value(&stack, &path, "password").await;
        assert_eq!(first.len(), 32);
        assert!(first.bytes().all(|b| b.is_ascii_alphanumeric()));
        assert_eq!(
            sync.apply_secret(&d).await.unwrap(),
            SecretOutcome::Unchanged { version: 1 }
        );
        assert_eq!(value(&stack, &path, "password").await, first);
    }
    stack.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_write_between_read_and_write_is_a_conflict_and_overwrites_nothing() {
    let (stack, sync) = secret_operator().await;
    sync.apply_secret(&given(
        "k8s/web/race",
        &[("k", "ours-1")],
        WritePolicy::Replace,
    ))
    .await
    .unwrap();
    let d = given("k8s/web/race", &[("k", "ours-2")], WritePolicy::Replace);
    let plan = sync.plan_secret(&d).await.unwrap();
    assert!(!plan.is_unchanged());

    // Someone else writes between the operator's read and its write.
    let theirs = PutSecretRequest {
        data: map(&[("k", "theirs")]),
        cas: None,
        scope: None,
    };
    let r: PutSecretResponse = stack
        .client
        .call(Method::PUT, "/v1/secrets/data/k8s/web/race", Some(&theirs))
        .await
        .unwrap();
    assert_eq!(r.version, Some(2));

    let e = sync.write_plan(plan).await.unwrap_err();
    assert!(matches!(e, SyncError::Conflict { .. }), "{e:?}");
    assert!(e.is_transient());
    assert!(e.to_string().contains("k8s/web/race"), "{e}");
    assert_eq!(value(&stack, "k8s/web/race", "k").await, "theirs");
    // The requeued reconcile reads again and writes.
    assert_eq!(
        sync.apply_secret(&d).await.unwrap(),
        SecretOutcome::Updated { version: 3 }
    );
    stack.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn deletion_honours_retain_and_delete() {
    let (stack, sync) = secret_operator().await;
    for v in ["a", "b"] {
        sync.apply_secret(&given("k8s/web/gone", &[("k", v)], WritePolicy::Replace))
            .await
            .unwrap();
    }
    assert_eq!(
        sync.delete_secret("k8s/web/gone", DeletionPolicy::Retain)
            .await
            .unwrap(),
        DeleteOutcome::Retained
    );
    assert_eq!(metadata(&stack, "k8s/web/gone").await.current_version, 2);

    assert_eq!(
        sync.delete_secret("k8s/web/gone", DeletionPolicy::Delete)
            .await
            .unwrap(),
        DeleteOutcome::Deleted
    );
    let m = metadata(&stack, "k8s/web/gone").await;
    assert_eq!(m.current_version, 0);
    assert!(m.versions.iter().all(|v| v.deleted_at.is_some()), "{m:?}");
    for path in ["k8s/web/gone", "k8s/web/never"] {
        let got = sync
            .delete_secret(path, DeletionPolicy::Delete)
            .await
            .unwrap();
        assert_eq!(got, DeleteOutcome::AlreadyGone, "{path}");
    }
    stack.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn writes_outside_the_operators_grant_are_refused_with_nexus_code() {
    let (stack, sync) = secret_operator().await;
    let e = sync
        .apply_secret(&given("apps/other/db", &[("k", "v")], WritePolicy::Replace))
        .await
        .unwrap_err();
    assert!(
        matches!(
            e,
            SyncError::Refused {
                code: ErrorCode::Forbidden,
                ..
            }
        ),
        "{e:?}"
    );
    assert!(!e.is_transient());
    // Without `super` the operator cannot write policies at all.
    let p = DesiredPolicy {
        name: "escape".into(),
        spiffe_id_pattern: format!("spiffe://{}/ns/spike-system/operator", stack.trust_domain()),
        path_pattern: "**".into(),
        permissions: vec![Permission::Super],
    };
    let e = sync.apply_policy(&p).await.unwrap_err();
    assert!(matches!(e, SyncError::Refused { .. }), "{e:?}");
    stack.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn no_value_appears_in_an_error_or_its_debug_output() {
    let (stack, sync) = secret_operator().await;
    let marker = "S3CR3T-MARKER-";
    let big = marker.repeat(70 * 1024 / marker.len() + 1);
    for d in [
        // Too large for Nexus: refused by it.
        given("k8s/web/big", &[("k", &big)], WritePolicy::Replace),
        // Outside the grant.
        given("apps/x", &[("k", marker)], WritePolicy::Replace),
        // Refused before sending.
        given("../x", &[("k", marker)], WritePolicy::Replace),
    ] {
        let e = sync.apply_secret(&d).await.unwrap_err();
        for text in [e.to_string(), format!("{e:?}"), format!("{d:?}")] {
            assert!(!text.contains(marker), "{text}");
        }
    }
    stack.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn policies_are_created_left_alone_when_identical_replaced_and_deleted() {
    // scoped policy admin: switch when it lands (today only `super` on `**` writes policies)
    let (stack, sync) = operator_with("**", &["super"]).await;
    let ns_id = format!("spiffe://{}/ns/web/**", stack.trust_domain());
    let mut p = DesiredPolicy {
        name: "web-read".into(),
        spiffe_id_pattern: ns_id,
        path_pattern: "k8s/web/**".into(),
        permissions: vec![Permission::Read, Permission::List],
    };
    assert_eq!(sync.apply_policy(&p).await.unwrap(), PolicyOutcome::Created);
    let writes = audited_writes(&stack, "policy.put", "web-read");
    assert_eq!(writes, 1);
    p.permissions.reverse();
    assert_eq!(
        sync.apply_policy(&p).await.unwrap(),
        PolicyOutcome::Unchanged
    );
    assert_eq!(audited_writes(&stack, "policy.put", "web-read"), writes);

    p.permissions.push(Permission::Write);
    assert_eq!(
        sync.apply_policy(&p).await.unwrap(),
        PolicyOutcome::Replaced
    );
    let stored: spike_core::api::PolicyResponse = stack
        .client
        .call(Method::GET, "/v1/policies/web-read", None::<&()>)
        .await
        .unwrap();
    assert!(stored.permissions.contains(&Permission::Write));

    // A policy of the same name created by someone else after the read is not overwritten.
    let mut racing = p.clone();
    racing.name = "raced".into();
    let plan = sync.plan_policy(&racing).await.unwrap();
    let other_ns = format!("spiffe://{}/ns/x/**", stack.trust_domain());
    put_policy(&stack.client, "raced", &other_ns, "k8s/x/**", &["read"]).await;
    let e = sync.write_policy_plan(plan).await.unwrap_err();
    assert!(matches!(e, SyncError::Conflict { .. }), "{e:?}");
    let kept: spike_core::api::PolicyResponse = stack
        .client
        .call(Method::GET, "/v1/policies/raced", None::<&()>)
        .await
        .unwrap();
    assert_eq!(kept.path_pattern, "k8s/x/**");
    // The requeued reconcile reads again and replaces it.
    assert_eq!(
        sync.apply_policy(&racing).await.unwrap(),
        PolicyOutcome::Replaced
    );

    // A bad pattern is Nexus's refusal, with its code.
    let mut bad = p.clone();
    bad.name = "bad".into();
    bad.spiffe_id_pattern = "spiffe://other.domain/**".into();
    let e = sync.apply_policy(&bad).await.unwrap_err();
    assert!(
        matches!(
            e,
            SyncError::Refused {
                code: ErrorCode::InvalidPolicy,
                ..
            }
        ),
        "{e:?}"
    );

    for (policy, want) in [
        (DeletionPolicy::Retain, DeleteOutcome::Retained),
        (DeletionPolicy::Delete, DeleteOutcome::Deleted),
        (DeletionPolicy::Delete, DeleteOutcome::AlreadyGone),
    ] {
        let got = sync.delete_policy("web-read", policy).await.unwrap();
        assert_eq!(got, want, "{policy:?}");
    }
    stack.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_token_is_minted_and_reminted_for_a_named_agent() {
    let (stack, sync) = secret_operator().await;
    let td = stack.trust_domain().clone();
    let mut d = given(
        "k8s/agents/llm-key",
        &[("value", "sk-upstream")],
        WritePolicy::Replace,
    );
    d.scope.allowed_destinations = vec!["api.example.com".into()];
    sync.apply_secret(&d).await.unwrap();
    let want = DesiredToken {
        secret: "k8s/agents/llm-key".into(),
        key: None,
        agent_id: format!("spiffe://{td}/ns/agents/sa/researcher"),
        ttl: Duration::from_secs(900),
        action: TokenAction::Read,
        destinations: vec![],
        path_prefixes: vec!["/v1/chat".into()],
        locations: vec![],
    };
    let first = sync.mint_token(&want).await.unwrap();
    assert!(first.reference.expose_secret().starts_with("$SPIKE{ref:"));
    let life = first.expires_at.duration_since(first.issued_at).unwrap();
    assert!((899..=901).contains(&life.as_secs()), "{life:?}");
    assert!(!format!("{first:?}").contains(first.reference.expose_secret()));
    assert!(!needs_remint(
        first.issued_at,
        first.expires_at,
        SystemTime::now()
    ));
    let later = first.issued_at + Duration::from_secs(601);
    assert!(needs_remint(first.issued_at, first.expires_at, later));

    let second = sync.mint_token(&want).await.unwrap();
    assert_ne!(
        second.reference.expose_secret(),
        first.reference.expose_secret()
    );
    assert_ne!(second.id, first.id);
    sync.revoke_token(&first.id).await.unwrap();
    let state = |id: String| {
        let admin = stack.client.clone();
        async move {
            let t: TokenInfo = admin
                .call(Method::GET, &format!("/v1/tokens/{id}"), None::<&()>)
                .await
                .unwrap();
            (t.state, t.spiffe_id, t.destinations)
        }
    };
    let (s1, _, _) = state(first.id.clone()).await;
    let (s2, agent, dest) = state(second.id.clone()).await;
    assert_eq!(format!("{s1:?}").to_lowercase(), "revoked");
    assert_eq!(format!("{s2:?}").to_lowercase(), "active");
    assert_eq!(agent, want.agent_id);
    assert_eq!(dest, vec!["api.example.com:443".to_owned()]);
    stack.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_stopped_nexus_is_unavailable_not_a_crash() {
    let (stack, sync) = secret_operator().await;
    let d = given("k8s/web/db", &[("k", "v")], WritePolicy::Replace);
    sync.apply_secret(&d).await.unwrap();
    stack.stop().await;
    let e = sync.apply_secret(&d).await.unwrap_err();
    assert!(matches!(e, SyncError::Unavailable { .. }), "{e:?}");
    assert!(e.is_transient());
    let e = sync
        .delete_policy("x", DeletionPolicy::Delete)
        .await
        .unwrap_err();
    assert!(matches!(e, SyncError::Unavailable { .. }), "{e:?}");
}
