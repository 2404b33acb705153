//! The keeper timer: every interval, while sealed it fetches the keepers' shares (current and,
//! during a root-key change, the previous ones they keep) and hands them to `unseal`; while
//! open it checks each keeper and re-sends the share (derived deterministically from the root
//! key) to any keeper that has none or a wrong one, so a restarted keeper is whole again
//! within one interval, and it finishes a pending rotation or rekey once enough keepers hold
//! the new split. What the shares mean is decided in `unseal` and `rotation`.

use std::future::Future;
use std::sync::Arc;

use crate::keepers;
use crate::keys::OpenKeys;
use crate::state::{Nexus, Status};
use crate::unseal::{self, UnsealError};

/// Runs until `stop` completes.
pub(crate) async fn run(nexus: Arc<Nexus>, stop: impl Future<Output = ()>) {
    tokio::pin!(stop);
    loop {
        tick(&nexus).await;
        tokio::select! {
            () = &mut stop => return,
            () = tokio::time::sleep(nexus.config().keeper_interval) => {}
        }
    }
}

async fn tick(nexus: &Nexus) {
    // A snapshot: the status lock is not held across awaits.
    match nexus.status() {
        // Another process may have initialized a shared store. Under the open lock, so this
        // cannot race this process's own bootstrap (and turn an open Nexus back to sealed).
        Status::Uninitialized => {
            let _guard = nexus.open_lock().lock().await;
            let still = matches!(nexus.status(), Status::Uninitialized);
            if still {
                nexus.load_init_state().await;
            }
        }
        Status::Sealed(_) => {
            crate::breakglass::drop_expired(nexus, std::time::Instant::now());
            try_unseal(nexus).await;
        }
        Status::Open(o) => {
            replenish(nexus, &o.keys).await;
            nexus.flush_suppressed(&o).await;
        }
    }
}

async fn try_unseal(nexus: &Nexus) {
    if nexus.init_record().is_none() {
        return;
    }
    let _guard = nexus.open_lock().lock().await;
    if !nexus.is_sealed() {
        return;
    }
    let (raw, record) = match nexus.read_init().await {
        Ok(r) => r,
        Err(e) => {
            nexus.set_status(Status::Sealed(format!("init record: {e}")));
            return;
        }
    };
    // A keeper keeps its previous share only while the record has a previous split.
    let held = nexus.keepers().fetch(record.previous().is_some()).await;
    let fetched = keepers::flatten(held);
    match unseal::unseal_with(nexus, &raw, &record, &fetched).await {
        Ok(()) => {}
        Err(e) => {
            // Logged once per reason, not on every round.
            let reason = e.to_string();
            if nexus.seal_reason().as_deref() != Some(reason.as_str()) {
                match e {
                    UnsealError::Waiting { .. } | UnsealError::WrongShares => tracing::warn!(
                        %reason,
                        "sealed: not enough keepers hold shares that rebuild the root key"
                    ),
                    _ => {
                        tracing::error!(error = %e, "sealed: cannot open with the rebuilt root key")
                    }
                }
            }
            nexus.set_status(Status::Sealed(reason));
        }
    }
}

/// Re-sends shares to keepers that lost theirs (or hold an older split's), tells keepers to
/// drop a previous share once no change is pending, and finishes a pending rotation or rekey
/// once `threshold` keepers hold the new shares.
async fn replenish(nexus: &Nexus, keys: &OpenKeys) {
    // Asked without the lock: a slow keeper must not hold up a rotation.
    let held = nexus.keepers().fetch(true).await;
    // Pushed with it, from the split in force now, so a rotation cannot interleave (a round
    // that overlaps one just skips).
    let Ok(_guard) = nexus.open_lock().try_lock() else {
        return;
    };
    let Ok((epoch, shares)) = keys.keeper_shares() else {
        return;
    };
    // While a change is pending, keepers keep the previous split's share (see `rotation`).
    let keep = nexus
        .init_record()
        .and_then(|r| r.previous().map(|p| p.epoch()));
    let checks = held.iter().zip(&shares).map(|((_, h), share)| {
        let holds = h
            .current
            .as_ref()
            .is_some_and(|b| b.epoch == epoch && b.share == *share)
            && (keep.is_some() || h.previous.is_none());
        async move {
            if holds {
                return true;
            }
            let sent = nexus.keepers().push_one(share, epoch, keep).await;
            if sent {
                tracing::info!(keeper = share.index(), epoch, ?keep, "sent share to keeper");
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
    if keep.is_some()
        && let Err(e) = unseal::finish_if_confirmed(nexus, epoch, confirmed).await
    {
        tracing::warn!(error = %e, "cannot finish the pending root-key change yet");
    }
}
