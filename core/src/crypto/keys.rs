//! The key hierarchy: root key, data key, per-purpose subkeys and key ids.
//!
//! ```text
//! RootKey (KEK, split into Shamir shares, never on disk)
//!   ├─ wraps ──────────────> DataKey (DEK, stored only wrapped)
//!   │                          └─ HKDF-SHA256(info = KeyPurpose::info()) ─> SubKey per purpose
//!   ├─ HKDF ─> key-wrapping key
//!   ├─ HKDF ─> share seeds (see `shamir`)
//!   └─ HMAC ─> KeyId
//! ```
//!
//! A revoking rotation makes a new root key and a new data key generation (see `ring`); a
//! store keeps every generation it still needs in its [`super::KeyRing`].

use std::fmt;
use std::str::FromStr;

use hkdf::Hkdf;
use hmac::{Hmac, KeyInit, Mac};
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use sha2::Sha256;
use zeroize::Zeroizing;

use super::CryptoError;

/// Length of every symmetric key in the hierarchy, in bytes.
pub const KEY_LEN: usize = 32;

/// Input to the one-way key id: `HMAC-SHA256(key, KEY_ID_LABEL)`, first 4 bytes.
const KEY_ID_LABEL: &[u8] = b"spike/v1/key-id";

/// HKDF info for the root key's key-wrapping key.
const WRAP_KEY_INFO: &[u8] = b"spike/v1/root/wrap-data-key";

/// Fills `buf` from the operating system's CSPRNG (nonces, ids, incarnations).
pub fn fill_random(buf: &mut [u8]) -> Result<(), CryptoError> {
    getrandom::fill(buf).map_err(CryptoError::Rng)
}

/// A fresh random key, in a buffer wiped on drop.
fn random_key() -> Result<Zeroizing<[u8; KEY_LEN]>, CryptoError> {
    let mut key = Zeroizing::new([0u8; KEY_LEN]);
    fill_random(key.as_mut())?;
    Ok(key)
}

/// HMAC-SHA256 keyed with `key`.
pub(crate) fn hmac_sha256(key: &[u8]) -> Hmac<Sha256> {
    match <Hmac<Sha256> as KeyInit>::new_from_slice(key) {
        Ok(mac) => mac,
        // HMAC takes keys of any length (longer ones are hashed), so this cannot happen.
        Err(_) => unreachable!("HMAC accepts keys of any length"),
    }
}

/// HKDF-SHA256 (no salt: every input key is uniformly random) expanded to one key.
pub(crate) fn hkdf_sha256(ikm: &[u8], info: &[u8]) -> Zeroizing<[u8; KEY_LEN]> {
    let mut okm = Zeroizing::new([0u8; KEY_LEN]);
    if Hkdf::<Sha256>::new(None, ikm)
        .expand(info, okm.as_mut())
        .is_err()
    {
        // HKDF-SHA256 refuses only outputs longer than 255 * 32 bytes; ours is 32.
        unreachable!("HKDF-SHA256 can always expand 32 bytes");
    }
    okm
}

/// The one-way id of `key`.
fn key_id_of(key: &[u8; KEY_LEN]) -> KeyId {
    let tag = hmac_sha256(key)
        .chain_update(KEY_ID_LABEL)
        .finalize()
        .into_bytes();
    let mut id = [0u8; 4];
    id.copy_from_slice(&tag[..4]);
    KeyId(id)
}

/// A short, stable, non-secret identifier of a key: the first 4 bytes of
/// `HMAC-SHA256(key, "spike/v1/key-id")`.
///
/// It tells keys apart in stored headers, errors and logs; it is not a security check (two keys
/// share an id with probability 2^-32, and authentication still fails then). Displays and
/// serializes as 8 lowercase hex digits.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct KeyId([u8; 4]);

impl KeyId {
    /// An id from its 4 bytes (as read from a stored header).
    pub const fn from_bytes(bytes: [u8; 4]) -> Self {
        Self(bytes)
    }

    /// The id's 4 bytes.
    pub const fn to_bytes(self) -> [u8; 4] {
        self.0
    }
}

impl fmt::Display for KeyId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&hex::encode(self.0))
    }
}

impl fmt::Debug for KeyId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "KeyId({self})")
    }
}

/// `s` is not 8 hex digits.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("a key id is 8 hex digits")]
pub struct ParseKeyIdError;

