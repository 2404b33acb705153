//! Root-key rotation and rekey, and finishing them after a crash.
//!
//! Rotation makes a new root key and re-wraps the data key under it; nothing else is
//! re-encrypted, because every working key derives from the data key. Rekey deals a new keeper
//! split (new epoch and `shares`/`threshold`), and makes a new root key too: shares of an
//! unchanged root key cannot be revoked (any `threshold` of the old ones would still rebuild
//! it), so only a new key makes old keeper shares and old break-glass files useless. Secrets
//! stay readable throughout: reads use only the data key, which never changes.
//!
//! Keepers hold one share each and are updated one by one, so the init record keeps the old
//! split until the new one is safely dealt. With C the current split and P the previous one:
//!
//! ```text
//! stable  {C}     keepers hold C's shares
//! pending {C, P}  C is committed; each keeper holds C's share, P's share, or nothing
//!
//! stable  --rotate/rekey-->  pending  one CAS commit of {C' = new epoch, the data key wrapped
//!                                     under the new root key; P = C}, then C's shares are
//!                                     pushed
//! pending --finish-->        stable   one CAS commit dropping P, once >= threshold keepers
//!                                     acknowledged C's shares; tried after the push and on
//!                                     every keeper check, so a change that found keepers down
//!                                     finishes when they come back
//! sealed: unseal tries C's shares first, then P's
//!   via C: open, push, finish
//!   via P: the change stopped before >= threshold keepers held C's shares, so C's root key
//!     is lost: redo the change with a fresh root key (same parameters as C): one CAS commit
//!     of {C'' (newer epoch), P}, open, push, finish
//! ```
//!
//! So a `kill -9` anywhere leaves a record Nexus recovers from with the keepers' shares: before
//! the first commit nothing changed; after it, P's shares still rebuild the old root key. P's
//! break-glass export also keeps working while pending. The limit: keepers hold one share each
//! and new shares replace old ones, so a crash part-way through the push can leave fewer than
//! `threshold` keepers on either split whenever `shares <= 2 * threshold - 2`, or after two
//! crashes in a row with spare keepers; then the break-glass export of P restores (see
//! docs/runbooks/root-key-rotation.md). Keepers keeping their previous share until the new
//! split is confirmed would close this.

use spike_core::api::KeyChangeResponse;
use spike_core::crypto::{DataKey, RootKey, ShareParams};
use spike_core::error::ErrorCode;

use crate::error::{AppError, AppResult};
use crate::keys::{InitRecord, OpenKeys};
use crate::recovery;
use crate::state::Nexus;

/// What to change. Both make a new root key (see the module docs).
#[derive(Debug, Clone, Copy)]
pub(crate) enum Change {
    /// A new root key, same split parameters.
    Rotate,
    /// A new root key and new split parameters.
    Rekey { shares: u8, threshold: u8 },
}

