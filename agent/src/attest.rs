//! Caller attestation from Unix socket peer credentials.
//!
//! Every accepted connection is wrapped in an [`AttestedStream`] that records, at accept time,
//! the peer's `SO_PEERCRED` (uid, gid, pid of the process that called `connect`) and a pidfd
//! for that pid. Tonic hands the [`PeerInfo`] to each call through the request extensions, and
//! [`attest`] turns it into a [`Caller`] per call.
//!
//! # Why a pidfd, and why it is sound
//!
//! A pid is only a number: once its process exits and is reaped, the kernel may hand it to a
//! new process, and `/proc/<pid>/exe` then describes that new process. To make sure the
//! executable we read belongs to the process we hold credentials for, we
//!
//! 1. open a pidfd for the pid when the connection is accepted. A pidfd refers to one process
//!    for its whole life and never to a later holder of the same pid;
//! 2. per call, read `/proc/<pid>/exe` (and `/proc/<pid>/environ`);
//! 3. then check that the pidfd's process has not exited (`poll` reports a pidfd readable once
//!    its process exits). A pid is only reused after its process has exited and been reaped,
//!    so if the pidfd's process is still running after step 2, the pid was never reused
//!    between step 1 and step 2, and what step 2 read belongs to that process.
//!
//! A call whose connecting process has exited (a child or another process still holding the
//! socket) is refused. The one window left is between the client's `connect` and our
//! `accept`: the connecting process would have to exit and its pid be handed to a new process
//! within it. `SO_PEERPIDFD` (Linux 6.5) would close it, but reading it needs a raw
//! `getsockopt` that rustix does not wrap and this workspace forbids `unsafe` code; given that
//! the socket is reachable only by the agent's own user (see `Registration`), we accept it.
//!
//! If pidfds are unavailable (kernel older than 5.3, or a sandbox that filters the syscall),
//! the executable and environment stay unknown and no `exe` or `env` selector matches: we
//! never report what we could not verify.

use std::io::{self, Read};
use std::os::fd::OwnedFd;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use rustix::event::{PollFd, PollFlags, Timespec};
use rustix::process::{Pid, PidfdFlags};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::UnixStream;
use tokio::net::unix::UCred;
use tonic::transport::server::Connected;

use crate::registration::Caller;
use crate::uds_h2::RequestRewriter;

/// A client connection plus what we learned about its peer when it was accepted. Reads pass
/// through a [`RequestRewriter`] so clients that send the socket path as HTTP/2 authority
/// (gRPC C-core, grpc-java) are understood.
pub(crate) struct AttestedStream {
    inner: UnixStream,
    info: PeerInfo,
    rewriter: RequestRewriter,
}

/// The peer of one connection, as recorded at accept time.
#[derive(Clone, Debug)]
pub(crate) struct PeerInfo {
    cred: Option<UCred>,
    pidfd: PidfdState,
}

#[derive(Clone, Debug)]
enum PidfdState {
    Open(Arc<OwnedFd>),
    /// The connecting process had already exited when we accepted.
    Exited,
    /// The kernel cannot give us one; the executable stays unknown.
    Unavailable,
}

/// Why a call could not be attributed to a live process.
#[derive(Debug, thiserror::Error)]
pub(crate) enum AttestError {
    #[error("the connection carries no peer credentials")]
    NoCredentials,
    #[error("the process that opened the connection has exited")]
    ProcessExited,
    #[error("cannot check whether the calling process is alive: {0}")]
    Liveness(io::Error),
}

impl AttestedStream {
    pub(crate) fn new(inner: UnixStream) -> Self {
        let cred = inner.peer_cred().ok();
        let pidfd = match cred.and_then(|c| c.pid()).and_then(Pid::from_raw) {
            Some(pid) => match rustix::process::pidfd_open(pid, PidfdFlags::empty()) {
                Ok(fd) => PidfdState::Open(Arc::new(fd)),
                Err(rustix::io::Errno::SRCH) => PidfdState::Exited,
                Err(e) => {
                    tracing::debug!(error = %e, "pidfd_open failed; exe selectors cannot match this caller");
                    PidfdState::Unavailable
                }
            },
            None => PidfdState::Unavailable,
        };
        Self {
            inner,
            info: PeerInfo { cred, pidfd },
            rewriter: RequestRewriter::new(),
        }
    }
}

