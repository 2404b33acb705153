//! Wrapping the data key under the root key. The wrapped key doubles as the key check.
//!
//! Layout (format 1, 65 bytes):
//!
//! ```text
//! format (1) ‖ root key id (4) ‖ nonce (12) ‖ encrypted data key (32) ‖ tag (16)
//! ```
//!
//! AES-256-GCM under a key derived from the root key, with a fresh random nonce, and
//! associated data naming what is wrapped (`"spike/v1/wrapped-data-key"`) plus the header.
//!
//! Nexus stores the [`WrappedKey`] next to the data. After rebuilding a root key from shares it
//! calls [`RootKey::unwrap`]: success proves the key is the right one (a wrong key fails with
//! [`CryptoError::KeyMismatch`], or [`CryptoError::Unauthentic`] in the 2^-32 case where the
//! ids collide), so no separate verification blob is needed.

use std::fmt;

use aes_gcm::Aes256Gcm;
use aes_gcm::aead::KeyInit;
use zeroize::Zeroizing;

use super::CryptoError;
use super::canonical::Canonical;
use super::framed::{self, NONCE_LEN, TAG_LEN};
use super::keys::{DataKey, KEY_LEN, KeyId, RootKey, fill_random};
use super::stamped::{HEADER_LEN, Stamped, base64_serde};

/// The wrapped-key format this build writes, and the newest it reads.
pub const WRAP_FORMAT: u8 = 1;

/// Length of a [`WrappedKey`] in bytes.
pub const WRAPPED_KEY_LEN: usize = HEADER_LEN + NONCE_LEN + KEY_LEN + TAG_LEN;
const WRAPPED_LEN: usize = WRAPPED_KEY_LEN;

/// A [`DataKey`] encrypted under a [`RootKey`]. Not secret: safe to store and to log by id.
///
/// Serializes as a standard base64 string of its bytes.
#[derive(Clone, PartialEq, Eq)]
pub struct WrappedKey(Stamped<WRAPPED_LEN>);

impl WrappedKey {
    /// Parses stored bytes. Checks the format and length; the key id and integrity are checked
    /// by [`RootKey::unwrap`].
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, CryptoError> {
        Stamped::parse(bytes, WRAP_FORMAT, WHAT).map(Self)
    }

    /// The bytes to store.
    pub fn as_bytes(&self) -> &[u8] {
        self.0.bytes()
    }

    /// The id of the root key that wrapped it.
    pub fn root_key_id(&self) -> KeyId {
        self.0.key_id()
    }
}

const WHAT: &str = "wrapped key";

fn associated_data(header: &[u8]) -> Canonical {
    let mut c = Canonical::new("spike/v1/wrapped-data-key");
    c.field(header);
    c
}

impl RootKey {
    /// Wraps `data_key` under this root key with a fresh nonce.
    ///
    /// The wrapped current data key is also the check that a rebuilt root key is right.
    pub fn wrap(&self, data_key: &DataKey) -> Result<WrappedKey, CryptoError> {
        let cipher = Aes256Gcm::new((&*self.wrapping_key()).into());
        let mut nonce = [0u8; NONCE_LEN];
        fill_random(&mut nonce)?;
        let id = self.key_id().to_bytes();
        let header = [WRAP_FORMAT, id[0], id[1], id[2], id[3]];
        let sealed = framed::seal(
            &cipher,
            &header,
            nonce,
            associated_data(&header).as_bytes(),
            data_key.expose(),
            aes_gcm::P_MAX,
        )?;
        // The output holds only ciphertext, so it needs no wiping.
        WrappedKey::from_bytes(&sealed)
    }

    /// Unwraps the data key; this is also the check that a rebuilt root key is the right one.
    ///
    /// Fails with [`CryptoError::KeyMismatch`] when `wrapped` names another root key, and with
    /// [`CryptoError::Unauthentic`] when the bytes do not authenticate.
    pub fn unwrap(&self, wrapped: &WrappedKey) -> Result<DataKey, CryptoError> {
        let expected = self.key_id();
        let found = wrapped.root_key_id();
        if found != expected {
            return Err(CryptoError::KeyMismatch { expected, found });
        }
        let parts = framed::split::<HEADER_LEN>(wrapped.as_bytes(), WRAP_FORMAT, WHAT)?;
        let cipher = Aes256Gcm::new((&*self.wrapping_key()).into());
        let plain = framed::open(&cipher, &parts, associated_data(parts.header).as_bytes())?;
        let mut key = Zeroizing::new([0u8; KEY_LEN]);
        if plain.expose_secret().len() != KEY_LEN {
            return Err(CryptoError::Malformed {
                what: WHAT,
                reason: "wrong length",
            });
        }
        key.copy_from_slice(plain.expose_secret());
        Ok(DataKey::from_bytes(key))
    }
}

