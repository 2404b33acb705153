//! Root-key lifecycle: break-glass export and restore, rotation and rekey under load, and a
//! crash in the middle of a rotation.

use std::path::{Path, PathBuf};
use std::process::Output;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use spike_agent::PemFiles;
use spike_e2e::{Cluster, http_get, text, wait_until};

fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

pub(crate) fn ok(out: &Output) -> String {
    assert!(out.status.success(), "{}", text(out));
    stdout(out)
}

pub(crate) fn refused(out: &Output, code: i32, needle: &str) {
    assert_eq!(out.status.code(), Some(code), "{}", text(out));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains(needle),
        "expected {needle:?}: {}",
        text(out)
    );
}

pub(crate) fn put_secrets(c: &Cluster, admin: &PemFiles, n: usize) {
    for i in 0..n {
        ok(&c.spike(
            admin,
            &[
                "secret",
                "put",
                &format!("app/s{i}"),
                &format!("v=value-{i}"),
            ],
        ));
    }
}

pub(crate) fn assert_secrets(c: &Cluster, admin: &PemFiles, n: usize) {
    for i in 0..n {
        let out = c.spike(admin, &["secret", "get", &format!("app/s{i}"), "v"]);
        assert_eq!(ok(&out), format!("value-{i}"));
    }
}

/// Generates a custodian's age identity with `spike operator keygen`; returns its file and
/// the `NAME=age1…` flag value.
pub(crate) fn custodian(c: &Cluster, who: &PemFiles, dir: &Path, name: &str) -> (PathBuf, String) {
    let key = dir.join(format!("{name}.key"));
    let recipient = ok(&c.spike(
        who,
        &["operator", "keygen", "--out", &key.display().to_string()],
    ));
    assert!(recipient.starts_with("age1"), "{recipient}");
    (key, format!("{name}={recipient}"))
}

pub(crate) fn recover(
    c: &Cluster,
    who: &PemFiles,
    custodians: &[String],
    out_dir: &Path,
) -> Output {
    let mut args = vec!["operator", "recover", "--threshold", "2"];
    for cu in custodians {
        args.extend(["--custodian", cu.as_str()]);
    }
    let dir = out_dir.display().to_string();
    args.extend(["--out-dir", &dir]);
    c.spike(who, &args)
}

pub(crate) fn restore(c: &Cluster, who: &PemFiles, file: &Path, identity: &Path) -> Output {
    c.spike(
        who,
        &[
            "operator",
            "restore",
            &file.display().to_string(),
            "--identity",
            &identity.display().to_string(),
        ],
    )
}

fn sealed(c: &Cluster) -> bool {
    matches!(c.readyz(), Some((503, _)))
}

/// Kills every keeper and Nexus, then starts new, empty keepers and Nexus on the same data.
fn lose_every_keeper(c: &mut Cluster) {
    for i in 1..=c.keepers.len() {
        c.kill_keeper(i);
    }
    c.kill_nexus();
    for i in 1..=c.keepers.len() {
        c.start_keeper(i);
    }
    c.start_nexus();
    // Give Nexus a few keeper rounds: with only empty keepers it must stay sealed.
    std::thread::sleep(Duration::from_secs(1));
    assert!(sealed(c), "{:?}", c.readyz());
}

pub(crate) fn restart_nexus_and_wait(c: &mut Cluster) {
    c.kill_nexus();
    c.start_nexus();
    assert!(
        c.wait_ready(Duration::from_secs(30)),
        "nexus did not unseal from its keepers: {:?}",
        c.readyz()
    );
}

/// The identities of the root-key operations.
pub(crate) struct Operators {
    pub(crate) admin: PemFiles,
    pub(crate) recoverer: PemFiles,
    pub(crate) restorer: PemFiles,
}

/// A running cluster of 3 keepers (threshold 2) holding `secrets` secrets (see
/// [`put_secrets`]), and the operator identities.
pub(crate) fn cluster_with_secrets(secrets: usize) -> (Cluster, Operators) {
    let mut c = Cluster::new(3);
    c.start_all(2);
    let ops = Operators {
        admin: c.pki.svid("/spike/pilot/role/superuser"),
        recoverer: c.pki.svid("/spike/pilot/role/recover"),
        restorer: c.pki.svid("/spike/pilot/role/restore"),
    };
    put_secrets(&c, &ops.admin, secrets);
    (c, ops)
}

