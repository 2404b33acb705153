//! Segment-aware glob patterns over secret paths ([`PathPattern`]) and SPIFFE IDs
//! ([`IdPattern`]).
//!
//! A pattern is a `/`-separated list of segments, matched segment by segment:
//!
//! | pattern segment | matches |
//! |---|---|
//! | `db` (no `*`) | exactly the segment `db` |
//! | `*` | exactly one whole segment, whatever it is |
//! | `db-*`, `*.key`, `a*b*c` | one segment; each `*` stands for zero or more characters *within* that segment |
//! | `**` | zero or more whole segments |
//!
//! `*` never crosses a `/`, and `**` is only valid as a whole segment (`a**` is an error, write
//! `a*`). Every other character is literal, and segments use the path alphabet
//! `[A-Za-z0-9._-]` plus `*`.
//!
//! | pattern | matches | does not match |
//! |---|---|---|
//! | `db/*` | `db/a` | `db`, `db/a/b`, `dbx/a` |
//! | `db/**` | `db`, `db/a`, `db/a/b` | `dbx`, `dbx/a` |
//! | `**` | every path | |
//! | `apps/*/creds` | `apps/web/creds` | `apps/creds`, `apps/a/b/creds` |
//! | `apps/**/creds` | `apps/creds`, `apps/x/y/creds` | `apps/x/creds/y` |
//! | `k8s/team-*/**` | `k8s/team-a`, `k8s/team-/x/y` | `k8s/teams/x` |
//!
//! Matching is a dynamic program over (pattern segment, path segment), so its cost is bounded by
//! the product of the two lengths whatever the pattern: no backtracking blow-up.
//!
//! An [`IdPattern`] is `spiffe://<trust domain>/<glob>`. The trust domain is literal: a
//! wildcard there could make a pattern reach identities of another (federated) trust domain,
//! which an operator writing a policy for their own domain never means.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::id::{MAX_SPIFFE_ID_LEN, SpiffeId, TrustDomain};
mod containment;

use crate::path::{
    EscapedChar, MAX_PATH_DEPTH_CEILING, MAX_PATH_LEN_CEILING, PathLimits, PathPrefix, SecretPath,
    is_segment_byte,
};

/// Longest path pattern, in bytes (the path length ceiling).
pub const MAX_PATH_PATTERN_LEN: usize = MAX_PATH_LEN_CEILING;
/// Most segments in a pattern (the path depth ceiling).
pub const MAX_PATTERN_DEPTH: usize = MAX_PATH_DEPTH_CEILING;
/// Longest ID pattern, in bytes (the SPIFFE ID limit).
pub const MAX_ID_PATTERN_LEN: usize = MAX_SPIFFE_ID_LEN;

const SCHEME: &str = "spiffe://";

