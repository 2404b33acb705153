//! The cipher API's message format: AES-256-GCM-SIV under the data key's cipher subkey.
//!
//! Layout (format 1, [`CIPHER_OVERHEAD`] = 34 bytes around the plaintext):
//!
//! ```text
//! format (1) ‖ data key id (4) ‖ flags (1) ‖ nonce (12) ‖ ciphertext ‖ tag (16)
//! ```
//!
//! - The key is the data key's [`KeyPurpose::Cipher`] subkey, used for nothing else, so a
//!   workload can never get Nexus to decrypt a stored secret, or the reverse.
//! - AES-256-GCM-SIV (RFC 8452) is nonce-misuse resistant: if a nonce ever repeated (a broken
//!   RNG, a restored VM snapshot), an attacker would learn only whether the two messages were
//!   identical, not the key stream or the authentication key. The nonce is still fresh from the
//!   OS CSPRNG for every message.
//! - The associated data is the canonical encoding of the purpose label
//!   (`"spike/v1/cipher"`), the header (format, key id, flags), the caller-supplied *context*
//!   (a path, also the one Nexus authorizes the `cipher` permission on) and, only when the
//!   flags say so, the caller's SPIFFE ID. A ciphertext therefore opens only under the context
//!   it was sealed for, and a caller-bound one only for the same SPIFFE ID.
//!
//! Opening refuses a newer or unknown format with a clear message
//! ([`CryptoError::UnsupportedFormat`]), a ciphertext from another data key with
//! [`CryptoError::KeyMismatch`], and everything else (wrong context, wrong caller, unknown
//! flags, any altered byte) with the one generic [`CryptoError::Unauthentic`].

use std::fmt;

use aes_gcm_siv::Aes256GcmSiv;
use aes_gcm_siv::aead::KeyInit;

use super::CryptoError;
use super::canonical::Canonical;
use super::framed::{self, NONCE_LEN, TAG_LEN};
use super::keys::{KeyId, KeyPurpose, SubKey, fill_random};
use crate::id::SpiffeId;
use crate::secret::SecretBytes;

/// The cipher message format this build writes, and the newest it reads.
pub const CIPHER_FORMAT: u8 = 1;

const HEADER_LEN: usize = 1 + 4 + 1;

/// Bytes a cipher message adds to its plaintext: header (format, key id, flags), nonce, tag.
pub const CIPHER_OVERHEAD: usize = HEADER_LEN + NONCE_LEN + TAG_LEN;

/// The purpose label bound into every message's associated data.
const AAD_LABEL: &str = "spike/v1/cipher";

/// Flag bit: the caller's SPIFFE ID is bound into the associated data.
const FLAG_CALLER: u8 = 0x01;

/// What a message is bound to besides the key: always its context, optionally its caller.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
#[non_exhaustive]
pub enum CipherBinding {
    /// Opens for any caller allowed to use the context.
    #[default]
    Context,
    /// Opens only for the same SPIFFE ID, under the same context.
    ContextAndCaller,
}

impl CipherBinding {
    const fn flags(self) -> u8 {
        match self {
            Self::Context => 0,
            Self::ContextAndCaller => FLAG_CALLER,
        }
    }

    const fn from_flags(flags: u8) -> Option<Self> {
        match flags {
            0 => Some(Self::Context),
            FLAG_CALLER => Some(Self::ContextAndCaller),
            _ => None,
        }
    }
}

/// The associated data of one cipher call: the context it is made under and who makes it.
///
/// Neither is secret. `caller` is bound only when the message's [`CipherBinding`] says so.
#[derive(Debug, Clone, Copy)]
pub struct CipherAad<'a> {
    /// The caller-chosen context (a secret-path-shaped name).
    pub context: &'a str,
    /// The authenticated caller.
    pub caller: &'a SpiffeId,
}

impl CipherAad<'_> {
    fn encode(&self, header: &[u8; HEADER_LEN], binding: CipherBinding) -> Canonical {
        let caller = match binding {
            CipherBinding::Context => "",
            CipherBinding::ContextAndCaller => self.caller.as_str(),
        };
        let mut c = Canonical::new(AAD_LABEL);
        c.field(header)
            .field(self.context.as_bytes())
            .field(caller.as_bytes());
        c
    }
}

