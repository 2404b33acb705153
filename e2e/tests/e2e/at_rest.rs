//! What someone who can read or write the data directory gets: no plaintext, and every moved
//! or edited record fails closed. The store's freshness witness refuses every such edit before
//! Nexus opens (`rollback.rs`); these tests accept each one on purpose to show that the
//! records' own tags still fail closed behind it.

use std::time::Duration;

use spike_e2e::{Cluster, text};
use spike_store::{Batch, RedbStore, Store, Table};

const SECRETS: Table = Table::new("secrets");
const VERSIONS: Table = Table::new("versions");
const POLICIES: Table = Table::new("policies");

fn version_key(path: &str, v: u64) -> Vec<u8> {
    let mut k = path.as_bytes().to_vec();
    k.push(0);
    k.extend_from_slice(&v.to_be_bytes());
    k
}

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len()).any(|w| w == needle)
}

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

/// Starts Nexus on a store edited behind its back: it refuses with `STORE EDITED`; then starts
/// it again accepting the edit on purpose, as an operator investigating would.
fn start_accepting_the_edit(c: &mut Cluster) {
    let reason = c.start_nexus_expecting_refusal("STORE EDITED");
    c.restart_nexus_accepting(&reason);
}

#[test]
fn data_dir_holds_no_plaintext_and_tampering_fails_closed() {
    let mut c = Cluster::new(3);
    c.start_all(2);
    let admin = c.pki.svid("/spike/pilot/role/superuser");
    let known = "KNOWN-PLAINTEXT-7f3a9c";
    for (path, val) in [("rest/a", known), ("rest/b", "other-value-b")] {
        let out = c.spike(&admin, &["secret", "put", path, &format!("v={val}")]);
        assert!(out.status.success(), "{}", text(&out));
    }
    let out = c.spike(
        &admin,
        &[
            "policy",
            "create",
            "p1",
            "--spiffe-id-pattern",
            "spiffe://spike.test/app/**",
            "--path-pattern",
            "rest/**",
            "--permissions",
            "read",
        ],
    );
    assert!(out.status.success(), "{}", text(&out));

    // No file in the data dir (nor the audit log) holds the value.
    let data = c.data_dir.clone().unwrap();
    c.kill_nexus();
    for e in std::fs::read_dir(&data).unwrap().flatten() {
        let bytes = std::fs::read(e.path()).unwrap();
        assert!(
            !contains(&bytes, known.as_bytes()),
            "plaintext in {}",
            e.path().display()
        );
    }
    let audit = std::fs::read(c.dir.path().join("audit.log")).unwrap();
    assert!(!contains(&audit, known.as_bytes()));

    // Move rest/a's ciphertext onto rest/b's version 1.
    rt().block_on(async {
        let store = RedbStore::open(&data).unwrap();
        let a = store
            .get(VERSIONS, &version_key("rest/a", 1))
            .await
            .unwrap()
            .unwrap();
        let mut b = Batch::new();
        b.put(VERSIONS, version_key("rest/b", 1), a);
        store.commit(b).await.unwrap();
        store.close().await.unwrap();
    });
    start_accepting_the_edit(&mut c);
    assert!(c.wait_ready(Duration::from_secs(20)), "{:?}", c.readyz());
    let out = c.spike(&admin, &["secret", "get", "rest/b"]);
    assert!(
        !out.status.success(),
        "moved ciphertext must not open: {}",
        text(&out)
    );
    assert!(!String::from_utf8_lossy(&out.stdout).contains(known));
    let out = c.spike(&admin, &["secret", "get", "rest/a", "v"]);
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        known,
        "{}",
        text(&out)
    );

    // Edit rest/a's metadata record (e.g. to resurrect or renumber versions).
    c.kill_nexus();
    rt().block_on(async {
        let store = RedbStore::open(&data).unwrap();
        let mut meta = store.get(SECRETS, b"rest/a").await.unwrap().unwrap();
        let last = meta.len() - 2;
        meta[last] ^= 0x01;
        let mut b = Batch::new();
        b.put(SECRETS, b"rest/a".to_vec(), meta);
        store.commit(b).await.unwrap();
        store.close().await.unwrap();
    });
    start_accepting_the_edit(&mut c);
    assert!(c.wait_ready(Duration::from_secs(20)), "{:?}", c.readyz());
    let out = c.spike(&admin, &["secret", "get", "rest/a"]);
    assert!(
        !out.status.success(),
        "edited metadata must fail: {}",
        text(&out)
    );
    assert!(!String::from_utf8_lossy(&out.stdout).contains(known));

    // Copy a policy record under another name (an attempt to grant more): Nexus refuses to
    // open rather than trust it.
    c.kill_nexus();
    rt().block_on(async {
        let store = RedbStore::open(&data).unwrap();
        let p = store.get(POLICIES, b"p1").await.unwrap().unwrap();
        let mut b = Batch::new();
        b.put(POLICIES, b"p2".to_vec(), p);
        store.commit(b).await.unwrap();
        store.close().await.unwrap();
    });
    // Accepted as an edit, the forged policy still keeps Nexus closed.
    start_accepting_the_edit(&mut c);
    std::thread::sleep(Duration::from_secs(2));
    let (status, body) = c.readyz().expect("readyz");
    assert_eq!(
        status, 503,
        "a forged policy must keep Nexus closed: {body}"
    );
    let out = c.spike(&admin, &["secret", "get", "rest/a"]);
    assert!(!out.status.success(), "{}", text(&out));
}

