//! Behaviours only the durable backend has: group commit, reopening, the format stamp, file
//! permissions and exclusive use.

#![allow(clippy::unwrap_used)] // tests fail loudly on any unexpected error

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use spike_store::{Batch, DATA_FILE_NAME, FORMAT_VERSION, RedbStore, Store, StoreError, Table};

const SECRETS: Table = Table::new("secrets");
const TEST_TIMEOUT: Duration = Duration::from_secs(60);

/// The on-disk location of the format stamp, as documented in the crate's `durable` module.
const INTERNAL: redb::TableDefinition<&[u8], &[u8]> = redb::TableDefinition::new("__spike_store");

fn mode(path: &Path) -> u32 {
    std::fs::metadata(path).unwrap().permissions().mode() & 0o7777
}

fn set_mode(path: &Path, mode: u32) {
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
}

async fn bounded<T>(future: impl std::future::Future<Output = T>) -> T {
    tokio::time::timeout(TEST_TIMEOUT, future)
        .await
        .expect("timed out")
}

/// Writes a raw format stamp, bypassing the store.
fn write_stamp(file: &Path, stamp: &[u8]) {
    let db = redb::Database::create(file).unwrap();
    let txn = db.begin_write().unwrap();
    txn.open_table(INTERNAL)
        .unwrap()
        .insert(&b"format_version"[..], stamp)
        .unwrap();
    txn.commit().unwrap();
}

/// On a current-thread runtime every spawned commit is queued before the writer can answer
/// the first, so the commits must share transactions; and each one must be durable.
#[tokio::test(flavor = "current_thread")]
async fn group_commit_shares_syncs_and_stays_durable() {
    const BATCHES: usize = 200;
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(RedbStore::open(dir.path()).unwrap());
    bounded(async {
        let mut tasks = Vec::new();
        for i in 0..BATCHES {
            let store = Arc::clone(&store);
            tasks.push(tokio::spawn(async move {
                let mut batch = Batch::new();
                batch.put(SECRETS, format!("k{i:04}"), format!("v{i}"));
                store.commit(batch).await
            }));
        }
        for task in tasks {
            task.await.unwrap().unwrap();
        }
    })
    .await;
    let stats = store.stats();
    println!(
        "group commit: {} batches in {} transactions",
        stats.batches_committed, stats.transactions
    );
    assert_eq!(stats.batches_committed, BATCHES as u64);
    assert!(stats.transactions >= 1);
    assert!(
        stats.transactions < stats.batches_committed,
        "no batches were grouped: {stats:?}"
    );
    bounded(store.close()).await.unwrap();

    let store = RedbStore::open(dir.path()).unwrap();
    let all = bounded(store.scan(SECRETS, b"k", None, 10_000))
        .await
        .unwrap();
    assert_eq!(all.len(), BATCHES);
    for (i, (key, value)) in all.iter().enumerate() {
        assert_eq!(key, format!("k{i:04}").as_bytes());
        assert_eq!(value, format!("v{i}").as_bytes());
    }
    bounded(store.close()).await.unwrap();
}

/// Batches submitted together are evaluated in arrival order, each seeing the earlier ones'
/// writes, whether or not they land in the same group; a conflict in the middle does not stop
/// the rest.
#[tokio::test(flavor = "current_thread")]
async fn group_members_see_earlier_members() {
    let dir = tempfile::tempdir().unwrap();
    let store = RedbStore::open(dir.path()).unwrap();
    let mut first = Batch::new();
    first.require_absent(SECRETS, "x").put(SECRETS, "x", "1");
    let mut second = Batch::new();
    second
        .require_value(SECRETS, "x", "1")
        .put(SECRETS, "x", "2");
    let mut loser = Batch::new();
    loser.require_absent(SECRETS, "x").put(SECRETS, "y", "lost");
    let mut third = Batch::new();
    third
        .require_value(SECRETS, "x", "2")
        .put(SECRETS, "x", "3");

    // join! polls in order, so the batches are queued in this order.
    let (a, b, c, d) = bounded(async {
        tokio::join!(
            store.commit(first),
            store.commit(second),
            store.commit(loser),
            store.commit(third)
        )
    })
    .await;
    a.unwrap();
    b.unwrap();
    assert!(matches!(c, Err(StoreError::Conflict { condition: 0 })));
    d.unwrap();
    assert_eq!(
        bounded(store.get(SECRETS, b"x")).await.unwrap().as_deref(),
        Some(&b"3"[..])
    );
    assert_eq!(bounded(store.get(SECRETS, b"y")).await.unwrap(), None);
    let stats = store.stats();
    assert_eq!((stats.batches_committed, stats.conflicts), (3, 1));
    bounded(store.close()).await.unwrap();
}

