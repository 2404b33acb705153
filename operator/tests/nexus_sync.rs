//! The Nexus side of the `SpikeSecret` and `SpikePolicy` controllers against a real Nexus:
//! keepers, Nexus with its redb store and bootstrap in this process (`spike-bench`'s stack),
//! over mTLS on loopback. The operator is the production identity, `/spike/operator`, holding
//! no policy at all: Nexus's `operator.path_scope` and `operator.spiffe_id_scope` are its whole
//! authority (list, write, delete and token on the paths, never read).

use std::collections::BTreeMap;
use std::time::{Duration, SystemTime};

use http::Method;
use spike::client::{CliError, Nexus};
use spike_bench::Stack;
use spike_core::admin_scope::AdminScope;
use spike_core::api::{PutSecretRequest, PutSecretResponse, SecretMetadata, TokenInfo};
use spike_core::error::ErrorCode;
use spike_core::id::Builtin;
use spike_core::policy::Permission;
use spike_core::secret::SecretMap;
use spike_core::token::TokenAction;
use spike_operator::nexus::{
    Alphabet, Applied, DeleteOutcome, DeletionPolicy, DesiredPolicy, DesiredScope, DesiredSecret,
    DesiredToken, Generator, NexusSync, PolicyOutcome, SecretOutcome, SecretValues, SyncError,
    WritePolicy, needs_remint,
};

const TIMEOUT: Duration = Duration::from_secs(10);

/// A stack whose Nexus gives the operator `paths` and the IDs `spiffe://<td>/<ids>`, and the
/// operator's client.
async fn operator_in(paths: &str, ids: &str) -> (Stack, NexusSync) {
    let stack = Stack::start_with(None, |c| {
        let q = format!("spiffe://{}/{ids}", c.trust_domain);
        c.operator_scope = Some(AdminScope::parse(paths, &q, &c.trust_domain).expect("scope"));
    })
    .await
    .expect("stack");
    let sync =
        NexusSync::connect(stack.nexus_addr(), operator_source(&stack), TIMEOUT).expect("client");
    (stack, sync)
}

fn operator_source(stack: &Stack) -> std::sync::Arc<dyn spike_runtime::svid::SvidSource> {
    let id = Builtin::Operator.id(stack.trust_domain());
    stack.svid_source(&id).expect("svid")
}

/// The operator of a cluster's tenants, as the chart configures it: `k8s/**` and `ns/**`.
async fn operator() -> (Stack, NexusSync) {
    operator_in("k8s/**", "ns/**").await
}

fn map(pairs: &[(&str, &str)]) -> SecretMap {
    let mut m = SecretMap::new();
    for (k, v) in pairs {
        m.insert(*k, (*v).to_owned());
    }
    m
}

fn given(
    path: &str,
    pairs: &[(&str, &str)],
    write_policy: WritePolicy,
    rev: &str,
) -> DesiredSecret {
    DesiredSecret {
        path: path.into(),
        values: SecretValues::Given(map(pairs)),
        scope: DesiredScope::default(),
        write_policy,
        source_revision: rev.into(),
    }
}

fn generated(path: &str, keys: &[&str], write_policy: WritePolicy) -> DesiredSecret {
    let gens: BTreeMap<String, Generator> = keys
        .iter()
        .map(|k| {
            let g = Generator {
                length: 32,
                alphabet: Alphabet::alphanumeric(),
            };
            ((*k).to_owned(), g)
        })
        .collect();
    DesiredSecret {
        path: path.into(),
        values: SecretValues::Generated(gens),
        scope: DesiredScope::default(),
        write_policy,
        // What the controller will pass: key names and generator settings, no value.
        source_revision: format!("generated:{}:32:alphanumeric", keys.join(",")),
    }
}