impl Connected for AttestedStream {
    type ConnectInfo = PeerInfo;

    fn connect_info(&self) -> Self::ConnectInfo {
        self.info.clone()
    }
}

impl AsyncRead for AttestedStream {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = &mut *self;
        if buf.remaining() == 0 {
            return Poll::Ready(Ok(()));
        }
        loop {
            let ready = this.rewriter.ready();
            if !ready.is_empty() {
                let n = ready.len().min(buf.remaining());
                buf.put_slice(&ready[..n]);
                this.rewriter.consume(n);
                return Poll::Ready(Ok(()));
            }
            let mut chunk = [0u8; 8192];
            let mut read = ReadBuf::new(&mut chunk);
            match Pin::new(&mut this.inner).poll_read(cx, &mut read) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                // End of stream: whatever partial frame is left is dropped; the server sees
                // the connection end, as it would have anyway.
                Poll::Ready(Ok(())) if read.filled().is_empty() => return Poll::Ready(Ok(())),
                Poll::Ready(Ok(())) => this.rewriter.push(read.filled())?,
            }
        }
    }
}

impl AsyncWrite for AttestedStream {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}

/// Establishes who is calling, now. Called for every RPC and before every streamed update, so
/// a process that exec'd another binary since connecting is judged by what it runs now, and a
/// connection outliving its process gets nothing more.
pub(crate) fn attest(peer: &PeerInfo) -> Result<Caller, AttestError> {
    let cred = peer.cred.ok_or(AttestError::NoCredentials)?;
    let pid = cred.pid().ok_or(AttestError::NoCredentials)?;
    let (exe, env) = match &peer.pidfd {
        PidfdState::Exited => return Err(AttestError::ProcessExited),
        PidfdState::Unavailable => (None, None),
        PidfdState::Open(pidfd) => {
            // Unreadable for another user's process without CAP_SYS_PTRACE, and for kernel
            // threads: then they are simply unknown.
            let exe = std::fs::read_link(format!("/proc/{pid}/exe")).ok();
            let env = read_environ(pid);
            // Order matters: the liveness check must come after the reads (module docs).
            if has_exited(pidfd).map_err(AttestError::Liveness)? {
                return Err(AttestError::ProcessExited);
            }
            (exe, env)
        }
    };
    Ok(Caller {
        uid: cred.uid(),
        gid: cred.gid(),
        pid,
        exe,
        env,
    })
}

/// Largest environment block read; a larger one counts as unknown.
const MAX_ENVIRON: u64 = 1 << 20;

/// Reads the initial environment of `pid` as `KEY=VALUE` pairs.
fn read_environ(pid: i32) -> Option<Vec<(Vec<u8>, Vec<u8>)>> {
    let file = std::fs::File::open(format!("/proc/{pid}/environ")).ok()?;
    let mut raw = Vec::new();
    file.take(MAX_ENVIRON + 1).read_to_end(&mut raw).ok()?;
    if raw.len() as u64 > MAX_ENVIRON {
        return None;
    }
    Some(parse_environ(&raw))
}

fn parse_environ(raw: &[u8]) -> Vec<(Vec<u8>, Vec<u8>)> {
    raw.split(|&b| b == 0)
        .filter_map(|entry| {
            let eq = entry.iter().position(|&b| b == b'=')?;
            Some((entry[..eq].to_vec(), entry[eq + 1..].to_vec()))
        })
        .collect()
}