/// Seals and opens cipher-API messages under the data key's [`KeyPurpose::Cipher`] subkey.
///
/// Holds the expanded AES key (wiped on drop); `Debug` shows only the data key's id.
pub struct CipherKey {
    cipher: Aes256GcmSiv,
    key_id: KeyId,
}

impl CipherKey {
    /// The cipher key from the data key's cipher subkey.
    ///
    /// Refuses a subkey derived for any other purpose, so a mix-up cannot turn the storage or
    /// audit key into one that workloads can drive.
    pub fn new(subkey: &SubKey) -> Result<Self, CryptoError> {
        if subkey.purpose() != KeyPurpose::Cipher {
            return Err(CryptoError::Malformed {
                what: "cipher key",
                reason: "the subkey was derived for another purpose",
            });
        }
        Ok(Self {
            cipher: Aes256GcmSiv::new(subkey.expose_secret().into()),
            key_id: subkey.data_key_id(),
        })
    }

    /// The id of the data key, written into every message's header.
    pub fn key_id(&self) -> KeyId {
        self.key_id
    }

    /// Seals `plaintext` under `aad`, bound as `binding` says, with a fresh random nonce.
    pub fn seal(
        &self,
        aad: &CipherAad<'_>,
        binding: CipherBinding,
        plaintext: &[u8],
    ) -> Result<Vec<u8>, CryptoError> {
        let mut nonce = [0u8; NONCE_LEN];
        fill_random(&mut nonce)?;
        self.seal_with_nonce(aad, binding, nonce, plaintext)
    }

    fn seal_with_nonce(
        &self,
        aad: &CipherAad<'_>,
        binding: CipherBinding,
        nonce: [u8; NONCE_LEN],
        plaintext: &[u8],
    ) -> Result<Vec<u8>, CryptoError> {
        let header = self.header(binding);
        let ad = aad.encode(&header, binding);
        framed::seal(
            &self.cipher,
            &header,
            nonce,
            ad.as_bytes(),
            plaintext,
            aes_gcm_siv::P_MAX,
        )
    }

    /// Opens a message sealed by [`CipherKey::seal`] under the same context (and, for a
    /// caller-bound message, by the same caller).
    ///
    /// Refuses, in this order: an unknown or newer format ([`CryptoError::UnsupportedFormat`]),
    /// input shorter than a message ([`CryptoError::Malformed`]), another data key
    /// ([`CryptoError::KeyMismatch`]), and anything else that does not authenticate (one
    /// generic [`CryptoError::Unauthentic`]).
    pub fn open(&self, aad: &CipherAad<'_>, sealed: &[u8]) -> Result<SecretBytes, CryptoError> {
        let parts = framed::split::<HEADER_LEN>(sealed, CIPHER_FORMAT, "cipher message")?;
        let h = parts.header;
        let found = KeyId::from_bytes([h[1], h[2], h[3], h[4]]);
        if found != self.key_id {
            return Err(CryptoError::KeyMismatch {
                expected: self.key_id,
                found,
            });
        }
        // Format 1 writes no other flag bits. An unknown one is treated like any altered byte,
        // so the answer does not say which part of the message was changed.
        let Some(binding) = CipherBinding::from_flags(h[5]) else {
            return Err(CryptoError::Unauthentic);
        };
        framed::open(&self.cipher, &parts, aad.encode(h, binding).as_bytes())
    }

    fn header(&self, binding: CipherBinding) -> [u8; HEADER_LEN] {
        let id = self.key_id.to_bytes();
        [CIPHER_FORMAT, id[0], id[1], id[2], id[3], binding.flags()]
    }
}

