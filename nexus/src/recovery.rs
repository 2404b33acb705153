//! Root-key recovery from keepers, and keeping keepers supplied.
//!
//! While sealed, every interval Nexus asks each keeper for its share, and as soon as it holds
//! `threshold` shares of one epoch it rebuilds the root key, checks it against the init record
//! (the wrapped data key must open) and opens. The record's current split is tried first, then
//! the previous one a rotation or rekey keeps until the keepers confirm the new shares (see
//! `rotation.rs`). While open, it checks each keeper and re-sends the share (derived
//! deterministically from the root key) to any keeper that has none or a wrong one, so a
//! restarted keeper is whole again within one interval.

use std::future::Future;
use std::sync::Arc;

use http::{Method, StatusCode};
use spike_core::api::ShareBody;
use spike_core::crypto::Share;

use crate::keys::{InitRecord, OpenKeys};
use crate::rotation;
use crate::state::{Nexus, Seal};

/// Runs until `stop` completes.
pub(crate) async fn run(nexus: Arc<Nexus>, stop: impl Future<Output = ()>) {
    tokio::pin!(stop);
    loop {
        tick(&nexus).await;
        tokio::select! {
            () = &mut stop => return,
            () = tokio::time::sleep(nexus.config.keeper_interval) => {}
        }
    }
}

async fn tick(nexus: &Nexus) {
    enum Phase {
        Uninitialized,
        Sealed,
        Open(Arc<crate::state::Opened>),
    }
    // Decide with the lock held, act after it is released (it is not held across awaits).
    let phase = match &*nexus.seal.read().unwrap_or_else(|p| p.into_inner()) {
        Seal::Uninitialized => Phase::Uninitialized,
        Seal::Sealed(_) => Phase::Sealed,
        Seal::Open(o) => Phase::Open(o.clone()),
    };
    match phase {
        // Another process may have initialized a shared store. Under the open lock, so this
        // cannot race this process's own bootstrap (and turn an open Nexus back to sealed).
        Phase::Uninitialized => {
            let _guard = nexus.open_lock.lock().await;
            let still = matches!(
                *nexus.seal.read().unwrap_or_else(|p| p.into_inner()),
                Seal::Uninitialized
            );
            if still {
                nexus.load_init_state().await;
            }
        }
        Phase::Sealed => {
            crate::breakglass::PendingRestore::drop_expired(nexus, std::time::Instant::now());
            try_unseal(nexus).await;
        }
        Phase::Open(o) => replenish(nexus, &o.keys).await,
    }
}

async fn try_unseal(nexus: &Nexus) {
    if nexus.init_record().is_none() {
        return;
    }
    let _guard = nexus.open_lock.lock().await;
    if !nexus.is_sealed() {
        return;
    }
    let (raw, record) = match nexus.read_init().await {
        Ok(r) => r,
        Err(e) => {
            nexus.set_seal(Seal::Sealed(format!("init record: {}", e.0.message)));
            return;
        }
    };
    let fetched = fetch_shares(nexus).await;
    match unseal_with(nexus, &raw, &record, &fetched).await {
        Ok(()) => {}
        Err(reason) => {
            if nexus.seal_reason().as_deref() != Some(reason.as_str()) {
                tracing::warn!(
                    %reason,
                    "sealed: not enough keepers hold shares that rebuild the root key"
                );
            }
            nexus.set_seal(Seal::Sealed(reason));
        }
    }
}

/// Rebuilds the root key from `fetched` keeper shares and opens: the current split first, then
/// the previous one. `raw` and `record` are the init record as stored.
pub(crate) async fn unseal_with(
    nexus: &Nexus,
    raw: &[u8],
    record: &InitRecord,
    fetched: &[(u8, ShareBody)],
) -> Result<(), String> {
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
        let params = split.params().map_err(|e| format!("init record: {e}"))?;
        match split.rebuild(&params, &shares) {
            Ok((root, data)) => {
                let acked = rotation::open_rebuilt(nexus, raw, record, via_previous, root, data)
                    .await
                    .map_err(|e| format!("cannot open: {e}"))?;
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
        "keeper shares do not rebuild the root key (wrong or corrupted shares)".into()
    } else {
        format!(
            "waiting for keeper shares: {} of {} needed are reachable",
            of_epoch(record.epoch()).len(),
            record.threshold()
        )
    })
}

