//! Background re-encryption after a revoking rotation, and destroying the older data keys once
//! nothing uses them.
//!
//! A rotation makes a new data-key generation current at once (new writes use it); this task
//! then moves every stored record to it: each secret's values and metadata (under the path's
//! lock, with a compare-and-set on the metadata) and each policy (under the policy write lock,
//! with a compare-and-set). It works page by page with a pause between pages, so the rate is
//! bounded and requests keep being served. Nothing becomes unreadable meanwhile: the older
//! generations stay in the ring and the key id in each record picks the one that opens it.
//!
//! Passes: a pass walks every record and moves the ones not yet under the current generation.
//! Only a pass that moved nothing (a *clean* pass, which normally is the second) proves no
//! record uses an older generation, catching any write that was prepared under the older
//! generation just before the rotation and landed after the first pass went by. Then, under
//! the open lock, the older generations are retired from the ring in the init record (their
//! data keys destroyed, their cipher subkeys kept for cipher-API ciphertexts workloads hold),
//! and the store is compacted so no page of the file keeps an older wrapped ring (a compaction
//! a crash cut off is redone at the next step: the init record change leaves a mark until it). While a
//! rotation still waits for its keepers, the previous split keeps the ring too; retiring waits
//! until the change is finished.
//!
//! Progress survives a crash: the position in the current pass is kept in the store (`meta`
//! table, key `reencrypt`) after every page, and the next open resumes from it. The stored
//! cursor is not authenticated, so it is trusted only to skip work: a resumed pass never
//! counts as clean, so retiring always rests on a clean pass this process made from the start.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use spike_core::api::ReencryptionStatus;
use spike_core::crypto::{CryptoError, KeyId};
use spike_store::{Batch, StoreError, Table};
use tokio::sync::Notify;

use crate::error::AppError;
use crate::fault;
use crate::policies::POLICIES;
use crate::secrets::SECRETS;
use crate::state::{InitStoreError, META, Nexus, Opened};
use crate::tokens::TOKENS;

/// Where the cursor is kept (in `meta`).
const CURSOR_KEY: &[u8] = b"reencrypt";
/// Records checked per page.
const PAGE: usize = 32;
/// Pause between pages: with [`PAGE`] this bounds the rate at about 640 records a second.
const PAUSE: Duration = Duration::from_millis(50);

