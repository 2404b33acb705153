//! The durable backend on redb, with group commit.

use std::collections::HashMap;
use std::collections::hash_map::Entry;
use std::fs::{self, DirBuilder, File, OpenOptions};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError, RwLock};
use std::thread::JoinHandle;
use std::time::Duration;

use redb::{
    Builder, Database, DatabaseError, Durability, ReadTransaction, ReadableDatabase, ReadableTable,
    TableDefinition, TableError, TableHandle, WriteTransaction,
};
use tokio::sync::{mpsc, oneshot};

use crate::batch::{Batch, Op, check_key};
use crate::freshness::{Armed, Digest, Witness, WitnessKey};
use crate::{Counters, ScanRange, Store, StoreError, StoreStats, Table, scan_range};

/// The newest on-disk format this build reads and writes.
///
/// Opening a store stamped with a newer version fails with [`StoreError::FormatTooNew`]; an older
/// one is migrated in place when opened.
pub const FORMAT_VERSION: u32 = 1;

/// Name of the data file inside the data directory.
pub const DATA_FILE_NAME: &str = "spike.redb";

/// The store's own bookkeeping table; the leading `_` keeps it apart from every [`Table`].
const INTERNAL: TableDefinition<'static, &[u8], &[u8]> = TableDefinition::new("__spike_store");
const FORMAT_KEY: &[u8] = b"format_version";
/// The freshness witness (see [`crate::freshness`]), written with every change once armed.
const WITNESS_KEY: &[u8] = b"witness";

/// Most batches one group commit takes.
const MAX_GROUP_BATCHES: usize = 256;
/// A group stops taking batches once it carries this many bytes; bounds the transaction's size.
const MAX_GROUP_BYTES: usize = 8 * 1024 * 1024;
/// Batches that may wait for the writer before `commit` itself waits (backpressure).
const QUEUE_DEPTH: usize = 1024;
/// redb's page cache. Nexus's working set is small; this caps memory, it does not reserve it.
const CACHE_BYTES: usize = 256 * 1024 * 1024;

type RedbTable<'txn> = redb::Table<'txn, &'static [u8], &'static [u8]>;
type ReadOnlyRedbTable = redb::ReadOnlyTable<&'static [u8], &'static [u8]>;

fn definition(table: Table) -> TableDefinition<'static, &'static [u8], &'static [u8]> {
    TableDefinition::new(table.name())
}

/// A batch waiting for the writer, with where to send its answer.
struct Pending {
    batch: Batch,
    reply: oneshot::Sender<Result<(), StoreError>>,
}

/// Work for the writer thread, in arrival order.
enum Job {
    Batch(Pending),
    /// Compact the file once every earlier batch is committed.
    Compact(oneshot::Sender<Result<(), StoreError>>),
    /// Start keeping the witness under this key, from the state after every earlier batch.
    Arm(
        Arc<dyn WitnessKey>,
        oneshot::Sender<Result<Armed, StoreError>>,
    ),
}

/// The witness the writer keeps once armed: the key, and the witness as of the last commit.
#[derive(Default)]
struct Keeping {
    armed: Option<(Arc<dyn WitnessKey>, Witness)>,
}

/// Shared by the writer (which updates it after each commit) and the store (which reads it).
type WitnessSlot = Arc<Mutex<Keeping>>;

/// The open database, shared by readers and the writer; `None` once closed. Compaction takes it
/// out for as long as it runs.
type Slot = Arc<RwLock<Option<Arc<Database>>>>;

