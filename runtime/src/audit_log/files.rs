//! The files of one audit log: the live file, the files rotated out of it, its lock, and
//! reading the chain's head back from their tails.
//!
//! The live file (Nexus's `audit.log`) is the one written. When it reaches the size limit it is renamed to
//! `<live>.000001` (then `.000002`, ...: the number only grows, so names sort in chain
//! order) and a new live file starts; the chain continues across them. A lock file,
//! `<live>.lock`, is held for the writer's lifetime, so a second writer cannot fork the
//! chain even while the live file is being replaced.

use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::{FileExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use spike_core::audit::*;

use super::{AuditError, WriterOptions};

/// Digits of a rotated file's number.
const ROTATED_DIGITS: usize = 6;

/// The files of the log whose live file is `live`.
#[derive(Debug, Clone)]
pub struct LogFiles {
    live: PathBuf,
}

impl LogFiles {
    /// The log whose live file is `live`.
    pub fn new(live: impl Into<PathBuf>) -> Self {
        Self { live: live.into() }
    }

    /// The live file.
    pub fn live(&self) -> &Path {
        &self.live
    }

    fn rotated_path(&self, n: u64) -> PathBuf {
        let mut name = self.live.as_os_str().to_owned();
        name.push(format!(".{n:0ROTATED_DIGITS$}"));
        PathBuf::from(name)
    }

    /// The rotated files, oldest first, with their numbers.
    pub fn rotated(&self) -> io::Result<Vec<(u64, PathBuf)>> {
        let (Some(dir), Some(base)) = (self.live.parent(), self.live.file_name()) else {
            return Ok(Vec::new());
        };
        let dir = if dir.as_os_str().is_empty() {
            Path::new(".")
        } else {
            dir
        };
        let base = base.to_string_lossy();
        let mut out = Vec::new();
        let entries = match std::fs::read_dir(dir) {
            Ok(e) => e,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(out),
            Err(e) => return Err(e),
        };
        for entry in entries {
            let entry = entry?;
            let name = entry.file_name();
            let name = name.to_string_lossy();
            let Some(n) = name
                .strip_prefix(base.as_ref())
                .and_then(|rest| rest.strip_prefix('.'))
                .filter(|d| d.len() == ROTATED_DIGITS && d.bytes().all(|b| b.is_ascii_digit()))
                .and_then(|d| d.parse::<u64>().ok())
            else {
                continue;
            };
            out.push((n, self.rotated_path(n)));
        }
        out.sort();
        Ok(out)
    }

    /// Every file of the chain in order: rotated ones, oldest first, then the live one (if it
    /// exists).
    pub fn all(&self) -> io::Result<Vec<PathBuf>> {
        let mut files: Vec<PathBuf> = self.rotated()?.into_iter().map(|(_, p)| p).collect();
        if self.live.exists() {
            files.push(self.live.clone());
        }
        Ok(files)
    }

    /// Total bytes of every file of the chain.
    pub fn total_len(&self) -> io::Result<u64> {
        let mut total = 0;
        for f in self.all()? {
            total += std::fs::metadata(f)?.len();
        }
        Ok(total)
    }

    /// Takes the writer's lock, held while the returned file is open.
    pub(crate) fn lock(&self) -> Result<File, AuditError> {
        let mut name = self.live.as_os_str().to_owned();
        name.push(".lock");
        let lock = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o600)
            .open(PathBuf::from(name))
            .map_err(AuditError::Open)?;
        match lock.try_lock() {
            Ok(()) => Ok(lock),
            Err(std::fs::TryLockError::WouldBlock) => Err(AuditError::Locked),
            Err(std::fs::TryLockError::Error(e)) => Err(AuditError::Open(e)),
        }
    }

    /// Opens (creating with mode 0600) the live file for appending.
    pub(crate) fn open_live(&self) -> Result<File, AuditError> {
        let file = open_append(&self.live).map_err(AuditError::Open)?;
        let meta = file.metadata().map_err(AuditError::Open)?;
        if !meta.is_file() {
            return Err(AuditError::NotAFile);
        }
        if meta.permissions().mode() & 0o077 != 0 {
            tracing::warn!(
                mode = format_args!("{:o}", meta.permissions().mode() & 0o777),
                "audit log is accessible to group or others; 0600 is expected"
            );
        }
        Ok(file)
    }

    /// Renames the live file to the next rotated name and opens a new, empty live file. The
    /// directory is synced after each step, so a crash leaves either name in place and the
    /// chain's order intact (a missing live file is recreated empty on open).
    pub(crate) fn rotate(&self) -> io::Result<File> {
        let next = self.rotated()?.last().map_or(1, |(n, _)| n + 1);
        std::fs::rename(&self.live, self.rotated_path(next))?;
        self.sync_dir()?;
        let file = open_append(&self.live)?;
        self.sync_dir()?;
        Ok(file)
    }

    fn sync_dir(&self) -> io::Result<()> {
        match self.live.parent() {
            Some(dir) if !dir.as_os_str().is_empty() => File::open(dir)?.sync_all(),
            _ => File::open(".")?.sync_all(),
        }
    }
}

fn open_append(path: &Path) -> io::Result<File> {
    OpenOptions::new()
        .read(true)
        .append(true)
        .create(true)
        .mode(0o600)
        .open(path)
}

