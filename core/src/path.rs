//! Secret paths and list prefixes.
//!
//! A secret path is a relative, `/`-separated list of segments, each made of
//! `[A-Za-z0-9._-]`: `db/prod/password`, `apps/web-1/api.key`. There are no empty segments
//! (so no leading, trailing or doubled `/`) and no `.` or `..` segments. Bad input is rejected
//! with an error that says which rule broke, never normalized: `/db/x` and `db/x` are not
//! silently the same secret.
//!
//! Length and depth are bounded. [`SecretPath::parse`] applies the defaults
//! ([`DEFAULT_MAX_PATH_LEN`], [`DEFAULT_MAX_PATH_DEPTH`]); a service whose operator changed
//! them parses with [`SecretPath::parse_with`]. Configured limits can never exceed the hard
//! ceilings ([`MAX_PATH_LEN_CEILING`], [`MAX_PATH_DEPTH_CEILING`]), and deserialization checks
//! only the ceilings, so a path stored under a raised limit still loads after the limit is
//! lowered again.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// Default longest secret path, in bytes.
pub const DEFAULT_MAX_PATH_LEN: usize = 512;
/// Default deepest secret path, in segments.
pub const DEFAULT_MAX_PATH_DEPTH: usize = 32;
/// Hard ceiling for a configured path length, in bytes.
pub const MAX_PATH_LEN_CEILING: usize = 4096;
/// Hard ceiling for a configured path depth, in segments.
pub const MAX_PATH_DEPTH_CEILING: usize = 256;

/// The separator between segments.
pub const SEPARATOR: char = '/';

/// Why a string is not a valid secret path, prefix or set of limits.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum PathError {
    /// The path is the empty string.
    #[error("secret path is empty")]
    Empty,
    /// The path starts with `/`.
    #[error("secret path must not start with '/': paths are relative, e.g. \"db/password\"")]
    LeadingSlash,
    /// The path ends with `/`.
    #[error("secret path must not end with '/'")]
    TrailingSlash,
    /// Two `/` in a row.
    #[error("secret path has an empty segment (\"//\") at segment {segment}")]
    EmptySegment {
        /// 1-based index of the empty segment.
        segment: usize,
    },
    /// A segment is `.` or `..`.
    #[error("secret path segment {segment} is '.' or '..'; relative segments are not allowed")]
    DotSegment {
        /// 1-based index of the segment.
        segment: usize,
    },
    /// A character outside `[A-Za-z0-9._-]` (and `/` between segments).
    #[error(
        "secret path has invalid character {} in segment {segment}: segments may contain only A-Z, a-z, 0-9, '.', '_' and '-'",
        EscapedChar(*.ch)
    )]
    BadChar {
        /// The offending character.
        ch: char,
        /// 1-based index of the segment holding it.
        segment: usize,
    },
    /// The path is longer than the limit.
    #[error("secret path is {len} bytes long; the limit is {max}")]
    TooLong {
        /// The path's length in bytes.
        len: usize,
        /// The limit in force.
        max: usize,
    },
    /// The path has more segments than the limit.
    #[error("secret path has {depth} segments; the limit is {max}")]
    TooDeep {
        /// The path's number of segments.
        depth: usize,
        /// The limit in force.
        max: usize,
    },
    /// A configured limit is zero or above its hard ceiling.
    #[error("path limit {name} = {value} is out of range: it must be between 1 and {ceiling}")]
    BadLimit {
        /// Which limit (`max_len` or `max_depth`).
        name: &'static str,
        /// The value given.
        value: usize,
        /// The hard ceiling.
        ceiling: usize,
    },
}

/// Displays a character safely: printable ASCII quoted as is, anything else as an escape, so
/// an error message never carries control characters or long input.
pub(crate) struct EscapedChar(pub(crate) char);

impl fmt::Display for EscapedChar {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.0.is_ascii_graphic() || self.0 == ' ' {
            write!(f, "'{}'", self.0)
        } else {
            write!(f, "'{}'", self.0.escape_unicode())
        }
    }
}

/// Bounds on secret paths. Both limits are config keys of Nexus.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct PathLimits {
    max_len: usize,
    max_depth: usize,
}

impl PathLimits {
    /// The defaults: [`DEFAULT_MAX_PATH_LEN`] bytes, [`DEFAULT_MAX_PATH_DEPTH`] segments.
    pub const DEFAULT: Self = Self {
        max_len: DEFAULT_MAX_PATH_LEN,
        max_depth: DEFAULT_MAX_PATH_DEPTH,
    };

    /// The hard ceilings; what deserialization checks.
    pub const CEILING: Self = Self {
        max_len: MAX_PATH_LEN_CEILING,
        max_depth: MAX_PATH_DEPTH_CEILING,
    };

