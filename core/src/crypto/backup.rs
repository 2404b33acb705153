//! Encryption of backups under the data key's [`KeyPurpose::Backup`] subkey.
//!
//! Layout (format 1), the same framing as the stored-value envelope:
//!
//! ```text
//! format (1 byte) ‖ data key id (4) ‖ nonce (12) ‖ ciphertext ‖ tag (16)
//! ```
//!
//! The associated data is the canonical encoding of a label, the header, and what the caller
//! binds (a backup's manifest and init record), so none of them can be swapped or edited
//! without the payload failing to open. One seal per backup, each with a fresh random nonce.

use std::fmt;

use aes_gcm::Aes256Gcm;
use aes_gcm::aead::KeyInit;

use super::CryptoError;
use super::canonical::Canonical;
use super::framed;
use super::keys::{DataKey, KeyId, KeyPurpose, fill_random};
use crate::secret::SecretBytes;

/// The backup payload format this build writes, and the newest it reads.
pub const BACKUP_PAYLOAD_FORMAT: u8 = 1;

const HEADER_LEN: usize = 1 + 4;
const LABEL: &str = "spike/v1/backup-payload";

/// Seals and opens backup payloads under one data key's backup subkey.
pub struct BackupKey {
    cipher: Aes256Gcm,
    key_id: KeyId,
}

impl BackupKey {
    /// The backup key of `data_key`.
    pub fn new(data_key: &DataKey) -> Self {
        let sub = data_key.derive(KeyPurpose::Backup);
        Self {
            cipher: Aes256Gcm::new(sub.expose_secret().into()),
            key_id: data_key.key_id(),
        }
    }

    /// The id of the data key, written into every payload.
    pub fn key_id(&self) -> KeyId {
        self.key_id
    }

    /// Seals `plaintext`, bound to `bound` (the backup's clear parts).
    pub fn seal(&self, bound: &[u8], plaintext: &[u8]) -> Result<Vec<u8>, CryptoError> {
        let mut nonce = [0u8; framed::NONCE_LEN];
        fill_random(&mut nonce)?;
        let header = self.header();
        framed::seal(
            &self.cipher,
            &header,
            nonce,
            associated(&header, bound).as_bytes(),
            plaintext,
            aes_gcm::P_MAX,
        )
    }

    /// Opens a payload sealed for `bound`: refuses a newer format, a short input, another
    /// data key ([`CryptoError::KeyMismatch`]) and anything altered ([`CryptoError::Unauthentic`]).
    pub fn open(&self, bound: &[u8], sealed: &[u8]) -> Result<SecretBytes, CryptoError> {
        let parts = framed::split::<HEADER_LEN>(sealed, BACKUP_PAYLOAD_FORMAT, "backup payload")?;
        let h = parts.header;
        let found = KeyId::from_bytes([h[1], h[2], h[3], h[4]]);
        if found != self.key_id {
            return Err(CryptoError::KeyMismatch {
                expected: self.key_id,
                found,
            });
        }
        framed::open(&self.cipher, &parts, associated(h, bound).as_bytes())
    }

    fn header(&self) -> [u8; HEADER_LEN] {
        let id = self.key_id.to_bytes();
        [BACKUP_PAYLOAD_FORMAT, id[0], id[1], id[2], id[3]]
    }
}

/// The data key id a sealed payload names, if it is long enough to name one.
pub fn backup_key_id(sealed: &[u8]) -> Option<KeyId> {
    let id: [u8; 4] = sealed.get(1..5)?.try_into().ok()?;
    Some(KeyId::from_bytes(id))
}

fn associated(header: &[u8; HEADER_LEN], bound: &[u8]) -> Canonical {
    let mut c = Canonical::new(LABEL);
    c.field(header).field(bound);
    c
}

impl fmt::Debug for BackupKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BackupKey")
            .field("data_key_id", &self.key_id)
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::crypto::keys::tests::fixed_data_key;

    #[test]
    fn a_payload_opens_only_with_its_key_and_its_bound_parts() {
        let key = BackupKey::new(&fixed_data_key());
        let sealed = key.seal(b"manifest", b"entries").unwrap();
        assert_eq!(
            key.open(b"manifest", &sealed).unwrap().expose_secret(),
            b"entries"
        );
        assert_eq!(backup_key_id(&sealed), Some(key.key_id()));
        assert!(matches!(
            key.open(b"other manifest", &sealed),
            Err(CryptoError::Unauthentic)
        ));
        let mut edited = sealed.clone();
        let last = edited.len() - 1;
        edited[last] ^= 1;
        assert!(key.open(b"manifest", &edited).is_err());
        assert!(key.open(b"manifest", &sealed[..sealed.len() - 1]).is_err());
        assert!(key.open(b"manifest", &sealed[..3]).is_err());
        let other = BackupKey::new(&DataKey::generate().unwrap());
        assert!(matches!(
            other.open(b"manifest", &sealed),
            Err(CryptoError::KeyMismatch { .. })
        ));
        // Not the storage key's envelope: the same data key, another subkey.
        let env = crate::crypto::EnvelopeKey::new(&fixed_data_key());
        let aad = crate::crypto::Aad {
            record: crate::crypto::RecordType::SecretValue,
            path: "p",
            version: 1,
            incarnation: 1,
        };
        assert!(env.open(&aad, &sealed).is_err());
    }
}
