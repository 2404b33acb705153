//! The audit log notices loss and cannot be flooded: attacks by someone who can write the
//! data directory while Nexus is stopped (cut the tail, remove the file, put back a shorter
//! valid copy), and by an identity with no policy sending batches of junk.

use std::time::Duration;

use spike_e2e::{Cluster, copy_dir, http_get, text, wait_until};
use spike_runtime::net::MtlsClient;

/// Upper bound of every wait.
const WAIT: Duration = Duration::from_secs(20);
const SUPERUSER: &str = "/spike/pilot/role/superuser";

fn audit_path(c: &Cluster) -> std::path::PathBuf {
    c.dir.path().join("audit.log")
}

/// A ready cluster with `n` secrets written (one audit line each, plus bootstrap's).
fn cluster_with_writes(n: usize) -> Cluster {
    let mut c = Cluster::new(1);
    c.start_all(1);
    put_secrets(&c, 0..n);
    c
}

fn put_secrets(c: &Cluster, range: std::ops::Range<usize>) {
    let admin = c.pki.svid(SUPERUSER);
    for i in range {
        let out = c.spike(&admin, &["secret", "put", &format!("a/{i}"), "k=v"]);
        assert!(out.status.success(), "{}", text(&out));
    }
}

fn stop_nexus(c: &mut Cluster) {
    let p = c.nexus.take().unwrap();
    assert!(p.terminate(WAIT), "nexus did not stop");
}

/// Restarts Nexus and waits until it says it is sealed because of the audit log; returns
/// that reason.
fn restart_expecting_loss(c: &mut Cluster) -> String {
    c.start_nexus();
    let mut reason = String::new();
    let refused = wait_until(WAIT, || match c.readyz() {
        Some((503, body)) if body.contains("does not reach its checkpoint") => {
            reason = body;
            true
        }
        _ => false,
    });
    assert!(refused, "nexus did not refuse the log: {:?}", c.readyz());
    // Still sealed a while later: it keeps refusing, every keeper round.
    std::thread::sleep(Duration::from_millis(700));
    assert!(matches!(c.readyz(), Some((503, _))), "{:?}", c.readyz());
    let log = std::fs::read_to_string(c.dir.path().join("nexus.log")).unwrap();
    assert!(
        log.contains("AUDIT LOG LOSS"),
        "no alarm in the log:\n{log}"
    );
    assert!(
        reason.contains("docs/runbooks/audit-log-loss.md"),
        "{reason}"
    );
    // `audit verify` does not say ok.
    let out = c.spike(&c.pki.svid(SUPERUSER), &["audit", "verify"]);
    assert!(!out.status.success(), "{}", text(&out));
    assert!(
        !String::from_utf8_lossy(&out.stdout).starts_with("ok"),
        "{}",
        text(&out)
    );
    reason
}

/// The seq the refusal names for `--audit-accept-loss`.
fn seq_to_accept(reason: &str) -> String {
    let (_, rest) = reason.split_once("--audit-accept-loss ").unwrap();
    rest.chars().take_while(char::is_ascii_digit).collect()
}

#[test]
fn cut_audit_tail_while_stopped_is_refused_on_start() {
    let mut c = cluster_with_writes(6);
    stop_nexus(&mut c);
    let log = std::fs::read_to_string(audit_path(&c)).unwrap();
    let lines: Vec<&str> = log.lines().collect();
    // Cut the last three lines: what is left is a valid, shorter chain.
    let kept: String = lines[..lines.len() - 3]
        .iter()
        .map(|l| format!("{l}\n"))
        .collect();
    std::fs::write(audit_path(&c), kept).unwrap();
    let reason = restart_expecting_loss(&mut c);

    // The operator accepts the loss explicitly, once, naming the checkpoint.
    let seq = seq_to_accept(&reason);
    assert_eq!(seq, lines.len().to_string(), "{reason}");
    stop_nexus(&mut c);
    c.nexus_extra_args
        .extend(["--audit-accept-loss".into(), seq.clone()]);
    c.start_nexus();
    assert!(c.wait_ready(WAIT), "{:?}", c.readyz());
    let admin = c.pki.svid(SUPERUSER);
    let out = c.spike(&admin, &["audit", "verify"]);
    assert!(out.status.success(), "{}", text(&out));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.starts_with("ok:"), "{stdout}");
    assert!(stdout.contains("head: seq "), "{stdout}");
    assert!(stdout.contains("checkpoint: seq "), "{stdout}");
    let log = std::fs::read_to_string(audit_path(&c)).unwrap();
    let loss = log
        .lines()
        .find(|l| l.contains("audit.loss_accepted"))
        .unwrap_or_else(|| panic!("the loss is not recorded:\n{log}"));
    assert!(loss.contains("\"lines_lost\":3"), "{loss}");
    assert!(loss.contains(&format!("checkpoint seq {seq}")), "{loss}");
}

