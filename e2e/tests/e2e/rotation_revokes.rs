//! A rotation revokes exposed shares: someone holding threshold old shares (here a break-glass
//! export) and a copy of the data directory reads only what that copy held before the
//! rotation, and nothing of the live data after it. And re-encryption cut off by a crash
//! resumes with every secret readable.

use std::path::{Path, PathBuf};
use std::time::Duration;

use redb::ReadableDatabase as _;
use spike_agent::PemFiles;
use spike_core::api::BreakGlassShare;
use spike_core::crypto::{DataKey, RootKey, ShareParams, WrappedKey, combine};
use spike_e2e::{Cluster, copy_dir, http_get, text, wait_until};

use crate::lifecycle::{
    Operators, assert_secrets, cluster_with_secrets, custodian, ok, put_secrets, recover, refused,
    restart_nexus_and_wait, restore,
};
use crate::recovery::log_lines;

const META: redb::TableDefinition<&[u8], &[u8]> = redb::TableDefinition::new("meta");

/// The init record of the store in `dir`, read straight from the file as an attacker would.
fn init_record(dir: &Path) -> serde_json::Value {
    let db = redb::Database::open(dir.join(spike_store::DATA_FILE_NAME)).unwrap();
    let txn = db.begin_read().unwrap();
    let raw = txn
        .open_table(META)
        .unwrap()
        .get(&b"init"[..])
        .unwrap()
        .unwrap()
        .value()
        .to_vec();
    serde_json::from_slice(&raw).unwrap()
}

/// Every value of every table of the store in `dir`.
fn all_values(dir: &Path) -> Vec<Vec<u8>> {
    let db = redb::Database::open(dir.join(spike_store::DATA_FILE_NAME)).unwrap();
    let txn = db.begin_read().unwrap();
    let mut out = Vec::new();
    for name in ["secrets", "versions", "policies"] {
        let def: redb::TableDefinition<&[u8], &[u8]> = redb::TableDefinition::new(name);
        let Ok(t) = txn.open_table(def) else { continue };
        for e in redb::ReadableTable::iter(&t).unwrap() {
            out.push(e.unwrap().1.value().to_vec());
        }
    }
    out
}

/// The hex-encoded sealed keys of a split (and of its previous split), as stored.
fn sealed_keys(record: &serde_json::Value) -> Vec<String> {
    let mut out = Vec::new();
    for split in [record, &record["previous"]] {
        for field in ["wrapped_data_key", "wrapped_ring"] {
            if let Some(h) = split[field].as_str() {
                out.push(h.to_owned());
            }
        }
    }
    out
}

/// True when any file in `dir` holds `hex` or the bytes it encodes.
fn any_file_holds(dir: &Path, hex_text: &str) -> bool {
    let raw = hex::decode(hex_text).unwrap();
    std::fs::read_dir(dir).unwrap().any(|e| {
        let bytes = std::fs::read(e.unwrap().path()).unwrap();
        [hex_text.as_bytes(), raw.as_slice()]
            .iter()
            .any(|n| bytes.windows(n.len()).any(|w| w == *n))
    })
}

/// What old shares give offline: the root key they rebuild.
fn old_root_key(files: &[(PathBuf, PathBuf)]) -> RootKey {
    let mut shares = Vec::new();
    let mut params = None;
    for (file, identity) in files {
        let id: age::x25519::Identity = std::fs::read_to_string(identity)
            .unwrap()
            .lines()
            .find(|l| l.starts_with("AGE-SECRET-KEY-"))
            .unwrap()
            .parse()
            .unwrap();
        let plain = age::decrypt(&id, &std::fs::read(file).unwrap()).unwrap();
        let s: BreakGlassShare = serde_json::from_slice(&plain).unwrap();
        params = Some(ShareParams::new(s.shares, s.threshold, s.epoch).unwrap());
        shares.push(s.share);
    }
    combine(&params.unwrap(), &shares).unwrap()
}

/// Moves the audit log away, so the next Nexus (on another copy of the data) starts its own.
/// The audit log's files (the live one and any rotated ones; not the lock).
fn audit_files(c: &Cluster) -> Vec<PathBuf> {
    std::fs::read_dir(c.dir.path())
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .filter(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with("audit.log") && !n.ends_with(".lock"))
        })
        .collect()
}