/// The core-file limits of a running process, `(soft, hard)`, as the kernel shows them.
fn core_limits(pid: u32) -> (String, String) {
    let limits = std::fs::read_to_string(format!("/proc/{pid}/limits")).unwrap();
    let line = limits
        .lines()
        .find(|l| l.starts_with("Max core file size"))
        .unwrap();
    let f: Vec<&str> = line.split_whitespace().collect();
    (f[4].to_owned(), f[5].to_owned())
}

#[test]
fn nexus_and_keepers_leave_no_core_file_behind() {
    let mut c = Cluster::new(2);
    c.start_all(2);
    let zero = ("0".to_owned(), "0".to_owned());
    assert_eq!(core_limits(c.nexus.as_ref().unwrap().pid()), zero, "nexus");
    for k in c.keepers.iter().flatten() {
        assert_eq!(core_limits(k.pid()), zero, "keeper");
    }
}

/// Locked memory of a running process, kB (`VmLck`).
fn locked_kb(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let line = status.lines().find(|l| l.starts_with("VmLck:")).unwrap();
    line.split_whitespace().nth(1).unwrap().parse().unwrap()
}

#[test]
fn with_mlock_nexus_and_keepers_lock_their_memory_or_refuse_to_start() {
    let mut c = Cluster::new(2);
    c.nexus_extra_args.push("--mlock".into());
    c.keeper_extra_args.push("--mlock".into());
    c.start_all(2);
    let nexus = c.nexus.as_ref().unwrap().pid();
    assert!(locked_kb(nexus) > 0, "nexus locked nothing");
    for k in c.keepers.iter().flatten() {
        assert!(locked_kb(k.pid()) > 0, "a keeper locked nothing");
    }
    let admin = c.pki.svid("/spike/pilot/role/superuser");
    let out = c.spike(&admin, &["secret", "put", "locked/a", "k=mlocked-value-1"]);
    assert!(out.status.success(), "{}", text(&out));
    // Without the means to lock (no CAP_IPC_LOCK, no RLIMIT_MEMLOCK), it does not start,
    // and says why, before it reads an SVID or a key.
    let root = rustix::process::geteuid().is_root();
    let mut cmd = std::process::Command::new(if root { "setpriv" } else { "prlimit" });
    if root {
        cmd.args(["--bounding-set=-ipc_lock", "prlimit"]);
    }
    let data = c.dir.path().join("unlockable");
    let out = cmd
        .arg("--memlock=0")
        .arg(&c.bins.nexus)
        .args(["--keeper", "127.0.0.1:1", "--mlock", "--data-dir"])
        .arg(&data)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(
        text(&out).contains("cannot lock memory (mlock is on)"),
        "{}",
        text(&out)
    );
}