impl fmt::Debug for CipherKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CipherKey")
            .field("data_key_id", &self.key_id)
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use std::collections::HashSet;

    use super::*;
    use crate::crypto::DataKey;
    use crate::crypto::keys::tests::fixed_data_key;
    use aes_gcm_siv::Nonce;
    use aes_gcm_siv::aead::AeadInOut;

    fn key_of(dek: &DataKey) -> CipherKey {
        CipherKey::new(&dek.derive(KeyPurpose::Cipher)).unwrap()
    }

    fn id(s: &str) -> SpiffeId {
        SpiffeId::new(s).unwrap()
    }

    fn alice() -> SpiffeId {
        id("spiffe://spike.test/app/alice")
    }

    fn aad<'a>(context: &'a str, caller: &'a SpiffeId) -> CipherAad<'a> {
        CipherAad { context, caller }
    }

    const BOTH: [CipherBinding; 2] = [CipherBinding::Context, CipherBinding::ContextAndCaller];

    #[test]
    fn round_trip_and_layout() {
        let dek = DataKey::generate().unwrap();
        let key = key_of(&dek);
        let a = alice();
        for binding in BOTH {
            let sealed = key
                .seal(&aad("apps/billing", &a), binding, b"card 4111")
                .unwrap();
            assert_eq!(sealed.len(), CIPHER_OVERHEAD + 9);
            assert_eq!(sealed[0], CIPHER_FORMAT);
            assert_eq!(sealed[1..5], dek.key_id().to_bytes());
            assert_eq!(sealed[5], binding.flags());
            assert!(!sealed.windows(9).any(|w| w == b"card 4111"));
            let plain = key.open(&aad("apps/billing", &a), &sealed).unwrap();
            assert_eq!(plain.expose_secret(), b"card 4111");
        }
    }

    #[test]
    fn empty_and_binary_plaintexts() {
        let key = key_of(&fixed_data_key());
        let a = alice();
        let all: Vec<u8> = (0..=255u8).collect();
        for plain in [&b""[..], &all[..]] {
            let sealed = key
                .seal(&aad("c", &a), CipherBinding::Context, plain)
                .unwrap();
            assert_eq!(sealed.len(), CIPHER_OVERHEAD + plain.len());
            assert_eq!(
                key.open(&aad("c", &a), &sealed).unwrap().expose_secret(),
                plain
            );
            // Even an empty message is bound to its context.
            assert!(matches!(
                key.open(&aad("d", &a), &sealed),
                Err(CryptoError::Unauthentic)
            ));
        }
    }

    #[test]
    fn wrong_context_fails_for_both_bindings() {
        let key = key_of(&fixed_data_key());
        let a = alice();
        for binding in BOTH {
            let sealed = key.seal(&aad("apps/db", &a), binding, b"v").unwrap();
            for other in ["apps/dc", "apps/db/", "apps", "", "Apps/db"] {
                assert!(
                    matches!(
                        key.open(&aad(other, &a), &sealed),
                        Err(CryptoError::Unauthentic)
                    ),
                    "{other:?} opened a {binding:?} message"
                );
            }
        }
    }

    #[test]
    fn caller_binding_is_opt_in() {
        let key = key_of(&fixed_data_key());
        let a = alice();
        let b = id("spiffe://spike.test/app/bob");
        // Context only: any caller (whom Nexus lets use the context) opens it.
        let shared = key
            .seal(&aad("apps/db", &a), CipherBinding::Context, b"v")
            .unwrap();
        assert!(key.open(&aad("apps/db", &b), &shared).is_ok());
        // Bound to the caller: only the same SPIFFE ID.
        let private = key
            .seal(&aad("apps/db", &a), CipherBinding::ContextAndCaller, b"v")
            .unwrap();
        assert!(key.open(&aad("apps/db", &a), &private).is_ok());
        for other in [
            b,
            id("spiffe://spike.test/app/alice/x"),
            id("spiffe://other.test/app/alice"),
        ] {
            assert!(matches!(
                key.open(&aad("apps/db", &other), &private),
                Err(CryptoError::Unauthentic)
            ));
        }
        // Clearing the flag to drop the caller binding does not authenticate either.
        let mut stripped = private;
        stripped[5] = 0;
        assert!(matches!(
            key.open(&aad("apps/db", &a), &stripped),
            Err(CryptoError::Unauthentic)
        ));
        let mut added = shared;
        added[5] = FLAG_CALLER;
        assert!(matches!(
            key.open(&aad("apps/db", &a), &added),
            Err(CryptoError::Unauthentic)
        ));
    }

    #[test]
    fn bit_flips_in_every_region_fail() {
        let key = key_of(&fixed_data_key());
        let a = alice();
        let sealed = key
            .seal(
                &aad("apps/db", &a),
                CipherBinding::ContextAndCaller,
                b"some data",
            )
            .unwrap();
        for i in 0..sealed.len() {
            for bit in [0x01u8, 0x02, 0x80] {
                let mut bad = sealed.clone();
                bad[i] ^= bit;
                let err = key.open(&aad("apps/db", &a), &bad).unwrap_err();
                match i {
                    0 => assert!(matches!(err, CryptoError::UnsupportedFormat { .. }), "{i}"),
                    1..=4 => assert!(matches!(err, CryptoError::KeyMismatch { .. }), "{i}"),
                    _ => assert!(matches!(err, CryptoError::Unauthentic), "{i}"),
                }
            }
        }
    }

    #[test]
    fn failures_are_generic() {
        let key = key_of(&fixed_data_key());
        let a = alice();
        let sealed = key
            .seal(&aad("apps/db", &a), CipherBinding::Context, b"value")
            .unwrap();
        let mut tampered = sealed.clone();
        let last = tampered.len() - 1;
        tampered[last] ^= 1;
        let wrong_context = key.open(&aad("apps/x", &a), &sealed).unwrap_err();
        let altered = key.open(&aad("apps/db", &a), &tampered).unwrap_err();
        assert_eq!(wrong_context.to_string(), altered.to_string());
        assert_eq!(
            altered.to_string(),
            "integrity check failed: wrong key, wrong context, or altered data"
        );
    }

    #[test]
    fn truncated_and_extended_input_fails() {
        let key = key_of(&fixed_data_key());
        let a = alice();
        let sealed = key
            .seal(&aad("apps/db", &a), CipherBinding::Context, b"value")
            .unwrap();
        for len in 0..sealed.len() {
            assert!(key.open(&aad("apps/db", &a), &sealed[..len]).is_err());
        }
        assert!(matches!(
            key.open(&aad("apps/db", &a), &sealed[..CIPHER_OVERHEAD - 1]),
            Err(CryptoError::Malformed { .. })
        ));
        let mut longer = sealed;
        longer.push(0);
        assert!(matches!(
            key.open(&aad("apps/db", &a), &longer),
            Err(CryptoError::Unauthentic)
        ));
    }

    #[test]
    fn newer_format_is_refused_with_clear_message() {
        let key = key_of(&fixed_data_key());
        let a = alice();
        let mut sealed = key
            .seal(&aad("apps/db", &a), CipherBinding::Context, b"value")
            .unwrap();
        sealed[0] = 2;
        let err = key.open(&aad("apps/db", &a), &sealed).unwrap_err();
        assert_eq!(
            err.to_string(),
            "sealed with format 2; this build supports up to 1"
        );
        // A bare newer-format byte too, not "truncated".
        assert!(matches!(
            key.open(&aad("apps/db", &a), &[9]),
            Err(CryptoError::UnsupportedFormat { found: 9, .. })
        ));
    }

    #[test]
    fn nonces_are_fresh_and_in_place() {
        let key = key_of(&fixed_data_key());
        let a = alice();
        let mut nonces = HashSet::new();
        let mut bodies = HashSet::new();
        for _ in 0..2000 {
            let sealed = key
                .seal(&aad("c", &a), CipherBinding::Context, b"same")
                .unwrap();
            assert!(nonces.insert(sealed[HEADER_LEN..HEADER_LEN + NONCE_LEN].to_vec()));
            // GCM-SIV is deterministic for a given nonce: fresh nonces are what make equal
            // plaintexts give different ciphertexts.
            assert!(bodies.insert(sealed[HEADER_LEN + NONCE_LEN..].to_vec()));
        }
        // The nonce really is the one used: the same nonce gives the same bytes.
        let n = [7u8; NONCE_LEN];
        let s1 = key
            .seal_with_nonce(&aad("c", &a), CipherBinding::Context, n, b"same")
            .unwrap();
        let s2 = key
            .seal_with_nonce(&aad("c", &a), CipherBinding::Context, n, b"same")
            .unwrap();
        assert_eq!(s1, s2);
        assert_eq!(s1[HEADER_LEN..HEADER_LEN + NONCE_LEN], n);
    }

    #[test]
    fn wrong_key_fails() {
        let key = key_of(&fixed_data_key());
        let other = key_of(&DataKey::generate().unwrap());
        let a = alice();
        let sealed = key
            .seal(&aad("c", &a), CipherBinding::Context, b"value")
            .unwrap();
        match other.open(&aad("c", &a), &sealed) {
            Err(CryptoError::KeyMismatch { expected, found }) => {
                assert_eq!(expected, other.key_id());
                assert_eq!(found, key.key_id());
            }
            r => panic!("unexpected {:?}", r.map(|_| ())),
        }
        // A wrong key that claims the right id still fails authentication.
        let mut forged = other
            .seal(&aad("c", &a), CipherBinding::Context, b"value")
            .unwrap();
        forged[1..5].copy_from_slice(&key.key_id().to_bytes());
        assert!(matches!(
            key.open(&aad("c", &a), &forged),
            Err(CryptoError::Unauthentic)
        ));
    }

    #[test]
    fn only_the_cipher_subkey_is_accepted() {
        let dek = fixed_data_key();
        for p in KeyPurpose::ALL {
            assert_eq!(
                CipherKey::new(&dek.derive(p)).is_ok(),
                p == KeyPurpose::Cipher
            );
        }
    }

    /// RFC 8452 appendix C.2 (AEAD_AES_256_GCM_SIV, second vector): we drive the 256-bit
    /// variant of the right algorithm.
    #[test]
    fn aes_256_gcm_siv_matches_rfc8452() {
        let mut key = [0u8; 32];
        key[0] = 1;
        let mut nonce = [0u8; NONCE_LEN];
        nonce[0] = 3;
        let mut buf = [1u8, 0, 0, 0, 0, 0, 0, 0];
        let tag = Aes256GcmSiv::new(&key.into())
            .encrypt_inout_detached(&Nonce::from(nonce), b"", (&mut buf[..]).into())
            .unwrap();
        assert_eq!(hex::encode(buf), "c2ef328e5c71c83b");
        assert_eq!(hex::encode(tag), "843122130f7364b761e0b97427e3df28");
    }

    /// Pins the key derivation and the message format. If this fails, ciphertexts that
    /// workloads keep would no longer open: add a new format instead of changing this one.
    #[test]
    fn known_answer() {
        let dek = fixed_data_key();
        let sub = dek.derive(KeyPurpose::Cipher);
        assert_eq!(
            hex::encode(sub.expose_secret()),
            "3ad2b36de5838f7f3d31185a8dbd33eced2b0377233dbae62216071bd4f1e2a1"
        );
        let key = CipherKey::new(&sub).unwrap();
        let a = alice();
        let nonce = [0x11u8; NONCE_LEN];
        let ctx = aad("apps/billing", &a);
        for (binding, expected) in [
            (CipherBinding::Context, KAT_CONTEXT),
            (CipherBinding::ContextAndCaller, KAT_CALLER),
        ] {
            let sealed = key
                .seal_with_nonce(&ctx, binding, nonce, b"hello, cipher")
                .unwrap();
            assert_eq!(hex::encode(&sealed), expected, "{binding:?}");
            let stored = hex::decode(expected).unwrap();
            assert_eq!(
                key.open(&ctx, &stored).unwrap().expose_secret(),
                b"hello, cipher"
            );
        }
    }

    const KAT_CONTEXT: &str = "01382acf2d0011111111111111111111111198730812cf57c29cf53c5fc612c1cde3b8a7e5b596646efa1d9ab89ed8";
    const KAT_CALLER: &str = "01382acf2d01111111111111111111111111d548ad14d2104a677c03a2429dda80538e2d9eef0ca28c09c4403ec720";

    #[test]
    fn debug_shows_only_the_key_id() {
        let dek = fixed_data_key();
        let key = key_of(&dek);
        assert_eq!(
            format!("{key:?}"),
            format!("CipherKey {{ data_key_id: KeyId({}), .. }}", dek.key_id())
        );
    }
}
