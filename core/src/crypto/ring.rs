//! The data-key ring: every generation of the data key a store still needs, sealed under the
//! root key.
//!
//! A rotation that must revoke old shares cannot keep the data key: whoever rebuilds an old
//! root key from old shares and finds any copy of the data key wrapped under it (a backup) has
//! the data key, and with it every secret written later. So a revoking rotation adds a new
//! generation and makes it current; new writes use it at once, and stored records are moved to
//! it in the background. The key id every envelope, record tag and cipher message carries
//! selects the generation that opens it.
//!
//! - *Live* generations keep the whole data key: the current one (sealing, tagging) and older
//!   ones still needed to open records not yet moved.
//! - *Retired* generations keep only their cipher-API subkey, and only for opening: workloads
//!   keep cipher-API ciphertexts outside the store, so those must keep opening after a
//!   rotation. That is no weakness: whoever can rebuild a retired generation from old shares
//!   and an old backup already has that generation's data key.
//! - The audit chain key is fixed when the ring is first made (the first data key's audit
//!   subkey) and never changes, so the audit chain continues across rotations.
//! - The token-hash key is fixed the same way (the first data key's token-hash subkey): Nexus
//!   keeps only a keyed hash of each reference token, which cannot be recomputed under a new
//!   key without the reference, so tokens outlive rotations only if this key does. A ring
//!   sealed before tokens existed (format 1) takes its current generation's token-hash
//!   subkey, and keeps it from then on (every ring made from it carries it, in format 2).
//!
//! Sealed form (format 2; format 1 lacks the token-hash key):
//!
//! ```text
//! format (2) ‖ root key id (4) ‖ nonce (12) ‖ AES-256-GCM(plaintext) ‖ tag (16)
//! plaintext = audit key (32) ‖ token-hash key (32) ‖ live count (u16 BE)
//!             ‖ live keys (32 each, current first)
//!             ‖ retired count (u16 BE) ‖ retired: data key id (4) ‖ cipher subkey (32)
//! ```
//!
//! under a key derived from the root key for this purpose only, with associated data naming
//! what is sealed plus the header.

use std::fmt;

use aes_gcm::Aes256Gcm;
use aes_gcm::aead::KeyInit;
use zeroize::Zeroizing;

use super::CryptoError;
use super::canonical::Canonical;
use super::framed::{self, NONCE_LEN};
use super::keys::{DataKey, KEY_LEN, KeyId, KeyPurpose, RootKey, SubKey, fill_random};
use super::stamped::HEADER_LEN;

/// The sealed key-ring format this build writes, and the newest it reads.
pub const RING_FORMAT: u8 = 2;

/// The format before the token-hash key, still read.
const RING_FORMAT_V1: u8 = 1;

/// HKDF info for the root key's ring-sealing key (never the data-key wrapping key).
const RING_KEY_INFO: &[u8] = b"spike/v1/root/seal-key-ring";

const WHAT: &str = "key ring";

/// Most generations a ring holds (live plus retired); a bound on the sealed record's size.
pub const MAX_GENERATIONS: usize = 1024;

/// Every data-key generation a store needs. Wiped on drop; `Debug` shows only key ids.
pub struct KeyRing {
    audit: Zeroizing<[u8; KEY_LEN]>,
    token_hash: Zeroizing<[u8; KEY_LEN]>,
    /// Current first.
    live: Vec<DataKey>,
    retired: Vec<SubKey>,
}

impl KeyRing {
    /// The ring of a store that has only ever had `data` (a new store, or one written before
    /// rings existed): its audit key is `data`'s audit subkey.
    pub fn single(data: DataKey) -> Self {
        let audit = Zeroizing::new(*data.derive(KeyPurpose::AuditChain).expose_secret());
        let token_hash = Zeroizing::new(*data.derive(KeyPurpose::TokenHash).expose_secret());
        Self {
            audit,
            token_hash,
            live: vec![data],
            retired: Vec::new(),
        }
    }

    /// The current generation: every new value, tag and cipher message uses it.
    pub fn current(&self) -> &DataKey {
        // `live` is never empty: every constructor puts the current key first.
        &self.live[0]
    }

