//! [`AuditWriter`]: appends the lines of an HMAC-chained audit log with group commit, for
//! Nexus and for each gateway (the line format and its verification are `spike_core::audit`).
//!
//! Concurrent appends share one `write` and, by default, one `fdatasync`: `append` returns
//! only once its line is on disk ([`Durability::Synced`]); if that fails the batch is rolled
//! back and the requests fail closed. [`Durability::Batched`] answers once the line is
//! written (in the OS's cache, safe from a crash of the process) and syncs within a bounded
//! interval, for a writer on a request's latency path (the gateway).
//!
//! When the writer is anchored ([`Anchor`]: Nexus's store), each durable head is then stored
//! as the checkpoint by a thread of its own (the latest head, one store write at a time), so
//! requests do not wait for a store commit as well; the checkpoint trails the log by the
//! writes in flight, and a clean close leaves it at the log's end. The log rotates by size
//! with the chain continuing across files (see [`LogFiles`]). On open, the files are locked
//! and the chain's last line is verified under the key before it is continued.

mod checkpointer;
mod files;
mod shipper;
mod stats;
mod syncer;

use std::fmt;
use std::fs::File;
use std::io::{self, Write};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use time::OffsetDateTime;
use tokio::sync::{mpsc, oneshot};

use spike_core::audit::*;

pub use checkpointer::{Anchor, CheckpointStore, CheckpointStoreError};
pub use files::{FilesVerifyError, LogFiles, verify_files};
pub use shipper::{BadSink, CheckpointSink, SYSLOG_SOCKET, ShipTo};
pub use stats::AuditStats;

/// The runbook an operator needs when the log does not reach its checkpoint.
pub const LOSS_RUNBOOK: &str = "docs/runbooks/audit-log-loss.md";
/// Action of the line that records an accepted loss.
pub const LOSS_ACCEPTED_ACTION: &str = "audit.loss_accepted";
/// What `--audit-accept-loss` names to accept a stored checkpoint that does not verify: no
/// real checkpoint has this seq.
pub const UNUSABLE_CHECKPOINT: u64 = u64::MAX;
/// Default size at which the live file is rotated (64 MiB).
pub const DEFAULT_MAX_FILE_BYTES: u64 = 64 << 20;

/// Smallest rotation size: one longest line.
pub const MIN_FILE_BYTES: u64 = MAX_LINE_LEN as u64;

/// Checks a configured rotation size; `key` names the setting in the error.
pub fn check_max_file_bytes(key: &str, bytes: u64) -> Result<(), crate::config::ConfigError> {
    if bytes < MIN_FILE_BYTES {
        return Err(crate::config::ConfigError::invalid(format!(
            "{key} must be at least {MIN_FILE_BYTES}"
        )));
    }
    Ok(())
}

/// Why the audit writer failed. When `append` fails, the request fails closed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AuditError {
    /// The log could not be opened or read.
    #[error("could not open the audit log: {0}")]
    Open(#[source] io::Error),
    /// The path exists but is not a regular file.
    #[error("the audit log path is not a regular file")]
    NotAFile,
    /// Another writer holds the log's lock.
    #[error("the audit log is locked by another writer (is another process writing the same log?)")]
    Locked,
    /// The log does not end with a newline.
    #[error(
        "the audit log's last line is incomplete (an interrupted write?); refusing to continue the chain: verify the log, then open it with repair_torn_tail or move it aside"
    )]
    TornTail,
    /// The log's last line is invalid.
    #[error(
        "the audit log's last line is invalid ({0}); refusing to continue the chain: run `spike audit verify`"
    )]
    CorruptTail(#[source] LineProblem),
    /// The log does not reach the checkpoint stored with the data: lines cut off the end, a
    /// file removed, or the log replaced.
    #[error(
        "the audit log does not reach its checkpoint (stored: seq {expected_seq}; the log {found}): lines were cut off, a file was removed or replaced. Refusing to continue the chain; see {LOSS_RUNBOOK}. To accept the loss, restart with --audit-accept-loss {expected_seq}"
    )]
    Lost {
        /// The stored checkpoint's seq (what `--audit-accept-loss` must name).
        expected_seq: u64,
        /// What the log holds instead.
        found: String,
    },
    /// The stored checkpoint could not be read or written.
    #[error("audit checkpoint: {0}")]
    Checkpoint(#[source] CheckpointStoreError),
    /// The stored checkpoint does not verify.
    #[error(
        "{0}; refusing to continue the chain; see {LOSS_RUNBOOK}. To accept, restart with --audit-accept-loss {UNUSABLE_CHECKPOINT}"
    )]
    BadCheckpoint(#[source] CheckpointError),
    /// Writing or syncing failed; the batch was rolled back and nothing was acknowledged.
    #[error("could not write the audit log: {0}")]
    Write(#[source] Arc<io::Error>),
    /// A failed write could not be rolled back, so the writer refuses every later append.
    #[error(
        "the audit log is unusable: a failed write could not be rolled back; check the disk, then restart"
    )]
    Poisoned,
    /// The writer was closed.
    #[error("the audit writer is closed")]
    Closed,
}