#[test]
fn break_glass_restores_a_cluster_whose_keepers_are_all_gone() {
    let (mut c, ops) = cluster_with_secrets(5);
    let Operators {
        admin,
        recoverer,
        restorer,
    } = ops;

    let keys = c.dir.path().join("custodians");
    std::fs::create_dir_all(&keys).unwrap();
    let (alice, alice_cu) = custodian(&c, &admin, &keys, "alice");
    let (bob, bob_cu) = custodian(&c, &admin, &keys, "bob");
    let (carol, carol_cu) = custodian(&c, &admin, &keys, "carol");
    let all = [alice_cu, bob_cu, carol_cu];

    // Only the recover role exports.
    let denied = c.dir.path().join("denied");
    refused(&recover(&c, &admin, &all, &denied), 4, "forbidden");
    assert_eq!(std::fs::read_dir(&denied).unwrap().count(), 0);

    // An export, then a rekey: that export's files stop working. Then a fresh export.
    let old = c.dir.path().join("old-export");
    ok(&recover(&c, &recoverer, &all, &old));
    let out = ok(&c.spike(
        &admin,
        &["operator", "rekey", "--shares", "3", "--threshold", "2"],
    ));
    assert!(out.contains("no longer work"), "{out}");
    let new = c.dir.path().join("export");
    let out = ok(&recover(&c, &recoverer, &all, &new));
    assert!(out.contains("any 2 of them restore"), "{out}");
    let file = |dir: &Path, name: &str| dir.join(format!("{name}.share.age"));
    for name in ["alice", "bob", "carol"] {
        let text = std::fs::read_to_string(file(&new, name)).unwrap();
        assert!(text.starts_with("-----BEGIN AGE ENCRYPTED FILE-----"));
        use std::os::unix::fs::PermissionsExt as _;
        let mode = std::fs::metadata(file(&new, name))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
    }

    lose_every_keeper(&mut c);

    // Refusals, each leaving Nexus sealed with nothing collected.
    refused(
        &restore(&c, &admin, &file(&new, "alice"), &alice),
        4,
        "forbidden",
    );
    refused(
        &restore(&c, &restorer, &file(&new, "alice"), &bob),
        1,
        "another custodian's key",
    );
    refused(
        &restore(&c, &restorer, &file(&old, "alice"), &alice),
        1,
        "no longer works",
    );
    assert!(sealed(&c));

    let out = ok(&restore(&c, &restorer, &file(&new, "alice"), &alice));
    assert!(out.contains("1 more needed"), "{out}");
    assert!(sealed(&c));
    let out = ok(&restore(&c, &restorer, &file(&new, "carol"), &carol));
    assert!(out.contains("Nexus is open"), "{out}");
    assert!(c.wait_ready(Duration::from_secs(10)));
    assert_secrets(&c, &admin, 5);
    // The new keepers received shares.
    for p in c.keeper_ports.clone() {
        assert!(
            wait_until(Duration::from_secs(20), || matches!(
                http_get(p.health, "/readyz"),
                Some((200, _))
            )),
            "a keeper was not given a share"
        );
    }
    refused(
        &restore(&c, &restorer, &file(&new, "bob"), &bob),
        1,
        "unsealed",
    );

    // From now on the keepers alone unseal it again.
    restart_nexus_and_wait(&mut c);
    assert_secrets(&c, &admin, 5);
    let logs = c.all_logs();
    assert!(
        !logs.contains("AGE-SECRET-KEY"),
        "an identity reached a log"
    );
    assert!(!logs.contains("value-3"), "a secret value reached a log");
}