    /// Limits of `max_len` bytes and `max_depth` segments; each must be at least 1 and at
    /// most its ceiling.
    pub fn new(max_len: usize, max_depth: usize) -> Result<Self, PathError> {
        if !(1..=MAX_PATH_LEN_CEILING).contains(&max_len) {
            return Err(PathError::BadLimit {
                name: "max_len",
                value: max_len,
                ceiling: MAX_PATH_LEN_CEILING,
            });
        }
        if !(1..=MAX_PATH_DEPTH_CEILING).contains(&max_depth) {
            return Err(PathError::BadLimit {
                name: "max_depth",
                value: max_depth,
                ceiling: MAX_PATH_DEPTH_CEILING,
            });
        }
        Ok(Self { max_len, max_depth })
    }

    /// Longest path, in bytes.
    pub fn max_len(&self) -> usize {
        self.max_len
    }

    /// Deepest path, in segments.
    pub fn max_depth(&self) -> usize {
        self.max_depth
    }
}

impl Default for PathLimits {
    fn default() -> Self {
        Self::DEFAULT
    }
}

/// True for the bytes a path segment may hold.
pub(crate) fn is_segment_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-')
}

/// A valid secret path such as `db/prod/password`.
///
/// Ordering is byte-wise on the string, which is the order listings page through.
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct SecretPath(String);

impl SecretPath {
    /// Parses `s` under the default limits.
    pub fn parse(s: &str) -> Result<Self, PathError> {
        Self::parse_with(s, &PathLimits::DEFAULT)
    }

    /// Parses `s` under `limits`.
    pub fn parse_with(s: &str, limits: &PathLimits) -> Result<Self, PathError> {
        validate(s, limits)?;
        Ok(Self(s.to_owned()))
    }

    /// The path as a string.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The segments, in order; never empty.
    pub fn segments(&self) -> std::str::Split<'_, char> {
        self.0.split(SEPARATOR)
    }

    /// The number of segments (at least 1).
    pub fn depth(&self) -> usize {
        self.0.bytes().filter(|&b| b == b'/').count() + 1
    }

    /// The path without its last segment, or `None` for a one-segment path.
    pub fn parent(&self) -> Option<Self> {
        self.0
            .rfind(SEPARATOR)
            .map(|i| Self(self.0[..i].to_owned()))
    }

    /// True when this path is `prefix` itself or lies below it, segment-wise: `db/x` is under
    /// `db`, `dbx/a` is not. Every path is under the root prefix.
    pub fn is_under(&self, prefix: &PathPrefix) -> bool {
        prefix.contains(self)
    }

    /// Consumes the path, returning its string.
    pub fn into_string(self) -> String {
        self.0
    }
}

fn validate(s: &str, limits: &PathLimits) -> Result<(), PathError> {
    if s.is_empty() {
        return Err(PathError::Empty);
    }
    if s.len() > limits.max_len {
        return Err(PathError::TooLong {
            len: s.len(),
            max: limits.max_len,
        });
    }
    if s.starts_with(SEPARATOR) {
        return Err(PathError::LeadingSlash);
    }
    if s.ends_with(SEPARATOR) {
        return Err(PathError::TrailingSlash);
    }
    let mut depth = 0;
    for (i, seg) in s.split(SEPARATOR).enumerate() {
        let segment = i + 1;
        depth = segment;
        if seg.is_empty() {
            return Err(PathError::EmptySegment { segment });
        }
        if seg == "." || seg == ".." {
            return Err(PathError::DotSegment { segment });
        }
        if let Some(ch) = seg
            .chars()
            .find(|&c| !(c.is_ascii() && is_segment_byte(c as u8)))
        {
            return Err(PathError::BadChar { ch, segment });
        }
    }
    if depth > limits.max_depth {
        return Err(PathError::TooDeep {
            depth,
            max: limits.max_depth,
        });
    }
    Ok(())
}

impl fmt::Display for SecretPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for SecretPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SecretPath({})", self.0)
    }
}

impl FromStr for SecretPath {
    type Err = PathError;
    /// Parses under the default limits.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s)
    }
}

impl TryFrom<String> for SecretPath {
    type Error = PathError;
    /// Parses under the default limits, reusing the allocation.
    fn try_from(s: String) -> Result<Self, Self::Error> {
        validate(&s, &PathLimits::DEFAULT)?;
        Ok(Self(s))
    }
}

impl AsRef<str> for SecretPath {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

impl Serialize for SecretPath {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.0)
    }
}