/// Tuning for [`AuditWriter::open_with`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WriterOptions {
    /// Most lines written (and synced) together.
    pub max_batch: usize,
    /// Appends that may wait for the writer before `append` itself waits.
    pub queue: usize,
    /// Cut an incomplete last line (never a complete one) instead of refusing to open. Such a
    /// fragment was never acknowledged: the writer answers only after a whole batch, newline
    /// included, is synced.
    pub repair_torn_tail: bool,
    /// Rotate the live file once it holds at least this many bytes.
    pub max_file_bytes: u64,
    /// Accept a log that does not reach the stored checkpoint, if that checkpoint's seq is
    /// this one: the chain continues from what the log holds, and its first new line records
    /// the loss. Naming the seq makes the acceptance one-shot: a later loss has another one.
    pub accept_loss_at: Option<u64>,
    /// When `append` answers.
    pub durability: Durability,
    /// Also ship checkpoints to a second sink.
    pub ship: Option<ShipTo>,
}

/// When [`AuditWriter::append`] answers, and so what a crash can lose.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Durability {
    /// Once the line is synced (`fdatasync`): no crash loses an acknowledged line.
    Synced,
    /// Once the line is written (`write(2)`: the OS holds it, a crash of the process loses
    /// nothing); a thread syncs the file at most this long after a write, and before each
    /// rotation and close. A crash of the machine (power loss, kernel panic) can lose the
    /// lines of the last interval, always a tail: the chain stays verifiable, only shorter.
    /// A failed sync poisons the writer, so every later append fails closed.
    Batched(std::time::Duration),
}

impl Default for WriterOptions {
    fn default() -> Self {
        Self {
            max_batch: 1024,
            queue: 4096,
            repair_torn_tail: false,
            max_file_bytes: DEFAULT_MAX_FILE_BYTES,
            accept_loss_at: None,
            durability: Durability::Synced,
            ship: None,
        }
    }
}

/// One line to write: its record and, for a record made earlier (while sealed), its time.
type Entry = (AuditRecord, Option<OffsetDateTime>);
type Reply = oneshot::Sender<Result<Checkpoint, AuditError>>;

enum Msg {
    Append(Box<Entry>, Reply),
    Close(oneshot::Sender<()>),
}

/// The append-only, group-committed audit log. Cheap to clone; all clones feed one writer
/// thread, which owns the files and the chain.
#[derive(Clone)]
pub struct AuditWriter {
    tx: mpsc::Sender<Msg>,
    files: Arc<LogFiles>,
    stats: Arc<AuditStats>,
}

impl fmt::Debug for AuditWriter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AuditWriter")
            .field("path", &self.files.live())
            .finish()
    }
}

impl AuditWriter {
    /// Opens (creating with mode 0600) the log at `path` with default options and no stored
    /// checkpoint. An existing log is continued after its last line, which must verify under
    /// `key`.
    pub async fn open(path: impl Into<PathBuf>, key: AuditKey) -> Result<Self, AuditError> {
        Self::open_with(path, key, WriterOptions::default(), None).await
    }

    /// Opens the log with `options`, anchored to the checkpoint in `anchor`'s store if given.
    ///
    /// The files are locked (`flock` on `<log>.lock`) so a second writer cannot fork the
    /// chain, and the head is checked: a log whose last line is incomplete, does not parse or
    /// does not verify under `key` is refused rather than continued, and so is one that does
    /// not reach the stored checkpoint (unless `options.accept_loss_at` names it).
    pub async fn open_with(
        path: impl Into<PathBuf>,
        key: AuditKey,
        options: WriterOptions,
        anchor: Option<Anchor>,
    ) -> Result<Self, AuditError> {
        let files = LogFiles::new(path);
        let f = files.clone();
        let opts = options.clone();
        let committer = tokio::task::spawn_blocking(move || open_log(f, key, &opts, anchor))
            .await
            .map_err(|e| AuditError::Open(io::Error::other(e.to_string())))??;
        Self::spawn(committer, files, options)
    }