/// Why a string is not a valid pattern.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum PatternError {
    /// The pattern (or an ID pattern's path) is empty.
    #[error("pattern is empty; use \"**\" to match everything")]
    Empty,
    /// A path pattern starts with `/`.
    #[error("path pattern must not start with '/': patterns are relative, e.g. \"db/**\"")]
    LeadingSlash,
    /// The pattern ends with `/`.
    #[error("pattern must not end with '/'; use \"/**\" to match everything below")]
    TrailingSlash,
    /// Two `/` in a row.
    #[error("pattern has an empty segment (\"//\") at segment {segment}")]
    EmptySegment {
        /// 1-based index of the segment.
        segment: usize,
    },
    /// A segment is `.` or `..`.
    #[error("pattern segment {segment} is '.' or '..'; relative segments are not allowed")]
    DotSegment {
        /// 1-based index of the segment.
        segment: usize,
    },
    /// A character outside `[A-Za-z0-9._-*]`.
    #[error(
        "pattern has invalid character {} in segment {segment}: segments may contain only A-Z, a-z, 0-9, '.', '_', '-' and '*'",
        EscapedChar(*.ch)
    )]
    BadChar {
        /// The offending character.
        ch: char,
        /// 1-based index of the segment holding it.
        segment: usize,
    },
    /// `**` inside a longer segment, such as `a**` or `***`.
    #[error(
        "pattern segment {segment} contains '**' but is not exactly '**': '**' matches whole segments and must stand alone; use '*' within a segment"
    )]
    DoubleStarNotAlone {
        /// 1-based index of the segment.
        segment: usize,
    },
    /// The pattern is too long.
    #[error("pattern is {len} bytes long; the limit is {max}")]
    TooLong {
        /// Its length in bytes.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// The pattern has too many segments.
    #[error("pattern has {depth} segments; the limit is {max}")]
    TooDeep {
        /// Its number of segments.
        depth: usize,
        /// The limit.
        max: usize,
    },
    /// An ID pattern does not start with `spiffe://`.
    #[error(
        "a SPIFFE ID pattern must start with \"spiffe://\", e.g. \"spiffe://spike.dev/ns/web/**\""
    )]
    MissingScheme,
    /// An ID pattern has a wildcard in its trust domain.
    #[error(
        "the trust domain of a SPIFFE ID pattern is literal: a wildcard there could match another trust domain"
    )]
    WildcardTrustDomain,
    /// An ID pattern's trust domain is invalid.
    #[error(
        "invalid trust domain in SPIFFE ID pattern: use lowercase letters, digits, '.', '-' and '_'"
    )]
    BadTrustDomain,
    /// An ID pattern has no path.
    #[error(
        "a SPIFFE ID pattern needs a path after the trust domain, e.g. \"spiffe://spike.dev/**\""
    )]
    MissingPath,
}

/// One segment of a compiled glob.
#[derive(Clone, PartialEq, Eq, Hash)]
enum Seg {
    /// A segment without `*`: compared for equality.
    Literal(Box<str>),
    /// A segment with one or more single `*`.
    Wild(Box<str>),
    /// `**`: zero or more whole segments.
    Any,
}

impl Seg {
    /// Matches one path segment. `Any` is handled by the caller.
    fn matches(&self, s: &str) -> bool {
        match self {
            Self::Literal(l) => **l == *s,
            Self::Wild(p) => wild_match(p, s),
            Self::Any => true,
        }
    }
}

/// Matches `text` against a segment pattern `pat` whose `*` stands for any run of characters.
///
/// The parts between stars must appear in order; matching each at its leftmost position is
/// optimal, so no backtracking is needed.
fn wild_match(pat: &str, text: &str) -> bool {
    let (Some(first_star), Some(last_star)) = (pat.find('*'), pat.rfind('*')) else {
        return pat == text;
    };
    let Some(rest) = text.strip_prefix(&pat[..first_star]) else {
        return false;
    };
    let Some(mut rest) = rest.strip_suffix(&pat[last_star + 1..]) else {
        return false;
    };
    if first_star == last_star {
        return true;
    }
    for part in pat[first_star + 1..last_star]
        .split('*')
        .filter(|p| !p.is_empty())
    {
        match rest.find(part) {
            Some(i) => rest = &rest[i + part.len()..],
            None => return false,
        }
    }
    true
}

/// A compiled glob: the segments of a path or ID pattern.
#[derive(Clone, PartialEq, Eq, Hash)]
struct Glob(Vec<Seg>);

impl Glob {
    /// Compiles `/`-separated segments (no leading `/`).
    fn compile(s: &str) -> Result<Self, PatternError> {
        if s.is_empty() {
            return Err(PatternError::Empty);
        }
        if s.ends_with('/') {
            return Err(PatternError::TrailingSlash);
        }
        let mut segs = Vec::new();
        for (i, seg) in s.split('/').enumerate() {
            let segment = i + 1;
            if segment > MAX_PATTERN_DEPTH {
                return Err(PatternError::TooDeep {
                    depth: s.split('/').count(),
                    max: MAX_PATTERN_DEPTH,
                });
            }
            if seg.is_empty() {
                return Err(PatternError::EmptySegment { segment });
            }
            if seg == "." || seg == ".." {
                return Err(PatternError::DotSegment { segment });
            }
            if let Some(ch) = seg
                .chars()
                .find(|&c| !(c == '*' || (c.is_ascii() && is_segment_byte(c as u8))))
            {
                return Err(PatternError::BadChar { ch, segment });
            }
            segs.push(if seg == "**" {
                Seg::Any
            } else if seg.contains("**") {
                return Err(PatternError::DoubleStarNotAlone { segment });
            } else if seg.contains('*') {
                Seg::Wild(seg.into())
            } else {
                Seg::Literal(seg.into())
            });
        }
        Ok(Self(segs))
    }

