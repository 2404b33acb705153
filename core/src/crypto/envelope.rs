//! The versioned AES-256-GCM envelope for stored values.
//!
//! Layout (format 1):
//!
//! ```text
//! format (1 byte) ‖ data key id (4) ‖ nonce (12) ‖ ciphertext ‖ tag (16)
//! ```
//!
//! The key is the data key's [`KeyPurpose::Storage`] subkey; the nonce is fresh from the OS
//! CSPRNG for every seal. With random 96-bit nonces the chance that two of `n` seals share a
//! nonce is about n²/2^97, so NIST SP 800-38D allows at most 2^32 seals per key, which keeps
//! it near 2^-33, below 2^-32. Nothing here counts seals: the bound holds while one data key
//! seals fewer than 2^32 values (every stored version is one seal).
//!
//! The associated data is the canonical encoding of the header and [`Aad`], so a value moved
//! to another path, version, record type or incarnation, or given a rewritten header, fails
//! to open.

use std::fmt;

use aes_gcm::Aes256Gcm;
use aes_gcm::aead::KeyInit;

use super::framed::{self, NONCE_LEN, TAG_LEN};
use super::keys::{DataKey, KeyId, KeyPurpose, fill_random};
use super::{Aad, CryptoError};
use crate::secret::{SecretBytes, SecretMap};

/// The envelope format this build writes, and the newest it reads.
pub const ENVELOPE_FORMAT: u8 = 1;

const HEADER_LEN: usize = 1 + 4;

/// Bytes an envelope adds to its plaintext: header, nonce and tag.
pub const ENVELOPE_OVERHEAD: usize = HEADER_LEN + NONCE_LEN + TAG_LEN;

/// Seals and opens stored values under the data key's storage subkey.
///
/// Built once from the [`DataKey`] when Nexus opens; holds the expanded AES key (wiped on drop).
pub struct EnvelopeKey {
    cipher: Aes256Gcm,
    key_id: KeyId,
}

impl EnvelopeKey {
    /// The envelope key for `data_key` (its [`KeyPurpose::Storage`] subkey).
    pub fn new(data_key: &DataKey) -> Self {
        let sub = data_key.derive(KeyPurpose::Storage);
        Self {
            cipher: Aes256Gcm::new(sub.expose_secret().into()),
            key_id: data_key.key_id(),
        }
    }

    /// The id of the data key, written into every envelope's header.
    pub fn key_id(&self) -> KeyId {
        self.key_id
    }

    /// Seals `plaintext` for the place described by `aad`. Each call uses a fresh nonce, so
    /// sealing the same value twice gives different bytes.
    pub fn seal(&self, aad: &Aad<'_>, plaintext: &[u8]) -> Result<Vec<u8>, CryptoError> {
        let mut nonce = [0u8; NONCE_LEN];
        fill_random(&mut nonce)?;
        let header = self.header();
        let ad = aad.encode(&header);
        framed::seal(
            &self.cipher,
            &header,
            nonce,
            ad.as_bytes(),
            plaintext,
            aes_gcm::P_MAX,
        )
    }

    /// Opens an envelope sealed for `aad`.
    ///
    /// Refuses, in this order: an unknown or newer format ([`CryptoError::UnsupportedFormat`]),
    /// truncated input ([`CryptoError::Malformed`]), another data key
    /// ([`CryptoError::KeyMismatch`]), and anything else that does not authenticate, whether
    /// wrong associated data or altered bytes (one generic [`CryptoError::Unauthentic`]).
    pub fn open(&self, aad: &Aad<'_>, sealed: &[u8]) -> Result<SecretBytes, CryptoError> {
        let parts = framed::split::<HEADER_LEN>(sealed, ENVELOPE_FORMAT, "envelope")?;
        let h = parts.header;
        let found = KeyId::from_bytes([h[1], h[2], h[3], h[4]]);
        if found != self.key_id {
            return Err(CryptoError::KeyMismatch {
                expected: self.key_id,
                found,
            });
        }
        framed::open(&self.cipher, &parts, aad.encode(h).as_bytes())
    }

