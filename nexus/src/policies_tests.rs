//! Tests of the policy store and its in-memory engine.

use std::sync::Arc;
use std::time::Duration;

use spike_core::api::PutPolicyRequest;
use spike_core::crypto::RECORD_TAG_LEN;
use spike_core::error::ErrorCode;
use spike_core::id::SpiffeId;
use spike_core::path::SecretPath;
use spike_core::policy::Permission;
use spike_store::Batch;

use super::{POLICIES, Policies, PolicyAdmin};
use crate::fixtures::{Engine, code};

const TEST_TIMEOUT: Duration = Duration::from_secs(60);

type Fixture = Engine<Policies>;

fn fixture() -> Fixture {
    Engine::new(Policies::new)
}

fn req(id: &str, path: &str, perms: &[Permission]) -> PutPolicyRequest {
    PutPolicyRequest {
        spiffe_id_pattern: id.to_owned(),
        path_pattern: path.to_owned(),
        permissions: perms.to_vec(),
        create_only: false,
    }
}

fn id(s: &str) -> SpiffeId {
    SpiffeId::new(s).unwrap()
}

fn sp(s: &str) -> SecretPath {
    SecretPath::parse(s).unwrap()
}

const WEB: &str = "spiffe://spike.dev/ns/web";

impl Fixture {
    async fn rows(&self) -> Vec<(Vec<u8>, Vec<u8>)> {
        self.store.scan(POLICIES, b"", None, 10_000).await.unwrap()
    }

    async fn raw(&self, name: &str) -> Vec<u8> {
        self.store
            .get(POLICIES, name.as_bytes())
            .await
            .unwrap()
            .unwrap()
    }

    async fn overwrite(&self, name: &str, value: Vec<u8>) {
        let mut b = Batch::new();
        b.put(POLICIES, name.as_bytes().to_vec(), value);
        self.store.commit(b).await.unwrap();
    }

    fn allows(&self, caller: &str, path: &str, perm: Permission) -> bool {
        self.engine.engine().allows(&id(caller), &sp(path), perm)
    }

    fn is_admin(&self, caller: &str) -> bool {
        self.engine.is_admin(&id(caller))
    }
}

#[tokio::test]
async fn put_get_list_delete_round_trip() {
    let f = fixture();
    let r = f
        .engine
        .put(
            &f.keys,
            PolicyAdmin::Full,
            "web",
            req(WEB, "apps/web/**", &[Permission::Read]),
        )
        .await
        .unwrap();
    assert!(r.created && !r.unchanged);

    let got = f
        .engine
        .get(&f.keys, PolicyAdmin::Full, "web")
        .await
        .unwrap();
    assert_eq!(got.name, "web");
    assert_eq!(got.spiffe_id_pattern, WEB);
    assert_eq!(got.path_pattern, "apps/web/**");
    assert_eq!(got.permissions, vec![Permission::Read]);
    assert_eq!(got.created_at, got.updated_at);

    // Identical (permissions repeated count once): unchanged, nothing written.
    let before = f.rows().await;
    let r = f
        .engine
        .put(
            &f.keys,
            PolicyAdmin::Full,
            "web",
            req(WEB, "apps/web/**", &[Permission::Read, Permission::Read]),
        )
        .await
        .unwrap();
    assert!(!r.created && r.unchanged);
    assert_eq!(f.rows().await, before);
    assert_eq!(
        f.engine
            .get(&f.keys, PolicyAdmin::Full, "web")
            .await
            .unwrap(),
        got
    );

    // A real change keeps the creation time.
    let r = f
        .engine
        .put(
            &f.keys,
            PolicyAdmin::Full,
            "web",
            req(WEB, "apps/web/**", &[Permission::List, Permission::Read]),
        )
        .await
        .unwrap();
    assert!(!r.created && !r.unchanged);
    let changed = f
        .engine
        .get(&f.keys, PolicyAdmin::Full, "web")
        .await
        .unwrap();
    assert_eq!(changed.created_at, got.created_at);
    assert_eq!(changed.permissions.len(), 2);
    assert!(changed.permissions.contains(&Permission::List));

    f.engine
        .put(
            &f.keys,
            PolicyAdmin::Full,
            "api",
            req(WEB, "apps/api/**", &[Permission::Write]),
        )
        .await
        .unwrap();
    let names: Vec<String> = f
        .engine
        .list(&f.keys, PolicyAdmin::Full)
        .await
        .unwrap()
        .into_iter()
        .map(|p| p.name)
        .collect();
    assert_eq!(names, vec!["api", "web"]);

    f.engine
        .delete(&f.keys, PolicyAdmin::Full, "web")
        .await
        .unwrap();
    assert_eq!(
        code(f.engine.get(&f.keys, PolicyAdmin::Full, "web").await),
        ErrorCode::NotFound
    );
    assert_eq!(
        code(f.engine.delete(&f.keys, PolicyAdmin::Full, "web").await),
        ErrorCode::NotFound
    );
    assert_eq!(
        f.engine
            .list(&f.keys, PolicyAdmin::Full)
            .await
            .unwrap()
            .len(),
        1
    );
}