/// A durable [`Store`] in one redb file, with group commit.
///
/// # On-disk layout
///
/// One redb file, `<dir>/`[`DATA_FILE_NAME`]. Each [`Table`] is a redb table of the same name
/// with `&[u8]` keys and values. The store's own bookkeeping lives in the table `__spike_store`
/// (user table names cannot begin with `_`); its key `format_version` holds [`FORMAT_VERSION`] as
/// a 4-byte big-endian integer, written in the same transaction that first initializes the file.
///
/// # Writes
///
/// One writer thread owns every write. `commit` validates the batch, queues it and waits for the
/// answer. The writer takes every batch already queued (up to 256 batches or 8 MiB), applies them
/// in arrival order inside one write transaction, each batch's conditions evaluated against the
/// state including the group's earlier batches, and commits once with
/// [`Durability::Immediate`] and two-phase commit. Only then does any caller get its answer. A
/// batch whose condition fails is skipped and answered `Conflict`; if the transaction itself
/// fails, every batch of the group gets the error and nothing of the group is on disk.
///
/// While one group is being synced the next one queues up, so the number of syncs follows the
/// disk's speed, not the number of callers.
///
/// # Reads
///
/// `get` and `scan` run in redb read transactions on tokio's blocking pool: they see the last
/// committed state and run concurrently with the writer.
///
/// # Files and permissions
///
/// A missing data directory is created with mode 0700 and a new data file with mode 0600. An
/// existing directory or file that is writable by other users (the `o+w` bit) is refused with
/// [`StoreError::InsecurePermissions`], since whoever can replace the file can roll the store
/// back. Group write or any group/other read access is allowed with a warning: Kubernetes volumes
/// with an `fsGroup` are group-writable by design. Point the store at a subdirectory of such a
/// volume to get 0700.
///
/// # Lifetime
///
/// [`Store::close`] waits for queued commits and releases the file. Dropping the store without
/// closing it also lets queued commits finish, on the writer thread, but returns at once; the
/// file is released shortly after. If redb reports a failed sync it refuses further writes, so
/// every later commit fails too: treat a [`StoreError::Backend`] from `commit` as fatal for the
/// process and restart (the reopen repairs the file).
#[derive(Debug)]
pub struct RedbStore {
    path: PathBuf,
    /// `None` once closed. Reads clone the `Arc` for the duration of one read transaction.
    db: Slot,
    /// `None` once closed; dropping the last sender stops the writer after it drains the queue.
    queue: Mutex<Option<mpsc::Sender<Job>>>,
    writer: Mutex<Option<JoinHandle<()>>>,
    counters: Arc<Counters>,
    witness: WitnessSlot,
}

impl std::fmt::Debug for Keeping {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Keeping")
            .field("witness", &self.armed.as_ref().map(|(_, w)| w))
            .finish()
    }
}

impl RedbStore {
    /// Opens the store in `dir`, creating the directory and the data file if they are missing.
    ///
    /// This blocks: it checks the integrity of the whole file (which repairs it after a crash)
    /// and syncs to disk. Call it before serving, or through `spawn_blocking`. Only one
    /// [`RedbStore`] may have a directory open at a time, across processes too
    /// ([`StoreError::InUse`]).
    pub fn open(dir: &Path) -> Result<Self, StoreError> {
        prepare_dir(dir)?;
        let path = dir.join(DATA_FILE_NAME);
        prepare_file(dir, &path)?;

        // A compaction cut short by a crash leaves its unfinished copy; the file itself is whole.
        remove_if_present(&compaction_path(&path))?;
        let db = open_database(&path)?;
        check_format(&db, &path)?;

        let db: Slot = Arc::new(RwLock::new(Some(Arc::new(db))));
        let counters = Arc::new(Counters::default());
        let witness = WitnessSlot::default();
        let (queue, receiver) = mpsc::channel(QUEUE_DEPTH);
        let writer = std::thread::Builder::new()
            .name("spike-store-writer".into())
            .spawn({
                let db = Arc::clone(&db);
                let counters = Arc::clone(&counters);
                let witness = Arc::clone(&witness);
                let path = path.clone();
                move || run_writer(&db, &path, receiver, &counters, &witness)
            })
            .map_err(|e| StoreError::io(&path, e))?;

        Ok(Self {
            path,
            db,
            queue: Mutex::new(Some(queue)),
            writer: Mutex::new(Some(writer)),
            counters,
            witness,
        })
    }