    fn spawn<F: LogFile>(
        committer: Committer<F>,
        files: LogFiles,
        options: WriterOptions,
    ) -> Result<Self, AuditError> {
        let (tx, rx) = mpsc::channel(options.queue.max(1));
        let max_batch = options.max_batch.max(1);
        let stats = committer.stats.clone();
        std::thread::Builder::new()
            .name("spike-audit".into())
            .spawn(move || committer.run(rx, max_batch))
            .map_err(AuditError::Open)?;
        Ok(Self {
            tx,
            files: Arc::new(files),
            stats,
        })
    }

    /// Appends `record` and returns once its line is durable, with the chain position it
    /// reached. Concurrent appends share one write and one sync.
    pub async fn append(&self, record: AuditRecord) -> Result<Checkpoint, AuditError> {
        self.append_entry((record, None)).await
    }

    /// Like [`append`](Self::append), for a record of a request made at `time` (while the
    /// chain was not open).
    pub async fn append_at(
        &self,
        record: AuditRecord,
        time: OffsetDateTime,
    ) -> Result<Checkpoint, AuditError> {
        self.append_entry((record, Some(time))).await
    }

    async fn append_entry(&self, entry: Entry) -> Result<Checkpoint, AuditError> {
        let (tx, rx) = oneshot::channel();
        self.tx
            .send(Msg::Append(Box::new(entry), tx))
            .await
            .map_err(|_| AuditError::Closed)?;
        rx.await.map_err(|_| AuditError::Closed)?
    }

    /// The log's files.
    pub fn files(&self) -> &LogFiles {
        &self.files
    }

    /// Size and growth counters, for `/metrics`.
    pub fn stats(&self) -> &AuditStats {
        &self.stats
    }

    /// Finishes the appends queued before this call, then closes the files (releasing the
    /// lock). Later appends, from any clone, fail with [`AuditError::Closed`]. Idempotent.
    ///
    /// Close it after the last request, so the stored checkpoint (if anchored) reaches the
    /// log's end and a batched log is synced; otherwise the writer closes when its last
    /// clone is dropped. Tests close explicitly to reopen the same file.
    pub async fn close(&self) {
        let (tx, rx) = oneshot::channel();
        if self.tx.send(Msg::Close(tx)).await.is_ok() {
            // An error here means the writer already stopped, which is what we want.
            let _ = rx.await;
        }
    }
}

/// The file operations the committer needs; a trait so tests can inject write failures.
trait LogFile: Send + Sized + 'static {
    /// Appends `buf`, and makes it durable if `sync`.
    fn append(&mut self, buf: &[u8], sync: bool) -> io::Result<()>;
    /// Cuts the file back to `len` bytes, durably.
    fn truncate_durably(&mut self, len: u64) -> io::Result<()>;
    /// Syncs this (full) live file, moves it aside and continues in a new, empty one.
    fn rotate(&mut self, files: &LogFiles) -> io::Result<()>;
}

impl LogFile for File {
    fn append(&mut self, buf: &[u8], sync: bool) -> io::Result<()> {
        self.write_all(buf)?;
        if sync { self.sync_data() } else { Ok(()) }
    }

    fn truncate_durably(&mut self, len: u64) -> io::Result<()> {
        self.set_len(len)?;
        self.sync_all()
    }

    fn rotate(&mut self, files: &LogFiles) -> io::Result<()> {
        // A batched log's last writes must be durable before the file is renamed away from
        // the sync thread.
        self.sync_data()?;
        *self = files.rotate()?;
        Ok(())
    }
}

struct Committer<F> {
    file: F,
    files: LogFiles,
    /// Held for the writer's lifetime: the lock on `<log>.lock`.
    _lock: File,
    chain: Chain,
    key: AuditKey,
    anchor: Option<Anchor>,
    /// Write the heads of committed batches behind the log: to the anchor, then the second
    /// sink (started once the log is open; until then heads are stored in line, by
    /// `anchor`).
    checkpointers: Vec<checkpointer::Checkpointer>,
    /// Bytes of the live file known to be durable: where a failed batch is rolled back to.
    len: u64,
    max_file_bytes: u64,
    poisoned: bool,
    stats: Arc<AuditStats>,
    /// The sync thread of a batched log (`None`: every batch is synced before it answers).
    syncer: Option<syncer::Syncer>,
}

type Pending = (Entry, Reply);