/// The head of the chain: the last line of the live file, or, when it is empty (just rotated),
/// of the newest rotated file. Returns it with the live file's (possibly repaired) length.
pub(crate) fn read_head(
    files: &LogFiles,
    live: &File,
    key: &AuditKey,
    options: &WriterOptions,
) -> Result<(Checkpoint, u64), AuditError> {
    let len = live.metadata().map_err(AuditError::Open)?.len();
    let (head, len) = last_line(live, len, key, options.repair_torn_tail)?;
    if let Some(head) = head {
        return Ok((head, len));
    }
    let rotated = files.rotated().map_err(AuditError::Open)?;
    let Some((_, newest)) = rotated.last() else {
        return Ok((Checkpoint::GENESIS, len));
    };
    let file = File::open(newest).map_err(AuditError::Open)?;
    let rotated_len = file.metadata().map_err(AuditError::Open)?.len();
    // A rotated file was complete when it was renamed: never repair one.
    let (head, _) = last_line(&file, rotated_len, key, false)?;
    Ok((head.unwrap_or(Checkpoint::GENESIS), len))
}

/// The last line of `file` (of `len` bytes) as a checkpoint, `None` if the file is empty.
fn last_line(
    file: &File,
    mut len: u64,
    key: &AuditKey,
    repair_torn_tail: bool,
) -> Result<(Option<Checkpoint>, u64), AuditError> {
    loop {
        if len == 0 {
            return Ok((None, 0));
        }
        // Room for a longest line, its newline and the newline before it.
        let window = len.min(MAX_LINE_LEN as u64 + 2);
        let start = len - window;
        // `window` is at most MAX_LINE_LEN + 2, so it fits in usize.
        let mut tail = vec![0u8; window as usize];
        file.read_exact_at(&mut tail, start)
            .map_err(AuditError::Open)?;
        if tail.last() != Some(&b'\n') {
            if !repair_torn_tail {
                return Err(AuditError::TornTail);
            }
            let new_len = match tail.iter().rposition(|&b| b == b'\n') {
                Some(i) => start + i as u64 + 1,
                None if start == 0 => 0,
                None => return Err(AuditError::CorruptTail(LineProblem::TooLong)),
            };
            file.set_len(new_len).map_err(AuditError::Open)?;
            file.sync_all().map_err(AuditError::Open)?;
            tracing::warn!(
                removed_bytes = len - new_len,
                "removed an incomplete last line from the audit log"
            );
            len = new_len;
            continue;
        }
        let body = &tail[..tail.len() - 1];
        let line_start = match body.iter().rposition(|&b| b == b'\n') {
            Some(i) => i + 1,
            None if start == 0 => 0,
            None => return Err(AuditError::CorruptTail(LineProblem::TooLong)),
        };
        let text = std::str::from_utf8(&body[line_start..])
            .map_err(|_| AuditError::CorruptTail(LineProblem::NotUtf8))?;
        let line = AuditLine::parse(text).map_err(AuditError::CorruptTail)?;
        if !line.mac_is_valid(key) {
            return Err(AuditError::CorruptTail(LineProblem::BadMac));
        }
        return Ok((Some(line.checkpoint()), len));
    }
}

/// Verifies every file of the chain in order, streaming, against `checkpoints` (the stored
/// one, shipped ones; see [`ChainVerifier::reaching`]). A bad line is reported with its file
/// and its line number in that file.
pub fn verify_files(
    files: &LogFiles,
    key: &AuditKey,
    checkpoints: impl IntoIterator<Item = Checkpoint>,
) -> Result<VerifyReport, FilesVerifyError> {
    let mut v = ChainVerifier::new(key).reaching(checkpoints);
    for (path, file) in files.open_all().map_err(VerifyError::Io)? {
        let before = v.lines();
        v.read(file).map_err(|e| FilesVerifyError {
            file: match &e {
                VerifyError::Line { line, .. } => Some((path.clone(), line - before)),
                _ => None,
            },
            error: e,
        })?;
    }
    Ok(v.finish()?)
}

impl LogFiles {
    /// Every file of the chain, opened, in order. The live writer may rotate meanwhile: a
    /// file opened before its rename stays readable, but the list must then be taken again,
    /// so the set is retried until no rotation happened while it was opened.
    fn open_all(&self) -> io::Result<Vec<(PathBuf, File)>> {
        loop {
            let listed = self.rotated()?;
            let mut opened = Vec::with_capacity(listed.len() + 1);
            for (_, p) in &listed {
                opened.push((p.clone(), File::open(p)?));
            }
            match File::open(&self.live) {
                Ok(f) => opened.push((self.live.clone(), f)),
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => return Err(e),
            }
            if self.rotated()? == listed {
                return Ok(opened);
            }
        }
    }
}

/// A chain of files that does not verify.
#[derive(Debug, thiserror::Error)]
#[error("{error}{}", match file {
    Some((path, line)) => format!(" (file {}, its line {line})", path.display()),
    None => String::new(),
})]
pub struct FilesVerifyError {
    /// Where the bad line is: its file and line number within that file.
    pub file: Option<(PathBuf, u64)>,
    /// What is wrong; its line number counts across all files.
    #[source]
    pub error: VerifyError,
}

impl From<VerifyError> for FilesVerifyError {
    fn from(error: VerifyError) -> Self {
        Self { file: None, error }
    }
}
