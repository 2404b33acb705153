//! The one AEAD framing both message formats use: `header ‖ nonce ‖ ciphertext ‖ tag`.
//!
//! The stored-value envelope (AES-256-GCM) and the cipher API's messages (AES-256-GCM-SIV)
//! differ in their header and associated data, not in how a message is laid out, encrypted in
//! place or refused, so that part lives here once. The header's first byte is always the
//! format, checked before the length so that a newer format gets the clear message.

use aes_gcm::aead::consts::{U12, U16};
use aes_gcm::aead::{AeadCore, AeadInOut};
use zeroize::{Zeroize, Zeroizing};

use super::CryptoError;
use crate::secret::SecretBytes;

/// Nonce length of both AEADs (96 bits).
pub(super) const NONCE_LEN: usize = 12;
/// Tag length of both AEADs (128 bits).
pub(super) const TAG_LEN: usize = 16;

/// An AEAD with 96-bit nonces and 128-bit tags (AES-256-GCM and AES-256-GCM-SIV).
pub(super) trait Aead96: AeadInOut + AeadCore<NonceSize = U12, TagSize = U16> {}
impl<T: AeadInOut + AeadCore<NonceSize = U12, TagSize = U16>> Aead96 for T {}

/// A message split into its parts; borrowed from the input.
pub(super) struct Parts<'a, const H: usize> {
    pub(super) header: &'a [u8; H],
    pub(super) nonce: &'a [u8; NONCE_LEN],
    pub(super) ciphertext: &'a [u8],
    pub(super) tag: &'a [u8; TAG_LEN],
}

/// Encrypts `plaintext` into `header ‖ nonce ‖ ciphertext ‖ tag`.
///
/// `max_plaintext` is the AEAD's limit (`P_MAX`). The output is sized exactly, so encrypting
/// in place never reallocates and leaves no plaintext copy behind.
pub(super) fn seal<C: Aead96, const H: usize>(
    cipher: &C,
    header: &[u8; H],
    nonce: [u8; NONCE_LEN],
    associated: &[u8],
    plaintext: &[u8],
    max_plaintext: u64,
) -> Result<Vec<u8>, CryptoError> {
    if plaintext.len() as u64 > max_plaintext {
        return Err(CryptoError::TooLarge);
    }
    let mut out = Vec::with_capacity(H + NONCE_LEN + plaintext.len() + TAG_LEN);
    out.extend_from_slice(header);
    out.extend_from_slice(&nonce);
    out.extend_from_slice(plaintext);
    match cipher.encrypt_inout_detached(
        &nonce.into(),
        associated,
        (&mut out[H + NONCE_LEN..]).into(),
    ) {
        Ok(tag) => {
            out.extend_from_slice(&tag);
            Ok(out)
        }
        Err(_) => {
            // Only reachable past the AEAD's limits (checked above); the buffer may still
            // hold plaintext, so wipe it.
            out.zeroize();
            Err(CryptoError::TooLarge)
        }
    }
}

/// Splits a message after checking its format byte (first) and its length (second).
///
/// `what` names the message in errors ("stored value", "cipher message").
pub(super) fn split<'a, const H: usize>(
    sealed: &'a [u8],
    format: u8,
    what: &'static str,
) -> Result<Parts<'a, H>, CryptoError> {
    let malformed = |reason| CryptoError::Malformed { what, reason };
    let Some(&found) = sealed.first() else {
        return Err(malformed("empty"));
    };
    if found != format {
        return Err(CryptoError::UnsupportedFormat {
            found,
            supported: format,
        });
    }
    if sealed.len() < H + NONCE_LEN + TAG_LEN {
        return Err(malformed("truncated"));
    }
    let (header, rest) = sealed.split_at(H);
    let (nonce, rest) = rest.split_at(NONCE_LEN);
    let (ciphertext, tag) = rest.split_at(rest.len() - TAG_LEN);
    let (Ok(header), Ok(nonce), Ok(tag)) = (
        <&[u8; H]>::try_from(header),
        <&[u8; NONCE_LEN]>::try_from(nonce),
        <&[u8; TAG_LEN]>::try_from(tag),
    ) else {
        return Err(malformed("truncated"));
    };
    Ok(Parts {
        header,
        nonce,
        ciphertext,
        tag,
    })
}

/// Decrypts the parts of a message; any failure is the one generic
/// [`CryptoError::Unauthentic`].
pub(super) fn open<C: Aead96, const H: usize>(
    cipher: &C,
    parts: &Parts<'_, H>,
    associated: &[u8],
) -> Result<SecretBytes, CryptoError> {
    let mut buf = Zeroizing::new(parts.ciphertext.to_vec());
    cipher
        .decrypt_inout_detached(
            &(*parts.nonce).into(),
            associated,
            buf.as_mut_slice().into(),
            &(*parts.tag).into(),
        )
        .map_err(|_| CryptoError::Unauthentic)?;
    Ok(SecretBytes::new(std::mem::take(&mut *buf)))
}
