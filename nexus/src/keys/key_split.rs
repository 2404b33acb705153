//! One keeper split of one root key as the init record stores it, its break-glass export,
//! and rebuilding the root key from shares.

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use spike_core::crypto::{CryptoError, KeyRing, RootKey, Share, ShareParams, WrappedKey, combine};

/// Most share subsets tried when rebuilding the root key (C(7,3) = 35; C(255,2) is larger
/// and capped).
const MAX_SUBSETS: usize = 1024;

/// One keeper split of one root key, as the init record stores it: the split parameters, the
/// current data key wrapped under that root key (the check that a rebuilt root key is right),
/// the whole key ring sealed under it, and the break-glass split of the same root key if one
/// was exported. Splits written before key rings existed have no ring: their one data key is
/// the ring.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct KeySplit {
    pub(super) shares: u8,
    pub(super) threshold: u8,
    pub(super) epoch: u32,
    pub(super) wrapped_data_key: String,
    /// Hex of the sealed [`KeyRing`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(super) wrapped_ring: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(super) break_glass: Option<BreakGlassExport>,
}

/// A break-glass export of one root key: its split parameters and a digest of each share, so
/// restore checks every share on its own before combining. A share of an earlier export of
/// the same root key would still combine (see the module docs), so the label alone is not
/// enough to refuse it; the digest is. Digests of 256-bit random-looking values reveal nothing.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct BreakGlassExport {
    pub(super) shares: u8,
    pub(super) threshold: u8,
    pub(super) epoch: u32,
    pub(super) digests: Vec<String>,
}

impl BreakGlassExport {
    pub(crate) fn new(params: ShareParams, shares: &[Share]) -> Self {
        Self {
            shares: params.shares(),
            threshold: params.threshold(),
            epoch: params.epoch(),
            digests: shares
                .iter()
                .map(|s| share_digest(params.epoch(), s))
                .collect(),
        }
    }

    pub(crate) fn params(&self) -> Result<ShareParams, CryptoError> {
        ShareParams::new(self.shares, self.threshold, self.epoch)
    }

    /// True when `share` is one of this export's shares.
    pub(crate) fn accepts(&self, share: &Share) -> bool {
        usize::from(share.index())
            .checked_sub(1)
            .and_then(|i| self.digests.get(i))
            .is_some_and(|d| *d == share_digest(self.epoch, share))
    }
}

fn share_digest(epoch: u32, share: &Share) -> String {
    let mut h = Sha256::new();
    h.update(b"spike/v1/break-glass-share-digest\0");
    h.update(epoch.to_be_bytes());
    h.update([share.index()]);
    h.update(share.expose_secret());
    hex::encode(h.finalize())
}

impl KeySplit {
    /// A split of `root` with `params`, holding `ring` (no break-glass export yet).
    pub(super) fn seal(
        params: ShareParams,
        root: &RootKey,
        ring: &KeyRing,
    ) -> Result<Self, CryptoError> {
        Ok(Self {
            shares: params.shares(),
            threshold: params.threshold(),
            epoch: params.epoch(),
            wrapped_data_key: hex::encode(root.wrap(ring.current())?.as_bytes()),
            wrapped_ring: Some(hex::encode(root.seal_ring(ring)?)),
            break_glass: None,
        })
    }

    /// This split (same parameters and break-glass export, `root` its root key) holding
    /// `ring` instead.
    pub(super) fn resealed(&self, root: &RootKey, ring: &KeyRing) -> Result<Self, CryptoError> {
        let params = self.params()?;
        Ok(Self {
            break_glass: self.break_glass.clone(),
            ..Self::seal(params, root, ring)?
        })
    }

    pub(crate) fn epoch(&self) -> u32 {
        self.epoch
    }

    pub(crate) fn threshold(&self) -> u8 {
        self.threshold
    }

    pub(crate) fn shares(&self) -> u8 {
        self.shares
    }

    /// The break-glass export of this root key, if one was made.
    pub(crate) fn break_glass(&self) -> Option<&BreakGlassExport> {
        self.break_glass.as_ref()
    }

