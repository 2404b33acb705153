//! The production wiring: every component gets its SVID from a real Workload API server (the
//! `spike-agent` binary), attested by executable and environment, with SVIDs rotating while
//! the system runs.

use std::process::Command;
use std::time::{Duration, Instant};

use spike_e2e::{Proc, bins, free_port, http_get, text, wait_until};

#[test]
fn components_use_the_workload_api_and_survive_svid_rotation() {
    let bins = bins();
    let dir = tempfile::Builder::new()
        .prefix("spike-wl-")
        .tempdir()
        .unwrap();
    let uid = {
        use std::os::unix::fs::MetadataExt;
        std::fs::metadata("/proc/self").unwrap().uid()
    };
    let td = "spike.wl";
    let mut reg = String::new();
    let entry = |id: &str, exe: &std::path::Path, env: Option<(&str, &str)>| {
        let mut e = format!(
            "[[entry]]\nspiffe_id = \"spiffe://{td}{id}\"\nuid = {uid}\nexe = \"{}\"\n",
            exe.display()
        );
        if let Some((k, v)) = env {
            e.push_str(&format!("env = {{ {k} = \"{v}\" }}\n"));
        }
        e
    };
    reg.push_str(&entry("/spike/nexus", &bins.nexus, None));
    for i in 1..=3 {
        reg.push_str(&entry(
            &format!("/spike/keeper/{i}"),
            &bins.keeper,
            Some(("SPIKE_KEEPER_INDEX", &i.to_string())),
        ));
    }
    reg.push_str(&entry(
        "/spike/bootstrap",
        &bins.spike,
        Some(("SPIKE_ROLE", "bootstrap")),
    ));
    reg.push_str(&entry(
        "/spike/pilot/role/superuser",
        &bins.spike,
        Some(("SPIKE_ROLE", "admin")),
    ));
    // This test process itself: its long-lived readers keep one Workload API stream open.
    let me = std::env::current_exe().unwrap();
    reg.push_str(&entry("/app/reader", &me, None));
    let reg_file = dir.path().join("registrations.toml");
    std::fs::write(&reg_file, reg).unwrap();
    let socket = dir.path().join("agent").join("agent.sock");
    let endpoint = format!("unix://{}", socket.display());

    // SVIDs live 6 s, so they rotate every 3 s while the test runs.
    let _agent = Proc::spawn(
        &bins.agent,
        &[
            "--trust-domain".into(),
            td.into(),
            "--socket".into(),
            socket.display().to_string(),
            "--registrations".into(),
            reg_file.display().to_string(),
            "--svid-ttl".into(),
            "6s".into(),
        ],
        dir.path().join("agent.log"),
        "info",
    );
    assert!(
        wait_until(Duration::from_secs(20), || socket.exists()),
        "agent socket"
    );

    let env_common = [("SPIFFE_ENDPOINT_SOCKET", endpoint.as_str())];
    let mut keepers = Vec::new();
    let mut keeper_addrs = Vec::new();
    for i in 1..=3 {
        let (api, health) = (free_port(), free_port());
        let idx = i.to_string();
        let mut env = env_common.to_vec();
        env.push(("SPIKE_KEEPER_INDEX", idx.as_str()));
        keepers.push(Proc::spawn_with_env(
            &bins.keeper,
            &[
                "--trust-domain".into(),
                td.into(),
                "--listen".into(),
                format!("127.0.0.1:{api}"),
                "--health-listen".into(),
                format!("127.0.0.1:{health}"),
            ],
            &env,
            dir.path().join(format!("keeper-{i}.log")),
            "info",
        ));
        keeper_addrs.push(format!("127.0.0.1:{api}"));
    }
    let (api, health) = (free_port(), free_port());
    let mut args: Vec<String> = vec![
        "--trust-domain".into(),
        td.into(),
        "--listen".into(),
        format!("127.0.0.1:{api}"),
        "--health-listen".into(),
        format!("127.0.0.1:{health}"),
        "--keeper-interval".into(),
        "500ms".into(),
        "--data-dir".into(),
        dir.path().join("data").display().to_string(),
    ];
    for k in &keeper_addrs {
        args.extend(["--keeper".into(), k.clone()]);
    }
    let _nexus = Proc::spawn_with_env(
        &bins.nexus,
        &args,
        &env_common,
        dir.path().join("nexus.log"),
        "info",
    );
    assert!(
        wait_until(Duration::from_secs(30), || http_get(health, "/healthz")
            .is_some()),
        "nexus did not start: {}",
        std::fs::read_to_string(dir.path().join("nexus.log")).unwrap_or_default()
    );

    let spike = |role: &str, a: &[&str]| {
        Command::new(&bins.spike)
            .args(a)
            .args(["--trust-domain", td, "--nexus", &format!("127.0.0.1:{api}")])
            .env("SPIFFE_ENDPOINT_SOCKET", &endpoint)
            .env("SPIKE_ROLE", role)
            .output()
            .unwrap()
    };
    let out = spike("bootstrap", &["bootstrap", "--wait", "30s"]);
    assert!(out.status.success(), "{}", text(&out));
    let out = spike("admin", &["status"]);
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("spike/pilot/role/superuser"),
        "{}",
        text(&out)
    );
    // A process of the spike binary without a matching role gets no identity at all.
    let out = spike("nobody", &["status", "--svid-timeout", "2s"]);
    assert!(!out.status.success(), "{}", text(&out));

    // Work across several rotations of every SVID (nexus, keepers, CLI): nothing breaks.
    let deadline = Instant::now() + Duration::from_secs(8);
    let mut n = 0;
    while Instant::now() < deadline && n < 40 {
        let out = spike(
            "admin",
            &["secret", "put", &format!("rot/{n}"), &format!("v={n}")],
        );
        assert!(out.status.success(), "write {n}: {}", text(&out));
        let out = spike("admin", &["secret", "get", &format!("rot/{n}"), "v"]);
        assert_eq!(
            String::from_utf8_lossy(&out.stdout).trim(),
            n.to_string(),
            "{}",
            text(&out)
        );
        n += 1;
        std::thread::sleep(Duration::from_millis(200));
    }
    assert!(n >= 5, "too few rounds ran");

    // Long-lived readers in this process, on one Workload API stream each, read all through
    // several rotations of their own SVID and of Nexus's: not one read fails.
    let out = spike(
        "admin",
        &[
            "policy",
            "create",
            "readers",
            "--spiffe-id-pattern",
            &format!("spiffe://{td}/app/reader"),
            "--path-pattern",
            "rot/**",
            "--permissions",
            "read",
        ],
    );
    assert!(out.status.success(), "{}", text(&out));
    let (reads, failures, rotated) =
        long_lived_readers(td, &endpoint, api, Duration::from_secs(10));
    assert!(
        failures.is_empty(),
        "{} of {reads} reads failed while SVIDs rotated: {:?}",
        failures.len(),
        &failures[..failures.len().min(5)]
    );
    eprintln!("long-lived readers: {reads} reads, their SVID rotated {rotated} times, no failure");
    assert!(reads > 100, "only {reads} reads");
    assert!(
        rotated >= 2,
        "the readers' own SVID rotated only {rotated} times"
    );
    // Keepers stayed supplied through rotation (Nexus kept talking to them).
    let log = std::fs::read_to_string(dir.path().join("nexus.log")).unwrap_or_default();
    assert!(
        log.contains("SVID rotated via Workload API"),
        "no rotation observed: {log}"
    );
}