#[test]
fn removed_audit_log_while_stopped_is_refused_on_start() {
    let mut c = cluster_with_writes(2);
    stop_nexus(&mut c);
    std::fs::remove_file(audit_path(&c)).unwrap();
    let reason = restart_expecting_loss(&mut c);
    assert!(reason.contains("empty or missing"), "{reason}");
}

#[test]
fn audit_log_replaced_by_a_shorter_valid_chain_is_refused_on_start() {
    let mut c = cluster_with_writes(2);
    // A genuine, valid copy from earlier (a backup), put back after more was written.
    let backup = std::fs::read(audit_path(&c)).unwrap();
    put_secrets(&c, 2..5);
    stop_nexus(&mut c);
    std::fs::write(audit_path(&c), backup).unwrap();
    let reason = restart_expecting_loss(&mut c);
    assert!(reason.contains("ends at seq"), "{reason}");
}

fn metric(c: &Cluster, name: &str) -> u64 {
    let (_, body) = http_get(c.nexus_health, "/metrics").unwrap();
    body.lines()
        .find_map(|l| l.strip_prefix(&format!("{name} ")))
        .unwrap_or_else(|| panic!("no {name} in /metrics:\n{body}"))
        .trim()
        .parse()
        .unwrap()
}

#[test]
fn refused_batches_with_huge_invalid_paths_cannot_flood_the_audit_log() {
    let mut c = Cluster::new(1);
    c.start_all(1);
    let before = std::fs::metadata(audit_path(&c)).unwrap().len();
    assert!(metric(&c, "spike_audit_log_bytes") >= before);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let client = rt.block_on(async {
        MtlsClient::new(
            format!("127.0.0.1:{}", c.nexus_port),
            c.nexus_id(),
            c.svid_source("/ns/nobody/sa/flood", WAIT).await,
        )
        .unwrap()
        .with_timeout(Duration::from_secs(10))
    });
    // 200 items per batch, each with a 1 KiB invalid path (a control byte in it).
    let huge = format!("bad\u{1}{}", "x".repeat(1020));
    let items: Vec<serde_json::Value> = (0..200)
        .map(|i| serde_json::json!({ "path": format!("{huge}{i}"), "data": { "k": "v" } }))
        .collect();
    let body = serde_json::json!({ "items": items }).to_string();
    let batches = 150;
    let mut limited = 0;
    for _ in 0..batches {
        let reply = rt
            .block_on(client.send(
                http::Method::POST,
                "/v1/secrets/batch",
                Some(body.clone().into_bytes()),
            ))
            .unwrap();
        match reply.status.as_u16() {
            200 => {}
            429 => limited += 1,
            s => panic!("unexpected status {s}"),
        }
    }
    let grown = std::fs::metadata(audit_path(&c)).unwrap().len() - before;
    // Before: one line per item, over a KiB each: 150 * 200 lines, ~36 MiB. Now one summary
    // line per batch, and only up to the caller's refusal rate.
    assert!(grown < 128 * 1024, "the audit log grew by {grown} bytes");
    assert!(limited > 0, "the flood was never rate limited");
    assert!(metric(&c, "spike_audit_suppressed_total") > 0);
    let log = std::fs::read_to_string(audit_path(&c)).unwrap();
    assert!(
        !log.contains(&"x".repeat(100)),
        "a raw path reached the log"
    );
    let summary = log
        .lines()
        .find(|l| l.contains("secret.batch.put.refused"))
        .unwrap();
    assert!(summary.contains("\"invalid_path\":200"), "{summary}");
    assert!(summary.contains("sha256:"), "{summary}");
    // The log still verifies.
    let out = c.spike(&c.pki.svid(SUPERUSER), &["audit", "verify"]);
    assert!(out.status.success(), "{}", text(&out));
}

