//! A new user's first commands: the CLI and `spike dev` never hang and always say why.
//!
//! Every test runs the real `spike` binary and checks its exit code and message.

use std::process::{Command, Output};
use std::time::{Duration, Instant};

use spike_e2e::{bins, text};

use crate::quickstart::{cli_as, start_dev};

/// Far longer than any answer here may take: the CLI is told to wait this long for an SVID,
/// so finishing well within it shows it did not wait (a hang check, not a speed test).
const PATIENCE: &str = "120s";

fn spike(args: &[&str], env: &[(&str, &str)]) -> (Output, Duration) {
    let mut cmd = Command::new(bins().spike);
    cmd.args(args)
        .env_remove("SPIFFE_ENDPOINT_SOCKET")
        .env("SPIKE_SVID_TIMEOUT", PATIENCE)
        .env("SPIKE_NEXUS_ADDR", "127.0.0.1:1");
    for (k, v) in env {
        cmd.env(k, v);
    }
    let started = Instant::now();
    let out = cmd.output().unwrap();
    (out, started.elapsed())
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn cli_without_a_workload_api_socket_says_so_at_once() {
    // Unset.
    let (out, took) = spike(&["secret", "list"], &[]);
    assert_eq!(out.status.code(), Some(5), "{}", text(&out));
    let err = stderr(&out);
    assert!(err.contains("SPIFFE_ENDPOINT_SOCKET is not set"), "{err}");
    assert!(err.contains("spike dev"), "the hint names spike dev: {err}");
    assert!(took < Duration::from_secs(60), "waited {took:?}: {err}");

    // Set, to a socket that does not exist (a stale export from an old `spike dev`).
    let dir = tempfile::tempdir().unwrap();
    let gone = format!("unix://{}", dir.path().join("agent.sock").display());
    let (out, took) = spike(
        &["secret", "get", "demo/db"],
        &[("SPIFFE_ENDPOINT_SOCKET", &gone)],
    );
    assert_eq!(out.status.code(), Some(5), "{}", text(&out));
    let err = stderr(&out);
    assert!(err.contains("no SPIFFE Workload API socket at"), "{err}");
    assert!(err.contains("spike dev"), "{err}");
    assert!(took < Duration::from_secs(60), "waited {took:?}: {err}");
}

#[test]
fn invalid_paths_and_names_are_usage_errors_before_any_request() {
    for args in [
        &["secret", "put", "my secret", "k=v"][..],
        &["secret", "get", "db/pass word"],
        &["secret", "metadata", "/db"],
        &["secret", "list", "a b"],
        &["policy", "test", "spiffe://spike.dev/x", "a//b"],
    ] {
        let (out, _) = spike(args, &[]);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {}", text(&out));
        let err = stderr(&out);
        assert!(err.contains("secret path"), "{args:?}: {err}");
        assert!(!err.contains("invalid uri"), "{args:?}: {err}");
    }
    for bad in [
        "frontend",
        "a b=spiffe://spike.dev/x",
        "x=spiffe://spike.dev/spike/nexus",
    ] {
        let (out, _) = spike(&["dev", "--workload", bad], &[]);
        assert_eq!(out.status.code(), Some(2), "{bad}: {}", text(&out));
    }
    let (out, _) = spike(&["policy", "get", "web read"], &[]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(stderr(&out).contains("policy name"), "{}", text(&out));

    // A seed file is checked whole before any server is asked (no socket here), and each
    // error says its position once.
    let dir = tempfile::tempdir().unwrap();
    for (yaml, want) in [
        (
            "secrets:\n  - path: a\n    data: {k: [1]}\n",
            "line 3 column 15: a value must be a string",
        ),
        (
            "secrets:\n  - path: a\n    data:\n      k: x\n      k: y\n",
            "line 5 column 7: duplicate key `k`",
        ),
        (
            "secrets:\n  - {path: a, data: {k: v}}\n  - {path: 'b c', data: {k: v}}\n",
            "secret 2: path `b c`",
        ),
    ] {
        let file = dir.path().join("seed.yaml");
        std::fs::write(&file, yaml).unwrap();
        let (out, _) = spike(&["seed", "-f", file.to_str().unwrap()], &[]);
        assert_eq!(out.status.code(), Some(2), "{yaml}: {}", text(&out));
        let err = stderr(&out);
        assert!(err.contains(want), "{yaml}: {err}");
        assert_eq!(
            err.matches("line ").count().min(1),
            err.matches("line ").count(),
            "{err}"
        );
        assert!(!err.contains("DuplicateKeyPolicy"), "{err}");
    }
}

#[test]
fn dev_with_a_data_dir_keeps_its_socket_and_refuses_strangers_and_a_second_instance() {
    let dir = tempfile::Builder::new()
        .prefix("spike-first-")
        .tempdir()
        .unwrap();
    let data = dir.path().join("nested/data");
    let log = dir.path().join("dev.log");
    let (dev, port) = start_dev(dir.path(), &data, &log, true);
    let printed = std::fs::read_to_string(&log).unwrap();
    let run_dir = data.join("run");
    let socket_line = format!(
        "export SPIFFE_ENDPOINT_SOCKET=unix://{}",
        run_dir.join("agent/agent.sock").display()
    );
    assert!(printed.contains(&socket_line), "{printed}");

    // The data directory is private (it holds the store and an insecure share file).
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(&data).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o700, "data dir mode {mode:o}");
    assert!(
        !printed.contains("accessible to other users"),
        "no warning about its own directory: {printed}"
    );

    let out = cli_as(
        &bins().spike,
        port,
        &run_dir,
        &["secret", "put", "a/b", "k=v"],
    );
    assert!(out.status.success(), "{}", text(&out));

    // Another copy of the binary is not the one `spike dev` trusts: refused, with the
    // reason, at once.
    let copy = dir.path().join("spike-copy");
    std::fs::copy(bins().spike, &copy).unwrap();
    let started = Instant::now();
    let out = Command::new(&copy)
        .args(["secret", "get", "a/b"])
        .env(
            "SPIFFE_ENDPOINT_SOCKET",
            format!("unix://{}", run_dir.join("agent/agent.sock").display()),
        )
        .env("SPIKE_NEXUS_ADDR", format!("127.0.0.1:{port}"))
        .env("SPIKE_SVID_TIMEOUT", PATIENCE)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(5), "{}", text(&out));
    let err = stderr(&out);
    assert!(err.contains("refused this process an identity"), "{err}");
    assert!(
        err.contains(&copy.display().to_string()),
        "names the executable: {err}"
    );
    assert!(err.contains("spike dev"), "{err}");
    assert!(started.elapsed() < Duration::from_secs(60), "{err}");
    assert!(
        printed.contains(&bins().spike.display().to_string()),
        "spike dev says which executable it trusts: {printed}"
    );

    // A second `spike dev` on the same port stops before announcing anything.
    let out = Command::new(bins().spike)
        .args(["dev", "--port", &port.to_string()])
        .args([
            "--data-dir",
            &dir.path().join("other").display().to_string(),
        ])
        .output()
        .unwrap();
    assert!(!out.status.success(), "{}", text(&out));
    let all = text(&out);
    assert!(all.contains("another spike dev"), "{all}");
    assert!(all.contains("--port"), "{all}");
    assert!(!all.contains("export SPIKE_NEXUS_ADDR"), "{all}");

    // After a restart the same socket path (and so the same export lines) works again.
    assert!(dev.terminate(Duration::from_secs(20)));
    let (_dev, port) = start_dev(dir.path(), &data, &log, true);
    assert!(
        std::fs::read_to_string(&log)
            .unwrap()
            .contains(&socket_line)
    );
    let out = cli_as(
        &bins().spike,
        port,
        &run_dir,
        &["secret", "get", "a/b", "k"],
    );
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        "v",
        "{}",
        text(&out)
    );
    // A trailing `/` on a list prefix is accepted.
    let out = cli_as(&bins().spike, port, &run_dir, &["secret", "list", "a/"]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("a/b"),
        "{}",
        text(&out)
    );
}