/// Asks every keeper for its share; returns `(keeper index, share)` for those that hold one.
pub(crate) async fn fetch_shares(nexus: &Nexus) -> Vec<(u8, ShareBody)> {
    let calls = nexus.keepers.iter().enumerate().map(|(i, k)| async move {
        let index = u8::try_from(i + 1).ok()?;
        match k.send(Method::GET, "/v1/share", None).await {
            Ok(r) if r.status == StatusCode::OK => {
                let body: ShareBody = serde_json::from_slice(&r.body).ok()?;
                (body.share.index() == index).then_some((index, body))
            }
            Ok(r) if r.status == StatusCode::NOT_FOUND => None,
            Ok(r) => {
                tracing::debug!(keeper = index, status = %r.status, "keeper answered unexpectedly");
                None
            }
            Err(e) => {
                tracing::debug!(keeper = index, error = %e, "keeper unreachable");
                None
            }
        }
    });
    futures::future::join_all(calls)
        .await
        .into_iter()
        .flatten()
        .collect()
}

/// Sends share `i` (of split `epoch`) to keeper `i`; returns how many acknowledged.
pub(crate) async fn push_shares(nexus: &Nexus, epoch: u32, shares: &[Share]) -> u8 {
    let calls = nexus
        .keepers
        .iter()
        .zip(shares)
        .map(|(k, share)| async move { push_one(k, share, epoch).await.then_some(()) });
    let acked = futures::future::join_all(calls)
        .await
        .into_iter()
        .flatten()
        .count();
    u8::try_from(acked).unwrap_or(u8::MAX)
}

async fn push_one(keeper: &spike_runtime::net::MtlsClient, share: &Share, epoch: u32) -> bool {
    let body = ShareBody {
        share: share.clone(),
        epoch,
    };
    let Ok(bytes) = serde_json::to_vec(&body) else {
        return false;
    };
    match keeper.send(Method::PUT, "/v1/share", Some(bytes)).await {
        Ok(r) if r.status.is_success() => true,
        Ok(r) => {
            tracing::warn!(keeper = %keeper.addr(), status = %r.status, "keeper refused its share");
            false
        }
        Err(e) => {
            tracing::debug!(keeper = %keeper.addr(), error = %e, "keeper unreachable");
            false
        }
    }
}

/// Re-sends shares to keepers that lost theirs (or hold an older split's), and finishes a
/// pending rotation or rekey once `threshold` keepers hold the new shares.
async fn replenish(nexus: &Nexus, keys: &OpenKeys) {
    // Asked without the lock: a slow keeper must not hold up a rotation.
    let held = fetch_shares(nexus).await;
    // Pushed with it, from the split in force now, so a rotation cannot interleave (a round
    // that overlaps one just skips).
    let Ok(_guard) = nexus.open_lock.try_lock() else {
        return;
    };
    let Ok((epoch, shares)) = keys.keeper_shares() else {
        return;
    };
    let checks = nexus.keepers.iter().zip(&shares).map(|(keeper, share)| {
        let holds = held
            .iter()
            .any(|(j, body)| *j == share.index() && body.epoch == epoch && body.share == *share);
        async move {
            if holds {
                return true;
            }
            let sent = push_one(keeper, share, epoch).await;
            if sent {
                tracing::info!(keeper = share.index(), epoch, "sent share to keeper");
            }
            sent
        }
    });
    let confirmed = futures::future::join_all(checks)
        .await
        .into_iter()
        .filter(|ok| *ok)
        .count();
    let confirmed = u8::try_from(confirmed).unwrap_or(u8::MAX);
    if nexus.init_record().is_some_and(|r| r.previous().is_some())
        && let Err(e) = rotation::finish_if_confirmed(nexus, epoch, confirmed).await
    {
        tracing::warn!(error = %e.0.message, "cannot finish the pending root-key change yet");
    }
}
