use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{PoisonError, RwLock};

use crate::batch::{Batch, Op, check_key};
use crate::{Counters, ScanRange, Store, StoreError, StoreStats, Table, scan_range};

type Rows = BTreeMap<Vec<u8>, Vec<u8>>;

/// A [`Store`] in memory: one `BTreeMap` per table behind a lock.
///
/// For tests and `spike dev` without a data directory; nothing survives the process. Commits are
/// applied one at a time under the write lock, so each is its own "transaction" in
/// [`StoreStats`].
#[derive(Debug, Default)]
pub struct MemoryStore {
    tables: RwLock<HashMap<Table, Rows>>,
    closed: AtomicBool,
    counters: Counters,
}

impl MemoryStore {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }

    fn check_open(&self) -> Result<(), StoreError> {
        if self.closed.load(Ordering::Acquire) {
            return Err(StoreError::Closed);
        }
        Ok(())
    }

    fn try_commit(&self, batch: Batch) -> Result<(), StoreError> {
        self.check_open()?;
        batch.validate()?;
        // Nothing below can panic half-way through a batch (the inputs are validated and the
        // maps only allocate), so a poisoned lock still guards consistent data.
        let mut tables = self.tables.write().unwrap_or_else(PoisonError::into_inner);
        for (index, condition) in batch.conditions.iter().enumerate() {
            let current = tables
                .get(&condition.table())
                .and_then(|rows| rows.get(condition.key()));
            if !condition.holds(current.map(Vec::as_slice)) {
                return Err(StoreError::Conflict { condition: index });
            }
        }
        let applies = !batch.ops.is_empty();
        for op in batch.ops {
            match op {
                Op::Put { table, key, value } => {
                    tables.entry(table).or_default().insert(key, value);
                }
                Op::Delete { table, key } => {
                    if let Some(rows) = tables.get_mut(&table) {
                        rows.remove(&key);
                    }
                }
            }
        }
        if applies {
            Counters::add(&self.counters.transactions, 1);
        }
        Ok(())
    }
}

#[async_trait::async_trait]
impl Store for MemoryStore {
    async fn get(&self, table: Table, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
        self.check_open()?;
        check_key(key)?;
        let tables = self.tables.read().unwrap_or_else(PoisonError::into_inner);
        Ok(tables.get(&table).and_then(|rows| rows.get(key)).cloned())
    }

    async fn scan(
        &self,
        table: Table,
        prefix: &[u8],
        start_after: Option<&[u8]>,
        limit: usize,
    ) -> Result<Vec<(Vec<u8>, Vec<u8>)>, StoreError> {
        self.check_open()?;
        check_key(prefix)?;
        if let Some(after) = start_after {
            check_key(after)?;
        }
        let Some(ScanRange { lower, upper }) = scan_range(prefix, start_after) else {
            return Ok(Vec::new());
        };
        let tables = self.tables.read().unwrap_or_else(PoisonError::into_inner);
        let Some(rows) = tables.get(&table) else {
            return Ok(Vec::new());
        };
        let upper = upper.as_ref().map(Vec::as_slice);
        Ok(rows
            .range::<[u8], _>((lower, upper))
            .take(limit)
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect())
    }

    async fn commit(&self, batch: Batch) -> Result<(), StoreError> {
        self.counters.count_commit(self.try_commit(batch))
    }

    async fn snapshot(&self) -> Result<Vec<crate::SnapshotEntry>, StoreError> {
        self.check_open()?;
        let tables = self.tables.read().unwrap_or_else(PoisonError::into_inner);
        let mut names: Vec<&Table> = tables.keys().collect();
        names.sort_by_key(|t| t.name());
        Ok(names
            .into_iter()
            .flat_map(|t| {
                tables[t]
                    .iter()
                    .map(|(k, v)| (t.name().to_owned(), k.clone(), v.clone()))
            })
            .collect())
    }

    fn stats(&self) -> StoreStats {
        self.counters.snapshot()
    }

    async fn close(&self) -> Result<(), StoreError> {
        self.closed.store(true, Ordering::Release);
        Ok(())
    }
}
