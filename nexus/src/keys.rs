//! The keys of an open Nexus and the init record that lets a rebuilt root key be checked.
//!
//! The root key only wraps the data key; every working key (value envelope, record MACs, audit
//! chain) is derived from the data key, so they survive root-key rotation unchanged. Keeper
//! shares are derived deterministically from the root key, the split parameters and the
//! epoch, so Nexus can re-create any keeper's share on demand.

use serde::{Deserialize, Serialize};
use spike_core::crypto::{
    Aad, CryptoError, DataKey, EnvelopeKey, KeyPurpose, RecordMac, RecordTag, RecordType, RootKey,
    Share, ShareParams, SharePurpose, WrappedKey, combine, share_for,
};
use spike_core::secret::SecretBytes;
use zeroize::Zeroizing;

/// Most share subsets tried when rebuilding the root key (C(7,3) = 35; C(255,2) is larger
/// and capped).
const MAX_SUBSETS: usize = 1024;

/// The newest init-record format this build reads.
const INIT_FORMAT: u32 = 1;

/// What Nexus stores at initialization (not secret): the split parameters and the data key
/// wrapped under the root key. A wrong or tampered root key, or edited parameters, make the
/// unwrap fail, so Nexus stays sealed instead of opening with a wrong key.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct InitRecord {
    format: u32,
    shares: u8,
    threshold: u8,
    epoch: u32,
    wrapped_data_key: String,
    created: String,
}

impl InitRecord {
    pub(crate) fn encode(&self) -> Vec<u8> {
        serde_json::to_vec(self).unwrap_or_default()
    }

    pub(crate) fn decode(bytes: &[u8]) -> Result<Self, String> {
        #[derive(Deserialize)]
        struct Probe {
            format: u32,
        }
        let probe: Probe =
            serde_json::from_slice(bytes).map_err(|_| "init record is malformed".to_owned())?;
        if probe.format > INIT_FORMAT {
            return Err(format!(
                "the data was initialized by a newer SPIKE (init format {}); this build reads up to {INIT_FORMAT}",
                probe.format
            ));
        }
        serde_json::from_slice(bytes).map_err(|_| "init record is malformed".to_owned())
    }

    pub(crate) fn epoch(&self) -> u32 {
        self.epoch
    }

    pub(crate) fn threshold(&self) -> u8 {
        self.threshold
    }

    fn params(&self) -> Result<ShareParams, CryptoError> {
        ShareParams::new(self.shares, self.threshold, self.epoch)
    }
}

/// The split parameters, for callers.
#[derive(Debug, Clone, Copy)]
pub(crate) struct SplitInfo {
    pub(crate) threshold: u8,
}

/// Keys held while Nexus is open. Every field zeroizes on drop.
pub(crate) struct OpenKeys {
    root: RootKey,
    /// Kept so the root key can be rotated (re-wrapping this key) and further purposes
    /// derived on demand.
    data: DataKey,
    params: ShareParams,
    envelope: EnvelopeKey,
    mac: RecordMac,
    audit: Zeroizing<[u8; 32]>,
}

impl OpenKeys {
    fn from_parts(root: RootKey, data: DataKey, params: ShareParams) -> Self {
        let audit = Zeroizing::new(*data.derive(KeyPurpose::AuditChain).expose_secret());
        Self {
            root,
            params,
            envelope: EnvelopeKey::new(&data),
            mac: RecordMac::new(&data),
            audit,
            data,
        }
    }

    /// The subkey for `purpose` (cipher API, token hashing, backups), derived on demand.
    pub(crate) fn subkey(&self, purpose: KeyPurpose) -> spike_core::crypto::SubKey {
        self.data.derive(purpose)
    }

    /// Creates a fresh root key and data key (first initialization).
    pub(crate) fn create(shares: u8, threshold: u8) -> Result<(Self, InitRecord), CryptoError> {
        let params = ShareParams::new(shares, threshold, 1)?;
        let root = RootKey::generate()?;
        let data = DataKey::generate()?;
        let wrapped = root.wrap(&data)?;
        let record = InitRecord {
            format: INIT_FORMAT,
            shares,
            threshold,
            epoch: 1,
            wrapped_data_key: hex::encode(wrapped.as_bytes()),
            created: crate::secrets::now(),
        };
        Ok((Self::from_parts(root, data, params), record))
    }

