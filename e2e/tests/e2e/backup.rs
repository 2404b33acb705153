//! Backups taken while writers run: a consistent snapshot, sealed, with a manifest; only the
//! superuser and the backup role may take one. (Restoring one is `spike operator
//! restore-backup`, still to come; the unit tests open the payload with its key.)

use std::os::unix::fs::PermissionsExt as _;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use spike_e2e::{Cluster, text};

const SUPERUSER: &str = "/spike/pilot/role/superuser";

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len()).any(|w| w == needle)
}

#[test]
fn a_backup_taken_while_writers_run_is_consistent_sealed_and_guarded() {
    let mut c = Cluster::new(3);
    c.start_all(2);
    let admin = c.pki.svid(SUPERUSER);
    let before = c.spike(
        &admin,
        &["secret", "put", "app/before", "v=known-backup-value"],
    );
    assert!(before.status.success(), "{}", text(&before));

    // A writer puts new secrets the whole time the backup is taken.
    let c = Arc::new(c);
    let stop = Arc::new(AtomicBool::new(false));
    let acked = Arc::new(AtomicUsize::new(0));
    let writer = {
        let (c, stop, acked) = (Arc::clone(&c), Arc::clone(&stop), Arc::clone(&acked));
        let admin = admin.clone();
        std::thread::spawn(move || {
            for i in 0..400 {
                if stop.load(Ordering::SeqCst) {
                    break;
                }
                let out = c.spike(&admin, &["secret", "put", &format!("load/{i}"), "v=x"]);
                assert!(out.status.success(), "{}", text(&out));
                acked.fetch_add(1, Ordering::SeqCst);
            }
        })
    };
    while acked.load(Ordering::SeqCst) < 5 {
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    let at_start = acked.load(Ordering::SeqCst);
    let file = c.dir.path().join("nexus.backup");
    let out = c.spike(
        &admin,
        &[
            "-o",
            "json",
            "operator",
            "backup",
            "--out",
            file.to_str().unwrap(),
        ],
    );
    let at_end = acked.load(Ordering::SeqCst);
    stop.store(true, Ordering::SeqCst);
    writer.join().unwrap();
    assert!(out.status.success(), "{}", text(&out));
    let said: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let manifest = &said["manifest"];

    // The snapshot holds every write acknowledged before it began, and none of those that
    // were not yet made when it ended; the metadata of each is with its version.
    let secrets = manifest["tables"]["secrets"].as_u64().unwrap() as usize;
    let versions = manifest["tables"]["versions"].as_u64().unwrap() as usize;
    assert!(
        (1 + at_start..=1 + at_end + 1).contains(&secrets),
        "{secrets} secrets; {at_start}..{at_end} acknowledged around it: {manifest}"
    );
    assert_eq!(secrets, versions, "{manifest}");
    assert!(manifest["tables"]["policies"].is_null() || manifest["tables"]["policies"].is_u64());
    assert!(manifest["tables"].get("audit").is_none(), "{manifest}");
    assert!(manifest["auditHead"].as_u64().is_some(), "{manifest}");
    assert!(
        manifest["storeGeneration"].as_u64().unwrap() > 0,
        "{manifest}"
    );

    let bytes = std::fs::read(&file).unwrap();
    assert!(bytes.starts_with(b"SPIKE-BACKUP\n"));
    assert!(!contains(&bytes, b"known-backup-value"), "a value in clear");
    let mode = std::fs::metadata(&file).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);

    // Never over an existing file.
    let again = c.spike(
        &admin,
        &["operator", "backup", "--out", file.to_str().unwrap()],
    );
    assert!(!again.status.success());
    assert!(text(&again).contains("never overwrite"), "{}", text(&again));
    assert_eq!(std::fs::read(&file).unwrap(), bytes);

    // The backup role may; a workload with no policy, or the restore role, may not.
    let role = c.pki.svid("/spike/pilot/role/backup");
    let second = c.dir.path().join("second.backup");
    let out = c.spike(
        &role,
        &["operator", "backup", "--out", second.to_str().unwrap()],
    );
    assert!(out.status.success(), "{}", text(&out));
    assert!(text(&out).contains("records"), "{}", text(&out));
    for who in ["/workload/no-policy", "/spike/pilot/role/restore"] {
        let svid = c.pki.svid(who);
        let denied = c.dir.path().join("denied.backup");
        let out = c.spike(
            &svid,
            &["operator", "backup", "--out", denied.to_str().unwrap()],
        );
        assert!(!out.status.success(), "{who}: {}", text(&out));
        assert!(text(&out).contains("forbidden"), "{who}: {}", text(&out));
        assert!(!denied.exists(), "{who}");
    }
}