impl<F: LogFile> Committer<F> {
    fn run(mut self, mut rx: mpsc::Receiver<Msg>, max_batch: usize) {
        let mut batch: Vec<Pending> = Vec::new();
        let mut buf = Vec::new();
        while let Some(msg) = rx.blocking_recv() {
            let mut close = None;
            match msg {
                Msg::Append(e, tx) => batch.push((*e, tx)),
                Msg::Close(tx) => close = Some(tx),
            }
            // Group commit: take whatever else is already waiting.
            while close.is_none() && batch.len() < max_batch {
                match rx.try_recv() {
                    Ok(Msg::Append(e, tx)) => batch.push((*e, tx)),
                    Ok(Msg::Close(tx)) => close = Some(tx),
                    Err(_) => break,
                }
            }
            if !batch.is_empty() {
                let (entries, replies): (Vec<Entry>, Vec<Reply>) = batch.drain(..).unzip();
                match self.commit(entries, &mut buf) {
                    Ok(heads) => {
                        for (tx, cp) in replies.into_iter().zip(heads) {
                            // A dropped receiver (cancelled request) still got its line written.
                            let _ = tx.send(Ok(cp));
                        }
                    }
                    Err(e) => {
                        for tx in replies {
                            let _ = tx.send(Err(copy_for_reply(&e)));
                        }
                    }
                }
            }
            if let Some(tx) = close {
                drop(self);
                let _ = tx.send(());
                return;
            }
        }
    }

    /// Seals, writes and syncs `entries`, stores the new head, then rotates a full file.
    /// Returns each line's position, or rolls everything back and fails.
    fn commit(
        &mut self,
        entries: Vec<Entry>,
        buf: &mut Vec<u8>,
    ) -> Result<Vec<Checkpoint>, AuditError> {
        if self.poisoned || self.syncer.as_ref().is_some_and(syncer::Syncer::failed) {
            return Err(AuditError::Poisoned);
        }
        let saved = self.chain.head();
        buf.clear();
        let mut heads = Vec::with_capacity(entries.len());
        for (record, at) in entries {
            let line = match at {
                Some(t) => self.chain.seal_at(record, t),
                None => self.chain.seal(record),
            };
            buf.extend_from_slice(line.to_json_line().as_bytes());
            heads.push(line.checkpoint());
        }
        let lines = heads.len();
        let head = self.chain.head();
        let written = self
            .file
            .append(buf, self.syncer.is_none())
            .map_err(|e| AuditError::Write(Arc::new(e)))
            .and_then(|()| match (self.checkpointers.as_slice(), &self.anchor) {
                ([], Some(a)) => a.save(&self.key, head),
                (cs, _) => {
                    cs.iter().for_each(|c| c.advance(head));
                    Ok(())
                }
            });
        if let Err(e) = written {
            tracing::error!(error = %e, lines, "audit log write failed");
            // Nothing of this batch was acknowledged: cut it off and rewind the chain so the
            // next batch continues from the last durable line. A stored checkpoint ahead of
            // the file cannot happen: the checkpoint is written last.
            match self.file.truncate_durably(self.len) {
                Ok(()) => self.chain.rewind(saved),
                Err(e2) => {
                    tracing::error!(error = %e2, "audit log rollback failed; refusing further appends");
                    self.poisoned = true;
                }
            }
            return Err(e);
        }
        if let Some(s) = &self.syncer {
            s.wrote();
        }
        self.len += buf.len() as u64;
        self.stats.wrote(lines as u64, buf.len() as u64);
        if self.len >= self.max_file_bytes {
            match self.file.rotate(&self.files) {
                Ok(()) => {
                    self.len = 0;
                    self.stats.rotated();
                    tracing::info!(head_seq = head.seq, "audit log rotated");
                }
                // The lines are durable where they are, and the chain is intact: keep
                // writing and try again after the next batch.
                Err(e) => tracing::error!(error = %e, "audit log rotation failed"),
            }
        }
        Ok(heads)
    }
}

/// The same error for every request of a failed batch (the store's error is not `Clone`).
fn copy_for_reply(e: &AuditError) -> AuditError {
    match e {
        AuditError::Write(io) => AuditError::Write(io.clone()),
        AuditError::Poisoned => AuditError::Poisoned,
        other => AuditError::Write(Arc::new(io::Error::other(other.to_string()))),
    }
}