    /// Path of the data file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Runs `read` in a read transaction on the blocking pool.
    async fn read<T: Send + 'static>(
        &self,
        read: impl FnOnce(&ReadTransaction) -> Result<T, StoreError> + Send + 'static,
    ) -> Result<T, StoreError> {
        let db = self
            .db
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
            .ok_or(StoreError::Closed)?;
        tokio::task::spawn_blocking(move || {
            let txn = db
                .begin_read()
                .map_err(|e| StoreError::backend("starting a read transaction", e))?;
            read(&txn)
        })
        .await
        .map_err(|e| StoreError::backend("running a read", e))?
    }

    async fn submit(&self, batch: Batch) -> Result<(), StoreError> {
        batch.validate()?;
        if batch.is_empty() {
            // Nothing to write, but a closed store still says so.
            return match self
                .queue
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .as_ref()
            {
                Some(_) => Ok(()),
                None => Err(StoreError::Closed),
            };
        }
        self.ask_writer(|reply| Job::Batch(Pending { batch, reply }))
            .await
    }

    /// Queues `job` for the writer and waits for its answer.
    async fn ask_writer<T>(
        &self,
        job: impl FnOnce(oneshot::Sender<Result<T, StoreError>>) -> Job,
    ) -> Result<T, StoreError> {
        let queue = self
            .queue
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
            .ok_or(StoreError::Closed)?;
        let (reply, answer) = oneshot::channel();
        queue
            .send(job(reply))
            .await
            .map_err(|_| StoreError::Closed)?;
        drop(queue);
        // The writer drops the reply sender only if it dies, and then nothing was acknowledged.
        answer.await.map_err(|_| StoreError::Closed)?
    }
}

/// Opens a read-only view of `table`, or `None` if no batch ever wrote to it.
fn open_read(txn: &ReadTransaction, table: Table) -> Result<Option<ReadOnlyRedbTable>, StoreError> {
    match txn.open_table(definition(table)) {
        Ok(t) => Ok(Some(t)),
        Err(TableError::TableDoesNotExist(_)) => Ok(None),
        Err(e) => Err(StoreError::backend("opening a table", e)),
    }
}

#[async_trait::async_trait]
impl Store for RedbStore {
    async fn get(&self, table: Table, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
        check_key(key)?;
        let key = key.to_vec();
        self.read(move |txn| {
            let Some(rows) = open_read(txn, table)? else {
                return Ok(None);
            };
            let value = rows
                .get(key.as_slice())
                .map_err(|e| StoreError::backend("reading", e))?;
            Ok(value.map(|v| v.value().to_vec()))
        })
        .await
    }

    async fn scan(
        &self,
        table: Table,
        prefix: &[u8],
        start_after: Option<&[u8]>,
        limit: usize,
    ) -> Result<Vec<(Vec<u8>, Vec<u8>)>, StoreError> {
        check_key(prefix)?;
        if let Some(after) = start_after {
            check_key(after)?;
        }
        let Some(ScanRange { lower, upper }) = scan_range(prefix, start_after) else {
            return Ok(Vec::new());
        };
        if limit == 0 {
            return Ok(Vec::new());
        }
        let lower = lower.map(<[u8]>::to_vec);
        self.read(move |txn| {
            let Some(rows) = open_read(txn, table)? else {
                return Ok(Vec::new());
            };
            let bounds = (
                lower.as_ref().map(Vec::as_slice),
                upper.as_ref().map(Vec::as_slice),
            );
            let range = rows
                .range::<&[u8]>(bounds)
                .map_err(|e| StoreError::backend("scanning", e))?;
            let mut out = Vec::new();
            for entry in range.take(limit) {
                let (k, v) = entry.map_err(|e| StoreError::backend("scanning", e))?;
                out.push((k.value().to_vec(), v.value().to_vec()));
            }
            Ok(out)
        })
        .await
    }

    async fn commit(&self, batch: Batch) -> Result<(), StoreError> {
        self.counters.count_commit(self.submit(batch).await)
    }

    async fn snapshot(&self) -> Result<Vec<crate::SnapshotEntry>, StoreError> {
        self.read(|txn| {
            let backend = |e: redb::Error| StoreError::backend("reading a snapshot", e);
            let mut names: Vec<String> = txn
                .list_tables()
                .map_err(|e| backend(e.into()))?
                .map(|t| t.name().to_owned())
                .filter(|n| n != INTERNAL.name())
                .collect();
            names.sort();
            let mut out = Vec::new();
            for name in names {
                let def: TableDefinition<'_, &[u8], &[u8]> = TableDefinition::new(&name);
                let rows = txn.open_table(def).map_err(|e| backend(e.into()))?;
                for entry in rows.iter().map_err(|e| backend(e.into()))? {
                    let (k, v) = entry.map_err(|e| backend(e.into()))?;
                    out.push((name.clone(), k.value().to_vec(), v.value().to_vec()));
                }
            }
            Ok(out)
        })
        .await
    }