impl<'de> Deserialize<'de> for SecretPath {
    /// Validates the syntax and the hard ceilings only (see the module docs).
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        validate(&s, &PathLimits::CEILING).map_err(serde::de::Error::custom)?;
        Ok(Self(s))
    }
}

/// A listing prefix: either the root (everything) or a valid path.
///
/// Prefixes are segment-wise: `db` covers `db` and `db/x`, but not `dbx`. The root is written
/// as the empty string.
#[derive(Clone, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct PathPrefix(Option<SecretPath>);

impl PathPrefix {
    /// The root prefix, which covers every path.
    pub const ROOT: Self = Self(None);

    /// Parses a prefix under the default limits: `""` is the root, anything else must be a
    /// valid path.
    pub fn parse(s: &str) -> Result<Self, PathError> {
        Self::parse_with(s, &PathLimits::DEFAULT)
    }

    /// Parses a prefix under `limits`.
    pub fn parse_with(s: &str, limits: &PathLimits) -> Result<Self, PathError> {
        if s.is_empty() {
            Ok(Self::ROOT)
        } else {
            SecretPath::parse_with(s, limits).map(|p| Self(Some(p)))
        }
    }

    /// True for the root prefix.
    pub fn is_root(&self) -> bool {
        self.0.is_none()
    }

    /// The prefix as a string; `""` for the root.
    pub fn as_str(&self) -> &str {
        self.0.as_ref().map_or("", SecretPath::as_str)
    }

    /// The prefix as a path, or `None` for the root.
    pub fn as_path(&self) -> Option<&SecretPath> {
        self.0.as_ref()
    }

    /// The prefix's segments; none for the root.
    pub fn segments(&self) -> impl Iterator<Item = &str> {
        self.0.iter().flat_map(SecretPath::segments)
    }

    /// True when `path` is this prefix or lies below it, segment-wise.
    pub fn contains(&self, path: &SecretPath) -> bool {
        match &self.0 {
            None => true,
            Some(p) => match path.as_str().strip_prefix(p.as_str()) {
                Some(rest) => rest.is_empty() || rest.starts_with(SEPARATOR),
                None => false,
            },
        }
    }
}

impl From<SecretPath> for PathPrefix {
    fn from(p: SecretPath) -> Self {
        Self(Some(p))
    }
}

impl fmt::Display for PathPrefix {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl fmt::Debug for PathPrefix {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PathPrefix({:?})", self.as_str())
    }
}

impl FromStr for PathPrefix {
    type Err = PathError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s)
    }
}

impl Serialize for PathPrefix {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for PathPrefix {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        if s.is_empty() {
            return Ok(Self::ROOT);
        }
        validate(&s, &PathLimits::CEILING).map_err(serde::de::Error::custom)?;
        Ok(Self(Some(SecretPath(s))))
    }
}

