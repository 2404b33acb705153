//! The Kubernetes operator's identity against a real Nexus: it holds exactly its scope
//! (`operator.path_scope`, `operator.spiffe_id_scope`), never more. Every escape a compromised
//! operator could try directly is refused with `403 outside_scope`, changes nothing, and is
//! audited with that reason.

use std::process::Output;

use spike_agent::PemFiles;
use spike_e2e::{Cluster, text};

const TEAM_A: &str = "spiffe://spike.test/ns/team-a/**";

fn policies_seen(c: &Cluster, who: &PemFiles) -> serde_json::Value {
    let out = c.spike(who, &["policy", "list", "-o", "json"]);
    assert!(out.status.success(), "{}", text(&out));
    serde_json::from_slice(&out.stdout).unwrap()
}

fn assert_outside_scope(out: &Output, what: &str) {
    assert_eq!(out.status.code(), Some(4), "{what}: {}", text(out));
    assert!(text(out).contains("outside_scope"), "{what}: {}", text(out));
}

#[test]
fn the_operator_holds_exactly_its_scope_and_every_escape_is_refused() {
    let mut c = Cluster::new(3);
    c.nexus_extra_args.extend(
        [
            "--operator-path-scope",
            "k8s/**",
            "--operator-spiffe-id-scope",
            TEAM_A,
        ]
        .map(String::from),
    );
    c.start_all(2);
    let admin = c.pki.svid("/spike/pilot/role/superuser");
    let op = c.pki.svid("/spike/operator");

    // An administrator's policies outside the operator's scope.
    let out = c.policy_create(
        &admin,
        "web-read",
        "spiffe://spike.test/ns/web/**",
        "apps/web/**",
        "read",
    );
    assert!(out.status.success(), "{}", text(&out));
    let out = c.policy_create(
        &admin,
        "k8s-b",
        "spiffe://spike.test/ns/team-b/**",
        "k8s/team-b/**",
        "read",
    );
    assert!(out.status.success(), "{}", text(&out));

    // Within the scope: a policy, and a secret the policy lets team A read.
    let out = c.policy_create(&op, "team-a-read", TEAM_A, "k8s/team-a/**", "read,list");
    assert!(out.status.success(), "{}", text(&out));
    let out = c.spike(&op, &["secret", "put", "k8s/team-a/db", "pass=e2e-scope"]);
    assert!(out.status.success(), "{}", text(&out));
    let app = c.pki.svid("/ns/team-a/sa/app");
    let out = c.spike(&app, &["secret", "get", "k8s/team-a/db", "pass"]);
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "e2e-scope");
    // Its own data permissions: metadata and listing yes, values never.
    let out = c.spike(&op, &["secret", "metadata", "k8s/team-a/db"]);
    assert!(out.status.success(), "{}", text(&out));
    let out = c.spike(&op, &["secret", "list", "-o", "json"]);
    assert!(text(&out).contains("k8s/team-a/db"), "{}", text(&out));
    assert_outside_scope(
        &c.spike(&op, &["secret", "get", "k8s/team-a/db"]),
        "read a value",
    );

    let before = policies_seen(&c, &admin);
    let mut refusals = 0;
    let mut refused = |out: Output, what: &str| {
        assert_outside_scope(&out, what);
        refusals += 1;
    };
    // Paths outside P.
    for paths in ["apps/**", "**", "k8s*/x", "*/db"] {
        refused(c.policy_create(&op, "escape", TEAM_A, paths, "read"), paths);
    }
    // IDs outside Q: another namespace, the whole trust domain, SPIKE's own IDs (itself).
    for ids in [
        "spiffe://spike.test/ns/team-b/**",
        "spiffe://spike.test/ns/*/**",
        "spiffe://spike.test/**",
        "spiffe://spike.test/spike/operator",
        "spiffe://spike.test/spike/**",
    ] {
        refused(
            c.policy_create(&op, "escape", ids, "k8s/team-a/**", "read"),
            ids,
        );
    }
    // More for itself, or a full administrator (super on every path), or a gateway grant.
    refused(
        c.policy_create(
            &op,
            "self",
            "spiffe://spike.test/spike/operator",
            "k8s/**",
            "super",
        ),
        "grant itself super",
    );
    refused(
        c.policy_create(&op, "admins", TEAM_A, "**", "super"),
        "make an administrator",
    );
    refused(
        c.policy_create(&op, "gw", TEAM_A, "k8s/team-a/**", "resolve"),
        "resolve",
    );
    // An administrator's policies: not replaced, not deleted, not even read.
    let replace = c.spike(
        &op,
        &[
            "policy",
            "create",
            "k8s-b",
            "--spiffe-id-pattern",
            TEAM_A,
            "--path-pattern",
            "k8s/team-a/**",
            "--permissions",
            "read",
            "--replace",
        ],
    );
    refused(replace, "replace an administrator's policy");
    refused(
        c.spike(&op, &["policy", "delete", "k8s-b"]),
        "delete an administrator's policy",
    );
    refused(
        c.spike(&op, &["policy", "get", "web-read"]),
        "read an administrator's policy",
    );
    // Secrets outside P.
    refused(
        c.spike(&op, &["secret", "put", "apps/web/db", "pass=x"]),
        "write outside P",
    );

    // Reference tokens: an agent within Q gets one; one outside Q would be handed team A's
    // secret (through a gateway) as surely as by a policy, so it is refused the same way.
    let mint = |agent: &str| {
        c.spike(
            &op,
            &[
                "token",
                "create",
                "--secret",
                "k8s/team-a/db",
                "--spiffe-id",
                agent,
                "--destination",
                "api.example.com",
                "--ttl",
                "10m",
                "--action",
                "read",
            ],
        )
    };
    let out = mint("spiffe://spike.test/ns/team-a/sa/agent");
    assert!(out.status.success(), "{}", text(&out));
    for agent in [
        "spiffe://spike.test/ns/team-b/sa/agent",
        "spiffe://spike.test/apps/agent",
        "spiffe://spike.test/ns/*/sa/agent",
        "spiffe://spike.test/**",
    ] {
        refused(mint(agent), agent);
    }

    // Nothing changed; the operator sees only its own policy.
    assert_eq!(policies_seen(&c, &admin), before);
    let mine = policies_seen(&c, &op).to_string();
    assert!(
        mine.contains("team-a-read") && !mine.contains("k8s-b") && !mine.contains("web-read"),
        "{mine}"
    );
    let out = c.spike(&admin, &["secret", "get", "apps/web/db"]);
    assert_eq!(out.status.code(), Some(3), "{}", text(&out));

    // The audit log tells each refusal's true reason.
    let log = std::fs::read_to_string(c.dir.path().join("audit.log")).unwrap();
    let denied = log
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .filter(|r| {
            r["caller"] == "spiffe://spike.test/spike/operator"
                && r["decision"] == "deny"
                && r["reason"] == "outside_scope"
        })
        .count();
    // The value read earlier is the one refusal before `refused` started counting.
    assert_eq!(denied, refusals + 1, "{log}");
}