    fn stats(&self) -> StoreStats {
        self.counters.snapshot()
    }

    async fn compact(&self) -> Result<(), StoreError> {
        self.ask_writer(Job::Compact).await
    }

    async fn arm_witness(&self, key: Arc<dyn WitnessKey>) -> Result<Option<Armed>, StoreError> {
        self.ask_writer(|reply| Job::Arm(key, reply))
            .await
            .map(Some)
    }

    fn witness(&self) -> Option<Witness> {
        let keeping = self.witness.lock().unwrap_or_else(PoisonError::into_inner);
        keeping.armed.as_ref().map(|(_, w)| *w)
    }

    async fn close(&self) -> Result<(), StoreError> {
        // Commits already holding a sender still get served: the writer stops only once every
        // sender is gone and the queue is empty.
        drop(
            self.queue
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .take(),
        );
        let writer = self
            .writer
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        if let Some(writer) = writer {
            let joined = tokio::task::spawn_blocking(move || writer.join())
                .await
                .map_err(|e| StoreError::backend("stopping the writer", e))?;
            if joined.is_err() {
                // The panic itself was already reported by the panic hook.
                tracing::error!(path = %self.path.display(), "the store writer had stopped on a panic");
            }
        }
        let db = self
            .db
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        let Some(mut db) = db else {
            return Ok(());
        };
        // Reads in flight hold a clone for one short read transaction; wait them out so the file
        // is released when this returns.
        let db = loop {
            match Arc::try_unwrap(db) {
                Ok(db) => break db,
                Err(shared) => {
                    db = shared;
                    tokio::time::sleep(Duration::from_millis(2)).await;
                }
            }
        };
        tokio::task::spawn_blocking(move || db.close())
            .await
            .map_err(|e| StoreError::backend("closing the data file", e))?
            .map_err(|e| StoreError::backend("closing the data file", e))
    }
}

/// The writer thread: takes groups of queued batches and commits each group in one
/// transaction; a compaction waits for the batches queued before it.
fn run_writer(
    slot: &Slot,
    path: &Path,
    mut queue: mpsc::Receiver<Job>,
    counters: &Counters,
    witness: &WitnessSlot,
) {
    let mut group = Vec::with_capacity(MAX_GROUP_BATCHES);
    let mut held: Option<Job> = None;
    loop {
        let Some(job) = held.take().or_else(|| queue.blocking_recv()) else {
            return;
        };
        let first = match job {
            Job::Compact(reply) => {
                let _ = reply.send(compact(slot, path));
                continue;
            }
            Job::Arm(key, reply) => {
                let db = slot.read().unwrap_or_else(PoisonError::into_inner).clone();
                let armed = db
                    .ok_or(StoreError::Closed)
                    .and_then(|db| arm(&db, key, witness));
                let _ = reply.send(armed);
                continue;
            }
            Job::Batch(first) => first,
        };
        let mut bytes = first.batch.size_bytes();
        group.push(first);
        while group.len() < MAX_GROUP_BATCHES && bytes < MAX_GROUP_BYTES {
            match queue.try_recv() {
                Ok(Job::Batch(next)) => {
                    bytes += next.batch.size_bytes();
                    group.push(next);
                }
                Ok(other) => {
                    held = Some(other);
                    break;
                }
                Err(_) => break,
            }
        }
        let db = slot.read().unwrap_or_else(PoisonError::into_inner).clone();
        let keeping = witness
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .armed
            .clone();
        let result = match &db {
            Some(db) => commit_group(db, &group, keeping.as_ref()),
            None => Err(StoreError::Closed),
        };
        drop(db);
        match result {
            Ok((outcomes, synced, next)) => {
                if synced {
                    Counters::add(&counters.transactions, 1);
                }
                if let (Some(next), Some((_, current))) = (
                    next,
                    witness
                        .lock()
                        .unwrap_or_else(PoisonError::into_inner)
                        .armed
                        .as_mut(),
                ) {
                    *current = next;
                }
                for (pending, outcome) in group.drain(..).zip(outcomes) {
                    // A caller that gave up is not an error; its batch is applied regardless.
                    let _ = pending.reply.send(outcome);
                }
            }
            Err(error) => {
                tracing::error!(
                    error = &error as &dyn std::error::Error,
                    batches = group.len(),
                    "group commit failed; no batch of the group was applied"
                );
                for pending in group.drain(..) {
                    let _ = pending.reply.send(Err(error.clone()));
                }
            }
        }
    }
}