#[tokio::test]
async fn invalid_policies_are_refused_and_nothing_is_stored() {
    let f = fixture();
    let good = || req(WEB, "apps/**", &[Permission::Read]);
    let long_name = "n".repeat(129);
    let cases: Vec<(&str, PutPolicyRequest)> = vec![
        // Names.
        ("", good()),
        ("bad name", good()),
        ("a/b", good()),
        (".", good()),
        ("..", good()),
        (&long_name, good()),
        // ID patterns.
        ("p", req("not-a-spiffe-id", "apps/**", &[Permission::Read])),
        (
            "p",
            req("spiffe://*.dev/ns/web", "apps/**", &[Permission::Read]),
        ),
        (
            "p",
            req("spiffe://spike.dev/", "apps/**", &[Permission::Read]),
        ),
        (
            "p",
            req("spiffe://spike.dev/ns/a**", "apps/**", &[Permission::Read]),
        ),
        // Aimed at SPIKE's own identities.
        (
            "p",
            req("spiffe://spike.dev/spike/**", "**", &[Permission::Super]),
        ),
        (
            "p",
            req("spiffe://spike.dev/spike/nexus", "**", &[Permission::Read]),
        ),
        // Path patterns.
        ("p", req(WEB, "", &[Permission::Read])),
        ("p", req(WEB, "/apps", &[Permission::Read])),
        ("p", req(WEB, "apps/", &[Permission::Read])),
        ("p", req(WEB, "apps//x", &[Permission::Read])),
        ("p", req(WEB, "apps/../x", &[Permission::Read])),
        ("p", req(WEB, "a**", &[Permission::Read])),
        ("p", req(WEB, "a b", &[Permission::Read])),
        // Permissions.
        ("p", req(WEB, "apps/**", &[])),
        ("p", req(WEB, "apps/**", &[Permission::Resolve])),
        (
            "p",
            req(
                "spiffe://spike.dev/spike/gateway/egress",
                "apps/**",
                &[Permission::Read],
            ),
        ),
    ];
    for (name, r) in cases {
        let what = format!("{name:?} {r:?}");
        assert_eq!(
            code(f.engine.put(&f.keys, PolicyAdmin::Full, name, r).await),
            ErrorCode::InvalidPolicy,
            "{what}"
        );
    }
    assert!(f.rows().await.is_empty());
    assert!(f.engine.engine().policies().is_empty());

    // An invalid update leaves the stored policy as it was.
    f.engine
        .put(&f.keys, PolicyAdmin::Full, "web", good())
        .await
        .unwrap();
    let before = f.rows().await;
    assert_eq!(
        code(
            f.engine
                .put(&f.keys, PolicyAdmin::Full, "web", req(WEB, "/apps", &[]))
                .await
        ),
        ErrorCode::InvalidPolicy
    );
    assert_eq!(f.rows().await, before);
    assert!(f.allows(WEB, "apps/x", Permission::Read));
}

