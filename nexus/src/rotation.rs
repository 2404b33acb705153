//! Root-key rotation and rekey, and finishing them after a crash.
//!
//! Rotation makes a new root key and a new data-key generation in the key ring; new writes use
//! the new generation at once and `reencrypt` moves stored records to it, then destroys the
//! older ones. Rekey deals a new keeper split (new epoch and `shares`/`threshold`), and does
//! the same: shares of an unchanged root key cannot be revoked (any `threshold` of the old ones
//! would still rebuild it), so only a new root key makes old keeper shares and old break-glass
//! files useless; and an old root key still opens every old copy of the ring (backups), so only
//! a new data key keeps later writes from it. Secrets stay readable throughout: the key id in
//! each record picks the generation that opens it, and no generation is destroyed while a
//! record uses it.
//!
//! Keepers are updated one by one, so the init record keeps the old split until the new one
//! is safely dealt, and so do the keepers: every push while a change is pending names the
//! previous split (`keep`), and a keeper keeps its share of that split next to the new one
//! until a push without `keep` after the change is confirmed. With C the current split and P
//! the previous one:
//!
//! ```text
//! stable  {C}     keepers hold C's shares
//! pending {C, P}  C is committed; each keeper holds C's share and P's, or P's, or nothing
//!
//! stable  --rotate/rekey-->  pending  one CAS commit of {C' = new epoch, the data key wrapped
//!                                     under the new root key; P = C}, then C's shares are
//!                                     pushed with keep = P
//! pending --finish-->        stable   one CAS commit dropping P, once >= threshold keepers
//!                                     acknowledged C's shares; tried after the push and on
//!                                     every keeper check, so a change that found keepers down
//!                                     finishes when they come back; the next keeper check
//!                                     pushes without keep, and keepers drop P's shares
//! sealed: unseal tries C's shares first, then P's (current or kept)
//!   via C: open, push (keep = P), finish
//!   via P: the change stopped before >= threshold keepers held C's shares, so C's root key
//!     is lost: redo the change with a fresh root key (same parameters as C): one CAS commit
//!     of {C'' (newer epoch), P}, open, push (keep = P), finish
//! ```
//!
//! So a `kill -9` anywhere, or several in a row, leaves a record Nexus recovers from with the
//! keepers' shares: before the first commit nothing changed; after it, every keeper that held
//! P's share still holds it until >= threshold keepers hold the new split and the record says
//! so. Only keepers losing their memory (a restart) during the change can take P below its
//! threshold; then P's break-glass export restores (see docs/runbooks/root-key-rotation.md).
//! The crash tests in e2e stop Nexus at each step through [`crate::fault`].

use spike_core::api::KeyChangeResponse;
use spike_core::crypto::{CryptoError, RootKey, ShareParams};

use crate::fault;
use crate::keys::OpenKeys;
use crate::state::{InitStoreError, Nexus};
use crate::unseal::finish_if_confirmed;

/// What to change. Both make a new root key (see the module docs).
#[derive(Debug, Clone, Copy)]
pub(crate) enum Change {
    /// A new root key, same split parameters.
    Rotate,
    /// A new root key and new split parameters.
    Rekey { shares: u8, threshold: u8 },
}

