//! Runs docs/deploy.md as written: three keepers, Nexus, bootstrap and the CLI as separate
//! processes with PEM-file SVIDs laid out the way csi-driver-spiffe mounts them, including an
//! SVID rotation by `..data` symlink swap under a running reader.
//!
//! The walkthrough's `sh` blocks are joined into one bash script. Only its port numbers are
//! replaced (by free ones); every `# prints:` line must appear in its output, in order.

use std::collections::BTreeMap;
use std::os::unix::process::CommandExt;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use spike_e2e::{bins, free_port};

const DOC: &str = include_str!("../../../docs/deploy.md");

/// The `sh` blocks of the walkthrough, in order, and the `# prints:` expectations.
fn walkthrough(md: &str) -> (String, Vec<String>) {
    let mut script = String::new();
    let mut expected = Vec::new();
    let mut in_sh = false;
    for line in md.lines() {
        if line.starts_with("```") {
            in_sh = !in_sh && line.trim() == "```sh";
            continue;
        }
        if !in_sh {
            continue;
        }
        if let Some((_, e)) = line.split_once("# prints:") {
            expected.push(e.trim().to_owned());
        }
        script.push_str(line);
        script.push('\n');
    }
    (script, expected)
}

/// Replaces every `127.0.0.1:PORT` of the script with a free port (the same port for the
/// same number).
fn with_free_ports(script: &str) -> String {
    let mut ports = BTreeMap::new();
    let mut out = String::with_capacity(script.len());
    let mut rest = script;
    while let Some(at) = rest.find("127.0.0.1:") {
        let (head, tail) = rest.split_at(at + "127.0.0.1:".len());
        out.push_str(head);
        let digits = tail.chars().take_while(char::is_ascii_digit).count();
        let (port, after) = tail.split_at(digits);
        let free = *ports.entry(port.to_owned()).or_insert_with(free_port);
        out.push_str(&free.to_string());
        rest = after;
    }
    out.push_str(rest);
    assert!(
        ports.len() >= 8,
        "the walkthrough's addresses changed: {ports:?}"
    );
    out
}

/// `expected` appear as whole lines of `output`, in this order.
fn missing_in_order<'a>(output: &str, expected: &'a [String]) -> Option<&'a str> {
    let mut lines = output.lines();
    expected
        .iter()
        .find(|want| !lines.any(|l| l.trim() == want.as_str()))
        .map(String::as_str)
}

#[test]
fn deploy_walkthrough_works_as_written() {
    let bins = bins();
    let dir = tempfile::Builder::new()
        .prefix("spike-deploy-")
        .tempdir()
        .unwrap();
    let (script, expected) = walkthrough(DOC);
    assert!(expected.len() >= 8, "{expected:?}");
    let script_path = dir.path().join("walkthrough.sh");
    std::fs::write(&script_path, with_free_ports(&script)).unwrap();

    let bin_dir = bins.spike.parent().unwrap().to_path_buf();
    let path = format!(
        "{}:{}",
        bin_dir.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let stdout = dir.path().join("stdout");
    let stderr = dir.path().join("stderr");
    let mut cmd = Command::new("bash");
    cmd.args(["-euo", "pipefail"])
        .arg(&script_path)
        .current_dir(dir.path())
        .env("PATH", path)
        .stdin(Stdio::null())
        .stdout(std::fs::File::create(&stdout).unwrap())
        .stderr(std::fs::File::create(&stderr).unwrap())
        // Its own process group, so the keepers and Nexus it starts in the background are
        // stopped with it.
        .process_group(0);
    for (k, _) in std::env::vars() {
        if k.starts_with("SPIKE_") || k == "SPIFFE_ENDPOINT_SOCKET" {
            cmd.env_remove(k);
        }
    }
    let mut child = cmd.spawn().unwrap();
    let group = rustix::process::Pid::from_raw(child.id() as i32).unwrap();
    let deadline = Instant::now() + Duration::from_secs(240);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break Some(status);
        }
        if Instant::now() >= deadline {
            break None;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    let _ = rustix::process::kill_process_group(group, rustix::process::Signal::KILL);
    let _ = child.wait();

    let out = std::fs::read_to_string(&stdout).unwrap();
    let err = std::fs::read_to_string(&stderr).unwrap();
    let logs = ["nexus.log", "keeper-1.log"]
        .iter()
        .map(|f| {
            let p = dir.path().join("spike-deploy").join(f);
            format!(
                "--- {f}\n{}",
                std::fs::read_to_string(p).unwrap_or_default()
            )
        })
        .collect::<Vec<_>>()
        .join("\n");
    let report = format!("stdout:\n{out}\nstderr:\n{err}\n{logs}");
    assert!(
        status.is_some_and(|s| s.success()),
        "the walkthrough failed ({status:?}):\n{report}"
    );
    if let Some(want) = missing_in_order(&out, &expected) {
        panic!("expected a line `{want}` (in order):\n{report}");
    }
    // The reader made every one of its requests, across the rotation, without a failure.
    let reader = std::fs::read_to_string(dir.path().join("spike-deploy/reader.log")).unwrap();
    assert!(reader.trim().is_empty(), "reader saw failures:\n{reader}");
}

#[test]
fn the_walkthrough_parser_finds_every_block() {
    let (script, expected) = walkthrough(DOC);
    assert!(script.contains("spike bootstrap"));
    assert!(script.contains("issue svid/nexus /spike/nexus\nnew="));
    assert_eq!(expected.first().map(String::as_str), Some("503"));
    assert!(
        missing_in_order("a\n503\nb\n200\n", &["503".into(), "200".into()]).is_none(),
        "in order"
    );
    assert_eq!(
        missing_in_order("200\n503\n", &["503".into(), "200".into()]),
        Some("200")
    );
}
