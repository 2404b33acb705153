//! The init record: what Nexus stores at initialization (not secret), the split in force and
//! the one kept while a rotation or rekey is unconfirmed.

use serde::{Deserialize, Serialize};
use spike_core::crypto::{CryptoError, KeyRing, RootKey, ShareParams};

use super::key_split::{BreakGlassExport, KeySplit};

/// The newest init-record format this build reads and the one it writes. Format 2 added the
/// break-glass split and the previous split kept during a rotation; format 3 the sealed key
/// ring of each split. An older record reads as a newer one without them.
const INIT_FORMAT: u32 = 3;

/// What Nexus stores at initialization (not secret), in the store's `meta` table.
///
/// `current` is the split in force. `previous` is set only while a rotation or rekey waits
/// for `threshold` keepers to confirm the new shares: until then keepers may still hold only
/// the old split's shares, so a restart must be able to rebuild the old root key (see
/// `rotation.rs` for the state machine).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct InitRecord {
    pub(super) created: String,
    pub(super) current: KeySplit,
    pub(super) previous: Option<KeySplit>,
    /// The highest break-glass epoch ever issued, so a new export never reuses one (old files
    /// must stay refused even after a rekey that keeps the root key).
    pub(super) break_glass_epoch: u32,
}

/// Why a stored init record cannot be read.
#[derive(Debug, thiserror::Error)]
pub(crate) enum InitRecordError {
    /// Not the JSON of an init record (the record is not secret: the cause may be shown).
    #[error("init record is malformed")]
    Malformed(#[source] serde_json::Error),
    /// Written by a newer SPIKE.
    #[error(
        "the data was initialized by a newer SPIKE (init format {0}); this build reads up to {INIT_FORMAT}"
    )]
    Newer(u32),
}

/// The stored form: the current split's fields at top level, as format 1 had them.
#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct StoredInitRecord {
    pub(super) format: u32,
    pub(super) shares: u8,
    pub(super) threshold: u8,
    pub(super) epoch: u32,
    pub(super) wrapped_data_key: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(super) wrapped_ring: Option<String>,
    pub(super) created: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(super) break_glass: Option<BreakGlassExport>,
    #[serde(default, skip_serializing_if = "is_zero")]
    pub(super) break_glass_epoch: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(super) previous: Option<KeySplit>,
}

fn is_zero(n: &u32) -> bool {
    *n == 0
}

impl InitRecord {
    pub(crate) fn encode(&self) -> Vec<u8> {
        let c = &self.current;
        let stored = StoredInitRecord {
            format: INIT_FORMAT,
            shares: c.shares,
            threshold: c.threshold,
            epoch: c.epoch,
            wrapped_data_key: c.wrapped_data_key.clone(),
            wrapped_ring: c.wrapped_ring.clone(),
            created: self.created.clone(),
            break_glass: c.break_glass.clone(),
            break_glass_epoch: self.break_glass_epoch,
            previous: self.previous.clone(),
        };
        serde_json::to_vec(&stored).unwrap_or_default()
    }

    pub(crate) fn decode(bytes: &[u8]) -> Result<Self, InitRecordError> {
        #[derive(Deserialize)]
        struct Probe {
            format: u32,
        }
        let probe: Probe = serde_json::from_slice(bytes).map_err(InitRecordError::Malformed)?;
        if probe.format > INIT_FORMAT {
            return Err(InitRecordError::Newer(probe.format));
        }
        let s: StoredInitRecord =
            serde_json::from_slice(bytes).map_err(InitRecordError::Malformed)?;
        Ok(Self {
            created: s.created,
            current: KeySplit {
                shares: s.shares,
                threshold: s.threshold,
                epoch: s.epoch,
                wrapped_data_key: s.wrapped_data_key,
                wrapped_ring: s.wrapped_ring,
                break_glass: s.break_glass,
            },
            previous: s.previous,
            break_glass_epoch: s.break_glass_epoch,
        })
    }

