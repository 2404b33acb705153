//! Storage for SPIKE Nexus.
//!
//! Nexus keeps only ciphertext and authenticated records at rest, so this crate deals in opaque
//! bytes: named [`Table`]s of byte keys and byte values, read with [`Store::get`] and
//! [`Store::scan`] and changed only through atomic, conditional [`Batch`]es handed to
//! [`Store::commit`].
//!
//! Two backends implement [`Store`]:
//!
//! - [`MemoryStore`]: a `BTreeMap` per table behind a lock, for tests and `spike dev` without a
//!   data directory. Nothing survives the process.
//! - [`RedbStore`]: one [redb](https://docs.rs/redb) file, `<dir>/spike.redb`. A commit returns
//!   `Ok` only once it is durable on disk, and commits from concurrent callers share one
//!   transaction and one sync (group commit), so durability does not cap throughput.
//!
//! Both give the same semantics, which the crate's conformance tests check against each:
//!
//! - A batch's conditions are all evaluated against the state before the batch; if any fails the
//!   commit returns [`StoreError::Conflict`] naming the first failing condition and nothing of the
//!   batch is applied. Otherwise its operations are applied in order (a later operation on the
//!   same key wins) and become visible together.
//! - Committed batches are linearizable: each one sees every batch acknowledged before it.
//! - Inputs over the limits below are refused with an error before anything is touched.
//!
//! The trait is object safe and meant to be held as `Arc<dyn Store>`; it leaves room for a
//! networked backend later.

#![warn(missing_docs)]

mod batch;
mod durable;
mod error;
pub mod freshness;
mod memory;

use std::fmt;
use std::ops::Bound;
use std::sync::atomic::{AtomicU64, Ordering};

pub use batch::Batch;
pub use durable::{DATA_FILE_NAME, FORMAT_VERSION, RedbStore};
pub use error::StoreError;
pub use freshness::{Armed, Witness, WitnessKey};
pub use memory::MemoryStore;

/// Longest key accepted, in bytes (4 KiB). Keys are paths or hashes; anything longer is a bug or
/// an attack, and redb keeps keys in its B-tree pages, where big keys cost every lookup.
pub const MAX_KEY_LEN: usize = 4 * 1024;

/// Largest value accepted, in bytes (16 MiB). Nexus bounds a secret's size far below this; the
/// store's own bound only stops a runaway caller from growing the file without limit.
pub const MAX_VALUE_LEN: usize = 16 * 1024 * 1024;

/// Largest batch accepted: the sum of its keys, values and expected values, in bytes (64 MiB).
pub const MAX_BATCH_BYTES: usize = 64 * 1024 * 1024;

/// Most conditions plus operations one batch may hold.
pub const MAX_BATCH_ENTRIES: usize = 10_000;

/// Longest table name, in bytes.
pub const MAX_TABLE_NAME_LEN: usize = 64;

/// A named table.
///
/// Names are 1 to [`MAX_TABLE_NAME_LEN`] bytes of `[a-z0-9_-]` and must not begin with `_`
/// (reserved for the store's own bookkeeping). They are fixed at compile time:
///
/// ```
/// use spike_store::Table;
/// const SECRETS: Table = Table::new("secrets");
/// assert_eq!(SECRETS.name(), "secrets");
/// ```
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Table(&'static str);

impl Table {
    /// Names a table.
    ///
    /// # Panics
    ///
    /// If `name` is not a valid table name. Use it in a `const` item, where that panic is a
    /// compile error:
    ///
    /// ```compile_fail
    /// const BAD: spike_store::Table = spike_store::Table::new("Not Valid");
    /// ```
    pub const fn new(name: &'static str) -> Self {
        assert!(
            Self::is_valid_name(name),
            "table names are 1-64 bytes of [a-z0-9_-] and do not begin with '_'"
        );
        Self(name)
    }

    /// Whether `name` is a valid table name (see [`Table`]).
    pub const fn is_valid_name(name: &str) -> bool {
        let bytes = name.as_bytes();
        if bytes.is_empty() || bytes.len() > MAX_TABLE_NAME_LEN || bytes[0] == b'_' {
            return false;
        }
        let mut i = 0;
        while i < bytes.len() {
            let b = bytes[i];
            if !(b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-') {
                return false;
            }
            i += 1;
        }
        true
    }

    /// The table's name.
    pub const fn name(self) -> &'static str {
        self.0
    }
}

