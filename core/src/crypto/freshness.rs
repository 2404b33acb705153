//! The keyed functions of the store's freshness witness (rollback detection).
//!
//! The store keeps a generation and a digest of its whole contents (the sum modulo 2^256 of one
//! keyed hash per entry) and stores them, tagged, with every change; Nexus hands the tagged
//! pair to the keepers, which hold it outside the data directory. This module computes the
//! entry hashes and the tag, both HMAC-SHA256 under one key derived (HKDF-SHA256) from the
//! ring's audit key, which is fixed for the life of the store, so rotations do not change it:
//!
//! ```text
//! entry = HMAC(k, len ‖ "spike/v1/freshness-entry" ‖ len ‖ table ‖ len ‖ key ‖ len ‖ value)
//! tag   = HMAC(k, len ‖ "spike/v1/freshness-tag" ‖ generation (u64 BE) ‖ digest (32 bytes))
//! ```
//!
//! The entry hashes must be keyed: with public ones, anybody could search for a different set
//! of entries with the same sum.

use hmac::{Hmac, Mac};
use sha2::Sha256;
use subtle::ConstantTimeEq;

use super::keys::{KEY_LEN, hkdf_sha256, hmac_sha256};

const KEY_INFO: &[u8] = b"spike/v1/store-freshness";
const ENTRY_LABEL: &[u8] = b"spike/v1/freshness-entry";
const TAG_LABEL: &[u8] = b"spike/v1/freshness-tag";

/// Length of an entry hash, a digest and a tag.
pub const FRESHNESS_LEN: usize = 32;

/// The freshness key. Wiped on drop (the prepared HMAC state holds only derived pads, and the
/// key bytes themselves are not kept).
pub struct FreshnessKey {
    mac: Hmac<Sha256>,
}

impl FreshnessKey {
    /// The freshness key of a store whose ring has `audit_key`.
    pub fn new(audit_key: &[u8; KEY_LEN]) -> Self {
        let key = hkdf_sha256(audit_key, KEY_INFO);
        Self {
            mac: hmac_sha256(key.as_ref()),
        }
    }

    /// The keyed hash of one entry of the store.
    pub fn entry_hash(&self, table: &str, key: &[u8], value: &[u8]) -> [u8; FRESHNESS_LEN] {
        let mut mac = self.mac.clone();
        for field in [ENTRY_LABEL, table.as_bytes(), key, value] {
            update_field(&mut mac, field);
        }
        mac.finalize().into_bytes().into()
    }

    /// The tag binding `generation` to `digest`.
    pub fn tag(&self, generation: u64, digest: &[u8; FRESHNESS_LEN]) -> [u8; FRESHNESS_LEN] {
        let mut mac = self.mac.clone();
        update_field(&mut mac, TAG_LABEL);
        mac.update(&generation.to_be_bytes());
        mac.update(digest);
        mac.finalize().into_bytes().into()
    }

    /// Whether `tag` is the tag of `generation` and `digest`, in constant time.
    pub fn verifies(
        &self,
        generation: u64,
        digest: &[u8; FRESHNESS_LEN],
        tag: &[u8; FRESHNESS_LEN],
    ) -> bool {
        self.tag(generation, digest).ct_eq(tag).into()
    }
}

impl std::fmt::Debug for FreshnessKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("FreshnessKey(..)")
    }
}

/// A length-prefixed field, as in the crate's canonical encoding, fed straight to the MAC so a
/// value is never copied.
fn update_field(mac: &mut Hmac<Sha256>, bytes: &[u8]) {
    let len = u32::try_from(bytes.len()).unwrap_or(u32::MAX);
    mac.update(&len.to_be_bytes());
    mac.update(bytes);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_answers_pin_the_derivation() {
        // Computed independently with Python's hmac and hashlib (HKDF by hand).
        let key = FreshnessKey::new(&[0x11; KEY_LEN]);
        let entry = key.entry_hash("secrets", b"a/b", b"value");
        let tag = key.tag(42, &entry);
        assert_eq!(
            hex::encode(entry),
            "a2acce6824e05033a7669aa240996fb80804e92610c115088972456432e24ed5"
        );
        assert_eq!(
            hex::encode(tag),
            "f8b4f35045787259c0122daef3013cf50f35a25d6c4a526414e20c00ac4f8e58"
        );
    }

    #[test]
    fn fields_are_bound_unambiguously() {
        let key = FreshnessKey::new(&[1; KEY_LEN]);
        assert_ne!(
            key.entry_hash("ab", b"c", b""),
            key.entry_hash("a", b"bc", b"")
        );
        assert_ne!(
            key.entry_hash("t", b"k", b"v"),
            key.entry_hash("t", b"kv", b"")
        );
        let other = FreshnessKey::new(&[2; KEY_LEN]);
        assert_ne!(
            key.entry_hash("t", b"k", b"v"),
            other.entry_hash("t", b"k", b"v")
        );
        let d = [5; FRESHNESS_LEN];
        let tag = key.tag(3, &d);
        assert!(key.verifies(3, &d, &tag));
        assert!(!key.verifies(4, &d, &tag));
        assert!(!other.verifies(3, &d, &tag));
    }
}
