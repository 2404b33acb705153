//! The socket's directory and file: a private (0700, ours) directory, no stale socket left
//! behind, and never someone else's socket or file removed.

use std::fs;
use std::io;
use std::os::unix::fs::{DirBuilderExt, FileTypeExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use crate::server::AgentError;

/// `sun_path` holds 108 bytes including the terminating NUL.
const MAX_SOCKET_PATH: usize = 107;

/// Makes sure the socket's directory exists, is a real directory owned by us and closed to
/// group and others, removes a stale socket left by a dead agent, and returns the absolute
/// socket path to bind.
pub(crate) fn prepare(path: &Path) -> Result<PathBuf, AgentError> {
    let bad_path = |reason: &str| AgentError::SocketPath {
        path: path.to_owned(),
        reason: reason.to_owned(),
    };
    let file_name = path
        .file_name()
        .ok_or_else(|| bad_path("the path must end in a file name"))?;
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_owned(),
        _ => PathBuf::from("."),
    };

    ensure_private_dir(&dir)?;
    let dir = fs::canonicalize(&dir).map_err(|source| AgentError::Socket {
        path: dir.clone(),
        source,
    })?;
    let socket = dir.join(file_name);
    if socket.to_str().is_none() {
        return Err(bad_path(
            "the path must be valid UTF-8 (it becomes a unix:// URI)",
        ));
    }
    if socket.as_os_str().len() > MAX_SOCKET_PATH {
        return Err(bad_path(&format!(
            "the absolute path is longer than the {MAX_SOCKET_PATH} bytes a Unix socket address can hold"
        )));
    }
    remove_stale_socket(&socket)?;
    Ok(socket)
}

fn ensure_private_dir(dir: &Path) -> Result<(), AgentError> {
    let refuse = |reason: String| AgentError::SocketDir {
        path: dir.to_owned(),
        reason,
    };
    let meta = match fs::symlink_metadata(dir) {
        Ok(m) => m,
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            // Every directory created here, parents included, gets 0700.
            fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(dir)
                .map_err(|source| AgentError::Socket {
                    path: dir.to_owned(),
                    source,
                })?;
            // The umask can only have narrowed the mode; set it exactly anyway.
            fs::set_permissions(dir, fs::Permissions::from_mode(0o700)).map_err(|source| {
                AgentError::Socket {
                    path: dir.to_owned(),
                    source,
                }
            })?;
            fs::symlink_metadata(dir).map_err(|source| AgentError::Socket {
                path: dir.to_owned(),
                source,
            })?
        }
        Err(source) => {
            return Err(AgentError::Socket {
                path: dir.to_owned(),
                source,
            });
        }
    };
    if meta.file_type().is_symlink() {
        return Err(refuse(
            "is a symbolic link; use the real directory path".to_owned(),
        ));
    }
    if !meta.is_dir() {
        return Err(refuse("exists and is not a directory".to_owned()));
    }
    let me = rustix::process::geteuid().as_raw();
    if meta.uid() != me {
        return Err(refuse(format!(
            "is owned by uid {}, not by the agent's uid {me}; refusing to serve identities from it",
            meta.uid()
        )));
    }
    let mode = meta.mode() & 0o7777;
    if mode & 0o077 != 0 {
        return Err(refuse(format!(
            "has mode {mode:04o}; it must not be accessible to group or others (chmod 700 it, \
             or choose a new directory)"
        )));
    }
    Ok(())
}

fn remove_stale_socket(socket: &Path) -> Result<(), AgentError> {
    let io_err = |source| AgentError::Socket {
        path: socket.to_owned(),
        source,
    };
    let meta = match fs::symlink_metadata(socket) {
        Ok(m) => m,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(io_err(e)),
    };
    if !meta.file_type().is_socket() {
        return Err(AgentError::SocketPath {
            path: socket.to_owned(),
            reason: "exists and is not a socket; refusing to replace it".to_owned(),
        });
    }
    // A live agent accepts the connection; only a dead one's socket refuses it.
    match std::os::unix::net::UnixStream::connect(socket) {
        Ok(_) => Err(AgentError::SocketInUse {
            path: socket.to_owned(),
        }),
        Err(e) if e.kind() == io::ErrorKind::ConnectionRefused => {
            tracing::info!(socket = %socket.display(), "removing stale socket");
            fs::remove_file(socket).map_err(io_err)
        }
        Err(e) => Err(io_err(e)),
    }
}

/// Identifies the socket file we bound, so shutdown removes it only if it is still ours.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct SocketFileId {
    dev: u64,
    ino: u64,
}

impl SocketFileId {
    pub(crate) fn of(path: &Path) -> io::Result<Self> {
        let m = fs::symlink_metadata(path)?;
        Ok(Self {
            dev: m.dev(),
            ino: m.ino(),
        })
    }
}

/// Removes the socket file if it is still the one we bound (a later agent may have replaced
/// it).
pub(crate) fn remove_if_ours(path: &Path, id: SocketFileId) {
    if SocketFileId::of(path).is_ok_and(|now| now == id)
        && let Err(e) = fs::remove_file(path)
    {
        tracing::warn!(socket = %path.display(), error = %e, "cannot remove socket");
    }
}
