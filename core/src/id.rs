//! SPIFFE IDs, trust domains and SPIKE's built-in identities.
//!
//! Parsing follows the SPIFFE ID specification: `spiffe://<trust-domain><path>`, where the
//! trust domain is lowercase `[a-z0-9.-_]` and each path segment is `[A-Za-z0-9.-_]`, with
//! no empty, `.` or `..` segments, no query, fragment, port or user info.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// Longest SPIFFE ID accepted, in bytes (the spec's URI limit).
pub const MAX_SPIFFE_ID_LEN: usize = 2048;
const SCHEME: &str = "spiffe://";

/// Why a string is not a valid SPIFFE ID or trust domain.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum IdError {
    /// The string does not start with `spiffe://`.
    #[error("a SPIFFE ID must start with \"spiffe://\"")]
    MissingScheme,
    /// The trust domain is empty or has characters outside `[a-z0-9._-]`.
    #[error("invalid trust domain {0:?}: use lowercase letters, digits, '.', '-' and '_'")]
    BadTrustDomain(String),
    /// A path segment is empty, `.`/`..`, or has a forbidden character.
    #[error("invalid SPIFFE ID path: segments must be non-empty [A-Za-z0-9._-], not '.' or '..'")]
    BadPath,
    /// The ID is longer than [`MAX_SPIFFE_ID_LEN`].
    #[error("SPIFFE ID is longer than {MAX_SPIFFE_ID_LEN} bytes")]
    TooLong,
}

/// A SPIFFE trust domain such as `spike.dev`.
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct TrustDomain(String);

impl TrustDomain {
    /// Parses a bare trust domain name (`spike.dev`) or its ID form (`spiffe://spike.dev`).
    pub fn new(s: &str) -> Result<Self, IdError> {
        let name = s.strip_prefix(SCHEME).unwrap_or(s);
        if name.is_empty()
            || name.len() > 255
            || !name
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"._-".contains(&b))
        {
            return Err(IdError::BadTrustDomain(name.chars().take(64).collect()));
        }
        Ok(Self(name.to_owned()))
    }

    /// The trust domain name without scheme.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The trust domain's own ID, `spiffe://<td>`.
    pub fn id_string(&self) -> String {
        format!("{SCHEME}{}", self.0)
    }

    /// Builds the SPIFFE ID `spiffe://<td><path>`; `path` must start with `/`.
    pub fn id(&self, path: &str) -> Result<SpiffeId, IdError> {
        SpiffeId::new(&format!("{SCHEME}{}{path}", self.0))
    }
}

impl fmt::Display for TrustDomain {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for TrustDomain {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "TrustDomain({})", self.0)
    }
}

impl FromStr for TrustDomain {
    type Err = IdError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::new(s)
    }
}

/// A parsed, valid SPIFFE ID.
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct SpiffeId {
    full: String,
    /// Byte offset where the path starts (== full.len() when the path is empty).
    path_start: usize,
}

impl SpiffeId {
    /// Parses and validates a SPIFFE ID.
    pub fn new(s: &str) -> Result<Self, IdError> {
        if s.len() > MAX_SPIFFE_ID_LEN {
            return Err(IdError::TooLong);
        }
        let rest = s.strip_prefix(SCHEME).ok_or(IdError::MissingScheme)?;
        let (td, path) = match rest.find('/') {
            Some(i) => (&rest[..i], &rest[i..]),
            None => (rest, ""),
        };
        TrustDomain::new(td)?;
        if !path.is_empty() {
            for seg in path[1..].split('/') {
                if seg.is_empty()
                    || seg == "."
                    || seg == ".."
                    || !seg
                        .bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b))
                {
                    return Err(IdError::BadPath);
                }
            }
        }
        Ok(Self {
            full: s.to_owned(),
            path_start: SCHEME.len() + td.len(),
        })
    }

    /// The whole ID as a string.
    pub fn as_str(&self) -> &str {
        &self.full
    }

    /// The trust domain name.
    pub fn trust_domain_name(&self) -> &str {
        &self.full[SCHEME.len()..self.path_start]
    }

    /// The trust domain.
    pub fn trust_domain(&self) -> TrustDomain {
        TrustDomain(self.trust_domain_name().to_owned())
    }

    /// The path, starting with `/`, or empty for a trust-domain ID.
    pub fn path(&self) -> &str {
        &self.full[self.path_start..]
    }

    /// True when this ID belongs to `td`.
    pub fn is_member_of(&self, td: &TrustDomain) -> bool {
        self.trust_domain_name() == td.as_str()
    }
}

impl fmt::Display for SpiffeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.full)
    }
}

impl fmt::Debug for SpiffeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SpiffeId({})", self.full)
    }
}

impl FromStr for SpiffeId {
    type Err = IdError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::new(s)
    }
}

impl Serialize for SpiffeId {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.full)
    }
}

impl<'de> Deserialize<'de> for SpiffeId {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        Self::new(&s).map_err(serde::de::Error::custom)
    }
}

impl Serialize for TrustDomain {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.0)
    }
}

impl<'de> Deserialize<'de> for TrustDomain {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        Self::new(&s).map_err(serde::de::Error::custom)
    }
}

/// SPIKE's built-in identities. They are always compared exactly, never by prefix.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Builtin {
    /// `/spike/nexus`
    Nexus,
    /// `/spike/keeper/<i>`, `i` the keeper's 1-based index in Nexus's configuration.
    Keeper(u8),
    /// `/spike/bootstrap`
    Bootstrap,
    /// `/spike/pilot/role/superuser`
    Superuser,
    /// `/spike/pilot/role/recover`
    Recover,
    /// `/spike/pilot/role/restore`
    Restore,
    /// `/spike/pilot/role/backup`: takes backups of the store, nothing else.
    Backup,
    /// `/spike/operator`
    Operator,
}

