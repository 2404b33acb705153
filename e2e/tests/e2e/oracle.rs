//! What Nexus tells callers who may not read: a writer without `read` cannot test guesses of a
//! secret's value or learn its version, and a workload learns from `/v1/status` only whether
//! Nexus serves, not why not.

use std::process::Output;

use spike_agent::PemFiles;
use spike_e2e::{Cluster, text};

/// `spike status -o json` while sealed: the document, and exit status 5.
fn sealed_status(out: &Output) -> serde_json::Value {
    assert_eq!(out.status.code(), Some(5), "{}", text(out));
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("{e}: {}", text(out)))
}

fn json(out: &Output) -> serde_json::Value {
    assert!(out.status.success(), "{}", text(out));
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("{e}: {}", text(out)))
}

/// Creates policy `name` granting `permissions` on `paths` to the IDs under `ids`.
fn grant(c: &Cluster, admin: &PemFiles, name: &str, ids: &str, paths: &str, permissions: &str) {
    let ids = format!("spiffe://spike.test{ids}");
    let out = c.spike(
        admin,
        &[
            "policy",
            "create",
            name,
            "--spiffe-id-pattern",
            &ids,
            "--path-pattern",
            paths,
            "--permissions",
            permissions,
        ],
    );
    assert!(out.status.success(), "{}", text(&out));
}

/// A cluster holding `apps/pay/key` (pass=hunter2, at version 3) and a workload that may
/// write and delete under `apps/pay` but neither read nor list there.
fn cluster_with_blind_writer() -> (Cluster, PemFiles, PemFiles) {
    let mut c = Cluster::new(3);
    c.start_all(2);
    let admin = c.pki.svid("/spike/pilot/role/superuser");
    for pass in ["one", "two", "hunter2"] {
        let out = c.spike(
            &admin,
            &["secret", "put", "apps/pay/key", &format!("pass={pass}")],
        );
        assert!(out.status.success(), "{}", text(&out));
    }
    grant(
        &c,
        &admin,
        "pay-writer",
        "/ns/ci/**",
        "apps/pay/**",
        "write,delete",
    );
    let writer = c.pki.svid("/ns/ci/sa/deployer");
    (c, admin, writer)
}

/// The guess oracle: put the guessed value and look at the answer (before: `unchanged` at the
/// current version for a right guess), by single put and through `spike seed`'s batches.
#[test]
fn writer_without_read_cannot_confirm_a_guess() {
    let (c, admin, writer) = cluster_with_blind_writer();
    let put = |value: &str| {
        json(&c.spike(
            &writer,
            &[
                "secret",
                "put",
                "apps/pay/key",
                &format!("pass={value}"),
                "-o",
                "json",
            ],
        ))
    };
    let right = put("hunter2");
    let wrong = put("letmein");
    assert_eq!(right, wrong, "a right guess must answer like a wrong one");
    assert_eq!(right, serde_json::json!({ "unchanged": false }), "{right}");

    // Through a batch: an existing and a new secret answer alike, with no version.
    let seed = c.dir.path().join("guess.yaml");
    std::fs::write(
        &seed,
        "version: 1\nsecrets:\n  - path: apps/pay/key\n    data: {pass: letmein}\n  - path: apps/pay/new\n    data: {pass: letmein}\n",
    )
    .unwrap();
    let r = json(&c.spike(
        &writer,
        &["seed", "-f", &seed.display().to_string(), "-o", "json"],
    ));
    for item in r["secrets"].as_array().unwrap() {
        assert_eq!(item["status"], "written", "{r}");
        assert!(item.get("version").is_none(), "{r}");
    }
    assert_eq!(r["summary"]["secrets"]["written"], 2, "{r}");
    // Each blind put wrote a version: the owner sees 3 of its own, then 3 guesses.
    let m = json(&c.spike(
        &admin,
        &["secret", "metadata", "apps/pay/key", "-o", "json"],
    ));
    assert_eq!(m["currentVersion"], 6, "{m}");
}

/// The cas oracle: compare-and-set mismatches used to say "current version is N".
#[test]
fn cas_mismatch_does_not_tell_a_blind_writer_the_version() {
    let (c, admin, writer) = cluster_with_blind_writer();
    let out = c.spike(
        &writer,
        &["secret", "put", "apps/pay/key", "pass=x", "--cas", "1"],
    );
    assert!(!out.status.success(), "{}", text(&out));
    let said = text(&out);
    assert!(said.contains("compare-and-set failed"), "{said}");
    assert!(!said.contains('3'), "the current version leaked: {said}");
    // The owner, who may read, is still told.
    let out = c.spike(
        &admin,
        &["secret", "put", "apps/pay/key", "pass=x", "--cas", "1"],
    );
    assert!(
        text(&out).contains("current version is 3"),
        "{}",
        text(&out)
    );
}

