//! The freshness witness of the durable backend: kept in every changing commit, found again on
//! reopening, and telling an older copy of the file or an edited entry from the current one.

#![allow(clippy::unwrap_used)] // tests fail loudly on any unexpected error

use std::hash::{Hash, Hasher};
use std::path::Path;
use std::sync::Arc;

use spike_store::freshness::{DIGEST_LEN, Digest};
use spike_store::{
    Batch, DATA_FILE_NAME, MemoryStore, RedbStore, Store, Table, Witness, WitnessKey,
};

const SECRETS: Table = Table::new("secrets");
const POLICIES: Table = Table::new("policies");

/// A deterministic stand-in for the keyed hash Nexus uses (the store only needs a function).
struct TestKey(u64);

impl TestKey {
    fn mix(&self, parts: &[&[u8]]) -> [u8; DIGEST_LEN] {
        let mut out = [0u8; DIGEST_LEN];
        for (i, chunk) in out.chunks_mut(8).enumerate() {
            let mut h = std::collections::hash_map::DefaultHasher::new();
            (self.0, i).hash(&mut h);
            for p in parts {
                p.hash(&mut h);
            }
            chunk.copy_from_slice(&h.finish().to_be_bytes());
        }
        out
    }
}

impl WitnessKey for TestKey {
    fn entry_hash(&self, table: &str, key: &[u8], value: &[u8]) -> [u8; DIGEST_LEN] {
        self.mix(&[table.as_bytes(), key, value])
    }
    fn tag(&self, generation: u64, digest: &Digest) -> [u8; DIGEST_LEN] {
        self.mix(&[b"tag", &generation.to_be_bytes(), &digest.to_bytes()])
    }
}

fn key() -> Arc<dyn WitnessKey> {
    Arc::new(TestKey(7))
}

async fn put(store: &dyn Store, table: Table, k: &str, v: &str) {
    let mut b = Batch::new();
    b.put(table, k, v.as_bytes().to_vec());
    store.commit(b).await.unwrap();
}

fn copy_file(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    std::fs::copy(from.join(DATA_FILE_NAME), to.join(DATA_FILE_NAME)).unwrap();
}

#[tokio::test]
async fn every_changing_commit_raises_the_generation_and_reopening_finds_it() {
    let dir = tempfile::tempdir().unwrap();
    let store = RedbStore::open(dir.path()).unwrap();
    // Written before arming: counted in the contents, not in a generation.
    put(&store, SECRETS, "a", "1").await;
    let armed = store.arm_witness(key()).await.unwrap().unwrap();
    assert_eq!(armed.stored, None);
    assert!(!armed.malformed);
    assert_eq!(store.witness().unwrap().generation, 0);
    assert_eq!(store.witness().unwrap().digest, armed.contents);

    put(&store, SECRETS, "b", "2").await;
    put(&store, POLICIES, "p", "x").await;
    put(&store, SECRETS, "a", "1-new").await;
    let mut del = Batch::new();
    del.delete(SECRETS, "b").delete(SECRETS, "never-there");
    store.commit(del).await.unwrap();
    // A batch whose condition fails changes nothing, and neither does an empty one.
    let mut refused = Batch::new();
    refused
        .require_absent(SECRETS, "a")
        .put(SECRETS, "c", b"3".to_vec());
    assert!(store.commit(refused).await.is_err());
    store.commit(Batch::new()).await.unwrap();
    let last = store.witness().unwrap();
    assert_eq!(last.generation, 4);
    assert_eq!(last, Witness::tagged(&TestKey(7), 4, last.digest));
    store.close().await.unwrap();

    let store = RedbStore::open(dir.path()).unwrap();
    let armed = store.arm_witness(key()).await.unwrap().unwrap();
    assert_eq!(armed.stored, Some(last));
    // The incrementally kept digest is the digest of what the file holds.
    assert_eq!(armed.contents, last.digest);
    // Compaction rewrites the file but keeps the witness and the contents.
    store.compact().await.unwrap();
    assert_eq!(
        store.arm_witness(key()).await.unwrap().unwrap().stored,
        Some(last)
    );
    store.close().await.unwrap();
}

#[tokio::test]
async fn an_older_copy_of_the_file_shows_an_older_generation() {
    let dir = tempfile::tempdir().unwrap();
    let (live, old) = (dir.path().join("live"), dir.path().join("old"));
    let store = RedbStore::open(&live).unwrap();
    store.arm_witness(key()).await.unwrap();
    put(&store, SECRETS, "a", "1").await;
    store.close().await.unwrap();
    copy_file(&live, &old);

    let store = RedbStore::open(&live).unwrap();
    store.arm_witness(key()).await.unwrap();
    let mut del = Batch::new();
    del.delete(SECRETS, "a");
    store.commit(del).await.unwrap();
    let current = store.witness().unwrap();
    store.close().await.unwrap();

    let store = RedbStore::open(&old).unwrap();
    let armed = store.arm_witness(key()).await.unwrap().unwrap();
    let stored = armed.stored.unwrap();
    assert!(stored.generation < current.generation);
    assert_eq!(
        armed.contents, stored.digest,
        "the old copy is self-consistent"
    );
    assert_ne!(stored.digest, current.digest);
    store.close().await.unwrap();
}

#[tokio::test]
async fn an_entry_put_back_from_an_older_copy_changes_the_contents_digest() {
    let dir = tempfile::tempdir().unwrap();
    let store = RedbStore::open(dir.path()).unwrap();
    store.arm_witness(key()).await.unwrap();
    put(&store, SECRETS, "a", "old").await;
    put(&store, SECRETS, "a", "new").await;
    let w = store.witness().unwrap();
    store.close().await.unwrap();

    // Edited behind the store's back, as someone with the file could.
    {
        let db = redb::Database::create(dir.path().join(DATA_FILE_NAME)).unwrap();
        let txn = db.begin_write().unwrap();
        let def: redb::TableDefinition<&[u8], &[u8]> = redb::TableDefinition::new("secrets");
        txn.open_table(def)
            .unwrap()
            .insert(&b"a"[..], &b"old"[..])
            .unwrap();
        txn.commit().unwrap();
    }
    let store = RedbStore::open(dir.path()).unwrap();
    let armed = store.arm_witness(key()).await.unwrap().unwrap();
    assert_eq!(armed.stored, Some(w), "the witness itself is untouched");
    assert_ne!(
        armed.contents, w.digest,
        "but the contents no longer match it"
    );
    store.close().await.unwrap();
}

#[tokio::test]
async fn a_store_without_files_keeps_no_witness() {
    let store = MemoryStore::new();
    assert_eq!(store.arm_witness(key()).await.unwrap(), None);
    put(&store, SECRETS, "a", "1").await;
    assert_eq!(store.witness(), None);
}