/// `POST /v1/operator/rotate` and `POST /v1/operator/rekey`.
pub(crate) async fn change(nexus: &Nexus, change: Change) -> AppResult<KeyChangeResponse> {
    let opened = nexus.opened()?;
    let _guard = nexus.open_lock.lock().await;
    let (mut raw, mut record) = nexus.read_init().await?;
    if record.previous().is_some() {
        // An earlier change is still waiting for keepers: finish it first, or refuse.
        let (epoch, acked) = push_current(nexus, &opened.keys).await?;
        if !finish_if_confirmed(nexus, epoch, acked).await? {
            return Err(AppError::new(
                ErrorCode::Unavailable,
                format!(
                    "an earlier rotation or rekey is still waiting for keepers: {acked} of {} \
                     needed hold the new shares; bring keepers back and retry (nothing changed)",
                    record.threshold()
                ),
            ));
        }
        (raw, record) = nexus.read_init().await?;
    }
    let (shares, threshold) = match change {
        Change::Rotate => (record.current().shares(), record.threshold()),
        Change::Rekey { shares, threshold } => {
            let n = nexus.keepers.len();
            if usize::from(shares) != n {
                return Err(AppError::new(
                    ErrorCode::BadRequest,
                    format!(
                        "shares must equal the number of keepers Nexus is configured with ({n})"
                    ),
                ));
            }
            (shares, threshold)
        }
    };
    let epoch = record
        .next_epoch()
        .map_err(|e| AppError::new(ErrorCode::BadRequest, e.to_string()))?;
    let params = ShareParams::new(shares, threshold, epoch)
        .map_err(|e| AppError::new(ErrorCode::BadRequest, e.to_string()))?;
    let new_root = RootKey::generate().map_err(|e| AppError::internal("rng", e))?;
    let wrapped = opened
        .keys
        .wrap_data_key(&new_root)
        .map_err(|e| AppError::internal("wrap", e))?;
    let next = record.begin_change(params, &wrapped);
    nexus.commit_init(&raw, &next).await?;
    // Durable: from here a restart finds {C, P} and recovers with either split.
    opened.keys.install(new_root, params);
    let (epoch, acked) = push_current(nexus, &opened.keys).await?;
    let complete = finish_if_confirmed(nexus, epoch, acked)
        .await
        .unwrap_or_else(|e| {
            tracing::warn!(error = %e.0.message, "cannot drop the previous split yet");
            false
        });
    tracing::info!(
        rekey = matches!(change, Change::Rekey { .. }),
        epoch,
        keepers_acknowledged = acked,
        complete,
        "root key split changed"
    );
    Ok(KeyChangeResponse {
        new_root_key: true,
        epoch,
        shares,
        threshold,
        keepers_acknowledged: acked,
        complete,
        break_glass_invalidated: record.current().break_glass().is_some(),
    })
}

/// Opens with a root key rebuilt from keeper or break-glass shares of the record's current
/// split, or of its previous split (`via_previous`), finishing an interrupted change (see the
/// module docs). Call with the open lock held; `raw` and `record` are the init record as
/// stored. Returns how many keepers acknowledged their share.
pub(crate) async fn open_rebuilt(
    nexus: &Nexus,
    raw: &[u8],
    record: &InitRecord,
    via_previous: bool,
    root: RootKey,
    data: DataKey,
) -> Result<u8, String> {
    let current = record.current();
    let params = current.params().map_err(|e| format!("init record: {e}"))?;
    let keys = if !via_previous {
        OpenKeys::from_parts(root, data, params)
    } else {
        // An interrupted change: its new root key reached too few keepers and is gone. Redo
        // it with a fresh one rather than fall back, so the operator's change holds.
        let epoch = record.next_epoch().map_err(|e| e.to_string())?;
        let params = ShareParams::new(current.shares(), current.threshold(), epoch)
            .map_err(|e| e.to_string())?;
        let fresh = RootKey::generate().map_err(|e| e.to_string())?;
        let wrapped = fresh.wrap(&data).map_err(|e| e.to_string())?;
        nexus
            .commit_init(raw, &record.redo_change(params, &wrapped))
            .await
            .map_err(|e| format!("cannot redo the interrupted change: {}", e.0.message))?;
        tracing::warn!(
            epoch,
            "an interrupted root-key rotation or rekey was redone with a fresh root key"
        );
        OpenKeys::from_parts(fresh, data, params)
    };
    let (epoch, shares) = keys.keeper_shares().map_err(|e| e.to_string())?;
    nexus.open_with(keys).await?;
    let acked = recovery::push_shares(nexus, epoch, &shares).await;
    if let Err(e) = finish_if_confirmed(nexus, epoch, acked).await {
        tracing::warn!(error = %e.0.message, "cannot drop the previous split yet");
    }
    Ok(acked)
}

/// Pushes every keeper its share of the split in force; returns `(epoch, acknowledged)`.
async fn push_current(nexus: &Nexus, keys: &OpenKeys) -> AppResult<(u32, u8)> {
    let (epoch, shares) = keys
        .keeper_shares()
        .map_err(|e| AppError::internal("share derivation", e))?;
    Ok((epoch, recovery::push_shares(nexus, epoch, &shares).await))
}

