//! Nexus's audit checkpoint lives in its store, next to the data it describes: a log cut
//! short, removed or replaced while Nexus was stopped no longer reaches it.

use std::sync::Arc;

use spike_runtime::audit_log::{Anchor, CheckpointStore, CheckpointStoreError};
use spike_store::{Batch, Store, Table};

/// The store table of the audit checkpoint.
pub(crate) const AUDIT: Table = Table::new("audit");
/// Its only key.
pub(crate) const CHECKPOINT_KEY: &[u8] = b"checkpoint";

/// The checkpoint in the store, reached from the writer's own threads through a runtime
/// handle. The store's own group commit shares each write with concurrent secret writes.
struct StoreCheckpoints {
    store: Arc<dyn Store>,
    runtime: tokio::runtime::Handle,
}

impl CheckpointStore for StoreCheckpoints {
    fn load(&self) -> Result<Option<Vec<u8>>, CheckpointStoreError> {
        Ok(self
            .runtime
            .block_on(self.store.get(AUDIT, CHECKPOINT_KEY))?)
    }

    fn save(&self, sealed: Vec<u8>) -> Result<(), CheckpointStoreError> {
        let mut batch = Batch::new();
        batch.put(AUDIT, CHECKPOINT_KEY.to_vec(), sealed);
        Ok(self.runtime.block_on(self.store.commit(batch))?)
    }
}

/// The audit log's anchor in `store`. Call from within the runtime.
pub(crate) fn store_anchor(store: Arc<dyn Store>) -> Anchor {
    Anchor::new(Arc::new(StoreCheckpoints {
        store,
        runtime: tokio::runtime::Handle::current(),
    }))
}