    pub(crate) fn current(&self) -> &KeySplit {
        &self.current
    }

    pub(crate) fn previous(&self) -> Option<&KeySplit> {
        self.previous.as_ref()
    }

    pub(crate) fn epoch(&self) -> u32 {
        self.current.epoch
    }

    pub(crate) fn threshold(&self) -> u8 {
        self.current.threshold
    }

    /// The split a break-glass share of `epoch` belongs to, its export, and whether it is the
    /// previous split (kept while a rotation or rekey is pending).
    pub(crate) fn break_glass_split(
        &self,
        epoch: u32,
    ) -> Option<(&KeySplit, &BreakGlassExport, bool)> {
        std::iter::once((&self.current, false))
            .chain(self.previous.as_ref().map(|p| (p, true)))
            .find_map(|(s, prev)| {
                s.break_glass
                    .as_ref()
                    .filter(|b| b.epoch == epoch)
                    .map(|b| (s, b, prev))
            })
    }

    /// The break-glass epoch of the current root key's export, if there is one.
    pub(crate) fn live_break_glass_epoch(&self) -> Option<u32> {
        self.current.break_glass.as_ref().map(|b| b.epoch)
    }

    /// A keeper epoch newer than every one this record has used.
    pub(crate) fn next_epoch(&self) -> Result<u32, CryptoError> {
        let newest = self
            .previous
            .as_ref()
            .map_or(self.current.epoch, |p| p.epoch.max(self.current.epoch));
        newest.checked_add(1).ok_or(CryptoError::InvalidShareParams(
            "the keeper epoch is exhausted",
        ))
    }

    /// A break-glass epoch never issued before.
    pub(crate) fn next_break_glass_epoch(&self) -> Result<u32, CryptoError> {
        self.break_glass_epoch
            .checked_add(1)
            .ok_or(CryptoError::InvalidShareParams(
                "the break-glass epoch is exhausted",
            ))
    }

    /// Starts a rotation or rekey: the new split of `new_root` becomes current, the current
    /// one (of `old_root`) is kept as `previous` until the keepers confirm. Both hold `ring`,
    /// so whichever root key a restart rebuilds opens every generation written meanwhile. The
    /// new root key has no break-glass export yet.
    pub(crate) fn begin_change(
        &self,
        params: ShareParams,
        new_root: &RootKey,
        old_root: &RootKey,
        ring: &KeyRing,
    ) -> Result<Self, CryptoError> {
        Ok(Self {
            created: self.created.clone(),
            current: KeySplit::seal(params, new_root, ring)?,
            previous: Some(self.current.resealed(old_root, ring)?),
            break_glass_epoch: self.break_glass_epoch,
        })
    }

    /// Redoes an interrupted rotation whose new root key was lost: replaces `current` with a
    /// split of `root` holding `ring` (the one the previous split holds), keeps `previous`
    /// (the split the keepers still hold).
    pub(crate) fn redo_change(
        &self,
        params: ShareParams,
        root: &RootKey,
        ring: &KeyRing,
    ) -> Result<Self, CryptoError> {
        Ok(Self {
            current: KeySplit::seal(params, root, ring)?,
            ..self.clone()
        })
    }

    /// The current split (of `root`) holding `ring` instead: re-encryption finished and the
    /// older generations are retired. Only while no previous split is kept.
    pub(crate) fn with_ring(&self, root: &RootKey, ring: &KeyRing) -> Result<Self, CryptoError> {
        Ok(Self {
            current: self.current.resealed(root, ring)?,
            ..self.clone()
        })
    }

    /// The change is confirmed by the keepers: the previous split is dropped.
    pub(crate) fn finished(&self) -> Self {
        Self {
            previous: None,
            ..self.clone()
        }
    }

    /// A new break-glass export of the current root key replaces any earlier one.
    pub(crate) fn with_break_glass(&self, export: BreakGlassExport) -> Self {
        let mut next = self.clone();
        next.break_glass_epoch = export.epoch;
        next.current.break_glass = Some(export);
        next
    }
}