/// Names come from the URL: an impossible one is a client error, never a 500.
#[tokio::test]
async fn get_and_delete_reject_impossible_names() {
    let f = fixture();
    for name in [
        "n".repeat(5000),
        String::new(),
        "bad name".to_owned(),
        "..".to_owned(),
    ] {
        assert_eq!(
            code(f.engine.get(&f.keys, PolicyAdmin::Full, &name).await),
            ErrorCode::InvalidPolicy,
            "{name:.20}"
        );
        assert_eq!(
            code(f.engine.delete(&f.keys, PolicyAdmin::Full, &name).await),
            ErrorCode::InvalidPolicy,
            "{name:.20}"
        );
    }
}

#[tokio::test]
async fn the_engine_follows_every_change() {
    let f = fixture();
    assert!(
        !f.allows(WEB, "apps/web/db", Permission::Read),
        "default deny"
    );

    f.engine
        .put(
            &f.keys,
            PolicyAdmin::Full,
            "web",
            req(WEB, "apps/web/**", &[Permission::Read]),
        )
        .await
        .unwrap();
    assert!(f.allows(WEB, "apps/web/db", Permission::Read));
    assert!(f.allows(WEB, "apps/web", Permission::Read));
    assert!(!f.allows(WEB, "apps/web/db", Permission::Write));
    assert!(!f.allows(WEB, "apps/webx", Permission::Read));
    assert!(!f.allows(WEB, "apps/api/db", Permission::Read));
    assert!(!f.allows("spiffe://spike.dev/ns/api", "apps/web/db", Permission::Read));

    f.engine
        .put(
            &f.keys,
            PolicyAdmin::Full,
            "web",
            req(WEB, "apps/web/**", &[Permission::Read, Permission::Write]),
        )
        .await
        .unwrap();
    assert!(f.allows(WEB, "apps/web/db", Permission::Write));

    // A restarted Nexus denies until it reloads from the store.
    let fresh = Policies::new(f.store.clone());
    assert!(
        !fresh
            .engine()
            .allows(&id(WEB), &sp("apps/web/db"), Permission::Read)
    );
    fresh.reload(&f.keys).await.unwrap();
    assert!(
        fresh
            .engine()
            .allows(&id(WEB), &sp("apps/web/db"), Permission::Write)
    );

    f.engine
        .delete(&f.keys, PolicyAdmin::Full, "web")
        .await
        .unwrap();
    assert!(!f.allows(WEB, "apps/web/db", Permission::Read));
    assert!(f.engine.engine().policies().is_empty());
}

#[tokio::test]
async fn gateway_policies_grant_resolve_to_gateways_only() {
    let f = fixture();
    f.engine
        .put(
            &f.keys,
            PolicyAdmin::Full,
            "egress",
            req(
                "spiffe://spike.dev/spike/gateway/*",
                "**",
                &[Permission::Resolve],
            ),
        )
        .await
        .unwrap();
    let gw = "spiffe://spike.dev/spike/gateway/egress";
    assert!(f.allows(gw, "apps/x", Permission::Resolve));
    assert!(!f.allows(gw, "apps/x", Permission::Read));
    assert!(!f.is_admin(gw));
}

#[tokio::test]
async fn is_admin_needs_super_on_every_path() {
    let f = fixture();
    let admin = "spiffe://spike.dev/ns/admin/alice";
    assert!(!f.is_admin(admin));

    let all_but_super = [
        Permission::Read,
        Permission::Write,
        Permission::List,
        Permission::Delete,
        Permission::Token,
        Permission::Cipher,
    ];
    f.engine
        .put(
            &f.keys,
            PolicyAdmin::Full,
            "almost",
            req("spiffe://spike.dev/ns/admin/*", "**", &all_but_super),
        )
        .await
        .unwrap();
    f.engine
        .put(
            &f.keys,
            PolicyAdmin::Full,
            "narrow",
            req(
                "spiffe://spike.dev/ns/admin/*",
                "db/**",
                &[Permission::Super],
            ),
        )
        .await
        .unwrap();
    f.engine
        .put(
            &f.keys,
            PolicyAdmin::Full,
            "star",
            req("spiffe://spike.dev/ns/admin/*", "*", &[Permission::Super]),
        )
        .await
        .unwrap();
    assert!(!f.is_admin(admin), "super on part of the tree is not admin");

    f.engine
        .put(
            &f.keys,
            PolicyAdmin::Full,
            "admins",
            req("spiffe://spike.dev/ns/admin/*", "**", &[Permission::Super]),
        )
        .await
        .unwrap();
    assert!(f.is_admin(admin));
    assert!(!f.is_admin("spiffe://spike.dev/ns/web"));
    assert!(!f.is_admin("spiffe://spike.dev/ns/admin/alice/x"));
    assert!(!f.is_admin("spiffe://other.dev/ns/admin/alice"));

    f.engine
        .delete(&f.keys, PolicyAdmin::Full, "admins")
        .await
        .unwrap();
    assert!(!f.is_admin(admin));
}

