//! Durability and self-unsealing: kill -9 of Nexus, keeper loss, keepers unreachable.

use std::time::Duration;

use spike_e2e::{Cluster, Proc, http_get, identity_args, text, wait_until};

#[test]
fn acknowledged_writes_survive_kill_9_and_nexus_unseals_itself() {
    let mut c = Cluster::new(3);
    c.start_all(2);
    let admin = c.pki.svid("/spike/pilot/role/superuser");
    for i in 0..20 {
        let out = c.spike(
            &admin,
            &[
                "secret",
                "put",
                &format!("crash/s{i}"),
                &format!("v=value-{i}"),
            ],
        );
        assert!(out.status.success(), "{}", text(&out));
    }
    // The last acknowledged write, then kill -9 at once.
    let out = c.spike(&admin, &["secret", "put", "crash/last", "v=acked"]);
    assert!(out.status.success(), "{}", text(&out));
    c.kill_nexus();
    c.start_nexus();
    assert!(
        c.wait_ready(Duration::from_secs(20)),
        "nexus did not unseal from keepers: {:?}",
        c.readyz()
    );
    let out = c.spike(&admin, &["secret", "get", "crash/last", "v"]);
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        "acked",
        "{}",
        text(&out)
    );
    let out = c.spike(&admin, &["secret", "get", "crash/s7", "v"]);
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        "value-7",
        "{}",
        text(&out)
    );
}

#[test]
fn keeper_loss_within_threshold_changes_nothing_and_is_healed() {
    let mut c = Cluster::new(3);
    c.start_all(2);
    let admin = c.pki.svid("/spike/pilot/role/superuser");
    let out = c.spike(&admin, &["secret", "put", "k/one", "a=1"]);
    assert!(out.status.success(), "{}", text(&out));

    // Kill keeper 3: clients notice nothing.
    c.kill_keeper(3);
    let out = c.spike(&admin, &["secret", "get", "k/one", "a"]);
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        "1",
        "{}",
        text(&out)
    );
    let out = c.spike(&admin, &["secret", "put", "k/two", "b=2"]);
    assert!(out.status.success(), "{}", text(&out));

    // Restart it empty: Nexus re-sends its share within seconds.
    c.start_keeper(3);
    let health = c.keeper_ports[2].health;
    assert!(
        wait_until(Duration::from_secs(20), || matches!(
            http_get(health, "/readyz"),
            Some((200, _))
        )),
        "keeper 3 was not re-supplied with its share"
    );

    // Now a Nexus restart with keeper 1 gone still unseals from keepers 2 and 3.
    c.kill_keeper(1);
    c.kill_nexus();
    c.start_nexus();
    assert!(c.wait_ready(Duration::from_secs(20)), "{:?}", c.readyz());
    let out = c.spike(&admin, &["secret", "get", "k/two", "b"]);
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        "2",
        "{}",
        text(&out)
    );
}

#[test]
fn below_threshold_nexus_stays_sealed_says_why_and_opens_when_keepers_return() {
    let mut c = Cluster::new(3);
    c.start_all(2);
    let admin = c.pki.svid("/spike/pilot/role/superuser");
    let out = c.spike(&admin, &["secret", "put", "s/x", "k=v"]);
    assert!(out.status.success(), "{}", text(&out));

    // Two keepers become unreachable (stopped, memory intact), then Nexus restarts.
    for i in [1usize, 2] {
        c.stop_keeper(i);
    }
    c.kill_nexus();
    c.start_nexus();
    // It stays sealed and says why, on /readyz and to clients.
    std::thread::sleep(Duration::from_secs(2));
    let (status, body) = c.readyz().expect("readyz");
    assert_eq!(status, 503, "{body}");
    assert!(body.contains("keeper"), "readyz should explain: {body}");
    let out = c.spike(&admin, &["secret", "get", "s/x"]);
    assert_eq!(out.status.code(), Some(5), "{}", text(&out));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("sealed"),
        "{}",
        text(&out)
    );
    let log_path = c.dir.path().join("nexus.log");
    assert!(
        wait_until(Duration::from_secs(15), || std::fs::read_to_string(
            &log_path
        )
        .is_ok_and(|l| l.contains("not enough keepers"))),
        "the log should say why"
    );
    let (status, body) = c.readyz().expect("readyz");
    assert_eq!(status, 503, "{body}");
    assert!(
        body.contains("1 of 2 needed (3 keepers: 1 holding a share, 0 reachable but holding none, 2 unreachable)"),
        "readyz should count the shares and tell unreachable keepers: {body}"
    );

    // The keepers come back: Nexus opens with no human step.
    for i in [1usize, 2] {
        c.continue_keeper(i);
    }
    assert!(c.wait_ready(Duration::from_secs(20)), "{:?}", c.readyz());
    let out = c.spike(&admin, &["secret", "get", "s/x", "k"]);
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        "v",
        "{}",
        text(&out)
    );
}