#[test]
fn audit_log_rotates_by_size_and_a_removed_rotated_file_is_reported() {
    let mut c = Cluster::new(1);
    c.start_keeper(1);
    c.start_nexus_with_config("[audit]\nmax_file_bytes = 65536\n");
    assert!(c.bootstrap(1).status.success());
    assert!(c.wait_ready(WAIT), "{:?}", c.readyz());
    // Three batches of 250 lines of ~300 bytes: each fills a 64 KiB file, which then rotates.
    let admin = c.pki.svid(SUPERUSER);
    for b in 0..3 {
        let mut yaml = String::from("secrets:\n");
        for i in 0..250 {
            yaml.push_str(&format!("  - {{path: rot/b{b}/s{i}, data: {{k: v}}}}\n"));
        }
        let file = c.dir.path().join(format!("many-{b}.yaml"));
        std::fs::write(&file, yaml).unwrap();
        let out = c.spike(&admin, &["seed", "-f", file.to_str().unwrap()]);
        assert!(out.status.success(), "{}", text(&out));
    }
    let rotated = |n: u32| c.dir.path().join(format!("audit.log.{n:06}"));
    assert!(rotated(1).exists() && rotated(2).exists(), "no rotation");
    assert!(metric(&c, "spike_audit_rotations_total") >= 2);
    // The chain verifies across every file.
    let out = c.spike(&admin, &["audit", "verify"]);
    assert!(out.status.success(), "{}", text(&out));
    // A rotated file removed from the middle breaks it there.
    std::fs::remove_file(rotated(1)).unwrap();
    let out = c.spike(&admin, &["audit", "verify"]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("TAMPERED"), "{stdout}");
    assert!(stdout.contains("audit.log.000002"), "{stdout}");
}

#[test]
fn a_copy_larger_than_one_request_verifies_piece_by_piece() {
    let c = cluster_with_writes(0);
    let admin = c.pki.svid(SUPERUSER);
    // 6,000 secrets by batch: one audit line each, a copy of well over Nexus's 1 MiB body
    // limit.
    let seed = c.dir.path().join("seed.yaml");
    let mut yaml = String::from("secrets:\n");
    for i in 0..6000 {
        yaml.push_str(&format!("  - path: bulk/s{i:05}\n    data:\n      k: v\n"));
    }
    std::fs::write(&seed, yaml).unwrap();
    let out = c.spike(&admin, &["seed", "-f", seed.to_str().unwrap()]);
    assert!(out.status.success(), "{}", text(&out));
    let log = std::fs::read_to_string(audit_path(&c)).unwrap();
    assert!(log.len() > 3 << 19, "the copy is {} bytes", log.len());
    let lines = log.lines().count();

    let copy = c.dir.path().join("copy.jsonl");
    std::fs::write(&copy, &log).unwrap();
    let out = c.spike(
        &admin,
        &["audit", "verify", "--file", copy.to_str().unwrap()],
    );
    assert!(out.status.success(), "{}", text(&out));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.starts_with(&format!("ok: {lines} lines verify")),
        "{stdout}"
    );

    // A line changed near the end is found, its number counted across the pieces, and said
    // once.
    let target = lines - 10;
    let edited: String = log
        .lines()
        .enumerate()
        .map(|(i, l)| {
            if i + 1 == target {
                format!("{}\n", l.replacen("\"allow\"", "\"deny\"", 1))
            } else {
                format!("{l}\n")
            }
        })
        .collect();
    std::fs::write(&copy, edited).unwrap();
    let out = c.spike(
        &admin,
        &["audit", "verify", "--file", copy.to_str().unwrap()],
    );
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let stdout = String::from_utf8_lossy(&out.stdout);
    let expected = format!("TAMPERED: line {target}: ");
    assert!(stdout.starts_with(&expected), "{stdout}");
    assert_eq!(
        stdout.matches(&format!("line {target}")).count(),
        1,
        "{stdout}"
    );
}