    /// Older generations still needed to open records not yet moved to the current one.
    pub fn older(&self) -> &[DataKey] {
        &self.live[1..]
    }

    /// The cipher-API subkeys of retired generations (opening only).
    pub fn retired_cipher_keys(&self) -> &[SubKey] {
        &self.retired
    }

    /// The audit chain key, the same for the life of the store.
    pub fn audit_key(&self) -> &[u8; KEY_LEN] {
        &self.audit
    }

    /// The key reference tokens are hashed under, the same for the life of the store.
    pub fn token_hash_key(&self) -> &[u8; KEY_LEN] {
        &self.token_hash
    }

    /// A copy of this ring with a fresh current generation; every earlier live generation stays
    /// live until [`KeyRing::retire_older`].
    pub fn rotated(&self) -> Result<Self, CryptoError> {
        if self.live.len() + self.retired.len() >= MAX_GENERATIONS {
            return Err(CryptoError::Malformed {
                what: WHAT,
                reason: "too many generations",
            });
        }
        let mut live = vec![DataKey::generate()?];
        live.extend(self.live.iter().map(DataKey::duplicate));
        Ok(Self {
            audit: self.audit.clone(),
            token_hash: self.token_hash.clone(),
            live,
            retired: self.retired.iter().map(SubKey::duplicate).collect(),
        })
    }

    /// A copy of this ring in which every older generation is retired: its data key (and so
    /// its storage and record keys) is gone, its cipher subkey kept for opening. Call once no
    /// stored record uses an older generation.
    pub fn retire_older(&self) -> Self {
        let mut retired: Vec<SubKey> = self
            .older()
            .iter()
            .map(|k| k.derive(KeyPurpose::Cipher))
            .collect();
        retired.extend(self.retired.iter().map(SubKey::duplicate));
        Self {
            audit: self.audit.clone(),
            token_hash: self.token_hash.clone(),
            live: vec![self.current().duplicate()],
            retired,
        }
    }

    fn encode(&self) -> Zeroizing<Vec<u8>> {
        let mut out = Zeroizing::new(Vec::with_capacity(
            2 * KEY_LEN + 4 + self.live.len() * KEY_LEN + self.retired.len() * (4 + KEY_LEN),
        ));
        out.extend_from_slice(self.audit.as_ref());
        out.extend_from_slice(self.token_hash.as_ref());
        // Both counts are bounded by MAX_GENERATIONS, far below u16::MAX.
        out.extend_from_slice(&(self.live.len() as u16).to_be_bytes());
        for k in &self.live {
            out.extend_from_slice(k.expose());
        }
        out.extend_from_slice(&(self.retired.len() as u16).to_be_bytes());
        for s in &self.retired {
            out.extend_from_slice(&s.data_key_id().to_bytes());
            out.extend_from_slice(s.expose_secret());
        }
        out
    }

    fn decode(format: u8, plain: &[u8]) -> Result<Self, CryptoError> {
        let malformed = |reason| CryptoError::Malformed { what: WHAT, reason };
        let mut r = Reader(plain);
        let audit = r.key().ok_or(malformed("truncated"))?;
        let token_hash = match format {
            RING_FORMAT_V1 => None,
            _ => Some(r.key().ok_or(malformed("truncated"))?),
        };
        let n = r.count().ok_or(malformed("truncated"))?;
        let mut live = Vec::with_capacity(n.min(MAX_GENERATIONS));
        for _ in 0..n {
            live.push(DataKey::from_bytes(r.key().ok_or(malformed("truncated"))?));
        }
        let m = r.count().ok_or(malformed("truncated"))?;
        let mut retired = Vec::with_capacity(m.min(MAX_GENERATIONS));
        for _ in 0..m {
            let id = r.id().ok_or(malformed("truncated"))?;
            let key = r.key().ok_or(malformed("truncated"))?;
            retired.push(SubKey::from_stored(KeyPurpose::Cipher, id, key));
        }
        if live.is_empty() || !r.0.is_empty() {
            return Err(malformed("wrong length"));
        }
        let token_hash = token_hash.unwrap_or_else(|| {
            Zeroizing::new(*live[0].derive(KeyPurpose::TokenHash).expose_secret())
        });
        Ok(Self {
            audit,
            token_hash,
            live,
            retired,
        })
    }
}