/// Copies the audit log's files into `to`: a backup holds the log with the data, since Nexus
/// refuses a log that does not reach the checkpoint stored with the data.
fn save_audit_log(c: &Cluster, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for f in audit_files(c) {
        std::fs::copy(&f, to.join(f.file_name().unwrap())).unwrap();
    }
}

/// Puts the audit log saved in `from` back in place of the current one.
fn restore_audit_log(c: &Cluster, from: &Path) {
    for f in audit_files(c) {
        std::fs::remove_file(f).unwrap();
    }
    for f in std::fs::read_dir(from).unwrap().flatten() {
        std::fs::copy(f.path(), c.dir.path().join(f.file_name())).unwrap();
    }
}

fn wrapped(hex_text: &str) -> WrappedKey {
    WrappedKey::from_bytes(&hex::decode(hex_text).unwrap()).unwrap()
}

#[test]
fn old_shares_and_old_backup_cannot_read_after_rotation() {
    let (mut c, ops) = cluster_with_secrets(5);
    let Operators {
        admin,
        recoverer,
        restorer,
    } = ops;
    ok(&c.spike(
        &admin,
        &[
            "policy",
            "create",
            "web",
            "--spiffe-id-pattern",
            "spiffe://spike.test/web",
            "--path-pattern",
            "app/**",
            "--permissions",
            "read",
        ],
    ));

    // The exposed shares: a break-glass export whose files the attacker holds.
    let keys = c.dir.path().join("custodians");
    std::fs::create_dir_all(&keys).unwrap();
    let (alice, alice_cu) = custodian(&c, &admin, &keys, "alice");
    let (bob, bob_cu) = custodian(&c, &admin, &keys, "bob");
    let export = c.dir.path().join("old-export");
    ok(&recover(&c, &recoverer, &[alice_cu, bob_cu], &export));
    let files = [
        (export.join("alice.share.age"), alice.clone()),
        (export.join("bob.share.age"), bob.clone()),
    ];

    // The backup, taken before the rotation.
    let data = c.data_dir.clone().unwrap();
    let backup = c.dir.path().join("backup");
    let backup_audit = c.dir.path().join("backup-audit");
    c.kill_nexus();
    copy_dir(&data, &backup);
    save_audit_log(&c, &backup_audit);
    restart_nexus_and_wait(&mut c);

    // A cipher-API ciphertext a workload keeps outside the store.
    let plain = c.dir.path().join("plain.txt");
    let kept = c.dir.path().join("kept.ct");
    std::fs::write(&plain, b"kept by a workload").unwrap();
    let f = |p: &Path| p.display().to_string();
    ok(&c.spike(
        &admin,
        &[
            "cipher",
            "encrypt",
            "--context",
            "app/x",
            "-f",
            &f(&plain),
            "--out",
            &f(&kept),
        ],
    ));

    let out = ok(&c.spike(&admin, &["operator", "rotate", "--wait"]));
    assert!(out.contains("re-encryption done"), "{out}");
    ok(&c.spike(&admin, &["secret", "put", "app/after", "v=after-rotation"]));
    let status = ok(&c.spike(&admin, &["status"]));
    assert!(status.contains("no older data key held"), "{status}");
    // Not for callers without administration rights.
    let status = ok(&c.spike(&c.pki.svid("/web"), &["status"]));
    assert!(!status.contains("data key"), "{status}");
    let metrics = http_get(c.nexus_health, "/metrics").unwrap().1;
    assert!(metrics.contains("spike_reencrypt_remaining 0"), "{metrics}");
    assert!(
        metrics.contains("spike_data_key_older_generations 0"),
        "{metrics}"
    );
    assert_secrets(&c, &admin, 5);
    // It still decrypts: the old data key's cipher subkey is kept for that alone.
    let back = c.dir.path().join("back.txt");
    ok(&c.spike(
        &admin,
        &[
            "cipher",
            "decrypt",
            "--context",
            "app/x",
            "-f",
            &f(&kept),
            "--out",
            &f(&back),
        ],
    ));
    assert_eq!(std::fs::read(&back).unwrap(), b"kept by a workload");

    // The live data directory after the rotation.
    let live = c.dir.path().join("live-copy");
    c.kill_nexus();
    copy_dir(&data, &live);

    // Offline, old shares + old backup: the old root key opens the backup's data key (the
    // data as it was then)...
    let old_root = old_root_key(&files);
    let backup_record = init_record(&backup);
    let old_data: DataKey = old_root
        .unwrap(&wrapped(
            backup_record["wrapped_data_key"].as_str().unwrap(),
        ))
        .unwrap();
    // ...but nothing in the live data: no file keeps a key sealed under the old root key,
    // the live record's keys refuse it, and no stored record is under the old data key,
    // the one written after the rotation included.
    for h in sealed_keys(&backup_record) {
        assert!(
            !any_file_holds(&live, &h),
            "an old sealed key lingers in the live files"
        );
    }
    let live_record = init_record(&live);
    assert!(live_record["previous"].is_null());
    assert!(
        old_root
            .unwrap(&wrapped(live_record["wrapped_data_key"].as_str().unwrap()))
            .is_err()
    );
    let ring = hex::decode(live_record["wrapped_ring"].as_str().unwrap()).unwrap();
    assert!(old_root.open_ring(&ring).is_err());
    let values = all_values(&live);
    assert!(values.len() > 5, "the live store holds the secrets");
    assert!(
        values
            .iter()
            .all(|v| v.get(1..5) != Some(&old_data.key_id().to_bytes()[..])),
        "a live record is still under the old data key"
    );

    // Through Nexus: the old files do not open the live copy...
    for i in 1..=c.keepers.len() {
        c.kill_keeper(i);
    }
    c.data_dir = Some(live);
    c.start_nexus();
    refused(
        &restore(&c, &restorer, &files[0].0, &alice),
        1,
        "no longer works",
    );
    c.kill_nexus();

    // ...and open the backup only with the backup's data: the secret written after the
    // rotation is not there.
    c.data_dir = Some(backup);
    restore_audit_log(&c, &backup_audit);
    c.start_nexus();
    ok(&restore(&c, &restorer, &files[0].0, &alice));
    let out = ok(&restore(&c, &restorer, &files[1].0, &bob));
    assert!(out.contains("Nexus is open"), "{out}");
    assert!(c.wait_ready(Duration::from_secs(10)));
    assert_secrets(&c, &admin, 5);
    let out = c.spike(&admin, &["secret", "get", "app/after", "v"]);
    assert!(!out.status.success(), "{}", text(&out));
    assert!(
        !c.all_logs().contains("value-1"),
        "a secret value reached a log"
    );
}

