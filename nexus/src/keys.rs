//! The keys of an open Nexus and the init record that lets a rebuilt root key be checked.
//!
//! The root key only wraps the data key; every working key (value envelope, record MACs, audit
//! chain) is derived from the data key, so they survive root-key rotation unchanged. Keeper
//! shares are derived deterministically from the root key, the split parameters and the
//! epoch, so Nexus can re-create any keeper's share on demand. Break-glass shares are a second
//! deterministic split of the same root key ([`SharePurpose::BreakGlass`], own epoch).
//!
//! The init record is not secret and not MACed (it is needed before any key is known), but it
//! checks itself: every parameter feeds the share derivation, so an edited record rebuilds a
//! wrong root key, which the wrapped data key refuses.
//!
//! Shamir shares of one secret cannot be revoked: any `threshold` of them rebuild it, whatever
//! split is dealt later. So whatever must make old shares useless (rotation, rekey) changes the
//! root key itself; a new split of an unchanged root key would only relabel it.

use std::sync::RwLock;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use spike_core::crypto::{
    Aad, CryptoError, DataKey, EnvelopeKey, KeyPurpose, RecordMac, RecordTag, RecordType, RootKey,
    Share, ShareParams, SharePurpose, WrappedKey, combine, share_for, split,
};
use spike_core::secret::SecretBytes;
use zeroize::Zeroizing;

/// Most share subsets tried when rebuilding the root key (C(7,3) = 35; C(255,2) is larger
/// and capped).
const MAX_SUBSETS: usize = 1024;

/// The newest init-record format this build reads and the one it writes. Format 2 added the
/// break-glass split and the previous split kept during a rotation; a format-1 record reads as
/// a format-2 record without them.
const INIT_FORMAT: u32 = 2;

/// One keeper split of one root key, as the init record stores it: the split parameters, the
/// data key wrapped under that root key, and the break-glass split of the same root key if
/// one was exported.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct KeySplit {
    shares: u8,
    threshold: u8,
    epoch: u32,
    wrapped_data_key: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    break_glass: Option<BreakGlassExport>,
}

/// A break-glass export of one root key: its split parameters and a digest of each share, so
/// restore checks every share on its own before combining. A share of an earlier export of
/// the same root key would still combine (see the module docs), so the label alone is not
/// enough to refuse it; the digest is. Digests of 256-bit random-looking values reveal nothing.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct BreakGlassExport {
    shares: u8,
    threshold: u8,
    epoch: u32,
    digests: Vec<String>,
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
    fn new(params: ShareParams, wrapped: &WrappedKey) -> Self {
        Self {
            shares: params.shares(),
            threshold: params.threshold(),
            epoch: params.epoch(),
            wrapped_data_key: hex::encode(wrapped.as_bytes()),
            break_glass: None,
        }
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

    fn wrapped(&self) -> Result<WrappedKey, CryptoError> {
        let bytes = hex::decode(&self.wrapped_data_key).map_err(|_| CryptoError::Malformed {
            what: "wrapped data key",
            reason: "not hex",
        })?;
        WrappedKey::from_bytes(&bytes)
    }

    /// True when `root` is this split's root key (it opens the wrapped data key).
    #[cfg(test)]
    pub(crate) fn opens_with(&self, root: &RootKey) -> bool {
        self.wrapped().and_then(|w| root.unwrap(&w)).is_ok()
    }

    /// Rebuilds this split's root key from shares of the split `params` describes (the keeper
    /// split or the break-glass split) and opens the data key with it.
    ///
    /// Tries `threshold`-sized subsets until one opens the wrapped data key, so one wrong
    /// share (corrupted or malicious) cannot block recovery while enough good ones are there.
    /// The number of subsets tried is bounded.
    pub(crate) fn rebuild(
        &self,
        params: &ShareParams,
        shares: &[Share],
    ) -> Result<(RootKey, DataKey), CryptoError> {
        let wrapped = self.wrapped()?;
        let mut last = CryptoError::TooFewShares {
            got: shares.len(),
            need: params.threshold(),
        };
        for subset in Subsets::new(shares.len(), usize::from(params.threshold())).take(MAX_SUBSETS)
        {
            let picked: Vec<Share> = subset.iter().map(|&i| shares[i].clone()).collect();
            match combine(params, &picked).and_then(|root| {
                let data = root.unwrap(&wrapped)?;
                Ok((root, data))
            }) {
                Ok(found) => return Ok(found),
                Err(e) => last = e,
            }
        }
        Err(last)
    }
}