    /// The set of pattern positions reachable after consuming `segments`, as a bit per
    /// position `0..=len` (position `len` = the whole pattern consumed).
    ///
    /// This is the DP over (pattern segment, path segment): each path segment costs one pass
    /// over the pattern, so the work is O(pattern × path) whatever the pattern.
    fn reach<'a>(&self, segments: impl IntoIterator<Item = &'a str>) -> Vec<bool> {
        let n = self.0.len();
        let mut cur = vec![false; n + 1];
        cur[0] = true;
        self.close_any(&mut cur);
        let mut next = vec![false; n + 1];
        for s in segments {
            let any_live = self.advance(&cur, s, &mut next);
            std::mem::swap(&mut cur, &mut next);
            if !any_live {
                break;
            }
        }
        cur
    }

    /// One step of the DP: the positions reachable from `cur` after consuming segment `s`
    /// (with `**` closure applied), written into `next`. Returns false when none is.
    fn advance(&self, cur: &[bool], s: &str, next: &mut [bool]) -> bool {
        next.iter_mut().for_each(|b| *b = false);
        let mut any_live = false;
        for (i, seg) in self.0.iter().enumerate() {
            if !cur[i] {
                continue;
            }
            match seg {
                // `**` may swallow this segment and stay where it is.
                Seg::Any => {
                    next[i] = true;
                    any_live = true;
                }
                seg if seg.matches(s) => {
                    next[i + 1] = true;
                    any_live = true;
                }
                _ => {}
            }
        }
        self.close_any(next);
        any_live
    }

    /// Lets each reachable `**` match zero segments: propagates reachability across it.
    fn close_any(&self, reach: &mut [bool]) {
        for i in 0..self.0.len() {
            if reach[i] && self.0[i] == Seg::Any {
                reach[i + 1] = true;
            }
        }
    }

    fn matches<'a>(&self, segments: impl IntoIterator<Item = &'a str>) -> bool {
        self.reach(segments)[self.0.len()]
    }

    /// True when some sequence starting with `segments` (including `segments` itself)
    /// matches. Every glob segment matches some non-empty segment, so any reachable position
    /// can be completed.
    fn could_match_extending<'a>(&self, segments: impl IntoIterator<Item = &'a str>) -> bool {
        self.reach(segments).iter().any(|&b| b)
    }

    /// The literal segments at the start, up to the first wildcard.
    fn literal_prefix(&self) -> impl Iterator<Item = &str> {
        self.0.iter().map_while(|s| match s {
            Seg::Literal(l) => Some(&**l),
            _ => None,
        })
    }

    fn len(&self) -> usize {
        self.0.len()
    }

    fn seg_is_literal(&self, i: usize, lit: &str) -> bool {
        matches!(self.0.get(i), Some(Seg::Literal(l)) if **l == *lit)
    }

    fn seg_is_single(&self, i: usize) -> bool {
        matches!(self.0.get(i), Some(Seg::Literal(_) | Seg::Wild(_)))
    }
}

/// A glob over secret paths, such as `apps/*/creds` or `db/**`.
#[derive(Clone)]
pub struct PathPattern {
    src: String,
    glob: Glob,
}

impl PathPattern {
    /// Parses and compiles a path pattern.
    pub fn parse(s: &str) -> Result<Self, PatternError> {
        if s.len() > MAX_PATH_PATTERN_LEN {
            return Err(PatternError::TooLong {
                len: s.len(),
                max: MAX_PATH_PATTERN_LEN,
            });
        }
        if s.starts_with('/') {
            return Err(PatternError::LeadingSlash);
        }
        Ok(Self {
            src: s.to_owned(),
            glob: Glob::compile(s)?,
        })
    }

