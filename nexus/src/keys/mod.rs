//! The keys of an open Nexus and the init record that lets a rebuilt root key be checked.
//!
//! The root key wraps the key ring ([`KeyRing`]): every data-key generation the store still
//! needs. Every working key (value envelope, record MACs, cipher API) is derived from a
//! generation's data key; new output always uses the current generation, and the key id each
//! envelope, tag and cipher message carries picks the generation that opens it. A revoking
//! rotation adds a generation (see `rotation.rs`), re-encryption moves stored records to it
//! (`reencrypt.rs`), and then the older generations are retired. The audit chain key is the
//! ring's, fixed for the life of the store. Keeper shares are derived deterministically from
//! the root key, the split parameters and the epoch, so Nexus can re-create any keeper's share
//! on demand. Break-glass shares are a second deterministic split of the same root key
//! ([`SharePurpose::BreakGlass`], own epoch).
//!
//! The init record is not secret and not MACed (it is needed before any key is known), but it
//! checks itself: every parameter feeds the share derivation, so an edited record rebuilds a
//! wrong root key, which the wrapped data key refuses.
//!
//! Shamir shares of one secret cannot be revoked: any `threshold` of them rebuild it, whatever
//! split is dealt later. So whatever must make old shares useless (rotation, rekey) changes the
//! root key itself; a new split of an unchanged root key would only relabel it. And since an
//! old root key still opens old copies of the store (backups), the data key changes too.
//!
//! Modules: [`key_split`] (one split and rebuilding from shares), [`record`] (the init record),
//! [`generations`] (the working keys of each generation); this file holds the keys of an open
//! Nexus.

mod generations;
mod key_split;
mod record;

use std::sync::{Arc, RwLock};

use spike_core::crypto::{
    Aad, CipherKey, CryptoError, KeyId, KeyPurpose, KeyRing, RecordTag, RecordType, RootKey, Share,
    ShareParams, SharePurpose, combine, share_for, split,
};
use spike_core::secret::SecretBytes;
use zeroize::Zeroizing;

use generations::Generations;
pub(crate) use key_split::{BreakGlassExport, KeySplit};
pub(crate) use record::{InitRecord, InitRecordError};

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
/// The root key and its keeper split (rotation, rekey) and the generations (rotation,
/// retiring) each sit behind their own lock, held only to copy an `Arc` or swap a value, so
/// readers of secrets never wait for a rotation.
pub(crate) struct OpenKeys {
    split: RwLock<RootSplit>,
    generations: RwLock<Arc<Generations>>,
    /// The ring's audit chain key: the same for the life of the store.
    audit: Zeroizing<[u8; 32]>,
    /// The ring's token-hash key: the same for the life of the store, so token bindings
    /// (found by the keyed hash of a reference Nexus never keeps) outlive rotations.
    token_hash: Zeroizing<[u8; 32]>,
}

impl OpenKeys {
    pub(crate) fn from_parts(root: RootKey, ring: KeyRing, params: ShareParams) -> Self {
        let audit = Zeroizing::new(*ring.audit_key());
        let token_hash = Zeroizing::new(*ring.token_hash_key());
        Self {
            token_hash,
            split: RwLock::new(RootSplit { root, params }),
            generations: RwLock::new(Arc::new(Generations::new(ring))),
            audit,
        }
    }