    /// Rebuilds the root key from keeper shares and checks it against the init record.
    ///
    /// Tries `threshold`-sized subsets until one opens the wrapped data key, so one keeper
    /// answering with a wrong share (corrupted or malicious) cannot keep Nexus sealed while
    /// enough honest keepers answer. The number of subsets tried is bounded.
    pub(crate) fn recover(record: &InitRecord, shares: &[Share]) -> Result<Self, CryptoError> {
        let params = record.params()?;
        let wrapped_bytes =
            hex::decode(&record.wrapped_data_key).map_err(|_| CryptoError::Malformed {
                what: "wrapped data key",
                reason: "not hex",
            })?;
        let wrapped = WrappedKey::from_bytes(&wrapped_bytes)?;
        let t = usize::from(params.threshold());
        let mut last = CryptoError::TooFewShares {
            got: shares.len(),
            need: params.threshold(),
        };
        for subset in Subsets::new(shares.len(), t).take(MAX_SUBSETS) {
            let picked: Vec<Share> = subset.iter().map(|&i| shares[i].clone()).collect();
            match combine(&params, &picked).and_then(|root| {
                let data = root.unwrap(&wrapped)?;
                Ok((root, data))
            }) {
                Ok((root, data)) => return Ok(Self::from_parts(root, data, params)),
                Err(e) => last = e,
            }
        }
        Err(last)
    }

    pub(crate) fn params(&self) -> SplitInfo {
        SplitInfo {
            threshold: self.params.threshold(),
        }
    }

    /// Keeper `index`'s share of the current split (fails only for an index out of range).
    pub(crate) fn keeper_share(&self, index: u8) -> Result<Share, CryptoError> {
        share_for(&self.root, SharePurpose::Keepers, &self.params, index)
    }

    /// True when `share` is keeper `index`'s share of the current split (constant time).
    pub(crate) fn is_current_share(&self, index: u8, share: &Share) -> bool {
        share.index() == index && self.keeper_share(index).is_ok_and(|s| s == *share)
    }

    /// True when `threshold` of `shares` rebuild exactly this root key.
    pub(crate) fn rebuilds_from(&self, shares: &[Share]) -> bool {
        let t = usize::from(self.params.threshold());
        shares.len() >= t
            && combine(&self.params, &shares[..t])
                .map(|k| k.key_id() == self.root.key_id())
                .unwrap_or(false)
    }

    pub(crate) fn seal_value(
        &self,
        path: &str,
        version: u64,
        incarnation: u64,
        plaintext: &[u8],
    ) -> Result<Vec<u8>, CryptoError> {
        self.envelope
            .seal(&value_aad(path, version, incarnation), plaintext)
    }

    pub(crate) fn open_value(
        &self,
        path: &str,
        version: u64,
        incarnation: u64,
        sealed: &[u8],
    ) -> Result<SecretBytes, CryptoError> {
        self.envelope
            .open(&value_aad(path, version, incarnation), sealed)
    }

    pub(crate) fn record_tag(&self, record: RecordType, key: &[u8], body: &[u8]) -> RecordTag {
        self.mac.tag(record, key, body)
    }

    pub(crate) fn verify_record_tag(
        &self,
        record: RecordType,
        key: &[u8],
        body: &[u8],
        tag: &[u8],
    ) -> bool {
        RecordTag::from_bytes(tag)
            .and_then(|t| self.mac.verify(record, key, body, &t))
            .is_ok()
    }

    /// A random u64 (path incarnations).
    pub(crate) fn random_u64(&self) -> Result<u64, CryptoError> {
        let mut b = [0u8; 8];
        spike_core::crypto::fill_random(&mut b)?;
        Ok(u64::from_be_bytes(b))
    }

    /// The audit chain key.
    pub(crate) fn audit_key(&self) -> &[u8; 32] {
        &self.audit
    }
}

fn value_aad(path: &str, version: u64, incarnation: u64) -> Aad<'_> {
    Aad {
        record: RecordType::SecretValue,
        path,
        version,
        incarnation,
    }
}

/// Index subsets of size `k` out of `n`, in lexicographic order.
struct Subsets {
    n: usize,
    next: Option<Vec<usize>>,
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

    #[test]
    fn a_wrong_share_among_enough_good_ones_does_not_block_recovery() {
        let (keys, record) = OpenKeys::create(3, 2).unwrap();
        let good: Vec<Share> = (1..=3).map(|i| keys.keeper_share(i).unwrap()).collect();
        let bad = Share::new(1, &[7u8; 32]).unwrap();
        // The bad share first, so a naive combine of the first two would fail.
        let shares = vec![bad.clone(), good[1].clone(), good[2].clone()];
        let recovered = OpenKeys::recover(&record, &shares).unwrap();
        assert!(recovered.rebuilds_from(&good));
        // Below threshold of good shares: refused.
        assert!(OpenKeys::recover(&record, &[bad, good[2].clone()]).is_err());
        assert!(OpenKeys::recover(&record, &good[..1]).is_err());
    }
}
