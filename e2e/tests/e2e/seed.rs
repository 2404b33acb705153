//! Declarative seeding: `spike seed`, `spike policy apply`, `POST /v1/secrets/batch`,
//! `spike policy test`, and the CLI's output formats and completions.

use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::sync::Arc;

use http::Method;
use spike_core::error::ErrorBody;
use spike_core::id::Builtin;
use spike_e2e::{Cluster, identity_args, text};
use spike_runtime::net::MtlsClient;
use spike_runtime::svid::{Identity, StaticSource};

/// Runs the CLI as `files` with extra environment variables.
fn spike_env(
    c: &Cluster,
    files: &spike_agent::PemFiles,
    args: &[&str],
    env: &[(&str, &str)],
) -> Output {
    Command::new(&c.bins.spike)
        .args(args)
        .args(identity_args(files))
        .args(["--nexus", &format!("127.0.0.1:{}", c.nexus_port)])
        .args(["--timeout", "30s"])
        .env_remove("SPIFFE_ENDPOINT_SOCKET")
        .envs(env.iter().copied())
        .stdin(Stdio::null())
        .output()
        .unwrap()
}

fn json(out: &Output) -> serde_json::Value {
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("{e}: {}", text(out)))
}

fn meta(c: &Cluster, admin: &spike_agent::PemFiles, path: &str) -> serde_json::Value {
    let out = c.spike(admin, &["secret", "metadata", path, "-o", "json"]);
    assert!(out.status.success(), "{}", text(&out));
    json(&out)
}

fn write(dir: &Path, name: &str, body: &str) -> String {
    let p = dir.join(name);
    std::fs::write(&p, body).unwrap();
    p.display().to_string()
}