/// Opens (or creates) the data file.
fn open_database(path: &Path) -> Result<Database, StoreError> {
    Builder::new()
        .set_cache_size(CACHE_BYTES)
        // A plain open trusts the file and may panic on damage done outside redb; the check
        // turns that into an error, and costs one read of a small file.
        .set_check_integrity_on_open(true)
        .create(path)
        .map_err(|e| open_error(path, e))
}

/// Where a compaction builds the new file, next to the data file.
fn compaction_path(path: &Path) -> PathBuf {
    path.with_extension("redb.compacting")
}

fn remove_if_present(path: &Path) -> Result<(), StoreError> {
    match fs::remove_file(path) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(StoreError::io(path, e)),
        _ => Ok(()),
    }
}

/// Compacts with exclusive access: new reads wait on the slot's lock meanwhile, and reads in
/// flight (one short transaction each) are waited out first.
///
/// redb's own `Database::compact` moves pages but leaves freed pages' old bytes in the file,
/// so this copies every table into a fresh file, makes it durable, renames it over the data
/// file and then overwrites the old file's bytes with zeros through a handle kept open, so no
/// file in the directory, and no block the old file held on a filesystem that overwrites in
/// place, keeps what was overwritten or deleted. A crash before the rename leaves the old file
/// in force (the unfinished copy is removed on the next open); after it, the new one.
fn compact(slot: &Slot, path: &Path) -> Result<(), StoreError> {
    let mut guard = slot.write().unwrap_or_else(PoisonError::into_inner);
    let Some(mut shared) = guard.take() else {
        return Err(StoreError::Closed);
    };
    let db = loop {
        match Arc::try_unwrap(shared) {
            Ok(db) => break db,
            Err(again) => {
                shared = again;
                std::thread::sleep(Duration::from_millis(1));
            }
        }
    };
    let copy = compaction_path(path);
    let copied = copy_into(&db, &copy);
    let old = File::options().write(true).open(path);
    // The data file's lock is released here; nothing else can take it meanwhile, since this
    // process holds the directory (the caller's store is still open).
    drop(db);
    let swapped = copied.and_then(|()| {
        fs::rename(&copy, path).map_err(|e| StoreError::io(path, e))?;
        sync_dir(path.parent().unwrap_or(Path::new(".")))
    });
    if swapped.is_ok()
        && let Ok(old) = old
    {
        // Best effort: the new file is already in force and complete.
        if let Err(e) = zero_file(&old) {
            tracing::warn!(error = %e, "could not overwrite the replaced data file");
        }
    }
    if swapped.is_err() {
        let _ = fs::remove_file(&copy);
    }
    let reopened = open_database(path);
    match reopened {
        Ok(db) => {
            *guard = Some(Arc::new(db));
            swapped
        }
        Err(e) => Err(e),
    }
}

/// Copies every table of `db` into a new file at `to`, durably.
fn copy_into(db: &Database, to: &Path) -> Result<(), StoreError> {
    let backend = |e: redb::Error| StoreError::backend("compacting", e);
    remove_if_present(to)?;
    // Created 0600 before redb opens it, as the data file is.
    OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(to)
        .map_err(|e| StoreError::io(to, e))?;
    let target = Database::builder()
        .create(to)
        .map_err(|e| backend(e.into()))?;
    let read = db.begin_read().map_err(|e| backend(e.into()))?;
    let mut write = target.begin_write().map_err(|e| backend(e.into()))?;
    write
        .set_durability(Durability::Immediate)
        .map_err(|e| backend(e.into()))?;
    for handle in read.list_tables().map_err(|e| backend(e.into()))? {
        let def: TableDefinition<'_, &[u8], &[u8]> = TableDefinition::new(handle.name());
        let from = read.open_table(def).map_err(|e| backend(e.into()))?;
        let mut into = write.open_table(def).map_err(|e| backend(e.into()))?;
        for entry in from.iter().map_err(|e| backend(e.into()))? {
            let (k, v) = entry.map_err(|e| backend(e.into()))?;
            into.insert(k.value(), v.value())
                .map_err(|e| backend(e.into()))?;
        }
    }
    write.commit().map_err(|e| backend(e.into()))?;
    drop(read);
    drop(target);
    File::open(to)
        .and_then(|f| f.sync_all())
        .map_err(|e| StoreError::io(to, e))
}