/// Why a page of re-encryption failed (it is retried after a pause).
#[derive(Debug, thiserror::Error)]
pub(crate) enum ReencryptError {
    /// Reading or writing the store failed.
    #[error("store: {0}")]
    Store(#[from] StoreError),
    /// A record could not be moved.
    #[error("{}", .0.0.message)]
    Record(AppError),
    /// The init record could not be read or replaced.
    #[error(transparent)]
    Init(#[from] InitStoreError),
    /// Retiring the older generations failed.
    #[error("key handling: {0}")]
    Key(#[from] CryptoError),
}

/// The tables re-encryption walks, in order (new tables go last, so a stored cursor's table
/// index keeps its meaning).
const TABLES: [Table; 3] = [SECRETS, POLICIES, TOKENS];

/// The position in the current pass, as stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Cursor {
    /// The generation records are moved to; a newer one restarts the pass.
    generation: KeyId,
    /// Index into [`TABLES`].
    table: usize,
    /// Hex of the last key done in that table.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    after: Option<String>,
    /// True once this pass moved a record (or resumed from a stored cursor).
    dirty: bool,
    /// Records moved since the generation became current.
    done: u64,
}

impl Cursor {
    fn start(generation: KeyId, done: u64) -> Self {
        Self {
            generation,
            table: 0,
            after: None,
            dirty: false,
            done,
        }
    }
}

/// What re-encryption is doing, for `spike status` and `/metrics`.
#[derive(Debug, Default)]
struct Progress {
    status: Option<ReencryptionStatus>,
    /// Records checked in the current pass, and the records there are (counted at its start).
    checked: u64,
    total: u64,
}

/// The re-encryption state a Nexus holds: a wake-up for the task and its progress.
#[derive(Debug, Default)]
pub(crate) struct Reencryption {
    wake: Notify,
    progress: Mutex<Progress>,
    /// Records moved since this process started (the metric's counter).
    moved: std::sync::atomic::AtomicU64,
}

impl Reencryption {
    /// Starts work now (a rotation made a new generation current).
    pub(crate) fn wake(&self) {
        self.wake.notify_one();
    }

    /// Where re-encryption stands, if Nexus is open.
    pub(crate) fn status(&self) -> Option<ReencryptionStatus> {
        self.progress().status.clone()
    }

    fn progress(&self) -> std::sync::MutexGuard<'_, Progress> {
        self.progress.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn set(&self, update: impl FnOnce(&mut Progress)) {
        let mut p = self.progress();
        update(&mut p);
        let remaining = p.total.saturating_sub(p.checked);
        if let Some(s) = p.status.as_mut() {
            s.remaining = if s.older_generations == 0 {
                0
            } else {
                remaining
            };
        }
    }

    /// The Prometheus lines.
    pub(crate) fn render(&self) -> String {
        let (remaining, live) = self
            .status()
            .map_or((0, 0), |s| (s.remaining, s.older_generations));
        let moved = self.moved.load(std::sync::atomic::Ordering::Relaxed);
        format!(
            "# HELP spike_reencrypt_remaining Records still to check before the older data \
             keys can be destroyed.\n# TYPE spike_reencrypt_remaining gauge\n\
             spike_reencrypt_remaining {remaining}\n\
             # HELP spike_reencrypt_done_total Records moved to the current data key.\n\
             # TYPE spike_reencrypt_done_total counter\nspike_reencrypt_done_total {moved}\n\
             # HELP spike_data_key_older_generations Older data-key generations still held.\n\
             # TYPE spike_data_key_older_generations gauge\n\
             spike_data_key_older_generations {live}\n"
        )
    }
}

/// Runs until `stop` completes.
pub(crate) async fn run(nexus: Arc<Nexus>, stop: impl std::future::Future<Output = ()>) {
    tokio::pin!(stop);
    // Held across pages; `None` means "load from the store" (after start or an error).
    let mut cursor: Option<Cursor> = None;
    loop {
        let busy = match nexus.opened() {
            Ok(opened) => match step(&nexus, &opened, &mut cursor).await {
                Ok(busy) => busy,
                Err(e) => {
                    tracing::warn!(error = %e, "re-encryption page failed; retrying");
                    cursor = None;
                    true
                }
            },
            Err(_) => {
                cursor = None;
                false
            }
        };
        let pause = if busy {
            PAUSE
        } else {
            nexus.config().keeper_interval
        };
        tokio::select! {
            () = &mut stop => return,
            () = nexus.reencryption().wake.notified() => {}
            () = tokio::time::sleep(pause) => {}
        }
    }
}

/// Does one page of work; true while more is to do.
async fn step(
    nexus: &Nexus,
    opened: &Opened,
    cursor: &mut Option<Cursor>,
) -> Result<bool, ReencryptError> {
    let keys = &opened.keys;
    let state = nexus.reencryption();
    // Redoes a compaction a crash cut off (after a finished rotation or retired keys).
    nexus.compact_if_pending().await?;
    let generation = keys.current_generation();
    let older = keys.older_generations();
    if older == 0 {
        *cursor = None;
        state.set(|p| {
            p.status = Some(status(
                generation,
                0,
                p.status.as_ref().map_or(0, |s| s.done),
            ));
        });
        return Ok(false);
    }
    let c = match cursor.take() {
        Some(c) if c.generation == generation => c,
        _ => start_pass(nexus, generation, older).await?,
    };
    let Some(&table) = TABLES.get(c.table) else {
        // Past the last table: the pass is over.
        return finish_pass(nexus, opened, c, cursor).await;
    };
    let after = c.after.as_deref().and_then(|h| hex::decode(h).ok());
    let page = nexus
        .store()
        .scan(table, b"", after.as_deref(), PAGE)
        .await?;
    let mut next = c;
    for (key, _) in &page {
        let moved = if table == SECRETS {
            nexus.secrets().reseal(keys, key).await
        } else if table == POLICIES {
            nexus.policies().retag(keys, key).await
        } else {
            nexus.tokens().retag(keys, key).await
        }
        .map_err(ReencryptError::Record)?;
        if moved {
            next.dirty = true;
            next.done += 1;
            state
                .moved
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        }
    }
    match page.last() {
        Some((last, _)) if page.len() == PAGE => next.after = Some(hex::encode(last)),
        _ => {
            next.table += 1;
            next.after = None;
        }
    }
    save(nexus, &next).await?;
    state.set(|p| {
        p.checked += page.len() as u64;
        p.status = Some(status(generation, older, next.done));
    });
    // Crash tests stop here: records moved, the cursor durable, older keys still held.
    fault::step("reencrypt:page").await;
    *cursor = Some(next);
    Ok(true)
}

/// The cursor to continue from: the stored one if it is for `generation` (then the pass is
/// not trusted to be clean), else a fresh pass. Counts the records the pass will check.
async fn start_pass(
    nexus: &Nexus,
    generation: KeyId,
    older: usize,
) -> Result<Cursor, ReencryptError> {
    let stored = nexus
        .store()
        .get(META, CURSOR_KEY)
        .await?
        .and_then(|raw| serde_json::from_slice::<Cursor>(&raw).ok());
    let cursor = match stored {
        Some(c) if c.generation == generation => Cursor { dirty: true, ..c },
        _ => Cursor::start(generation, 0),
    };
    let total = count(nexus).await?;
    let done = cursor.done;
    nexus.reencryption().set(|p| {
        p.total = total;
        p.checked = 0;
        p.status = Some(status(generation, older, done));
    });
    tracing::info!(%generation, records = total, "re-encryption pass started");
    Ok(cursor)
}

/// The records of every table re-encryption walks.
async fn count(nexus: &Nexus) -> Result<u64, StoreError> {
    let mut total = 0u64;
    for table in TABLES {
        let mut after: Option<Vec<u8>> = None;
        loop {
            let page = nexus
                .store()
                .scan(table, b"", after.as_deref(), 1024)
                .await?;
            total += page.len() as u64;
            match page.last() {
                Some((k, _)) if page.len() == 1024 => after = Some(k.clone()),
                _ => break,
            }
        }
    }
    Ok(total)
}

/// A pass is over: a dirty one starts another; a clean one retires the older generations.
async fn finish_pass(
    nexus: &Nexus,
    opened: &Opened,
    done: Cursor,
    cursor: &mut Option<Cursor>,
) -> Result<bool, ReencryptError> {
    if done.dirty {
        let next = Cursor::start(done.generation, done.done);
        save(nexus, &next).await?;
        let total = count(nexus).await?;
        nexus.reencryption().set(|p| {
            p.total = total;
            p.checked = 0;
        });
        *cursor = Some(next);
        return Ok(true);
    }
    let guard = nexus.open_lock().lock().await;
    let keys = &opened.keys;
    if keys.current_generation() != done.generation {
        // A newer rotation got in first: start over for it.
        return Ok(true);
    }
    let (raw, record) = nexus.read_init().await?;
    if record.previous().is_some() {
        // The previous split holds the ring too; retire once the change is finished.
        nexus.reencryption().set(|p| {
            if let Some(s) = p.status.as_mut() {
                s.waiting_for = Some("the pending rotation to reach its keepers".into());
            }
        });
        *cursor = Some(done);
        return Ok(false);
    }
    let (next, ring) = keys.retire_older(&record)?;
    let retired = keys.older_generations();
    nexus.commit_init(&raw, &next).await?;
    keys.install_ring(ring);
    drop(guard);
    let mut clear = Batch::new();
    clear.delete(META, CURSOR_KEY.to_vec());
    nexus.store().commit(clear).await?;
    fault::step("reencrypt:retired").await;
    // The older wrapped rings are no longer in the live records; compacting rewrites the
    // file so no free page keeps a copy an old root key could open.
    nexus.compact_if_pending().await?;
    tracing::info!(
        generation = %done.generation,
        retired,
        moved = done.done,
        "re-encryption finished; the older data keys are destroyed"
    );
    let moved = done.done;
    nexus.reencryption().set(|p| {
        p.status = Some(status(done.generation, 0, moved));
    });
    Ok(false)
}

async fn save(nexus: &Nexus, cursor: &Cursor) -> Result<(), StoreError> {
    let mut batch = Batch::new();
    // Serializing a plain struct cannot fail.
    batch.put(
        META,
        CURSOR_KEY.to_vec(),
        serde_json::to_vec(cursor).unwrap_or_default(),
    );
    nexus.store().commit(batch).await
}

fn status(generation: KeyId, older: usize, done: u64) -> ReencryptionStatus {
    ReencryptionStatus {
        generation: generation.to_string(),
        older_generations: u32::try_from(older).unwrap_or(u32::MAX),
        remaining: 0,
        done,
        waiting_for: None,
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use spike_core::path::SecretPath;
    use spike_core::secret::SecretMap;

    use super::*;
    use crate::fixtures::{keeper_answers, open_nexus, restart};
    use crate::keys::stamped_id;
    use crate::rotation::{Change, change};
    use crate::secrets::VERSIONS;
    use crate::unseal::finish_if_confirmed;

    fn value(v: &str) -> SecretMap {
        SecretMap::from_json_bytes(format!(r#"{{"k":"{v}"}}"#).as_bytes()).unwrap()
    }

    async fn put(n: &Nexus, p: &str, v: &str) {
        let keys = &n.opened().unwrap().keys;
        n.secrets()
            .put(
                keys,
                &SecretPath::parse(p).unwrap(),
                &value(v),
                None,
                None,
                crate::secrets::Sight::Read,
            )
            .await
            .unwrap();
    }

    async fn read(n: &Nexus, p: &str) -> SecretMap {
        let keys = &n.opened().unwrap().keys;
        n.secrets()
            .get(
                keys,
                &SecretPath::parse(p).unwrap(),
                None,
                &crate::fixtures::reader(),
                crate::clock::unix_now(),
            )
            .await
            .unwrap()
            .data
    }

    /// Rotates and lets the keepers confirm (the fixtures have none).
    async fn rotate(n: &Nexus) {
        let r = change(n, Change::Rotate).await.unwrap();
        let _guard = n.open_lock().lock().await;
        assert!(finish_if_confirmed(n, r.epoch, 3).await.unwrap());
    }

    /// Every stored value and tag, with the generation it is under.
    async fn generations_in_store(n: &Nexus) -> Vec<Option<KeyId>> {
        let mut out = Vec::new();
        for table in [SECRETS, VERSIONS, POLICIES] {
            for (_, v) in n.store().scan(table, b"", None, 10_000).await.unwrap() {
                out.push(stamped_id(&v));
            }
        }
        out
    }

    async fn run_until_idle(n: &Nexus, cursor: &mut Option<Cursor>) {
        let opened = n.opened().unwrap();
        for _ in 0..10_000 {
            if !step(n, &opened, cursor).await.unwrap() {
                return;
            }
        }
        panic!("re-encryption did not finish");
    }

    /// Token bindings are found by a keyed hash Nexus cannot recompute without the reference,
    /// under a key the ring keeps for the store's life: a token minted before a rotation still
    /// resolves once its binding moved to the new generation and the old one is destroyed, and
    /// after a restart on the rotated keys.
    #[tokio::test]
    async fn tokens_resolve_after_a_rotation_retires_the_old_key_and_after_a_restart() {
        use crate::tokens::tests::{mint, resolve_as, setup_on};
        use axum::http::StatusCode;
        let dir = tempfile::tempdir().unwrap();
        let (store, n) = open_nexus(dir.path()).await;
        let router = crate::routes::api_router(n.clone());
        setup_on(&router).await;
        let (_, v) = mint(&router, serde_json::json!({"maxUses": 3})).await;
        let token = v["token"].as_str().unwrap().to_owned();
        let gw = "spiffe://spike.test/spike/gateway/gw";
        let before = n.opened().unwrap().keys.current_generation();
        rotate(&n).await;
        let mut cursor = None;
        run_until_idle(&n, &mut cursor).await;
        assert_eq!(
            n.opened().unwrap().keys.older_generations(),
            0,
            "old key destroyed"
        );
        let (_, raw) = n
            .store()
            .scan(TOKENS, b"", None, 1)
            .await
            .unwrap()
            .remove(0);
        assert_ne!(stamped_id(&raw), Some(before), "the binding moved");
        let (s, got) = resolve_as(&router, gw, &token, serde_json::json!({})).await;
        assert_eq!(s, StatusCode::OK, "{got}");
        assert_eq!(got["value"], "gsk_real_credential_here");
        // A restart on the same store, unsealed by the keepers' new shares.
        let answers = keeper_answers(&n.opened().unwrap().keys);
        let again = crate::fixtures::restart_cleanly(&n, &store, &answers).await;
        let router = crate::routes::api_router(again);
        let (s, got) = resolve_as(&router, gw, &token, serde_json::json!({})).await;
        assert_eq!(s, StatusCode::OK, "{got}");
        // Its uses were counted across both: the third is the last.
        let (s, _) = resolve_as(&router, gw, &token, serde_json::json!({})).await;
        assert_eq!(s, StatusCode::OK);
        let (_, spent) = resolve_as(&router, gw, &token, serde_json::json!({})).await;
        assert_eq!(spent["error"]["code"], "uses_exhausted");
    }

    #[tokio::test]
    async fn after_rotation_every_record_moves_to_the_new_key_and_the_old_one_is_destroyed() {
        let dir = tempfile::tempdir().unwrap();
        let (_store, n) = open_nexus(dir.path()).await;
        for i in 0..(PAGE * 2 + 5) {
            put(&n, &format!("app/s{i:03}"), &format!("v{i}")).await;
        }
        put(&n, "app/s000", "second").await;
        let old = n.opened().unwrap().keys.current_generation();
        rotate(&n).await;
        let keys = &n.opened().unwrap().keys;
        let new = keys.current_generation();
        assert_ne!(old, new);
        assert_eq!(keys.older_generations(), 1);
        // Written after the rotation: under the new key at once.
        put(&n, "app/after", "later").await;
        let mut cursor = None;
        run_until_idle(&n, &mut cursor).await;
        assert_eq!(keys.older_generations(), 0);
        assert!(
            generations_in_store(&n)
                .await
                .iter()
                .all(|g| *g == Some(new))
        );
        let (_, record) = n.read_init().await.unwrap();
        assert!(record.previous().is_none());
        assert_eq!(read(&n, "app/s000").await, value("second"));
        assert_eq!(read(&n, "app/s041").await, value("v41"));
        assert_eq!(read(&n, "app/after").await, value("later"));
        let s = n.reencryption().status().unwrap();
        assert_eq!((s.older_generations, s.remaining), (0, 0));
        assert_eq!(s.done, (PAGE * 2 + 5) as u64);
        assert!(
            n.reencryption()
                .render()
                .contains("spike_reencrypt_remaining 0")
        );
        assert!(n.store().get(META, CURSOR_KEY).await.unwrap().is_none());
        assert!(n.store().get(META, COMPACT_MARK).await.unwrap().is_none());
    }

    /// The name `state` keeps the compaction mark under.
    const COMPACT_MARK: &[u8] = b"compact-pending";

    #[tokio::test]
    async fn a_compaction_cut_off_by_a_crash_is_redone() {
        let dir = tempfile::tempdir().unwrap();
        let (store, n1) = open_nexus(dir.path()).await;
        let answers = keeper_answers(&n1.opened().unwrap().keys);
        // An init-record change whose compaction never ran (the process died after the commit).
        let (raw, record) = n1.read_init().await.unwrap();
        n1.commit_init(&raw, &record).await.unwrap();
        assert!(store.get(META, COMPACT_MARK).await.unwrap().is_some());
        drop(n1);
        let (n2, opened) = restart(&store, dir.path(), &answers).await;
        opened.unwrap();
        let mut cursor = None;
        run_until_idle(&n2, &mut cursor).await;
        assert!(store.get(META, COMPACT_MARK).await.unwrap().is_none());
    }

    #[tokio::test]
    async fn re_encryption_cut_off_by_a_crash_resumes_and_nothing_is_unreadable() {
        let dir = tempfile::tempdir().unwrap();
        let (store, n1) = open_nexus(dir.path()).await;
        for i in 0..(PAGE * 3) {
            put(&n1, &format!("app/s{i:03}"), &format!("v{i}")).await;
        }
        rotate(&n1).await;
        let answers = keeper_answers(&n1.opened().unwrap().keys);
        // One page, then "kill -9".
        let mut cursor = None;
        assert!(step(&n1, &n1.opened().unwrap(), &mut cursor).await.unwrap());
        let stored: Cursor =
            serde_json::from_slice(&store.get(META, CURSOR_KEY).await.unwrap().unwrap()).unwrap();
        assert_eq!(stored.done, PAGE as u64);
        drop(n1);
        let (n2, opened) = restart(&store, dir.path(), &answers).await;
        opened.unwrap();
        assert_eq!(n2.opened().unwrap().keys.older_generations(), 1);
        for i in 0..(PAGE * 3) {
            assert_eq!(
                read(&n2, &format!("app/s{i:03}")).await,
                value(&format!("v{i}"))
            );
        }
        let mut cursor = None;
        run_until_idle(&n2, &mut cursor).await;
        assert_eq!(n2.opened().unwrap().keys.older_generations(), 0);
        // Resumed, not redone: the first page was not counted twice.
        assert_eq!(n2.reencryption().status().unwrap().done, (PAGE * 3) as u64);
        for i in 0..(PAGE * 3) {
            assert_eq!(
                read(&n2, &format!("app/s{i:03}")).await,
                value(&format!("v{i}"))
            );
        }
    }
}
