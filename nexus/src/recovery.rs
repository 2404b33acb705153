//! Root-key recovery from keepers, and keeping keepers supplied.
//!
//! While sealed, every interval Nexus asks each keeper for its share, and as soon as it holds
//! `threshold` shares of the current epoch it rebuilds the root key, checks it against the
//! init record (the wrapped data key must open) and opens. While open, it checks each keeper
//! and re-sends the share (derived deterministically from the root key) to any keeper that
//! has none or a wrong one, so a restarted keeper is whole again within one interval.

use std::future::Future;
use std::sync::Arc;

use http::{Method, StatusCode};
use spike_core::api::ShareBody;
use spike_core::crypto::Share;

use crate::keys::OpenKeys;
use crate::state::{Nexus, Seal, share_body};

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
        // Another process may have initialized a shared store.
        Phase::Uninitialized => nexus.load_init_state().await,
        Phase::Sealed => try_unseal(nexus).await,
        Phase::Open(o) => replenish(nexus, &o.keys).await,
    }
}

async fn try_unseal(nexus: &Nexus) {
    let Some(record) = nexus.init_record() else {
        return;
    };
    let _guard = nexus.open_lock.lock().await;
    if !nexus.is_sealed() {
        return;
    }
    let shares: Vec<Share> = fetch_shares(nexus)
        .await
        .into_iter()
        .filter(|(_, body)| body.epoch == record.epoch())
        .map(|(_, body)| body.share)
        .collect();
    let need = record.threshold();
    if shares.len() < usize::from(need) {
        let reason = format!(
            "waiting for keeper shares: {} of {} needed are reachable",
            shares.len(),
            need
        );
        if nexus.seal_reason().as_deref() != Some(reason.as_str()) {
            tracing::warn!(
                have = shares.len(),
                need,
                "sealed: not enough keepers hold shares"
            );
        }
        nexus.set_seal(Seal::Sealed(reason));
        return;
    }
    match OpenKeys::recover(&record, &shares) {
        Ok(keys) => {
            if let Err(e) = nexus.open_with(keys).await {
                tracing::error!(error = %e, "root key rebuilt but Nexus cannot open");
                nexus.set_seal(Seal::Sealed(format!("cannot open: {e}")));
            } else {
                tracing::info!(shares = shares.len(), "root key rebuilt from keeper shares");
            }
        }
        Err(e) => {
            tracing::error!(error = %e, "keeper shares do not rebuild the root key");
            nexus.set_seal(Seal::Sealed(
                "keeper shares do not rebuild the root key (wrong or corrupted shares)".into(),
            ));
        }
    }
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

/// Sends share `i` to keeper `i`; returns how many acknowledged.
pub(crate) async fn push_shares(nexus: &Nexus, shares: &[Share]) -> u8 {
    let Some(record) = nexus.init_record() else {
        return 0;
    };
    let calls = nexus.keepers.iter().zip(shares).map(|(k, share)| {
        let body = share_body(share.clone(), record.epoch());
        async move {
            let bytes = serde_json::to_vec(&body).ok()?;
            match k.send(Method::PUT, "/v1/share", Some(bytes)).await {
                Ok(r) if r.status.is_success() => Some(()),
                Ok(r) => {
                    tracing::warn!(keeper = %k.addr(), status = %r.status, "keeper refused its share");
                    None
                }
                Err(e) => {
                    tracing::debug!(keeper = %k.addr(), error = %e, "keeper unreachable");
                    None
                }
            }
        }
    });
    let acked = futures::future::join_all(calls)
        .await
        .into_iter()
        .flatten()
        .count();
    u8::try_from(acked).unwrap_or(u8::MAX)
}

/// Re-sends shares to keepers that lost theirs.
async fn replenish(nexus: &Nexus, keys: &OpenKeys) {
    let Some(record) = nexus.init_record() else {
        return;
    };
    let held = fetch_shares(nexus).await;
    for (i, k) in nexus.keepers.iter().enumerate() {
        let Ok(index) = u8::try_from(i + 1) else {
            continue;
        };
        let ok = held.iter().any(|(j, body)| {
            *j == index && body.epoch == record.epoch() && keys.is_current_share(index, &body.share)
        });
        if ok {
            continue;
        }
        let Ok(share) = keys.keeper_share(index) else {
            continue;
        };
        let body = share_body(share, record.epoch());
        let Ok(bytes) = serde_json::to_vec(&body) else {
            continue;
        };
        match k.send(Method::PUT, "/v1/share", Some(bytes)).await {
            Ok(r) if r.status.is_success() => {
                tracing::info!(keeper = index, "re-sent share to keeper");
            }
            Ok(r) => tracing::warn!(keeper = index, status = %r.status, "keeper refused its share"),
            Err(e) => tracing::debug!(keeper = index, error = %e, "keeper unreachable"),
        }
    }
}
