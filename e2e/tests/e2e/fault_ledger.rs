//! The fault ledger: writers under their own SPIFFE identities put (with and without
//! compare-and-set), delete and batch-write against a persistent Nexus and record every
//! acknowledged operation (`spike_e2e::ledger`), while Nexus is SIGKILLed at random moments,
//! some of them in the middle of a root-key rotation or rekey, and while keepers are killed
//! and frozen. After every restart each writer reads all of its paths back: nothing
//! acknowledged is missing, nothing unacknowledged is half-applied, versions are exactly the
//! acknowledged ones, Nexus unsealed itself, and the audit chain verifies.
//!
//! `SPIKE_FAULT_CYCLES` sets the number of Nexus kills (20 by default, as CI runs it; 200 by
//! hand, see docs/reliability.md) and `SPIKE_FAULT_SEED` replays a run (the seed is printed).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use spike_e2e::ledger::{Rng, RunEnd, Tally, Writer};
use spike_e2e::{Cluster, http_get, text, wait_until};
use spike_runtime::net::MtlsClient;

use crate::lifecycle::ok;

const WRITERS: usize = 4;
const PATHS_PER_WRITER: usize = 6;
/// Operations one writer may send in one cycle: far more than fit before the kill.
const BUDGET: u64 = 100_000;
const SUPERUSER: &str = "/spike/pilot/role/superuser";

fn cycles() -> usize {
    std::env::var("SPIKE_FAULT_CYCLES")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(20)
}