/// A workload pattern as broad as `spiffe://td/**` must not make SPIKE's own identities
/// (gateways, unknown reserved IDs) policy administrators: the engine never applies workload
/// policies to them, and `is_admin` must agree with it.
#[tokio::test]
async fn is_admin_never_applies_workload_policies_to_reserved_ids() {
    let f = fixture();
    f.engine
        .put(
            &f.keys,
            PolicyAdmin::Full,
            "everyone",
            req("spiffe://spike.dev/**", "**", &[Permission::Super]),
        )
        .await
        .unwrap();
    assert!(f.is_admin("spiffe://spike.dev/ns/anyone"));
    for reserved in [
        "spiffe://spike.dev/spike/gateway/egress",
        "spiffe://spike.dev/spike/unknown",
        "spiffe://spike.dev/spike/keeper/01",
        "spiffe://spike.dev/spike",
        "spiffe://spike.dev/spike/pilot/role/superuser",
    ] {
        assert!(
            !f.allows(reserved, "apps/x", Permission::Super),
            "{reserved}"
        );
        assert!(!f.is_admin(reserved), "{reserved}");
    }
}

#[tokio::test]
async fn a_tampered_policy_record_fails_closed() {
    let f = fixture();
    f.engine
        .put(
            &f.keys,
            PolicyAdmin::Full,
            "web",
            req(WEB, "apps/**", &[Permission::Read]),
        )
        .await
        .unwrap();
    let good = f.raw("web").await;

    for at in [good.len() - 3, RECORD_TAG_LEN + 2, 1] {
        let mut bad = good.clone();
        bad[at] ^= 0x04;
        f.overwrite("web", bad).await;
        assert_eq!(code(f.engine.reload(&f.keys).await), ErrorCode::Internal);
        assert_eq!(
            code(f.engine.get(&f.keys, PolicyAdmin::Full, "web").await),
            ErrorCode::Internal
        );
        assert_eq!(
            code(f.engine.list(&f.keys, PolicyAdmin::Full).await),
            ErrorCode::Internal
        );
        // A fresh Nexus refuses to build an engine from it.
        let fresh = Policies::new(f.store.clone());
        assert_eq!(code(fresh.reload(&f.keys).await), ErrorCode::Internal);
        assert!(fresh.engine().policies().is_empty());
    }
    // The record cannot be replaced while it does not verify.
    assert_eq!(
        code(
            f.engine
                .put(
                    &f.keys,
                    PolicyAdmin::Full,
                    "web",
                    req(WEB, "**", &[Permission::Super])
                )
                .await
        ),
        ErrorCode::Internal
    );

    f.overwrite("web", good.clone()).await;
    f.engine.reload(&f.keys).await.unwrap();
    assert!(f.allows(WEB, "apps/x", Permission::Read));

    // A genuine record moved to another name does not verify either.
    f.overwrite("stolen", good).await;
    assert_eq!(code(f.engine.reload(&f.keys).await), ErrorCode::Internal);
}