/// True once the pidfd's process has exited (a pidfd polls readable from then on).
fn has_exited(pidfd: &OwnedFd) -> io::Result<bool> {
    let zero = Timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    loop {
        let mut fds = [PollFd::new(pidfd, PollFlags::IN)];
        match rustix::event::poll(&mut fds, Some(&zero)) {
            Ok(0) => return Ok(false),
            Ok(_) => {
                let rev = fds[0].revents();
                if rev.intersects(PollFlags::NVAL) {
                    return Err(io::Error::other("pidfd is not valid"));
                }
                return Ok(rev.intersects(PollFlags::IN | PollFlags::HUP | PollFlags::ERR));
            }
            Err(rustix::io::Errno::INTR) => continue,
            Err(e) => return Err(e.into()),
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn attests_own_process_with_exe() {
        let (a, _b) = UnixStream::pair().unwrap();
        let s = AttestedStream::new(a);
        let caller = attest(&s.connect_info()).unwrap();
        assert_eq!(caller.uid, rustix::process::getuid().as_raw());
        assert_eq!(caller.pid, i32::try_from(std::process::id()).unwrap());
        assert_eq!(caller.exe, Some(std::env::current_exe().unwrap()));
        // Our own environment as we were started; PATH is set for any test run.
        let env = caller.env.unwrap();
        let path = std::env::var_os("PATH").unwrap();
        assert!(
            env.iter()
                .any(|(k, v)| k == b"PATH" && v.as_slice() == path.as_encoded_bytes())
        );
    }

    #[test]
    fn environ_parsing() {
        let env = parse_environ(b"A=1\0B==2\0NOEQUALS\0\0C=\0");
        let want: Vec<(Vec<u8>, Vec<u8>)> = vec![
            (b"A".to_vec(), b"1".to_vec()),
            (b"B".to_vec(), b"=2".to_vec()),
            (b"C".to_vec(), b"".to_vec()),
        ];
        assert_eq!(env, want);
    }

    #[tokio::test]
    async fn reads_a_childs_start_environment() {
        let mut child = std::process::Command::new("sleep")
            .arg("30")
            .env("SPIKE_TEST_MARK", "keeper-7")
            .spawn()
            .unwrap();
        let pid = i32::try_from(child.id()).unwrap();
        // `spawn` may return while the kernel is still setting up the new program's memory
        // (its environment reads empty for a moment): poll, bounded.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
        let found = loop {
            let env = read_environ(pid).unwrap_or_default();
            if env
                .iter()
                .any(|(k, v)| k == b"SPIKE_TEST_MARK" && v == b"keeper-7")
            {
                break true;
            }
            if std::time::Instant::now() > deadline {
                break false;
            }
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        };
        child.kill().unwrap();
        child.wait().unwrap();
        assert!(found, "child's environment never showed SPIKE_TEST_MARK");
    }

    #[tokio::test]
    async fn refuses_once_the_process_has_exited() {
        let mut child = std::process::Command::new("sleep")
            .arg("30")
            .spawn()
            .unwrap();
        let pid = i32::try_from(child.id()).unwrap();
        // UCred has no public constructor: take real credentials from a socket pair and point
        // the pidfd at the child, which is all the liveness check looks at.
        let (a, _b) = UnixStream::pair().unwrap();
        let fd =
            rustix::process::pidfd_open(Pid::from_raw(pid).unwrap(), PidfdFlags::empty()).unwrap();
        let peer = PeerInfo {
            cred: a.peer_cred().ok(),
            pidfd: PidfdState::Open(Arc::new(fd)),
        };
        assert!(attest(&peer).is_ok());
        child.kill().unwrap();
        child.wait().unwrap();
        // Reaped: the pid is free for reuse, but the pidfd still names the dead process.
        assert!(matches!(attest(&peer), Err(AttestError::ProcessExited)));
    }

    #[test]
    fn a_zombie_counts_as_exited() {
        let mut child = std::process::Command::new("sh")
            .args(["-c", "exit 0"])
            .spawn()
            .unwrap();
        let pid = i32::try_from(child.id()).unwrap();
        let fd =
            rustix::process::pidfd_open(Pid::from_raw(pid).unwrap(), PidfdFlags::empty()).unwrap();
        // Bounded wait for the child to exit (it is not reaped yet: a zombie).
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
        while !has_exited(&fd).unwrap() {
            assert!(std::time::Instant::now() < deadline, "child did not exit");
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        child.wait().unwrap();
    }
}
