//! Bootstrap: exactly one root key even when raced, idempotent afterwards; who may call it.

use std::time::Duration;

use spike_e2e::{Cluster, text};

#[test]
fn racing_bootstraps_make_one_key_and_reruns_change_nothing() {
    let mut c = Cluster::new(3);
    for i in 1..=3 {
        c.start_keeper(i);
    }
    c.start_nexus();
    // Before bootstrap: sealed, and /readyz says to bootstrap.
    let (status, body) = c.readyz().expect("readyz");
    assert_eq!(status, 503);
    assert!(body.contains("bootstrap"), "{body}");

    // Only the bootstrap (or superuser) identity may initialize.
    let stranger = c.pki.svid("/ns/x/sa/y");
    let out = c.spike(&stranger, &["bootstrap", "--wait", "2s"]);
    assert_eq!(out.status.code(), Some(4), "{}", text(&out));
    let keeper = c.pki.svid("/spike/keeper/1");
    let out = c.spike(&keeper, &["bootstrap", "--wait", "2s"]);
    assert_eq!(out.status.code(), Some(4), "{}", text(&out));

    // Two bootstraps at once: both succeed, exactly one creates the key.
    let outs: Vec<_> = std::thread::scope(|s| {
        let a = s.spawn(|| c.bootstrap(2));
        let b = s.spawn(|| c.bootstrap(2));
        vec![a.join().unwrap(), b.join().unwrap()]
    });
    for o in &outs {
        assert!(o.status.success(), "{}", text(o));
    }
    let created = outs
        .iter()
        .filter(|o| String::from_utf8_lossy(&o.stdout).contains("root key created"))
        .count();
    assert_eq!(created, 1, "exactly one bootstrap may create the key");
    assert!(c.wait_ready(Duration::from_secs(20)));

    let admin = c.pki.svid("/spike/pilot/role/superuser");
    let out = c.spike(&admin, &["secret", "put", "b/x", "k=v1"]);
    assert!(out.status.success(), "{}", text(&out));

    // A later bootstrap exits 0, says so, and changes nothing.
    let out = c.bootstrap(2);
    assert!(out.status.success(), "{}", text(&out));
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("already initialized"),
        "{}",
        text(&out)
    );
    let out = c.spike(&admin, &["secret", "get", "b/x", "k"]);
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        "v1",
        "{}",
        text(&out)
    );
    // And after a restart the same key still opens the data.
    c.kill_nexus();
    c.start_nexus();
    assert!(c.wait_ready(Duration::from_secs(20)), "{:?}", c.readyz());
    let out = c.spike(&admin, &["secret", "get", "b/x", "k"]);
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        "v1",
        "{}",
        text(&out)
    );

    // Wrong parameters are refused clearly.
    let out = c.spike(
        &c.pki.svid("/spike/bootstrap"),
        &[
            "bootstrap",
            "--shares",
            "5",
            "--threshold",
            "2",
            "--wait",
            "2s",
        ],
    );
    assert!(!out.status.success());
}

#[test]
fn audit_log_verifies_and_tampering_is_detected() {
    let mut c = Cluster::new(3);
    c.start_all(2);
    let admin = c.pki.svid("/spike/pilot/role/superuser");
    for i in 0..5 {
        let out = c.spike(&admin, &["secret", "put", &format!("a/{i}"), "k=v"]);
        assert!(out.status.success(), "{}", text(&out));
    }
    let stranger = c.pki.svid("/ns/x/sa/y");
    let _ = c.spike(&stranger, &["secret", "get", "a/1"]);
    let out = c.spike(&admin, &["audit", "verify"]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(
        String::from_utf8_lossy(&out.stdout).starts_with("ok:"),
        "{}",
        text(&out)
    );

    // The log has one line per request, with caller and decision, never a value.
    let log = std::fs::read_to_string(c.dir.path().join("audit.log")).unwrap();
    assert!(log.contains("\"decision\":\"deny\""), "{log}");
    assert!(log.contains("spiffe://spike.test/ns/x/sa/y"));

    // A copy with one line changed, or one line removed, fails verification.
    let lines: Vec<&str> = log.lines().collect();
    assert!(lines.len() > 6);
    let edited = log.replacen("\"decision\":\"deny\"", "\"decision\":\"allow\"", 1);
    let removed: String = lines
        .iter()
        .enumerate()
        .filter(|(i, _)| *i != 3)
        .map(|(_, l)| format!("{l}\n"))
        .collect();
    for (name, copy) in [("edited", edited), ("removed", removed)] {
        let path = c.dir.path().join(format!("audit-{name}.jsonl"));
        std::fs::write(&path, copy).unwrap();
        let out = c.spike(
            &admin,
            &["audit", "verify", "--file", path.to_str().unwrap()],
        );
        assert_eq!(out.status.code(), Some(1), "{name}: {}", text(&out));
        assert!(
            String::from_utf8_lossy(&out.stdout).contains("TAMPERED"),
            "{}",
            text(&out)
        );
    }
    // Only the superuser may verify.
    let out = c.spike(&stranger, &["audit", "verify"]);
    assert_eq!(out.status.code(), Some(4), "{}", text(&out));
}