    pub(crate) fn params(&self) -> Result<ShareParams, CryptoError> {
        ShareParams::new(self.shares, self.threshold, self.epoch)
    }

    pub(super) fn wrapped(&self) -> Result<WrappedKey, CryptoError> {
        let bytes = hex::decode(&self.wrapped_data_key).map_err(|_| CryptoError::Malformed {
            what: "wrapped data key",
            reason: "not hex",
        })?;
        WrappedKey::from_bytes(&bytes)
    }

    /// True when `root` is this split's root key (it opens the wrapped data key).
    #[cfg(test)]
    pub(crate) fn opens_with(&self, root: &RootKey) -> bool {
        self.open(root).is_ok()
    }

    /// Opens this split's key ring with its root key: the wrapped data key first (the check
    /// that `root` is right), then the sealed ring, whose current generation must be that key.
    fn open(&self, root: &RootKey) -> Result<KeyRing, CryptoError> {
        let data = root.unwrap(&self.wrapped()?)?;
        let Some(sealed) = &self.wrapped_ring else {
            return Ok(KeyRing::single(data));
        };
        let bytes = hex::decode(sealed).map_err(|_| CryptoError::Malformed {
            what: "key ring",
            reason: "not hex",
        })?;
        let ring = root.open_ring(&bytes)?;
        if ring.current().key_id() != data.key_id() {
            return Err(CryptoError::Malformed {
                what: "key ring",
                reason: "its current key is not the wrapped data key",
            });
        }
        Ok(ring)
    }

    /// Rebuilds this split's root key from shares of the split `params` describes (the keeper
    /// split or the break-glass split) and opens the key ring with it.
    ///
    /// Tries `threshold`-sized subsets until one opens the wrapped data key, so one wrong
    /// share (corrupted or malicious) cannot block recovery while enough good ones are there.
    /// The number of subsets tried is bounded.
    pub(crate) fn rebuild(
        &self,
        params: &ShareParams,
        shares: &[Share],
    ) -> Result<(RootKey, KeyRing), CryptoError> {
        let mut last = CryptoError::TooFewShares {
            got: shares.len(),
            need: params.threshold(),
        };
        for subset in Subsets::new(shares.len(), usize::from(params.threshold())).take(MAX_SUBSETS)
        {
            let picked: Vec<Share> = subset.iter().map(|&i| shares[i].clone()).collect();
            match combine(params, &picked).and_then(|root| {
                let ring = self.open(&root)?;
                Ok((root, ring))
            }) {
                Ok(found) => return Ok(found),
                Err(e) => last = e,
            }
        }
        Err(last)
    }
}

/// Index subsets of size `k` out of `n`, in lexicographic order.
struct Subsets {
    pub(super) n: usize,
    pub(super) next: Option<Vec<usize>>,
}

impl Subsets {
    fn new(n: usize, k: usize) -> Self {
        Self {
            n,
            next: (k >= 1 && k <= n).then(|| (0..k).collect()),
        }
    }
}

impl Iterator for Subsets {
    type Item = Vec<usize>;

    fn next(&mut self) -> Option<Vec<usize>> {
        let current = self.next.take()?;
        let k = current.len();
        let mut following = current.clone();
        // Advance the rightmost index that can still move right.
        let mut i = k;
        while i > 0 {
            i -= 1;
            if following[i] < self.n - k + i {
                following[i] += 1;
                for j in i + 1..k {
                    following[j] = following[j - 1] + 1;
                }
                self.next = Some(following);
                break;
            }
        }
        Some(current)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subsets_enumerate_every_combination_once() {
        let all: Vec<_> = Subsets::new(4, 2).collect();
        assert_eq!(
            all,
            vec![
                vec![0, 1],
                vec![0, 2],
                vec![0, 3],
                vec![1, 2],
                vec![1, 3],
                vec![2, 3]
            ]
        );
        assert_eq!(Subsets::new(5, 3).count(), 10);
        assert_eq!(Subsets::new(2, 3).count(), 0);
        assert_eq!(Subsets::new(3, 0).count(), 0);
    }
}
