//! [`AuditWriter`]: appends audit lines durably with group commit.
//!
//! Concurrent appends share one `write` and one `fdatasync`, and `append` returns only once
//! its line is on disk; if the log cannot be written, the request fails closed. The line
//! format and its verification are `spike_core::audit`.

use std::fmt;
use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::{FileExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use tokio::sync::{mpsc, oneshot};

use spike_core::audit::*;

/// Why the audit writer failed. When `append` fails, Nexus fails the request closed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub(crate) enum AuditError {
    /// The log could not be opened or read.
    #[error("could not open the audit log: {0}")]
    Open(#[source] io::Error),
    /// The path exists but is not a regular file.
    #[error("the audit log path is not a regular file")]
    NotAFile,
    /// Another writer holds the log's lock.
    #[error(
        "the audit log is locked by another writer (is another Nexus using this data directory?)"
    )]
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
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct WriterOptions {
    /// Most lines written (and synced) together.
    pub max_batch: usize,
    /// Appends that may wait for the writer before `append` itself waits.
    pub queue: usize,
    /// Cut an incomplete last line (never a complete one) instead of refusing to open. Such a
    /// fragment was never acknowledged: the writer answers only after a whole batch, newline
    /// included, is synced.
    pub repair_torn_tail: bool,
}

impl Default for WriterOptions {
    fn default() -> Self {
        Self {
            max_batch: 1024,
            queue: 4096,
            repair_torn_tail: false,
        }
    }
}

enum Msg {
    Append(AuditRecord, oneshot::Sender<Result<Checkpoint, AuditError>>),
    #[cfg_attr(not(test), allow(dead_code))]
    Close(oneshot::Sender<()>),
}

/// The append-only, group-committed audit log file. Cheap to clone; all clones feed one
/// writer thread, which owns the file and the chain.
#[derive(Clone)]
pub(crate) struct AuditWriter {
    tx: mpsc::Sender<Msg>,
    path: Arc<PathBuf>,
}

impl fmt::Debug for AuditWriter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AuditWriter")
            .field("path", &self.path)
            .finish()
    }
}

impl AuditWriter {
    /// Opens (creating with mode 0600) the log at `path` with default options. An existing
    /// log is continued after its last line, which must verify under `key`.
    pub(crate) async fn open(path: impl Into<PathBuf>, key: AuditKey) -> Result<Self, AuditError> {
        Self::open_with(path, key, WriterOptions::default()).await
    }

    /// Opens the log with `options`.
    ///
    /// The file is opened `O_APPEND`, locked exclusively (`flock`) so a second writer cannot
    /// fork the chain, and its tail is checked: a log whose last line is incomplete, does not
    /// parse or does not verify under `key` is refused rather than continued.
    pub(crate) async fn open_with(
        path: impl Into<PathBuf>,
        key: AuditKey,
        options: WriterOptions,
    ) -> Result<Self, AuditError> {
        let path = path.into();
        let p = path.clone();
        let (file, chain, len) = tokio::task::spawn_blocking(move || open_log(&p, key, &options))
            .await
            .map_err(|e| AuditError::Open(io::Error::other(e.to_string())))??;
        Self::spawn(file, chain, len, path, options)
    }

    fn spawn<F: LogFile>(
        file: F,
        chain: Chain,
        len: u64,
        path: PathBuf,
        options: WriterOptions,
    ) -> Result<Self, AuditError> {
        let (tx, rx) = mpsc::channel(options.queue.max(1));
        let max_batch = options.max_batch.max(1);
        std::thread::Builder::new()
            .name("spike-audit".into())
            .spawn(move || {
                Committer {
                    file,
                    chain,
                    len,
                    poisoned: false,
                }
                .run(rx, max_batch);
            })
            .map_err(AuditError::Open)?;
        Ok(Self {
            tx,
            path: Arc::new(path),
        })
    }

    /// Appends `record` and returns once its line is durable, with the chain position it
    /// reached. Concurrent appends share one write and one sync.
    pub(crate) async fn append(&self, record: AuditRecord) -> Result<Checkpoint, AuditError> {
        let (tx, rx) = oneshot::channel();
        self.tx
            .send(Msg::Append(record, tx))
            .await
            .map_err(|_| AuditError::Closed)?;
        rx.await.map_err(|_| AuditError::Closed)?
    }