#[tokio::test]
async fn reopen_keeps_data_and_creates_private_files() {
    let base = tempfile::tempdir().unwrap();
    let dir = base.path().join("nested").join("data");
    let store = RedbStore::open(&dir).unwrap();
    assert_eq!(store.path(), dir.join(DATA_FILE_NAME));
    assert_eq!(mode(&dir), 0o700);
    assert_eq!(mode(&dir.join(DATA_FILE_NAME)), 0o600);

    let mut batch = Batch::new();
    batch.put(SECRETS, "kept", "value");
    bounded(store.commit(batch)).await.unwrap();
    bounded(store.close()).await.unwrap();

    for _ in 0..2 {
        let store = RedbStore::open(&dir).unwrap();
        assert_eq!(
            bounded(store.get(SECRETS, b"kept"))
                .await
                .unwrap()
                .as_deref(),
            Some(&b"value"[..])
        );
        bounded(store.close()).await.unwrap();
    }
}

#[tokio::test]
async fn second_open_is_refused_while_in_use() {
    let dir = tempfile::tempdir().unwrap();
    let store = RedbStore::open(dir.path()).unwrap();
    let err = RedbStore::open(dir.path()).unwrap_err();
    assert!(matches!(err, StoreError::InUse { .. }), "{err:?}");
    assert!(err.to_string().contains("already in use"), "{err}");
    bounded(store.close()).await.unwrap();
    // Once closed, the file is free again.
    let store = RedbStore::open(dir.path()).unwrap();
    bounded(store.close()).await.unwrap();
}

#[tokio::test]
async fn newer_format_is_refused_with_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let store = RedbStore::open(dir.path()).unwrap();
    let mut batch = Batch::new();
    batch.put(SECRETS, "k", "v");
    bounded(store.commit(batch)).await.unwrap();
    bounded(store.close()).await.unwrap();

    let file = dir.path().join(DATA_FILE_NAME);
    {
        // The stamp is what the store wrote: FORMAT_VERSION, big-endian.
        let db = redb::Database::open(&file).unwrap();
        let txn = redb::ReadableDatabase::begin_read(&db).unwrap();
        let table = txn.open_table(INTERNAL).unwrap();
        let stamp = redb::ReadableTable::get(&table, &b"format_version"[..])
            .unwrap()
            .unwrap();
        assert_eq!(stamp.value(), FORMAT_VERSION.to_be_bytes());
    }
    write_stamp(&file, &(FORMAT_VERSION + 1).to_be_bytes());

    let err = RedbStore::open(dir.path()).unwrap_err();
    assert!(
        matches!(err, StoreError::FormatTooNew { found, supported }
            if found == FORMAT_VERSION + 1 && supported == FORMAT_VERSION),
        "{err:?}"
    );
    assert_eq!(
        err.to_string(),
        format!(
            "the data directory was written by a newer SPIKE (format {}); this binary supports up to {}",
            FORMAT_VERSION + 1,
            FORMAT_VERSION
        )
    );

    // Refusing changed nothing: the stamp and the data are as the newer writer left them.
    let db = redb::Database::open(&file).unwrap();
    let txn = redb::ReadableDatabase::begin_read(&db).unwrap();
    let table = txn.open_table(INTERNAL).unwrap();
    let stamp = redb::ReadableTable::get(&table, &b"format_version"[..])
        .unwrap()
        .unwrap();
    assert_eq!(stamp.value(), (FORMAT_VERSION + 1).to_be_bytes());
}

#[tokio::test]
async fn damaged_or_foreign_files_are_refused() {
    // A malformed stamp.
    let dir = tempfile::tempdir().unwrap();
    bounded(RedbStore::open(dir.path()).unwrap().close())
        .await
        .unwrap();
    write_stamp(&dir.path().join(DATA_FILE_NAME), b"\x01");
    let err = RedbStore::open(dir.path()).unwrap_err();
    assert!(matches!(err, StoreError::Corrupt { .. }), "{err:?}");

    // A stamp older than any format (there is no format 0).
    write_stamp(&dir.path().join(DATA_FILE_NAME), &0u32.to_be_bytes());
    let err = RedbStore::open(dir.path()).unwrap_err();
    assert!(matches!(err, StoreError::Corrupt { .. }), "{err:?}");

    // A redb file some other program wrote: data but no stamp.
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join(DATA_FILE_NAME);
    {
        let db = redb::Database::create(&file).unwrap();
        let txn = db.begin_write().unwrap();
        let other: redb::TableDefinition<&str, u64> = redb::TableDefinition::new("other");
        txn.open_table(other).unwrap().insert("a", 1).unwrap();
        txn.commit().unwrap();
    }
    set_mode(&file, 0o600);
    let err = RedbStore::open(dir.path()).unwrap_err();
    assert!(matches!(err, StoreError::Corrupt { .. }), "{err:?}");
    assert!(err.to_string().contains("not a valid SPIKE store"), "{err}");

    // Not a redb file at all.
    std::fs::write(
        &file,
        b"this is not a database, just some text that is long enough",
    )
    .unwrap();
    let err = RedbStore::open(dir.path()).unwrap_err();
    assert!(matches!(err, StoreError::Backend { .. }), "{err:?}");

    // The data path is a file.
    let err = RedbStore::open(&file).unwrap_err();
    assert!(matches!(err, StoreError::NotADirectory { .. }), "{err:?}");
}

