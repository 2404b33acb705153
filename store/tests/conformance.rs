//! One suite of behaviours, run against every backend.
//!
//! Each behaviour is a plain async fn over `Arc<dyn Store>`; the `suite!` macro at the bottom
//! instantiates a test per behaviour per backend.

#![allow(clippy::unwrap_used)] // tests fail loudly on any unexpected error

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use spike_store::{
    Batch, MAX_KEY_LEN, MAX_VALUE_LEN, MemoryStore, RedbStore, Store, StoreError, Table,
};

const SECRETS: Table = Table::new("secrets");
const VERSIONS: Table = Table::new("versions");
const META: Table = Table::new("meta");

/// Bounds every behaviour, so a hang fails instead of stalling CI.
const TEST_TIMEOUT: Duration = Duration::from_secs(60);

/// A store under test plus whatever must outlive it.
struct Harness {
    store: Arc<dyn Store>,
    _dir: Option<tempfile::TempDir>,
}

fn memory() -> Harness {
    Harness {
        store: Arc::new(MemoryStore::new()),
        _dir: None,
    }
}

fn redb() -> Harness {
    let dir = tempfile::tempdir().unwrap();
    let store = RedbStore::open(&dir.path().join("data")).unwrap();
    Harness {
        store: Arc::new(store),
        _dir: Some(dir),
    }
}

async fn run<F, Fut>(harness: Harness, behaviour: F)
where
    F: FnOnce(Arc<dyn Store>) -> Fut,
    Fut: Future<Output = ()>,
{
    let store = Arc::clone(&harness.store);
    tokio::time::timeout(TEST_TIMEOUT, behaviour(store))
        .await
        .expect("behaviour timed out");
    tokio::time::timeout(TEST_TIMEOUT, harness.store.close())
        .await
        .expect("close timed out")
        .unwrap();
}

async fn put(store: &dyn Store, table: Table, key: &[u8], value: &[u8]) {
    let mut batch = Batch::new();
    batch.put(table, key, value);
    store.commit(batch).await.unwrap();
}

async fn get(store: &dyn Store, table: Table, key: &[u8]) -> Option<Vec<u8>> {
    store.get(table, key).await.unwrap()
}

fn keys(entries: &[(Vec<u8>, Vec<u8>)]) -> Vec<&[u8]> {
    entries.iter().map(|(k, _)| k.as_slice()).collect()
}

// ---- behaviours ----

async fn put_get_delete(store: Arc<dyn Store>) {
    let store = &*store;
    assert_eq!(get(store, SECRETS, b"a").await, None);

    put(store, SECRETS, b"a", b"one").await;
    assert_eq!(
        get(store, SECRETS, b"a").await.as_deref(),
        Some(&b"one"[..])
    );

    put(store, SECRETS, b"a", b"two").await;
    assert_eq!(
        get(store, SECRETS, b"a").await.as_deref(),
        Some(&b"two"[..])
    );

    // An empty value is a value, not an absence.
    put(store, SECRETS, b"empty", b"").await;
    assert_eq!(get(store, SECRETS, b"empty").await, Some(Vec::new()));

    let mut batch = Batch::new();
    batch.delete(SECRETS, "a");
    store.commit(batch).await.unwrap();
    assert_eq!(get(store, SECRETS, b"a").await, None);

    // Deleting a missing key is fine, and so is deleting from a table never written.
    let mut batch = Batch::new();
    batch.delete(SECRETS, "a").delete(Table::new("unused"), "x");
    store.commit(batch).await.unwrap();

    // Binary keys and values round-trip exactly.
    let key = [0u8, 255, 1, 0];
    let value: Vec<u8> = (0..=255).collect();
    put(store, SECRETS, &key, &value).await;
    assert_eq!(get(store, SECRETS, &key).await, Some(value));

    // An empty commit succeeds and changes nothing.
    store.commit(Batch::new()).await.unwrap();
}

async fn tables_are_separate(store: Arc<dyn Store>) {
    let store = &*store;
    put(store, SECRETS, b"k", b"secret").await;
    put(store, VERSIONS, b"k", b"version").await;
    assert_eq!(
        get(store, SECRETS, b"k").await.as_deref(),
        Some(&b"secret"[..])
    );
    assert_eq!(
        get(store, VERSIONS, b"k").await.as_deref(),
        Some(&b"version"[..])
    );
    assert_eq!(get(store, META, b"k").await, None);
    assert!(store.scan(META, b"", None, 10).await.unwrap().is_empty());
}