    /// The pattern as written.
    pub fn as_str(&self) -> &str {
        &self.src
    }

    /// True when `path` matches the whole pattern.
    pub fn matches(&self, path: &SecretPath) -> bool {
        self.glob.matches(path.segments())
    }

    /// True when the pattern could match `prefix` itself or some path below it: a caller
    /// granted by this pattern may find something when listing `prefix`.
    pub fn could_match_under(&self, prefix: &PathPrefix) -> bool {
        self.glob.could_match_extending(prefix.segments())
    }

    /// True when every path this pattern matches is matched by `scope` as well (the pattern
    /// lies within the scope): `k8s/web/**` lies within `k8s/**`; `k8s*/x` does not.
    pub fn is_within(&self, scope: &Self) -> bool {
        containment::within(&self.glob, &scope.glob, false)
    }

    /// True when this is `**`, which matches every path.
    pub fn matches_everything(&self) -> bool {
        self.glob.0.iter().all(|s| *s == Seg::Any)
    }

    /// The part of the path space this pattern can reach, as its literal start tells: the one
    /// path a wildcard-free pattern names, or everything under the segments before the first
    /// wildcard (`db/team-*/**` gives `db` and below). A listing finds every match there.
    pub fn span(&self) -> PathSpan {
        let literal: Vec<&str> = self.glob.literal_prefix().collect();
        if literal.is_empty() {
            return PathSpan::Under(PathPrefix::ROOT);
        }
        // Literal segments use the path alphabet within the path ceilings, so this parses; if
        // it ever did not, the root is a wider span that still holds every match.
        let Ok(path) = SecretPath::parse_with(&literal.join("/"), &PathLimits::CEILING) else {
            return PathSpan::Under(PathPrefix::ROOT);
        };
        if literal.len() == self.glob.len() {
            PathSpan::Exactly(path)
        } else {
            PathSpan::Under(PathPrefix::from(path))
        }
    }
}

/// A part of the path space: one path, or a prefix with everything below it (segment-wise).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PathSpan {
    /// Exactly this path.
    Exactly(SecretPath),
    /// This prefix and every path below it.
    Under(PathPrefix),
}

impl PathSpan {
    /// The part of this span inside `prefix`, if any. Both are closed under "below", so it is
    /// this span, all of `prefix`, or nothing.
    pub fn within(&self, prefix: &PathPrefix) -> Option<Self> {
        match self {
            Self::Exactly(p) => prefix.contains(p).then(|| self.clone()),
            Self::Under(u) => match (u.as_path(), prefix.as_path()) {
                (None, _) => Some(Self::Under(prefix.clone())),
                (Some(up), _) if prefix.contains(up) => Some(self.clone()),
                (Some(_), Some(pp)) if u.contains(pp) => Some(Self::Under(prefix.clone())),
                _ => None,
            },
        }
    }

    /// True when every path of `other` lies in this span.
    pub fn covers(&self, other: &Self) -> bool {
        match (self, other) {
            (Self::Exactly(a), Self::Exactly(b)) => a == b,
            (Self::Exactly(_), Self::Under(_)) => false,
            (Self::Under(u), Self::Exactly(p)) => u.contains(p),
            (Self::Under(u), Self::Under(v)) => {
                v.as_path().map_or(u.is_root(), |vp| u.contains(vp))
            }
        }
    }
}

/// A glob over SPIFFE IDs: `spiffe://<trust domain>/<glob>`, such as
/// `spiffe://spike.dev/ns/web/**`. The trust domain is matched literally.
#[derive(Clone)]
pub struct IdPattern {
    src: String,
    td_end: usize,
    glob: Glob,
}