impl FromStr for KeyId {
    type Err = ParseKeyIdError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let mut id = [0u8; 4];
        hex::decode_to_slice(s, &mut id).map_err(|_| ParseKeyIdError)?;
        Ok(Self(id))
    }
}

impl Serialize for KeyId {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for KeyId {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let s = String::deserialize(deserializer)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// The root key: 256 bits from the OS CSPRNG, used only as a key-encryption key.
///
/// It wraps the [`DataKey`] (see [`RootKey::wrap`]), keys its own one-way [`KeyId`], and seeds
/// the deterministic Shamir split (see [`super::split`]). It never encrypts records. It is
/// wiped on drop, has no `Clone` (share it behind an `Arc`), and its `Debug` shows only the id.
pub struct RootKey(Zeroizing<[u8; KEY_LEN]>);

impl RootKey {
    /// A fresh random root key.
    pub fn generate() -> Result<Self, CryptoError> {
        random_key().map(Self)
    }

    /// Builds a key from its bytes (Shamir recovery and tests). The input is wiped by its owner.
    pub(crate) fn from_bytes(bytes: Zeroizing<[u8; KEY_LEN]>) -> Self {
        Self(bytes)
    }

    /// The key's bytes, for the modules that build on it (wrapping, Shamir).
    pub(crate) fn expose(&self) -> &[u8; KEY_LEN] {
        &self.0
    }

    /// The key's one-way id.
    pub fn key_id(&self) -> KeyId {
        key_id_of(&self.0)
    }

    /// The AES-256-GCM key that wraps the data key, derived so the root key itself is never
    /// used as a cipher key.
    pub(crate) fn wrapping_key(&self) -> Zeroizing<[u8; KEY_LEN]> {
        hkdf_sha256(self.0.as_ref(), WRAP_KEY_INFO)
    }
}

impl fmt::Debug for RootKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RootKey")
            .field("id", &self.key_id())
            .finish_non_exhaustive()
    }
}

/// The data-encryption key: 256 random bits, stored only wrapped by the [`RootKey`].
///
/// Every working key is derived from it per [`KeyPurpose`]. Wiped on drop, no `Clone`, and
/// `Debug` shows only the id.
pub struct DataKey(Zeroizing<[u8; KEY_LEN]>);

impl DataKey {
    /// A fresh random data key.
    pub fn generate() -> Result<Self, CryptoError> {
        random_key().map(Self)
    }

    /// Builds a key from its bytes (unwrapping and tests).
    pub(crate) fn from_bytes(bytes: Zeroizing<[u8; KEY_LEN]>) -> Self {
        Self(bytes)
    }

    /// The key's bytes, for wrapping.
    pub(crate) fn expose(&self) -> &[u8; KEY_LEN] {
        &self.0
    }

    /// A second copy, for building a new key ring from an old one (deliberately not `Clone`,
    /// so copies of key material are made only where a ring needs them).
    pub(crate) fn duplicate(&self) -> Self {
        Self(self.0.clone())
    }

    /// The key's one-way id. Envelopes and record tags carry it.
    pub fn key_id(&self) -> KeyId {
        key_id_of(&self.0)
    }

    /// The subkey for `purpose`: `HKDF-SHA256(ikm = data key, info = purpose.info())`.
    pub fn derive(&self, purpose: KeyPurpose) -> SubKey {
        SubKey {
            bytes: hkdf_sha256(self.0.as_ref(), purpose.info().as_bytes()),
            purpose,
            data_key_id: self.key_id(),
        }
    }
}

impl fmt::Debug for DataKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DataKey")
            .field("id", &self.key_id())
            .finish_non_exhaustive()
    }
}

/// What a [`SubKey`] is for. Each purpose gets its own key, so no two uses share one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum KeyPurpose {
    /// Sealing stored secret values (the envelope).
    Storage,
    /// MACs over non-secret records at rest (policies, metadata, token bindings).
    RecordAuth,
    /// The cipher API offered to workloads.
    Cipher,
    /// The audit log's HMAC chain.
    AuditChain,
    /// Keyed hashes of reference tokens.
    TokenHash,
    /// Backups.
    Backup,
}

impl KeyPurpose {
    /// Every purpose, for tests and tooling.
    pub const ALL: [Self; 6] = [
        Self::Storage,
        Self::RecordAuth,
        Self::Cipher,
        Self::AuditChain,
        Self::TokenHash,
        Self::Backup,
    ];

