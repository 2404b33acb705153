//! Break-glass shares received by restore so far, while Nexus is sealed: a leaf the state
//! holds and `breakglass` fills, so neither calls the other.

use std::time::{Duration, Instant};

use spike_core::crypto::Share;
use spike_core::error::ErrorCode;

use crate::error::AppError;

/// How long received restore shares are kept after the last one arrived.
pub(crate) const RESTORE_TTL: Duration = Duration::from_secs(600);

/// Shares received by restore so far, all of one break-glass epoch.
pub(crate) struct PendingRestore {
    pub(crate) epoch: u32,
    pub(crate) shares: Vec<Share>,
    last: Instant,
}

/// What adding a share did.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Added {
    New,
    /// The identical share was already received: nothing changed.
    Again,
}

impl PendingRestore {
    pub(crate) fn new(epoch: u32, now: Instant) -> Self {
        Self {
            epoch,
            shares: Vec::new(),
            last: now,
        }
    }

    /// The pending state if it has not expired at `now` (expired shares are dropped here).
    pub(crate) fn live(slot: Option<Self>, now: Instant) -> Option<Self> {
        slot.filter(|p| now.duration_since(p.last) < RESTORE_TTL)
    }

    pub(crate) fn add(&mut self, share: Share, now: Instant) -> Result<Added, AppError> {
        if let Some(held) = self.shares.iter().find(|s| s.index() == share.index()) {
            return if *held == share {
                Ok(Added::Again)
            } else {
                Err(AppError::new(
                    ErrorCode::BadRequest,
                    format!(
                        "a different share with index {} was already received; nothing changed",
                        share.index()
                    ),
                ))
            };
        }
        self.shares.push(share);
        self.last = now;
        Ok(Added::New)
    }

    pub(crate) fn received(&self) -> u8 {
        u8::try_from(self.shares.len()).unwrap_or(u8::MAX)
    }

    pub(crate) fn expires_in(&self, now: Instant) -> u64 {
        RESTORE_TTL
            .saturating_sub(now.duration_since(self.last))
            .as_secs()
    }
}