/// The `spike_nexus_keepers_reachable` gauge from Nexus's `/metrics`.
fn reachable_gauge(c: &Cluster) -> Option<u32> {
    let (_, body) = http_get(c.nexus_health, "/metrics")?;
    body.lines()
        .find_map(|l| l.strip_prefix("spike_nexus_keepers_reachable "))
        .and_then(|v| v.trim().parse().ok())
}

/// Lines of Nexus's log that contain every one of `needles` (colour codes removed, so
/// `key=value` fields match whether or not the log is coloured).
pub(crate) fn log_lines(c: &Cluster, needles: &[&str]) -> usize {
    let log = std::fs::read_to_string(c.dir.path().join("nexus.log")).unwrap_or_default();
    let mut plain = String::with_capacity(log.len());
    let mut chars = log.chars();
    while let Some(ch) = chars.next() {
        if ch == '\u{1b}' {
            // An SGR sequence: ESC [ ... m.
            chars.by_ref().find(|c| *c == 'm');
        } else {
            plain.push(ch);
        }
    }
    plain
        .lines()
        .filter(|l| needles.iter().all(|n| l.contains(n)))
        .count()
}

#[test]
fn nexus_says_when_a_keeper_goes_away_comes_back_or_has_the_wrong_identity() {
    let mut c = Cluster::new(3);
    c.start_all(2);
    let gauge_is =
        |c: &Cluster, n: u32| wait_until(Duration::from_secs(20), || reachable_gauge(c) == Some(n));
    assert!(gauge_is(&c, 3), "{:?}", reachable_gauge(&c));

    // Keeper 2 dies: one WARN line, however many checks see it gone.
    c.kill_keeper(2);
    assert!(gauge_is(&c, 2), "{:?}", reachable_gauge(&c));
    let gone = ["WARN", "keeper is unreachable", "keeper=2"];
    assert!(wait_until(Duration::from_secs(10), || log_lines(&c, &gone) == 1));
    // Several keeper intervals (300 ms) later, still one line.
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(log_lines(&c, &gone), 1);

    // Something with keeper 3's SVID answers at keeper 2's address: refused, said once.
    let ports = c.keeper_ports[1];
    let mut args = identity_args(&c.pki.svid("/spike/keeper/3"));
    args.extend([
        "--listen".into(),
        format!("127.0.0.1:{}", ports.api),
        "--health-listen".into(),
        format!("127.0.0.1:{}", ports.health),
    ]);
    let impostor = Proc::spawn(
        &c.bins.keeper,
        &args,
        c.dir.path().join("impostor.log"),
        &c.rust_log,
    );
    let wrong = ["WARN", "wrong identity", "keeper=2"];
    assert!(
        wait_until(Duration::from_secs(20), || log_lines(&c, &wrong) == 1),
        "{}",
        c.all_logs()
    );
    std::thread::sleep(Duration::from_secs(1));
    assert_eq!(log_lines(&c, &wrong), 1);
    assert_eq!(reachable_gauge(&c), Some(2));
    impostor.kill9();

    // The real keeper 2 comes back: INFO, the gauge is whole, and it gets its share again.
    c.start_keeper(2);
    let back = ["INFO", "keeper is reachable again", "keeper=2"];
    assert!(wait_until(Duration::from_secs(20), || log_lines(&c, &back) == 1));
    assert!(gauge_is(&c, 3), "{:?}", reachable_gauge(&c));
    let health = c.keeper_ports[1].health;
    assert!(wait_until(Duration::from_secs(20), || matches!(
        http_get(health, "/readyz"),
        Some((200, _))
    )));
    let (_, metrics) = http_get(c.nexus_health, "/metrics").unwrap();
    assert!(metrics.contains("spike_nexus_keepers 3\n"), "{metrics}");
}

#[test]
fn keepers_that_restarted_empty_are_told_from_unreachable_ones() {
    let mut c = Cluster::new(3);
    c.start_all(2);
    // Nexus down, then two keepers lose their memory (kill -9 and start again, empty).
    c.kill_nexus();
    for i in [1usize, 2] {
        c.kill_keeper(i);
        c.start_keeper(i);
    }
    c.start_nexus();
    let want =
        "1 of 2 needed (3 keepers: 1 holding a share, 2 reachable but holding none, 0 unreachable)";
    assert!(
        wait_until(Duration::from_secs(20), || c
            .readyz()
            .is_some_and(|(_, body)| body.contains(want))),
        "{:?}",
        c.readyz()
    );
    let (status, body) = c.readyz().expect("readyz");
    assert_eq!(status, 503, "{body}");
    // Waiting cannot help: the reason says where the key comes back from.
    assert!(body.contains("break-glass"), "{body}");
}
