//! Audit checkpoints shipped to a second sink (a file, ideally on another volume, or syslog,
//! ideally forwarded off the machine), so that someone who can rewrite both the log and the
//! data directory, and so roll both back together, is still caught: `spike audit verify
//! --checkpoints` checks the log against what the sink holds. Each line is
//! [`Checkpoint::shipped_line`], sealed under the chain's key, so the sink needs no secrecy,
//! only to keep what it was sent.

use std::fmt;
use std::fs::File;
use std::io::Write as _;
use std::os::unix::fs::OpenOptionsExt as _;
use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Duration;

use spike_core::audit::{AuditKey, Checkpoint};

use super::AuditError;
use super::checkpointer::HeadSink;

/// Where shipped checkpoints go.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CheckpointSink {
    /// Appended, one line each, to this file (created with mode 0600), synced after each.
    File(PathBuf),
    /// Sent as one datagram each to the local syslog socket at this path (`/dev/log`), as
    /// `<85>spike-audit[PID]: LINE` (facility authpriv, severity notice).
    Syslog(PathBuf),
}

/// The default syslog socket.
pub const SYSLOG_SOCKET: &str = "/dev/log";

/// A sink that is not `file:PATH`, `syslog` or `syslog:PATH`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "a checkpoint sink is file:/absolute/path, syslog (the socket {SYSLOG_SOCKET}) or syslog:/absolute/socket/path"
)]
pub struct BadSink;

impl FromStr for CheckpointSink {
    type Err = BadSink;

    fn from_str(s: &str) -> Result<Self, BadSink> {
        let absolute = |p: &str| {
            let p = Path::new(p);
            p.is_absolute().then(|| p.to_owned()).ok_or(BadSink)
        };
        match s.split_once(':') {
            None if s == "syslog" => Ok(Self::Syslog(SYSLOG_SOCKET.into())),
            Some(("file", p)) => absolute(p).map(Self::File),
            Some(("syslog", p)) => absolute(p).map(Self::Syslog),
            _ => Err(BadSink),
        }
    }
}

impl fmt::Display for CheckpointSink {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::File(p) => write!(f, "file:{}", p.display()),
            Self::Syslog(p) => write!(f, "syslog:{}", p.display()),
        }
    }
}

/// Shipping: where, and at most how often (the last head is always shipped on close).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ShipTo {
    /// The sink.
    pub sink: CheckpointSink,
    /// Least time between two shipped checkpoints.
    pub every: Duration,
}

/// An open sink.
pub(crate) enum Shipper {
    File(File),
    Syslog { socket: UnixDatagram, path: PathBuf },
}

impl Shipper {
    /// Opens the sink, so a path that cannot be written fails the writer's start rather than
    /// its first checkpoint.
    pub(crate) fn open(sink: &CheckpointSink) -> Result<Self, AuditError> {
        let cannot = |e: std::io::Error| {
            AuditError::Open(std::io::Error::new(
                e.kind(),
                format!("audit checkpoint sink {sink}: {e}"),
            ))
        };
        Ok(match sink {
            CheckpointSink::File(p) => Self::File(
                File::options()
                    .append(true)
                    .create(true)
                    .mode(0o600)
                    .open(p)
                    .map_err(cannot)?,
            ),
            CheckpointSink::Syslog(p) => Self::Syslog {
                socket: connect(p).map_err(cannot)?,
                path: p.clone(),
            },
        })
    }
}

fn connect(path: &Path) -> std::io::Result<UnixDatagram> {
    let s = UnixDatagram::unbound()?;
    s.connect(path)?;
    Ok(s)
}

impl HeadSink for Shipper {
    fn write(&mut self, key: &AuditKey, head: Checkpoint) -> Result<(), AuditError> {
        let line = head.shipped_line(key);
        let failed = |e| AuditError::Checkpoint(Box::new(e));
        match self {
            Self::File(f) => {
                f.write_all(format!("{line}\n").as_bytes())
                    .map_err(failed)?;
                f.sync_data().map_err(failed)
            }
            Self::Syslog { socket, path } => {
                let msg = format!("<85>spike-audit[{}]: {line}", std::process::id());
                if socket.send(msg.as_bytes()).is_err() {
                    // The syslog daemon restarted: its socket is a new one.
                    *socket = connect(path).map_err(failed)?;
                    socket.send(msg.as_bytes()).map_err(failed)?;
                }
                Ok(())
            }
        }
    }

    fn name(&self) -> &'static str {
        match self {
            Self::File(_) => "the checkpoint file",
            Self::Syslog { .. } => "syslog",
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn sinks_parse_and_print_back() {
        for (text, sink) in [
            ("file:/var/log/x", CheckpointSink::File("/var/log/x".into())),
            ("syslog", CheckpointSink::Syslog("/dev/log".into())),
            ("syslog:/run/log", CheckpointSink::Syslog("/run/log".into())),
        ] {
            assert_eq!(text.parse::<CheckpointSink>(), Ok(sink.clone()));
            assert_eq!(sink.to_string().parse::<CheckpointSink>(), Ok(sink));
        }
        for bad in [
            "",
            "file:",
            "file:rel/x",
            "syslog:",
            "udp:1.2.3.4",
            "/var/log/x",
        ] {
            assert_eq!(bad.parse::<CheckpointSink>(), Err(BadSink), "{bad}");
        }
    }

    #[test]
    fn a_sink_that_cannot_be_opened_is_named() {
        for sink in [
            CheckpointSink::File("/nonexistent-dir/x".into()),
            CheckpointSink::Syslog("/nonexistent-dir/log".into()),
        ] {
            let Err(e) = Shipper::open(&sink) else {
                panic!("{sink} opened")
            };
            assert!(e.to_string().contains(&sink.to_string()), "{e}");
        }
    }
}