    /// Finishes the appends queued before this call, then closes the file (releasing its
    /// lock). Later appends, from any clone, fail with [`AuditError::Closed`]. Idempotent.
    ///
    /// Nexus itself never needs it: the writer closes when the open state that owns it is
    /// dropped (sealing, shutdown). Tests close explicitly to reopen the same file.
    #[cfg_attr(not(test), allow(dead_code))]
    pub(crate) async fn close(&self) {
        let (tx, rx) = oneshot::channel();
        if self.tx.send(Msg::Close(tx)).await.is_ok() {
            // An error here means the writer already stopped, which is what we want.
            let _ = rx.await;
        }
    }
}

/// The file operations the committer needs; a trait so tests can inject write failures.
trait LogFile: Send + 'static {
    /// Appends `buf` and makes it durable.
    fn append_durably(&mut self, buf: &[u8]) -> io::Result<()>;
    /// Cuts the file back to `len` bytes, durably.
    fn truncate_durably(&mut self, len: u64) -> io::Result<()>;
}

impl LogFile for File {
    fn append_durably(&mut self, buf: &[u8]) -> io::Result<()> {
        self.write_all(buf)?;
        self.sync_data()
    }

    fn truncate_durably(&mut self, len: u64) -> io::Result<()> {
        self.set_len(len)?;
        self.sync_all()
    }
}

struct Committer<F> {
    file: F,
    chain: Chain,
    /// Bytes known to be durable: where a failed batch is rolled back to.
    len: u64,
    poisoned: bool,
}

type Pending = (AuditRecord, oneshot::Sender<Result<Checkpoint, AuditError>>);

impl<F: LogFile> Committer<F> {
    fn run(mut self, mut rx: mpsc::Receiver<Msg>, max_batch: usize) {
        let mut batch: Vec<Pending> = Vec::new();
        let mut buf = Vec::new();
        while let Some(msg) = rx.blocking_recv() {
            let mut close = None;
            match msg {
                Msg::Append(r, tx) => batch.push((r, tx)),
                Msg::Close(tx) => close = Some(tx),
            }
            // Group commit: take whatever else is already waiting.
            while close.is_none() && batch.len() < max_batch {
                match rx.try_recv() {
                    Ok(Msg::Append(r, tx)) => batch.push((r, tx)),
                    Ok(Msg::Close(tx)) => close = Some(tx),
                    Err(_) => break,
                }
            }
            if !batch.is_empty() {
                self.commit(&mut batch, &mut buf);
            }
            if let Some(tx) = close {
                drop(self);
                let _ = tx.send(());
                return;
            }
        }
    }

    fn commit(&mut self, batch: &mut Vec<Pending>, buf: &mut Vec<u8>) {
        if self.poisoned {
            for (_, tx) in batch.drain(..) {
                let _ = tx.send(Err(AuditError::Poisoned));
            }
            return;
        }
        let saved = self.chain.head();
        buf.clear();
        let mut replies = Vec::with_capacity(batch.len());
        for (record, tx) in batch.drain(..) {
            let line = self.chain.seal(record);
            buf.extend_from_slice(line.to_json_line().as_bytes());
            replies.push((tx, line.checkpoint()));
        }
        match self.file.append_durably(buf) {
            Ok(()) => {
                self.len += buf.len() as u64;
                for (tx, cp) in replies {
                    // A dropped receiver (cancelled request) still got its line written.
                    let _ = tx.send(Ok(cp));
                }
            }
            Err(e) => {
                let e = Arc::new(e);
                tracing::error!(error = %e, lines = replies.len(), "audit log write failed");
                // Nothing of this batch was acknowledged: cut it off and rewind the chain so
                // the next batch continues from the last durable line.
                match self.file.truncate_durably(self.len) {
                    Ok(()) => self.chain.rewind(saved),
                    Err(e2) => {
                        tracing::error!(error = %e2, "audit log rollback failed; refusing further appends");
                        self.poisoned = true;
                    }
                }
                for (tx, _) in replies {
                    let _ = tx.send(Err(AuditError::Write(e.clone())));
                }
            }
        }
    }
}