/// Opens, locks and checks the log against the stored checkpoint; returns the committer,
/// which has already written the line recording an accepted loss.
fn open_log(
    files: LogFiles,
    key: AuditKey,
    options: &WriterOptions,
    anchor: Option<Anchor>,
) -> Result<Committer<File>, AuditError> {
    let lock = files.lock()?;
    let live = files.open_live()?;
    let (head, len) = files::read_head(&files, &live, &key, options)?;
    let loss = match &anchor {
        Some(a) => match a.load(&key) {
            Ok(stored) => check_anchor(&files, &key, head, stored, options)?,
            Err(AuditError::BadCheckpoint(e))
                if options.accept_loss_at == Some(UNUSABLE_CHECKPOINT) =>
            {
                tracing::warn!(error = %e, "unusable audit checkpoint accepted by the operator");
                Some(
                    AuditRecord::new(LOSS_ACCEPTED_ACTION, Decision::Allow, "operator_accepted")
                        .with_path(format!(
                            "the stored checkpoint was unusable ({e}); the log ends at seq {}",
                            head.seq
                        )),
                )
            }
            Err(e) => {
                tracing::error!(error = %e, runbook = LOSS_RUNBOOK, "AUDIT LOG LOSS: the stored audit checkpoint is unusable");
                return Err(e);
            }
        },
        None => None,
    };
    let total = files.total_len().map_err(AuditError::Open)?;
    let mut committer = Committer {
        file: live,
        files,
        _lock: lock,
        chain: Chain::resume(key.clone(), head),
        key,
        anchor,
        checkpointers: Vec::new(),
        len,
        max_file_bytes: options.max_file_bytes.max(1),
        poisoned: false,
        stats: Arc::new(AuditStats::new(total)),
        syncer: None,
    };
    if let Durability::Batched(interval) = options.durability {
        committer.syncer = Some(
            syncer::Syncer::spawn(committer.files.live().to_owned(), interval)
                .map_err(AuditError::Open)?,
        );
    }
    match loss {
        // Recorded (and checkpointed) before anything else is written.
        Some(record) => {
            committer.commit(vec![(record, None)], &mut Vec::new())?;
        }
        // Also anchors a log that had no stored checkpoint yet (a new one, or one from
        // before checkpoints existed).
        None => {
            if let Some(a) = &committer.anchor {
                a.save(&committer.key, head)?;
            }
        }
    }
    if let Some(a) = &committer.anchor {
        committer.checkpointers.push(
            checkpointer::Checkpointer::spawn(a.clone(), committer.key.clone(), Duration::ZERO)
                .map_err(AuditError::Open)?,
        );
    }
    if let Some(ship) = &options.ship {
        let sink = shipper::Shipper::open(&ship.sink)?;
        let c = checkpointer::Checkpointer::spawn(sink, committer.key.clone(), ship.every)
            .map_err(AuditError::Open)?;
        // Where the log starts (or resumes) is shipped too.
        c.advance(committer.chain.head());
        committer.checkpointers.push(c);
    }
    Ok(committer)
}

/// Compares the log's `head` with the `stored` checkpoint: `Ok(None)` when the log reaches
/// it, `Ok(Some(record))` with the line recording an accepted loss, or the refusal.
fn check_anchor(
    files: &LogFiles,
    key: &AuditKey,
    head: Checkpoint,
    stored: Option<Checkpoint>,
    options: &WriterOptions,
) -> Result<Option<AuditRecord>, AuditError> {
    let found = match (checkpointer::standing(head, stored), stored) {
        (checkpointer::Standing::Reaches, _) | (_, None) => return Ok(None),
        (checkpointer::Standing::Ahead, Some(cp)) => match verify_files(files, key, Some(cp)) {
            Ok(_) => return Ok(None),
            Err(e) => format!("does not contain it: {e}"),
        },
        (checkpointer::Standing::Lost, Some(_)) if head.seq == 0 => {
            "is empty or missing".to_owned()
        }
        (checkpointer::Standing::Lost, Some(_)) => {
            format!("ends at seq {} with mac {}", head.seq, head.mac)
        }
    };
    let Some(cp) = stored else { return Ok(None) };
    if options.accept_loss_at != Some(cp.seq) {
        tracing::error!(
            expected_seq = cp.seq,
            expected_mac = %cp.mac,
            found = %found,
            runbook = LOSS_RUNBOOK,
            "AUDIT LOG LOSS: the audit log does not reach its stored checkpoint"
        );
        return Err(AuditError::Lost {
            expected_seq: cp.seq,
            found,
        });
    }
    tracing::warn!(
        expected_seq = cp.seq,
        found = %found,
        "audit log loss accepted by the operator; the chain continues from the log's head"
    );
    let record = AuditRecord::new(LOSS_ACCEPTED_ACTION, Decision::Allow, "operator_accepted")
        .with_path(format!(
            "checkpoint seq {} mac {}; the log {found}",
            cp.seq, cp.mac
        ))
        .with_count("lines_lost", cp.seq.saturating_sub(head.seq));
    Ok(Some(record))
}

#[cfg(test)]
// Tests may unwrap: a panic is the failure report.
#[allow(clippy::unwrap_used)]
mod tests;
