//! The socket directory must be private to the agent's user; stale sockets go, nothing else
//! is ever removed.
#![allow(clippy::unwrap_used)]

mod common;

use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::time::Duration;

use common::{me, td};
use spike_agent::{AgentConfig, AgentError};

const HOUR: Duration = Duration::from_secs(3600);

async fn try_start(socket: std::path::PathBuf) -> Result<spike_agent::AgentHandle, AgentError> {
    let mut config = AgentConfig::new(td(), socket);
    config.svid_ttl = HOUR;
    config.registrations = vec![me("/app")];
    spike_agent::start(config).await
}

#[tokio::test]
async fn existing_world_readable_directory_is_refused() {
    let dir = common::private_tempdir();
    let sock_dir = dir.path().join("open");
    fs::create_dir(&sock_dir).unwrap();
    fs::set_permissions(&sock_dir, fs::Permissions::from_mode(0o755)).unwrap();

    let err = try_start(sock_dir.join("agent.sock")).await.unwrap_err();
    assert!(matches!(err, AgentError::SocketDir { .. }), "{err:?}");
    let msg = err.to_string();
    assert!(msg.contains("mode 0755"), "{msg}");
    assert!(
        msg.contains("must not be accessible to group or others"),
        "{msg}"
    );
    // Nothing changed: still 0755, no socket.
    assert_eq!(fs::metadata(&sock_dir).unwrap().mode() & 0o777, 0o755);
    assert!(!sock_dir.join("agent.sock").exists());

    // Group access alone is refused too.
    fs::set_permissions(&sock_dir, fs::Permissions::from_mode(0o710)).unwrap();
    assert!(try_start(sock_dir.join("agent.sock")).await.is_err());
}

#[tokio::test]
async fn directory_of_another_user_is_refused() {
    if !rustix::process::geteuid().is_root() {
        eprintln!("skipped: needs root to give a directory to another user");
        return;
    }
    let dir = common::private_tempdir();
    let sock_dir = dir.path().join("theirs");
    fs::create_dir(&sock_dir).unwrap();
    fs::set_permissions(&sock_dir, fs::Permissions::from_mode(0o700)).unwrap();
    std::os::unix::fs::chown(&sock_dir, Some(65534), Some(65534)).unwrap();
    let err = try_start(sock_dir.join("agent.sock")).await.unwrap_err();
    assert!(err.to_string().contains("is owned by uid 65534"), "{err}");
}

#[tokio::test]
async fn missing_directories_are_created_private() {
    let dir = common::private_tempdir();
    let sock_dir = dir.path().join("a").join("b");
    let agent = try_start(sock_dir.join("agent.sock")).await.unwrap();
    for d in [dir.path().join("a"), sock_dir.clone()] {
        assert_eq!(fs::metadata(&d).unwrap().mode() & 0o777, 0o700, "{d:?}");
    }
    assert_eq!(
        agent.socket_path(),
        fs::canonicalize(&sock_dir).unwrap().join("agent.sock")
    );
    agent.shutdown().await.unwrap();
}

#[tokio::test]
async fn symlinked_directory_is_refused() {
    let dir = common::private_tempdir();
    let real = dir.path().join("real");
    fs::create_dir(&real).unwrap();
    fs::set_permissions(&real, fs::Permissions::from_mode(0o700)).unwrap();
    let link = dir.path().join("link");
    std::os::unix::fs::symlink(&real, &link).unwrap();
    let err = try_start(link.join("agent.sock")).await.unwrap_err();
    assert!(err.to_string().contains("symbolic link"), "{err}");
}

#[tokio::test]
async fn stale_socket_is_replaced_but_other_files_are_not() {
    let dir = common::private_tempdir();
    let socket = dir.path().join("agent.sock");

    // A socket nobody listens on any more (a crashed agent's).
    drop(std::os::unix::net::UnixListener::bind(&socket).unwrap());
    assert!(socket.exists());
    let agent = try_start(socket.clone()).await.unwrap();
    agent.shutdown().await.unwrap();
    assert!(!socket.exists());

    // A regular file at the path is left alone.
    fs::write(&socket, b"precious").unwrap();
    let err = try_start(socket.clone()).await.unwrap_err();
    assert!(err.to_string().contains("is not a socket"), "{err}");
    assert_eq!(fs::read(&socket).unwrap(), b"precious");
}

#[tokio::test]
async fn overlong_socket_path_is_refused() {
    let dir = common::private_tempdir();
    let socket = dir.path().join("s".repeat(120));
    let err = try_start(socket).await.unwrap_err();
    assert!(
        err.to_string().contains("longer than the 107 bytes"),
        "{err}"
    );
}
