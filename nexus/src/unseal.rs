//! Unsealing: creating the root key (bootstrap), rebuilding it from shares, checking it
//! against the init record, checking that the store is not older than the keepers remember
//! (`freshness`), opening, proving the keepers' shares rebuild it (verify), and
//! finishing a root-key change a crash interrupted (the state machine is in the `rotation`
//! module). Routes, the recovery timer, rotation and break-glass restore call in here; this
//! module calls only the state, the keys, the keepers and `freshness`.

use spike_core::api::{InitRequest, InitResponse, ShareBody, VerifyResponse};
use spike_core::crypto::{CryptoError, KeyRing, RootKey, Share, ShareParams};
use spike_core::error::ErrorCode;

use crate::error::{AppError, AppResult};
use crate::fault;
use crate::freshness::{self, Fresh, StaleStore};
use crate::keys::{InitRecord, OpenKeys};
use crate::state::{InitStoreError, Nexus, OpenError};

/// Why Nexus did not open. Its text is the sealed reason `/readyz` shows.
#[derive(Debug, thiserror::Error)]
pub(crate) enum UnsealError {
    /// Fewer than `threshold` shares of the current split (and of the previous one) answer.
    #[error("waiting for keeper shares: {holding} of {needed} needed")]
    Waiting {
        /// Shares of the current split that answered.
        holding: usize,
        /// The current split's threshold.
        needed: u8,
    },
    /// Enough shares answered, but they rebuild no key the init record accepts.
    #[error("keeper shares do not rebuild the root key (wrong or corrupted shares)")]
    WrongShares,
    /// The init record's split parameters are unusable.
    #[error("init record: {0}")]
    Record(#[source] CryptoError),
    /// Making or using a key failed (randomness, wrapping, share derivation).
    #[error("key handling: {0}")]
    Key(#[source] CryptoError),
    /// The redone change could not be recorded.
    #[error("cannot redo the interrupted change: {0}")]
    Redo(#[source] InitStoreError),
    /// The key is right, but the store is older than the keepers remember, or was edited.
    #[error("{0}")]
    Stale(#[from] StaleStore),
    /// The key is right, but Nexus could not open with it.
    #[error("cannot open: {0}")]
    Open(#[from] OpenError),
}

/// Rebuilds the root key from `fetched` keeper shares and opens: the current split first, then
/// the previous one. `raw` and `record` are the init record as stored.
pub(crate) async fn unseal_with(
    nexus: &Nexus,
    raw: &[u8],
    record: &InitRecord,
    fetched: &[(u8, ShareBody)],
) -> Result<(), UnsealError> {
    let of_epoch = |epoch: u32| -> Vec<Share> {
        fetched
            .iter()
            .filter(|(_, body)| body.epoch == epoch)
            .map(|(_, body)| body.share.clone())
            .collect()
    };
    let splits =
        std::iter::once((record.current(), false)).chain(record.previous().map(|p| (p, true)));
    let mut rebuilt_none = false;
    for (split, via_previous) in splits {
        let shares = of_epoch(split.epoch());
        if shares.len() < usize::from(split.threshold()) {
            continue;
        }
        let params = split.params().map_err(UnsealError::Record)?;
        match split.rebuild(&params, &shares) {
            Ok((root, ring)) => {
                let acked = open_rebuilt(nexus, raw, record, via_previous, root, ring).await?;
                tracing::info!(
                    shares = shares.len(),
                    via_previous,
                    keepers_acknowledged = acked,
                    "root key rebuilt from keeper shares"
                );
                return Ok(());
            }
            Err(e) => {
                tracing::error!(error = %e, epoch = split.epoch(), "keeper shares do not rebuild the root key");
                rebuilt_none = true;
            }
        }
    }
    Err(if rebuilt_none {
        UnsealError::WrongShares
    } else {
        UnsealError::Waiting {
            holding: of_epoch(record.epoch()).len(),
            needed: record.threshold(),
        }
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
    ring: KeyRing,
) -> Result<u8, UnsealError> {
    // Before anything is written with this key: the redo below commits.
    log_freshness(freshness::check(nexus, ring.audit_key()).await?);
    let current = record.current();
    let params = current.params().map_err(UnsealError::Record)?;
    let keep = record.previous().map(|p| p.epoch());
    let keys = if !via_previous {
        OpenKeys::from_parts(root, ring, params)
    } else {
        // An interrupted change: its new root key reached too few keepers and is gone. Redo
        // it with a fresh one rather than fall back, so the operator's change holds.
        let epoch = record.next_epoch().map_err(UnsealError::Record)?;
        let params = ShareParams::new(current.shares(), current.threshold(), epoch)
            .map_err(UnsealError::Record)?;
        let fresh = RootKey::generate().map_err(UnsealError::Key)?;
        // The previous split holds the ring the lost change made, so nothing written since is
        // lost with it.
        let redone = record
            .redo_change(params, &fresh, &ring)
            .map_err(UnsealError::Key)?;
        nexus
            .commit_init(raw, &redone)
            .await
            .map_err(UnsealError::Redo)?;
        tracing::warn!(
            epoch,
            "an interrupted root-key rotation or rekey was redone with a fresh root key"
        );
        fault::step("redo:committed").await;
        OpenKeys::from_parts(fresh, ring, params)
    };
    let (epoch, shares) = keys.keeper_shares().map_err(UnsealError::Key)?;
    nexus.open_with(keys).await?;
    freshness::publish(nexus).await;
    let step = if via_previous { "redo" } else { "unseal" };
    let acked = nexus.keepers().push(step, epoch, &shares, keep).await;
    match finish_if_confirmed(nexus, epoch, acked).await {
        Ok(true) if keep.is_some() => fault::step(&format!("{step}:finished")).await,
        Ok(_) => {}
        Err(e) => tracing::warn!(error = %e, "cannot drop the previous split yet"),
    }
    Ok(acked)
}

fn log_freshness(fresh: Fresh) {
    match fresh {
        Fresh::NoFiles => {}
        Fresh::Checked {
            generation,
            remembered,
        } => tracing::info!(
            generation,
            ?remembered,
            "the store is at least as new as the keepers remember"
        ),
        Fresh::Accepted { generation } => {
            tracing::warn!(
                generation,
                "opened a store the freshness check refused, as configured"
            );
        }
    }
}

/// Drops the previous split once `confirmed` keepers (at least the threshold) hold shares of
/// the current split `epoch`. Returns true when no previous split is left. Call with the open
/// lock held.
pub(crate) async fn finish_if_confirmed(
    nexus: &Nexus,
    epoch: u32,
    confirmed: u8,
) -> Result<bool, InitStoreError> {
    let (raw, record) = nexus.read_init().await?;
    if record.previous().is_none() {
        return Ok(true);
    }
    if record.epoch() != epoch || confirmed < record.threshold() {
        return Ok(false);
    }
    nexus.commit_init(&raw, &record.finished()).await?;
    // The previous split held the key ring under the old root key: rewrite the file so no
    // free page keeps it.
    nexus.compact_if_pending().await?;
    tracing::info!(
        epoch,
        confirmed,
        "keepers hold the new shares; the previous split is dropped"
    );
    Ok(true)
}

/// `POST /v1/bootstrap/init`.
pub(crate) async fn initialize(nexus: &Nexus, req: InitRequest) -> AppResult<InitResponse> {
    let n = nexus.keepers().len();
    if usize::from(req.shares) != n {
        return Err(AppError::new(
            ErrorCode::BadRequest,
            format!("shares must equal the number of keepers Nexus is configured with ({n})"),
        ));
    }
    if req.threshold == 0 || req.threshold > req.shares {
        return Err(AppError::new(
            ErrorCode::BadRequest,
            "threshold must be between 1 and shares",
        ));
    }
    let _guard = nexus.open_lock().lock().await;
    if nexus.init_record().is_some() {
        return Ok(InitResponse {
            initialized: false,
            keepers_acknowledged: 0,
        });
    }
    let (keys, record) = OpenKeys::create(req.shares, req.threshold)
        .map_err(|e| AppError::internal("key generation", e))?;
    // A new key: keepers can remember nothing this deployment tagged, so this only arms the
    // witness before the first write.
    freshness::check(nexus, keys.audit_key())
        .await
        .map_err(|e| AppError::new(ErrorCode::Unavailable, e.to_string()))?;
    if !nexus.create_init(&record).await? {
        // Someone else initialized first; their key stands.
        return Ok(InitResponse {
            initialized: false,
            keepers_acknowledged: 0,
        });
    }
    let (epoch, shares) = keys
        .keeper_shares()
        .map_err(|e| AppError::internal("share derivation", e))?;
    nexus
        .open_with(keys)
        .await
        .map_err(|e| AppError::internal("open after init", &e))?;
    let acked = nexus.keepers().push("init", epoch, &shares, None).await;
    freshness::publish(nexus).await;
    tracing::info!(
        acked,
        shares = req.shares,
        "initialized; root key split to keepers"
    );
    Ok(InitResponse {
        initialized: true,
        keepers_acknowledged: acked,
    })
}

/// `POST /v1/bootstrap/verify`: proves the keepers' shares rebuild the key in memory.
pub(crate) async fn verify(nexus: &Nexus) -> AppResult<VerifyResponse> {
    let opened = nexus.opened()?;
    let params = opened.keys.params();
    let mut valid = 0u8;
    let mut collected = Vec::new();
    for (i, held) in nexus.keepers().fetch(false).await {
        if let Some(body) = held.current
            && opened.keys.is_current_share(i, &body.share)
        {
            valid += 1;
            collected.push(body.share);
        }
    }
    let verified = valid >= params.threshold && opened.keys.rebuilds_from(&collected);
    if !verified {
        return Err(AppError::new(
            ErrorCode::Unavailable,
            format!(
                "only {valid} keepers hold a valid share; {} are needed",
                params.threshold
            ),
        ));
    }
    Ok(VerifyResponse {
        verified,
        keepers_with_share: valid,
        threshold: params.threshold,
    })
}