/// What Nexus stores at initialization (not secret), in the store's `meta` table.
///
/// `current` is the split in force. `previous` is set only while a rotation or rekey waits
/// for `threshold` keepers to confirm the new shares: until then keepers may still hold only
/// the old split's shares, so a restart must be able to rebuild the old root key (see
/// `rotation.rs` for the state machine).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct InitRecord {
    created: String,
    current: KeySplit,
    previous: Option<KeySplit>,
    /// The highest break-glass epoch ever issued, so a new export never reuses one (old files
    /// must stay refused even after a rekey that keeps the root key).
    break_glass_epoch: u32,
}

/// The stored form: the current split's fields at top level, as format 1 had them.
#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct StoredInitRecord {
    format: u32,
    shares: u8,
    threshold: u8,
    epoch: u32,
    wrapped_data_key: String,
    created: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    break_glass: Option<BreakGlassExport>,
    #[serde(default, skip_serializing_if = "is_zero")]
    break_glass_epoch: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    previous: Option<KeySplit>,
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
            created: self.created.clone(),
            break_glass: c.break_glass.clone(),
            break_glass_epoch: self.break_glass_epoch,
            previous: self.previous.clone(),
        };
        serde_json::to_vec(&stored).unwrap_or_default()
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
        let s: StoredInitRecord =
            serde_json::from_slice(bytes).map_err(|_| "init record is malformed".to_owned())?;
        Ok(Self {
            created: s.created,
            current: KeySplit {
                shares: s.shares,
                threshold: s.threshold,
                epoch: s.epoch,
                wrapped_data_key: s.wrapped_data_key,
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

    /// Starts a rotation or rekey (`wrapped`: the data key under the new root key): the new
    /// split becomes current, the current one is kept as `previous` until the keepers confirm.
    /// The new root key has no break-glass export yet.
    pub(crate) fn begin_change(&self, params: ShareParams, wrapped: &WrappedKey) -> Self {
        Self {
            created: self.created.clone(),
            current: KeySplit::new(params, wrapped),
            previous: Some(self.current.clone()),
            break_glass_epoch: self.break_glass_epoch,
        }
    }

    /// Redoes an interrupted rotation whose new root key was lost: replaces `current`, keeps
    /// `previous` (the split the keepers still hold).
    pub(crate) fn redo_change(&self, params: ShareParams, wrapped: &WrappedKey) -> Self {
        Self {
            current: KeySplit::new(params, wrapped),
            ..self.clone()
        }
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

/// The split parameters, for callers.
#[derive(Debug, Clone, Copy)]
pub(crate) struct SplitInfo {
    pub(crate) threshold: u8,
}

/// The root key and the keeper split it is dealt with. Swapped whole by a rotation or rekey.
struct RootSplit {
    root: RootKey,
    params: ShareParams,
}

/// Keys held while Nexus is open. Every key zeroizes on drop.
///
/// The data key and everything derived from it never change while open; only the root key
/// and its keeper split do (rotation, rekey), behind their own lock, so readers of secrets
/// never wait for a rotation.
pub(crate) struct OpenKeys {
    split: RwLock<RootSplit>,
    /// Kept so the root key can be rotated (re-wrapping this key) and further purposes
    /// derived on demand.
    data: DataKey,
    envelope: EnvelopeKey,
    mac: RecordMac,
    audit: Zeroizing<[u8; 32]>,
}

impl OpenKeys {
    pub(crate) fn from_parts(root: RootKey, data: DataKey, params: ShareParams) -> Self {
        let audit = Zeroizing::new(*data.derive(KeyPurpose::AuditChain).expose_secret());
        Self {
            split: RwLock::new(RootSplit { root, params }),
            envelope: EnvelopeKey::new(&data),
            mac: RecordMac::new(&data),
            audit,
            data,
        }
    }

    fn split(&self) -> std::sync::RwLockReadGuard<'_, RootSplit> {
        self.split.read().unwrap_or_else(|p| p.into_inner())
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
            created: crate::secrets::now(),
            current: KeySplit::new(params, &wrapped),
            previous: None,
            break_glass_epoch: 0,
        };
        Ok((Self::from_parts(root, data, params), record))
    }

    /// Rebuilds the root key from keeper shares of the record's current split.
    #[cfg(test)]
    pub(crate) fn recover(record: &InitRecord, shares: &[Share]) -> Result<Self, CryptoError> {
        let params = record.current.params()?;
        let (root, data) = record.current.rebuild(&params, shares)?;
        Ok(Self::from_parts(root, data, params))
    }

    pub(crate) fn params(&self) -> SplitInfo {
        let s = self.split();
        SplitInfo {
            threshold: s.params.threshold(),
        }
    }

    /// Every keeper share of the current split, with its epoch, from one consistent view (a
    /// rotation swapping the split in between cannot mix an old share with a new epoch).
    pub(crate) fn keeper_shares(&self) -> Result<(u32, Vec<Share>), CryptoError> {
        let s = self.split();
        let shares = split(&s.root, SharePurpose::Keepers, &s.params)?;
        Ok((s.params.epoch(), shares))
    }

    /// True when `share` is keeper `index`'s share of the current split (constant time).
    pub(crate) fn is_current_share(&self, index: u8, share: &Share) -> bool {
        let s = self.split();
        share.index() == index
            && share_for(&s.root, SharePurpose::Keepers, &s.params, index)
                .is_ok_and(|m| m == *share)
    }

    /// True when `threshold` of `shares` rebuild exactly this root key.
    pub(crate) fn rebuilds_from(&self, shares: &[Share]) -> bool {
        let s = self.split();
        let t = usize::from(s.params.threshold());
        shares.len() >= t
            && combine(&s.params, &shares[..t])
                .map(|k| k.key_id() == s.root.key_id())
                .unwrap_or(false)
    }

    /// The break-glass shares of the current root key for `params`.
    pub(crate) fn break_glass_shares(
        &self,
        params: &ShareParams,
    ) -> Result<Vec<Share>, CryptoError> {
        split(&self.split().root, SharePurpose::BreakGlass, params)
    }

    /// The data key wrapped under `root` (rotation: nothing else is re-encrypted).
    pub(crate) fn wrap_data_key(&self, root: &RootKey) -> Result<WrappedKey, CryptoError> {
        root.wrap(&self.data)
    }

    /// Switches to a new root key and keeper split. Call only once the record naming them is
    /// durable.
    pub(crate) fn install(&self, root: RootKey, params: ShareParams) {
        let mut s = self.split.write().unwrap_or_else(|p| p.into_inner());
        // The old root key zeroizes as it drops here.
        *s = RootSplit { root, params };
    }

    pub(crate) fn encrypt_value(
        &self,
        path: &str,
        version: u64,
        incarnation: u64,
        plaintext: &[u8],
    ) -> Result<Vec<u8>, CryptoError> {
        self.envelope
            .seal(&value_aad(path, version, incarnation), plaintext)
    }

    pub(crate) fn decrypt_value(
        &self,
        path: &str,
        version: u64,
        incarnation: u64,
        ciphertext: &[u8],
    ) -> Result<SecretBytes, CryptoError> {
        self.envelope
            .open(&value_aad(path, version, incarnation), ciphertext)
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

    fn params(shares: u8, threshold: u8, epoch: u32) -> ShareParams {
        ShareParams::new(shares, threshold, epoch).unwrap()
    }

    #[test]
    fn a_wrong_share_among_enough_good_ones_does_not_block_recovery() {
        let (keys, record) = OpenKeys::create(3, 2).unwrap();
        let (_, good) = keys.keeper_shares().unwrap();
        let bad = Share::new(1, &[7u8; 32]).unwrap();
        // The bad share first, so a naive combine of the first two would fail.
        let shares = vec![bad.clone(), good[1].clone(), good[2].clone()];
        let recovered = OpenKeys::recover(&record, &shares).unwrap();
        assert!(recovered.rebuilds_from(&good));
        // Below threshold of good shares: refused.
        assert!(OpenKeys::recover(&record, &[bad, good[2].clone()]).is_err());
        assert!(OpenKeys::recover(&record, &good[..1]).is_err());
    }

    #[test]
    fn format_1_records_still_read_and_newer_formats_are_refused() {
        let (_, record) = OpenKeys::create(3, 2).unwrap();
        let c = record.current();
        let v1 = serde_json::json!({
            "format": 1, "shares": 3, "threshold": 2, "epoch": 1,
            "wrapped_data_key": c.wrapped_data_key, "created": "2025-01-01T00:00:00Z",
        });
        let old = InitRecord::decode(&serde_json::to_vec(&v1).unwrap()).unwrap();
        assert_eq!(old.current(), c);
        assert!(old.previous().is_none());
        assert_eq!(old.next_break_glass_epoch().unwrap(), 1);
        // Written back as format 2, read back the same.
        let again = InitRecord::decode(&old.encode()).unwrap();
        assert_eq!(again, old);
        let (keys, _) = OpenKeys::create(3, 2).unwrap();
        let bg = keys.break_glass_shares(&params(3, 2, 1)).unwrap();
        let fresh = RootKey::generate().unwrap();
        let bytes = record
            .with_break_glass(BreakGlassExport::new(params(3, 2, 1), &bg))
            .begin_change(params(3, 2, 2), &keys.wrap_data_key(&fresh).unwrap())
            .encode();
        let round = InitRecord::decode(&bytes).unwrap();
        assert_eq!(round.encode(), bytes);
        assert!(round.previous().unwrap().break_glass().is_some());
        let mut v3: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
        assert_eq!(v3["format"], 2);
        v3["format"] = 3.into();
        let e = InitRecord::decode(&serde_json::to_vec(&v3).unwrap()).unwrap_err();
        assert!(e.contains("newer SPIKE"), "{e}");
        let e = InitRecord::decode(br#"{"format":2,"bogus":1}"#).unwrap_err();
        assert_eq!(e, "init record is malformed");
    }

    /// What a rotation or rekey does to the keys: a fresh root key wrapping the same data key.
    fn change(keys: &OpenKeys, record: &InitRecord, shares: u8, threshold: u8) -> InitRecord {
        let fresh = RootKey::generate().unwrap();
        let p = params(shares, threshold, record.next_epoch().unwrap());
        let next = record.begin_change(p, &keys.wrap_data_key(&fresh).unwrap());
        keys.install(fresh, p);
        next
    }

    #[test]
    fn a_new_split_of_the_same_root_key_would_not_revoke_old_shares() {
        // Why rekey makes a new root key: shares of an unchanged secret still rebuild it under
        // any later split's parameters (Lagrange interpolation ignores the epoch).
        let (keys, record) = OpenKeys::create(3, 2).unwrap();
        let (_, old) = keys.keeper_shares().unwrap();
        let relabelled = params(3, 3, 9);
        let (root, _) = record.current().rebuild(&relabelled, &old).unwrap();
        assert!(record.current().opens_with(&root));
    }

    #[test]
    fn rekey_makes_old_keeper_shares_useless() {
        let (keys, record) = OpenKeys::create(3, 2).unwrap();
        let (_, old) = keys.keeper_shares().unwrap();
        let pending = change(&keys, &record, 3, 3);
        let p2 = pending.current().params().unwrap();
        let (epoch, new) = keys.keeper_shares().unwrap();
        assert_eq!(epoch, 2);
        assert!(old.iter().zip(&new).all(|(a, b)| a != b));
        // The current split needs the new shares; the old ones rebuild only the previous split.
        assert!(pending.current().rebuild(&p2, &old).is_err());
        assert!(
            pending.current().rebuild(&p2, &new[..2]).is_err(),
            "threshold is 3 now"
        );
        let (root, _) = pending.current().rebuild(&p2, &new).unwrap();
        let prev = pending.previous().unwrap();
        let (old_root, _) = prev.rebuild(&prev.params().unwrap(), &old).unwrap();
        assert_ne!(root.key_id(), old_root.key_id());
        // Once finished, the old shares rebuild nothing the record accepts.
        let done = pending.finished();
        assert!(done.previous().is_none());
        assert!(done.current().rebuild(&p2, &old).is_err());
        assert!(!done.current().opens_with(&old_root));
    }

    #[test]
    fn rotation_rewraps_the_same_data_key_under_a_new_root_key() {
        let (keys, record) = OpenKeys::create(3, 2).unwrap();
        let ciphertext = keys.encrypt_value("a/b", 1, 7, b"value").unwrap();
        let (_, old) = keys.keeper_shares().unwrap();
        let (old_root, data) = record
            .current()
            .rebuild(&record.current().params().unwrap(), &old)
            .unwrap();
        let pending = change(&keys, &record, 3, 2);
        let p2 = pending.current().params().unwrap();
        let (_, new) = keys.keeper_shares().unwrap();
        let (new_root, new_data) = pending.current().rebuild(&p2, &new).unwrap();
        assert_ne!(new_root.key_id(), old_root.key_id());
        assert_eq!(new_data.key_id(), data.key_id());
        assert!(!pending.current().opens_with(&old_root));
        assert!(pending.previous().unwrap().opens_with(&old_root));
        // Values encrypted before decrypt after, with keys rebuilt from the new shares.
        let reopened = OpenKeys::from_parts(new_root, new_data, p2);
        assert_eq!(
            reopened
                .decrypt_value("a/b", 1, 7, &ciphertext)
                .unwrap()
                .expose_secret(),
            b"value"
        );
    }

    #[test]
    fn only_the_newest_break_glass_export_is_accepted() {
        let (keys, record) = OpenKeys::create(3, 2).unwrap();
        let p1 = params(3, 2, record.next_break_glass_epoch().unwrap());
        let files1 = keys.break_glass_shares(&p1).unwrap();
        let first = record.with_break_glass(BreakGlassExport::new(p1, &files1));
        let (split, export, prev) = first.break_glass_split(p1.epoch()).unwrap();
        assert!(!prev);
        assert!(files1.iter().all(|s| export.accepts(s)));
        split
            .rebuild(&export.params().unwrap(), &files1[1..])
            .unwrap();
        // Keeper shares are not break-glass shares.
        let (_, keeper) = keys.keeper_shares().unwrap();
        assert!(keeper.iter().all(|s| !export.accepts(s)));

        // A second export of the same root key: the first one's shares are refused one by
        // one, even relabelled with the new epoch.
        let p2 = params(2, 2, first.next_break_glass_epoch().unwrap());
        let files2 = keys.break_glass_shares(&p2).unwrap();
        let second = first.with_break_glass(BreakGlassExport::new(p2, &files2));
        assert!(second.break_glass_split(p1.epoch()).is_none());
        let (_, export, _) = second.break_glass_split(p2.epoch()).unwrap();
        assert!(files1.iter().all(|s| !export.accepts(s)));
        assert!(files2.iter().all(|s| export.accepts(s)));

        // A rotation or rekey keeps the export usable only while pending, and its epoch is
        // never reused; afterwards the old files rebuild a root key the record refuses.
        let pending = change(&keys, &second, 3, 2);
        assert!(pending.break_glass_split(p2.epoch()).unwrap().2);
        let done = pending.finished();
        assert!(done.break_glass_split(p2.epoch()).is_none());
        assert_eq!(done.live_break_glass_epoch(), None);
        assert_eq!(done.next_break_glass_epoch().unwrap(), p2.epoch() + 1);
        let (old_root, _) = second.current().rebuild(&p2, &files2).unwrap();
        assert!(!done.current().opens_with(&old_root));
    }
}
