//! Authentication of non-secret records at rest (policies, metadata, token bindings), so
//! editing the database cannot grant access.
//!
//! A [`RecordTag`] (format 1, 37 bytes) is
//!
//! ```text
//! format (1) ‖ data key id (4) ‖ HMAC-SHA256 (32)
//! ```
//!
//! where the HMAC, keyed with the data key's [`KeyPurpose::RecordAuth`] subkey, covers the
//! canonical, length-prefixed `"spike/v1/record-mac" ‖ header ‖ record type ‖ key ‖ value`.
//!
//! A tag proves a record was written by Nexus for that key; it does not prove it is the
//! newest such record. Put a version or counter inside `value` where rollback matters.

use std::fmt;

use hmac::{Hmac, Mac};
use sha2::Sha256;

use super::canonical::Canonical;
use super::keys::{DataKey, KeyId, KeyPurpose, hmac_sha256};
use super::stamped::{HEADER_LEN, Stamped, base64_serde};
use super::{CryptoError, RecordType};

/// The record-tag format this build writes, and the newest it reads.
pub const RECORD_TAG_FORMAT: u8 = 1;

const MAC_LEN: usize = 32;
/// Length of a [`RecordTag`] in bytes: format, data key id and HMAC-SHA256.
pub const RECORD_TAG_LEN: usize = HEADER_LEN + MAC_LEN;
const TAG_LEN: usize = RECORD_TAG_LEN;

/// Computes and verifies [`RecordTag`]s under the data key's record-authentication subkey.
pub struct RecordMac {
    // Keyed once; cloned per record so the key schedule is not recomputed.
    mac: Hmac<Sha256>,
    key_id: KeyId,
}

impl RecordMac {
    /// The record MAC for `data_key` (its [`KeyPurpose::RecordAuth`] subkey).
    pub fn new(data_key: &DataKey) -> Self {
        let sub = data_key.derive(KeyPurpose::RecordAuth);
        Self {
            mac: hmac_sha256(sub.expose_secret()),
            key_id: data_key.key_id(),
        }
    }

    /// The id of the data key, written into every tag.
    pub fn key_id(&self) -> KeyId {
        self.key_id
    }

    /// The tag for `value`, stored as record `record` under `key` (the store key: a path,
    /// policy name or token hash).
    pub fn tag(&self, record: RecordType, key: &[u8], value: &[u8]) -> RecordTag {
        let header = self.header();
        let mac = self
            .compute(&header, record, key, value)
            .finalize()
            .into_bytes();
        let mut out = [0u8; TAG_LEN];
        out[..HEADER_LEN].copy_from_slice(&header);
        out[HEADER_LEN..].copy_from_slice(&mac);
        RecordTag(Stamped::new(out))
    }

    /// Checks `tag` against `value` stored as `record` under `key`, in constant time.
    ///
    /// Fails with [`CryptoError::KeyMismatch`] for a tag made under another data key, and with
    /// [`CryptoError::Unauthentic`] for any other mismatch.
    pub fn verify(
        &self,
        record: RecordType,
        key: &[u8],
        value: &[u8],
        tag: &RecordTag,
    ) -> Result<(), CryptoError> {
        let found = tag.key_id();
        if found != self.key_id {
            return Err(CryptoError::KeyMismatch {
                expected: self.key_id,
                found,
            });
        }
        let (header, mac) = tag.as_bytes().split_at(HEADER_LEN);
        self.compute(header, record, key, value)
            .verify_slice(mac)
            .map_err(|_| CryptoError::Unauthentic)
    }

    fn compute(&self, header: &[u8], record: RecordType, key: &[u8], value: &[u8]) -> Hmac<Sha256> {
        let mut input = Canonical::new("spike/v1/record-mac");
        input
            .field(header)
            .field(record.tag().as_bytes())
            .field(key)
            .field(value);
        let mut mac = self.mac.clone();
        mac.update(input.as_bytes());
        mac
    }

    fn header(&self) -> [u8; HEADER_LEN] {
        let id = self.key_id.to_bytes();
        [RECORD_TAG_FORMAT, id[0], id[1], id[2], id[3]]
    }
}

impl fmt::Debug for RecordMac {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RecordMac")
            .field("data_key_id", &self.key_id)
            .finish_non_exhaustive()
    }
}

/// An authentication tag over one stored record. Not secret.
///
/// Serializes as a standard base64 string of its bytes.
#[derive(Clone, PartialEq, Eq)]
pub struct RecordTag(Stamped<TAG_LEN>);

impl RecordTag {
    /// Parses stored bytes, refusing other formats and lengths.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, CryptoError> {
        Stamped::parse(bytes, RECORD_TAG_FORMAT, "record tag").map(Self)
    }

    /// The bytes to store.
    pub fn as_bytes(&self) -> &[u8] {
        self.0.bytes()
    }

    /// The id of the data key the tag was made under.
    pub fn key_id(&self) -> KeyId {
        self.0.key_id()
    }
}

