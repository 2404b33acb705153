//! No secret value in any log line at any level, and no colour codes in a log file.

use spike_e2e::{Cluster, text};

#[test]
fn no_secret_value_in_any_log_at_trace() {
    let mut c = Cluster::new(3);
    c.rust_log = "trace".into();
    c.start_all(2);
    let admin = c.pki.svid("/spike/pilot/role/superuser");
    let value = "TRACE-CANARY-9d1e57b3";
    let pair = format!("pass={value}");
    // Writes, reads, unchanged writes, CAS failures, refusals and bad input, all with the value.
    for args in [
        vec!["secret", "put", "log/x", pair.as_str()],
        vec!["secret", "put", "log/x", pair.as_str()],
        vec!["secret", "put", "log/x", pair.as_str(), "--cas", "7"],
        vec!["secret", "get", "log/x"],
        vec!["-o", "json", "secret", "get", "log/x"],
        vec!["secret", "put", "bad//path", pair.as_str()],
    ] {
        let _ = c.spike(&admin, &args);
    }
    let out = c.spike_stdin(&admin, &["secret", "put", "log/y", "pass=-"], Some(value));
    assert!(out.status.success(), "{}", text(&out));
    let stranger = c.pki.svid("/ns/x/sa/y");
    let _ = c.spike(&stranger, &["secret", "get", "log/x"]);
    let _ = c.spike(&stranger, &["secret", "put", "log/x", pair.as_str()]);
    // Keep a restart in the run: recovery and share handling log at trace too.
    c.kill_nexus();
    c.start_nexus();
    assert!(c.wait_ready(std::time::Duration::from_secs(20)));
    let out = c.spike(&admin, &["secret", "get", "log/y", "pass"]);
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        value,
        "{}",
        text(&out)
    );

    let logs = c.all_logs();
    assert!(
        logs.len() > 10_000,
        "trace logging produced too little to be meaningful"
    );
    assert!(!logs.contains(value), "a secret value leaked into a log");
    // Every process logs to a file here, not a terminal: no ANSI colour codes.
    assert!(!logs.contains('\u{1b}'), "ANSI escape codes in a log file");
    // Nor the base64 or hex of a share: keepers' shares never appear either.
    assert!(
        !logs.contains("\"value\":\""),
        "share material leaked into a log"
    );
}