impl Builtin {
    /// The ID path of this identity.
    pub fn path(self) -> String {
        match self {
            Self::Nexus => "/spike/nexus".into(),
            Self::Keeper(i) => format!("/spike/keeper/{i}"),
            Self::Bootstrap => "/spike/bootstrap".into(),
            Self::Superuser => "/spike/pilot/role/superuser".into(),
            Self::Recover => "/spike/pilot/role/recover".into(),
            Self::Restore => "/spike/pilot/role/restore".into(),
            Self::Backup => "/spike/pilot/role/backup".into(),
            Self::Operator => "/spike/operator".into(),
        }
    }

    /// The full SPIFFE ID of this identity in `td`.
    pub fn id(self, td: &TrustDomain) -> SpiffeId {
        // Built-in paths are fixed, valid segments, so this cannot fail.
        SpiffeId {
            full: format!("{SCHEME}{}{}", td.as_str(), self.path()),
            path_start: SCHEME.len() + td.as_str().len(),
        }
    }

    /// Classifies `id` as a built-in identity of `td`, by exact match.
    pub fn of(id: &SpiffeId, td: &TrustDomain) -> Option<Self> {
        if !id.is_member_of(td) {
            return None;
        }
        match id.path() {
            "/spike/nexus" => Some(Self::Nexus),
            "/spike/bootstrap" => Some(Self::Bootstrap),
            "/spike/pilot/role/superuser" => Some(Self::Superuser),
            "/spike/pilot/role/recover" => Some(Self::Recover),
            "/spike/pilot/role/restore" => Some(Self::Restore),
            "/spike/pilot/role/backup" => Some(Self::Backup),
            "/spike/operator" => Some(Self::Operator),
            p => {
                let n = p.strip_prefix("/spike/keeper/")?;
                // Exact decimal without leading zeros, so "/spike/keeper/01" is not keeper 1.
                let i: u8 = n.parse().ok()?;
                (i >= 1 && n == i.to_string()).then_some(Self::Keeper(i))
            }
        }
    }

    /// True for any ID under `/spike/` of `td`: reserved for SPIKE's own components, so a
    /// workload policy may never grant to them by pattern.
    pub fn is_reserved(id: &SpiffeId, td: &TrustDomain) -> bool {
        id.is_member_of(td) && (id.path() == "/spike" || id.path().starts_with("/spike/"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_valid_ids() {
        let id = SpiffeId::new("spiffe://spike.dev/ns/a/sa/b").unwrap();
        assert_eq!(id.trust_domain_name(), "spike.dev");
        assert_eq!(id.path(), "/ns/a/sa/b");
        let td = SpiffeId::new("spiffe://spike.dev").unwrap();
        assert_eq!(td.path(), "");
    }

    #[test]
    fn rejects_invalid_ids() {
        for bad in [
            "",
            "http://spike.dev/x",
            "spiffe://",
            "spiffe://Spike.dev/x",
            "spiffe://spike.dev/",
            "spiffe://spike.dev//x",
            "spiffe://spike.dev/a/../b",
            "spiffe://spike.dev/a/./b",
            "spiffe://spike.dev/a?b",
            "spiffe://spike.dev:443/a",
            "spiffe://user@spike.dev/a",
            "spiffe://spike.dev/a b",
        ] {
            assert!(SpiffeId::new(bad).is_err(), "{bad} should be rejected");
        }
        assert_eq!(
            SpiffeId::new(&format!("spiffe://x/{}", "a".repeat(3000))),
            Err(IdError::TooLong)
        );
    }

    #[test]
    fn builtins_match_exactly() {
        let td = TrustDomain::new("spike.dev").unwrap();
        let other = TrustDomain::new("evil.dev").unwrap();
        for b in [
            Builtin::Nexus,
            Builtin::Keeper(1),
            Builtin::Keeper(12),
            Builtin::Bootstrap,
            Builtin::Superuser,
            Builtin::Recover,
            Builtin::Restore,
            Builtin::Backup,
            Builtin::Operator,
        ] {
            assert_eq!(Builtin::of(&b.id(&td), &td), Some(b));
            assert_eq!(Builtin::of(&b.id(&td), &other), None);
        }
        for near in [
            "spiffe://spike.dev/spike/nexus/x",
            "spiffe://spike.dev/spike/nexusx",
            "spiffe://spike.dev/spike/keeper/01",
            "spiffe://spike.dev/spike/keeper/0",
            "spiffe://spike.dev/spike/keeper/256",
            "spiffe://spike.dev/spike/keeper",
            "spiffe://spike.dev/spike/pilot/role/superuser/extra",
        ] {
            let id = SpiffeId::new(near).unwrap();
            assert_eq!(Builtin::of(&id, &td), None, "{near}");
            assert!(Builtin::is_reserved(&id, &td));
        }
        let w = SpiffeId::new("spiffe://spike.dev/spikey/app").unwrap();
        assert!(!Builtin::is_reserved(&w, &td));
    }

    #[test]
    fn serde_round_trip_validates() {
        let id: SpiffeId = serde_json::from_str("\"spiffe://spike.dev/app\"").unwrap();
        assert_eq!(
            serde_json::to_string(&id).unwrap(),
            "\"spiffe://spike.dev/app\""
        );
        assert!(serde_json::from_str::<SpiffeId>("\"spiffe://spike.dev/a/../b\"").is_err());
    }
}
