//! The audit checkpoint kept outside the log (Nexus keeps it in its store): written after
//! every durable batch of lines, and compared with the log's head when the log is opened, so
//! a tail cut off, a file removed or replaced by a shorter chain while the writer was stopped
//! is noticed. The same thread shape ships checkpoints to a second sink
//! ([`super::shipper`]), at most once per interval.

use std::sync::Arc;

use spike_core::audit::{AuditKey, Checkpoint};

use super::AuditError;

/// Why a [`CheckpointStore`] failed (its own error, kept as the source).
pub type CheckpointStoreError = Box<dyn std::error::Error + Send + Sync>;

/// Where the sealed checkpoint lives. Both calls block: they are made from the writer's own
/// threads, never from the async runtime.
pub trait CheckpointStore: Send + Sync + 'static {
    /// The stored bytes, if any.
    fn load(&self) -> Result<Option<Vec<u8>>, CheckpointStoreError>;
    /// Replaces them, durably.
    fn save(&self, sealed: Vec<u8>) -> Result<(), CheckpointStoreError>;
}

/// A checkpoint store, with the sealing under the chain's key that makes its content
/// trustworthy: someone who can edit the store but lacks the key cannot move it.
#[derive(Clone)]
pub struct Anchor {
    store: Arc<dyn CheckpointStore>,
}

impl Anchor {
    /// Anchors a log to `store`.
    pub fn new(store: Arc<dyn CheckpointStore>) -> Self {
        Self { store }
    }

    /// The stored checkpoint, if any. Blocking.
    pub fn load(&self, key: &AuditKey) -> Result<Option<Checkpoint>, AuditError> {
        let raw = self.store.load().map_err(AuditError::Checkpoint)?;
        raw.map(|r| Checkpoint::open(&r, key).map_err(AuditError::BadCheckpoint))
            .transpose()
    }

    /// Stores `head` durably. Blocking.
    pub fn save(&self, key: &AuditKey, head: Checkpoint) -> Result<(), AuditError> {
        self.store
            .save(head.seal(key))
            .map_err(AuditError::Checkpoint)
    }
}

/// Where a [`Checkpointer`] writes heads: the store anchor, or a second sink.
pub(crate) trait HeadSink: Send + 'static {
    /// Writes `head` (durable in the log), sealed under `key`. Blocking.
    fn write(&mut self, key: &AuditKey, head: Checkpoint) -> Result<(), AuditError>;
    /// What it is, for the log line of a failed write.
    fn name(&self) -> &'static str;
}

impl HeadSink for Anchor {
    fn write(&mut self, key: &AuditKey, head: Checkpoint) -> Result<(), AuditError> {
        self.save(key, head)
    }

    fn name(&self) -> &'static str {
        "the stored audit checkpoint"
    }
}

/// Stores the newest head behind the log, off the request path: the committer hands it each
/// head once the lines are durable, and one thread writes the latest (heads that arrive while
/// a write is in flight are coalesced), so no request waits for a store commit on top of the
/// log's own sync. The stored checkpoint therefore trails the log by at most the writes in
/// flight: after a crash the log is ahead of it (accepted on open, once the chain is checked
/// to contain it), never behind. [`Checkpointer::finish`] writes the last head before
/// returning, so a clean stop leaves the checkpoint at the log's end.
pub(crate) struct Checkpointer {
    shared: Arc<(std::sync::Mutex<Latest>, std::sync::Condvar)>,
    thread: Option<std::thread::JoinHandle<()>>,
}

#[derive(Default)]
struct Latest {
    head: Option<Checkpoint>,
    stop: bool,
}

impl Checkpointer {
    /// Starts the writing thread: it writes each new head to `sink`, at most once per
    /// `every` (zero: as soon as it arrives), and the last one when finishing.
    pub(crate) fn spawn(
        sink: impl HeadSink,
        key: AuditKey,
        every: std::time::Duration,
    ) -> std::io::Result<Self> {
        let shared = Arc::new((
            std::sync::Mutex::new(Latest::default()),
            std::sync::Condvar::new(),
        ));
        let s = shared.clone();
        let thread = std::thread::Builder::new()
            .name("spike-audit-checkpoint".into())
            .spawn(move || write_latest(sink, &key, every, &s))?;
        Ok(Self {
            shared,
            thread: Some(thread),
        })
    }

    /// Makes `head` (durable in the log) the next checkpoint to store.
    pub(crate) fn advance(&self, head: Checkpoint) {
        let (lock, wake) = &*self.shared;
        lock.lock().unwrap_or_else(|p| p.into_inner()).head = Some(head);
        wake.notify_one();
    }

    /// Stores the last head handed over, then stops.
    pub(crate) fn finish(&mut self) {
        let (lock, wake) = &*self.shared;
        lock.lock().unwrap_or_else(|p| p.into_inner()).stop = true;
        wake.notify_one();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for Checkpointer {
    fn drop(&mut self) {
        self.finish();
    }
}

/// The thread: waits for a head (and for `every` to pass since the last write), writes it,
/// repeats; on stop, writes what is left first. A failed write is logged and retried with
/// the next head (or, stopping, once more).
fn write_latest(
    mut sink: impl HeadSink,
    key: &AuditKey,
    every: std::time::Duration,
    shared: &(std::sync::Mutex<Latest>, std::sync::Condvar),
) {
    let (lock, wake) = shared;
    let mut next = std::time::Instant::now();
    loop {
        let (head, stop) = {
            let mut l = lock.lock().unwrap_or_else(|p| p.into_inner());
            loop {
                if l.stop {
                    break;
                }
                let now = std::time::Instant::now();
                if l.head.is_some() && now >= next {
                    break;
                }
                l = match l.head {
                    Some(_) => {
                        wake.wait_timeout(l, next - now)
                            .unwrap_or_else(|p| p.into_inner())
                            .0
                    }
                    None => wake.wait(l).unwrap_or_else(|p| p.into_inner()),
                };
            }
            (l.head.take(), l.stop)
        };
        next = std::time::Instant::now() + every;
        if let Some(h) = head
            && let Err(e) = sink.write(key, h)
        {
            tracing::error!(error = %e, seq = h.seq, sink = sink.name(), "cannot write the audit checkpoint; the log itself is durable");
            if stop {
                // One more try: a clean stop should leave the checkpoint at the log's end.
                let _ = sink.write(key, h);
            } else {
                // Retried with the next head, or this one if none comes.
                let mut l = lock.lock().unwrap_or_else(|p| p.into_inner());
                l.head.get_or_insert(h);
                drop(l);
                std::thread::sleep(std::time::Duration::from_millis(100));
            }
        }
        if stop {
            return;
        }
    }
}

/// How the log's head stands against the stored checkpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Standing {
    /// The head is the checkpoint, or no checkpoint exists yet.
    Reaches,
    /// The head is past the checkpoint (a crash between the log's sync and the store's):
    /// the chain must be checked to contain the checkpoint.
    Ahead,
    /// The log ends before the checkpoint, or at its seq with another MAC: lines were cut,
    /// a file removed, or the log replaced.
    Lost,
}

/// Compares the log's `head` with the `stored` checkpoint.
pub(crate) fn standing(head: Checkpoint, stored: Option<Checkpoint>) -> Standing {
    match stored {
        None => Standing::Reaches,
        Some(cp) if cp == head => Standing::Reaches,
        Some(cp) if head.seq > cp.seq => Standing::Ahead,
        Some(_) => Standing::Lost,
    }
}