/// A workload asks a sealed Nexus why it is sealed; only administrators are told.
#[test]
fn status_tells_a_workload_only_whether_nexus_serves() {
    let mut c = Cluster::new(3);
    for i in 1..=3 {
        c.start_keeper(i);
    }
    c.start_nexus();
    let admin = c.pki.svid("/spike/pilot/role/superuser");
    let workload = c.pki.svid("/ns/web/sa/api");
    let s = sealed_status(&c.spike(&workload, &["status", "-o", "json"]));
    assert_eq!(s["sealed"], true, "{s}");
    assert!(s.get("reason").is_none(), "{s}");
    assert!(s.get("initialized").is_none(), "{s}");
    let s = sealed_status(&c.spike(&admin, &["status", "-o", "json"]));
    assert_eq!(
        (&s["sealed"], &s["initialized"]),
        (&true.into(), &false.into()),
        "{s}"
    );
    assert!(s["reason"].is_string(), "{s}");

    // Open, a workload granted `super` on every path is an administrator too.
    let out = c.bootstrap(2);
    assert!(out.status.success(), "{}", text(&out));
    assert!(c.wait_ready(std::time::Duration::from_secs(20)));
    grant(&c, &admin, "ops-admin", "/ns/ops/sa/admin", "**", "super");
    let ops = c.pki.svid("/ns/ops/sa/admin");
    let s = json(&c.spike(&ops, &["status", "-o", "json"]));
    assert_eq!(
        (&s["sealed"], &s["initialized"]),
        (&false.into(), &true.into()),
        "{s}"
    );
    let s = json(&c.spike(&workload, &["status", "-o", "json"]));
    assert_eq!(s["sealed"], false, "{s}");
    assert!(s.get("initialized").is_none(), "{s}");
}

/// The delete oracle: a deleter without `read` or `list` deletes the current version and reads
/// its number (and the one now current) off the answer. It now learns only the versions it
/// named itself.
#[test]
fn a_blind_deleter_is_not_told_version_numbers() {
    let (c, admin, writer) = cluster_with_blind_writer();
    let out = c.spike(&writer, &["-o", "json", "secret", "delete", "apps/pay/key"]);
    let r = json(&out);
    assert_eq!(r["changed"], serde_json::json!([]), "{r}");
    assert!(r.get("currentVersion").is_none(), "{r}");
    let out = c.spike(&writer, &["secret", "undelete", "apps/pay/key"]);
    assert!(out.status.success(), "{}", text(&out));
    let printed = String::from_utf8_lossy(&out.stdout);
    assert!(
        !printed.contains('3') && !printed.contains('2'),
        "{printed}"
    );
    // A version it names is said back, and nothing else.
    let out = c.spike(
        &writer,
        &[
            "-o",
            "json",
            "secret",
            "delete",
            "apps/pay/key",
            "--versions",
            "1",
        ],
    );
    let r = json(&out);
    assert_eq!(r["changed"], serde_json::json!([1]), "{r}");
    assert!(r.get("currentVersion").is_none(), "{r}");
    // The administrator still sees it all.
    let out = c.spike(&admin, &["-o", "json", "secret", "delete", "apps/pay/key"]);
    let r = json(&out);
    assert_eq!(r["changed"], serde_json::json!([3]), "{r}");
    // The newest is deleted: nothing is current (version 2 does not come back).
    assert_eq!(r["currentVersion"], 0, "{r}");
}

/// A refusal says who asked for what, with nothing the caller did not send; a route for
/// administrators says so instead of suggesting a policy.
#[test]
fn refusals_name_the_caller_the_permission_and_the_path() {
    let (c, _admin, writer) = cluster_with_blind_writer();
    let out = c.spike(&writer, &["secret", "get", "apps/pay/key"]);
    assert_eq!(out.status.code(), Some(4), "{}", text(&out));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("spiffe://spike.test/ns/ci/sa/deployer may not `read` apps/pay/key"),
        "{err}"
    );
    assert!(!err.contains("pay-writer"), "names no policy: {err}");
    assert!(err.contains("ask an admin for a policy"), "{err}");
    let out = c.spike(&writer, &["policy", "list"]);
    assert_eq!(out.status.code(), Some(4), "{}", text(&out));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("this needs an administrator"), "{err}");
    assert!(!err.contains("ask an admin for a policy"), "{err}");
}
