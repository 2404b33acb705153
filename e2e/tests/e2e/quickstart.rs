//! Runs docs/quickstart.md as written against a real `spike dev`.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use spike_e2e::{Proc, bins, free_port, text, wait_until};

/// One step of the quick start.
enum Step {
    /// A `cargo run --bin spike -- dev ...` line: (re)start `spike dev` with these arguments.
    Dev(Vec<String>),
    /// A shell line, with its `# prints:` expectation.
    Sh(String, Option<String>),
}

/// The `sh` lines of the quick start, in order. A line ending in `\` continues on the next.
fn tutorial_steps(md: &str) -> Vec<Step> {
    let mut out = Vec::new();
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
        if let Some(args) = line.trim().strip_prefix("cargo run --bin spike -- ") {
            let args = args.split('#').next().unwrap_or_default();
            out.push(Step::Dev(
                args.split_whitespace().map(str::to_owned).collect(),
            ));
            continue;
        }
        if let Some(head) = line.trim_end().strip_suffix('\\') {
            pending.push_str(head);
            continue;
        }
        let line = std::mem::take(&mut pending) + line;
        let (cmd, expect) = match line.split_once("# prints:") {
            Some((c, e)) => (c.trim().to_owned(), Some(e.trim().to_owned())),
            None => (line.trim().to_owned(), None),
        };
        out.push(Step::Sh(cmd, expect));
    }
    out
}

/// Starts `spike dev` with a quick-start line's `args` (on a free port pair, which the printed
/// export lines carry) and returns it with the export lines it printed, verbatim.
fn start_tutorial_dev(args: &[String], log: &Path) -> (Proc, String) {
    assert_eq!(args.first().map(String::as_str), Some("dev"), "{args:?}");
    let port = (0..20)
        .map(|_| free_port())
        .find(|p| *p < u16::MAX && std::net::TcpListener::bind(("127.0.0.1", p + 1)).is_ok())
        .expect("free port pair");
    let _ = std::fs::remove_file(log);
    let mut args = args.to_vec();
    args.extend(["--port".into(), port.to_string()]);
    // In a scratch directory: `--data-dir ./spike-data` must not land in the repository.
    let cwd = log.parent().expect("the log is in the test's directory");
    let dev = Proc::spawn_in(&bins().spike, &args, cwd, log.to_path_buf(), "info");
    assert!(
        wait_until(Duration::from_secs(60), || std::fs::read_to_string(log)
            .is_ok_and(|s| s.contains("export PATH="))),
        "spike dev did not come up: {}",
        std::fs::read_to_string(log).unwrap_or_default()
    );
    // It holds the root key and every share: a crash must leave no core file.
    let limits = std::fs::read_to_string(format!("/proc/{}/limits", dev.pid())).unwrap();
    let core = limits
        .lines()
        .find(|l| l.starts_with("Max core file size"))
        .unwrap();
    assert_eq!(
        core.split_whitespace().collect::<Vec<_>>()[4..6],
        ["0", "0"],
        "{core}"
    );
    let printed = std::fs::read_to_string(log).unwrap();
    let exports: Vec<&str> = printed
        .lines()
        .map(str::trim)
        .filter(|l| l.starts_with("export "))
        .collect();
    for var in ["SPIFFE_ENDPOINT_SOCKET=", "SPIKE_NEXUS_ADDR=", "PATH="] {
        assert!(
            exports
                .iter()
                .any(|l| l.starts_with(&format!("export {var}"))),
            "{var} {printed}"
        );
    }
    (dev, exports.join("\n"))
}

#[test]
fn quickstart_works_as_written() {
    let dir = tempfile::Builder::new()
        .prefix("spike-qs-")
        .tempdir()
        .unwrap();
    let log = dir.path().join("dev.log");
    let md_path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/quickstart.md");
    let md = std::fs::read_to_string(md_path).unwrap();
    // `python3` with py-spiffe from the venv ./test.sh makes (the quick start says to pip
    // install it); no `spike` on this PATH but the one spike dev's export line adds.
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let venv = root.join(".venv/bin");
    assert!(
        venv.join("python3").exists(),
        "the quick start runs a py-spiffe program: run ./test.sh once to create .venv"
    );
    let path = format!("{}:/usr/local/bin:/usr/bin:/bin", venv.display());
    let env = [("PATH", path.as_str()), ("RUST_LOG", "warn")];

    let steps = tutorial_steps(&md);
    let devs = steps.iter().filter(|s| matches!(s, Step::Dev(_))).count();
    assert!(
        devs >= 2,
        "the quick start starts spike dev, then again with a workload"
    );
    assert!(steps.len() >= 10, "the quick start lost its commands");
    let mut dev: Option<(Proc, String)> = None;
    for step in steps {
        let (cmd, expect) = match step {
            Step::Dev(args) => {
                // Ctrl-C, as the quick start says, then the new line.
                if let Some((old, _)) = dev.take() {
                    assert!(
                        old.terminate(Duration::from_secs(20)),
                        "spike dev did not stop"
                    );
                }
                dev = Some(start_tutorial_dev(&args, &log));
                continue;
            }
            Step::Sh(cmd, expect) => (cmd, expect),
        };
        let pasted = &dev.as_ref().expect("a command before spike dev started").1;
        // From the repository's root, as the tutorial says (no line writes a file there),
        // in a shell where the printed export lines were pasted.
        let out = Command::new("sh")
            .args(["-c", &format!("{pasted}\n{cmd}")])
            .current_dir(&root)
            .env_clear()
            .envs(env)
            .output()
            .unwrap();
        assert!(out.status.success(), "`{cmd}` failed: {}", text(&out));
        if let Some(e) = expect {
            assert!(
                String::from_utf8_lossy(&out.stdout).contains(&e),
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
