//! The keeper timer: every interval, while sealed it fetches the keepers' shares (current and,
//! during a root-key change, the previous ones they keep) and hands them to `unseal`; while
//! open it checks each keeper and re-sends the share (derived deterministically from the root
//! key) to any keeper that has none or a wrong one, so a restarted keeper is whole again
//! within one interval, and it finishes a pending rotation or rekey once enough keepers hold
//! the new split, and hands every keeper the store's latest freshness witness. What the
//! shares mean is decided in `unseal` and `rotation`; what the witness means, in `freshness`.

use std::future::Future;
use std::sync::Arc;

use crate::keepers::{self, Census};
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
            crate::freshness::publish(nexus).await;
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
    let census = Census::of(&held, record.epoch());
    let fetched = keepers::flatten(held);
    match unseal::unseal_with(nexus, &raw, &record, &fetched).await {
        Ok(()) => {}
        Err(e) => {
            // Logged once per reason, not on every round.
            let reason = match e {
                UnsealError::Waiting { holding, needed } => waiting_reason(holding, needed, census),
                _ => e.to_string(),
            };
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

/// The sealed reason while too few shares answer: what the keepers look like, and what to do
/// when waiting cannot help because too many of them restarted empty.
fn waiting_reason(holding: usize, needed: u8, census: Census) -> String {
    let needed_n = usize::from(needed);
    let mut reason = format!("{} ({census})", UnsealError::Waiting { holding, needed });
    if census.empty > 0 {
        reason.push_str(if census.holding + census.unreachable < needed_n {
            "; too few keepers can still hold a share: recover the root key from the break-glass shares (see the all-keepers-lost runbook)"
        } else {
            "; restarted keepers come back empty and only an open Nexus refills them: bring back the unreachable ones"
        });
    }
    reason
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

#[cfg(test)]
mod tests {
    use spike_core::api::ShareBody;
    use spike_core::crypto::Share;

    use super::*;
    use crate::keepers::Held;

    fn keeper(answered: bool, epoch: Option<u32>) -> Held {
        Held {
            answered,
            current: epoch.map(|epoch| ShareBody {
                share: Share::new(1, &[7; 32]).unwrap(),
                epoch,
            }),
            previous: None,
        }
    }

    #[test]
    fn the_sealed_reason_tells_empty_keepers_from_unreachable_ones() {
        // One holds, one restarted (empty), one holds a share of an older split, one is down.
        let held = vec![
            (0, keeper(true, Some(2))),
            (1, keeper(true, None)),
            (2, keeper(true, Some(1))),
            (3, keeper(false, None)),
        ];
        let census = Census::of(&held, 2);
        assert_eq!(
            census,
            Census {
                holding: 1,
                empty: 2,
                unreachable: 1
            }
        );
        let r = waiting_reason(1, 3, census);
        assert!(
            r.starts_with("waiting for keeper shares: 1 of 3 needed (4 keepers: 1 holding a share, 2 reachable but holding none, 1 unreachable)"),
            "{r}"
        );
        assert!(r.contains("break-glass"), "{r}");
        // Waiting can still help when enough of the missing ones are only unreachable.
        let r = waiting_reason(1, 2, census);
        assert!(r.contains("bring back the unreachable ones"), "{r}");
        // Only unreachable keepers: the plain reason.
        let census = Census::of(&[(0, keeper(false, None)), (1, keeper(true, Some(2)))], 2);
        let r = waiting_reason(1, 2, census);
        assert_eq!(
            r,
            "waiting for keeper shares: 1 of 2 needed (2 keepers: 1 holding a share, 0 reachable but holding none, 1 unreachable)"
        );
    }
}
