//! Rollback detection: the store's freshness witness, checked against the keepers on unseal.
//!
//! A record's tag proves Nexus wrote it, not that it is the newest: whoever can write the data
//! directory could put back an older copy of the file, or of single records (undo a delete,
//! resurrect a revoked policy or token). So the store keeps a witness (`spike_store::freshness`):
//! a generation raised by every changing commit and a keyed digest of its whole contents,
//! tagged and written with each change. While open, Nexus hands the latest witness to every
//! keeper each keeper interval; keepers hold it in memory, outside the data directory. Before
//! opening, [`check`] arms the store (which rereads everything) and refuses:
//!
//! - a witness whose tag does not verify ([`StaleStore::BadRecord`]);
//! - contents that do not sum to the store's own witness: entries edited, put back or removed
//!   outside Nexus ([`StaleStore::Edited`]);
//! - a generation below the newest one a keeper remembers ([`StaleStore::RolledBack`]);
//! - the remembered generation with other contents ([`StaleStore::Diverged`]).
//!
//! What it cannot see: a copy taken within the last keeper interval before the keepers' last
//! witness (it is as new as what they remember), and any rollback while every keeper restarted
//! at once (they remember nothing). The keys come from the ring's audit key, fixed for the life
//! of the store, so rotations change nothing here.

use std::sync::Arc;

use spike_core::api::WitnessBody;
use spike_core::crypto::{FRESHNESS_LEN, FreshnessKey};
use spike_store::freshness::Digest;
use spike_store::{Batch, StoreError, Witness, WitnessKey};

use crate::state::{META, Nexus};

/// Where the last generation opened with `accept_store_generation` is noted.
const ACCEPTED_KEY: &[u8] = b"accepted_store_generation";

/// The runbook a refusal names.
const RUNBOOK: &str = "docs/runbooks/data-directory-rolled-back.md";

/// Why the store is not fresh. Its text is the sealed reason.
#[derive(Debug, thiserror::Error)]
pub(crate) enum StaleStore {
    /// The store is older than the keepers remember.
    #[error(
        "STORE ROLLED BACK: the data directory is at store generation {found} but the keepers \
         remember generation {remembered}; it was put back from an older copy. Nexus stays \
         sealed (see {RUNBOOK}; to keep this older data on purpose, set \
         accept_store_generation = {found})"
    )]
    RolledBack {
        /// The store's generation.
        found: u64,
        /// The newest generation a keeper holds.
        remembered: u64,
    },
    /// Same generation as remembered, other contents.
    #[error(
        "STORE ROLLED BACK: the data directory is at store generation {generation}, as the \
         keepers remember, but holds other contents: it was replaced by a copy that diverged. \
         Nexus stays sealed (see {RUNBOOK}; to keep this data on purpose, set \
         accept_store_generation = {generation})"
    )]
    Diverged {
        /// The generation both claim.
        generation: u64,
    },
    /// The contents do not match the store's own witness.
    #[error(
        "STORE EDITED: the data directory's contents do not match its own freshness record at \
         generation {generation}: entries were edited, put back or removed outside Nexus. \
         Nexus stays sealed (see {RUNBOOK}; to keep this data on purpose, set \
         accept_store_generation = {generation})"
    )]
    Edited {
        /// The store's generation.
        generation: u64,
    },
    /// The witness record is malformed or not tagged under this deployment's key.
    #[error(
        "STORE EDITED: the data directory's freshness record is damaged or was not written by \
         this deployment. Nexus stays sealed (see {RUNBOOK}; to keep this data on purpose, set \
         accept_store_generation = {generation})"
    )]
    BadRecord {
        /// The generation it claims (0 if unreadable).
        generation: u64,
    },
    /// Reading the store failed.
    #[error("reading the store for its freshness check: {0}")]
    Store(#[from] StoreError),
}

/// What [`check`] found, for the log.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Fresh {
    /// The store has no files to roll back.
    NoFiles,
    /// As new as or newer than what the keepers remember (`None`: they remember nothing).
    Checked {
        generation: u64,
        remembered: Option<u64>,
    },
    /// Not fresh, but the operator accepted this generation (`accept_store_generation`).
    Accepted { generation: u64 },
}

/// The freshness key in the form the store uses.
struct StoreKey(FreshnessKey);

impl WitnessKey for StoreKey {
    fn entry_hash(&self, table: &str, key: &[u8], value: &[u8]) -> [u8; FRESHNESS_LEN] {
        self.0.entry_hash(table, key, value)
    }

    fn tag(&self, generation: u64, digest: &Digest) -> [u8; FRESHNESS_LEN] {
        self.0.tag(generation, &digest.to_bytes())
    }
}