impl fmt::Debug for WrappedKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WrappedKey")
            .field("root_key_id", &self.root_key_id())
            .finish_non_exhaustive()
    }
}

base64_serde!(WrappedKey, "wrapped key");

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::crypto::keys::tests::{fixed_data_key, fixed_root};

    #[test]
    fn round_trip_and_key_check() {
        let root = RootKey::generate().unwrap();
        let dek = DataKey::generate().unwrap();
        let wrapped = root.wrap(&dek).unwrap();
        assert_eq!(wrapped.as_bytes().len(), WRAPPED_LEN);
        assert_eq!(wrapped.root_key_id(), root.key_id());
        assert!(
            !wrapped
                .as_bytes()
                .windows(8)
                .any(|w| w == &dek.expose()[..8])
        );
        let back = root.unwrap(&wrapped).unwrap();
        assert_eq!(back.expose(), dek.expose());
        assert_eq!(back.key_id(), dek.key_id());
    }

    #[test]
    fn fresh_nonce_per_wrap() {
        let root = fixed_root();
        let dek = fixed_data_key();
        assert_ne!(root.wrap(&dek).unwrap(), root.wrap(&dek).unwrap());
    }

    #[test]
    fn wrong_root_key_is_detected() {
        let dek = fixed_data_key();
        let wrapped = fixed_root().wrap(&dek).unwrap();
        let other = RootKey::generate().unwrap();
        assert!(matches!(
            other.unwrap(&wrapped),
            Err(CryptoError::KeyMismatch { .. })
        ));
        // Even when the id is forged to match, authentication fails.
        let mut bytes = wrapped.as_bytes().to_vec();
        bytes[1..5].copy_from_slice(&other.key_id().to_bytes());
        let forged = WrappedKey::from_bytes(&bytes).unwrap();
        assert!(matches!(
            other.unwrap(&forged),
            Err(CryptoError::Unauthentic)
        ));
    }

    #[test]
    fn a_data_key_rewrapped_under_another_root_key_opens_only_with_it() {
        let dek = fixed_data_key();
        let old = fixed_root();
        let new = RootKey::generate().unwrap();
        let w_old = old.wrap(&dek).unwrap();
        let rewrapped = new.wrap(&old.unwrap(&w_old).unwrap()).unwrap();
        assert_eq!(new.unwrap(&rewrapped).unwrap().key_id(), dek.key_id());
        assert!(old.unwrap(&rewrapped).is_err());
    }

    #[test]
    fn bit_flips_fail() {
        let root = fixed_root();
        let wrapped = root.wrap(&fixed_data_key()).unwrap();
        for i in 0..WRAPPED_LEN {
            let mut bytes = wrapped.as_bytes().to_vec();
            bytes[i] ^= 0x04;
            let result = WrappedKey::from_bytes(&bytes).and_then(|w| root.unwrap(&w));
            let err = result.map(|_| ()).unwrap_err();
            match i {
                0 => assert!(matches!(err, CryptoError::UnsupportedFormat { .. })),
                1..=4 => assert!(matches!(err, CryptoError::KeyMismatch { .. })),
                _ => assert!(matches!(err, CryptoError::Unauthentic)),
            }
        }
    }

    #[test]
    fn bad_lengths_and_formats_are_refused() {
        let wrapped = fixed_root().wrap(&fixed_data_key()).unwrap();
        let bytes = wrapped.as_bytes();
        assert!(matches!(
            WrappedKey::from_bytes(&[]),
            Err(CryptoError::Malformed { .. })
        ));
        assert!(matches!(
            WrappedKey::from_bytes(&bytes[..WRAPPED_LEN - 1]),
            Err(CryptoError::Malformed { .. })
        ));
        let mut longer = bytes.to_vec();
        longer.push(0);
        assert!(WrappedKey::from_bytes(&longer).is_err());
        let mut newer = bytes.to_vec();
        newer[0] = 9;
        assert_eq!(
            WrappedKey::from_bytes(&newer).unwrap_err().to_string(),
            "sealed with format 9; this build supports up to 1"
        );
    }

    #[test]
    fn serde_and_debug() {
        let root = fixed_root();
        let wrapped = root.wrap(&fixed_data_key()).unwrap();
        let json = serde_json::to_string(&wrapped).unwrap();
        let back: WrappedKey = serde_json::from_str(&json).unwrap();
        assert_eq!(back, wrapped);
        assert!(serde_json::from_str::<WrappedKey>("\"AAAA\"").is_err());
        assert_eq!(
            format!("{wrapped:?}"),
            format!("WrappedKey {{ root_key_id: KeyId({}), .. }}", root.key_id())
        );
    }
}