    fn split(&self) -> std::sync::RwLockReadGuard<'_, RootSplit> {
        self.split.read().unwrap_or_else(|p| p.into_inner())
    }

    fn generations(&self) -> Arc<Generations> {
        self.generations
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// The current generation's subkey for `purpose` (new output only).
    pub(crate) fn subkey(&self, purpose: KeyPurpose) -> spike_core::crypto::SubKey {
        self.generations().ring().current().derive(purpose)
    }

    /// The key a backup is sealed with: the current generation's backup subkey.
    pub(crate) fn backup_key(&self) -> spike_core::crypto::BackupKey {
        spike_core::crypto::BackupKey::new(self.generations().ring().current())
    }

    /// A one-way name of the deployment, the same for the life of the store (it comes from
    /// the audit chain key, which rotations keep): hex of SHA-256 over a label and that key.
    pub(crate) fn deployment_id(&self) -> String {
        use sha2::Digest as _;
        let mut h = sha2::Sha256::new();
        h.update(b"spike/v1/deployment-id");
        h.update(self.audit.as_ref());
        hex::encode(&h.finalize()[..16])
    }

    /// The cipher-API key new messages are sealed with (the current generation's).
    pub(crate) fn cipher_for_seal(&self) -> Result<CipherKey, CryptoError> {
        CipherKey::new(&self.subkey(KeyPurpose::Cipher))
    }

    /// The cipher-API key that opens `sealed`: the generation its header names, live or
    /// retired (workloads keep their ciphertexts outside the store). An unknown id gets the
    /// current key, which refuses it with the key-mismatch error.
    pub(crate) fn cipher_for_open(&self, sealed: &[u8]) -> Result<CipherKey, CryptoError> {
        self.generations().cipher_for(stamped_id(sealed))
    }

    /// Creates a fresh root key and key ring (first initialization).
    pub(crate) fn create(shares: u8, threshold: u8) -> Result<(Self, InitRecord), CryptoError> {
        let params = ShareParams::new(shares, threshold, 1)?;
        let root = RootKey::generate()?;
        let ring = KeyRing::single(spike_core::crypto::DataKey::generate()?);
        let record = InitRecord {
            created: crate::clock::now(),
            current: KeySplit::seal(params, &root, &ring)?,
            previous: None,
            break_glass_epoch: 0,
        };
        Ok((Self::from_parts(root, ring, params), record))
    }

    /// Rebuilds the root key from keeper shares of the record's current split.
    #[cfg(test)]
    pub(crate) fn recover(record: &InitRecord, shares: &[Share]) -> Result<Self, CryptoError> {
        let params = record.current.params()?;
        let (root, ring) = record.current.rebuild(&params, shares)?;
        Ok(Self::from_parts(root, ring, params))
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

    /// The ring a revoking rotation installs: a fresh current generation, every live one kept.
    pub(crate) fn rotated_ring(&self) -> Result<KeyRing, CryptoError> {
        self.generations().ring().rotated()
    }

    /// `record` with a change to `new_root` and `params` begun, both splits holding `ring`
    /// (the previous one sealed under this root key, still in force).
    pub(crate) fn begin_change(
        &self,
        record: &InitRecord,
        params: ShareParams,
        new_root: &RootKey,
        ring: &KeyRing,
    ) -> Result<InitRecord, CryptoError> {
        record.begin_change(params, new_root, &self.split().root, ring)
    }

    /// `record` with the older generations retired from the current split's ring, and that
    /// ring (call once no stored record uses them, and only while no previous split is kept).
    pub(crate) fn retire_older(
        &self,
        record: &InitRecord,
    ) -> Result<(InitRecord, KeyRing), CryptoError> {
        let ring = self.generations().ring().retire_older();
        let next = record.with_ring(&self.split().root, &ring)?;
        Ok((next, ring))
    }

    /// Switches to a new root key, keeper split and ring. Call only once the record naming
    /// them is durable.
    pub(crate) fn install(&self, root: RootKey, params: ShareParams, ring: KeyRing) {
        let mut s = self.split.write().unwrap_or_else(|p| p.into_inner());
        // The old root key zeroizes as it drops here.
        *s = RootSplit { root, params };
        drop(s);
        self.install_ring(ring);
    }

    /// Switches to `ring`. Call only once the record holding it is durable. Callers that still
    /// hold the old generations (an `Arc`) keep them until they finish.
    pub(crate) fn install_ring(&self, ring: KeyRing) {
        *self.generations.write().unwrap_or_else(|p| p.into_inner()) =
            Arc::new(Generations::new(ring));
    }

    /// The current generation's id: what every new envelope, tag and cipher message carries.
    pub(crate) fn current_generation(&self) -> KeyId {
        self.generations().ring().current().key_id()
    }

    /// How many older generations are still live (records may still use them).
    pub(crate) fn older_generations(&self) -> usize {
        self.generations().ring().older().len()
    }

    pub(crate) fn encrypt_value(
        &self,
        path: &str,
        version: u64,
        incarnation: u64,
        plaintext: &[u8],
    ) -> Result<Vec<u8>, CryptoError> {
        self.generations()
            .current_envelope()
            .seal(&value_aad(path, version, incarnation), plaintext)
    }

    pub(crate) fn decrypt_value(
        &self,
        path: &str,
        version: u64,
        incarnation: u64,
        ciphertext: &[u8],
    ) -> Result<SecretBytes, CryptoError> {
        self.generations()
            .envelope_for(stamped_id(ciphertext))
            .open(&value_aad(path, version, incarnation), ciphertext)
    }

    pub(crate) fn record_tag(&self, record: RecordType, key: &[u8], body: &[u8]) -> RecordTag {
        self.generations().current_mac().tag(record, key, body)
    }

    pub(crate) fn verify_record_tag(
        &self,
        record: RecordType,
        key: &[u8],
        body: &[u8],
        tag: &[u8],
    ) -> bool {
        let generations = self.generations();
        RecordTag::from_bytes(tag)
            .and_then(|t| {
                generations
                    .mac_for(Some(t.key_id()))
                    .verify(record, key, body, &t)
            })
            .is_ok()
    }

    /// A random u64 (path incarnations).
    pub(crate) fn random_u64(&self) -> Result<u64, CryptoError> {
        let mut b = [0u8; 8];
        spike_core::crypto::fill_random(&mut b)?;
        Ok(u64::from_be_bytes(b))
    }

    /// The keyed hash a reference token is stored under, under the ring's token-hash key
    /// (unchanged by rotations).
    pub(crate) fn token_hash(&self, reference: &spike_core::token::TokenRef) -> [u8; 32] {
        reference.keyed_hash(&self.token_hash)
    }

    /// The audit chain key. It is the ring's, unchanged by rotations, so the chain continues.
    pub(crate) fn audit_key(&self) -> &[u8; 32] {
        &self.audit
    }
}

/// The data key id in bytes 1..5 of a stored envelope, record tag or cipher message (all start
/// with `format ‖ key id`), if the bytes are long enough.
pub(crate) fn stamped_id(bytes: &[u8]) -> Option<KeyId> {
    let id: [u8; 4] = bytes.get(1..5)?.try_into().ok()?;
    Some(KeyId::from_bytes(id))
}

fn value_aad(path: &str, version: u64, incarnation: u64) -> Aad<'_> {
    Aad {
        record: RecordType::SecretValue,
        path,
        version,
        incarnation,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
        let (k0, record) = OpenKeys::create(3, 2).unwrap();
        let c = record.current();
        let v1 = serde_json::json!({
            "format": 1, "shares": 3, "threshold": 2, "epoch": 1,
            "wrapped_data_key": c.wrapped_data_key, "created": "2025-01-01T00:00:00Z",
        });
        let old = InitRecord::decode(&serde_json::to_vec(&v1).unwrap()).unwrap();
        // A record from before key rings: its one data key is the ring, and it still opens.
        assert_eq!(old.current().wrapped_data_key, c.wrapped_data_key);
        assert!(old.current().wrapped_ring.is_none());
        let (_, shares) = k0.keeper_shares().unwrap();
        let (_, ring) = old
            .current()
            .rebuild(&c.params().unwrap(), &shares)
            .unwrap();
        assert_eq!(ring.current().key_id(), k0.current_generation());
        assert!(ring.older().is_empty());
        assert!(old.previous().is_none());
        assert_eq!(old.next_break_glass_epoch().unwrap(), 1);
        // Written back as format 2, read back the same.
        let again = InitRecord::decode(&old.encode()).unwrap();
        assert_eq!(again, old);
        let (keys, _) = OpenKeys::create(3, 2).unwrap();
        let bg = keys.break_glass_shares(&params(3, 2, 1)).unwrap();
        let fresh = RootKey::generate().unwrap();
        let bytes = keys
            .begin_change(
                &record.with_break_glass(BreakGlassExport::new(params(3, 2, 1), &bg)),
                params(3, 2, 2),
                &fresh,
                &keys.rotated_ring().unwrap(),
            )
            .unwrap()
            .encode();
        let round = InitRecord::decode(&bytes).unwrap();
        assert_eq!(round.encode(), bytes);
        assert!(round.previous().unwrap().break_glass().is_some());
        let mut v3: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
        assert_eq!(v3["format"], 3);
        v3["format"] = 4.into();
        let e = InitRecord::decode(&serde_json::to_vec(&v3).unwrap())
            .unwrap_err()
            .to_string();
        assert!(e.contains("newer SPIKE"), "{e}");
        let e = InitRecord::decode(br#"{"format":2,"bogus":1}"#)
            .unwrap_err()
            .to_string();
        assert_eq!(e, "init record is malformed");
    }

    /// What a rotation or rekey does to the keys: a fresh root key holding a ring with a
    /// fresh data key generation.
    fn change(keys: &OpenKeys, record: &InitRecord, shares: u8, threshold: u8) -> InitRecord {
        let fresh = RootKey::generate().unwrap();
        let p = params(shares, threshold, record.next_epoch().unwrap());
        let ring = keys.rotated_ring().unwrap();
        let next = keys.begin_change(record, p, &fresh, &ring).unwrap();
        keys.install(fresh, p, ring);
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
    fn rotation_makes_a_new_data_key_and_old_values_still_open_until_retired() {
        let (keys, record) = OpenKeys::create(3, 2).unwrap();
        let ciphertext = keys.encrypt_value("a/b", 1, 7, b"value").unwrap();
        let tag = keys.record_tag(RecordType::Policy, b"p", b"body");
        let cipher = keys
            .cipher_for_seal()
            .unwrap()
            .seal(&cipher_aad(), Default::default(), b"kept outside")
            .unwrap();
        let audit = *keys.audit_key();
        let (_, old) = keys.keeper_shares().unwrap();
        let (old_root, old_ring) = record
            .current()
            .rebuild(&record.current().params().unwrap(), &old)
            .unwrap();
        let pending = change(&keys, &record, 3, 2);
        let p2 = pending.current().params().unwrap();
        let (_, new) = keys.keeper_shares().unwrap();
        let (new_root, new_ring) = pending.current().rebuild(&p2, &new).unwrap();
        assert_ne!(new_root.key_id(), old_root.key_id());
        assert_ne!(new_ring.current().key_id(), old_ring.current().key_id());
        assert_eq!(keys.current_generation(), new_ring.current().key_id());
        assert!(!pending.current().opens_with(&old_root));
        // While pending, the old root key opens the new ring too (a restart may need it).
        assert!(pending.previous().unwrap().opens_with(&old_root));
        // New writes use the new generation at once; old ones still open and verify.
        let fresh = keys.encrypt_value("a/c", 1, 7, b"new").unwrap();
        assert_eq!(stamped_id(&fresh), Some(new_ring.current().key_id()));
        let reopened = OpenKeys::from_parts(new_root, new_ring, p2);
        assert_eq!(
            reopened
                .decrypt_value("a/b", 1, 7, &ciphertext)
                .unwrap()
                .expose_secret(),
            b"value"
        );
        assert!(reopened.verify_record_tag(RecordType::Policy, b"p", b"body", tag.as_bytes()));
        assert_eq!(*reopened.audit_key(), audit);
        // Retired: the old data key is gone from the ring; values under it no longer open,
        // but cipher-API messages workloads keep still do, and the audit key is unchanged.
        let done = pending.finished();
        let (retired_record, ring) = reopened.retire_older(&done).unwrap();
        reopened.install_ring(ring);
        assert_eq!(reopened.older_generations(), 0);
        assert!(reopened.decrypt_value("a/b", 1, 7, &ciphertext).is_err());
        assert!(!reopened.verify_record_tag(RecordType::Policy, b"p", b"body", tag.as_bytes()));
        assert_eq!(
            reopened
                .cipher_for_open(&cipher)
                .unwrap()
                .open(&cipher_aad(), &cipher)
                .unwrap()
                .expose_secret(),
            b"kept outside"
        );
        assert_eq!(*reopened.audit_key(), audit);
        // The retired record still opens with the new shares, to the same keys.
        let (_, ring) = retired_record.current().rebuild(&p2, &new).unwrap();
        assert!(ring.older().is_empty());
        assert_eq!(*ring.audit_key(), audit);
    }

    fn cipher_aad() -> spike_core::crypto::CipherAad<'static> {
        static CALLER: std::sync::LazyLock<spike_core::id::SpiffeId> =
            std::sync::LazyLock::new(|| "spiffe://example.org/app".parse().unwrap());
        spike_core::crypto::CipherAad {
            context: "apps/x",
            caller: &CALLER,
        }
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
