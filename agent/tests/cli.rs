//! The `spike-agent` binary: registration files, serving, and clean exit on SIGTERM.
#![allow(clippy::unwrap_used)]

mod common;

use std::fs;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::{WAIT, own_uid};
use spiffe::WorkloadApiClient;

fn agent_cmd(socket: &Path, registrations: &Path) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_spike-agent"));
    cmd.arg("--socket")
        .arg(socket)
        .arg("--registrations")
        .arg(registrations)
        .arg("--svid-ttl")
        .arg("10m")
        .env_remove("RUST_LOG")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    cmd
}

fn wait_exit(child: &mut Child) -> std::process::ExitStatus {
    let deadline = Instant::now() + WAIT;
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("spike-agent did not exit in time");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn stderr_of(child: Child) -> String {
    String::from_utf8_lossy(&child.wait_with_output().unwrap().stderr).into_owned()
}

#[test]
fn bad_registration_files_are_refused_with_clear_errors() {
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("s").join("agent.sock");
    let cases = [
        (
            "[[entry]]\nspiffe_id = \"not-an-id\"\nuid = 1\n",
            "registration entry 1: invalid spiffe_id",
        ),
        (
            "[[entry]]\nspiffe_id = \"spiffe://elsewhere.org/app\"\nuid = 1\n",
            "not in the agent's trust domain spike.dev",
        ),
        (
            "[[entry]]\nspiffe_id = \"spiffe://spike.dev/app\"\n",
            "no selectors",
        ),
    ];
    for (text, want) in cases {
        let regs = dir.path().join("regs.toml");
        fs::write(&regs, text).unwrap();
        let mut child = agent_cmd(&socket, &regs).spawn().unwrap();
        let status = wait_exit(&mut child);
        assert!(!status.success());
        let err = stderr_of(child);
        assert!(err.contains(want), "for {text:?}: {err}");
        // Refused before touching the socket directory.
        assert!(!socket.parent().unwrap().exists());
    }
}

#[tokio::test]
async fn serves_registered_caller_and_exits_cleanly_on_sigterm() {
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("run").join("agent.sock");
    let regs = dir.path().join("regs.toml");
    fs::write(
        &regs,
        format!(
            "[[entry]]\nspiffe_id = \"spiffe://spike.dev/cli-test\"\nuid = {}\nexe = {:?}\n",
            own_uid(),
            std::env::current_exe().unwrap()
        ),
    )
    .unwrap();
    let mut child = agent_cmd(&socket, &regs).spawn().unwrap();

    let deadline = Instant::now() + WAIT;
    while !socket.exists() {
        if let Some(status) = child.try_wait().unwrap() {
            panic!("agent exited early ({status}): {}", stderr_of(child));
        }
        assert!(Instant::now() < deadline, "socket never appeared");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let client = WorkloadApiClient::connect_to(format!("unix://{}", socket.display()))
        .await
        .unwrap();
    let svid = tokio::time::timeout(WAIT, client.fetch_x509_svid())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(svid.spiffe_id().to_string(), "spiffe://spike.dev/cli-test");

    let pid = rustix::process::Pid::from_child(&child);
    rustix::process::kill_process(pid, rustix::process::Signal::TERM).unwrap();
    // Poll without blocking the runtime, so the client side can close its connection when
    // the agent says goodbye.
    let deadline = Instant::now() + WAIT;
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        assert!(
            Instant::now() < deadline,
            "spike-agent did not exit in time"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let err = stderr_of(child);
    assert!(status.success(), "{status}: {err}");
    assert!(!socket.exists(), "socket left behind");
    assert!(
        err.contains("NOT a SPIRE replacement"),
        "start-up warning missing: {err}"
    );
    assert!(
        !err.contains("still open after the shutdown grace period"),
        "shutdown was not graceful: {err}"
    );
}