async fn snapshot_holds_every_entry_of_one_state(store: Arc<dyn Store>) {
    put(&*store, VERSIONS, b"b", b"2").await;
    put(&*store, SECRETS, b"z", b"1").await;
    put(&*store, SECRETS, b"a", b"0").await;
    let mut gone = Batch::new();
    gone.put(META, "tmp", b"x".to_vec()).delete(META, "tmp");
    store.commit(gone).await.unwrap();
    let all = store.snapshot().await.unwrap();
    let got: Vec<(&str, &[u8], &[u8])> = all
        .iter()
        .map(|(t, k, v)| (t.as_str(), k.as_slice(), v.as_slice()))
        .collect();
    assert_eq!(
        got,
        vec![
            ("secrets", &b"a"[..], &b"0"[..]),
            ("secrets", b"z", b"1"),
            ("versions", b"b", b"2"),
        ]
    );
    // Writers racing a snapshot: each batch writes a pair, so a consistent snapshot holds
    // whole pairs only.
    let writer = {
        let store = Arc::clone(&store);
        tokio::spawn(async move {
            for i in 0..200u32 {
                let mut b = Batch::new();
                b.put(SECRETS, format!("p{i:03}"), b"x".to_vec()).put(
                    VERSIONS,
                    format!("p{i:03}"),
                    b"y".to_vec(),
                );
                store.commit(b).await.unwrap();
            }
        })
    };
    for _ in 0..20 {
        let all = store.snapshot().await.unwrap();
        let count = |t: &str| {
            all.iter()
                .filter(|(table, k, _)| table == t && k.starts_with(b"p"))
                .count()
        };
        assert_eq!(count("secrets"), count("versions"));
    }
    writer.await.unwrap();
    store.close().await.unwrap();
    assert!(store.snapshot().await.is_err(), "a closed store refuses");
}

async fn scan_prefix_and_pages(store: Arc<dyn Store>) {
    let store = &*store;
    let mut batch = Batch::new();
    for key in [
        &b"app/"[..],
        b"app/a",
        b"app/b",
        b"app/b/c",
        b"app/c",
        b"app0",
        b"ap",
        b"apq",
        b"b",
        b"\xff\xff",
        b"\xff\xff\x00",
    ] {
        batch.put(SECRETS, key, [b"v:", key].concat());
    }
    store.commit(batch).await.unwrap();

    let all = store.scan(SECRETS, b"app/", None, 100).await.unwrap();
    assert_eq!(
        keys(&all),
        [&b"app/"[..], b"app/a", b"app/b", b"app/b/c", b"app/c"]
    );
    for (key, value) in &all {
        assert_eq!(value, &[b"v:", key.as_slice()].concat());
    }

    // Paging: limit, then resume strictly after the last key.
    let mut seen = Vec::new();
    let mut after: Option<Vec<u8>> = None;
    loop {
        let page = store
            .scan(SECRETS, b"app/", after.as_deref(), 2)
            .await
            .unwrap();
        assert!(page.len() <= 2);
        seen.extend(page.iter().map(|(k, _)| k.clone()));
        if page.len() < 2 {
            break;
        }
        after = page.last().map(|(k, _)| k.clone());
    }
    assert_eq!(seen, keys(&all));

    // start_after before the prefix starts at the prefix; after it, nothing.
    let page = store.scan(SECRETS, b"app/", Some(b"a"), 100).await.unwrap();
    assert_eq!(page.len(), 5);
    let page = store.scan(SECRETS, b"app/", Some(b"b"), 100).await.unwrap();
    assert!(page.is_empty());
    // start_after need not be a stored key.
    let page = store
        .scan(SECRETS, b"app/", Some(b"app/b/"), 100)
        .await
        .unwrap();
    assert_eq!(keys(&page), [&b"app/b/c"[..], b"app/c"]);

    // Empty prefix is the whole table, in byte order.
    let page = store.scan(SECRETS, b"", None, 100).await.unwrap();
    assert_eq!(page.len(), 11);
    assert!(page.windows(2).all(|w| w[0].0 < w[1].0));

    // A prefix of 0xff bytes has no successor key; the scan must still stop at the table's end.
    let page = store.scan(SECRETS, b"\xff\xff", None, 100).await.unwrap();
    assert_eq!(keys(&page), [&b"\xff\xff"[..], b"\xff\xff\x00"]);

    assert!(
        store
            .scan(SECRETS, b"app/", None, 0)
            .await
            .unwrap()
            .is_empty()
    );
    assert!(
        store
            .scan(SECRETS, b"zzz", None, 10)
            .await
            .unwrap()
            .is_empty()
    );
}