    /// The fixed, versioned HKDF info string. Part of the on-disk format: never change one;
    /// add a `v2` string instead.
    pub const fn info(self) -> &'static str {
        match self {
            Self::Storage => "spike/v1/storage",
            Self::RecordAuth => "spike/v1/record-auth",
            Self::Cipher => "spike/v1/cipher",
            Self::AuditChain => "spike/v1/audit-chain",
            Self::TokenHash => "spike/v1/token-hash",
            Self::Backup => "spike/v1/backup",
        }
    }
}

/// A 256-bit key derived from the [`DataKey`] for one [`KeyPurpose`]. Wiped on drop.
///
/// The envelope and record MAC use theirs internally ([`super::EnvelopeKey`],
/// [`super::RecordMac`]); the others (cipher API, audit chain, token hashing, backups) are
/// handed to their users through [`SubKey::expose_secret`].
pub struct SubKey {
    bytes: Zeroizing<[u8; KEY_LEN]>,
    purpose: KeyPurpose,
    data_key_id: KeyId,
}

impl SubKey {
    /// A subkey kept in a key ring after its data key was destroyed.
    pub(crate) fn from_stored(
        purpose: KeyPurpose,
        data_key_id: KeyId,
        bytes: Zeroizing<[u8; KEY_LEN]>,
    ) -> Self {
        Self {
            bytes,
            purpose,
            data_key_id,
        }
    }

    /// A second copy (see [`DataKey::duplicate`]).
    pub(crate) fn duplicate(&self) -> Self {
        Self {
            bytes: self.bytes.clone(),
            purpose: self.purpose,
            data_key_id: self.data_key_id,
        }
    }

    /// The purpose this key was derived for.
    pub fn purpose(&self) -> KeyPurpose {
        self.purpose
    }

    /// The id of the data key it was derived from.
    pub fn data_key_id(&self) -> KeyId {
        self.data_key_id
    }

    /// The key bytes. Every call site is a place where key material leaves this wrapper; keep
    /// what you build from it in zeroizing types too.
    pub fn expose_secret(&self) -> &[u8; KEY_LEN] {
        &self.bytes
    }
}

impl fmt::Debug for SubKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SubKey")
            .field("purpose", &self.purpose)
            .field("data_key_id", &self.data_key_id)
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
pub(crate) mod tests {
    use std::collections::HashSet;

    use super::*;

    /// A fixed key for known-answer tests: bytes 0, 1, ..., 31.
    pub(crate) fn fixed_bytes(offset: u8) -> Zeroizing<[u8; KEY_LEN]> {
        let mut k = [0u8; KEY_LEN];
        for (i, b) in k.iter_mut().enumerate() {
            *b = offset.wrapping_add(i as u8);
        }
        Zeroizing::new(k)
    }

    pub(crate) fn fixed_root() -> RootKey {
        RootKey::from_bytes(fixed_bytes(0))
    }

    pub(crate) fn fixed_data_key() -> DataKey {
        DataKey::from_bytes(fixed_bytes(0x40))
    }

    /// Pins the derivations. If this fails, the on-disk format changed: existing stores would
    /// no longer open. Add a new versioned info string instead of changing an old one.
    #[test]
    fn known_answers() {
        let root = fixed_root();
        let dek = fixed_data_key();
        assert_eq!(root.key_id().to_string(), KAT_ROOT_KEY_ID);
        assert_eq!(dek.key_id().to_string(), KAT_DATA_KEY_ID);
        assert_eq!(hex::encode(*root.wrapping_key()), KAT_WRAPPING_KEY);
        let derived: Vec<(String, String)> = KeyPurpose::ALL
            .iter()
            .map(|p| {
                (
                    p.info().to_owned(),
                    hex::encode(dek.derive(*p).expose_secret()),
                )
            })
            .collect();
        let expected: Vec<(String, String)> = KAT_SUBKEYS
            .iter()
            .map(|(i, k)| ((*i).to_owned(), (*k).to_owned()))
            .collect();
        assert_eq!(derived, expected);
    }