/// A reconcile as the controller runs it: the status's `applied` in, the new one out.
async fn reconcile(
    sync: &NexusSync,
    d: &DesiredSecret,
    status: &mut Option<Applied>,
) -> Result<SecretOutcome, SyncError> {
    let done = sync.apply_secret(d, status.as_ref()).await?;
    assert_eq!(done.applied.version, done.outcome.version());
    *status = Some(done.applied);
    Ok(done.outcome)
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

/// A value, read by the superuser.
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

/// A write by someone else (the superuser).
async fn put_as_admin(stack: &Stack, path: &str, pairs: &[(&str, &str)]) -> u64 {
    let theirs = PutSecretRequest {
        data: map(pairs),
        cas: None,
        scope: None,
    };
    let r: PutSecretResponse = stack
        .client
        .call(
            Method::PUT,
            &format!("/v1/secrets/data/{path}"),
            Some(&theirs),
        )
        .await
        .expect("put by the superuser");
    r.version.expect("version")
}

/// The operator's audit lines of `action` on `path` that were allowed: proof of what it
/// wrote (or read), beyond versions.
fn audited(stack: &Stack, action: &str, path: &str) -> usize {
    let operator = Builtin::Operator.id(stack.trust_domain());
    let log = std::fs::read_to_string(stack.data_dir.join("audit.log")).expect("audit log");
    log.lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|v| {
            v["caller"] == operator.as_str()
                && v["action"] == action
                && v["path"] == path
                && v["decision"] == "allow"
        })
        .count()
}

fn refused_with(e: &SyncError, want: ErrorCode) -> bool {
    matches!(e, SyncError::Refused { code, .. } if *code == want)
}