    /// Seals a secret's value: its canonical JSON encoding ([`SecretMap::to_json_bytes`]).
    pub fn seal_map(&self, aad: &Aad<'_>, value: &SecretMap) -> Result<Vec<u8>, CryptoError> {
        self.seal(aad, value.to_json_bytes().expose_secret())
    }

    /// Opens a value sealed by [`EnvelopeKey::seal_map`].
    pub fn open_map(&self, aad: &Aad<'_>, sealed: &[u8]) -> Result<SecretMap, CryptoError> {
        let plain = self.open(aad, sealed)?;
        SecretMap::from_json_bytes(plain.expose_secret()).map_err(|_| CryptoError::Malformed {
            what: "secret value",
            reason: "not a JSON object of strings",
        })
    }

    fn header(&self) -> [u8; HEADER_LEN] {
        let id = self.key_id.to_bytes();
        [ENVELOPE_FORMAT, id[0], id[1], id[2], id[3]]
    }
}

impl fmt::Debug for EnvelopeKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EnvelopeKey")
            .field("data_key_id", &self.key_id)
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::crypto::RecordType;
    use crate::crypto::keys::tests::fixed_data_key;

    fn aad(path: &str) -> Aad<'_> {
        Aad {
            record: RecordType::SecretValue,
            path,
            version: 3,
            incarnation: 1,
        }
    }

    #[test]
    fn round_trip() {
        let key = EnvelopeKey::new(&DataKey::generate().unwrap());
        let a = aad("apps/db/password");
        let sealed = key.seal(&a, b"correct horse").unwrap();
        assert_eq!(sealed.len(), ENVELOPE_OVERHEAD + 13);
        assert_eq!(sealed[0], ENVELOPE_FORMAT);
        assert_eq!(sealed[1..5], key.key_id().to_bytes());
        assert!(!sealed.windows(13).any(|w| w == b"correct horse"));
        assert_eq!(
            key.open(&a, &sealed).unwrap().expose_secret(),
            b"correct horse"
        );
    }

    #[test]
    fn zero_length_plaintext() {
        let key = EnvelopeKey::new(&fixed_data_key());
        let a = aad("p");
        let sealed = key.seal(&a, b"").unwrap();
        assert_eq!(sealed.len(), ENVELOPE_OVERHEAD);
        assert!(key.open(&a, &sealed).unwrap().is_empty());
        // Even an empty value is bound to its place.
        assert!(matches!(
            key.open(&aad("q"), &sealed),
            Err(CryptoError::Unauthentic)
        ));
    }

    #[test]
    fn fresh_nonce_per_seal() {
        let key = EnvelopeKey::new(&fixed_data_key());
        let a = aad("p");
        let s1 = key.seal(&a, b"same").unwrap();
        let s2 = key.seal(&a, b"same").unwrap();
        assert_ne!(s1[5..17], s2[5..17]);
        assert_ne!(s1, s2);
    }

    #[test]
    fn every_aad_field_is_bound() {
        let key = EnvelopeKey::new(&fixed_data_key());
        let a = aad("apps/db");
        let sealed = key.seal(&a, b"v").unwrap();
        let variants = [
            Aad {
                record: RecordType::Policy,
                ..a
            },
            Aad {
                path: "apps/dc",
                ..a
            },
            Aad {
                path: "apps/db/",
                ..a
            },
            Aad { version: 4, ..a },
            Aad {
                incarnation: 2,
                ..a
            },
        ];
        for v in &variants {
            assert!(
                matches!(key.open(v, &sealed), Err(CryptoError::Unauthentic)),
                "{v:?} opened"
            );
        }
        assert!(key.open(&a, &sealed).is_ok());
    }

    #[test]
    fn bit_flips_in_every_region_fail() {
        let key = EnvelopeKey::new(&fixed_data_key());
        let a = aad("apps/db");
        let sealed = key.seal(&a, b"some secret value").unwrap();
        for i in 0..sealed.len() {
            for bit in [0x01u8, 0x80] {
                let mut bad = sealed.clone();
                bad[i] ^= bit;
                let err = key.open(&a, &bad).unwrap_err();
                match i {
                    0 => assert!(matches!(err, CryptoError::UnsupportedFormat { .. }), "{i}"),
                    1..=4 => assert!(matches!(err, CryptoError::KeyMismatch { .. }), "{i}"),
                    _ => assert!(matches!(err, CryptoError::Unauthentic), "{i}"),
                }
            }
        }
    }

    #[test]
    fn auth_failure_is_generic() {
        let key = EnvelopeKey::new(&fixed_data_key());
        let a = aad("apps/db");
        let mut sealed = key.seal(&a, b"value").unwrap();
        let last = sealed.len() - 1;
        sealed[last] ^= 1;
        let msg = key.open(&a, &sealed).unwrap_err().to_string();
        assert_eq!(
            msg,
            "integrity check failed: wrong key, wrong context, or altered data"
        );
    }

    #[test]
    fn truncation_fails() {
        let key = EnvelopeKey::new(&fixed_data_key());
        let a = aad("apps/db");
        let sealed = key.seal(&a, b"value").unwrap();
        for len in 0..sealed.len() {
            assert!(key.open(&a, &sealed[..len]).is_err(), "len {len}");
        }
        assert!(matches!(
            key.open(&a, &sealed[..ENVELOPE_OVERHEAD - 1]),
            Err(CryptoError::Malformed { .. })
        ));
        // Appended bytes fail too.
        let mut longer = sealed;
        longer.push(0);
        assert!(matches!(
            key.open(&a, &longer),
            Err(CryptoError::Unauthentic)
        ));
    }

    #[test]
    fn newer_format_is_refused_with_clear_message() {
        let key = EnvelopeKey::new(&fixed_data_key());
        let a = aad("apps/db");
        let mut sealed = key.seal(&a, b"value").unwrap();
        sealed[0] = 2;
        let err = key.open(&a, &sealed).unwrap_err();
        assert_eq!(
            err.to_string(),
            "sealed with format 2; this build supports up to 1"
        );
        // A bare newer-format byte is refused the same way, not as "truncated".
        let err = key.open(&a, &[7]).unwrap_err();
        assert_eq!(
            err.to_string(),
            "sealed with format 7; this build supports up to 1"
        );
    }

    #[test]
    fn wrong_key_fails() {
        let key = EnvelopeKey::new(&fixed_data_key());
        let other = EnvelopeKey::new(&DataKey::generate().unwrap());
        let a = aad("apps/db");
        let sealed = key.seal(&a, b"value").unwrap();
        match other.open(&a, &sealed) {
            Err(CryptoError::KeyMismatch { expected, found }) => {
                assert_eq!(expected, other.key_id());
                assert_eq!(found, key.key_id());
            }
            r => panic!("unexpected {:?}", r.map(|_| ())),
        }
        // A wrong key that claims the right id still fails authentication.
        let mut forged = other.seal(&a, b"value").unwrap();
        forged[1..5].copy_from_slice(&key.key_id().to_bytes());
        assert!(matches!(
            key.open(&a, &forged),
            Err(CryptoError::Unauthentic)
        ));
    }

    #[test]
    fn map_round_trip() {
        let key = EnvelopeKey::new(&fixed_data_key());
        let a = aad("apps/db");
        let map: SecretMap = [("user", "alice"), ("password", "pa55")]
            .into_iter()
            .collect();
        let sealed = key.seal_map(&a, &map).unwrap();
        assert_eq!(key.open_map(&a, &sealed).unwrap(), map);
        let not_json = key.seal(&a, b"\xff").unwrap();
        assert!(matches!(
            key.open_map(&a, &not_json),
            Err(CryptoError::Malformed { .. })
        ));
    }

    #[test]
    fn debug_shows_only_the_key_id() {
        let dek = fixed_data_key();
        let key = EnvelopeKey::new(&dek);
        let out = format!("{key:?}");
        assert_eq!(
            out,
            format!("EnvelopeKey {{ data_key_id: KeyId({}), .. }}", dek.key_id())
        );
    }
}