impl fmt::Debug for Table {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Table({})", self.0)
    }
}

impl fmt::Display for Table {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.0)
    }
}

/// A transactional key-value store of opaque bytes.
///
/// See the [crate documentation](crate) for the semantics every backend provides.
#[async_trait::async_trait]
pub trait Store: Send + Sync + 'static {
    /// The value stored under `key` in `table`, if any.
    async fn get(&self, table: Table, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError>;

    /// Entries of `table` whose keys start with `prefix`, in byte order of their keys, strictly
    /// after `start_after` if given, at most `limit` of them.
    ///
    /// To page through a prefix, pass the last key of one page as `start_after` of the next; a
    /// page shorter than `limit` is the last. The result is one consistent snapshot.
    async fn scan(
        &self,
        table: Table,
        prefix: &[u8],
        start_after: Option<&[u8]>,
        limit: usize,
    ) -> Result<Vec<(Vec<u8>, Vec<u8>)>, StoreError>;

    /// Applies `batch` atomically if all its conditions hold.
    ///
    /// Returns `Ok` only once the batch is durable (for a persistent backend). If a condition
    /// fails, returns [`StoreError::Conflict`] and applies nothing. Invalid input and a closed
    /// store apply nothing either. After a backend failure the batch is not acknowledged, but
    /// if the failure struck the sync itself the batch may still turn out applied, as with any
    /// database; make retries safe with conditions. If the returned future is dropped before it
    /// completes, the batch may or may not be applied.
    async fn commit(&self, batch: Batch) -> Result<(), StoreError>;

    /// Every entry of every table, from one consistent snapshot (commits made meanwhile are
    /// wholly in it or wholly not), as `(table name, key, value)` in order of table name, then
    /// key. For backups; it holds the whole store in memory.
    async fn snapshot(&self) -> Result<Vec<SnapshotEntry>, StoreError>;

    /// Counters for metrics.
    fn stats(&self) -> StoreStats;

    /// Rewrites a persistent backend's files so that nothing deleted or overwritten before the
    /// call is left in a free page of them (redb is copy-on-write: an overwritten value stays in
    /// the file until its page is reused). Callers use it after removing key material. Every
    /// batch committed before the call is kept; reads wait while it runs. A backend without
    /// files does nothing.
    async fn compact(&self) -> Result<(), StoreError> {
        Ok(())
    }

    /// Starts keeping the freshness witness under `key` (see [`freshness`]) and reports what
    /// the store held: the witness it stored and the digest of its actual contents. From then
    /// on every commit that changes anything stores the next witness with its change. Arming
    /// again rereads the store. A backend without files has nothing to roll back, keeps no
    /// witness and returns `None`.
    async fn arm_witness(
        &self,
        key: std::sync::Arc<dyn WitnessKey>,
    ) -> Result<Option<Armed>, StoreError> {
        let _ = key;
        Ok(None)
    }

    /// The witness as of the last commit, once armed.
    fn witness(&self) -> Option<Witness> {
        None
    }

    /// Stops the store: commits already submitted finish, later calls fail with
    /// [`StoreError::Closed`], and a persistent backend releases its files before this returns
    /// (so the same directory can be opened again). Calling it again does nothing.
    async fn close(&self) -> Result<(), StoreError>;
}

/// One entry of [`Store::snapshot`]: a table's name, a key and its value.
pub type SnapshotEntry = (String, Vec<u8>, Vec<u8>);

/// Counters a store keeps for `/metrics`. All are totals since the store was opened.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct StoreStats {
    /// Batches applied (and, for a persistent backend, made durable).
    pub batches_committed: u64,
    /// Batches refused because one of their conditions failed.
    pub conflicts: u64,
    /// Batches that failed for any other reason (invalid input, backend error, closed store).
    pub failures: u64,
    /// Write transactions committed. For [`RedbStore`] each is one durable sync, shared by every
    /// batch of its group, so `batches_committed / transactions` is the group-commit factor.
    pub transactions: u64,
}

/// Lock-free counters behind [`StoreStats`].
#[derive(Debug, Default)]
struct Counters {
    batches_committed: AtomicU64,
    conflicts: AtomicU64,
    failures: AtomicU64,
    transactions: AtomicU64,
}