    const KAT_ROOT_KEY_ID: &str = "23e7df18";
    const KAT_DATA_KEY_ID: &str = "382acf2d";
    const KAT_WRAPPING_KEY: &str =
        "ae1a555e1838fff1eafee84db2120034fa122dc304c83f42709077b776caa227";
    const KAT_SUBKEYS: [(&str, &str); 6] = [
        (
            "spike/v1/storage",
            "e048966454dc346f8fd0ede7e2c13b525f4a99180df71bf83f0cdec861410eec",
        ),
        (
            "spike/v1/record-auth",
            "e032592a4f38ffb2e7cd7d1fe7870afa218adf6669ee12e20153b8bf43b7fcb5",
        ),
        (
            "spike/v1/cipher",
            "3ad2b36de5838f7f3d31185a8dbd33eced2b0377233dbae62216071bd4f1e2a1",
        ),
        (
            "spike/v1/audit-chain",
            "c5f60dc718189ad1b86dd1a0c46302495c049d1787d073e726651709181c4c84",
        ),
        (
            "spike/v1/token-hash",
            "9f4c14e2abce15a967f00ac058fa9fcae9bd049ac4c45aa9e86b84db66a80eb4",
        ),
        (
            "spike/v1/backup",
            "830b406cc27e457e417aed11e5422d72adb319843db3f419cefde1858eeec17a",
        ),
    ];

    #[test]
    fn hkdf_matches_rfc5869_shape() {
        // RFC 5869 test case 3 (SHA-256, no salt, no info) checks we drive the crate right;
        // its output is 42 bytes, we compare our 32-byte expansion with its prefix.
        let ikm = [0x0bu8; 22];
        let okm = hkdf_sha256(&ikm, b"");
        assert_eq!(
            hex::encode(*okm),
            "8da4e775a563c18f715f802a063c5a31b8a11f5c5ee1879ec3454e5f3c738d2d"
        );
    }

    #[test]
    fn subkeys_differ_per_purpose_and_data_key() {
        let dek = fixed_data_key();
        let other = DataKey::generate().unwrap();
        let mut seen = HashSet::new();
        for p in KeyPurpose::ALL {
            let k = dek.derive(p);
            assert_eq!(k.purpose(), p);
            assert_eq!(k.data_key_id(), dek.key_id());
            assert!(seen.insert(*k.expose_secret()));
            assert!(seen.insert(*other.derive(p).expose_secret()));
        }
        // Derivation is deterministic.
        assert_eq!(
            dek.derive(KeyPurpose::Storage).expose_secret(),
            dek.derive(KeyPurpose::Storage).expose_secret()
        );
        // Info strings are distinct and versioned.
        let infos: HashSet<_> = KeyPurpose::ALL.iter().map(|p| p.info()).collect();
        assert_eq!(infos.len(), KeyPurpose::ALL.len());
        assert!(infos.iter().all(|i| i.starts_with("spike/v1/")));
    }

    #[test]
    fn generated_keys_are_random() {
        let a = RootKey::generate().unwrap();
        let b = RootKey::generate().unwrap();
        assert_ne!(a.expose(), b.expose());
        assert_ne!(a.key_id(), b.key_id());
        assert_ne!(*a.expose(), [0u8; KEY_LEN]);
    }

    #[test]
    fn debug_shows_no_key_bytes() {
        let root = fixed_root();
        let dek = fixed_data_key();
        let sub = dek.derive(KeyPurpose::Cipher);
        let outputs = [
            format!("{root:?}"),
            format!("{root:#?}"),
            format!("{dek:?}"),
            format!("{sub:?}"),
            format!("{sub:#?}"),
        ];
        let secrets = [
            hex::encode(root.expose()),
            hex::encode(dek.expose()),
            hex::encode(sub.expose_secret()),
        ];
        for out in &outputs {
            for s in &secrets {
                assert!(!out.contains(&s[..8]), "{out}");
            }
            // No decimal byte lists either (what a derived Debug of an array prints).
            assert!(!out.contains(", 1, 2, 3"), "{out}");
            assert!(!out.contains('['), "{out}");
        }
        assert!(outputs[0].contains(&root.key_id().to_string()));
        assert!(outputs[3].contains("Cipher"));
    }

    #[test]
    fn key_id_text_round_trips() {
        let id = fixed_root().key_id();
        let text = id.to_string();
        assert_eq!(text.len(), 8);
        assert_eq!(text.parse::<KeyId>().unwrap(), id);
        assert_eq!(serde_json::to_string(&id).unwrap(), format!("\"{text}\""));
        assert_eq!(
            serde_json::from_str::<KeyId>(&format!("\"{text}\"")).unwrap(),
            id
        );
        assert!("0a0b0c".parse::<KeyId>().is_err());
        assert!("zz0b0c0d".parse::<KeyId>().is_err());
        assert!("0a0b0c0d0e".parse::<KeyId>().is_err());
    }
}
