//! Rollback protection: someone who can write the data directory puts back an older copy of
//! the store, or older copies of single records, while Nexus is stopped. The keepers hold the
//! store's latest freshness witness in memory, so Nexus refuses to open on such a store and
//! says why; an operator can still open it on purpose with `--accept-store-generation`.

use std::path::PathBuf;
use std::time::Duration;

use spike_e2e::{Cluster, copy_dir, http_get, text};
use spike_store::{Batch, RedbStore, Store, Table};

const WAIT: Duration = Duration::from_secs(20);
const SUPERUSER: &str = "/spike/pilot/role/superuser";
const POLICIES: Table = Table::new("policies");

fn stop_nexus(c: &mut Cluster) {
    let p = c.nexus.take().unwrap();
    assert!(p.terminate(WAIT), "nexus did not stop");
}

/// Long enough for several keeper rounds (the cluster's interval is 300 ms), so the keepers
/// hold the witness of every write made so far.
fn let_keepers_catch_up() {
    std::thread::sleep(Duration::from_millis(1500));
}

/// Stops Nexus, copies its data directory aside, then starts it and runs `change` as the
/// superuser, and stops it once the keepers hold the witness of the change. Returns the data
/// directory and the copy.
fn save_then_change(c: &mut Cluster, change: &[&str]) -> (PathBuf, PathBuf) {
    stop_nexus(c);
    let data = c.data_dir.clone().unwrap();
    let saved = c.dir.path().join("saved");
    copy_dir(&data, &saved);
    c.start_nexus();
    assert!(c.wait_ready(WAIT), "{:?}", c.readyz());
    let out = c.spike(&c.pki.svid(SUPERUSER), change);
    assert!(out.status.success(), "{}", text(&out));
    let_keepers_catch_up();
    stop_nexus(c);
    (data, saved)
}

#[test]
fn an_older_copy_of_the_store_is_refused_until_accepted_on_purpose() {
    let mut c = Cluster::new(3);
    c.start_all(2);
    let admin = c.pki.svid(SUPERUSER);
    let put = c.spike(&admin, &["secret", "put", "app/db", "password=old-one"]);
    assert!(put.status.success(), "{}", text(&put));
    let_keepers_catch_up();
    // Every keeper holds the witness, and the store's generation is exported.
    let (_, metrics) = http_get(c.nexus_health, "/metrics").unwrap();
    assert!(
        metrics.contains("spike_nexus_keepers_witnessing 3"),
        "{metrics}"
    );
    let generation = metrics
        .lines()
        .find_map(|l| l.strip_prefix("spike_store_generation "))
        .and_then(|g| g.parse::<u64>().ok())
        .unwrap_or_else(|| panic!("{metrics}"));
    assert!(generation > 0, "{metrics}");
    // After the copy: a delete the attacker wants undone.
    let (data, saved) = save_then_change(&mut c, &["secret", "delete", "app/db"]);

    // The old copy put back whole (the audit log, elsewhere, is left as it is).
    std::fs::remove_dir_all(&data).unwrap();
    copy_dir(&saved, &data);
    let reason = c.start_nexus_expecting_refusal("STORE ROLLED BACK");
    assert!(reason.contains("keepers remember generation"), "{reason}");
    assert!(
        reason.contains("docs/runbooks/data-directory-rolled-back.md"),
        "{reason}"
    );
    // Sealed means sealed: nothing is served from the old copy.
    let get = c.spike(&admin, &["secret", "get", "app/db"]);
    assert!(!get.status.success(), "{}", text(&get));
    // It does not give up on its own either: still refused a few rounds later.
    std::thread::sleep(Duration::from_secs(1));
    assert!(
        matches!(c.readyz(), Some((503, ref b)) if b.contains("STORE ROLLED BACK")),
        "{:?}",
        c.readyz()
    );

    // The operator decides to keep the older data: it opens, once, as told.
    c.restart_nexus_accepting(&reason);
    assert!(c.wait_ready(WAIT), "{:?}", c.readyz());
    let get = c.spike(&admin, &["secret", "get", "app/db", "password"]);
    assert!(get.status.success(), "{}", text(&get));
    assert!(text(&get).contains("old-one"), "{}", text(&get));
    let_keepers_catch_up();
    stop_nexus(&mut c);

    // From then on the keepers witness the accepted store: it opens without the setting.
    c.forget_accepted_generation();
    c.start_nexus();
    assert!(c.wait_ready(WAIT), "{:?}", c.readyz());
}

#[test]
fn a_deleted_policy_put_back_into_the_store_file_is_refused() {
    let mut c = Cluster::new(1);
    c.start_all(1);
    let admin = c.pki.svid(SUPERUSER);
    let made = c.policy_create(
        &admin,
        "wide-open",
        "spiffe://spike.test/workload/**",
        "**",
        "read,write",
    );
    assert!(made.status.success(), "{}", text(&made));
    let (data, saved) = save_then_change(&mut c, &["policy", "delete", "wide-open"]);

    // The policy's old, validly tagged records written back into the current file, which
    // keeps its own (current) witness record.
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async {
        let old = RedbStore::open(&saved).unwrap();
        let rows = old.scan(POLICIES, b"", None, 1000).await.unwrap();
        old.close().await.unwrap();
        assert!(!rows.is_empty(), "the old copy holds the policy");
        let live = RedbStore::open(&data).unwrap();
        let mut batch = Batch::new();
        for (k, v) in rows {
            batch.put(POLICIES, k, v);
        }
        live.commit(batch).await.unwrap();
        live.close().await.unwrap();
    });
    let reason = c.start_nexus_expecting_refusal("STORE EDITED");
    assert!(reason.contains("outside Nexus"), "{reason}");
}
