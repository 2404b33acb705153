//! Crypto: the key hierarchy, the stored-value envelope, record MACs and Shamir sharing.
//!
//! - [`RootKey`]: 256 random bits, a key-encryption key only. It wraps the [`DataKey`]
//!   ([`RootKey::wrap`], [`RootKey::unwrap`]; the [`WrappedKey`] is also the check that a
//!   rebuilt root key is the right one), and is split into [`Share`]s ([`split`],
//!   [`share_for`], [`combine`]).
//! - [`DataKey`]: 256 random bits, stored only wrapped. [`DataKey::derive`] gives a
//!   [`SubKey`] per [`KeyPurpose`] (HKDF-SHA256). A [`KeyRing`] holds every data-key
//!   generation a store still needs, sealed under the root key; the key id in every envelope,
//!   tag and cipher message picks the generation that opens it.
//! - [`EnvelopeKey`]: AES-256-GCM envelopes for stored values, bound to their place by
//!   [`Aad`].
//! - [`RecordMac`]: HMAC-SHA256 [`RecordTag`]s for non-secret records at rest.
//!
//! Every stored format starts with a format byte; this build refuses newer formats with
//! [`CryptoError::UnsupportedFormat`] ("sealed with format N; this build supports up to M").
//! Known-answer tests pin every derivation, so an accidental change to what is on disk
//! fails a test.
//!
//! Key material lives in zeroizing buffers and no `Debug` output shows it; key ids
//! ([`KeyId`]) are one-way and safe to log.
#![warn(missing_docs)]

mod aad;
mod backup;
mod canonical;
mod cipher;
mod envelope;
mod error;
mod framed;
mod freshness;
mod keys;
mod mac;
mod ring;
mod shamir;
mod stamped;
mod wrap;

pub use aad::{Aad, RecordType};
pub use backup::{BACKUP_PAYLOAD_FORMAT, BackupKey, backup_key_id};
pub use cipher::{CIPHER_FORMAT, CIPHER_OVERHEAD, CipherAad, CipherBinding, CipherKey};
pub use envelope::{ENVELOPE_FORMAT, ENVELOPE_OVERHEAD, EnvelopeKey};
pub use error::CryptoError;
pub use freshness::{FRESHNESS_LEN, FreshnessKey};
pub(crate) use keys::hmac_sha256;
pub use keys::{
    DataKey, KEY_LEN, KeyId, KeyPurpose, ParseKeyIdError, RootKey, SubKey, fill_random,
};
pub use mac::{RECORD_TAG_FORMAT, RECORD_TAG_LEN, RecordMac, RecordTag};
pub use ring::{KeyRing, MAX_GENERATIONS, RING_FORMAT};
pub use shamir::{Share, ShareParams, SharePurpose, combine, share_for, split};
pub use wrap::{WRAP_FORMAT, WRAPPED_KEY_LEN, WrappedKey};