impl IdPattern {
    /// Parses and compiles an ID pattern.
    pub fn parse(s: &str) -> Result<Self, PatternError> {
        if s.len() > MAX_ID_PATTERN_LEN {
            return Err(PatternError::TooLong {
                len: s.len(),
                max: MAX_ID_PATTERN_LEN,
            });
        }
        let rest = s.strip_prefix(SCHEME).ok_or(PatternError::MissingScheme)?;
        let Some(slash) = rest.find('/') else {
            if rest.contains('*') {
                return Err(PatternError::WildcardTrustDomain);
            }
            TrustDomain::new(rest).map_err(|_| PatternError::BadTrustDomain)?;
            return Err(PatternError::MissingPath);
        };
        let (td, path) = (&rest[..slash], &rest[slash + 1..]);
        if td.contains('*') {
            return Err(PatternError::WildcardTrustDomain);
        }
        TrustDomain::new(td).map_err(|_| PatternError::BadTrustDomain)?;
        if path.is_empty() {
            return Err(PatternError::MissingPath);
        }
        Ok(Self {
            src: s.to_owned(),
            td_end: SCHEME.len() + slash,
            glob: Glob::compile(path)?,
        })
    }

    /// The pattern as written.
    pub fn as_str(&self) -> &str {
        &self.src
    }

    /// The trust domain name the pattern is bound to.
    pub fn trust_domain_name(&self) -> &str {
        &self.src[SCHEME.len()..self.td_end]
    }

    /// The glob over the ID's path, without the leading `/`.
    pub fn path_glob(&self) -> &str {
        &self.src[self.td_end + 1..]
    }

    /// True when `id` is in the pattern's trust domain and its path matches the glob.
    ///
    /// An ID with an empty path (the trust domain's own ID) has zero segments, so only a
    /// glob made of `**` matches it.
    pub fn matches(&self, id: &SpiffeId) -> bool {
        if id.trust_domain_name() != self.trust_domain_name() {
            return false;
        }
        let path = id.path();
        if path.is_empty() {
            self.glob.matches(std::iter::empty())
        } else {
            self.glob.matches(path[1..].split('/'))
        }
    }

    /// True when every ID this pattern matches is matched by `scope` as well: the same trust
    /// domain, and a glob within the scope's. The trust domain's own ID (an empty path) is
    /// an ID like any other here.
    pub fn is_within(&self, scope: &Self) -> bool {
        self.trust_domain_name() == scope.trust_domain_name()
            && containment::within(&self.glob, &scope.glob, true)
    }

    /// The literal segments at the start of the path glob, up to the first wildcard:
    /// `spiffe://td/spike/gateway/*` gives `spike`, `gateway`.
    pub fn literal_prefix(&self) -> impl Iterator<Item = &str> {
        self.glob.literal_prefix()
    }

    /// True when the glob could match some ID whose path starts with the literal segments
    /// `segments` (or is exactly them).
    pub fn could_match_under(&self, segments: &[&str]) -> bool {
        self.glob.could_match_extending(segments.iter().copied())
    }

    /// Number of segments in the path glob.
    pub(crate) fn glob_len(&self) -> usize {
        self.glob.len()
    }

    /// True when the glob's segment `i` is exactly the literal `lit`.
    pub(crate) fn glob_seg_is_literal(&self, i: usize, lit: &str) -> bool {
        self.glob.seg_is_literal(i, lit)
    }

    /// True when the glob's segment `i` matches exactly one segment (literal or `*`-glob).
    pub(crate) fn glob_seg_is_single(&self, i: usize) -> bool {
        self.glob.seg_is_single(i)
    }
}

macro_rules! string_impls {
    ($t:ty, $name:literal) => {
        impl fmt::Display for $t {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.src)
            }
        }

        impl fmt::Debug for $t {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, concat!($name, "({})"), self.src)
            }
        }

        // Equality, ordering and hashing follow the source text, which determines the glob.
        impl PartialEq for $t {
            fn eq(&self, other: &Self) -> bool {
                self.src == other.src
            }
        }

        impl Eq for $t {}

        impl PartialOrd for $t {
            fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
                Some(self.cmp(other))
            }
        }

        impl Ord for $t {
            fn cmp(&self, other: &Self) -> std::cmp::Ordering {
                self.src.cmp(&other.src)
            }
        }

        impl std::hash::Hash for $t {
            fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
                self.src.hash(state);
            }
        }

        impl FromStr for $t {
            type Err = PatternError;
            fn from_str(s: &str) -> Result<Self, Self::Err> {
                Self::parse(s)
            }
        }

        impl Serialize for $t {
            fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.serialize_str(&self.src)
            }
        }

        impl<'de> Deserialize<'de> for $t {
            fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let s = String::deserialize(d)?;
                Self::parse(&s).map_err(serde::de::Error::custom)
            }
        }
    };
}