#[test]
fn the_commands_people_type_first_work() {
    let dir = tempfile::Builder::new()
        .prefix("spike-first-")
        .tempdir()
        .unwrap();
    let data = dir.path().join("data");
    let log = dir.path().join("dev.log");
    let (_dev, port) = start_dev(dir.path(), &data, &log, true);
    let run_dir = data.join("run");
    let spike = |args: &[&str]| {
        let out = cli_as(&bins().spike, port, &run_dir, args);
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            text(&out),
        )
    };

    // One bare value: stored under `value`, printed back bare.
    let (code, _, all) = spike(&["secret", "put", "database/password", "supersecret123"]);
    assert_eq!(code, Some(0), "{all}");
    let (code, stdout, all) = spike(&["secret", "get", "database/password"]);
    assert_eq!((code, stdout.trim()), (Some(0), "supersecret123"), "{all}");
    let (_, stdout, _) = spike(&["-o", "json", "secret", "get", "database/password"]);
    let v: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(v["data"]["value"], "supersecret123", "{v}");

    // The attach shorthand: a policy named for the pair, read by default; again: unchanged.
    let api = "spiffe://spike.dev/service/api-server";
    let (code, stdout, all) = spike(&["policy", "attach", api, "to", "database/*"]);
    assert_eq!(code, Some(0), "{all}");
    let name = stdout
        .trim()
        .strip_prefix("created policy ")
        .unwrap_or_else(|| panic!("{all}"))
        .to_owned();
    assert!(name.starts_with("api-server-database-"), "{name}");
    let (_, stdout, all) = spike(&["policy", "attach", api, "to", "database/*"]);
    assert_eq!(stdout.trim(), format!("unchanged: policy {name}"), "{all}");
    let (_, stdout, _) = spike(&["-o", "json", "policy", "get", &name]);
    let p: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(p["spiffeIdPattern"], api, "{p}");
    assert_eq!(p["pathPattern"], "database/*", "{p}");
    assert_eq!(p["permissions"], serde_json::json!(["read"]), "{p}");
    let (code, _, all) = spike(&["policy", "attach", api, "onto", "database/*"]);
    assert_eq!(code, Some(2), "the word is `to`: {all}");

    // A pattern that looks like a regex is a valid glob that means something else: warned.
    let (code, _, all) = spike(&[
        "policy",
        "create",
        "regex-like",
        "--spiffe-id-pattern",
        "spiffe://spike.dev/x/.*",
        "--path-pattern",
        "database/.*",
        "--permissions",
        "read",
    ]);
    assert_eq!(code, Some(0), "{all}");
    assert!(all.contains("looks like a regular expression"), "{all}");
    assert!(all.contains("did you mean `database/**`"), "{all}");

    // `create` creates: a second one of the same name is refused (exit 6), even identical,
    // until `--replace` says so; the refused one changed nothing.
    let create = |path: &str, extra: &[&str]| {
        let mut args = vec![
            "policy",
            "create",
            "regex-like",
            "--spiffe-id-pattern",
            "spiffe://spike.dev/x/*",
            "--path-pattern",
            path,
            "--permissions",
            "read",
        ];
        args.extend_from_slice(extra);
        spike(&args)
    };
    let (code, _, all) = create("other/**", &[]);
    assert_eq!(code, Some(6), "{all}");
    assert!(all.contains("policy regex-like already exists"), "{all}");
    assert!(all.contains("--replace"), "{all}");
    let (_, stdout, _) = spike(&["-o", "json", "policy", "get", "regex-like"]);
    assert!(
        stdout.contains("database/.*"),
        "the refused create changed it: {stdout}"
    );
    let (code, _, all) = create("other/**", &["--replace"]);
    assert_eq!(code, Some(0), "{all}");
    let (_, stdout, _) = spike(&["-o", "json", "policy", "get", "regex-like"]);
    assert!(
        stdout.contains("other/**"),
        "--replace did not replace: {stdout}"
    );
    let (code, _, all) = spike(&["policy", "delete", "regex-like"]);
    assert_eq!(code, Some(0), "{all}");

    // The policies that apply to an ID.
    let (code, stdout, all) = spike(&["policy", "list", api]);
    assert_eq!(code, Some(0), "{all}");
    assert!(stdout.contains(&name), "{all}");
    let worker = "spiffe://spike.dev/service/worker";
    let (code, stdout, all) = spike(&["policy", "list", worker]);
    assert_eq!(code, Some(0), "{all}");
    assert!(!stdout.contains(&name), "{all}");
    assert!(stdout.contains("no policy applies"), "{all}");

    // `policy test` answers by its exit status too, like `kubectl auth can-i`.
    let (code, stdout, all) = spike(&["policy", "test", api, "database/password"]);
    assert_eq!(code, Some(0), "{all}");
    assert!(stdout.contains("permissions: read"), "{all}");
    let (code, _, all) = spike(&["policy", "test", worker, "database/password"]);
    assert_eq!(code, Some(4), "{all}");
    assert!(all.contains("denied"), "{all}");
    let su = "spiffe://spike.dev/spike/pilot/role/superuser";
    let (code, stdout, all) = spike(&["policy", "test", su, "database/password"]);
    assert_eq!(code, Some(0), "{all}");
    assert!(stdout.contains("superuser: everything"), "{all}");
    // A habit from other tools: `read` for `get`.
    let (code, stdout, all) = spike(&["secret", "read", "database/password"]);
    assert_eq!((code, stdout.trim()), (Some(0), "supersecret123"), "{all}");

    // Listing without a prefix lists everything the caller may list.
    let (code, stdout, all) = spike(&["secret", "list"]);
    assert_eq!(code, Some(0), "{all}");
    let mut lines = stdout.lines();
    let header: Vec<&str> = lines
        .next()
        .unwrap_or_default()
        .split_whitespace()
        .collect();
    assert_eq!(header, ["PATH", "VERSION", "UPDATED"], "{all}");
    let row: Vec<&str> = lines
        .next()
        .unwrap_or_default()
        .split_whitespace()
        .collect();
    assert_eq!(row[..2], ["database/password", "1"], "{all}");
    assert!(
        row[2].ends_with('s') || row[2].ends_with('m'),
        "a relative age: {all}"
    );
    let (code, stdout, all) = spike(&["secret", "list", "nothing/here"]);
    assert_eq!(code, Some(0), "{all}");
    assert!(stdout.contains("no secrets under nothing/here"), "{all}");
    let (_, stdout, all) = spike(&["policy", "list"]);
    assert!(stdout.starts_with("NAME "), "{all}");
    assert!(stdout.contains("PERMISSIONS"), "{all}");

    // Deleting a version never brings an older credential back; rollback and patch do what
    // people mean.
    for pass in ["leaked", "rotated"] {
        let (code, _, all) = spike(&[
            "secret",
            "put",
            "svc/db",
            "user=app",
            &format!("pass={pass}"),
        ]);
        assert_eq!(code, Some(0), "{all}");
    }
    let (code, _, all) = spike(&["secret", "delete", "svc/db"]);
    assert_eq!(code, Some(0), "{all}");
    let (code, stdout, all) = spike(&["secret", "get", "svc/db", "pass"]);
    assert_eq!(code, Some(3), "{all}");
    assert!(!stdout.contains("leaked"), "{all}");
    assert!(all.contains("deleted"), "{all}");
    assert!(all.contains("spike secret undelete"), "the hint: {all}");
    let (code, _, all) = spike(&["secret", "destroy", "svc/db", "--versions", "2"]);
    assert_eq!(code, Some(0), "{all}");
    let (code, _, all) = spike(&["secret", "undelete", "svc/db", "--versions", "2"]);
    assert_eq!(code, Some(3), "{all}");
    assert!(all.contains("cannot be undone"), "{all}");
    let (code, stdout, all) = spike(&["secret", "rollback", "svc/db", "--to", "1"]);
    assert_eq!(code, Some(0), "{all}");
    assert!(
        stdout.contains("version 3 has the content of version 1"),
        "{all}"
    );
    let (code, _, all) = spike(&["secret", "patch", "svc/db", "pass=fresh"]);
    assert_eq!(code, Some(0), "{all}");
    let (_, stdout, all) = spike(&["secret", "get", "svc/db"]);
    assert_eq!(
        stdout.lines().collect::<Vec<_>>(),
        ["pass=fresh", "user=app"],
        "{all}"
    );
    let (code, _, all) = spike(&["secret", "patch", "svc/db", "pass=x", "--cas", "3"]);
    assert_eq!(code, Some(6), "a stale --cas: {all}");

    // A Vault-style address with a scheme works; plain http:// is refused with the fix.
    let out = Command::new(bins().spike)
        .args(["secret", "get", "database/password"])
        .env(
            "SPIFFE_ENDPOINT_SOCKET",
            format!("unix://{}", run_dir.join("agent/agent.sock").display()),
        )
        .env("SPIKE_NEXUS_ADDR", format!("https://127.0.0.1:{port}/"))
        .output()
        .unwrap();
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        "supersecret123",
        "{}",
        text(&out)
    );
    let out = Command::new(bins().spike)
        .args(["secret", "list"])
        .env(
            "SPIFFE_ENDPOINT_SOCKET",
            format!("unix://{}", run_dir.join("agent/agent.sock").display()),
        )
        .env("SPIKE_NEXUS_ADDR", format!("http://127.0.0.1:{port}"))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(stderr(&out).contains("give host:port"), "{}", text(&out));
}

