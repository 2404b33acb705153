//! Rotation and rekey without a crash window: Nexus is SIGKILLed at each step of a root-key
//! change (stopped there by its `SPIKE_FAULT_PAUSE_AT` hook, so the kill lands exactly on the
//! step), once or several times in a row, and each time it opens again by itself with every
//! secret readable.

use std::sync::Arc;
use std::time::Duration;

use http::{Method, StatusCode};
use spike_agent::PemFiles;
use spike_core::id::Builtin;
use spike_e2e::{Cluster, text, wait_until};
use spike_runtime::net::MtlsClient;
use spike_runtime::svid::{Identity, StaticSource};

use crate::lifecycle::{assert_secrets, ok, put_secrets, restart_nexus_and_wait};
use crate::recovery::log_lines;

/// The hook's variable (nexus/src/fault.rs).
const PAUSE_AT: &str = "SPIKE_FAULT_PAUSE_AT";
const SECRETS: usize = 3;

/// How many times Nexus's log says it paused at `step`.
fn pauses(c: &Cluster, step: &str) -> usize {
    log_lines(c, &["fault hook: paused", step])
}

/// Starts Nexus (already killed) armed to pause at `step`, waits until it pauses there while
/// `change` runs (or, for a `redo:` step, while it opens by itself), and SIGKILLs it.
fn kill_at(c: &mut Cluster, admin: &PemFiles, step: &str, change: Option<&[&str]>) {
    let before = pauses(c, step);
    c.nexus_env = vec![(PAUSE_AT.into(), step.into())];
    c.start_nexus();
    c.nexus_env.clear();
    let paused = |c: &Cluster| wait_until(Duration::from_secs(30), || pauses(c, step) > before);
    match change {
        Some(args) => {
            assert!(c.wait_ready(Duration::from_secs(30)), "{:?}", c.readyz());
            std::thread::scope(|s| {
                // The CLI waits on the paused Nexus; it fails once Nexus is killed.
                let cli = s.spawn(|| c.spike(admin, args));
                assert!(paused(c), "Nexus never reached {step}");
                if let Some(p) = &c.nexus {
                    p.signal(rustix::process::Signal::KILL);
                }
                let out = cli.join().unwrap();
                assert!(!out.status.success(), "{step}: {}", text(&out));
            });
        }
        None => assert!(paused(c), "Nexus never reached {step}"),
    }
    c.kill_nexus();
}

/// Starts Nexus with no hook: it must open by itself and serve every secret.
fn opens_by_itself(c: &mut Cluster, admin: &PemFiles) {
    restart_nexus_and_wait(c);
    assert_secrets(c, admin, SECRETS);
}

/// A clean change must now go through completely: the previous split was finished, and no
/// keeper keeps a share of an old split (that is what a rotation revokes).
fn clean_change_completes(c: &Cluster, admin: &PemFiles, args: &[&str]) {
    let out = ok(&c.spike(admin, args));
    assert!(out.contains("3 keepers hold"), "{out}");
    assert_secrets(c, admin, SECRETS);
    assert!(
        wait_until(Duration::from_secs(30), || previous_shares_held(c) == 0),
        "keepers still hold a previous share after the change completed"
    );
}

/// How many keepers answer `GET /v1/share/previous` with a share, asked as Nexus.
fn previous_shares_held(c: &Cluster) -> usize {
    spike_runtime::tls::install_crypto_provider();
    let files = c.pki.svid("/spike/nexus");
    let identity = Identity::from_pem(
        &c.pki.td,
        &std::fs::read(&files.cert).unwrap(),
        &std::fs::read(&files.key).unwrap(),
        &std::fs::read(&files.bundle).unwrap(),
    )
    .unwrap();
    let source = Arc::new(StaticSource::new(c.pki.td.clone(), identity));
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    c.keeper_ports
        .iter()
        .enumerate()
        .filter(|(i, ports)| {
            let index = u8::try_from(i + 1).unwrap();
            let keeper = MtlsClient::new(
                format!("127.0.0.1:{}", ports.api),
                Builtin::Keeper(index).id(&c.pki.td),
                source.clone(),
            )
            .unwrap();
            let r = rt
                .block_on(keeper.send(Method::GET, "/v1/share/previous", None))
                .unwrap();
            r.status == StatusCode::OK
        })
        .count()
}

const STEPS: [&str; 5] = [
    "change:committed",
    "change:pushed:1",
    "change:pushed:2",
    "change:pushed:3",
    "change:finished",
];

#[test]
fn a_kill_at_any_step_of_a_rotation_or_rekey_heals_by_itself() {
    let mut c = Cluster::new(3);
    c.start_all(2);
    let admin = c.pki.svid("/spike/pilot/role/superuser");
    put_secrets(&c, &admin, SECRETS);
    let rotate: &[&str] = &["operator", "rotate"];
    let rekey: &[&str] = &["operator", "rekey", "--shares", "3", "--threshold", "3"];
    for change in [rotate, rekey] {
        for step in STEPS {
            c.kill_nexus();
            kill_at(&mut c, &admin, step, Some(change));
            opens_by_itself(&mut c, &admin);
        }
    }
    clean_change_completes(&c, &admin, rotate);
    let logs = c.all_logs();
    assert!(
        logs.contains("was redone with a fresh root key"),
        "no redo seen"
    );
    assert!(!logs.contains("value-1"), "a secret value reached a log");
}

#[test]
fn crashes_in_a_row_with_every_keeper_needed_never_lose_the_old_split() {
    // 3 of 3: any keeper that dropped its old share for a lost new one would strand both
    // splits (the limit before keepers kept their previous share).
    let mut c = Cluster::new(3);
    c.start_all(3);
    let admin = c.pki.svid("/spike/pilot/role/superuser");
    put_secrets(&c, &admin, SECRETS);
    c.kill_nexus();
    kill_at(
        &mut c,
        &admin,
        "change:pushed:1",
        Some(&["operator", "rotate"]),
    );
    // Each restart opens with the old split and redoes the change; kill it twice more there.
    kill_at(&mut c, &admin, "redo:pushed:2", None);
    kill_at(&mut c, &admin, "redo:pushed:1", None);
    kill_at(&mut c, &admin, "redo:committed", None);
    opens_by_itself(&mut c, &admin);
    clean_change_completes(&c, &admin, &["operator", "rotate"]);
    restart_nexus_and_wait(&mut c);
    assert_secrets(&c, &admin, SECRETS);
}