async fn conditions(store: Arc<dyn Store>) {
    let store = &*store;

    // require_absent on a missing key passes and the batch applies.
    let mut batch = Batch::new();
    batch
        .require_absent(META, "init")
        .put(META, "init", "v1")
        .put(SECRETS, "s", "x");
    store.commit(batch).await.unwrap();

    // require_absent on a present key fails: nothing of the batch applies.
    let mut batch = Batch::new();
    batch
        .require_absent(META, "other")
        .require_absent(META, "init")
        .put(META, "init", "v2")
        .put(SECRETS, "t", "y");
    let err = store.commit(batch).await.unwrap_err();
    assert!(
        matches!(err, StoreError::Conflict { condition: 1 }),
        "{err:?}"
    );
    assert_eq!(get(store, META, b"init").await.as_deref(), Some(&b"v1"[..]));
    assert_eq!(get(store, SECRETS, b"t").await, None);

    // require_value: compare-and-set.
    let mut batch = Batch::new();
    batch
        .require_value(META, "init", "wrong")
        .put(META, "init", "v3");
    let err = store.commit(batch).await.unwrap_err();
    assert!(
        matches!(err, StoreError::Conflict { condition: 0 }),
        "{err:?}"
    );
    assert_eq!(get(store, META, b"init").await.as_deref(), Some(&b"v1"[..]));

    let mut batch = Batch::new();
    batch
        .require_value(META, "init", "v1")
        .put(META, "init", "v3");
    store.commit(batch).await.unwrap();
    assert_eq!(get(store, META, b"init").await.as_deref(), Some(&b"v3"[..]));

    // require_value on a missing key fails, even when expecting an empty value.
    let mut batch = Batch::new();
    batch.require_value(META, "missing", "").put(META, "x", "x");
    assert!(matches!(
        store.commit(batch).await,
        Err(StoreError::Conflict { condition: 0 })
    ));
    assert_eq!(get(store, META, b"x").await, None);

    // require_present.
    let mut batch = Batch::new();
    batch.require_present(META, "missing").put(META, "x", "x");
    assert!(matches!(
        store.commit(batch).await,
        Err(StoreError::Conflict { condition: 0 })
    ));
    let mut batch = Batch::new();
    batch.require_present(META, "init").delete(META, "init");
    store.commit(batch).await.unwrap();
    assert_eq!(get(store, META, b"init").await, None);

    // A batch of only conditions is a consistent check.
    let mut batch = Batch::new();
    batch
        .require_absent(META, "init")
        .require_value(SECRETS, "s", "x");
    store.commit(batch).await.unwrap();

    // Conditions see the state before the batch, not the batch's own writes.
    let mut batch = Batch::new();
    batch
        .put(META, "fresh", "1")
        .require_value(META, "fresh", "1");
    assert!(matches!(
        store.commit(batch).await,
        Err(StoreError::Conflict { condition: 0 })
    ));
    assert_eq!(get(store, META, b"fresh").await, None);

    let stats = store.stats();
    assert_eq!(stats.conflicts, 5, "{stats:?}");
}

async fn atomic_multi_op_batches(store: Arc<dyn Store>) {
    let store = &*store;
    let mut batch = Batch::new();
    for i in 0..100u32 {
        batch.put(SECRETS, format!("k{i:03}"), i.to_be_bytes());
        batch.put(VERSIONS, format!("k{i:03}"), b"v1".to_vec());
    }
    store.commit(batch).await.unwrap();
    assert_eq!(
        store.scan(SECRETS, b"k", None, 1000).await.unwrap().len(),
        100
    );
    assert_eq!(
        store.scan(VERSIONS, b"k", None, 1000).await.unwrap().len(),
        100
    );

    // Operations apply in order: the later one on the same key wins.
    let mut batch = Batch::new();
    batch
        .put(META, "a", "1")
        .delete(META, "a")
        .delete(META, "b")
        .put(META, "b", "2")
        .put(META, "c", "3")
        .put(META, "c", "4");
    store.commit(batch).await.unwrap();
    assert_eq!(get(store, META, b"a").await, None);
    assert_eq!(get(store, META, b"b").await.as_deref(), Some(&b"2"[..]));
    assert_eq!(get(store, META, b"c").await.as_deref(), Some(&b"4"[..]));
}