/// Overwrites the whole of `file` with zeros and syncs it.
fn zero_file(file: &File) -> std::io::Result<()> {
    use std::io::{Seek, Write};
    let len = file.metadata()?.len();
    let mut f = file;
    f.seek(std::io::SeekFrom::Start(0))?;
    let zeros = vec![0u8; 64 * 1024];
    let mut left = len;
    while left > 0 {
        let n = usize::try_from(left.min(zeros.len() as u64)).unwrap_or(zeros.len());
        f.write_all(&zeros[..n])?;
        left -= n as u64;
    }
    f.sync_all()
}

/// Each batch's outcome, whether a transaction was committed (a group of only conflicts
/// commits nothing), and the witness it stored, if armed.
type GroupResult = (Vec<Result<(), StoreError>>, bool, Option<Witness>);

/// Applies `group` in one durable transaction, and, when `armed`, the next witness with it.
fn commit_group(
    db: &Database,
    group: &[Pending],
    armed: Option<&(Arc<dyn WitnessKey>, Witness)>,
) -> Result<GroupResult, StoreError> {
    let mut txn = db
        .begin_write()
        .map_err(|e| StoreError::backend("starting a write transaction", e))?;
    txn.set_durability(Durability::Immediate)
        .map_err(|e| StoreError::backend("starting a write transaction", e))?;
    // Two-phase commit keeps a crash during fsync from ever exposing a partly written commit;
    // group commit pays its second sync once per group.
    txn.set_two_phase_commit(true);

    let mut outcomes = Vec::with_capacity(group.len());
    let mut changed = false;
    // Worked on a copy: if the transaction fails, the witness stays as it was.
    let mut digest = armed.map(|(key, w)| (key.as_ref(), w.digest));
    {
        let mut tables = HashMap::new();
        for pending in group {
            let outcome = apply_batch(&txn, &mut tables, &pending.batch, digest.as_mut())?;
            changed |= outcome.is_ok() && !pending.batch.ops.is_empty();
            outcomes.push(outcome);
        }
    }
    if !changed {
        txn.abort()
            .map_err(|e| StoreError::backend("ending a write transaction", e))?;
        return Ok((outcomes, false, None));
    }
    let next = match (armed, digest) {
        (Some((_, current)), Some((key, digest))) => {
            let next = Witness::tagged(key, current.generation.saturating_add(1), digest);
            txn.open_table(INTERNAL)
                .map_err(|e| StoreError::backend("opening the store's own table", e))?
                .insert(WITNESS_KEY, next.encode().as_slice())
                .map_err(|e| StoreError::backend("writing the witness", e))?;
            Some(next)
        }
        _ => None,
    };
    txn.commit()
        .map_err(|e| StoreError::backend("committing", e))?;
    Ok((outcomes, true, next))
}

/// Reads the stored witness and the digest of every entry, and starts keeping the witness
/// under `key` from there: the stored generation (0 if none) and the digest actually found.
fn arm(db: &Database, key: Arc<dyn WitnessKey>, slot: &WitnessSlot) -> Result<Armed, StoreError> {
    let backend = |e: redb::Error| StoreError::backend("reading the store for its witness", e);
    let txn = db.begin_read().map_err(|e| backend(e.into()))?;
    let raw = match txn.open_table(INTERNAL) {
        Ok(internal) => internal
            .get(WITNESS_KEY)
            .map_err(|e| backend(e.into()))?
            .map(|v| v.value().to_vec()),
        Err(TableError::TableDoesNotExist(_)) => None,
        Err(e) => return Err(backend(e.into())),
    };
    let stored = raw.as_deref().and_then(Witness::decode);
    let mut contents = Digest::EMPTY;
    for handle in txn.list_tables().map_err(|e| backend(e.into()))? {
        if handle.name() == INTERNAL.name() {
            continue;
        }
        let def: TableDefinition<'_, &[u8], &[u8]> = TableDefinition::new(handle.name());
        let rows = txn.open_table(def).map_err(|e| backend(e.into()))?;
        for entry in rows.iter().map_err(|e| backend(e.into()))? {
            let (k, v) = entry.map_err(|e| backend(e.into()))?;
            contents.add(key.entry_hash(handle.name(), k.value(), v.value()));
        }
    }
    let generation = stored.map_or(0, |w| w.generation);
    let current = Witness::tagged(key.as_ref(), generation, contents);
    slot.lock().unwrap_or_else(PoisonError::into_inner).armed = Some((key, current));
    Ok(Armed {
        stored,
        malformed: raw.is_some() && stored.is_none(),
        contents,
    })
}

