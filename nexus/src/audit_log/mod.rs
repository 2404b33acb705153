//! Nexus's audit log: the shared writer (`spike_runtime::audit_log`), anchored to the
//! checkpoint in Nexus's store.

mod anchor;

pub(crate) use anchor::{AUDIT, CHECKPOINT_KEY, store_anchor};
pub(crate) use spike_runtime::audit_log::*;

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::anchor::AUDIT;
    use super::*;
    use spike_core::audit::{AuditKey, AuditRecord, Decision};

    /// The store anchor keeps the checkpoint where Nexus's data is: a log cut back while
    /// closed is refused on open (the writer's own tests cover the rest with a memory store).
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_store_anchor_catches_a_cut_log() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.log");
        let store: std::sync::Arc<dyn spike_store::Store> =
            std::sync::Arc::new(spike_store::MemoryStore::new());
        let key = AuditKey::new(&[9; 32]);
        let open = || {
            AuditWriter::open_with(
                &path,
                key.clone(),
                WriterOptions::default(),
                Some(store_anchor(store.clone())),
            )
        };
        let w = open().await.unwrap();
        for _ in 0..3 {
            w.append(AuditRecord::new("secret.get", Decision::Allow, "ok"))
                .await
                .unwrap();
        }
        w.close().await;
        assert!(store.get(AUDIT, b"checkpoint").await.unwrap().is_some());
        std::fs::write(&path, "").unwrap();
        let err = open().await.unwrap_err();
        assert!(
            matches!(
                err,
                AuditError::Lost {
                    expected_seq: 3,
                    ..
                }
            ),
            "{err}"
        );
    }
}
