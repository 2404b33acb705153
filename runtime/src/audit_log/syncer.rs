//! The sync thread of a [`Durability::Batched`](super::Durability::Batched) log: appends
//! answer once their line is written, and this thread makes the writes durable at most one
//! interval later, so a request never waits for `fdatasync`.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::Duration;

#[derive(Default)]
struct Flags {
    /// Lines were written since the last sync.
    dirty: AtomicBool,
    /// A sync failed: written lines may not be durable, so the writer refuses to go on.
    failed: AtomicBool,
    stop: AtomicBool,
}

/// Syncs the live file every `interval` while it has unsynced writes, and once more when
/// dropped.
pub(super) struct Syncer {
    flags: Arc<Flags>,
    thread: Option<JoinHandle<()>>,
}

impl Syncer {
    /// Starts the thread for the live file at `live`.
    pub(super) fn spawn(live: PathBuf, interval: Duration) -> std::io::Result<Self> {
        let flags = Arc::new(Flags::default());
        let f = flags.clone();
        let thread = std::thread::Builder::new()
            .name("spike-audit-sync".into())
            .spawn(move || run(&live, interval, &f))?;
        Ok(Self {
            flags,
            thread: Some(thread),
        })
    }

    /// Lines were written: sync them within the interval.
    pub(super) fn wrote(&self) {
        self.flags.dirty.store(true, Ordering::Release);
    }

    /// Whether a sync failed (then every later append must fail).
    pub(super) fn failed(&self) -> bool {
        self.flags.failed.load(Ordering::Acquire)
    }
}

impl Drop for Syncer {
    fn drop(&mut self) {
        self.flags.stop.store(true, Ordering::Release);
        if let Some(t) = self.thread.take() {
            t.thread().unpark();
            let _ = t.join();
        }
    }
}

fn run(live: &std::path::Path, interval: Duration, flags: &Flags) {
    loop {
        std::thread::park_timeout(interval);
        let stop = flags.stop.load(Ordering::Acquire);
        if flags.dirty.swap(false, Ordering::AcqRel) {
            // Any descriptor of the file syncs its data. The committer syncs a file before it
            // rotates it, so a live file missing for a moment (mid-rotation) has nothing of
            // the old one left to sync.
            match std::fs::File::open(live).and_then(|f| f.sync_data()) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => {
                    tracing::error!(error = %e, "audit log sync failed; refusing further appends");
                    flags.failed.store(true, Ordering::Release);
                }
            }
        }
        if stop {
            return;
        }
    }
}
