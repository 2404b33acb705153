//! Crash durability: every write acknowledged before a `kill -9` is there after reopening.
//!
//! The test binary re-executes itself as the writer: `crash_child` (ignored in normal runs) opens
//! the store named by an environment variable, commits from several tasks at once and prints
//! `ACK <key>` after each `commit` returns. The parent kills it with SIGKILL part-way, reopens the
//! store (which repairs it) and checks every acknowledged key, over several rounds on one file.

#![allow(clippy::unwrap_used)] // tests fail loudly on any unexpected error

use std::path::Path;
use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;

use spike_store::{Batch, RedbStore, Store, Table};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::time::{Instant, timeout};

const DATA: Table = Table::new("data");
const INDEX: Table = Table::new("index");

const CHILD_DIR_ENV: &str = "SPIKE_STORE_CRASH_CHILD_DIR";
const CHILD_ROUND_ENV: &str = "SPIKE_STORE_CRASH_CHILD_ROUND";
const ROUNDS: usize = 3;
/// Acknowledgements to wait for before killing the child.
const ACKS_BEFORE_KILL: usize = 300;
const WRITERS: usize = 8;
/// The child stops on its own after this many commits per writer, so it can never run away.
const MAX_COMMITS_PER_WRITER: usize = 20_000;

fn value_for(key: &str) -> Vec<u8> {
    // Big enough to span pages now and then, and tied to the key so a mixed-up value shows.
    format!("value-of-{key}-").repeat(40).into_bytes()
}

/// The writer process. Does nothing unless started by the parent test.
#[test]
#[ignore = "helper process for acknowledged_writes_survive_kill_9"]
fn crash_child() {
    let Some(dir) = std::env::var_os(CHILD_DIR_ENV) else {
        return;
    };
    let round = std::env::var(CHILD_ROUND_ENV).unwrap();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async move {
        let store = Arc::new(RedbStore::open(Path::new(&dir)).unwrap());
        let mut tasks = Vec::new();
        for writer in 0..WRITERS {
            let store = Arc::clone(&store);
            let round = round.clone();
            tasks.push(tokio::spawn(async move {
                for n in 0..MAX_COMMITS_PER_WRITER {
                    let key = format!("r{round}/w{writer}/{n:06}");
                    let mut batch = Batch::new();
                    batch
                        .require_absent(DATA, key.as_str())
                        .put(DATA, key.as_str(), value_for(&key))
                        .put(INDEX, key.as_str(), b"".to_vec());
                    store.commit(batch).await.unwrap();
                    // Written straight to the pipe, unbuffered by the test harness.
                    use std::io::Write;
                    let mut out = std::io::stdout().lock();
                    writeln!(out, "ACK {key}").unwrap();
                    out.flush().unwrap();
                }
            }));
        }
        for task in tasks {
            task.await.unwrap();
        }
    });
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledged_writes_survive_kill_9() {
    let dir = tempfile::tempdir().unwrap();
    let exe = std::env::current_exe().unwrap();
    let mut acked: Vec<String> = Vec::new();

    for round in 0..ROUNDS {
        let mut child = tokio::process::Command::new(&exe)
            .args([
                "crash_child",
                "--exact",
                "--ignored",
                "--nocapture",
                "--test-threads=1",
            ])
            .env(CHILD_DIR_ENV, dir.path())
            .env(CHILD_ROUND_ENV, round.to_string())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .kill_on_drop(true)
            .spawn()
            .unwrap();
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();

        let deadline = Instant::now() + Duration::from_secs(120);
        let mut this_round = 0;
        while this_round < ACKS_BEFORE_KILL {
            let line = tokio::time::timeout_at(deadline, lines.next_line())
                .await
                .expect("child did not acknowledge enough writes in time")
                .unwrap()
                .expect("child exited before it was killed");
            if let Some(key) = line.strip_prefix("ACK ") {
                acked.push(key.to_owned());
                this_round += 1;
            }
        }
        child.start_kill().unwrap(); // SIGKILL
        let status = timeout(Duration::from_secs(30), child.wait())
            .await
            .expect("killed child did not exit")
            .unwrap();
        assert!(!status.success(), "child was not killed: {status}");
        // Lines already in the pipe were printed after their commit returned: they count too.
        while let Some(line) = timeout(Duration::from_secs(30), lines.next_line())
            .await
            .expect("pipe did not close")
            .unwrap()
        {
            if let Some(key) = line.strip_prefix("ACK ") {
                acked.push(key.to_owned());
            }
        }

        let store = RedbStore::open(dir.path()).unwrap();
        let mut missing = Vec::new();
        for key in &acked {
            let value = timeout(Duration::from_secs(30), store.get(DATA, key.as_bytes()))
                .await
                .unwrap()
                .unwrap();
            match &value {
                Some(value) => assert_eq!(value, &value_for(key), "wrong value for {key}"),
                None => missing.push(key.clone()),
            }
            // Both halves of each batch, or neither.
            let index = timeout(Duration::from_secs(30), store.get(INDEX, key.as_bytes()))
                .await
                .unwrap()
                .unwrap();
            assert_eq!(index.is_some(), value.is_some(), "half a batch for {key}");
        }
        assert!(
            missing.is_empty(),
            "round {round}: {} of {} acknowledged writes lost, e.g. {:?}",
            missing.len(),
            acked.len(),
            missing.first()
        );
        // Atomicity holds for unacknowledged batches too: the two tables list the same keys.
        let data = store.scan(DATA, b"", None, usize::MAX).await.unwrap();
        let index = store.scan(INDEX, b"", None, usize::MAX).await.unwrap();
        let data_keys: Vec<_> = data.iter().map(|(k, _)| k).collect();
        let index_keys: Vec<_> = index.iter().map(|(k, _)| k).collect();
        assert_eq!(data_keys, index_keys);
        println!(
            "round {round}: {} acknowledged, {} present after kill -9",
            acked.len(),
            data.len()
        );
        store.close().await.unwrap();
    }
}