/// Three readers of `rot/0` for `run`, each with its own Workload API source (one stream
/// kept open) and a pooled client that opens a fresh connection every tenth read, so
/// handshakes happen all through the rotations. Returns the reads, the failures, and how
/// many times the first reader's SVID changed.
fn long_lived_readers(
    td: &str,
    endpoint: &str,
    nexus_port: u16,
    run: Duration,
) -> (u64, Vec<String>, usize) {
    use spike_runtime::svid::{Patience, SourceConfig};
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let td = spike_core::id::TrustDomain::new(td).unwrap();
    let nexus = spike_core::id::SpiffeId::new(&format!("spiffe://{td}/spike/nexus")).unwrap();
    rt.block_on(async {
        let mut tasks = Vec::new();
        let mut first = None;
        for _ in 0..3 {
            let source = SourceConfig::WorkloadApi(Some(endpoint.to_owned()))
                .open(&td, Duration::from_secs(10), Patience::Service)
                .await
                .unwrap();
            first.get_or_insert_with(|| source.clone());
            let nexus = nexus.clone();
            tasks.push(tokio::spawn(async move {
                let deadline = tokio::time::Instant::now() + run;
                let go = || tokio::time::Instant::now() < deadline;
                let addr = format!("127.0.0.1:{nexus_port}");
                spike_e2e::readers::read_while(addr, nexus, source, "rot/0", go, 100_000).await
            }));
        }
        // Count the first reader's SVID changes while they run.
        let source = first.unwrap();
        let watch = tokio::spawn(async move {
            let mut seen = source.current().not_after();
            let mut changes = 0;
            let deadline = tokio::time::Instant::now() + run;
            while tokio::time::Instant::now() < deadline {
                tokio::time::sleep(Duration::from_millis(100)).await;
                let now = source.current().not_after();
                if now != seen {
                    seen = now;
                    changes += 1;
                }
            }
            changes
        });
        let (mut reads, mut failures) = (0, Vec::new());
        for t in tasks {
            let (r, f) = t.await.unwrap();
            reads += r;
            failures.extend(f);
        }
        (reads, failures, watch.await.unwrap())
    })
}