#[test]
fn output_for_people_aligns_quotes_and_keeps_binary_off_terminals() {
    let dir = tempfile::Builder::new()
        .prefix("spike-out-")
        .tempdir()
        .unwrap();
    let data = dir.path().join("data");
    let log = dir.path().join("dev.log");
    let (_dev, port) = start_dev(dir.path(), &data, &log, true);
    let run_dir = data.join("run");
    let spike = |args: &[&str]| {
        let out = cli_as(&bins().spike, port, &run_dir, args);
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            text(&out),
        )
    };

    // `metadata`: the versions as a table whose timestamps are all as wide.
    for i in 1..=11 {
        let (code, _, all) = spike(&["secret", "put", "out/db", &format!("pass=p{i}")]);
        assert_eq!(code, Some(0), "{all}");
    }
    let (code, _, all) = spike(&["secret", "delete", "out/db", "--versions", "3"]);
    assert_eq!(code, Some(0), "{all}");
    let (code, stdout, all) = spike(&["secret", "metadata", "out/db"]);
    assert_eq!(code, Some(0), "{all}");
    let table: Vec<&str> = stdout
        .lines()
        .skip_while(|l| !l.starts_with("VERSION"))
        .collect();
    assert_eq!(table.len(), 11, "header and 10 kept versions: {stdout}");
    let state_at = table[0].find("STATE").unwrap();
    for row in &table[1..] {
        assert!(row.len() >= state_at, "{stdout}");
        let (_, state) = row.split_at(state_at);
        assert!(
            state == "live" || state.starts_with("deleted 20"),
            "{stdout}"
        );
        let created = row.split_whitespace().nth(1).unwrap();
        assert_eq!(created.len(), "2026-12-01T23:25:28Z".len(), "{stdout}");
    }

    // A value with a newline is quoted in the KEY=VALUE listing, printed as it is with KEY.
    let (code, _, all) = spike(&["secret", "put", "out/multi", "k=line1\nline2", "o=plain"]);
    assert_eq!(code, Some(0), "{all}");
    let (_, stdout, _) = spike(&["secret", "get", "out/multi"]);
    assert_eq!(stdout, "k=\"line1\\nline2\"\no=plain\n");
    let (_, stdout, _) = spike(&["secret", "get", "out/multi", "k"]);
    assert_eq!(stdout, "line1\nline2\n");

    // Binary output is refused on a terminal (a pseudo-terminal made by script(1)) unless
    // `--out -` asks for it; through a pipe it flows.
    // (The dev superuser holds `cipher` everywhere.)
    let on_tty = |extra: &str| {
        let cmd = format!(
            "printf data | {} cipher encrypt --context out/c {extra}",
            bins().spike.display()
        );
        Command::new("script")
            .args(["-qec", &cmd, "/dev/null"])
            .env(
                "SPIFFE_ENDPOINT_SOCKET",
                format!("unix://{}", run_dir.join("agent/agent.sock").display()),
            )
            .env("SPIKE_NEXUS_ADDR", format!("127.0.0.1:{port}"))
            .output()
            .unwrap()
    };
    let out = on_tty("");
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(text(&out).contains("binary"), "{}", text(&out));
    assert!(text(&out).contains("--out -"), "{}", text(&out));
    let out = on_tty("--out -");
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let out = on_tty("--base64");
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
}