#[cfg(test)]
// Tests may unwrap: a panic is the failure report.
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn p(s: &str) -> SecretPath {
        SecretPath::parse(s).unwrap()
    }

    #[test]
    fn accepts_valid_paths() {
        for ok in [
            "db",
            "db/prod/password",
            "a.b_c-d/E9",
            "...a",
            "a/.b/c.",
            "x-/-y",
        ] {
            let path = p(ok);
            assert_eq!(path.as_str(), ok);
            assert_eq!(path.segments().collect::<Vec<_>>().join("/"), ok);
        }
        assert_eq!(p("a/b/c").depth(), 3);
        assert_eq!(p("a").depth(), 1);
        assert_eq!(p("a/b/c").parent(), Some(p("a/b")));
        assert_eq!(p("a").parent(), None);
    }

    #[test]
    fn rejects_each_rule_with_its_own_error() {
        assert_eq!(SecretPath::parse(""), Err(PathError::Empty));
        assert_eq!(SecretPath::parse("/db"), Err(PathError::LeadingSlash));
        assert_eq!(SecretPath::parse("/"), Err(PathError::LeadingSlash));
        assert_eq!(SecretPath::parse("db/"), Err(PathError::TrailingSlash));
        assert_eq!(
            SecretPath::parse("db//x"),
            Err(PathError::EmptySegment { segment: 2 })
        );
        assert_eq!(
            SecretPath::parse("db/../x"),
            Err(PathError::DotSegment { segment: 2 })
        );
        assert_eq!(
            SecretPath::parse("./x"),
            Err(PathError::DotSegment { segment: 1 })
        );
        assert_eq!(
            SecretPath::parse("db/a b"),
            Err(PathError::BadChar {
                ch: ' ',
                segment: 2
            })
        );
        assert_eq!(
            SecretPath::parse("db/x*"),
            Err(PathError::BadChar {
                ch: '*',
                segment: 2
            })
        );
        assert_eq!(
            SecretPath::parse("é"),
            Err(PathError::BadChar {
                ch: 'é',
                segment: 1
            })
        );
        for bad in ["a\\b", "a?b", "a%2fb", "a\0b", "a\nb", "a:b"] {
            assert!(
                matches!(SecretPath::parse(bad), Err(PathError::BadChar { .. })),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn limits_are_enforced_and_configurable() {
        let long = "a".repeat(DEFAULT_MAX_PATH_LEN + 1);
        assert_eq!(
            SecretPath::parse(&long),
            Err(PathError::TooLong {
                len: DEFAULT_MAX_PATH_LEN + 1,
                max: DEFAULT_MAX_PATH_LEN
            })
        );
        assert!(SecretPath::parse(&long[1..]).is_ok());
        let deep = vec!["a"; DEFAULT_MAX_PATH_DEPTH + 1].join("/");
        assert_eq!(
            SecretPath::parse(&deep),
            Err(PathError::TooDeep {
                depth: DEFAULT_MAX_PATH_DEPTH + 1,
                max: DEFAULT_MAX_PATH_DEPTH
            })
        );
        let wide = PathLimits::new(1024, 64).unwrap();
        assert!(SecretPath::parse_with(&long, &wide).is_ok());
        assert!(SecretPath::parse_with(&deep, &wide).is_ok());
        let tight = PathLimits::new(5, 2).unwrap();
        assert!(SecretPath::parse_with("ab/cd", &tight).is_ok());
        assert!(SecretPath::parse_with("ab/cde", &tight).is_err());
        assert!(SecretPath::parse_with("a/b/c", &tight).is_err());
        assert!(PathLimits::new(0, 1).is_err());
        assert!(PathLimits::new(MAX_PATH_LEN_CEILING + 1, 1).is_err());
        assert!(PathLimits::new(1, MAX_PATH_DEPTH_CEILING + 1).is_err());
    }

    #[test]
    fn error_messages_are_short_and_sanitized() {
        let long = format!("{}\u{1b}[31m", "x".repeat(5000));
        let msg = SecretPath::parse(&long).unwrap_err().to_string();
        assert!(msg.len() < 100, "{msg}");
        let msg = SecretPath::parse("ok/\u{1b}[31m").unwrap_err().to_string();
        assert!(!msg.contains('\u{1b}'), "{msg}");
        assert!(msg.contains("\\u{1b}"), "{msg}");
        assert!(msg.contains("segment 2"), "{msg}");
    }

    #[test]
    fn prefixes_are_segment_wise() {
        let db = PathPrefix::parse("db").unwrap();
        assert!(p("db").is_under(&db));
        assert!(p("db/x").is_under(&db));
        assert!(p("db/x/y").is_under(&db));
        assert!(!p("dbx").is_under(&db));
        assert!(!p("dbx/a").is_under(&db));
        assert!(!p("d").is_under(&db));
        assert!(!p("x/db").is_under(&db));
        let root = PathPrefix::parse("").unwrap();
        assert!(root.is_root());
        assert_eq!(root, PathPrefix::ROOT);
        assert!(p("anything/at/all").is_under(&root));
        assert_eq!(root.segments().count(), 0);
        assert_eq!(
            PathPrefix::parse("db/").unwrap_err(),
            PathError::TrailingSlash
        );
        assert_eq!(
            PathPrefix::from(p("a/b")).segments().collect::<Vec<_>>(),
            ["a", "b"]
        );
    }

    #[test]
    fn serde_validates() {
        let path: SecretPath = serde_json::from_str("\"db/x\"").unwrap();
        assert_eq!(serde_json::to_string(&path).unwrap(), "\"db/x\"");
        for bad in ["\"\"", "\"/db\"", "\"db/../x\"", "\"db//x\"", "3"] {
            assert!(serde_json::from_str::<SecretPath>(bad).is_err(), "{bad}");
        }
        // Deserialization checks only the ceilings, so a path stored under raised limits
        // still loads.
        let long = format!("\"{}\"", "a".repeat(DEFAULT_MAX_PATH_LEN + 1));
        assert!(serde_json::from_str::<SecretPath>(&long).is_ok());
        let too_long = format!("\"{}\"", "a".repeat(MAX_PATH_LEN_CEILING + 1));
        assert!(serde_json::from_str::<SecretPath>(&too_long).is_err());
        let root: PathPrefix = serde_json::from_str("\"\"").unwrap();
        assert!(root.is_root());
        let db: PathPrefix = serde_json::from_str("\"db\"").unwrap();
        assert_eq!(db.as_str(), "db");
        assert!(serde_json::from_str::<PathPrefix>("\"db/\"").is_err());
    }
}