#[tokio::test]
async fn world_writable_paths_are_refused() {
    let base = tempfile::tempdir().unwrap();
    let dir = base.path().join("data");
    std::fs::create_dir(&dir).unwrap();
    set_mode(&dir, 0o777);
    let err = RedbStore::open(&dir).unwrap_err();
    assert!(
        matches!(&err, StoreError::InsecurePermissions { mode: 0o777, path } if path == &dir),
        "{err:?}"
    );
    assert!(!dir.join(DATA_FILE_NAME).exists(), "refusal created a file");

    // Group access is allowed (Kubernetes fsGroup volumes), with a warning.
    set_mode(&dir, 0o770);
    bounded(RedbStore::open(&dir).unwrap().close())
        .await
        .unwrap();

    set_mode(&dir, 0o700);
    set_mode(&dir.join(DATA_FILE_NAME), 0o666);
    let err = RedbStore::open(&dir).unwrap_err();
    assert!(
        matches!(err, StoreError::InsecurePermissions { mode: 0o666, .. }),
        "{err:?}"
    );
}

fn file_contains(file: &Path, needle: &[u8]) -> bool {
    std::fs::read(file)
        .unwrap()
        .windows(needle.len())
        .any(|w| w == needle)
}

/// redb is copy-on-write: an overwritten value stays in a free page of the file. After
/// `compact` no copy is left, while every committed value still reads back, and the store
/// keeps taking writes.
#[tokio::test]
async fn an_overwritten_value_is_gone_from_the_file_after_compact() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join(DATA_FILE_NAME);
    let store = RedbStore::open(dir.path()).unwrap();
    let old = b"old-wrapped-key-0123456789abcdef-old-wrapped-key".to_vec();
    bounded(async {
        // Enough other data that the old value's page is not simply the file's tail.
        for i in 0..200 {
            let mut b = Batch::new();
            b.put(SECRETS, format!("filler{i:04}"), vec![b'x'; 512]);
            store.commit(b).await.unwrap();
        }
        let mut b = Batch::new();
        b.put(SECRETS, "init", old.clone());
        store.commit(b).await.unwrap();
        let mut b = Batch::new();
        b.put(SECRETS, "init", b"new".to_vec());
        store.commit(b).await.unwrap();
        assert!(
            file_contains(&file, &old),
            "the test must start from a file that still holds the old value"
        );
        let mut b = Batch::new();
        b.put(SECRETS, "other", b"after".to_vec());
        store.commit(b).await.unwrap();
        store.compact().await.unwrap();
        assert!(
            !file_contains(&file, &old),
            "the old value survived compaction"
        );
        assert_eq!(store.get(SECRETS, b"init").await.unwrap().unwrap(), b"new");
        assert_eq!(
            store.get(SECRETS, b"other").await.unwrap().unwrap(),
            b"after"
        );
        let mut b = Batch::new();
        b.put(SECRETS, "later", b"ok".to_vec());
        store.commit(b).await.unwrap();
        assert_eq!(store.get(SECRETS, b"later").await.unwrap().unwrap(), b"ok");
        store.close().await.unwrap();
    })
    .await;
    assert!(!file_contains(&file, &old));
}

#[tokio::test]
async fn compaction_keeps_the_data_file_private_and_reopenable() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join(DATA_FILE_NAME);
    let store = RedbStore::open(dir.path()).unwrap();
    let mut b = Batch::new();
    b.put(SECRETS, "k", b"v".to_vec());
    store.commit(b).await.unwrap();
    store.compact().await.unwrap();
    assert_eq!(mode(&file), 0o600);
    store.close().await.unwrap();
    let names: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(names, vec![std::ffi::OsString::from(DATA_FILE_NAME)]);
    let again = RedbStore::open(dir.path()).unwrap();
    assert_eq!(again.get(SECRETS, b"k").await.unwrap().unwrap(), b"v");
    again.close().await.unwrap();
}