impl fmt::Debug for RecordTag {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "RecordTag({})", self.0.to_base64())
    }
}

base64_serde!(RecordTag, "record tag");

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::crypto::keys::tests::fixed_data_key;

    const POLICY: &[u8] =
        br#"{"name":"db","spiffeIdPattern":"spiffe://x/app","pathPattern":"db/**"}"#;

    #[test]
    fn tag_verifies() {
        let mac = RecordMac::new(&fixed_data_key());
        let tag = mac.tag(RecordType::Policy, b"db", POLICY);
        assert_eq!(tag.as_bytes().len(), TAG_LEN);
        assert_eq!(tag.key_id(), mac.key_id());
        mac.verify(RecordType::Policy, b"db", POLICY, &tag).unwrap();
        // Deterministic: the same record gets the same tag.
        assert_eq!(tag, mac.tag(RecordType::Policy, b"db", POLICY));
        // Empty key and value are fine and still bound.
        let empty = mac.tag(RecordType::System, b"", b"");
        mac.verify(RecordType::System, b"", b"", &empty).unwrap();
        assert!(mac.verify(RecordType::System, b"", b"x", &empty).is_err());
    }

    /// Pins the record MAC. If this fails, every stored record would stop verifying.
    #[test]
    fn known_answer() {
        let mac = RecordMac::new(&fixed_data_key());
        let tag = mac.tag(RecordType::Policy, b"db", b"value");
        assert_eq!(hex::encode(tag.as_bytes()), KAT_TAG);
    }

    const KAT_TAG: &str =
        "01382acf2da3d60d89eba67efe7422f8e5eea748d9fe684f952e8708f695b8de71e28c15e5";

    #[test]
    fn every_field_is_bound() {
        let mac = RecordMac::new(&fixed_data_key());
        let tag = mac.tag(RecordType::Policy, b"db", POLICY);
        let unauthentic = |r, k: &[u8], v: &[u8]| {
            matches!(mac.verify(r, k, v, &tag), Err(CryptoError::Unauthentic))
        };
        assert!(unauthentic(RecordType::SecretMetadata, b"db", POLICY));
        assert!(unauthentic(RecordType::Policy, b"dc", POLICY));
        assert!(unauthentic(RecordType::Policy, b"db", &POLICY[1..]));
        // Moving bytes between key and value changes the encoding.
        let split = mac.tag(RecordType::Policy, b"ab", b"c");
        assert!(mac.verify(RecordType::Policy, b"a", b"bc", &split).is_err());
    }

    #[test]
    fn bit_flips_fail() {
        let mac = RecordMac::new(&fixed_data_key());
        let tag = mac.tag(RecordType::TokenBinding, b"k", b"v");
        for i in 0..TAG_LEN {
            let mut bytes = tag.as_bytes().to_vec();
            bytes[i] ^= 0x10;
            let result = RecordTag::from_bytes(&bytes)
                .and_then(|t| mac.verify(RecordType::TokenBinding, b"k", b"v", &t));
            let err = result.unwrap_err();
            match i {
                0 => assert!(matches!(err, CryptoError::UnsupportedFormat { .. })),
                1..=4 => assert!(matches!(err, CryptoError::KeyMismatch { .. })),
                _ => assert!(matches!(err, CryptoError::Unauthentic)),
            }
        }
    }

    #[test]
    fn wrong_key_fails() {
        let mac = RecordMac::new(&fixed_data_key());
        let other = RecordMac::new(&DataKey::generate().unwrap());
        let tag = other.tag(RecordType::Policy, b"db", POLICY);
        assert!(matches!(
            mac.verify(RecordType::Policy, b"db", POLICY, &tag),
            Err(CryptoError::KeyMismatch { .. })
        ));
        // Forging the id does not help.
        let mut bytes = tag.as_bytes().to_vec();
        bytes[1..5].copy_from_slice(&mac.key_id().to_bytes());
        let forged = RecordTag::from_bytes(&bytes).unwrap();
        assert!(matches!(
            mac.verify(RecordType::Policy, b"db", POLICY, &forged),
            Err(CryptoError::Unauthentic)
        ));
    }

    #[test]
    fn parse_and_serde() {
        let mac = RecordMac::new(&fixed_data_key());
        let tag = mac.tag(RecordType::Policy, b"db", POLICY);
        assert!(RecordTag::from_bytes(&tag.as_bytes()[..TAG_LEN - 1]).is_err());
        assert!(RecordTag::from_bytes(&[]).is_err());
        let json = serde_json::to_string(&tag).unwrap();
        assert_eq!(serde_json::from_str::<RecordTag>(&json).unwrap(), tag);
        assert!(format!("{mac:?}").starts_with("RecordMac { data_key_id: KeyId("));
    }
}
