//! What the `spike` CLI says when it cannot talk to Nexus because of an identity: its own SVID
//! outside its validity window, or a server that is not `/spike/nexus`.

use std::process::{Command, Output, Stdio};
use std::time::{Duration, SystemTime};

use spike_e2e::{Cluster, identity_args, text};

/// Runs `spike status` with `identity` against `addr` (not necessarily Nexus).
fn spike_at(c: &Cluster, identity: &spike_agent::PemFiles, addr: &str) -> Output {
    Command::new(&c.bins.spike)
        .arg("status")
        .args(identity_args(identity))
        .args(["--nexus", addr, "--timeout", "10s"])
        .env_remove("SPIFFE_ENDPOINT_SOCKET")
        .stdin(Stdio::null())
        .output()
        .expect("run spike")
}

/// Writes an SVID for the superuser valid from `from` to `until`.
fn svid_valid(
    c: &Cluster,
    name: &str,
    from: SystemTime,
    until: SystemTime,
) -> spike_agent::PemFiles {
    let dir = c.dir.path().join(name);
    std::fs::create_dir_all(&dir).unwrap();
    c.pki
        .ca
        .issue_with_validity(&c.pki.id("/spike/pilot/role/superuser"), from, until)
        .unwrap()
        .write_pem_files(&dir)
        .unwrap()
}

#[test]
fn the_cli_names_its_own_unusable_svid_and_a_server_that_is_not_nexus() {
    let mut c = Cluster::new(2);
    c.start_all(2);
    let nexus = format!("127.0.0.1:{}", c.nexus_port);
    let now = SystemTime::now();
    let hour = Duration::from_secs(3600);

    // Positive control: a valid SVID against Nexus works.
    let admin = c.pki.svid("/spike/pilot/role/superuser");
    let out = spike_at(&c, &admin, &nexus);
    assert!(out.status.success(), "{}", text(&out));

    // Its own SVID expired: said plainly, with the ID and when, before any connection.
    let expired = svid_valid(&c, "expired", now - 2 * hour, now - hour);
    let out = spike_at(&c, &expired, &nexus);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(5), "{}", text(&out));
    assert!(err.contains("SVID"), "{}", text(&out));
    assert!(err.contains("expired"), "{}", text(&out));
    assert!(
        err.contains("spiffe://spike.test/spike/pilot/role/superuser"),
        "{}",
        text(&out)
    );
    assert!(!err.contains("connection error"), "{}", text(&out));

    // Not yet valid: said plainly too.
    let early = svid_valid(&c, "early", now + hour, now + 2 * hour);
    let out = spike_at(&c, &early, &nexus);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(5), "{}", text(&out));
    assert!(err.contains("not valid before"), "{}", text(&out));

    // A keeper's address given as Nexus's: the CLI says which SPIFFE ID answered.
    let keeper = format!("127.0.0.1:{}", c.keeper_ports[0].api);
    let out = spike_at(&c, &admin, &keeper);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(5), "{}", text(&out));
    assert!(
        err.contains(
            "presented spiffe://spike.test/spike/keeper/1, expected spiffe://spike.test/spike/nexus"
        ),
        "{}",
        text(&out)
    );
    assert!(
        err.contains("point it at this trust domain's Nexus"),
        "{}",
        text(&out)
    );
}
