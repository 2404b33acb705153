//! Rough commit throughput of the redb backend, for eyeballing group commit. Not a benchmark.
//!
//! `cargo run -p spike-store --example throughput -- [TASKS] [COMMITS_PER_TASK]`

use std::sync::Arc;
use std::time::Instant;

use spike_store::{Batch, RedbStore, Store, StoreError, Table};

const DATA: Table = Table::new("data");

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let tasks: usize = args.next().map_or(Ok(64), |a| a.parse())?;
    let per_task: usize = args.next().map_or(Ok(200), |a| a.parse())?;

    let dir = tempfile::tempdir()?;
    let store = Arc::new(RedbStore::open(dir.path())?);
    let started = Instant::now();
    let mut handles = Vec::new();
    for t in 0..tasks {
        let store = Arc::clone(&store);
        handles.push(tokio::spawn(async move {
            for n in 0..per_task {
                let mut batch = Batch::new();
                batch.put(DATA, format!("{t}/{n}"), vec![7u8; 256]);
                store.commit(batch).await?;
            }
            Ok::<_, StoreError>(())
        }));
    }
    for handle in handles {
        handle.await??;
    }
    let elapsed = started.elapsed();
    let stats = store.stats();
    println!(
        "{} commits from {tasks} tasks in {elapsed:.2?}: {:.0} commits/s, {} syncs ({:.1} batches per sync)",
        stats.batches_committed,
        stats.batches_committed as f64 / elapsed.as_secs_f64(),
        stats.transactions,
        stats.batches_committed as f64 / stats.transactions.max(1) as f64,
    );
    store.close().await?;
    Ok(())
}