#[tokio::test(flavor = "multi_thread")]
async fn a_secret_is_created_and_a_second_reconcile_writes_nothing() {
    let (stack, sync) = operator().await;
    let d = given(
        "k8s/web/db",
        &[("pass", "first-value")],
        WritePolicy::Replace,
        "uid/1",
    );
    let mut status = None;
    assert_eq!(
        reconcile(&sync, &d, &mut status).await.unwrap(),
        SecretOutcome::Created { version: 1 }
    );
    assert_eq!(
        status,
        Some(Applied {
            version: 1,
            source_revision: Some("uid/1".into())
        })
    );
    assert_eq!(value(&stack, "k8s/web/db", "pass").await, "first-value");
    assert_eq!(audited(&stack, "secret.put", "k8s/web/db"), 1);
    let before = metadata(&stack, "k8s/web/db").await;

    for _ in 0..2 {
        assert_eq!(
            reconcile(&sync, &d, &mut status).await.unwrap(),
            SecretOutcome::Unchanged { version: 1 }
        );
    }
    assert_eq!(
        metadata(&stack, "k8s/web/db").await,
        before,
        "the metadata did not move"
    );
    assert_eq!(audited(&stack, "secret.put", "k8s/web/db"), 1);
    assert_eq!(audited(&stack, "secret.scope", "k8s/web/db"), 0);
    // It never read a value (it may not: see the tenancy test), so it tried none.
    assert_eq!(audited(&stack, "secret.get", "k8s/web/db"), 0);
    stack.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn replace_writes_a_changed_source_and_if_not_exists_leaves_the_value() {
    let (stack, sync) = operator().await;
    let mut status = None;
    let path = "k8s/web/api";
    reconcile(
        &sync,
        &given(path, &[("key", "v1")], WritePolicy::Replace, "rv1"),
        &mut status,
    )
    .await
    .unwrap();
    let changed = given(path, &[("key", "v2")], WritePolicy::Replace, "rv2");
    assert_eq!(
        reconcile(&sync, &changed, &mut status).await.unwrap(),
        SecretOutcome::Updated { version: 2 }
    );
    assert_eq!(value(&stack, path, "key").await, "v2");

    // Someone writes another version in Nexus: Replace puts the declared values back.
    assert_eq!(put_as_admin(&stack, path, &[("key", "theirs")]).await, 3);
    assert_eq!(
        reconcile(&sync, &changed, &mut status).await.unwrap(),
        SecretOutcome::Updated { version: 4 }
    );
    assert_eq!(value(&stack, path, "key").await, "v2");

    // IfNotExists: a changed source is not written over a live version.
    let keep = given(path, &[("key", "v3")], WritePolicy::IfNotExists, "rv3");
    assert_eq!(
        reconcile(&sync, &keep, &mut status).await.unwrap(),
        SecretOutcome::Unchanged { version: 4 }
    );
    assert_eq!(value(&stack, path, "key").await, "v2");
    assert_eq!(audited(&stack, "secret.put", path), 3);
    stack.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_scope_change_writes_a_scope_only_version_with_the_values_intact() {
    let (stack, sync) = operator().await;
    let td = stack.trust_domain().clone();
    let path = "k8s/web/api";
    let mut status = None;
    for policy in [WritePolicy::IfNotExists, WritePolicy::Replace] {
        let mut d = given(path, &[("key", "declared")], policy, "rv1");
        if status.is_none() {
            reconcile(&sync, &d, &mut status).await.unwrap();
        }
        let version = status.as_ref().unwrap().version;
        d.scope = DesiredScope {
            ttl: Some(Duration::from_secs(3600)),
            // The operator need not be among the readers: it never reads.
            allowed_spiffe_ids: vec![
                format!("spiffe://{td}/ns/web/**"),
                format!("spiffe://{td}/spike/pilot/role/superuser"),
            ],
            allowed_destinations: vec!["api.example.com".into()],
        };
        assert_eq!(
            reconcile(&sync, &d, &mut status).await.unwrap(),
            SecretOutcome::Updated {
                version: version + 1
            },
            "{policy:?}"
        );
        let m = metadata(&stack, path).await;
        assert_eq!(m.ttl_seconds, Some(3600));
        assert_eq!(m.allowed_spiffe_ids.len(), 2);
        assert_eq!(
            m.allowed_destinations,
            vec!["api.example.com:443".to_owned()]
        );
        assert_eq!(value(&stack, path, "key").await, "declared", "{policy:?}");
        // Once stored, the scope is no reason to write again.
        assert_eq!(
            reconcile(&sync, &d, &mut status).await.unwrap(),
            SecretOutcome::Unchanged {
                version: version + 1
            }
        );
        // Lifting the restriction is a scope change too.
        d.scope = DesiredScope::default();
        assert_eq!(
            reconcile(&sync, &d, &mut status).await.unwrap(),
            SecretOutcome::Updated {
                version: version + 2
            }
        );
        assert_eq!(value(&stack, path, "key").await, "declared");
    }
    // One put (the creation); every later version was a scope-only update.
    assert_eq!(audited(&stack, "secret.put", path), 1);
    assert_eq!(audited(&stack, "secret.scope", path), 4);
    stack.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_generated_value_is_generated_once_and_never_rotated() {
    let (stack, sync) = operator().await;
    for write_policy in [WritePolicy::IfNotExists, WritePolicy::Replace] {
        let path = format!("k8s/db/{write_policy:?}").to_lowercase();
        let d = generated(&path, &["password"], write_policy);
        let mut status = None;
        assert_eq!(
            reconcile(&sync, &d, &mut status).await.unwrap(),
            SecretOutcome::Created { version: 1 }
        );
        let first = value(&stack, &path, "password").await;
        assert_eq!(first.len(), 32);
        assert!(first.bytes().all(|b| b.is_ascii_alphanumeric()));
        assert_eq!(
            reconcile(&sync, &d, &mut status).await.unwrap(),
            SecretOutcome::Unchanged { version: 1 }
        );
        // A key added to the declaration: the operator cannot add it without reading the
        // other values, so it writes nothing (and says so under Replace).
        let more = generated(&path, &["password", "pin"], write_policy);
        let before = metadata(&stack, &path).await;
        match write_policy {
            WritePolicy::IfNotExists => assert_eq!(
                reconcile(&sync, &more, &mut status).await.unwrap(),
                SecretOutcome::Unchanged { version: 1 }
            ),
            WritePolicy::Replace => {
                let e = reconcile(&sync, &more, &mut status).await.unwrap_err();
                assert!(matches!(e, SyncError::Unsupported(_)), "{e:?}");
                assert_eq!(e.reason(), "UnsupportedChange");
            }
        }
        assert_eq!(metadata(&stack, &path).await, before);
        assert_eq!(value(&stack, &path, "password").await, first);
        // A version someone else wrote is adopted, not regenerated.
        put_as_admin(&stack, &path, &[("password", "rotated-by-hand")]).await;
        assert_eq!(
            reconcile(&sync, &d, &mut status).await.unwrap(),
            SecretOutcome::Unchanged { version: 2 }
        );
        assert_eq!(value(&stack, &path, "password").await, "rotated-by-hand");
    }
    stack.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_write_between_plan_and_write_is_a_conflict_and_overwrites_nothing() {
    let (stack, sync) = operator().await;
    let path = "k8s/web/race";
    let mut status = None;
    reconcile(
        &sync,
        &given(path, &[("k", "ours-1")], WritePolicy::Replace, "rv1"),
        &mut status,
    )
    .await
    .unwrap();
    let mut d = given(path, &[("k", "ours-2")], WritePolicy::Replace, "rv2");
    let plan = sync.plan_secret(&d, status.as_ref()).await.unwrap();
    assert!(plan.writes_values());

    // Someone else writes between the operator's plan and its write.
    assert_eq!(put_as_admin(&stack, path, &[("k", "theirs")]).await, 2);
    let e = sync.write_plan(plan).await.unwrap_err();
    assert!(matches!(e, SyncError::Conflict { .. }), "{e:?}");
    assert!(e.is_transient());
    assert!(e.to_string().contains(path), "{e}");
    assert_eq!(value(&stack, path, "k").await, "theirs");

    // The same for a scope-only update.
    let mut theirs = Some(Applied {
        version: 2,
        source_revision: Some("rv2".into()),
    });
    d.scope.ttl = Some(Duration::from_secs(600));
    let plan = sync.plan_secret(&d, theirs.as_ref()).await.unwrap();
    assert!(!plan.is_unchanged() && !plan.writes_values());
    assert_eq!(
        put_as_admin(&stack, path, &[("k", "theirs-again")]).await,
        3
    );
    let e = sync.write_plan(plan).await.unwrap_err();
    assert!(matches!(e, SyncError::Conflict { .. }), "{e:?}");
    assert_eq!(
        metadata(&stack, path).await.ttl_seconds.filter(|&t| t > 0),
        None
    );

    // The requeued reconcile reads again and writes.
    assert_eq!(
        reconcile(&sync, &d, &mut theirs).await.unwrap(),
        SecretOutcome::Updated { version: 4 }
    );
    assert_eq!(value(&stack, path, "k").await, "ours-2");
    stack.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn deletion_honours_retain_and_delete() {
    let (stack, sync) = operator().await;
    let mut status = None;
    for (v, rev) in [("a", "rv1"), ("b", "rv2")] {
        let d = given("k8s/web/gone", &[("k", v)], WritePolicy::Replace, rev);
        reconcile(&sync, &d, &mut status).await.unwrap();
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
    // Declared again after a deletion: no live version, so it is written anew.
    let d = given(
        "k8s/web/gone",
        &[("k", "c")],
        WritePolicy::IfNotExists,
        "rv3",
    );
    assert_eq!(
        reconcile(&sync, &d, &mut status).await.unwrap(),
        SecretOutcome::Created { version: 3 }
    );
    stack.stop().await;
}

/// A Nexus serving one tenant (`k8s/web/**`, `spiffe://<td>/ns/web/**`) refuses every escape
/// the operator identity tries directly: Nexus's bound holds even if the operator's own
/// tenancy checks were bypassed. (With the cluster-wide scope, `k8s/**` and `ns/**`, Nexus
/// bounds the operator to the tenants as a whole; which namespace gets which prefix is the
/// controller's check.)
#[tokio::test(flavor = "multi_thread")]
async fn tenancy_escapes_are_refused_by_nexus_itself() {
    let (stack, sync) = operator_in("k8s/web/**", "ns/web/**").await;
    let td = stack.trust_domain().clone();
    let web_ids = format!("spiffe://{td}/ns/web/**");
    // Within the scope: a secret and a policy.
    let mut status = None;
    let d = given("k8s/web/db", &[("k", "v")], WritePolicy::Replace, "rv1");
    reconcile(&sync, &d, &mut status).await.unwrap();
    let ok = DesiredPolicy {
        name: "web-read".into(),
        spiffe_id_pattern: web_ids.clone(),
        path_pattern: "k8s/web/**".into(),
        permissions: vec![Permission::Read],
    };
    assert_eq!(
        sync.apply_policy(&ok).await.unwrap(),
        PolicyOutcome::Created
    );

    // A path outside the tenant's prefix.
    for path in ["k8s/other/db", "apps/web/db"] {
        let e = sync
            .apply_secret(
                &given(path, &[("k", "v")], WritePolicy::Replace, "rv1"),
                None,
            )
            .await
            .unwrap_err();
        assert!(refused_with(&e, ErrorCode::OutsideScope), "{path}: {e:?}");
        assert!(!e.is_transient());
    }
    // Policies granting another namespace's IDs, `super` beyond the prefix, or anything to
    // SPIKE's own identities (the operator itself included).
    for (ids, paths, perms) in [
        (
            format!("spiffe://{td}/ns/other/**"),
            "k8s/web/**",
            vec![Permission::Read],
        ),
        (
            format!("spiffe://{td}/ns/*/**"),
            "k8s/web/**",
            vec![Permission::Read],
        ),
        (web_ids.clone(), "**", vec![Permission::Super]),
        (web_ids.clone(), "k8s/other/**", vec![Permission::Read]),
        (
            format!("spiffe://{td}/spike/operator"),
            "k8s/web/**",
            vec![Permission::Super],
        ),
    ] {
        let p = DesiredPolicy {
            name: "escape".into(),
            spiffe_id_pattern: ids.clone(),
            path_pattern: paths.into(),
            permissions: perms,
        };
        let e = sync.apply_policy(&p).await.unwrap_err();
        assert!(
            refused_with(&e, ErrorCode::OutsideScope),
            "{ids} {paths}: {e:?}"
        );
    }
    // A token for an agent outside the ID scope.
    let token = |agent: String| DesiredToken {
        secret: "k8s/web/db".into(),
        key: None,
        agent_id: agent,
        ttl: Duration::from_secs(600),
        action: TokenAction::Read,
        destinations: vec!["api.example.com".into()],
        path_prefixes: vec![],
        locations: vec![],
    };
    sync.mint_token(&token(format!("spiffe://{td}/ns/web/sa/agent")))
        .await
        .unwrap();
    for agent in [
        format!("spiffe://{td}/ns/other/sa/agent"),
        format!("spiffe://{td}/apps/agent"),
    ] {
        let e = sync.mint_token(&token(agent.clone())).await.unwrap_err();
        assert!(refused_with(&e, ErrorCode::OutsideScope), "{agent}: {e:?}");
    }
    // And it may not read a value, even in its scope.
    let raw = Nexus::new(stack.nexus_addr(), operator_source(&stack), TIMEOUT).unwrap();
    let read: Result<serde_json::Value, CliError> = raw
        .call(Method::GET, "/v1/secrets/data/k8s/web/db", None::<&()>)
        .await;
    assert!(
        matches!(
            read,
            Err(CliError::Api {
                code: ErrorCode::OutsideScope,
                ..
            })
        ),
        "{read:?}"
    );
    // Nothing of it happened.
    let escaped: Result<serde_json::Value, CliError> = stack
        .client
        .call(Method::GET, "/v1/policies/escape", None::<&()>)
        .await;
    assert!(escaped.is_err(), "{escaped:?}");
    for path in ["k8s/other/db", "apps/web/db"] {
        let m: Result<SecretMetadata, CliError> = stack
            .client
            .call(
                Method::GET,
                &format!("/v1/secrets/metadata/{path}"),
                None::<&()>,
            )
            .await;
        assert!(m.is_err(), "{path}: {m:?}");
    }
    stack.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn no_value_appears_in_an_error_or_its_debug_output() {
    let (stack, sync) = operator().await;
    let marker = "S3CR3T-MARKER-";
    let big = marker.repeat(70 * 1024 / marker.len() + 1);
    for d in [
        // Too large for Nexus: refused by it.
        given("k8s/web/big", &[("k", &big)], WritePolicy::Replace, "rv1"),
        // Outside the scope.
        given("apps/x", &[("k", marker)], WritePolicy::Replace, "rv1"),
        // Refused before sending.
        given("../x", &[("k", marker)], WritePolicy::Replace, "rv1"),
    ] {
        let e = sync.apply_secret(&d, None).await.unwrap_err();
        for text in [e.to_string(), format!("{e:?}"), format!("{d:?}")] {
            assert!(!text.contains(marker), "{text}");
        }
    }
    stack.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn policies_are_created_left_alone_when_identical_replaced_and_deleted() {
    let (stack, sync) = operator().await;
    let ns_id = format!("spiffe://{}/ns/web/**", stack.trust_domain());
    let mut p = DesiredPolicy {
        name: "web-read".into(),
        spiffe_id_pattern: ns_id,
        path_pattern: "k8s/web/**".into(),
        permissions: vec![Permission::Read, Permission::List],
    };
    assert_eq!(sync.apply_policy(&p).await.unwrap(), PolicyOutcome::Created);
    let writes = audited(&stack, "policy.put", "web-read");
    assert_eq!(writes, 1);
    p.permissions.reverse();
    assert_eq!(
        sync.apply_policy(&p).await.unwrap(),
        PolicyOutcome::Unchanged
    );
    assert_eq!(audited(&stack, "policy.put", "web-read"), writes);

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
    let body = serde_json::json!({
        "spiffeIdPattern": other_ns, "pathPattern": "k8s/x/**", "permissions": ["read"],
    });
    let _: serde_json::Value = stack
        .client
        .call(Method::PUT, "/v1/policies/raced", Some(&body))
        .await
        .expect("policy by the superuser");
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
    let (stack, sync) = operator().await;
    let td = stack.trust_domain().clone();
    let mut d = given(
        "k8s/agents/llm-key",
        &[("value", "sk-upstream")],
        WritePolicy::Replace,
        "rv1",
    );
    d.scope.allowed_destinations = vec!["api.example.com".into()];
    sync.apply_secret(&d, None).await.unwrap();
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
    let (stack, sync) = operator().await;
    let d = given("k8s/web/db", &[("k", "v")], WritePolicy::Replace, "rv1");
    sync.apply_secret(&d, None).await.unwrap();
    stack.stop().await;
    let e = sync.apply_secret(&d, None).await.unwrap_err();
    assert!(matches!(e, SyncError::Unavailable { .. }), "{e:?}");
    assert!(e.is_transient());
    let e = sync
        .delete_policy("x", DeletionPolicy::Delete)
        .await
        .unwrap_err();
    assert!(matches!(e, SyncError::Unavailable { .. }), "{e:?}");
}
