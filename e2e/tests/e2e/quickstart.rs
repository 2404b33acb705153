//! Runs docs/quickstart.md as written against a real `spike dev`.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use spike_e2e::{Proc, bins, free_port, text, wait_until};

/// One `spike dev` of the quick start: the arguments its `cargo run` line gives after `dev`,
/// and the `sh` lines run against it (up to the next `cargo run` line), each with its
/// `# prints:` expectation. A line ending in `\` continues on the next one.
struct Section {
    dev_args: Vec<String>,
    lines: Vec<(String, Option<String>)>,
}

fn tutorial_sections(md: &str) -> Vec<Section> {
    let mut out: Vec<Section> = Vec::new();
    let mut in_sh = false;
    let mut pending = String::new();
    for line in md.lines() {
        if line.starts_with("```") {
            in_sh = !in_sh && line.trim() == "```sh";
            continue;
        }
        if !in_sh || line.trim().is_empty() {
            continue;
        }
        if let Some(rest) = line.strip_prefix("cargo run --bin spike -- dev") {
            out.push(Section {
                dev_args: rest.split_whitespace().map(str::to_owned).collect(),
                lines: Vec::new(),
            });
            continue;
        }
        if line.starts_with("export PATH") {
            continue;
        }
        if let Some(head) = line.trim_end().strip_suffix('\\') {
            pending.push_str(head);
            continue;
        }
        let whole = std::mem::take(&mut pending) + line;
        let (cmd, expect) = match whole.split_once("# prints:") {
            Some((c, e)) => (c.trim().to_owned(), Some(e.trim().to_owned())),
            None => (whole.trim().to_owned(), None),
        };
        let section = out
            .last_mut()
            .expect("the quick start starts `spike dev` first");
        section.lines.push((cmd, expect));
    }
    out
}

#[test]
fn quickstart_works_as_written() {
    let md_path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/quickstart.md");
    let md = std::fs::read_to_string(md_path).unwrap();
    let sections = tutorial_sections(&md);
    assert!(
        sections
            .iter()
            .any(|s| s.dev_args.iter().any(|a| a == "--workload")),
        "the quick start shows a workload"
    );
    assert!(
        sections.iter().map(|s| s.lines.len()).sum::<usize>() >= 10,
        "the quick start lost its commands"
    );
    // Each `spike dev` line is a fresh system, as a reader who stopped the last one gets.
    for section in sections.iter().filter(|s| !s.lines.is_empty()) {
        run_section(section);
    }
}