#[test]
fn rotate_and_rekey_keep_every_read_working() {
    let mut c = Cluster::new(3);
    c.start_all(2);
    let admin = c.pki.svid("/spike/pilot/role/superuser");
    let recoverer = c.pki.svid("/spike/pilot/role/recover");
    let restorer = c.pki.svid("/spike/pilot/role/restore");
    put_secrets(&c, &admin, 3);
    let keys = c.dir.path().join("custodians");
    std::fs::create_dir_all(&keys).unwrap();
    let (alice, alice_cu) = custodian(&c, &admin, &keys, "alice");
    let (_, bob_cu) = custodian(&c, &admin, &keys, "bob");
    let export = c.dir.path().join("export");
    ok(&recover(&c, &recoverer, &[alice_cu, bob_cu], &export));

    // A reader hammers one secret while the root key changes under it.
    let reads_during = |c: &Cluster, change: &[&str]| -> String {
        let stop = AtomicBool::new(false);
        let (reads, failures) = (AtomicUsize::new(0), AtomicUsize::new(0));
        let out = std::thread::scope(|s| {
            s.spawn(|| {
                let deadline = Instant::now() + Duration::from_secs(120);
                while !stop.load(Ordering::Relaxed) && Instant::now() < deadline {
                    let out = c.spike(&admin, &["secret", "get", "app/s1", "v"]);
                    if !(out.status.success() && stdout(&out) == "value-1") {
                        eprintln!("failed read: {}", text(&out));
                        failures.fetch_add(1, Ordering::Relaxed);
                    }
                    reads.fetch_add(1, Ordering::Relaxed);
                }
            });
            // Let the reader get going before the change, and keep it going after.
            assert!(wait_until(Duration::from_secs(30), || reads
                .load(Ordering::Relaxed)
                >= 3));
            let out = ok(&c.spike(&admin, change));
            let after = reads.load(Ordering::Relaxed) + 3;
            assert!(wait_until(Duration::from_secs(30), || reads
                .load(Ordering::Relaxed)
                >= after));
            stop.store(true, Ordering::Relaxed);
            out
        });
        eprintln!(
            "{} reads during `spike {}`",
            reads.load(Ordering::Relaxed),
            change.join(" ")
        );
        assert_eq!(failures.load(Ordering::Relaxed), 0, "reads failed");
        out
    };

    let out = reads_during(&c, &["operator", "rotate"]);
    assert!(out.contains("root key rotated"), "{out}");
    assert!(out.contains("3 keepers hold"), "{out}");
    assert!(out.contains("no longer work"), "{out}");
    restart_nexus_and_wait(&mut c);
    assert_secrets(&c, &admin, 3);

    let out = reads_during(
        &c,
        &["operator", "rekey", "--shares", "3", "--threshold", "3"],
    );
    assert!(out.contains("threshold 3"), "{out}");
    restart_nexus_and_wait(&mut c);
    assert_secrets(&c, &admin, 3);

    // Threshold 3 now: with one keeper down, a restarted Nexus stays sealed.
    c.kill_keeper(3);
    c.kill_nexus();
    c.start_nexus();
    std::thread::sleep(Duration::from_secs(1));
    assert!(sealed(&c), "{:?}", c.readyz());
    c.start_keeper(3);
    // Keeper 3 came back empty; nothing can resupply it while sealed, so: break glass. The
    // export made before the rotation is useless now.
    refused(
        &restore(&c, &restorer, &export.join("alice.share.age"), &alice),
        1,
        "no longer works",
    );
    assert!(sealed(&c));
}

#[test]
fn a_crash_in_the_middle_of_a_rotation_recovers() {
    let mut c = Cluster::new(3);
    c.start_all(2);
    let admin = c.pki.svid("/spike/pilot/role/superuser");
    put_secrets(&c, &admin, 3);

    // No keeper answers during the rotation (frozen with SIGSTOP): the new record is
    // committed, no share is pushed, and Nexus dies right after.
    for i in 1..=3 {
        c.stop_keeper(i);
    }
    let out = ok(&c.spike(&admin, &["operator", "rotate"]));
    assert!(out.contains("0 keepers hold"), "{out}");
    assert!(out.contains("keeps the previous split"), "{out}");
    c.kill_nexus();
    for i in 1..=3 {
        c.continue_keeper(i);
    }
    // The keepers hold only the old root key's shares: Nexus opens with them and redoes the
    // rotation.
    c.start_nexus();
    assert!(c.wait_ready(Duration::from_secs(30)), "{:?}", c.readyz());
    assert_secrets(&c, &admin, 3);
    restart_nexus_and_wait(&mut c);
    assert_secrets(&c, &admin, 3);

    // Only keeper 1 gets its new share before the crash.
    c.stop_keeper(2);
    c.stop_keeper(3);
    let out = ok(&c.spike(
        &admin,
        &["operator", "rekey", "--shares", "3", "--threshold", "2"],
    ));
    assert!(out.contains("1 keepers hold"), "{out}");
    c.kill_nexus();
    c.continue_keeper(2);
    c.continue_keeper(3);
    c.start_nexus();
    assert!(c.wait_ready(Duration::from_secs(30)), "{:?}", c.readyz());
    assert_secrets(&c, &admin, 3);
    restart_nexus_and_wait(&mut c);
    assert_secrets(&c, &admin, 3);
    assert!(c.all_logs().contains("was redone with a fresh root key"));
}
