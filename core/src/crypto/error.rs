use super::keys::KeyId;

/// Why a crypto operation failed.
///
/// Messages never contain key material, plaintext, or which byte of a ciphertext was wrong.
/// Key ids (see [`KeyId`]) are one-way, non-secret identifiers and may appear.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CryptoError {
    /// The operating system's random number generator failed.
    #[error("the operating system's random number generator failed: {0}")]
    Rng(getrandom::Error),

    /// The data was written by a newer (or unknown) format than this build reads.
    #[error("sealed with format {found}; this build supports up to {supported}")]
    UnsupportedFormat {
        /// Format byte found in the data.
        found: u8,
        /// Newest format this build reads.
        supported: u8,
    },

    /// The data was sealed or wrapped under a different key than the one offered.
    #[error("sealed under key {found}, but the key in use is {expected}")]
    KeyMismatch {
        /// Id of the key that was offered.
        expected: KeyId,
        /// Id recorded in the data.
        found: KeyId,
    },

    /// Authentication failed: wrong key, wrong context (associated data) or altered data.
    ///
    /// Deliberately one variant for every cause, so no caller can learn which part was wrong.
    #[error("integrity check failed: wrong key, wrong context, or altered data")]
    Unauthentic,

    /// The data is too short or otherwise not in the expected layout.
    #[error("malformed {what}: {reason}")]
    Malformed {
        /// What was being decoded.
        what: &'static str,
        /// What is wrong with it.
        reason: &'static str,
    },

    /// The plaintext is larger than AES-GCM can seal in one message.
    #[error("plaintext too large to seal")]
    TooLarge,

    /// The Shamir parameters are out of range.
    #[error("invalid share parameters: {0}")]
    InvalidShareParams(&'static str),

    /// Fewer shares than the threshold were given.
    #[error("need at least {need} distinct shares, got {got}")]
    TooFewShares {
        /// Shares given.
        got: usize,
        /// The threshold.
        need: u8,
    },

    /// The same share index was given more than once.
    #[error("share index {index} was given more than once")]
    DuplicateShare {
        /// The repeated index.
        index: u8,
    },

    /// A share index is outside `1..=shares`.
    #[error("share index {index} is outside 1..={shares}")]
    ShareIndexOutOfRange {
        /// The offending index.
        index: u8,
        /// Number of shares in the split.
        shares: u8,
    },
}