/// Starts the section's `spike dev` (on free ports, its files in a temp dir) and runs its
/// lines as written from the repository's root.
fn run_section(section: &Section) {
    let bins = bins();
    let dir = tempfile::Builder::new()
        .prefix("spike-qs-")
        .tempdir()
        .unwrap();
    // Two free consecutive ports are needed (API and health): retry a few candidates.
    let port = (0..20)
        .map(|_| free_port())
        .find(|p| *p < u16::MAX && std::net::TcpListener::bind(("127.0.0.1", p + 1)).is_ok())
        .expect("free port pair");
    let log = dir.path().join("dev.log");
    let mut args: Vec<String> = vec![
        "dev".into(),
        "--port".into(),
        port.to_string(),
        "--run-dir".into(),
        dir.path().join("run").display().to_string(),
    ];
    let mut given = section.dev_args.iter();
    while let Some(a) = given.next() {
        // A data directory the reader would make in the clone goes to the temp dir instead.
        if a == "--data-dir" {
            given.next();
            args.extend([
                "--data-dir".into(),
                dir.path().join("data").display().to_string(),
            ]);
        } else {
            args.push(a.clone());
        }
    }
    let _dev = Proc::spawn(&bins.spike, &args, log.clone(), "info");
    assert!(
        wait_until(Duration::from_secs(60), || std::fs::read_to_string(&log)
            .is_ok_and(|s| s.contains("export SPIKE_NEXUS_ADDR"))),
        "spike dev did not come up: {}",
        std::fs::read_to_string(&log).unwrap_or_default()
    );
    let printed = std::fs::read_to_string(&log).unwrap();
    let mut env: Vec<(String, String)> = printed
        .lines()
        .filter_map(|l| l.trim().strip_prefix("export "))
        .filter_map(|kv| kv.split_once('='))
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect();
    assert!(
        env.iter().any(|(k, _)| k == "SPIFFE_ENDPOINT_SOCKET"),
        "{printed}"
    );
    // `spike` from this build, and `python3` with py-spiffe from the venv ./test.sh makes.
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let venv = root.join(".venv/bin");
    assert!(
        venv.join("python3").exists(),
        "the quick start runs a py-spiffe program: run ./test.sh once to create .venv"
    );
    let bin_dir = bins.spike.parent().unwrap().display().to_string();
    let path = format!(
        "{bin_dir}:{}:{}",
        venv.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    env.push(("PATH".into(), path));
    env.push(("RUST_LOG".into(), "warn".into()));

    for (cmd, expect) in &section.lines {
        // From the repository's root, as the tutorial says (no line writes a file there).
        let out = Command::new("sh")
            .args(["-c", cmd])
            .current_dir(&root)
            .envs(env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .output()
            .unwrap();
        assert!(out.status.success(), "`{cmd}` failed: {}", text(&out));
        if let Some(e) = expect {
            assert!(
                String::from_utf8_lossy(&out.stdout).contains(e.as_str()),
                "`{cmd}` should print {e:?}: {}",
                text(&out)
            );
        }
    }
}

/// Starts `spike dev --data-dir DATA` on a free port pair, with `--run-dir DIR/run` unless
/// `default_run_dir` (then the socket is under DATA/run, as a user gets it).
pub(crate) fn start_dev(dir: &Path, data: &Path, log: &Path, default_run_dir: bool) -> (Proc, u16) {
    let bins = bins();
    let port = (0..20)
        .map(|_| free_port())
        .find(|p| *p < u16::MAX && std::net::TcpListener::bind(("127.0.0.1", p + 1)).is_ok())
        .expect("free port pair");
    let _ = std::fs::remove_file(log);
    let mut args = vec![
        "dev".into(),
        "--port".into(),
        port.to_string(),
        "--data-dir".into(),
        data.display().to_string(),
    ];
    if !default_run_dir {
        args.extend(["--run-dir".into(), dir.join("run").display().to_string()]);
    }
    let p = Proc::spawn(&bins.spike, &args, log.to_path_buf(), "info");
    assert!(
        wait_until(Duration::from_secs(60), || std::fs::read_to_string(log)
            .is_ok_and(|s| s.contains("export SPIKE_NEXUS_ADDR"))),
        "spike dev did not come up: {}",
        std::fs::read_to_string(log).unwrap_or_default()
    );
    (p, port)
}

fn cli(port: u16, dir: &Path, args: &[&str]) -> std::process::Output {
    cli_as(&bins().spike, port, &dir.join("run"), args)
}

/// Runs `exe` (a `spike`) against the dev system whose agent socket is under `run_dir`.
pub(crate) fn cli_as(exe: &Path, port: u16, run_dir: &Path, args: &[&str]) -> std::process::Output {
    Command::new(exe)
        .args(args)
        .env(
            "SPIFFE_ENDPOINT_SOCKET",
            format!("unix://{}", run_dir.join("agent/agent.sock").display()),
        )
        .env("SPIKE_NEXUS_ADDR", format!("127.0.0.1:{port}"))
        .env("SPIKE_TRUST_DOMAIN", "spike.dev")
        .output()
        .unwrap()
}

#[test]
fn dev_with_data_dir_survives_a_full_restart() {
    let dir = tempfile::Builder::new()
        .prefix("spike-dev-")
        .tempdir()
        .unwrap();
    let data = dir.path().join("data");
    let log = dir.path().join("dev.log");
    let (dev, port) = start_dev(dir.path(), &data, &log, false);
    let out = cli(
        port,
        dir.path(),
        &["secret", "put", "keep/me", "k=persisted"],
    );
    assert!(out.status.success(), "{}", text(&out));
    assert!(
        dev.terminate(Duration::from_secs(20)),
        "spike dev did not stop on SIGTERM"
    );

    // The insecure share copy exists, private to the user.
    use std::os::unix::fs::PermissionsExt;
    let share_file = data.join("INSECURE-dev-keeper-shares.json");
    let mode = std::fs::metadata(&share_file).unwrap().permissions().mode();
    assert_eq!(mode & 0o077, 0, "share file must be private");

    let (_dev, port) = start_dev(dir.path(), &data, &log, false);
    let printed = std::fs::read_to_string(&log).unwrap();
    assert!(printed.contains("already initialized"), "{printed}");
    let out = cli(port, dir.path(), &["secret", "get", "keep/me", "k"]);
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        "persisted",
        "{}",
        text(&out)
    );
}