fn runtime() -> tokio::runtime::Runtime {
    spike_runtime::tls::install_crypto_provider();
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

/// A cluster of 3 keepers (threshold 2) and a persistent Nexus, with one policy and one
/// client per writer: each writer may read, write, delete and list only its own paths.
fn cluster_with_writers(rt: &tokio::runtime::Runtime, seed: u64) -> (Cluster, Vec<Writer>) {
    let mut c = Cluster::new(3);
    c.start_all(2);
    let admin = c.pki.svid(SUPERUSER);
    let mut writers = Vec::new();
    for w in 1..=WRITERS {
        let who = format!("/app/ledger/w{w}");
        let id = c.pki.id(&who).to_string();
        let prefix = format!("ledger/w{w}");
        ok(&c.policy_create(
            &admin,
            &format!("ledger-w{w}"),
            &id,
            &format!("{prefix}/**"),
            "read,write,delete,list",
        ));
        let source = rt.block_on(c.svid_source(&who, Duration::from_secs(10)));
        let client = MtlsClient::new(format!("127.0.0.1:{}", c.nexus_port), c.nexus_id(), source)
            .unwrap()
            .with_timeout(Duration::from_secs(10));
        let name = format!("w{w}");
        writers.push(Writer::new(
            &name,
            &prefix,
            PATHS_PER_WRITER,
            client,
            seed ^ w as u64,
        ));
    }
    (c, writers)
}

/// Starts every writer on the runtime; `stop` ends them.
fn start_writers(
    rt: &tokio::runtime::Runtime,
    writers: Vec<Writer>,
    stop: &Arc<AtomicBool>,
) -> Vec<tokio::task::JoinHandle<(Writer, Result<RunEnd, spike_e2e::ledger::Violation>)>> {
    writers
        .into_iter()
        .map(|mut w| {
            let stop = stop.clone();
            rt.spawn(async move {
                let end = w.run(&stop, BUDGET).await;
                (w, end)
            })
        })
        .collect()
}

/// Raises `stop` and collects the writers with how each run ended.
fn join_writers(
    rt: &tokio::runtime::Runtime,
    stop: &AtomicBool,
    handles: Vec<tokio::task::JoinHandle<(Writer, Result<RunEnd, spike_e2e::ledger::Violation>)>>,
) -> Vec<(Writer, RunEnd)> {
    stop.store(true, Ordering::Relaxed);
    rt.block_on(async {
        let mut out = Vec::new();
        for h in handles {
            let (w, end) = tokio::time::timeout(Duration::from_secs(30), h)
                .await
                .expect("a writer did not stop")
                .unwrap();
            let end = end.unwrap_or_else(|v| panic!("{v}"));
            out.push((w, end));
        }
        out
    })
}

/// Every writer reads all of its paths back and holds Nexus to its ledger.
fn check_all(rt: &tokio::runtime::Runtime, writers: &mut [Writer], when: &str) {
    for w in writers.iter_mut() {
        rt.block_on(w.check())
            .unwrap_or_else(|v| panic!("after {when}: {v}"));
    }
}

fn audit_verifies(c: &Cluster, when: &str) {
    let out = c.spike(&c.pki.svid(SUPERUSER), &["audit", "verify"]);
    assert!(
        out.status.success(),
        "audit chain after {when}: {}",
        text(&out)
    );
}

fn total(writers: &[Writer]) -> Tally {
    writers.iter().fold(Tally::default(), |mut t, w| {
        let x = w.tally();
        t.acked += x.acked;
        t.lost += x.lost;
        t.refused += x.refused;
        t.ambiguous_conflicts += x.ambiguous_conflicts;
        t.checked += x.checked;
        t
    })
}

/// Registers every value the writers sent, so the cluster's drop scans what the processes
/// wrote (logs, data directory, audit log, metrics) for each.
fn register_values(c: &Cluster, writers: &[Writer]) {
    for w in writers {
        for v in w.values_sent() {
            c.known_value(&v);
        }
    }
}

#[test]
fn the_leak_scan_finds_a_known_value_in_any_file_the_cluster_holds() {
    let c = Cluster::new(0);
    let nested = c.dir.path().join("data").join("deep");
    std::fs::create_dir_all(&nested).unwrap();
    let file = nested.join("store.bin");
    std::fs::write(&file, b"\x00\x01 ledger-leak-probe-42 \xff").unwrap();
    c.known_value("ledger-leak-probe-42");
    c.known_value("ledger-not-there-7");
    let leaked = c.leaked_values();
    assert_eq!(
        leaked,
        vec![(
            file.display().to_string(),
            "ledger-leak-probe-42".to_owned()
        )]
    );
    // Gone again, so the drop's own scan passes.
    std::fs::remove_file(&file).unwrap();
    assert!(c.leaked_values().is_empty());
}

#[test]
fn nexus_killed_at_random_moments_loses_no_acknowledged_write() {
    let seed = Rng::seed_from_env();
    eprintln!("fault ledger seed: SPIKE_FAULT_SEED={seed}");
    let mut rng = Rng::new(seed);
    let rt = runtime();
    let (mut c, mut writers) = cluster_with_writers(&rt, seed);
    let admin = c.pki.svid(SUPERUSER);
    let cycles = cycles();
    let (mut changes_run, mut changes_cut) = (0, 0);
    for cycle in 1..=cycles {
        let stop = Arc::new(AtomicBool::new(false));
        let handles = start_writers(&rt, std::mem::take(&mut writers), &stop);
        // Every third cycle a root-key change runs while the writers write and the kill lands.
        let change: Option<&[&str]> = match cycle % 6 {
            0 => Some(&["operator", "rotate"]),
            3 => Some(&["operator", "rekey", "--shares", "3", "--threshold", "2"]),
            _ => None,
        };
        let delay = Duration::from_millis(150 + rng.below(600));
        std::thread::scope(|s| {
            let cli = change.map(|args| {
                changes_run += 1;
                let c = &c;
                let admin = &admin;
                s.spawn(move || {
                    std::thread::sleep(delay / 2);
                    c.spike(admin, args)
                })
            });
            std::thread::sleep(delay);
            if let Some(p) = &c.nexus {
                p.signal(rustix::process::Signal::KILL);
            }
            // The change either finished before the kill or failed with it; the check below
            // holds either way.
            if let Some(cli) = cli
                && !cli.join().unwrap().status.success()
            {
                changes_cut += 1;
            }
        });
        c.kill_nexus();
        writers = join_writers(&rt, &stop, handles)
            .into_iter()
            .map(|(w, end)| {
                assert!(
                    matches!(end, RunEnd::Lost(_) | RunEnd::Stopped),
                    "cycle {cycle}: a writer ended with {end:?}"
                );
                w
            })
            .collect();
        c.start_nexus();
        assert!(
            c.wait_ready(Duration::from_secs(30)),
            "cycle {cycle}: Nexus did not unseal by itself: {:?}",
            c.readyz()
        );
        let when = format!("kill {cycle} of {cycles}");
        check_all(&rt, &mut writers, &when);
        audit_verifies(&c, &when);
    }
    let t = total(&writers);
    eprintln!(
        "fault ledger: {cycles} kills, {changes_run} while a root-key change ran \
         ({changes_cut} of those cut it short), {t:?}"
    );
    // The kills must have landed among writes, not only between runs.
    assert!(
        t.acked > cycles as u64 * 5,
        "too few writes acknowledged: {t:?}"
    );
    assert!(t.lost > 0, "no kill interrupted a write: {t:?}");
    register_values(&c, &writers);
}

#[test]
fn keepers_killed_or_frozen_are_invisible_to_clients_and_a_lost_threshold_heals() {
    let seed = Rng::seed_from_env();
    eprintln!("fault ledger seed: SPIKE_FAULT_SEED={seed}");
    let mut rng = Rng::new(seed);
    let rt = runtime();
    let (mut c, mut writers) = cluster_with_writers(&rt, seed);
    // Threshold kept: one keeper of three at a time is killed (its share is lost) and started
    // empty again; Nexus refills it. Writers must not see a single failure.
    let stop = Arc::new(AtomicBool::new(false));
    let handles = start_writers(&rt, std::mem::take(&mut writers), &stop);
    for _ in 0..6 {
        let k = 1 + rng.below(3) as usize;
        c.kill_keeper(k);
        std::thread::sleep(Duration::from_millis(100 + rng.below(300)));
        c.start_keeper(k);
        std::thread::sleep(Duration::from_millis(400 + rng.below(400)));
    }
    for (w, end) in join_writers(&rt, &stop, handles) {
        assert_eq!(end, RunEnd::Stopped, "{w:?}: a client saw a keeper fault");
        writers.push(w);
    }
    let t = total(&writers);
    assert!(t.acked > 50, "too few writes while keepers failed: {t:?}");
    check_all(&rt, &mut writers, "keeper restarts");

    // Each keeper in turn loses its share and is refilled before the next one loses its own;
    // then Nexus restarts and can open only from shares it pushed to restarted keepers.
    for k in 1..=3 {
        c.kill_keeper(k);
        c.start_keeper(k);
        let health = c.keeper_ports[k - 1].health;
        assert!(
            wait_until(Duration::from_secs(20), || matches!(
                http_get(health, "/readyz"),
                Some((200, _))
            )),
            "Nexus did not refill keeper {k}"
        );
    }
    c.kill_nexus();
    c.start_nexus();
    assert!(
        c.wait_ready(Duration::from_secs(30)),
        "Nexus did not open from refilled keepers: {:?}",
        c.readyz()
    );
    check_all(&rt, &mut writers, "a Nexus restart on refilled keepers");

    // Threshold lost: two keepers frozen (shares kept, unreachable) while Nexus restarts. It
    // stays sealed and says why, then opens by itself once they answer again.
    c.stop_keeper(1);
    c.stop_keeper(2);
    c.kill_nexus();
    c.start_nexus();
    let reason = || c.readyz().map(|(_, body)| body).unwrap_or_default();
    assert!(
        wait_until(Duration::from_secs(20), || reason().contains("unreachable")),
        "sealed without saying the keepers are unreachable: {:?}",
        c.readyz()
    );
    assert!(matches!(c.readyz(), Some((503, _))), "{:?}", c.readyz());
    c.continue_keeper(1);
    c.continue_keeper(2);
    assert!(
        c.wait_ready(Duration::from_secs(30)),
        "Nexus did not open by itself once the keepers answered: {:?}",
        c.readyz()
    );
    check_all(&rt, &mut writers, "the threshold came back");
    audit_verifies(&c, "keeper faults");
    register_values(&c, &writers);
}

/// A reader's SVID files and a source that re-reads them, as a workload given PEM files has.
async fn file_source(
    c: &Cluster,
    who: &str,
) -> (
    spike_agent::PemFiles,
    Arc<dyn spike_runtime::svid::SvidSource>,
) {
    let files = c.pki.svid(who);
    let source = spike_runtime::svid::SourceConfig::PemFiles(spike_runtime::svid::PemPaths {
        cert: files.cert.clone(),
        key: files.key.clone(),
        bundle: files.bundle.clone(),
    })
    .open(
        &c.pki.td,
        Duration::from_secs(10),
        spike_runtime::svid::Patience::Service,
    )
    .await
    .unwrap();
    (files, source)
}

#[test]
fn readers_see_no_failure_while_nexus_and_their_own_svids_rotate_from_files() {
    const READERS: usize = 3;
    const ROTATIONS: usize = 3;
    let rt = runtime();
    let mut c = Cluster::new(3);
    c.start_all(2);
    let admin = c.pki.svid(SUPERUSER);
    ok(&c.spike(
        &admin,
        &["secret", "put", "rot/shared", "v=ledger-rotation-1"],
    ));
    ok(&c.policy_create(
        &admin,
        "rot-readers",
        "spiffe://spike.test/app/reader/**",
        "rot/**",
        "read",
    ));
    let addr = format!("127.0.0.1:{}", c.nexus_port);
    let stop = Arc::new(AtomicBool::new(false));
    let mut reader_files = Vec::new();
    let mut handles = Vec::new();
    for r in 1..=READERS {
        let who = format!("/app/reader/{r}");
        let (files, source) = rt.block_on(file_source(&c, &who));
        reader_files.push((c.pki.id(&who), files));
        let (stop, addr, nexus) = (stop.clone(), addr.clone(), c.nexus_id());
        handles.push(rt.spawn(async move {
            // Bounded: the stop flag, else a count far above what the rotations take.
            let go = || !stop.load(Ordering::Relaxed);
            spike_e2e::readers::read_while(addr, nexus, source, "rot/shared", go, 200_000).await
        }));
    }
    let reloads = |c: &Cluster| crate::recovery::log_lines(c, &["reloaded SVID from PEM files"]);
    for round in 1..=ROTATIONS {
        let before = reloads(&c);
        c.rotate_nexus_svid();
        for (id, files) in &reader_files {
            let dir = files.cert.parent().unwrap();
            c.pki
                .ca
                .issue(id, Duration::from_secs(3600))
                .unwrap()
                .write_pem_files(dir)
                .unwrap();
        }
        assert!(
            wait_until(Duration::from_secs(15), || reloads(&c) > before),
            "round {round}: Nexus never reloaded its rotated SVID"
        );
        // Past the readers' own poll (2 s), so their new certificates are presented too.
        std::thread::sleep(Duration::from_millis(2500));
    }
    stop.store(true, Ordering::Relaxed);
    for (r, h) in handles.into_iter().enumerate() {
        let (reads, failures) = rt.block_on(h).unwrap();
        assert!(
            failures.is_empty(),
            "reader {}: {} of {reads} reads failed during SVID rotation: {:?}",
            r + 1,
            failures.len(),
            &failures[..failures.len().min(5)]
        );
        assert!(reads > 100, "reader {}: only {reads} reads", r + 1);
    }
}