/// Reads the ring's fields off the front of a buffer.
struct Reader<'a>(&'a [u8]);

impl Reader<'_> {
    fn take<const N: usize>(&mut self) -> Option<[u8; N]> {
        let (head, rest) = self.0.split_first_chunk::<N>()?;
        self.0 = rest;
        Some(*head)
    }

    fn key(&mut self) -> Option<Zeroizing<[u8; KEY_LEN]>> {
        let mut key = Zeroizing::new([0u8; KEY_LEN]);
        let (head, rest) = self.0.split_first_chunk::<KEY_LEN>()?;
        key.copy_from_slice(head);
        self.0 = rest;
        Some(key)
    }

    fn count(&mut self) -> Option<usize> {
        self.take::<2>().map(|b| usize::from(u16::from_be_bytes(b)))
    }

    fn id(&mut self) -> Option<KeyId> {
        self.take::<4>().map(KeyId::from_bytes)
    }
}

impl fmt::Debug for KeyRing {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KeyRing")
            .field(
                "live",
                &self.live.iter().map(DataKey::key_id).collect::<Vec<_>>(),
            )
            .field(
                "retired",
                &self
                    .retired
                    .iter()
                    .map(SubKey::data_key_id)
                    .collect::<Vec<_>>(),
            )
            .finish_non_exhaustive()
    }
}

fn associated_data(header: &[u8]) -> Canonical {
    let mut c = Canonical::new("spike/v1/sealed-key-ring");
    c.field(header);
    c
}

impl RootKey {
    /// Seals `ring` under this root key with a fresh nonce.
    pub fn seal_ring(&self, ring: &KeyRing) -> Result<Vec<u8>, CryptoError> {
        let key = super::keys::hkdf_sha256(self.expose(), RING_KEY_INFO);
        let cipher = Aes256Gcm::new((&*key).into());
        let mut nonce = [0u8; NONCE_LEN];
        fill_random(&mut nonce)?;
        let id = self.key_id().to_bytes();
        let header = [RING_FORMAT, id[0], id[1], id[2], id[3]];
        framed::seal(
            &cipher,
            &header,
            nonce,
            associated_data(&header).as_bytes(),
            &ring.encode(),
            aes_gcm::P_MAX,
        )
    }

