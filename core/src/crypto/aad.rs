//! Record types and the associated data that binds a sealed value to its place in the store.

use super::canonical::Canonical;

/// The kind of a stored record. Bound into every envelope and record MAC, so bytes written as
/// one kind never verify as another.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum RecordType {
    /// A secret's value (a sealed [`crate::secret::SecretMap`]).
    SecretValue,
    /// A secret's metadata: versions, times, TTL, allowed SPIFFE IDs and destinations.
    SecretMetadata,
    /// A policy.
    Policy,
    /// A reference token's binding.
    TokenBinding,
    /// Nexus's own bookkeeping (initialization state, counters).
    System,
}

impl RecordType {
    /// The stable tag bound into associated data and MACs. Part of the on-disk format: never
    /// change one.
    pub const fn tag(self) -> &'static str {
        match self {
            Self::SecretValue => "secret-value",
            Self::SecretMetadata => "secret-metadata",
            Self::Policy => "policy",
            Self::TokenBinding => "token-binding",
            Self::System => "system",
        }
    }
}

/// Associated data for one sealed value: where it lives, so a ciphertext copied anywhere else
/// fails to open.
///
/// Encoded canonically as `record type ‖ path ‖ version ‖ incarnation` (length-prefixed
/// strings, big-endian `u64`s), together with the envelope header. Paths are not secret.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Aad<'a> {
    /// What kind of record this is.
    pub record: RecordType,
    /// The secret's path (or the record's key).
    pub path: &'a str,
    /// The secret version this value belongs to.
    pub version: u64,
    /// Drawn at random when the path's metadata record is created (its first write), and
    /// kept for as long as that record exists: destroying versions keeps it. A path created
    /// again after its record is gone gets a fresh random value, so a value sealed for an
    /// earlier life of the path does not open in the new one.
    pub incarnation: u64,
}

impl Aad<'_> {
    /// The canonical bytes, prefixed with the envelope's `header` (format and key id), so the
    /// header is authenticated as well.
    pub(crate) fn encode(&self, header: &[u8]) -> Canonical {
        let mut c = Canonical::new("spike/v1/envelope");
        c.field(header)
            .field(self.record.tag().as_bytes())
            .field(self.path.as_bytes())
            .u64(self.version)
            .u64(self.incarnation);
        c
    }
}
