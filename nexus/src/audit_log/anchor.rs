//! The audit checkpoint kept in the store: written after every durable batch of lines, and
//! compared with the log's head when the log is opened, so a tail cut off, a file removed or
//! replaced by a shorter chain while Nexus was stopped is noticed.

use std::sync::Arc;

use spike_core::audit::{AuditKey, Checkpoint};
use spike_store::{Batch, Store, Table};

use super::AuditError;

/// The store table of the audit checkpoint.
pub(crate) const AUDIT: Table = Table::new("audit");
/// Its only key.
const CHECKPOINT_KEY: &[u8] = b"checkpoint";

/// The store the checkpoint lives in, and a runtime handle to reach it from the writer's
/// own thread.
#[derive(Clone)]
pub(crate) struct Anchor {
    store: Arc<dyn Store>,
    runtime: tokio::runtime::Handle,
}

impl Anchor {
    /// Call from within the runtime.
    pub(crate) fn new(store: Arc<dyn Store>) -> Self {
        Self {
            store,
            runtime: tokio::runtime::Handle::current(),
        }
    }

    /// The stored checkpoint, if any. Blocking: call from the writer's thread.
    pub(crate) fn load(&self, key: &AuditKey) -> Result<Option<Checkpoint>, AuditError> {
        let raw = self
            .runtime
            .block_on(self.store.get(AUDIT, CHECKPOINT_KEY))
            .map_err(AuditError::Checkpoint)?;
        raw.map(|r| Checkpoint::open(&r, key).map_err(AuditError::BadCheckpoint))
            .transpose()
    }

    /// Stores `head` durably. Blocking: call from the writer's thread. The store's own group
    /// commit shares this write with concurrent secret writes.
    pub(crate) fn save(&self, key: &AuditKey, head: Checkpoint) -> Result<(), AuditError> {
        let mut batch = Batch::new();
        batch.put(AUDIT, CHECKPOINT_KEY.to_vec(), head.seal(key));
        self.runtime
            .block_on(self.store.commit(batch))
            .map_err(AuditError::Checkpoint)
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