/// Applies one batch inside the group's transaction, or answers which condition failed. An
/// `Err` is a backend failure that dooms the whole group (the batch may be half applied).
/// With `digest`, every entry it replaces, removes or adds is accounted in it.
fn apply_batch<'txn>(
    txn: &'txn WriteTransaction,
    tables: &mut HashMap<Table, RedbTable<'txn>>,
    batch: &Batch,
    mut digest: Option<&mut (&dyn WitnessKey, Digest)>,
) -> Result<Result<(), StoreError>, StoreError> {
    for (index, condition) in batch.conditions.iter().enumerate() {
        let rows = open_write(txn, tables, condition.table())?;
        let current = rows
            .get(condition.key())
            .map_err(|e| StoreError::backend("checking a condition", e))?;
        if !condition.holds(current.as_ref().map(|v| v.value())) {
            return Ok(Err(StoreError::Conflict { condition: index }));
        }
    }
    for op in &batch.ops {
        match op {
            Op::Put { table, key, value } => {
                let old = open_write(txn, tables, *table)?
                    .insert(key.as_slice(), value.as_slice())
                    .map_err(|e| StoreError::backend("writing", e))?;
                if let Some((witness, digest)) = digest.as_deref_mut() {
                    if let Some(old) = old {
                        digest.sub(witness.entry_hash(table.name(), key, old.value()));
                    }
                    digest.add(witness.entry_hash(table.name(), key, value));
                }
            }
            Op::Delete { table, key } => {
                let old = open_write(txn, tables, *table)?
                    .remove(key.as_slice())
                    .map_err(|e| StoreError::backend("deleting", e))?;
                if let (Some((witness, digest)), Some(old)) = (digest.as_deref_mut(), old) {
                    digest.sub(witness.entry_hash(table.name(), key, old.value()));
                }
            }
        }
    }
    Ok(Ok(()))
}

/// The group's open handle on `table`; redb allows one per table per transaction.
fn open_write<'t, 'txn>(
    txn: &'txn WriteTransaction,
    tables: &'t mut HashMap<Table, RedbTable<'txn>>,
    table: Table,
) -> Result<&'t mut RedbTable<'txn>, StoreError> {
    Ok(match tables.entry(table) {
        Entry::Occupied(open) => open.into_mut(),
        Entry::Vacant(slot) => slot.insert(
            txn.open_table(definition(table))
                .map_err(|e| StoreError::backend("opening a table", e))?,
        ),
    })
}

fn open_error(path: &Path, error: DatabaseError) -> StoreError {
    match error {
        DatabaseError::DatabaseAlreadyOpen => StoreError::InUse {
            path: path.to_path_buf(),
        },
        other => StoreError::backend("opening the data file", other),
    }
}