async fn pairs_are_consistent(store: Arc<dyn Store>) {
    // One task writes the same generation to two keys in one batch; readers scan both keys at
    // once (one snapshot) and must never see them differ.
    let writer = {
        let store = Arc::clone(&store);
        tokio::spawn(async move {
            for generation in 0..100u32 {
                let mut batch = Batch::new();
                batch.put(SECRETS, "pair/a", generation.to_be_bytes()).put(
                    SECRETS,
                    "pair/b",
                    generation.to_be_bytes(),
                );
                store.commit(batch).await.unwrap();
            }
        })
    };
    let mut reads = 0;
    while !writer.is_finished() || reads == 0 {
        let page = store.scan(SECRETS, b"pair/", None, 10).await.unwrap();
        match page.as_slice() {
            [] => {}
            [(_, a), (_, b)] => assert_eq!(a, b, "a batch was seen half applied"),
            other => panic!("unexpected scan result of {} entries", other.len()),
        }
        reads += 1;
        tokio::task::yield_now().await;
    }
    writer.await.unwrap();
}

async fn racing_initializers_one_wins(store: Arc<dyn Store>) {
    const RACERS: usize = 50;
    let barrier = Arc::new(tokio::sync::Barrier::new(RACERS));
    let mut tasks = Vec::new();
    for i in 0..RACERS {
        let store = Arc::clone(&store);
        let barrier = Arc::clone(&barrier);
        tasks.push(tokio::spawn(async move {
            let mut batch = Batch::new();
            batch
                .require_absent(META, "root")
                .put(META, "root", format!("key-{i}"))
                .put(SECRETS, format!("proof-{i}"), "x");
            barrier.wait().await;
            (i, store.commit(batch).await)
        }));
    }
    let mut winners = Vec::new();
    for task in tasks {
        let (i, result) = task.await.unwrap();
        match result {
            Ok(()) => winners.push(i),
            Err(StoreError::Conflict { condition: 0 }) => {}
            Err(other) => panic!("racer {i} failed: {other:?}"),
        }
    }
    assert_eq!(winners.len(), 1, "winners: {winners:?}");
    let winner = winners[0];
    assert_eq!(
        get(&*store, META, b"root").await,
        Some(format!("key-{winner}").into_bytes())
    );
    // The losers' other writes were not applied either.
    let proofs = store.scan(SECRETS, b"proof-", None, 100).await.unwrap();
    assert_eq!(keys(&proofs), [format!("proof-{winner}").as_bytes()]);
    let stats = store.stats();
    assert_eq!(stats.conflicts, (RACERS - 1) as u64, "{stats:?}");
    assert_eq!(stats.batches_committed, 1, "{stats:?}");
}

async fn compare_and_set_counter(store: Arc<dyn Store>) {
    const TASKS: u32 = 16;
    const INCREMENTS: u32 = 10;
    put(&*store, META, b"counter", &0u32.to_be_bytes()).await;
    let mut tasks = Vec::new();
    for _ in 0..TASKS {
        let store = Arc::clone(&store);
        tasks.push(tokio::spawn(async move {
            let mut done = 0;
            while done < INCREMENTS {
                let current = store.get(META, b"counter").await.unwrap().unwrap();
                let n = u32::from_be_bytes(current.as_slice().try_into().unwrap());
                let mut batch = Batch::new();
                batch.require_value(META, "counter", current).put(
                    META,
                    "counter",
                    (n + 1).to_be_bytes(),
                );
                match store.commit(batch).await {
                    Ok(()) => done += 1,
                    Err(StoreError::Conflict { .. }) => tokio::task::yield_now().await,
                    Err(other) => panic!("{other:?}"),
                }
            }
        }));
    }
    for task in tasks {
        task.await.unwrap();
    }
    let value = get(&*store, META, b"counter").await.unwrap();
    assert_eq!(
        u32::from_be_bytes(value.as_slice().try_into().unwrap()),
        TASKS * INCREMENTS,
        "an increment was lost"
    );
}