string_impls!(PathPattern, "PathPattern");
string_impls!(IdPattern, "IdPattern");

#[cfg(test)]
// Tests may unwrap: a panic is the failure report.
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn pp(s: &str) -> PathPattern {
        PathPattern::parse(s).unwrap()
    }

    fn path(s: &str) -> SecretPath {
        SecretPath::parse(s).unwrap()
    }

    fn id(s: &str) -> SpiffeId {
        SpiffeId::new(s).unwrap()
    }

    fn check(pattern: &str, yes: &[&str], no: &[&str]) {
        let p = pp(pattern);
        for y in yes {
            assert!(p.matches(&path(y)), "{pattern} should match {y}");
        }
        for n in no {
            assert!(!p.matches(&path(n)), "{pattern} should not match {n}");
        }
    }

    #[test]
    fn documented_examples() {
        check(
            "db/*",
            &["db/a", "db/password"],
            &["db/a/b", "db", "dbx/a", "x/db/a"],
        );
        check(
            "db/**",
            &["db", "db/a", "db/a/b"],
            &["dbx", "dbx/a", "x/db"],
        );
        check("**", &["a", "a/b", "a/b/c/d/e"], &[]);
        check(
            "apps/*/creds",
            &["apps/web/creds"],
            &["apps/creds", "apps/a/b/creds", "apps/web/creds/x"],
        );
        check(
            "apps/**/creds",
            &[
                "apps/creds",
                "apps/x/creds",
                "apps/x/y/creds",
                "apps/creds/creds",
            ],
            &["apps/x/creds/y", "apps", "creds", "apps/credsx"],
        );
        check(
            "k8s/team-*/**",
            &["k8s/team-a", "k8s/team-", "k8s/team-a/x/y"],
            &["k8s/teams/x", "k8s", "k8s/team"],
        );
        check("db", &["db"], &["db/a", "dbx", "d"]);
    }

    #[test]
    fn star_stays_within_one_segment() {
        check("*", &["a", "db", "x.y-z"], &["a/b"]);
        check("*/*", &["a/b"], &["a", "a/b/c"]);
        check("db-*", &["db-", "db-prod"], &["db", "xdb-a", "db-a/b"]);
        check("*.key", &["a.key", ".key"], &["a.keyx", "a/b.key"]);
        check(
            "a*b*c",
            &["abc", "aXbYc", "abbc", "abcbc", "aXcbc"],
            &["ab", "acb", "aXbY"],
        );
        check("a*a", &["aa", "aba"], &["a"]);
        check("*a*", &["a", "ba", "bab"], &["b"]);
        check("x/**/*", &["x/a", "x/a/b"], &["x"]);
    }

    #[test]
    fn double_star_is_zero_or_more_segments() {
        check("**/x", &["x", "a/x", "a/b/x"], &["a", "x/a"]);
        check("a/**/**/b", &["a/b", "a/x/b", "a/x/y/b"], &["a", "b"]);
        check("**/a/**", &["a", "x/a", "a/x", "x/a/y"], &["b", "x/ab"]);
    }

    #[test]
    fn pathological_patterns_take_bounded_work() {
        // Naive backtracking is exponential on this shape; the DP is pattern x path.
        let pattern = vec!["**/a"; 60].join("/") + "/b";
        let p = pp(&pattern);
        let limits = crate::path::PathLimits::CEILING;
        let long_a = SecretPath::parse_with(&vec!["a"; 200].join("/"), &limits).unwrap();
        assert!(!p.matches(&long_a));
        let long_ab = SecretPath::parse_with(&(vec!["a"; 199].join("/") + "/b"), &limits).unwrap();
        assert!(p.matches(&long_ab));
        let stars = pp(&vec!["**"; 200].join("/"));
        assert!(stars.matches(&long_a));
        let wild = pp(&vec!["*a*a*a*a*b"; 40].join("/"));
        let aaa = SecretPath::parse_with(&vec!["a".repeat(100); 30].join("/"), &limits).unwrap();
        assert!(!wild.matches(&aaa));
    }

    #[test]
    fn rejects_bad_path_patterns() {
        let cases: &[(&str, PatternError)] = &[
            ("", PatternError::Empty),
            ("/db", PatternError::LeadingSlash),
            ("db/", PatternError::TrailingSlash),
            ("db//x", PatternError::EmptySegment { segment: 2 }),
            ("db/../x", PatternError::DotSegment { segment: 2 }),
            ("db/a**", PatternError::DoubleStarNotAlone { segment: 2 }),
            ("***", PatternError::DoubleStarNotAlone { segment: 1 }),
            ("**a/b", PatternError::DoubleStarNotAlone { segment: 1 }),
            (
                "db/a?",
                PatternError::BadChar {
                    ch: '?',
                    segment: 2,
                },
            ),
            (
                "db/[ab]",
                PatternError::BadChar {
                    ch: '[',
                    segment: 2,
                },
            ),
        ];
        for (s, e) in cases {
            assert_eq!(PathPattern::parse(s).as_ref().err(), Some(e), "{s}");
        }
        assert!(matches!(
            PathPattern::parse(&"a".repeat(MAX_PATH_PATTERN_LEN + 1)),
            Err(PatternError::TooLong { .. })
        ));
        assert!(matches!(
            PathPattern::parse(&vec!["a"; MAX_PATTERN_DEPTH + 1].join("/")),
            Err(PatternError::TooDeep { .. })
        ));
    }

    #[test]
    fn could_match_under_prefix() {
        let root = PathPrefix::ROOT;
        let pre = |s: &str| PathPrefix::parse(s).unwrap();
        assert!(pp("db/*").could_match_under(&root));
        assert!(pp("db/*").could_match_under(&pre("db")));
        assert!(pp("db/*").could_match_under(&pre("db/a")));
        assert!(!pp("db/*").could_match_under(&pre("db/a/b")));
        assert!(!pp("db/*").could_match_under(&pre("dbx")));
        assert!(pp("**").could_match_under(&pre("x/y/z")));
        assert!(pp("apps/**/creds").could_match_under(&pre("apps/x/y")));
        assert!(!pp("apps/**/creds").could_match_under(&pre("other")));
        assert!(pp("k8s/team-*/**").could_match_under(&pre("k8s/team-a/x")));
        assert!(!pp("k8s/team-*/**").could_match_under(&pre("k8s/other")));
    }

    #[test]
    fn spans_are_the_literal_start() {
        let pre = |s: &str| PathPrefix::parse(s).unwrap();
        let under = |s: &str| PathSpan::Under(pre(s));
        let exactly = |s: &str| PathSpan::Exactly(SecretPath::parse(s).unwrap());
        assert_eq!(pp("**").span(), under(""));
        assert_eq!(pp("*/x").span(), under(""));
        assert_eq!(pp("db/**").span(), under("db"));
        assert_eq!(pp("db/team-*/**").span(), under("db"));
        assert_eq!(pp("apps/web/*").span(), under("apps/web"));
        assert_eq!(pp("apps/web/db").span(), exactly("apps/web/db"));
        // Narrowed to a listing's prefix.
        assert_eq!(under("db").within(&pre("")), Some(under("db")));
        assert_eq!(under("db").within(&pre("db/x")), Some(under("db/x")));
        assert_eq!(under("db/x").within(&pre("db")), Some(under("db/x")));
        assert_eq!(under("db").within(&pre("dbx")), None);
        assert_eq!(under("").within(&pre("a/b")), Some(under("a/b")));
        assert_eq!(exactly("db/x").within(&pre("db")), Some(exactly("db/x")));
        assert_eq!(exactly("db/x").within(&pre("db/x/y")), None);
        assert_eq!(exactly("db/x").within(&pre("db/xy")), None);
        // Covering.
        assert!(under("").covers(&under("db")));
        assert!(under("db").covers(&under("db/x")));
        assert!(under("db").covers(&exactly("db")));
        assert!(!under("db").covers(&under("dbx")));
        assert!(!under("db").covers(&under("")));
        assert!(!exactly("db").covers(&under("db")));
        assert!(exactly("db").covers(&exactly("db")));
    }

    #[test]
    fn id_patterns() {
        let all = IdPattern::parse("spiffe://spike.dev/**").unwrap();
        assert!(all.matches(&id("spiffe://spike.dev/a")));
        assert!(all.matches(&id("spiffe://spike.dev/ns/x/sa/y")));
        assert!(all.matches(&id("spiffe://spike.dev")));
        assert!(!all.matches(&id("spiffe://evil.dev/a")));
        assert!(!all.matches(&id("spiffe://spike.dev.evil/a")));
        assert_eq!(all.trust_domain_name(), "spike.dev");
        assert_eq!(all.path_glob(), "**");

        let web = IdPattern::parse("spiffe://spike.dev/ns/web-*/sa/*").unwrap();
        assert!(web.matches(&id("spiffe://spike.dev/ns/web-1/sa/api")));
        assert!(!web.matches(&id("spiffe://spike.dev/ns/web-1/sa/api/x")));
        assert!(!web.matches(&id("spiffe://spike.dev/ns/db/sa/api")));
        assert!(!web.matches(&id("spiffe://spike.dev")));
        assert_eq!(web.literal_prefix().collect::<Vec<_>>(), ["ns"]);

        let exact = IdPattern::parse("spiffe://spike.dev/app").unwrap();
        assert!(exact.matches(&id("spiffe://spike.dev/app")));
        assert!(!exact.matches(&id("spiffe://spike.dev/app/x")));
        assert!(!exact.matches(&id("spiffe://spike.dev/apps")));
    }

    #[test]
    fn rejects_bad_id_patterns() {
        let cases: &[(&str, PatternError)] = &[
            ("spike.dev/**", PatternError::MissingScheme),
            ("https://spike.dev/**", PatternError::MissingScheme),
            ("spiffe://*.dev/**", PatternError::WildcardTrustDomain),
            ("spiffe://*/**", PatternError::WildcardTrustDomain),
            ("spiffe://**", PatternError::WildcardTrustDomain),
            ("spiffe://Spike.dev/**", PatternError::BadTrustDomain),
            ("spiffe:///**", PatternError::BadTrustDomain),
            ("spiffe://spike.dev", PatternError::MissingPath),
            ("spiffe://spike.dev/", PatternError::MissingPath),
            ("spiffe://spike.dev/a/", PatternError::TrailingSlash),
            (
                "spiffe://spike.dev//a",
                PatternError::EmptySegment { segment: 1 },
            ),
            (
                "spiffe://spike.dev/a**",
                PatternError::DoubleStarNotAlone { segment: 1 },
            ),
            (
                "spiffe://spike.dev/a?b",
                PatternError::BadChar {
                    ch: '?',
                    segment: 1,
                },
            ),
            ("spiffe://spike.dev:443/a", PatternError::BadTrustDomain),
        ];
        for (s, e) in cases {
            assert_eq!(IdPattern::parse(s).as_ref().err(), Some(e), "{s}");
        }
        assert!(matches!(
            IdPattern::parse(&format!("spiffe://x/{}", "a".repeat(MAX_ID_PATTERN_LEN))),
            Err(PatternError::TooLong { .. })
        ));
    }

    #[test]
    fn serde_round_trips_and_validates() {
        let p: PathPattern = serde_json::from_str("\"apps/**/creds\"").unwrap();
        assert_eq!(serde_json::to_string(&p).unwrap(), "\"apps/**/creds\"");
        assert_eq!(p, pp("apps/**/creds"));
        assert!(serde_json::from_str::<PathPattern>("\"a**\"").is_err());
        let i: IdPattern = serde_json::from_str("\"spiffe://spike.dev/**\"").unwrap();
        assert_eq!(i.as_str(), "spiffe://spike.dev/**");
        assert!(serde_json::from_str::<IdPattern>("\"spiffe://*/x\"").is_err());
        assert_eq!("db/*".parse::<PathPattern>().unwrap().to_string(), "db/*");
    }
}