const SEED: &str = r#"
version: 1
policies:
  - name: web-read
    spiffeIdPattern: spiffe://spike.test/ns/web/**
    pathPattern: apps/web/**
    permissions: [read, list]
secrets:
  - path: apps/web/db
    data:
      user: alice
      pass:
        valueFrom: {env: SEED_DB_PASS}
  - path: apps/web/tls
    data:
      cert:
        valueFrom: {file: cert.pem}
  - path: apps/api/key
    data:
      key: "literal-s3cret-api"
      port: "5432"
"#;

#[test]
fn seeding_twice_changes_nothing_and_dry_run_writes_nothing() {
    let mut c = Cluster::new(3);
    c.start_all(2);
    let admin = c.pki.svid("/spike/pilot/role/superuser");
    let dir = c.dir.path().to_path_buf();
    std::fs::write(
        dir.join("cert.pem"),
        "-----BEGIN CERT-----\nfile-s3cret\n-----END CERT-----\n",
    )
    .unwrap();
    let file = write(&dir, "seed.yaml", SEED);
    let env = [("SEED_DB_PASS", "env-s3cret-1")];

    // Dry run first: everything would be created, nothing is.
    let out = spike_env(&c, &admin, &["seed", "-f", &file, "--dry-run"], &env);
    assert!(out.status.success(), "{}", text(&out));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("dry run"), "{stdout}");
    for p in ["apps/web/db", "apps/web/tls", "apps/api/key"] {
        assert!(
            stdout.contains(&format!("create     secret {p}")),
            "{stdout}"
        );
    }
    assert!(stdout.contains("create     policy web-read"), "{stdout}");
    let out = c.spike(&admin, &["secret", "get", "apps/web/db"]);
    assert_eq!(out.status.code(), Some(3), "dry run wrote: {}", text(&out));
    let out = c.spike(&admin, &["policy", "list", "-o", "json"]);
    assert_eq!(json(&out), serde_json::json!([]), "dry run wrote a policy");

    // The real run.
    let out = spike_env(&c, &admin, &["seed", "-f", &file, "-o", "json"], &env);
    assert!(out.status.success(), "{}", text(&out));
    let r = json(&out);
    assert_eq!(r["dryRun"], false);
    assert_eq!(r["summary"]["secrets"]["created"], 3, "{r}");
    assert_eq!(r["summary"]["policies"]["created"], 1, "{r}");
    let out = c.spike(&admin, &["secret", "get", "apps/web/db", "pass"]);
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "env-s3cret-1");
    let out = c.spike(&admin, &["secret", "get", "apps/web/tls", "cert"]);
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "-----BEGIN CERT-----\nfile-s3cret\n-----END CERT-----\n\n"
    );
    // The seeded policy works.
    let web = c.pki.svid("/ns/web/sa/frontend");
    let out = c.spike(&web, &["secret", "get", "apps/web/db", "user"]);
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        "alice",
        "{}",
        text(&out)
    );

    // Twice: all unchanged, no new version anywhere (YAML output this time).
    let before: Vec<_> = ["apps/web/db", "apps/web/tls", "apps/api/key"]
        .iter()
        .map(|p| meta(&c, &admin, p))
        .collect();
    let out = spike_env(&c, &admin, &["seed", "-f", &file, "-o", "yaml"], &env);
    assert!(out.status.success(), "{}", text(&out));
    let r: serde_json::Value = serde_saphyr::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("not YAML: {e}\n{}", text(&out)));
    assert_eq!(r["summary"]["secrets"]["unchanged"], 3, "{r}");
    assert_eq!(r["summary"]["secrets"]["created"], 0, "{r}");
    assert_eq!(r["summary"]["policies"]["unchanged"], 1, "{r}");
    let after: Vec<_> = ["apps/web/db", "apps/web/tls", "apps/api/key"]
        .iter()
        .map(|p| meta(&c, &admin, p))
        .collect();
    assert_eq!(before, after, "a second seed changed metadata");
    for m in &after {
        assert_eq!(m["latestVersion"], 1, "{m}");
    }

    // A changed value: the dry run reports exactly that update, and writes nothing.
    let env2 = [("SEED_DB_PASS", "env-s3cret-2")];
    let out = spike_env(
        &c,
        &admin,
        &["seed", "-f", &file, "--dry-run", "-o", "json"],
        &env2,
    );
    assert!(out.status.success(), "{}", text(&out));
    let r = json(&out);
    assert_eq!(r["summary"]["secrets"]["updated"], 1, "{r}");
    assert_eq!(r["summary"]["secrets"]["unchanged"], 2, "{r}");
    let changed: Vec<&str> = r["secrets"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|s| s["status"] == "updated")
        .map(|s| s["path"].as_str().unwrap())
        .collect();
    assert_eq!(changed, ["apps/web/db"]);
    assert_eq!(meta(&c, &admin, "apps/web/db")["latestVersion"], 1);
    let out = spike_env(&c, &admin, &["seed", "-f", &file], &env2);
    assert!(out.status.success(), "{}", text(&out));
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("updated    secret apps/web/db (v2)"),
        "{}",
        text(&out)
    );
    assert_eq!(meta(&c, &admin, "apps/web/db")["latestVersion"], 2);

    // A bad file changes nothing and says where the problem is, without the value.
    let bad = write(
        &dir,
        "bad.yaml",
        "secrets:\n  - path: apps/new\n    data: {k: ok}\n  - path: apps/x\n    data:\n      k: 99999999\n",
    );
    let out = c.spike(&admin, &["seed", "-f", &bad]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("line 6"), "{err}");
    assert!(!err.contains("99999999"), "{err}");
    let out = c.spike(&admin, &["secret", "get", "apps/new"]);
    assert_eq!(out.status.code(), Some(3), "{}", text(&out));

    // No value ever reached any log or CLI output.
    let logs = c.all_logs();
    for v in [
        "env-s3cret-1",
        "env-s3cret-2",
        "file-s3cret",
        "literal-s3cret-api",
    ] {
        assert!(!logs.contains(v), "{v} is in a log");
    }
    assert!(logs.contains("secret.batch.put"), "batch items are audited");
}

#[test]
fn batch_items_are_authorized_one_by_one_and_policy_tools_explain() {
    spike_runtime::tls::install_crypto_provider();
    let mut c = Cluster::new(3);
    c.start_all(2);
    let admin = c.pki.svid("/spike/pilot/role/superuser");
    let dir = c.dir.path().to_path_buf();
    let policies = write(
        &dir,
        "policies.yaml",
        r#"
policies:
  - name: web-write
    spiffeIdPattern: spiffe://spike.test/ns/web/**
    pathPattern: apps/web/**
    permissions: [read, write]
  - name: all-list
    spiffeIdPattern: spiffe://spike.test/ns/**
    pathPattern: "**"
    permissions: [list]
"#,
    );
    let out = c.spike(&admin, &["policy", "apply", "-f", &policies, "--dry-run"]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(String::from_utf8_lossy(&out.stdout).contains("create     policy web-write"));
    let out = c.spike(&admin, &["policy", "apply", "-f", &policies]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(String::from_utf8_lossy(&out.stdout).contains("policies: 2 created"));
    let out = c.spike(&admin, &["policy", "apply", "-f", &policies, "-o", "json"]);
    assert_eq!(
        json(&out)["summary"]["policies"]["unchanged"],
        2,
        "{}",
        text(&out)
    );
    // A file with secrets is not a policy file.
    let mixed = write(
        &dir,
        "mixed.yaml",
        "secrets:\n  - {path: a, data: {k: v}}\n",
    );
    let out = c.spike(&admin, &["policy", "apply", "-f", &mixed]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));

    // The web workload may write apps/web/** only: its other item fails alone.
    let web = c.pki.svid("/ns/web/sa/deployer");
    let seed = write(
        &dir,
        "web.yaml",
        "secrets:\n  - {path: apps/web/a, data: {k: mine}}\n  - {path: apps/other/b, data: {k: theirs}}\n",
    );
    let out = c.spike(&web, &["seed", "-f", &seed]);
    assert_eq!(
        out.status.code(),
        Some(4),
        "forbidden item → exit 4: {}",
        text(&out)
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains("created    secret apps/web/a (v1)"),
        "{stdout}"
    );
    assert!(
        stdout.contains("failed     secret apps/other/b"),
        "{stdout}"
    );
    assert!(stdout.contains("(forbidden)"), "{stdout}");
    let out = c.spike(&admin, &["secret", "get", "apps/other/b"]);
    assert_eq!(out.status.code(), Some(3), "{}", text(&out));
    let audit = std::fs::read_to_string(c.dir.path().join("audit.log")).unwrap();
    let lines: Vec<&str> = audit
        .lines()
        .filter(|l| l.contains("secret.batch.put"))
        .collect();
    assert_eq!(lines.len(), 2, "{audit}");
    assert!(
        lines
            .iter()
            .any(|l| l.contains("apps/other/b") && l.contains("deny")),
        "{audit}"
    );

    // policy test: text names the granting policy; JSON is the engine's explanation.
    let id = "spiffe://spike.test/ns/web/sa/deployer";
    let out = c.spike(&admin, &["policy", "test", id, "apps/web/a"]);
    assert!(out.status.success(), "{}", text(&out));
    let t = String::from_utf8_lossy(&out.stdout);
    assert!(t.contains("granted by all-list, web-write"), "{t}");
    assert!(t.contains("permissions: read, write, list"), "{t}");
    assert!(t.contains("APPLIES"), "{t}");
    let out = c.spike(
        &admin,
        &["policy", "test", id, "apps/other/b", "-o", "json"],
    );
    let e = json(&out);
    assert_eq!(e["permissions"], serde_json::json!(["list"]), "{e}");
    let checks = e["policies"].as_array().unwrap();
    let ww = checks.iter().find(|p| p["name"] == "web-write").unwrap();
    assert_eq!(
        (
            ww["idMatches"].clone(),
            ww["pathMatches"].clone(),
            ww["applies"].clone()
        ),
        (
            serde_json::json!(true),
            serde_json::json!(false),
            serde_json::json!(false)
        )
    );
    let out = c.spike(
        &admin,
        &[
            "policy",
            "test",
            "spiffe://spike.test/ns/db/sa/x",
            "apps/web/a",
            "-o",
            "yaml",
        ],
    );
    let y: serde_json::Value = serde_saphyr::from_slice(&out.stdout).unwrap();
    assert_eq!(
        y["permissions"],
        serde_json::json!(["list"]),
        "{}",
        text(&out)
    );
    // Only admins may ask.
    let out = c.spike(&web, &["policy", "test", id, "apps/web/a"]);
    assert_eq!(out.status.code(), Some(4), "{}", text(&out));
    let out = c.spike(&admin, &["policy", "test", "not-an-id", "apps/web/a"]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));

    // The batch endpoint's limits: too many items or bytes → 413, a repeated path → 400;
    // each refused whole, before anything is written.
    let identity = Identity::from_pem(
        &c.pki.td,
        &std::fs::read(&admin.cert).unwrap(),
        &std::fs::read(&admin.key).unwrap(),
        &std::fs::read(&admin.bundle).unwrap(),
    )
    .unwrap();
    let source = Arc::new(StaticSource::new(c.pki.td.clone(), identity));
    let http = MtlsClient::new(
        format!("127.0.0.1:{}", c.nexus_port),
        Builtin::Nexus.id(&c.pki.td),
        source,
    )
    .unwrap();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let items = |n: usize, prefix: &str, value: &str| {
        let v: Vec<serde_json::Value> = (0..n)
            .map(|i| serde_json::json!({"path": format!("{prefix}/s{i}"), "data": {"k": value}}))
            .collect();
        serde_json::to_vec(&serde_json::json!({ "items": v })).unwrap()
    };
    let dup = serde_json::to_vec(&serde_json::json!({"items": [
        {"path": "lim/a", "data": {"k": "v"}}, {"path": "lim/a", "data": {"k": "w"}}]}))
    .unwrap();
    let cases = [
        (items(501, "lim/many", "v"), 413, "too_large"),
        (items(10, "lim/big", &"x".repeat(500 * 1024)), 413, "too_large"),
        (dup, 400, "bad_request"),
        (b"{\"items\": [{\"path\": \"lim/x\", \"data\": {\"k\": \"s3cretvalue\"}, \"bogus\": 1}]}".to_vec(), 400, "bad_request"),
    ];
    for (body, status, code) in cases {
        let oversized = body.len() > 4 << 20;
        let resp = match rt.block_on(http.send(Method::POST, "/v1/secrets/batch", Some(body))) {
            Ok(r) => r,
            // Nexus may answer 413 from the Content-Length alone and close the connection
            // while the client is still sending: a refusal too.
            Err(spike_runtime::net::ClientError::Http { .. }) if oversized => continue,
            Err(e) => panic!("{e}"),
        };
        assert_eq!(resp.status.as_u16(), status, "{:?}", resp.body);
        let err: ErrorBody = serde_json::from_slice(&resp.body).unwrap();
        assert_eq!(err.error.code.as_str(), code, "{}", err.error.message);
        assert!(!err.error.message.contains("s3cretvalue"));
    }
    // Exactly at the limit is fine.
    let resp = rt
        .block_on(http.send(
            Method::POST,
            "/v1/secrets/batch",
            Some(items(500, "lim/ok", "v")),
        ))
        .unwrap();
    assert_eq!(resp.status.as_u16(), 200, "{:?}", resp.body);
    let out = c.spike(&admin, &["secret", "list", "lim", "-o", "json"]);
    let listed = json(&out);
    let listed = listed.as_array().unwrap();
    assert_eq!(listed.len(), 500, "only the accepted batch was written");
    assert!(
        listed
            .iter()
            .all(|s| s["path"].as_str().unwrap().starts_with("lim/ok/"))
    );
}

#[test]
fn a_large_seed_goes_in_batches_and_splits_when_nexus_says_413() {
    let mut c = Cluster::new(3);
    c.start_all(2);
    let admin = c.pki.svid("/spike/pilot/role/superuser");
    let mut yaml = String::from("secrets:\n");
    for i in 0..1200 {
        yaml.push_str(&format!(
            "  - {{path: bulk/s{i:05}, data: {{k: \"value-{i}\"}}}}\n"
        ));
    }
    let file = write(c.dir.path(), "bulk.yaml", &yaml);
    // 1000 per batch is over Nexus's 500: the CLI halves the batches after the 413.
    let out = c.spike(
        &admin,
        &[
            "seed",
            "-f",
            &file,
            "--batch-size",
            "1000",
            "-q",
            "-o",
            "json",
        ],
    );
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(json(&out)["summary"]["secrets"]["created"], 1200);
    let out = c.spike(&admin, &["seed", "-f", &file]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(
        String::from_utf8_lossy(&out.stdout)
            .trim()
            .ends_with("secrets: 0 created, 0 updated, 1200 unchanged, 0 failed"),
        "{}",
        text(&out)
    );
    // -q prints only failures: nothing here, not even the summary.
    let out = c.spike(&admin, &["seed", "-f", &file, "-q", "--no-progress"]);
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        "",
        "{}",
        text(&out)
    );
    let out = c.spike(&admin, &["secret", "get", "bulk/s01199", "k"]);
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "value-1199");
}

#[test]
fn read_commands_print_yaml_and_completions_and_version_need_no_server() {
    let mut c = Cluster::new(3);
    c.start_all(2);
    let admin = c.pki.svid("/spike/pilot/role/superuser");
    let out = c.spike(
        &admin,
        &[
            "secret",
            "put",
            "y/s",
            "user=alice",
            "note=it's: \"quoted\"",
        ],
    );
    assert!(out.status.success(), "{}", text(&out));
    for (args, check) in [
        (vec!["secret", "get", "y/s", "-o", "yaml"], "data"),
        (
            vec!["secret", "metadata", "y/s", "-o", "yaml"],
            "currentVersion",
        ),
        (vec!["secret", "list", "-o", "yaml"], "0"),
        (vec!["status", "-o", "yaml"], "caller"),
        (vec!["policy", "list", "-o", "yaml"], ""),
    ] {
        let out = c.spike(&admin, &args);
        assert!(out.status.success(), "{args:?}: {}", text(&out));
        let v: serde_json::Value = serde_saphyr::from_slice(&out.stdout)
            .unwrap_or_else(|e| panic!("{args:?} is not YAML: {e}: {}", text(&out)));
        if !check.is_empty() {
            let found = v.get(check).is_some() || v.get(0).is_some();
            assert!(found, "{args:?}: {v}");
        }
    }
    let out = c.spike(&admin, &["secret", "get", "y/s", "-o", "yaml"]);
    let v: serde_json::Value = serde_saphyr::from_slice(&out.stdout).unwrap();
    assert_eq!(v["data"]["note"], "it's: \"quoted\"");

    // Completions and version work without any identity or server.
    for shell in ["bash", "zsh", "fish"] {
        let out = Command::new(&c.bins.spike)
            .args(["completions", shell])
            .output()
            .unwrap();
        assert!(out.status.success(), "{shell}: {}", text(&out));
        assert!(
            String::from_utf8_lossy(&out.stdout).contains("seed"),
            "{shell}"
        );
    }
    let out = Command::new(&c.bins.spike)
        .args(["version", "--nexus", "127.0.0.1:1"])
        .env_remove("SPIFFE_ENDPOINT_SOCKET")
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out));
    assert!(
        String::from_utf8_lossy(&out.stdout).starts_with("spike 0."),
        "{}",
        text(&out)
    );
    let out = c.spike(&admin, &["version", "-o", "json"]);
    let v = json(&out);
    assert_eq!(v["server"]["reachable"], true, "{v}");
    assert_eq!(v["client"]["version"], env!("CARGO_PKG_VERSION"));
}

#[test]
fn a_dry_run_needs_read_so_write_only_callers_cannot_test_guesses() {
    let mut c = Cluster::new(3);
    c.start_all(2);
    let admin = c.pki.svid("/spike/pilot/role/superuser");
    let out = c.spike(&admin, &["secret", "put", "vault/pin", "pin=4711"]);
    assert!(out.status.success(), "{}", text(&out));
    let out = c.spike(
        &admin,
        &[
            "policy",
            "create",
            "writer",
            "--spiffe-id-pattern",
            "spiffe://spike.test/ns/w/**",
            "--path-pattern",
            "vault/**",
            "--permissions",
            "write",
        ],
    );
    assert!(out.status.success(), "{}", text(&out));
    let writer = c.pki.svid("/ns/w/sa/app");
    let dir = c.dir.path().to_path_buf();
    // The right guess and a wrong one must look the same to a caller without `read`.
    for guess in ["4711", "0000"] {
        let file = write(
            &dir,
            &format!("guess-{guess}.yaml"),
            &format!("secrets:\n  - {{path: vault/pin, data: {{pin: \"{guess}\"}}}}\n"),
        );
        let out = c.spike(&writer, &["seed", "-f", &file, "--dry-run", "-o", "json"]);
        assert_eq!(out.status.code(), Some(4), "{}", text(&out));
        assert_eq!(
            json(&out)["secrets"][0]["status"],
            "failed",
            "{}",
            text(&out)
        );
    }
    // Nothing was written.
    assert_eq!(meta(&c, &admin, "vault/pin")["currentVersion"], 1);
}