/// Why a rotation or rekey changed nothing.
#[derive(Debug, thiserror::Error)]
pub(crate) enum RotationError {
    /// Nexus is not open.
    #[error("{}", .0.message)]
    NotOpen(#[source] spike_core::error::ApiError),
    /// An earlier change still waits for keepers.
    #[error(
        "an earlier rotation or rekey is still waiting for keepers: {acked} of {needed} needed \
         hold the new shares; bring keepers back and retry (nothing changed)"
    )]
    Pending {
        /// Keepers that hold the pending split's shares.
        acked: u8,
        /// Its threshold.
        needed: u8,
    },
    /// A rekey's `shares` is not the number of configured keepers.
    #[error("shares must equal the number of keepers Nexus is configured with ({0})")]
    ShareCount(usize),
    /// The new split's parameters are invalid.
    #[error("{0}")]
    Params(#[source] CryptoError),
    /// Making the new root key or wrapping the data key failed.
    #[error("key handling: {0}")]
    Key(#[source] CryptoError),
    /// The init record could not be read or replaced.
    #[error(transparent)]
    Init(#[from] InitStoreError),
}

/// `POST /v1/operator/rotate` and `POST /v1/operator/rekey`.
pub(crate) async fn change(
    nexus: &Nexus,
    change: Change,
) -> Result<KeyChangeResponse, RotationError> {
    let opened = nexus.opened().map_err(|e| RotationError::NotOpen(e.0))?;
    let _guard = nexus.open_lock().lock().await;
    let (mut raw, mut record) = nexus.read_init().await?;
    if record.previous().is_some() {
        // An earlier change is still waiting for keepers: finish it first, or refuse.
        let keep = record.previous().map(|p| p.epoch());
        let (epoch, acked) = push_current(nexus, &opened.keys, "change", keep).await?;
        if !finish_if_confirmed(nexus, epoch, acked).await? {
            return Err(RotationError::Pending {
                acked,
                needed: record.threshold(),
            });
        }
        (raw, record) = nexus.read_init().await?;
    }
    let (shares, threshold) = match change {
        Change::Rotate => (record.current().shares(), record.threshold()),
        Change::Rekey { shares, threshold } => {
            let n = nexus.keepers().len();
            if usize::from(shares) != n {
                return Err(RotationError::ShareCount(n));
            }
            (shares, threshold)
        }
    };
    let epoch = record.next_epoch().map_err(RotationError::Params)?;
    let params = ShareParams::new(shares, threshold, epoch).map_err(RotationError::Params)?;
    let new_root = RootKey::generate().map_err(RotationError::Key)?;
    // A new data key generation too: an old root key rebuilt from old shares opens every copy
    // of the ring sealed under it (backups), so only a new data key keeps what is written from
    // now on, and what re-encryption moves, out of its reach.
    let ring = opened.keys.rotated_ring().map_err(RotationError::Key)?;
    let next = opened
        .keys
        .begin_change(&record, params, &new_root, &ring)
        .map_err(RotationError::Key)?;
    let generation = ring.current().key_id();
    nexus.commit_init(&raw, &next).await?;
    // Durable: from here a restart finds {C, P} and recovers with either split, and both
    // hold the new generation.
    fault::step("change:committed").await;
    opened.keys.install(new_root, params, ring);
    nexus.reencryption().wake();
    let keep = Some(record.epoch());
    let (epoch, acked) = push_current(nexus, &opened.keys, "change", keep).await?;
    let complete = finish_if_confirmed(nexus, epoch, acked)
        .await
        .unwrap_or_else(|e| {
            tracing::warn!(error = %e, "cannot drop the previous split yet");
            false
        });
    if complete {
        fault::step("change:finished").await;
    }
    tracing::info!(
        rekey = matches!(change, Change::Rekey { .. }),
        %generation,
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

/// Pushes every keeper its share of the split in force, keeping split `keep`; returns
/// `(epoch, acknowledged)`.
async fn push_current(
    nexus: &Nexus,
    keys: &OpenKeys,
    step: &str,
    keep: Option<u32>,
) -> Result<(u32, u8), RotationError> {
    let (epoch, shares) = keys.keeper_shares().map_err(RotationError::Key)?;
    Ok((
        epoch,
        nexus.keepers().push(step, epoch, &shares, keep).await,
    ))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use spike_core::error::ErrorCode;

    use super::*;
    use crate::error::AppError;
    use crate::fixtures::{keeper_answers, open_nexus, restart};

    #[tokio::test]
    async fn a_change_cut_off_from_its_keepers_survives_a_crash_and_is_redone() {
        let dir = tempfile::tempdir().unwrap();
        let (store, n1) = open_nexus(dir.path()).await;
        let keys = &n1.opened().unwrap().keys;
        let ciphertext = keys.encrypt_value("app/db", 1, 1, b"s3cret").unwrap();
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
        // As the operator sees it on the wire.
        let e = AppError::from(e);
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
            keys.decrypt_value("app/db", 1, 1, &ciphertext)
                .unwrap()
                .expose_secret(),
            b"s3cret"
        );
        let fresh = keeper_answers(keys);

        // Shares of the lost epoch-2 key rebuild nothing the record knows.
        let (_, e) = restart(&store, dir.path(), &stranded).await;
        assert!(e.unwrap_err().contains("waiting for keeper shares"));

        // Keepers confirm: the old split is dropped, and only the new shares unseal.
        let _guard = n2.open_lock().lock().await;
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
            let e = AppError::from(e);
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
        let _guard = n.open_lock().lock().await;
        assert!(!finish_if_confirmed(&n, 2, 2).await.unwrap());
        assert!(finish_if_confirmed(&n, 2, 3).await.unwrap());
        drop(_guard);
        let (_, e) = restart(&_store, dir.path(), &answers[..2]).await;
        assert!(e.unwrap_err().contains("2 of 3"));
        let (_, opened) = restart(&_store, dir.path(), &answers).await;
        opened.unwrap();
    }
}