/// Opens, locks and checks the log; returns the file, the resumed chain and its length.
fn open_log(
    path: &Path,
    key: AuditKey,
    options: &WriterOptions,
) -> Result<(File, Chain, u64), AuditError> {
    let file = OpenOptions::new()
        .read(true)
        .append(true)
        .create(true)
        .mode(0o600)
        .open(path)
        .map_err(AuditError::Open)?;
    let meta = file.metadata().map_err(AuditError::Open)?;
    if !meta.is_file() {
        return Err(AuditError::NotAFile);
    }
    match file.try_lock() {
        Ok(()) => {}
        Err(std::fs::TryLockError::WouldBlock) => return Err(AuditError::Locked),
        Err(std::fs::TryLockError::Error(e)) => return Err(AuditError::Open(e)),
    }
    if meta.permissions().mode() & 0o077 != 0 {
        tracing::warn!(
            mode = format_args!("{:o}", meta.permissions().mode() & 0o777),
            "audit log is accessible to group or others; 0600 is expected"
        );
    }
    let mut len = meta.len();
    loop {
        if len == 0 {
            return Ok((file, Chain::new(key), 0));
        }
        // Room for a longest line, its newline and the newline before it.
        let window = len.min(MAX_LINE_LEN as u64 + 2);
        let start = len - window;
        // `window` is at most MAX_LINE_LEN + 2, so it fits in usize.
        let mut tail = vec![0u8; window as usize];
        file.read_exact_at(&mut tail, start)
            .map_err(AuditError::Open)?;
        if tail.last() != Some(&b'\n') {
            if !options.repair_torn_tail {
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
        if !line.mac_is_valid(&key) {
            return Err(AuditError::CorruptTail(LineProblem::BadMac));
        }
        return Ok((file, Chain::resume(key, line.checkpoint()), len));
    }
}

#[cfg(test)]
// Tests may unwrap: a panic is the failure report.
#[allow(clippy::unwrap_used)]
mod tests {
    use std::collections::HashSet;
    use std::sync::atomic::{AtomicU8, Ordering};
    use std::time::Duration;

    use super::*;
    use spike_core::id::SpiffeId;
    use time::OffsetDateTime;

    const T: Duration = Duration::from_secs(60);

    fn key() -> AuditKey {
        AuditKey::new(&[7; 32])
    }

    fn record(i: usize) -> AuditRecord {
        let id = SpiffeId::new(&format!("spiffe://spike.dev/app/{}", i % 5)).unwrap();
        let r = AuditRecord::new(
            if i.is_multiple_of(2) {
                "secret.get"
            } else {
                "secret.put"
            },
            if i.is_multiple_of(3) {
                Decision::Deny
            } else {
                Decision::Allow
            },
            if i.is_multiple_of(3) {
                "policy_denied"
            } else {
                "ok"
            },
        )
        .with_caller(id)
        .with_path(format!("db/item-{i}"));
        if i.is_multiple_of(4) {
            r
        } else {
            r.with_status(200)
        }
    }

    /// A sealed log of `n` lines, one string per line (without newlines).
    fn log(n: usize, key: &AuditKey) -> Vec<String> {
        let mut chain = Chain::new(key.clone());
        (0..n)
            .map(|i| chain.seal(record(i)).to_json_line().trim_end().to_owned())
            .collect()
    }

    fn join(lines: &[String]) -> Vec<u8> {
        lines
            .iter()
            .flat_map(|l| format!("{l}\n").into_bytes())
            .collect()
    }

    fn bad_line(r: Result<VerifyReport, VerifyError>) -> (u64, LineProblem) {
        match r {
            Err(VerifyError::Line { line, problem }) => (line, problem),
            other => panic!("expected a bad line, got {other:?}"),
        }
    }

    #[test]
    fn line_format() {
        let mut chain = Chain::new(key());
        let t = OffsetDateTime::from_unix_timestamp(1_700_000_000).unwrap();
        let id = SpiffeId::new("spiffe://spike.dev/app").unwrap();
        let line = chain.seal_at(
            AuditRecord::new("secret.get", Decision::Allow, "ok")
                .with_caller(id)
                .with_path("db/x")
                .with_status(200),
            t,
        );
        let json = line.to_json_line();
        assert!(json.ends_with('\n'));
        let prefix = concat!(
            r#"{"seq":1,"time":"2023-11-14T22:13:20.000000Z","caller":"spiffe://spike.dev/app","#,
            r#""action":"secret.get","path":"db/x","decision":"allow","reason":"ok","status":200,"#,
            r#""prev":"0000000000000000000000000000000000000000000000000000000000000000","mac":""#
        );
        assert!(json.starts_with(prefix), "{json}");
        let bare = chain.seal_at(AuditRecord::new("status", Decision::Error, "sealed"), t);
        let json = bare.to_json_line();
        assert!(json.contains(r#""caller":null"#), "{json}");
        assert!(
            !json.contains("\"path\"") && !json.contains("\"status\":"),
            "{json}"
        );
        assert_eq!(bare.prev, line.mac);
        assert_eq!(AuditLine::parse(json.trim_end()).unwrap(), bare);
        // The MAC depends on the key.
        assert_ne!(bare.compute_mac(&AuditKey::new(&[8; 32])), bare.mac);
        assert_eq!(format!("{:?}", key()), "AuditKey(..)");
    }

    #[test]
    fn long_paths_are_capped() {
        let r = AuditRecord::new("secret.get", Decision::Deny, "invalid_path")
            .with_path("é".repeat(MAX_AUDIT_PATH_LEN));
        let p = r.path().unwrap();
        assert!(p.len() <= MAX_AUDIT_PATH_LEN && p.ends_with("..."));
    }

    #[test]
    fn round_trip_verifies() {
        let k = key();
        let lines = log(300, &k);
        let report = verify(&join(&lines)[..], &k).unwrap();
        assert_eq!(report.lines, 300);
        let last = AuditLine::parse(&lines[299]).unwrap();
        assert_eq!(report.head, last.checkpoint());
        assert_eq!(report.head.seq, 300);
        assert_eq!(
            verify_against(&join(&lines)[..], &k, &report.head).unwrap(),
            report
        );
        // A checkpoint in the middle is fine too: the log grew since.
        let mid = AuditLine::parse(&lines[99]).unwrap().checkpoint();
        assert_eq!(verify_against(&join(&lines)[..], &k, &mid).unwrap(), report);
        let empty = verify(&b""[..], &k).unwrap();
        assert_eq!(
            empty,
            VerifyReport {
                lines: 0,
                head: Checkpoint::GENESIS
            }
        );
    }

    #[test]
    fn detects_edited_fields() {
        let k = key();
        for (from, to) in [
            ("secret.get", "secret.put"),
            ("\"allow\"", "\"deny\""),
            ("db/item-4", "db/item-X"),
            ("app/4", "app/3"),
            ("\"seq\":5", "\"seq\":5.0"),
        ] {
            let mut lines = log(10, &k);
            assert!(lines[4].contains(from), "{from} not in {}", lines[4]);
            lines[4] = lines[4].replacen(from, to, 1);
            let (n, problem) = bad_line(verify(&join(&lines)[..], &k));
            assert_eq!(n, 5, "{from}");
            assert!(
                matches!(problem, LineProblem::BadMac | LineProblem::Malformed { .. }),
                "{from}: {problem:?}"
            );
        }
        // Adding a field is rejected even though the MAC covers only known fields.
        let mut lines = log(10, &k);
        lines[2] = lines[2].replacen("{", "{\"value\":\"hunter2\",", 1);
        assert!(matches!(
            bad_line(verify(&join(&lines)[..], &k)),
            (3, LineProblem::Malformed { .. })
        ));
        // Dropping an optional field changes the MAC input.
        let mut lines = log(10, &k);
        lines[1] = lines[1].replacen(",\"status\":200", "", 1);
        assert_eq!(
            bad_line(verify(&join(&lines)[..], &k)),
            (2, LineProblem::BadMac)
        );
    }

    #[test]
    fn detects_removed_reordered_duplicated_lines() {
        let k = key();
        let mut deleted = log(10, &k);
        deleted.remove(4);
        assert_eq!(
            bad_line(verify(&join(&deleted)[..], &k)),
            (
                5,
                LineProblem::SeqMismatch {
                    expected: 5,
                    found: 6
                }
            )
        );
        let mut first_deleted = log(10, &k);
        first_deleted.remove(0);
        assert_eq!(
            bad_line(verify(&join(&first_deleted)[..], &k)),
            (
                1,
                LineProblem::SeqMismatch {
                    expected: 1,
                    found: 2
                }
            )
        );
        let mut swapped = log(10, &k);
        swapped.swap(3, 4);
        assert_eq!(
            bad_line(verify(&join(&swapped)[..], &k)),
            (
                4,
                LineProblem::SeqMismatch {
                    expected: 4,
                    found: 5
                }
            )
        );
        let mut dup = log(10, &k);
        let copy = dup[4].clone();
        dup.insert(5, copy);
        assert_eq!(
            bad_line(verify(&join(&dup)[..], &k)),
            (
                6,
                LineProblem::SeqMismatch {
                    expected: 6,
                    found: 5
                }
            )
        );
    }

    #[test]
    fn detects_inserted_and_spliced_lines() {
        let k = key();
        // A forged line from someone without the key.
        let mut forged = log(10, &k);
        let mut other_chain = Chain::new(AuditKey::new(&[9; 32]));
        for i in 0..5 {
            other_chain.seal(record(i));
        }
        let fake = other_chain.seal(record(99));
        forged.insert(5, fake.to_json_line().trim_end().to_owned());
        assert_eq!(
            bad_line(verify(&join(&forged)[..], &k)),
            (6, LineProblem::BadMac)
        );
        // A genuine line from another log under the same key, spliced in at the right seq.
        let mut spliced = log(10, &k);
        let mut other = Chain::new(k.clone());
        for i in 0..4 {
            other.seal(record(i + 50));
        }
        spliced[4] = other.seal(record(4)).to_json_line().trim_end().to_owned();
        assert_eq!(
            bad_line(verify(&join(&spliced)[..], &k)),
            (5, LineProblem::PrevMismatch)
        );
        // Garbage.
        let mut garbage = log(10, &k);
        garbage[2] = "this is not json".to_owned();
        assert!(matches!(
            bad_line(verify(&join(&garbage)[..], &k)),
            (3, LineProblem::Malformed { .. })
        ));
        let mut blank = log(10, &k);
        blank.insert(7, String::new());
        assert_eq!(
            bad_line(verify(&join(&blank)[..], &k)),
            (8, LineProblem::Empty)
        );
        let mut binary = join(&log(3, &k));
        binary.extend_from_slice(b"\xff\xfe\n");
        assert_eq!(bad_line(verify(&binary[..], &k)), (4, LineProblem::NotUtf8));
        let mut huge = join(&log(3, &k));
        huge.extend(std::iter::repeat_n(b'x', MAX_LINE_LEN + 10));
        huge.push(b'\n');
        assert_eq!(bad_line(verify(&huge[..], &k)), (4, LineProblem::TooLong));
        // Wrong key: the first line already fails.
        assert_eq!(
            bad_line(verify(&join(&log(3, &k))[..], &AuditKey::new(&[1; 32]))),
            (1, LineProblem::BadMac)
        );
    }

    #[test]
    fn detects_truncation_against_a_checkpoint() {
        let k = key();
        let lines = log(10, &k);
        let head = verify(&join(&lines)[..], &k).unwrap().head;
        let cut = &lines[..8];
        // Without a checkpoint the shorter chain is valid...
        assert_eq!(verify(&join(cut)[..], &k).unwrap().lines, 8);
        // ...with one, the cut is found, pointing at the first missing line.
        let err = verify_against(&join(cut)[..], &k, &head).unwrap_err();
        assert!(
            matches!(
                err,
                VerifyError::Truncated {
                    lines: 8,
                    last_seq: 8,
                    expected_seq: 10
                }
            ),
            "{err:?}"
        );
        assert_eq!(err.first_bad_line(), Some(9));
        let err = verify_against(&b""[..], &k, &head).unwrap_err();
        assert_eq!(err.first_bad_line(), Some(1));
        // A log rewritten after the checkpoint was taken (e.g. rebuilt with the key).
        let mut rewritten = log(10, &k);
        let mut chain = Chain::new(k.clone());
        for (i, line) in rewritten.iter_mut().enumerate() {
            *line = chain
                .seal(record(i + 1))
                .to_json_line()
                .trim_end()
                .to_owned();
        }
        assert_eq!(
            bad_line(verify_against(&join(&rewritten)[..], &k, &head)),
            (10, LineProblem::CheckpointMismatch { seq: 10 })
        );
        // A torn last line.
        let mut torn = join(&lines);
        torn.truncate(torn.len() - 5);
        assert_eq!(
            bad_line(verify(&torn[..], &k)),
            (10, LineProblem::Incomplete)
        );
        let cp: Checkpoint = serde_json::from_str(&serde_json::to_string(&head).unwrap()).unwrap();
        assert_eq!(cp, head);
    }

    fn read_log(path: &Path, k: &AuditKey) -> VerifyReport {
        verify(File::open(path).unwrap(), k).unwrap()
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn concurrent_appends_form_one_valid_chain() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.log");
        let k = key();
        let w = AuditWriter::open(&path, k.clone()).await.unwrap();
        let mut tasks = Vec::new();
        for t in 0..32 {
            let w = w.clone();
            tasks.push(tokio::spawn(async move {
                let mut seqs = Vec::new();
                for i in 0..25 {
                    let cp = w.append(record(t * 100 + i)).await.unwrap();
                    seqs.push(cp);
                }
                seqs
            }));
        }
        let mut all = Vec::new();
        for t in tasks {
            let seqs = tokio::time::timeout(T, t).await.unwrap().unwrap();
            // Each task's own appends are ordered.
            assert!(seqs.windows(2).all(|w| w[0].seq < w[1].seq));
            all.extend(seqs);
        }
        let seqs: HashSet<u64> = all.iter().map(|c| c.seq).collect();
        assert_eq!(seqs, (1..=800).collect());
        let report = read_log(&path, &k);
        assert_eq!(report.lines, 800);
        let last = all.iter().max_by_key(|c| c.seq).unwrap();
        assert_eq!(report.head, *last);
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        w.close().await;
        assert!(matches!(w.append(record(0)).await, Err(AuditError::Closed)));
    }

    #[tokio::test]
    async fn reopen_continues_the_chain_and_locks() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.log");
        let k = key();
        let w = AuditWriter::open(&path, k.clone()).await.unwrap();
        for i in 0..10 {
            w.append(record(i)).await.unwrap();
        }
        assert!(matches!(
            AuditWriter::open(&path, k.clone()).await,
            Err(AuditError::Locked)
        ));
        w.close().await;
        let w = AuditWriter::open(&path, k.clone()).await.unwrap();
        let cp = w.append(record(10)).await.unwrap();
        assert_eq!(cp.seq, 11);
        for i in 11..20 {
            w.append(record(i)).await.unwrap();
        }
        w.close().await;
        let report = read_log(&path, &k);
        assert_eq!(report.lines, 20);
        assert_eq!(report.head.seq, 20);
        assert!(verify_against(File::open(&path).unwrap(), &k, &cp).is_ok());
    }

    async fn write_log(path: &Path, n: usize) {
        let w = AuditWriter::open(path, key()).await.unwrap();
        for i in 0..n {
            w.append(record(i)).await.unwrap();
        }
        w.close().await;
    }

    fn append_bytes(path: &Path, bytes: &[u8]) {
        let mut f = OpenOptions::new().append(true).open(path).unwrap();
        f.write_all(bytes).unwrap();
    }

    #[tokio::test]
    async fn refuses_a_corrupt_tail() {
        let dir = tempfile::tempdir().unwrap();
        let k = key();

        let garbage = dir.path().join("garbage.log");
        write_log(&garbage, 3).await;
        append_bytes(&garbage, b"{\"seq\":4}\n");
        assert!(matches!(
            AuditWriter::open(&garbage, k.clone()).await,
            Err(AuditError::CorruptTail(LineProblem::Malformed { .. }))
        ));

        let edited = dir.path().join("edited.log");
        write_log(&edited, 3).await;
        let text = std::fs::read_to_string(&edited).unwrap();
        std::fs::write(&edited, text.replace("item-2", "item-9")).unwrap();
        assert!(matches!(
            AuditWriter::open(&edited, k.clone()).await,
            Err(AuditError::CorruptTail(LineProblem::BadMac))
        ));

        let wrong_key = dir.path().join("wrong-key.log");
        write_log(&wrong_key, 3).await;
        assert!(matches!(
            AuditWriter::open(&wrong_key, AuditKey::new(&[3; 32])).await,
            Err(AuditError::CorruptTail(LineProblem::BadMac))
        ));

        let blank = dir.path().join("blank.log");
        write_log(&blank, 3).await;
        append_bytes(&blank, b"\n");
        assert!(matches!(
            AuditWriter::open(&blank, k.clone()).await,
            Err(AuditError::CorruptTail(LineProblem::Empty))
        ));

        let dir_path = dir.path().join("a-directory");
        std::fs::create_dir(&dir_path).unwrap();
        assert!(AuditWriter::open(&dir_path, k.clone()).await.is_err());

        // Refusing changed nothing.
        assert!(
            std::fs::read_to_string(&garbage)
                .unwrap()
                .ends_with("{\"seq\":4}\n")
        );
    }

    #[tokio::test]
    async fn torn_tail_is_refused_unless_repair_is_asked() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.log");
        let k = key();
        write_log(&path, 5).await;
        let good_len = std::fs::metadata(&path).unwrap().len();
        append_bytes(&path, b"{\"seq\":6,\"time\":\"20");
        assert!(matches!(
            AuditWriter::open(&path, k.clone()).await,
            Err(AuditError::TornTail)
        ));
        assert_eq!(std::fs::metadata(&path).unwrap().len(), good_len + 19);
        let options = WriterOptions {
            repair_torn_tail: true,
            ..WriterOptions::default()
        };
        let w = AuditWriter::open_with(&path, k.clone(), options)
            .await
            .unwrap();
        assert_eq!(w.append(record(5)).await.unwrap().seq, 6);
        w.close().await;
        assert_eq!(read_log(&path, &k).lines, 6);

        // A log that is one fragment is cut to empty and starts over.
        let frag = dir.path().join("fragment.log");
        std::fs::write(&frag, b"{\"seq\":1").unwrap();
        let w = AuditWriter::open_with(&frag, k.clone(), options)
            .await
            .unwrap();
        assert_eq!(w.append(record(0)).await.unwrap().seq, 1);
        w.close().await;
        assert_eq!(read_log(&frag, &k).lines, 1);
    }

    /// A real file whose next append writes half its buffer and then fails, like a full disk.
    struct FlakyFile {
        file: File,
        /// 0: work; 1: fail the next append; 2: fail the next append and the rollback.
        fail: Arc<AtomicU8>,
    }

    impl LogFile for FlakyFile {
        fn append_durably(&mut self, buf: &[u8]) -> io::Result<()> {
            if self.fail.load(Ordering::SeqCst) == 0 {
                return self.file.append_durably(buf);
            }
            self.file.write_all(&buf[..buf.len() / 2])?;
            Err(io::Error::other("injected: no space left on device"))
        }

        fn truncate_durably(&mut self, len: u64) -> io::Result<()> {
            if self.fail.swap(0, Ordering::SeqCst) == 2 {
                return Err(io::Error::other("injected: rollback failed"));
            }
            self.file.truncate_durably(len)
        }
    }

    async fn flaky_writer(path: &Path) -> (AuditWriter, Arc<AtomicU8>) {
        let options = WriterOptions::default();
        let (file, chain, len) = open_log(path, key(), &options).unwrap();
        let fail = Arc::new(AtomicU8::new(0));
        let flaky = FlakyFile {
            file,
            fail: fail.clone(),
        };
        let w = AuditWriter::spawn(flaky, chain, len, path.to_owned(), options).unwrap();
        (w, fail)
    }

    #[tokio::test]
    async fn failed_write_is_rolled_back_and_the_chain_stays_valid() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.log");
        let k = key();
        let (w, fail) = flaky_writer(&path).await;
        for i in 0..3 {
            w.append(record(i)).await.unwrap();
        }
        fail.store(1, Ordering::SeqCst);
        let err = w.append(record(3)).await.unwrap_err();
        assert!(matches!(err, AuditError::Write(_)), "{err:?}");
        assert!(err.to_string().contains("no space left"));
        // The half-written line was cut off, and the next line takes its seq.
        assert_eq!(read_log(&path, &k).lines, 3);
        assert_eq!(w.append(record(4)).await.unwrap().seq, 4);
        w.close().await;
        assert_eq!(read_log(&path, &k).lines, 4);
    }

    #[tokio::test]
    async fn failed_rollback_poisons_the_writer() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.log");
        let (w, fail) = flaky_writer(&path).await;
        w.append(record(0)).await.unwrap();
        fail.store(2, Ordering::SeqCst);
        assert!(matches!(
            w.append(record(1)).await,
            Err(AuditError::Write(_))
        ));
        // Even though the disk "works" again, the writer no longer trusts the file.
        assert!(matches!(
            w.append(record(2)).await,
            Err(AuditError::Poisoned)
        ));
        w.close().await;
        // The torn tail left behind is refused on reopen rather than continued.
        assert!(matches!(
            AuditWriter::open(&path, key()).await,
            Err(AuditError::TornTail)
        ));
    }
}