    /// Opens a ring sealed by [`RootKey::seal_ring`]. Fails with [`CryptoError::KeyMismatch`]
    /// for a ring sealed under another root key, [`CryptoError::Unauthentic`] for altered bytes.
    pub fn open_ring(&self, sealed: &[u8]) -> Result<KeyRing, CryptoError> {
        let format = match sealed.first() {
            Some(&RING_FORMAT_V1) => RING_FORMAT_V1,
            _ => RING_FORMAT,
        };
        let parts = framed::split::<HEADER_LEN>(sealed, format, WHAT)?;
        let h = parts.header;
        let found = KeyId::from_bytes([h[1], h[2], h[3], h[4]]);
        let expected = self.key_id();
        if found != expected {
            return Err(CryptoError::KeyMismatch { expected, found });
        }
        let key = super::keys::hkdf_sha256(self.expose(), RING_KEY_INFO);
        let cipher = Aes256Gcm::new((&*key).into());
        let plain = framed::open(&cipher, &parts, associated_data(h).as_bytes())?;
        KeyRing::decode(format, plain.expose_secret())
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn a_ring_round_trips_under_its_root_key_only() {
        let root = RootKey::generate().unwrap();
        let first = DataKey::generate().unwrap();
        let first_id = first.key_id();
        let ring = KeyRing::single(first);
        let audit = *ring.audit_key();
        let two = ring.rotated().unwrap();
        assert_ne!(two.current().key_id(), first_id);
        assert_eq!(two.older()[0].key_id(), first_id);
        let sealed = root.seal_ring(&two).unwrap();
        let back = root.open_ring(&sealed).unwrap();
        assert_eq!(back.current().key_id(), two.current().key_id());
        assert_eq!(back.older()[0].key_id(), first_id);
        assert_eq!(*back.audit_key(), audit);
        let other = RootKey::generate().unwrap();
        assert!(matches!(
            other.open_ring(&sealed),
            Err(CryptoError::KeyMismatch { .. })
        ));
        let mut bent = sealed;
        *bent.last_mut().unwrap() ^= 1;
        assert!(matches!(
            root.open_ring(&bent),
            Err(CryptoError::Unauthentic)
        ));
    }

    #[test]
    fn retiring_keeps_only_the_cipher_subkey_and_the_audit_key() {
        let first = DataKey::generate().unwrap();
        let cipher = *first.derive(KeyPurpose::Cipher).expose_secret();
        let ring = KeyRing::single(first).rotated().unwrap();
        let audit = *ring.audit_key();
        let retired = ring.retire_older();
        assert!(retired.older().is_empty());
        assert_eq!(retired.current().key_id(), ring.current().key_id());
        assert_eq!(retired.retired_cipher_keys().len(), 1);
        assert_eq!(*retired.retired_cipher_keys()[0].expose_secret(), cipher);
        assert_eq!(*retired.audit_key(), audit);
        let root = RootKey::generate().unwrap();
        let back = root.open_ring(&root.seal_ring(&retired).unwrap()).unwrap();
        assert_eq!(*back.retired_cipher_keys()[0].expose_secret(), cipher);
        assert_eq!(
            back.retired_cipher_keys()[0].data_key_id(),
            ring.older()[0].key_id()
        );
        // Nothing of the retired data key itself is left in the sealed ring's plaintext.
        let plain = retired.encode();
        let old = ring.older()[0].expose();
        assert!(!plain.windows(KEY_LEN).any(|w| w == old));
    }

    #[test]
    fn the_token_hash_key_outlives_rotation_and_retirement() {
        let first = DataKey::generate().unwrap();
        let expected = *first.derive(KeyPurpose::TokenHash).expose_secret();
        let ring = KeyRing::single(first);
        assert_eq!(*ring.token_hash_key(), expected);
        let retired = ring.rotated().unwrap().rotated().unwrap().retire_older();
        assert_eq!(*retired.token_hash_key(), expected);
        let root = RootKey::generate().unwrap();
        let back = root.open_ring(&root.seal_ring(&retired).unwrap()).unwrap();
        assert_eq!(*back.token_hash_key(), expected);
        // Its own key: not the audit key, nor any working key of the current generation.
        assert_ne!(*back.token_hash_key(), *back.audit_key());
    }

    #[test]
    fn a_format_1_ring_takes_its_current_token_hash_subkey_and_keeps_it() {
        let root = RootKey::generate().unwrap();
        let ring = KeyRing::single(DataKey::generate().unwrap())
            .rotated()
            .unwrap();
        // The format-1 plaintext: the format-2 one without the token-hash key.
        let mut plain = ring.encode();
        plain.drain(KEY_LEN..2 * KEY_LEN);
        let key = super::super::keys::hkdf_sha256(root.expose(), RING_KEY_INFO);
        let cipher = Aes256Gcm::new((&*key).into());
        let id = root.key_id().to_bytes();
        let header = [RING_FORMAT_V1, id[0], id[1], id[2], id[3]];
        let mut nonce = [0u8; NONCE_LEN];
        fill_random(&mut nonce).unwrap();
        let v1 = framed::seal(
            &cipher,
            &header,
            nonce,
            associated_data(&header).as_bytes(),
            &plain,
            aes_gcm::P_MAX,
        )
        .unwrap();
        let old = root.open_ring(&v1).unwrap();
        let expected = *ring.current().derive(KeyPurpose::TokenHash).expose_secret();
        assert_eq!(*old.token_hash_key(), expected);
        assert_eq!(*old.audit_key(), *ring.audit_key());
        // Rings made from it carry that key on, through a rotation and format 2.
        let next = root
            .open_ring(&root.seal_ring(&old.rotated().unwrap()).unwrap())
            .unwrap();
        assert_eq!(*next.token_hash_key(), expected);
    }

    #[test]
    fn debug_shows_only_ids() {
        let ring = KeyRing::single(DataKey::generate().unwrap());
        let text = format!("{ring:?}");
        assert!(text.contains(&ring.current().key_id().to_string()));
        assert!(!text.contains(&hex::encode(&ring.current().expose()[..4])));
    }
}
