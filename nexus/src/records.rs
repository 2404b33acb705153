//! Authenticated records at rest.
//!
//! Secret metadata, policies and token bindings are JSON prefixed by an HMAC-SHA256 tag under
//! the record-authentication subkey, computed over the record type, its key and its bytes.
//! Editing a record (to grant a policy, widen a binding, or move a record to another key)
//! therefore fails closed instead of changing what Nexus believes. A tag cannot tell an older,
//! validly tagged copy of a record from the newest one: putting one back (undoing a delete, a
//! revocation) is not caught here (docs/security.md, known gaps).

use serde::Serialize;
use serde::de::DeserializeOwned;
use spike_core::crypto::{RECORD_TAG_LEN, RecordType};

use crate::keys::{OpenKeys, stamped_id};

/// Kinds of authenticated records; the kind is bound into the tag.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    /// Secret metadata, keyed by path.
    SecretMeta,
    /// A policy, keyed by name.
    Policy,
    /// A reference token's binding, keyed by the hex of the reference's keyed hash.
    TokenBinding,
}

impl Kind {
    fn record(self) -> RecordType {
        match self {
            Self::SecretMeta => RecordType::SecretMetadata,
            Self::Policy => RecordType::Policy,
            Self::TokenBinding => RecordType::TokenBinding,
        }
    }

    fn label(self) -> &'static str {
        self.record().tag()
    }
}

/// Why a stored record was refused.
#[derive(Debug, thiserror::Error)]
pub(crate) enum RecordError {
    /// The tag does not match: the record was edited, moved, or written under another key.
    #[error("{0} record failed authentication (tampered or moved)")]
    Tampered(&'static str),
    /// The JSON does not parse.
    #[error("{0} record is malformed")]
    Malformed(&'static str),
}

/// Serializes and tags a record.
pub(crate) fn tag<T: Serialize>(keys: &OpenKeys, kind: Kind, key: &[u8], value: &T) -> Vec<u8> {
    // Serializing plain structs of strings and numbers cannot fail.
    let body = serde_json::to_vec(value).unwrap_or_default();
    let tag = keys.record_tag(kind.record(), key, &body);
    let mut out = Vec::with_capacity(RECORD_TAG_LEN + body.len());
    out.extend_from_slice(tag.as_bytes());
    out.extend_from_slice(&body);
    out
}

/// Verifies and parses a record.
pub(crate) fn verify<T: DeserializeOwned>(
    keys: &OpenKeys,
    kind: Kind,
    key: &[u8],
    bytes: &[u8],
) -> Result<T, RecordError> {
    if bytes.len() < RECORD_TAG_LEN {
        return Err(RecordError::Tampered(kind.label()));
    }
    let (tag, body) = bytes.split_at(RECORD_TAG_LEN);
    if !keys.verify_record_tag(kind.record(), key, body, tag) {
        return Err(RecordError::Tampered(kind.label()));
    }
    serde_json::from_slice(body).map_err(|_| RecordError::Malformed(kind.label()))
}

/// Re-encryption: `bytes` tagged under the current generation, or `None` when they already
/// are. The old tag is verified first, so re-tagging never launders an edited record.
pub(crate) fn retag(
    keys: &OpenKeys,
    kind: Kind,
    key: &[u8],
    bytes: &[u8],
) -> Result<Option<Vec<u8>>, RecordError> {
    if bytes.len() < RECORD_TAG_LEN {
        return Err(RecordError::Tampered(kind.label()));
    }
    if stamped_id(bytes) == Some(keys.current_generation()) {
        return Ok(None);
    }
    let (tag, body) = bytes.split_at(RECORD_TAG_LEN);
    if !keys.verify_record_tag(kind.record(), key, body, tag) {
        return Err(RecordError::Tampered(kind.label()));
    }
    let tag = keys.record_tag(kind.record(), key, body);
    let mut out = Vec::with_capacity(bytes.len());
    out.extend_from_slice(tag.as_bytes());
    out.extend_from_slice(body);
    Ok(Some(out))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn re_tagging_refuses_an_edited_record_instead_of_laundering_it() {
        let (keys, _) = OpenKeys::create(3, 2).unwrap();
        let tagged = tag(
            &keys,
            Kind::Policy,
            b"web",
            &serde_json::json!({"p": "read"}),
        );
        // Already under the current generation: nothing to do.
        assert!(
            retag(&keys, Kind::Policy, b"web", &tagged)
                .unwrap()
                .is_none()
        );
        // Under an older generation after a rotation: re-tagged, and it verifies.
        keys.install_ring(keys.rotated_ring().unwrap());
        let moved = retag(&keys, Kind::Policy, b"web", &tagged)
            .unwrap()
            .unwrap();
        let v: serde_json::Value = verify(&keys, Kind::Policy, b"web", &moved).unwrap();
        assert_eq!(v["p"], "read");
        // An edited body (granting more) under the old tag is refused, never re-tagged.
        let mut edited = tagged.clone();
        let body = String::from_utf8(edited.split_off(RECORD_TAG_LEN)).unwrap();
        edited.extend_from_slice(body.replace("read", "supr").as_bytes());
        assert!(retag(&keys, Kind::Policy, b"web", &edited).is_err());
        // So is a record moved to another key.
        assert!(retag(&keys, Kind::Policy, b"admin", &tagged).is_err());
    }
}