/// Arms the store's witness under the key of the ring whose audit key is `audit_key`, and
/// checks the store against its own witness and against the newest witness a keeper holds.
/// Call before anything is written with that ring (the witness counts only armed commits).
pub(crate) async fn check(nexus: &Nexus, audit_key: &[u8; 32]) -> Result<Fresh, StaleStore> {
    let key = Arc::new(StoreKey(FreshnessKey::new(audit_key)));
    let Some(armed) = nexus.store().arm_witness(key.clone()).await? else {
        return Ok(Fresh::NoFiles);
    };
    let generation = armed.stored.map_or(0, |w| w.generation);
    let remembered = nexus
        .keepers()
        .witnesses()
        .await
        .into_iter()
        .filter(|(keeper, w)| {
            let ok = key.0.verifies(w.generation, &w.digest, &w.tag);
            if !ok {
                // Another deployment's (the data directory was replaced by a new store), or
                // damaged: it witnesses nothing about this store.
                tracing::warn!(
                    keeper,
                    "keeper holds a witness this deployment did not tag; ignored"
                );
            }
            ok
        })
        .map(|(_, w)| w)
        .max_by_key(|w| w.generation);
    let verdict = judge(&key.0, &armed, remembered.as_ref());
    match (verdict, nexus.config().accept_store_generation) {
        (Err(e), Some(accepted)) if accepted == generation => {
            tracing::warn!(
                generation,
                refusal = %e,
                "opening a store that is not fresh, as accept_store_generation says; remove the setting once open"
            );
            // One commit stores the witness of what was accepted (the file's own one may not
            // match its contents), so the next start checks against this store without the
            // setting; it also leaves a mark of the acceptance in the store.
            let mut mark = Batch::new();
            mark.put(META, ACCEPTED_KEY, generation.to_be_bytes().to_vec());
            nexus.store().commit(mark).await?;
            Ok(Fresh::Accepted { generation })
        }
        (Err(e), _) => Err(e),
        (Ok(()), _) => Ok(Fresh::Checked {
            generation,
            remembered: remembered.map(|w| w.generation),
        }),
    }
}

/// The rules of the module docs.
fn judge(
    key: &FreshnessKey,
    armed: &spike_store::Armed,
    remembered: Option<&WitnessBody>,
) -> Result<(), StaleStore> {
    let generation = armed.stored.map_or(0, |w| w.generation);
    if armed.malformed {
        return Err(StaleStore::BadRecord { generation });
    }
    if let Some(stored) = armed.stored {
        if !key.verifies(stored.generation, &stored.digest.to_bytes(), &stored.tag) {
            return Err(StaleStore::BadRecord { generation });
        }
        if stored.digest != armed.contents {
            return Err(StaleStore::Edited { generation });
        }
    }
    // A store without a witness (new, or written before witnesses existed) is generation 0
    // with whatever it holds.
    let Some(remembered) = remembered else {
        return Ok(());
    };
    if generation < remembered.generation {
        return Err(StaleStore::RolledBack {
            found: generation,
            remembered: remembered.generation,
        });
    }
    if generation == remembered.generation && armed.contents.to_bytes() != remembered.digest {
        return Err(StaleStore::Diverged { generation });
    }
    Ok(())
}

/// A witness in the keepers' wire form.
fn body_of(w: &Witness) -> WitnessBody {
    WitnessBody {
        generation: w.generation,
        digest: w.digest.to_bytes(),
        tag: w.tag,
    }
}

/// Hands the store's latest witness to every keeper (a no-op for a store without files).
pub(crate) async fn publish(nexus: &Nexus) {
    let Some(w) = nexus.store().witness() else {
        return;
    };
    let body = body_of(&w);
    let acked = nexus.keepers().push_witness(&body).await;
    if acked == 0 && nexus.keepers().len() > 0 {
        tracing::debug!(
            generation = w.generation,
            "no keeper took the store's witness"
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use spike_store::Armed;

    fn key() -> FreshnessKey {
        FreshnessKey::new(&[3; 32])
    }

    fn digest(n: u8) -> Digest {
        let mut d = Digest::EMPTY;
        d.add([n; 32]);
        d
    }

    fn witness(generation: u64, d: Digest) -> Witness {
        Witness::tagged(&StoreKey(key()), generation, d)
    }

    fn armed(stored: Option<Witness>, contents: Digest) -> Armed {
        Armed {
            stored,
            malformed: false,
            contents,
        }
    }

    #[test]
    fn a_store_as_new_as_or_newer_than_the_keepers_opens() {
        let k = key();
        let now = witness(5, digest(1));
        assert!(judge(&k, &armed(Some(now), digest(1)), None).is_ok());
        assert!(judge(&k, &armed(Some(now), digest(1)), Some(&body_of(&now))).is_ok());
        let older = witness(4, digest(9));
        assert!(judge(&k, &armed(Some(now), digest(1)), Some(&body_of(&older))).is_ok());
        // No witness yet, keepers remember none: a new or upgraded store.
        assert!(judge(&k, &armed(None, digest(7)), None).is_ok());
    }

    #[test]
    fn an_older_diverged_edited_or_forged_store_is_refused() {
        let k = key();
        let remembered = body_of(&witness(8, digest(2)));
        let old = witness(5, digest(1));
        assert!(matches!(
            judge(&k, &armed(Some(old), digest(1)), Some(&remembered)),
            Err(StaleStore::RolledBack {
                found: 5,
                remembered: 8
            })
        ));
        // A witness removed from an old copy reads as generation 0.
        assert!(matches!(
            judge(&k, &armed(None, digest(1)), Some(&remembered)),
            Err(StaleStore::RolledBack { found: 0, .. })
        ));
        let same = witness(8, digest(3));
        assert!(matches!(
            judge(&k, &armed(Some(same), digest(3)), Some(&remembered)),
            Err(StaleStore::Diverged { generation: 8 })
        ));
        let now = witness(9, digest(4));
        assert!(matches!(
            judge(&k, &armed(Some(now), digest(5)), None),
            Err(StaleStore::Edited { generation: 9 })
        ));
        // A generation raised without the key.
        let forged = Witness {
            generation: 100,
            ..old
        };
        assert!(matches!(
            judge(&k, &armed(Some(forged), digest(1)), Some(&remembered)),
            Err(StaleStore::BadRecord { generation: 100 })
        ));
        let mut malformed = armed(None, digest(1));
        malformed.malformed = true;
        assert!(matches!(
            judge(&k, &malformed, None),
            Err(StaleStore::BadRecord { generation: 0 })
        ));
    }
}