/// Someone who can write both the data directory and the log puts back an older copy of
/// both: they agree, so Nexus opens and its own check passes; the checkpoints it shipped to
/// a second sink are what catch it.
#[test]
fn a_log_and_store_rolled_back_together_are_caught_by_the_shipped_checkpoints() {
    let mut c = Cluster::new(1);
    let sink = c.dir.path().join("checkpoints");
    c.nexus_extra_args.extend([
        "--audit-checkpoint-sink".into(),
        format!("file:{}", sink.display()),
        "--set".into(),
        "audit.checkpoint_interval=50ms".into(),
    ]);
    c.start_all(1);
    put_secrets(&c, 0..2);
    stop_nexus(&mut c);
    let data = c.data_dir.clone().unwrap();
    let saved = c.dir.path().join("saved");
    copy_dir(&data, &saved.join("data"));
    std::fs::copy(audit_path(&c), saved.join("audit.log")).unwrap();

    c.start_nexus();
    assert!(c.wait_ready(WAIT), "{:?}", c.readyz());
    put_secrets(&c, 2..5);
    let admin = c.pki.svid(SUPERUSER);
    let sink_arg = sink.display().to_string();
    let verify = |c: &Cluster| c.spike(&admin, &["audit", "verify", "--checkpoints", &sink_arg]);
    // While it runs, the log passes through everything shipped so far.
    let shipped = wait_until(WAIT, || {
        let out = verify(&c);
        out.status.success() && String::from_utf8_lossy(&out.stdout).contains("shipped: ")
    });
    assert!(shipped, "{}", text(&verify(&c)));
    stop_nexus(&mut c);
    let sink_text = std::fs::read_to_string(&sink).unwrap();
    assert!(
        sink_text
            .lines()
            .all(|l| l.starts_with("spike-audit-checkpoint seq=")),
        "{sink_text}"
    );

    // Both put back: the keepers' witness of the store refuses it (the rollback tests), so
    // open it on purpose, as the runbook says, to see what the log's own checks find.
    std::fs::remove_dir_all(&data).unwrap();
    copy_dir(&saved.join("data"), &data);
    std::fs::copy(saved.join("audit.log"), audit_path(&c)).unwrap();
    let reason = c.start_nexus_expecting_refusal("STORE ROLLED BACK");
    c.restart_nexus_accepting(&reason);
    assert!(c.wait_ready(WAIT), "{:?}", c.readyz());
    let out = c.spike(&admin, &["audit", "verify"]);
    assert!(out.status.success(), "{}", text(&out));
    // The sink, kept apart, remembers more. (Nexus shipped its reopened head since: the
    // newest lines of the sink are the rolled-back chain's own, the older ones are not.)
    let out = verify(&c);
    assert!(!out.status.success(), "{}", text(&out));
    let said = text(&out);
    assert!(said.contains("TAMPERED"), "{said}");
    assert!(
        said.contains("lines were removed from the end")
            || said.contains("differs from the checkpoint"),
        "{said}"
    );
    // A copy of the log is checked the same way.
    let out = c.spike(
        &admin,
        &[
            "audit",
            "verify",
            "--file",
            &audit_path(&c).display().to_string(),
            "--checkpoints",
            &sink_arg,
        ],
    );
    assert!(!out.status.success(), "{}", text(&out));
    // A sink with no checkpoint in it is a usage error, not a pass.
    let empty = c.dir.path().join("empty");
    std::fs::write(&empty, "Dec  3 host sshd[1]: hello\n").unwrap();
    let out = c.spike(
        &admin,
        &[
            "audit",
            "verify",
            "--checkpoints",
            &empty.display().to_string(),
        ],
    );
    assert!(!out.status.success(), "{}", text(&out));
    assert!(
        text(&out).contains("holds no shipped audit checkpoint"),
        "{}",
        text(&out)
    );
}