impl Counters {
    fn add(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Ordering::Relaxed);
    }

    /// Counts the outcome of one `commit`, and passes it on.
    fn count_commit(&self, result: Result<(), StoreError>) -> Result<(), StoreError> {
        let counter = match &result {
            Ok(()) => &self.batches_committed,
            Err(StoreError::Conflict { .. }) => &self.conflicts,
            Err(_) => &self.failures,
        };
        Self::add(counter, 1);
        result
    }

    fn snapshot(&self) -> StoreStats {
        StoreStats {
            batches_committed: self.batches_committed.load(Ordering::Relaxed),
            conflicts: self.conflicts.load(Ordering::Relaxed),
            failures: self.failures.load(Ordering::Relaxed),
            transactions: self.transactions.load(Ordering::Relaxed),
        }
    }
}

/// Bounds of the keys a scan covers.
#[derive(Debug, PartialEq, Eq)]
struct ScanRange<'a> {
    lower: Bound<&'a [u8]>,
    upper: Bound<Vec<u8>>,
}

/// The key range a scan covers, or `None` when it is empty.
///
/// The lower bound is `prefix` (inclusive) or `start_after` (exclusive), whichever is later; the
/// upper bound is the first key after every key that starts with `prefix`. Returning `None`
/// rather than an inverted range matters: `BTreeMap::range` panics on one.
fn scan_range<'a>(prefix: &'a [u8], start_after: Option<&'a [u8]>) -> Option<ScanRange<'a>> {
    let lower = match start_after {
        Some(after) if after.starts_with(prefix) => Bound::Excluded(after),
        // Every key with the prefix sorts after `after`.
        Some(after) if after < prefix => Bound::Included(prefix),
        // `after` sorts after every key with the prefix.
        Some(_) => return None,
        None => Bound::Included(prefix),
    };
    Some(ScanRange {
        lower,
        upper: prefix_successor(prefix),
    })
}

/// The smallest key greater than every key that starts with `prefix`, if one exists.
fn prefix_successor(prefix: &[u8]) -> Bound<Vec<u8>> {
    let mut upper = prefix.to_vec();
    while let Some(last) = upper.pop() {
        if last < u8::MAX {
            upper.push(last + 1);
            return Bound::Excluded(upper);
        }
    }
    // Empty, or all 0xff: no key beyond the prefix's range exists.
    Bound::Unbounded
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn table_names() {
        assert!(Table::is_valid_name("secrets"));
        assert!(Table::is_valid_name("audit_log-2"));
        assert!(!Table::is_valid_name(""));
        assert!(!Table::is_valid_name("_internal"));
        assert!(!Table::is_valid_name("Secrets"));
        assert!(!Table::is_valid_name("a/b"));
        assert!(!Table::is_valid_name(&"a".repeat(MAX_TABLE_NAME_LEN + 1)));
        assert!(Table::is_valid_name(&"a".repeat(MAX_TABLE_NAME_LEN)));
    }

    #[test]
    #[should_panic(expected = "table names")]
    fn invalid_table_panics_at_runtime() {
        let name: &'static str = Box::leak(String::from("").into_boxed_str());
        let _ = Table::new(name);
    }

    #[test]
    fn successor() {
        assert_eq!(prefix_successor(b""), Bound::Unbounded);
        assert_eq!(prefix_successor(b"\xff\xff"), Bound::Unbounded);
        assert_eq!(prefix_successor(b"ab"), Bound::Excluded(b"ac".to_vec()));
        assert_eq!(prefix_successor(b"a\xff"), Bound::Excluded(b"b".to_vec()));
    }

    #[test]
    fn range_bounds() {
        assert_eq!(
            scan_range(b"b/", Some(b"a")),
            Some(ScanRange {
                lower: Bound::Included(&b"b/"[..]),
                upper: Bound::Excluded(b"b0".to_vec())
            })
        );
        assert_eq!(scan_range(b"b/", Some(b"c")), None);
        assert_eq!(scan_range(b"b/", Some(b"b0")), None);
        assert_eq!(
            scan_range(b"b/", Some(b"b/x")),
            Some(ScanRange {
                lower: Bound::Excluded(&b"b/x"[..]),
                upper: Bound::Excluded(b"b0".to_vec())
            })
        );
        // `start_after` equal to the prefix excludes only the prefix itself.
        assert_eq!(
            scan_range(b"b/", Some(b"b/")),
            Some(ScanRange {
                lower: Bound::Excluded(&b"b/"[..]),
                upper: Bound::Excluded(b"b0".to_vec())
            })
        );
    }
}
