//! Backups: one consistent snapshot of the whole store, sealed under the backup subkey
//! (`spike_core::backup` has the file format).
//!
//! The snapshot comes from one read transaction of the store, so it is consistent while
//! writers run. It holds every record as stored (values encrypted, other records tagged) and
//! the init record, whose key ring is sealed under the root key: a backup never contains the
//! root key, and reading one needs `threshold` shares of it. The audit table is left out: it
//! anchors the audit log of this data directory, and a restored store starts its own log
//! (the manifest names the chain head at the snapshot, to tie the two together).

use std::collections::BTreeMap;

use spike_core::backup::{BACKUP_FORMAT, BackupManifest, clear_parts, encode_entries};
use spike_store::SnapshotEntry;

use spike_core::audit::Checkpoint;

use crate::audit_log::{AUDIT, CHECKPOINT_KEY};
use crate::error::{AppError, AppResult};
use crate::state::{INIT_KEY, META, Opened};

/// A finished backup: its manifest and the file's bytes.
pub(crate) struct Backup {
    pub(crate) manifest: BackupManifest,
    pub(crate) file: Vec<u8>,
}

/// Takes a backup of the store: one snapshot, sealed with the keys of `opened`.
pub(crate) async fn take(store: &dyn spike_store::Store, opened: &Opened) -> AppResult<Backup> {
    let snapshot = store
        .snapshot()
        .await
        .map_err(|e| AppError::internal("taking a snapshot", e))?;
    // The generation as of the snapshot or later: read after it.
    let generation = store.witness().map(|w| w.generation);
    seal(opened, snapshot, generation)
}

/// Seals `entries` (a store snapshot) with the keys of `opened`.
fn seal(
    opened: &Opened,
    entries: Vec<SnapshotEntry>,
    store_generation: Option<u64>,
) -> AppResult<Backup> {
    // The audit chain's head as the snapshot's stored checkpoint says.
    let audit_head = entries
        .iter()
        .find(|(t, k, _)| t == AUDIT.name() && k == CHECKPOINT_KEY)
        .and_then(|(_, _, raw)| Checkpoint::open(raw, &opened.audit_key()).ok())
        .map(|c| c.seq);
    let entries: Vec<SnapshotEntry> = entries
        .into_iter()
        .filter(|(table, _, _)| table != AUDIT.name())
        .collect();
    let init_record = entries
        .iter()
        .find(|(t, k, _)| t == META.name() && k == INIT_KEY)
        .map(|(_, _, v)| v.clone())
        .ok_or_else(|| AppError::internal("backup", "the snapshot holds no init record"))?;
    let mut tables = BTreeMap::new();
    for (table, _, _) in &entries {
        *tables.entry(table.clone()).or_insert(0u64) += 1;
    }
    let key = opened.keys.backup_key();
    let manifest = BackupManifest {
        format: BACKUP_FORMAT,
        created: crate::clock::now(),
        deployment: opened.keys.deployment_id(),
        data_key_id: key.key_id().to_string(),
        tables,
        audit_head,
        store_generation,
    };
    let mut file = clear_parts(&manifest, &init_record);
    let payload = key
        .seal(&file, &encode_entries(&entries))
        .map_err(|e| AppError::internal("sealing the backup", e))?;
    file.extend_from_slice(&payload);
    Ok(Backup { manifest, file })
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use spike_core::backup::{decode_entries, parse_file};

    #[tokio::test]
    async fn a_backup_holds_every_record_but_the_audit_anchor_and_opens_only_with_its_key() {
        let dir = tempfile::tempdir().unwrap();
        let (store, nexus) = crate::fixtures::open_nexus(dir.path()).await;
        let opened = nexus.opened().unwrap();
        let value: spike_core::secret::SecretMap =
            [("password", "backup-test-value")].into_iter().collect();
        nexus
            .secrets()
            .put(
                &opened.keys,
                &spike_core::path::SecretPath::parse("app/db").unwrap(),
                &value,
                None,
                None,
                crate::secrets::Sight::Read,
            )
            .await
            .unwrap();
        // Something in the audit table, as a running Nexus has.
        let mut anchor = spike_store::Batch::new();
        anchor.put(AUDIT, b"checkpoint".to_vec(), b"x".to_vec());
        store.commit(anchor).await.unwrap();
        let snapshot = store.snapshot().await.unwrap();
        assert!(snapshot.iter().any(|(t, _, _)| t == AUDIT.name()));
        let backup = seal(&opened, snapshot.clone(), None).unwrap();
        // The anchor written above is not a sealed checkpoint: no head is claimed.
        assert_eq!(backup.manifest.audit_head, None);
        // No plaintext value, and no audit anchor.
        assert!(
            !backup
                .file
                .windows(b"backup-test-value".len())
                .any(|w| w == b"backup-test-value")
        );
        assert!(!backup.manifest.tables.contains_key(AUDIT.name()));
        let file = parse_file(&backup.file).unwrap();
        assert_eq!(file.manifest, backup.manifest);
        let plain = opened
            .keys
            .backup_key()
            .open(file.bound, file.payload)
            .unwrap();
        let entries = decode_entries(plain.expose_secret()).unwrap();
        let expected: Vec<_> = snapshot
            .into_iter()
            .filter(|(t, _, _)| t != AUDIT.name())
            .collect();
        assert_eq!(entries, expected);
        assert_eq!(
            backup.manifest.tables.values().sum::<u64>(),
            entries.len() as u64
        );
        // An edited manifest no longer opens the payload.
        let mut edited = backup.file.clone();
        let at = edited
            .windows(b"\"created\":\"2".len())
            .position(|w| w == b"\"created\":\"2")
            .unwrap();
        edited[at + b"\"created\":\"".len()] = b'1';
        let file = parse_file(&edited).unwrap();
        assert!(
            opened
                .keys
                .backup_key()
                .open(file.bound, file.payload)
                .is_err()
        );
    }
}