async fn limits_refuse_whole_batch(store: Arc<dyn Store>) {
    let store = &*store;

    // The largest key and value are accepted.
    let key = vec![b'k'; MAX_KEY_LEN];
    put(store, SECRETS, &key, b"v").await;
    assert_eq!(get(store, SECRETS, &key).await.as_deref(), Some(&b"v"[..]));

    let mut batch = Batch::new();
    batch
        .put(SECRETS, "fine", "v")
        .put(SECRETS, vec![b'k'; MAX_KEY_LEN + 1], "v");
    let err = store.commit(batch).await.unwrap_err();
    assert!(matches!(err, StoreError::KeyTooLong { .. }), "{err:?}");
    assert_eq!(get(store, SECRETS, b"fine").await, None);

    let mut batch = Batch::new();
    batch
        .put(SECRETS, "fine", "v")
        .put(SECRETS, "big", vec![0u8; MAX_VALUE_LEN + 1]);
    let err = store.commit(batch).await.unwrap_err();
    assert!(matches!(err, StoreError::ValueTooLong { .. }), "{err:?}");
    assert_eq!(get(store, SECRETS, b"fine").await, None);
    assert!(!err.to_string().contains("fine"));

    let long = vec![b'k'; MAX_KEY_LEN + 1];
    assert!(matches!(
        store.get(SECRETS, &long).await,
        Err(StoreError::KeyTooLong { .. })
    ));
    assert!(matches!(
        store.scan(SECRETS, &long, None, 1).await,
        Err(StoreError::KeyTooLong { .. })
    ));
    assert_eq!(store.stats().failures, 2);
}

async fn closed_store_refuses(store: Arc<dyn Store>) {
    put(&*store, SECRETS, b"k", b"v").await;
    store.close().await.unwrap();
    store.close().await.unwrap();
    assert!(matches!(
        store.get(SECRETS, b"k").await,
        Err(StoreError::Closed)
    ));
    assert!(matches!(
        store.scan(SECRETS, b"", None, 1).await,
        Err(StoreError::Closed)
    ));
    let mut batch = Batch::new();
    batch.put(SECRETS, "k2", "v");
    assert!(matches!(store.commit(batch).await, Err(StoreError::Closed)));
}

async fn many_concurrent_writers(store: Arc<dyn Store>) {
    const TASKS: usize = 32;
    const PER_TASK: usize = 20;
    let mut tasks = Vec::new();
    for t in 0..TASKS {
        let store = Arc::clone(&store);
        tasks.push(tokio::spawn(async move {
            for n in 0..PER_TASK {
                let mut batch = Batch::new();
                batch.put(SECRETS, format!("w/{t:02}/{n:02}"), format!("{t}:{n}"));
                store.commit(batch).await.unwrap();
            }
        }));
    }
    for task in tasks {
        task.await.unwrap();
    }
    let all = store.scan(SECRETS, b"w/", None, 10_000).await.unwrap();
    assert_eq!(all.len(), TASKS * PER_TASK);
    let stats = store.stats();
    assert_eq!(stats.batches_committed, (TASKS * PER_TASK) as u64);
    assert!(stats.transactions >= 1 && stats.transactions <= stats.batches_committed);
}

macro_rules! suite {
    ($($behaviour:ident),* $(,)?) => {
        mod memory {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
                async fn $behaviour() {
                    super::run(super::memory(), super::$behaviour).await;
                }
            )*
        }
        mod redb {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
                async fn $behaviour() {
                    super::run(super::redb(), super::$behaviour).await;
                }
            )*
        }
    };
}

suite!(
    put_get_delete,
    tables_are_separate,
    snapshot_holds_every_entry_of_one_state,
    scan_prefix_and_pages,
    conditions,
    atomic_multi_op_batches,
    pairs_are_consistent,
    racing_initializers_one_wins,
    compare_and_set_counter,
    limits_refuse_whole_batch,
    closed_store_refuses,
    many_concurrent_writers,
);