/// Revoking a policy must take effect even when the reload after the write fails (here on
/// another, tampered record): the engine may not keep serving the revoked grant.
#[tokio::test]
async fn a_failed_reload_does_not_keep_revoked_grants() {
    let f = fixture();
    f.engine
        .put(
            &f.keys,
            PolicyAdmin::Full,
            "web",
            req(WEB, "apps/**", &[Permission::Read]),
        )
        .await
        .unwrap();
    f.engine
        .put(
            &f.keys,
            PolicyAdmin::Full,
            "other",
            req("spiffe://spike.dev/ns/other", "x/**", &[Permission::Read]),
        )
        .await
        .unwrap();
    assert!(f.allows(WEB, "apps/x", Permission::Read));

    let mut bad = f.raw("other").await;
    bad[RECORD_TAG_LEN + 1] ^= 0x01;
    f.overwrite("other", bad).await;

    // The delete is committed, but the reload fails on "other".
    assert_eq!(
        code(f.engine.delete(&f.keys, PolicyAdmin::Full, "web").await),
        ErrorCode::Internal
    );
    assert!(
        f.engine
            .get(&f.keys, PolicyAdmin::Full, "web")
            .await
            .is_err()
    );
    assert!(
        !f.allows(WEB, "apps/x", Permission::Read),
        "the revoked policy still grants"
    );

    // Deleting the bad record (it need not verify to be removed) brings the engine back.
    f.engine
        .delete(&f.keys, PolicyAdmin::Full, "other")
        .await
        .unwrap();
    assert!(f.engine.engine().policies().is_empty());
    f.engine
        .put(
            &f.keys,
            PolicyAdmin::Full,
            "web",
            req(WEB, "apps/**", &[Permission::Read]),
        )
        .await
        .unwrap();
    assert!(f.allows(WEB, "apps/x", Permission::Read));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_puts_of_one_name_create_it_once() {
    let f = Arc::new(fixture());
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..10 {
        let f = f.clone();
        tasks.spawn(async move {
            let path = format!("apps/a{i}/**");
            f.engine
                .put(
                    &f.keys,
                    PolicyAdmin::Full,
                    "race",
                    req(WEB, &path, &[Permission::Read]),
                )
                .await
                .unwrap()
        });
    }
    let results = tokio::time::timeout(TEST_TIMEOUT, tasks.join_all())
        .await
        .expect("puts did not finish");
    assert_eq!(results.iter().filter(|r| r.created).count(), 1);
    assert!(results.iter().all(|r| !r.unchanged));
    assert_eq!(f.rows().await.len(), 1);
    // The engine holds the policy the store holds.
    let stored = f
        .engine
        .get(&f.keys, PolicyAdmin::Full, "race")
        .await
        .unwrap();
    let engine = f.engine.engine();
    assert_eq!(engine.policies().len(), 1);
    assert_eq!(
        engine.policies()[0].path_pattern().as_str(),
        stored.path_pattern
    );
}

#[tokio::test]
async fn create_only_refuses_an_existing_name_and_changes_nothing() {
    let f = fixture();
    let create = |path: &str| PutPolicyRequest {
        create_only: true,
        ..req(WEB, path, &[Permission::Read])
    };
    let r = f
        .engine
        .put(&f.keys, PolicyAdmin::Full, "web", create("apps/web/**"))
        .await;
    assert!(r.unwrap().created);
    let before = f.raw("web").await;
    for path in ["apps/web/**", "apps/other/**"] {
        let e = f
            .engine
            .put(&f.keys, PolicyAdmin::Full, "web", create(path))
            .await
            .unwrap_err();
        assert_eq!(e.code(), ErrorCode::AlreadyExists, "{path}");
        assert!(e.0.message.contains("--replace"), "{}", e.0);
    }
    assert_eq!(f.raw("web").await, before);
    assert!(!f.allows(&format!("{WEB}/a"), "apps/other/x", Permission::Read));
    // Without create_only the same request replaces it.
    let r = f
        .engine
        .put(
            &f.keys,
            PolicyAdmin::Full,
            "web",
            req(WEB, "apps/other/**", &[Permission::Read]),
        )
        .await
        .unwrap();
    assert!(!r.created && !r.unchanged);
}

/// The operator's scope of the Kubernetes examples: paths under `k8s/`, IDs of namespaces.
fn scope() -> spike_core::admin_scope::AdminScope {
    let td = spike_core::id::TrustDomain::new("spike.dev").unwrap();
    spike_core::admin_scope::AdminScope::parse("k8s/**", "spiffe://spike.dev/ns/**", &td).unwrap()
}

#[tokio::test]
async fn a_scoped_admin_writes_only_within_its_scope_and_changes_nothing_else() {
    let f = fixture();
    let s = scope();
    let op = PolicyAdmin::Scoped(&s);
    // An administrator's policy, outside the scope.
    f.engine
        .put(
            &f.keys,
            PolicyAdmin::Full,
            "admins",
            req(WEB, "**", &[Permission::Super]),
        )
        .await
        .unwrap();
    let inside = req(
        "spiffe://spike.dev/ns/a/**",
        "k8s/a/**",
        &[Permission::Read],
    );
    assert!(
        f.engine
            .put(&f.keys, op, "a-read", inside)
            .await
            .unwrap()
            .created
    );
    let before = f.rows().await;
    for (paths, ids, perms) in [
        (
            "apps/**",
            "spiffe://spike.dev/ns/a/**",
            vec![Permission::Read],
        ),
        ("**", "spiffe://spike.dev/ns/a/**", vec![Permission::Read]),
        (
            "k8s*/x",
            "spiffe://spike.dev/ns/a/**",
            vec![Permission::Read],
        ),
        ("*/x", "spiffe://spike.dev/ns/a/**", vec![Permission::Read]),
        ("**", "spiffe://spike.dev/ns/a/**", vec![Permission::Super]),
        ("k8s/a/**", "spiffe://spike.dev/**", vec![Permission::Read]),
        (
            "k8s/a/**",
            "spiffe://spike.dev/*/a/**",
            vec![Permission::Read],
        ),
        // Gateway policies, SPIKE's own IDs and `resolve`: outside every scope.
        (
            "k8s/a/**",
            "spiffe://spike.dev/spike/gateway/g",
            vec![Permission::Resolve],
        ),
        (
            "k8s/**",
            "spiffe://spike.dev/spike/operator",
            vec![Permission::Super],
        ),
        (
            "k8s/a/**",
            "spiffe://spike.dev/ns/a/**",
            vec![Permission::Resolve],
        ),
    ] {
        let r = req(ids, paths, &perms);
        assert_eq!(
            code(f.engine.put(&f.keys, op, "escape", r).await),
            ErrorCode::OutsideScope,
            "{paths} {ids}"
        );
    }
    // A malformed pattern is still a validation error.
    let bad = req("spiffe://spike.dev/ns/a/**", "/k8s", &[Permission::Read]);
    assert_eq!(
        code(f.engine.put(&f.keys, op, "bad", bad).await),
        ErrorCode::InvalidPolicy
    );
    // Replacing or deleting the administrator's policy: refused, even with an in-scope body.
    let in_scope = req(
        "spiffe://spike.dev/ns/a/**",
        "k8s/a/**",
        &[Permission::List],
    );
    assert_eq!(
        code(f.engine.put(&f.keys, op, "admins", in_scope).await),
        ErrorCode::OutsideScope
    );
    assert_eq!(
        code(f.engine.delete(&f.keys, op, "admins").await),
        ErrorCode::OutsideScope
    );
    assert_eq!(
        code(f.engine.get(&f.keys, op, "admins").await),
        ErrorCode::OutsideScope
    );
    assert_eq!(f.rows().await, before, "a refusal changed the store");
    assert!(f.is_admin(WEB));
    // It sees only its own policies, and may delete them.
    let seen: Vec<String> = f
        .engine
        .list(&f.keys, op)
        .await
        .unwrap()
        .into_iter()
        .map(|p| p.name)
        .collect();
    assert_eq!(seen, ["a-read"]);
    assert_eq!(
        f.engine
            .list(&f.keys, PolicyAdmin::Full)
            .await
            .unwrap()
            .len(),
        2
    );
    f.engine.delete(&f.keys, op, "a-read").await.unwrap();
    assert!(!f.allows("spiffe://spike.dev/ns/a/sa/x", "k8s/a/db", Permission::Read));
}