/// How often Nexus's log says the fault hook paused at `step`.
fn pauses(c: &Cluster, step: &str) -> usize {
    log_lines(c, &["fault hook: paused", step])
}

fn reencryption_done(c: &Cluster, admin: &PemFiles) -> bool {
    let out = c.spike(admin, &["status"]);
    out.status.success() && String::from_utf8_lossy(&out.stdout).contains("no older data key held")
}

#[test]
fn re_encryption_killed_midway_resumes_and_every_secret_stays_readable() {
    const N: usize = 40;
    let mut c = Cluster::new(3);
    c.start_all(2);
    let admin = c.pki.svid("/spike/pilot/role/superuser");
    put_secrets(&c, &admin, N);
    c.kill_nexus();
    c.nexus_env = vec![("SPIKE_FAULT_PAUSE_AT".into(), "reencrypt:page".into())];
    c.start_nexus();
    c.nexus_env.clear();
    assert!(c.wait_ready(Duration::from_secs(30)), "{:?}", c.readyz());
    ok(&c.spike(&admin, &["operator", "rotate"]));
    assert!(
        wait_until(Duration::from_secs(30), || pauses(&c, "reencrypt:page") > 0),
        "re-encryption never reached its first page"
    );
    // Mid-way: some records moved, the older key still held, every secret readable.
    let status = ok(&c.spike(&admin, &["status"]));
    assert!(status.contains("1 older still held"), "{status}");
    assert_secrets(&c, &admin, N);
    c.kill_nexus();

    restart_nexus_and_wait(&mut c);
    assert_secrets(&c, &admin, N);
    assert!(
        wait_until(Duration::from_secs(60), || reencryption_done(&c, &admin)),
        "re-encryption did not finish after the restart"
    );
    assert_secrets(&c, &admin, N);
    assert!(log_lines(&c, &["re-encryption finished"]) > 0);
}