/// Drops the previous split once `confirmed` keepers (at least the threshold) hold shares of
/// the current split `epoch`. Returns true when no previous split is left. Call with the open
/// lock held.
pub(crate) async fn finish_if_confirmed(
    nexus: &Nexus,
    epoch: u32,
    confirmed: u8,
) -> AppResult<bool> {
    let (raw, record) = nexus.read_init().await?;
    if record.previous().is_none() {
        return Ok(true);
    }
    if record.epoch() != epoch || confirmed < record.threshold() {
        return Ok(false);
    }
    nexus.commit_init(&raw, &record.finished()).await?;
    tracing::info!(
        epoch,
        confirmed,
        "keepers hold the new shares; the previous split is dropped"
    );
    Ok(true)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
pub(crate) mod tests {
    use std::path::Path;
    use std::sync::Arc;

    use spike_core::api::ShareBody;
    use spike_core::id::TrustDomain;
    use spike_runtime::svid::{Identity, SvidSource};
    use spike_store::{Batch, MemoryStore, Store};

    use super::*;
    use crate::config::NexusConfig;
    use crate::recovery::unseal_with;
    use crate::state::{INIT_KEY, META};

    pub(crate) const TD: &str = "spike.test";

    /// Nexus::new needs a source only for keeper handshakes, which never start: the keepers'
    /// port is closed, so every call fails at connect.
    struct NoSource(TrustDomain);

    impl SvidSource for NoSource {
        fn current(&self) -> Arc<Identity> {
            unreachable!("keeper connections are refused before any handshake")
        }
        fn trust_domain(&self) -> &TrustDomain {
            &self.0
        }
    }

    /// A Nexus on `store` with three unreachable keepers; tests play the keepers by hand.
    /// Each gets its own audit log, so several can be open at once (one is locked per writer).
    pub(crate) fn nexus_on(store: Arc<dyn Store>, dir: &Path) -> Arc<Nexus> {
        static N: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let td = TrustDomain::new(TD).unwrap();
        let keepers = vec!["127.0.0.1:1".to_owned(); 3];
        let config = NexusConfig::new(td.clone(), keepers, dir.join(format!("audit-{n}.log")));
        Arc::new(Nexus::new(config, Arc::new(NoSource(td)), store).unwrap())
    }

    /// What the keepers would answer: every share of the keys' current split.
    pub(crate) fn keeper_answers(keys: &OpenKeys) -> Vec<(u8, ShareBody)> {
        let (epoch, shares) = keys.keeper_shares().unwrap();
        shares
            .into_iter()
            .map(|share| (share.index(), ShareBody { share, epoch }))
            .collect()
    }

    /// A store initialized with a fresh 3/2 root key, and an open Nexus on it.
    pub(crate) async fn open_nexus(dir: &Path) -> (Arc<dyn Store>, Arc<Nexus>) {
        let store: Arc<dyn Store> = Arc::new(MemoryStore::new());
        let (keys, record) = OpenKeys::create(3, 2).unwrap();
        let mut batch = Batch::new();
        batch.put(META, INIT_KEY.to_vec(), record.encode());
        store.commit(batch).await.unwrap();
        let n = nexus_on(store.clone(), dir);
        n.load_init_state().await;
        n.open_with(keys).await.unwrap();
        (store, n)
    }

    /// Restarts "after kill -9": a new Nexus on the same store, unsealed with `answers`.
    pub(crate) async fn restart(
        store: &Arc<dyn Store>,
        dir: &Path,
        answers: &[(u8, ShareBody)],
    ) -> (Arc<Nexus>, Result<(), String>) {
        let n = nexus_on(store.clone(), dir);
        n.load_init_state().await;
        assert!(n.is_sealed());
        let (raw, record) = n.read_init().await.unwrap();
        let result = unseal_with(&n, &raw, &record, answers).await;
        (n, result)
    }

    #[tokio::test]
    async fn a_change_cut_off_from_its_keepers_survives_a_crash_and_is_redone() {
        let dir = tempfile::tempdir().unwrap();
        let (store, n1) = open_nexus(dir.path()).await;
        let keys = &n1.opened().unwrap().keys;
        let sealed = keys.seal_value("app/db", 1, 1, b"s3cret").unwrap();
        let old = keeper_answers(keys);

        // No keeper is reachable: the new split is committed, the old one kept.
        let r = change(&n1, Change::Rotate).await.unwrap();
        assert!(r.new_root_key && !r.complete);
        assert_eq!((r.epoch, r.keepers_acknowledged), (2, 0));
        let (raw, record) = n1.read_init().await.unwrap();
        assert_eq!(record.epoch(), 2);
        assert_eq!(record.previous().unwrap().epoch(), 1);
        let stranded = keeper_answers(&n1.opened().unwrap().keys);

        // Another change is refused until this one is finished; nothing changes.
        let e = change(
            &n1,
            Change::Rekey {
                shares: 3,
                threshold: 3,
            },
        )
        .await
        .unwrap_err();
        assert_eq!(e.code(), ErrorCode::Unavailable);
        assert!(e.0.message.contains("0 of 2"), "{}", e.0.message);
        assert_eq!(n1.read_init().await.unwrap().0, raw);

        // kill -9 now: the keepers still hold the old split, which opens; the lost rotation
        // is redone with a fresh root key (a newer epoch), keeping the old split until the
        // keepers confirm.
        let (n2, opened) = restart(&store, dir.path(), &old).await;
        opened.unwrap();
        let (_, record) = n2.read_init().await.unwrap();
        assert_eq!(record.epoch(), 3);
        assert_eq!(record.previous().unwrap().epoch(), 1);
        let keys = &n2.opened().unwrap().keys;
        assert_eq!(
            keys.open_value("app/db", 1, 1, &sealed)
                .unwrap()
                .expose_secret(),
            b"s3cret"
        );
        let fresh = keeper_answers(keys);

        // Shares of the lost epoch-2 key rebuild nothing the record knows.
        let (_, e) = restart(&store, dir.path(), &stranded).await;
        assert!(e.unwrap_err().contains("waiting for keeper shares"));

        // Keepers confirm: the old split is dropped, and only the new shares unseal.
        let _guard = n2.open_lock.lock().await;
        assert!(finish_if_confirmed(&n2, 3, 1).await.is_ok_and(|done| !done));
        assert!(finish_if_confirmed(&n2, 3, 2).await.unwrap());
        assert!(n2.read_init().await.unwrap().1.previous().is_none());
        let (_, e) = restart(&store, dir.path(), &old).await;
        assert!(e.is_err());
        let (n3, opened) = restart(&store, dir.path(), &fresh).await;
        opened.unwrap();
        assert!(!n3.is_sealed());
    }

    #[tokio::test]
    async fn rekey_checks_its_parameters_and_changes_nothing_when_refused() {
        let dir = tempfile::tempdir().unwrap();
        let (_store, n) = open_nexus(dir.path()).await;
        let (raw, _) = n.read_init().await.unwrap();
        for (shares, threshold, needle) in [
            (2, 2, "number of keepers"),
            (3, 4, "threshold cannot exceed shares"),
            (3, 1, "at least 2"),
            (3, 0, "at least 1"),
        ] {
            let e = change(&n, Change::Rekey { shares, threshold })
                .await
                .unwrap_err();
            assert_eq!(e.code(), ErrorCode::BadRequest);
            assert!(e.0.message.contains(needle), "{}", e.0.message);
            assert_eq!(n.read_init().await.unwrap().0, raw);
        }
        let r = change(
            &n,
            Change::Rekey {
                shares: 3,
                threshold: 3,
            },
        )
        .await
        .unwrap();
        assert_eq!((r.shares, r.threshold, r.epoch), (3, 3, 2));
        // The new split needs all three keepers now.
        let answers = keeper_answers(&n.opened().unwrap().keys);
        let _guard = n.open_lock.lock().await;
        assert!(!finish_if_confirmed(&n, 2, 2).await.unwrap());
        assert!(finish_if_confirmed(&n, 2, 3).await.unwrap());
        drop(_guard);
        let (_, e) = restart(&_store, dir.path(), &answers[..2]).await;
        assert!(e.unwrap_err().contains("2 of 3"));
        let (_, opened) = restart(&_store, dir.path(), &answers).await;
        opened.unwrap();
    }
}