/// Reads the format stamp, stamps a new file, migrates an older one, refuses a newer one.
fn check_format(db: &Database, path: &Path) -> Result<(), StoreError> {
    let backend = |e: redb::Error| StoreError::backend("checking the format version", e);
    let mut txn = db.begin_write().map_err(|e| backend(e.into()))?;
    txn.set_durability(Durability::Immediate)
        .map_err(|e| backend(e.into()))?;
    txn.set_two_phase_commit(true);

    let found = {
        let internal = txn.open_table(INTERNAL).map_err(|e| backend(e.into()))?;
        let stamp = internal.get(FORMAT_KEY).map_err(|e| backend(e.into()))?;
        stamp.map(|v| v.value().to_vec())
    };
    let corrupt = |reason| StoreError::Corrupt {
        path: path.to_path_buf(),
        reason,
    };
    match found {
        None => {
            // A store is stamped in the transaction that initializes it, so any other table
            // without a stamp means the file was written by something else.
            let foreign = txn
                .list_tables()
                .map_err(|e| backend(e.into()))?
                .any(|t| t.name() != INTERNAL.name())
                || txn
                    .list_multimap_tables()
                    .map_err(|e| backend(e.into()))?
                    .next()
                    .is_some();
            if foreign {
                return Err(corrupt("it holds data but no format version"));
            }
        }
        Some(stamp) => {
            let stamp: [u8; 4] = stamp
                .try_into()
                .map_err(|_| corrupt("its format version record is malformed"))?;
            let found = u32::from_be_bytes(stamp);
            if found > FORMAT_VERSION {
                return Err(StoreError::FormatTooNew {
                    found,
                    supported: FORMAT_VERSION,
                });
            }
            if found == FORMAT_VERSION {
                // Nothing to write; don't spend a sync on it.
                return txn.abort().map_err(|e| backend(e.into()));
            }
            migrate(&txn, found, path)?;
        }
    }
    txn.open_table(INTERNAL)
        .map_err(|e| backend(e.into()))?
        .insert(FORMAT_KEY, FORMAT_VERSION.to_be_bytes().as_slice())
        .map_err(|e| backend(e.into()))?;
    txn.commit().map_err(|e| backend(e.into()))
}

/// Upgrades a store of format `from` (older than [`FORMAT_VERSION`]) inside the opening
/// transaction, so a crash mid-migration leaves the old format intact.
///
/// Format 1 is the first, so no step exists yet. Format N+1 adds a step from N to N+1 here, and
/// the steps run in order up to [`FORMAT_VERSION`].
fn migrate(_txn: &WriteTransaction, from: u32, path: &Path) -> Result<(), StoreError> {
    // Nothing can reach here yet: 0 is not a format, and 1 is current.
    let _ = from;
    Err(StoreError::Corrupt {
        path: path.to_path_buf(),
        reason: "its format version is older than any this build knows",
    })
}

/// Creates the data directory (0700) or checks the permissions of an existing one.
fn prepare_dir(dir: &Path) -> Result<(), StoreError> {
    match fs::metadata(dir) {
        Ok(meta) if meta.is_dir() => check_mode(dir, meta.permissions().mode()),
        Ok(_) => Err(StoreError::NotADirectory {
            path: dir.to_path_buf(),
        }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(dir)
                .map_err(|e| StoreError::io(dir, e))?;
            // The umask may have narrowed 0700; make it exact.
            fs::set_permissions(dir, fs::Permissions::from_mode(0o700))
                .map_err(|e| StoreError::io(dir, e))?;
            if let Some(parent) = dir.parent() {
                let parent = if parent.as_os_str().is_empty() {
                    Path::new(".")
                } else {
                    parent
                };
                sync_dir(parent)?;
            }
            Ok(())
        }
        Err(e) => Err(StoreError::io(dir, e)),
    }
}

/// Creates the data file (0600) or checks the permissions of an existing one.
fn prepare_file(dir: &Path, path: &Path) -> Result<(), StoreError> {
    match OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
    {
        Ok(file) => {
            file.set_permissions(fs::Permissions::from_mode(0o600))
                .map_err(|e| StoreError::io(path, e))?;
            file.sync_all().map_err(|e| StoreError::io(path, e))?;
            // Make the new directory entry itself durable, not only the file's contents.
            sync_dir(dir)
        }
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
            let meta = fs::metadata(path).map_err(|e| StoreError::io(path, e))?;
            if !meta.is_file() {
                return Err(StoreError::Corrupt {
                    path: path.to_path_buf(),
                    reason: "it is not a regular file",
                });
            }
            check_mode(path, meta.permissions().mode())
        }
        Err(e) => Err(StoreError::io(path, e)),
    }
}

fn sync_dir(dir: &Path) -> Result<(), StoreError> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| StoreError::io(dir, e))
}

fn check_mode(path: &Path, mode: u32) -> Result<(), StoreError> {
    let mode = mode & 0o7777;
    if mode & 0o002 != 0 {
        return Err(StoreError::InsecurePermissions {
            path: path.to_path_buf(),
            mode,
        });
    }
    if mode & 0o077 != 0 {
        tracing::warn!(
            path = %path.display(),
            mode = format_args!("{mode:o}"),
            "the data store is accessible to other users; 0700 (directory) and 0600 (file) are recommended"
        );
    }
    Ok(())
}
