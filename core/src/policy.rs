//! Policies and the default-deny policy engine.
//!
//! A [`Policy`] grants a set of [`Permission`]s to the callers whose SPIFFE ID matches its
//! [`IdPattern`], on the secret paths that match its [`PathPattern`]. The [`PolicyEngine`]
//! answers "may this caller do this on this path?": a caller holds the union of what every
//! applicable policy grants, and nothing when no policy applies.
//!
//! # SPIKE's own identities
//!
//! Every ID whose path starts with the segment `spike` (`spiffe://<td>/spike`,
//! `spiffe://<td>/spike/...`) is *reserved* for SPIKE's components, in every trust domain.
//! Nexus authorizes its built-in identities (keepers, bootstrap, the pilot roles, the operator)
//! in code, exactly, never through policies, so a workload policy can never widen or narrow
//! what they may do:
//!
//! - The engine never applies a workload policy to a reserved ID, however broad its pattern:
//!   `spiffe://spike.dev/**` grants nothing to `spiffe://spike.dev/spike/nexus`.
//! - Policy validation rejects an ID pattern whose first segment is literally `spike`, because
//!   such a policy can only be a mistake (it would never apply), with one exception below.
//!
//! The exception is the egress gateway. Gateways (`spiffe://<td>/spike/gateway/<name>`) are
//! SPIKE components too, but which secrets each may resolve is an operator decision, so it is
//! expressed as a *gateway policy*: an ID pattern of exactly `spike/gateway/<one segment>`
//! (literal or `*`-glob, never `**`) whose permissions are exactly `resolve`. Gateway policies
//! apply only to gateway IDs, and a gateway ID is granted only by gateway policies.
//!
//! Conversely `resolve` means "resolve reference tokens as a gateway", so a workload policy may
//! not grant it, and `super` on a workload grants every permission except `resolve`.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::id::{SpiffeId, TrustDomain};
use crate::path::{EscapedChar, PathPrefix, SecretPath};
use crate::pattern::{IdPattern, PathPattern, PathSpan, PatternError};

/// Longest policy name, in bytes.
pub const MAX_POLICY_NAME_LEN: usize = 128;

/// The first ID path segment reserved for SPIKE's components.
const RESERVED_SEGMENT: &str = "spike";
/// The second segment of gateway IDs.
const GATEWAY_SEGMENT: &str = "gateway";

/// One thing a policy may allow.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Permission {
    /// Read secret values (and metadata).
    Read,
    /// Write new versions. It does not include deleting, undeleting or destroying versions
    /// (that is `delete`), nor reading: a writer without `read` is never told whether its
    /// content equals the stored one.
    Write,
    /// See a path in listings.
    List,
    /// Delete (soft), undelete and destroy versions.
    Delete,
    /// Mint reference tokens for the secret.
    Token,
    /// Resolve reference tokens for the secret (gateway identities only).
    Resolve,
    /// Use the cipher API (encrypt/decrypt) under the path.
    Cipher,
    /// Everything (except `resolve`, which only gateway policies grant).
    Super,
}

impl Permission {
    /// Every permission, in canonical order.
    pub const ALL: [Self; 8] = [
        Self::Read,
        Self::Write,
        Self::List,
        Self::Delete,
        Self::Token,
        Self::Resolve,
        Self::Cipher,
        Self::Super,
    ];

    /// The wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Read => "read",
            Self::Write => "write",
            Self::List => "list",
            Self::Delete => "delete",
            Self::Token => "token",
            Self::Resolve => "resolve",
            Self::Cipher => "cipher",
            Self::Super => "super",
        }
    }

    fn bit(self) -> u8 {
        1 << (self as u8)
    }
}

impl fmt::Display for Permission {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// An unknown permission name.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown permission: use read, write, list, delete, token, resolve, cipher or super")]
#[non_exhaustive]
pub struct UnknownPermission;

impl FromStr for Permission {
    type Err = UnknownPermission;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::ALL
            .into_iter()
            .find(|p| p.as_str() == s)
            .ok_or(UnknownPermission)
    }
}

/// A set of permissions. Serialized as a list in canonical order; duplicates in input are
/// merged.
#[derive(Clone, Copy, Default, PartialEq, Eq, Hash)]
pub struct Permissions(u8);

impl Permissions {
    /// No permission.
    pub const NONE: Self = Self(0);

    /// The set holding exactly `p`.
    pub fn only(p: Permission) -> Self {
        Self(p.bit())
    }

    /// True when the set holds `p` itself (not through `super`; see
    /// [`CallerPolicies::permissions`] for the effective set).
    pub fn contains(self, p: Permission) -> bool {
        self.0 & p.bit() != 0
    }

    /// Adds `p`.
    pub fn insert(&mut self, p: Permission) {
        self.0 |= p.bit();
    }

    /// The union of both sets.
    pub fn union(self, other: Self) -> Self {
        Self(self.0 | other.0)
    }

    /// True when the set is empty.
    pub fn is_empty(self) -> bool {
        self.0 == 0
    }

    /// Number of permissions held.
    pub fn len(self) -> usize {
        self.0.count_ones() as usize
    }

    /// True when every permission of `other` is in `self`.
    pub fn is_superset(self, other: Self) -> bool {
        self.0 & other.0 == other.0
    }

    /// The permissions, in canonical order.
    pub fn iter(self) -> impl Iterator<Item = Permission> {
        Permission::ALL
            .into_iter()
            .filter(move |p| self.contains(*p))
    }

    fn without(self, p: Permission) -> Self {
        Self(self.0 & !p.bit())
    }
}

impl FromIterator<Permission> for Permissions {
    fn from_iter<I: IntoIterator<Item = Permission>>(iter: I) -> Self {
        let mut s = Self::NONE;
        for p in iter {
            s.insert(p);
        }
        s
    }
}

impl<const N: usize> From<[Permission; N]> for Permissions {
    fn from(ps: [Permission; N]) -> Self {
        ps.into_iter().collect()
    }
}

impl fmt::Display for Permissions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.is_empty() {
            return f.write_str("(none)");
        }
        for (i, p) in self.iter().enumerate() {
            if i > 0 {
                f.write_str(", ")?;
            }
            f.write_str(p.as_str())?;
        }
        Ok(())
    }
}

impl fmt::Debug for Permissions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_set().entries(self.iter()).finish()
    }
}

impl Serialize for Permissions {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_seq(self.iter())
    }
}

impl<'de> Deserialize<'de> for Permissions {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        Ok(Vec::<Permission>::deserialize(d)?.into_iter().collect())
    }
}

/// Why a policy (or its name) is invalid.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum PolicyError {
    /// The name is empty.
    #[error("policy name is empty")]
    EmptyName,
    /// The name is too long.
    #[error("policy name is {len} bytes long; the limit is {MAX_POLICY_NAME_LEN}")]
    NameTooLong {
        /// Its length in bytes.
        len: usize,
    },
    /// The name holds a character outside `[A-Za-z0-9._-]`.
    #[error(
        "policy name has invalid character {}: use only A-Z, a-z, 0-9, '.', '_' and '-'",
        EscapedChar(*.ch)
    )]
    NameBadChar {
        /// The offending character.
        ch: char,
    },
    /// The name is `.` or `..`, which cannot travel in a URL path.
    #[error("policy name must not be '.' or '..'")]
    NameDot,
    /// The SPIFFE ID pattern is invalid.
    #[error("invalid spiffeIdPattern: {0}")]
    IdPattern(#[source] PatternError),
    /// The path pattern is invalid.
    #[error("invalid pathPattern: {0}")]
    PathPattern(#[source] PatternError),
    /// The permission list is empty.
    #[error("a policy must grant at least one permission")]
    NoPermissions,
    /// The ID pattern targets SPIKE's own identities.
    #[error(
        "spiffeIdPattern targets SPIKE's own identities (path starting with /spike): they are authorized by Nexus, not by policies; only gateways (spike/gateway/<name>) may be granted 'resolve'"
    )]
    ReservedIdentity,
    /// A gateway policy grants something other than exactly `resolve`.
    #[error(
        "a policy for gateway identities (spike/gateway/<name>) must grant exactly [\"resolve\"]"
    )]
    GatewayPermissions,
    /// A workload policy grants `resolve`.
    #[error(
        "'resolve' can only be granted to gateway identities: use a spiffeIdPattern of the form spiffe://<trust-domain>/spike/gateway/<name>"
    )]
    ResolveNeedsGateway,
    /// The ID pattern names a trust domain other than the one Nexus serves.
    #[error(
        "spiffeIdPattern is in trust domain {pattern}, but this Nexus serves {served}: callers of another trust domain are refused at TLS, so the policy could never match"
    )]
    OtherTrustDomain {
        /// The pattern's trust domain.
        pattern: String,
        /// The served trust domain.
        served: String,
    },
}

/// Refuses a SPIFFE-ID pattern (as an API request carries it) of another trust domain than
/// `served`. A pattern that does not parse passes here; [`Policy::parse`] says what is wrong.
pub fn check_pattern_trust_domain(pattern: &str, served: &TrustDomain) -> Result<(), PolicyError> {
    match IdPattern::parse(pattern) {
        Ok(p) if p.trust_domain_name() != served.as_str() => Err(PolicyError::OtherTrustDomain {
            pattern: p.trust_domain_name().to_owned(),
            served: served.to_string(),
        }),
        _ => Ok(()),
    }
}

/// A policy's name: `[A-Za-z0-9._-]{1,128}`, not `.` or `..`.
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct PolicyName(String);

impl PolicyName {
    /// Validates a policy name.
    pub fn new(s: &str) -> Result<Self, PolicyError> {
        if s.is_empty() {
            return Err(PolicyError::EmptyName);
        }
        if s.len() > MAX_POLICY_NAME_LEN {
            return Err(PolicyError::NameTooLong { len: s.len() });
        }
        if let Some(ch) = s
            .chars()
            .find(|&c| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-')))
        {
            return Err(PolicyError::NameBadChar { ch });
        }
        if s == "." || s == ".." {
            return Err(PolicyError::NameDot);
        }
        Ok(Self(s.to_owned()))
    }

    /// The name.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for PolicyName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for PolicyName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PolicyName({})", self.0)
    }
}

impl FromStr for PolicyName {
    type Err = PolicyError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::new(s)
    }
}

impl Serialize for PolicyName {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.0)
    }
}

impl<'de> Deserialize<'de> for PolicyName {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        Self::new(&s).map_err(serde::de::Error::custom)
    }
}

/// Whom a policy is for; decided by its ID pattern at validation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
#[non_exhaustive]
pub enum PolicyKind {
    /// Applies to workloads (non-reserved IDs) only.
    Workload,
    /// Applies to gateway IDs only, and grants only `resolve`.
    Gateway,
}

/// A validated policy. Construct with [`Policy::new`] or [`Policy::parse`], or deserialize
/// (`{"name", "spiffeIdPattern", "pathPattern", "permissions"}`, unknown fields rejected),
/// which validates the same way.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", try_from = "PolicyRepr")]
pub struct Policy {
    name: PolicyName,
    spiffe_id_pattern: IdPattern,
    path_pattern: PathPattern,
    permissions: Permissions,
    #[serde(skip)]
    kind: PolicyKind,
}

/// The wire form, validated into a [`Policy`].
#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct PolicyRepr {
    name: PolicyName,
    spiffe_id_pattern: IdPattern,
    path_pattern: PathPattern,
    permissions: Permissions,
}

impl TryFrom<PolicyRepr> for Policy {
    type Error = PolicyError;
    fn try_from(r: PolicyRepr) -> Result<Self, Self::Error> {
        Self::new(r.name, r.spiffe_id_pattern, r.path_pattern, r.permissions)
    }
}

impl Policy {
    /// Validates a policy: at least one permission, and the reserved-identity rules of the
    /// module docs.
    pub fn new(
        name: PolicyName,
        spiffe_id_pattern: IdPattern,
        path_pattern: PathPattern,
        permissions: Permissions,
    ) -> Result<Self, PolicyError> {
        if permissions.is_empty() {
            return Err(PolicyError::NoPermissions);
        }
        let kind = classify_pattern(&spiffe_id_pattern)?;
        match kind {
            PolicyKind::Gateway if permissions != Permissions::only(Permission::Resolve) => {
                return Err(PolicyError::GatewayPermissions);
            }
            PolicyKind::Workload if permissions.contains(Permission::Resolve) => {
                return Err(PolicyError::ResolveNeedsGateway);
            }
            _ => {}
        }
        Ok(Self {
            name,
            spiffe_id_pattern,
            path_pattern,
            permissions,
            kind,
        })
    }

    /// Parses and validates a policy from its string parts (as an API request carries them).
    pub fn parse(
        name: &str,
        spiffe_id_pattern: &str,
        path_pattern: &str,
        permissions: impl IntoIterator<Item = Permission>,
    ) -> Result<Self, PolicyError> {
        Self::new(
            PolicyName::new(name)?,
            IdPattern::parse(spiffe_id_pattern).map_err(PolicyError::IdPattern)?,
            PathPattern::parse(path_pattern).map_err(PolicyError::PathPattern)?,
            permissions.into_iter().collect(),
        )
    }

    /// The name.
    pub fn name(&self) -> &PolicyName {
        &self.name
    }

    /// Which callers it applies to.
    pub fn spiffe_id_pattern(&self) -> &IdPattern {
        &self.spiffe_id_pattern
    }

    /// Which paths it covers.
    pub fn path_pattern(&self) -> &PathPattern {
        &self.path_pattern
    }

    /// What it grants, as written.
    pub fn permissions(&self) -> Permissions {
        self.permissions
    }

    /// Whether it is a workload or a gateway policy.
    pub fn kind(&self) -> PolicyKind {
        self.kind
    }
}

/// Decides a pattern's kind, rejecting patterns aimed at reserved IDs other than gateways.
fn classify_pattern(p: &IdPattern) -> Result<PolicyKind, PolicyError> {
    if !p.glob_seg_is_literal(0, RESERVED_SEGMENT) {
        return Ok(PolicyKind::Workload);
    }
    if p.glob_len() == 3 && p.glob_seg_is_literal(1, GATEWAY_SEGMENT) && p.glob_seg_is_single(2) {
        Ok(PolicyKind::Gateway)
    } else {
        Err(PolicyError::ReservedIdentity)
    }
}

/// How the engine sees a caller.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
#[non_exhaustive]
pub enum CallerClass {
    /// An ordinary workload: workload policies apply.
    Workload,
    /// A gateway (`/spike/gateway/<name>`): gateway policies apply.
    Gateway,
    /// Another SPIKE identity (under `/spike`): no policy ever applies.
    Reserved,
}

impl CallerClass {
    /// Classifies `id` (the rule is the same in every trust domain).
    pub fn of(id: &SpiffeId) -> Self {
        let mut segs = id.path().split('/').skip(1);
        if segs.next() != Some(RESERVED_SEGMENT) {
            return Self::Workload;
        }
        match (segs.next(), segs.next(), segs.next()) {
            (Some(GATEWAY_SEGMENT), Some(_), None) => Self::Gateway,
            _ => Self::Reserved,
        }
    }

    fn policy_kind(self) -> Option<PolicyKind> {
        match self {
            Self::Workload => Some(PolicyKind::Workload),
            Self::Gateway => Some(PolicyKind::Gateway),
            Self::Reserved => None,
        }
    }
}

/// The default-deny policy engine: an immutable snapshot of the policies.
///
/// Cheap to build; Nexus builds a new one when policies change and swaps it in atomically
/// (e.g. behind an `ArcSwap` or `RwLock<Arc<_>>`).
#[derive(Debug, Clone, Default)]
pub struct PolicyEngine {
    policies: Vec<Policy>,
}

impl PolicyEngine {
    /// An engine over `policies`, kept sorted by name. Names are expected to be unique (the
    /// store keys policies by name); duplicates are all applied.
    pub fn new(policies: impl IntoIterator<Item = Policy>) -> Self {
        let mut policies: Vec<Policy> = policies.into_iter().collect();
        policies.sort_by(|a, b| a.name.cmp(&b.name));
        Self { policies }
    }

    /// An engine with no policies, which denies everything.
    pub fn empty() -> Self {
        Self::default()
    }

    /// The policies, sorted by name.
    pub fn policies(&self) -> &[Policy] {
        &self.policies
    }

    /// The policies that apply to `id`, to ask about many paths (a listing) at the cost of
    /// matching the ID once.
    pub fn for_caller(&self, id: &SpiffeId) -> CallerPolicies<'_> {
        let class = CallerClass::of(id);
        let applicable = match class.policy_kind() {
            None => Vec::new(),
            Some(kind) => self
                .policies
                .iter()
                .filter(|p| p.kind == kind && p.spiffe_id_pattern.matches(id))
                .collect(),
        };
        CallerPolicies { class, applicable }
    }

    /// True when `id` holds `perm` on `path`. Default deny.
    pub fn allows(&self, id: &SpiffeId, path: &SecretPath, perm: Permission) -> bool {
        self.for_caller(id).allows(path, perm)
    }

    /// The effective permissions of `id` on `path`.
    pub fn permissions(&self, id: &SpiffeId, path: &SecretPath) -> Permissions {
        self.for_caller(id).permissions(path)
    }

    /// What applies to `id` on `path` and why (`spike policy test ID PATH`). Lists every
    /// policy that matches the ID or the path.
    pub fn explain(&self, id: &SpiffeId, path: &SecretPath) -> Explanation {
        let class = CallerClass::of(id);
        let mut checks = Vec::new();
        let mut granting = Vec::new();
        let mut id_matches_count = 0;
        let mut granted = Permissions::NONE;
        for p in &self.policies {
            let id_matches = p.spiffe_id_pattern.matches(id);
            let path_matches = p.path_pattern.matches(path);
            if !id_matches && !path_matches {
                continue;
            }
            let note = match (class, p.kind) {
                _ if !id_matches => None,
                (CallerClass::Reserved, _) => Some(NOTE_RESERVED),
                (CallerClass::Gateway, PolicyKind::Workload) => Some(NOTE_WORKLOAD_FOR_GATEWAY),
                _ => None,
            };
            let applies = id_matches && path_matches && note.is_none();
            if id_matches && note.is_none() {
                id_matches_count += 1;
            }
            if applies {
                granted = granted.union(p.permissions);
                granting.push(p.name.as_str());
            }
            checks.push(PolicyCheck {
                name: p.name.as_str().to_owned(),
                spiffe_id_pattern: p.spiffe_id_pattern.as_str().to_owned(),
                path_pattern: p.path_pattern.as_str().to_owned(),
                permissions: p.permissions,
                id_matches,
                path_matches,
                applies,
                note: note.map(str::to_owned),
            });
        }
        let permissions = effective(class, granted);
        let reason = match class {
            CallerClass::Reserved => {
                "the caller is one of SPIKE's own identities (under /spike): Nexus authorizes it in code and no policy ever applies to it".to_owned()
            }
            _ if id_matches_count == 0 => {
                "no policy matches the caller's SPIFFE ID: denied by default".to_owned()
            }
            _ if granting.is_empty() => format!(
                "{id_matches_count} polic{} the caller's SPIFFE ID but none matches the path: denied by default",
                if id_matches_count == 1 { "y matches" } else { "ies match" }
            ),
            _ => {
                let mut r = format!("granted by {}", granting.join(", "));
                if granted.contains(Permission::Super) {
                    r.push_str("; super grants every permission except resolve");
                }
                r
            }
        };
        Explanation {
            spiffe_id: id.as_str().to_owned(),
            path: path.as_str().to_owned(),
            caller: class,
            policies: checks,
            permissions,
            reason,
        }
    }
}

const NOTE_RESERVED: &str =
    "ignored: SPIKE's own identities are authorized by Nexus, not by policies";
const NOTE_WORKLOAD_FOR_GATEWAY: &str =
    "ignored: only gateway policies (spike/gateway/<name>) apply to gateway identities";

/// Expands `super` and enforces that only gateways resolve.
fn effective(class: CallerClass, granted: Permissions) -> Permissions {
    match class {
        CallerClass::Reserved => Permissions::NONE,
        // Gateway policies grant exactly `resolve`, by validation.
        CallerClass::Gateway => granted.without(Permission::Super),
        CallerClass::Workload if granted.contains(Permission::Super) => {
            Permissions::from(Permission::ALL).without(Permission::Resolve)
        }
        CallerClass::Workload => granted.without(Permission::Resolve),
    }
}

/// The policies that apply to one caller; see [`PolicyEngine::for_caller`].
#[derive(Debug, Clone)]
pub struct CallerPolicies<'a> {
    class: CallerClass,
    applicable: Vec<&'a Policy>,
}

impl CallerPolicies<'_> {
    /// How the engine classified the caller.
    pub fn class(&self) -> CallerClass {
        self.class
    }

    /// True when no policy applies to the caller at all, so every check denies.
    pub fn is_empty(&self) -> bool {
        self.applicable.is_empty()
    }

    /// The caller's effective permissions on `path`: the union of every applicable policy
    /// whose path pattern matches, with `super` expanded.
    pub fn permissions(&self, path: &SecretPath) -> Permissions {
        let granted = self
            .applicable
            .iter()
            .filter(|p| p.path_pattern.matches(path))
            .fold(Permissions::NONE, |acc, p| acc.union(p.permissions));
        effective(self.class, granted)
    }

    /// True when the caller holds `perm` on `path`.
    pub fn allows(&self, path: &SecretPath, perm: Permission) -> bool {
        self.permissions(path).contains(perm)
    }

    /// True when `path` may appear in the caller's listings (it holds `list` on it).
    pub fn may_list(&self, path: &SecretPath) -> bool {
        self.allows(path, Permission::List)
    }

    /// True when some path under `prefix` could be listable by the caller; when false, a
    /// listing of `prefix` is empty for it whatever is stored, so Nexus can skip the scan.
    pub fn could_list_under(&self, prefix: &PathPrefix) -> bool {
        !self.list_spans(prefix).is_empty()
    }

    /// Where a listing of `prefix` must look to find every path the caller may list: the span
    /// ([`PathPattern::span`]) of each list-granting pattern that could match under `prefix`,
    /// narrowed to `prefix`, none covered by another. Scanning only these keeps the cost of a
    /// listing blind to how many secrets the caller may not see lie elsewhere.
    pub fn list_spans(&self, prefix: &PathPrefix) -> Vec<PathSpan> {
        if self.class != CallerClass::Workload {
            return Vec::new();
        }
        let mut spans: Vec<PathSpan> = Vec::new();
        let granting = self.applicable.iter().filter(|p| {
            (p.permissions.contains(Permission::List) || p.permissions.contains(Permission::Super))
                && p.path_pattern.could_match_under(prefix)
        });
        for p in granting {
            let Some(span) = p.path_pattern.span().within(prefix) else {
                continue;
            };
            if spans.iter().any(|s| s.covers(&span)) {
                continue;
            }
            spans.retain(|s| !span.covers(s));
            spans.push(span);
        }
        spans
    }
}

/// The answer to "what may this caller do on this path, and why".
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Explanation {
    /// The caller's SPIFFE ID.
    pub spiffe_id: String,
    /// The secret path.
    pub path: String,
    /// How the caller was classified.
    pub caller: CallerClass,
    /// Every policy matching the ID or the path, by name.
    pub policies: Vec<PolicyCheck>,
    /// The effective permissions.
    pub permissions: Permissions,
    /// Why, in one sentence.
    pub reason: String,
}

/// How one policy relates to the caller and path of an [`Explanation`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PolicyCheck {
    /// The policy's name.
    pub name: String,
    /// Its ID pattern.
    pub spiffe_id_pattern: String,
    /// Its path pattern.
    pub path_pattern: String,
    /// What it grants.
    pub permissions: Permissions,
    /// True when its ID pattern matches the caller.
    pub id_matches: bool,
    /// True when its path pattern matches the path.
    pub path_matches: bool,
    /// True when it contributes its permissions.
    pub applies: bool,
    /// Why a matching policy is ignored, if it is.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
}

#[cfg(test)]
// Tests may unwrap: a panic is the failure report.
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn a_pattern_of_another_trust_domain_is_refused() {
        let served = TrustDomain::new("spike.dev").unwrap();
        let e = check_pattern_trust_domain("spiffe://evil.dev/ns/**", &served).unwrap_err();
        assert_eq!(
            e,
            PolicyError::OtherTrustDomain {
                pattern: "evil.dev".into(),
                served: "spike.dev".into()
            }
        );
        assert!(check_pattern_trust_domain("spiffe://spike.dev/ns/**", &served).is_ok());
        // An unparsable pattern is left to `Policy::parse`, which names the real problem.
        assert!(check_pattern_trust_domain("not a pattern", &served).is_ok());
    }
    use Permission::*;

    fn pol(name: &str, id: &str, path: &str, perms: &[Permission]) -> Policy {
        Policy::parse(name, id, path, perms.iter().copied()).unwrap()
    }

    fn id(s: &str) -> SpiffeId {
        SpiffeId::new(s).unwrap()
    }

    fn path(s: &str) -> SecretPath {
        SecretPath::parse(s).unwrap()
    }

    const WEB: &str = "spiffe://spike.dev/ns/web/sa/api";

    #[test]
    fn empty_engine_denies_everything() {
        let e = PolicyEngine::empty();
        for p in Permission::ALL {
            assert!(!e.allows(&id(WEB), &path("db/x"), p));
        }
        let ex = e.explain(&id(WEB), &path("db/x"));
        assert!(ex.permissions.is_empty());
        assert!(ex.policies.is_empty());
        assert!(ex.reason.contains("denied by default"), "{}", ex.reason);
    }

    #[test]
    fn grants_exactly_what_matches() {
        let e = PolicyEngine::new([pol(
            "web-db",
            "spiffe://spike.dev/ns/web/**",
            "db/*",
            &[Read, List],
        )]);
        let web = id(WEB);
        assert!(e.allows(&web, &path("db/a"), Read));
        assert!(e.allows(&web, &path("db/a"), List));
        assert!(!e.allows(&web, &path("db/a"), Write));
        assert!(!e.allows(&web, &path("db/a"), Delete));
        // Segment boundaries.
        assert!(!e.allows(&web, &path("dbx/a"), Read));
        assert!(!e.allows(&web, &path("db"), Read));
        assert!(!e.allows(&web, &path("db/a/b"), Read));
        // Other callers, including the same path in another trust domain.
        assert!(!e.allows(&id("spiffe://spike.dev/ns/db/sa/api"), &path("db/a"), Read));
        assert!(!e.allows(&id("spiffe://evil.dev/ns/web/sa/api"), &path("db/a"), Read));
        assert!(!e.allows(
            &id("spiffe://spike.dev/ns/webx/sa/api"),
            &path("db/a"),
            Read
        ));
    }

    #[test]
    fn double_star_matches_zero_segments() {
        let e = PolicyEngine::new([pol("p", "spiffe://spike.dev/app/**", "db/**", &[Read])]);
        assert!(e.allows(&id("spiffe://spike.dev/app"), &path("db"), Read));
        assert!(e.allows(&id("spiffe://spike.dev/app/x/y"), &path("db/a/b/c"), Read));
        assert!(!e.allows(&id("spiffe://spike.dev/apps"), &path("db"), Read));
    }

    #[test]
    fn multiple_policies_union() {
        let e = PolicyEngine::new([
            pol("a", "spiffe://spike.dev/ns/web/**", "db/**", &[Read]),
            pol("b", "spiffe://spike.dev/ns/*/sa/api", "db/prod/*", &[Write]),
            pol("c", "spiffe://spike.dev/ns/other/**", "db/**", &[Delete]),
        ]);
        let web = id(WEB);
        assert_eq!(
            e.permissions(&web, &path("db/prod/x")),
            Permissions::from([Read, Write])
        );
        assert_eq!(
            e.permissions(&web, &path("db/dev/x")),
            Permissions::from([Read])
        );
        let ex = e.explain(&web, &path("db/prod/x"));
        let names: Vec<_> = ex
            .policies
            .iter()
            .map(|c| (c.name.as_str(), c.applies))
            .collect();
        assert_eq!(names, [("a", true), ("b", true), ("c", false)]);
        let c = &ex.policies[2];
        assert!(!c.id_matches && c.path_matches);
        assert!(ex.reason.contains("granted by a, b"), "{}", ex.reason);
        let ex = e.explain(&web, &path("other/x"));
        assert!(ex.permissions.is_empty());
        assert!(ex.reason.contains("2 policies match"), "{}", ex.reason);
    }

    #[test]
    fn super_grants_everything_but_resolve() {
        let e = PolicyEngine::new([pol("admin", "spiffe://spike.dev/admin", "**", &[Super])]);
        let admin = id("spiffe://spike.dev/admin");
        for p in Permission::ALL {
            assert_eq!(e.allows(&admin, &path("any/path"), p), p != Resolve, "{p}");
        }
        assert!(e.explain(&admin, &path("x")).reason.contains("super"));
    }

    #[test]
    fn reserved_identities_never_get_workload_grants() {
        let e = PolicyEngine::new([
            pol("everyone", "spiffe://spike.dev/**", "**", &[Super]),
            pol("star", "spiffe://spike.dev/*/nexus", "**", &[Read]),
            pol("sp", "spiffe://spike.dev/sp*/**", "**", &[Read]),
        ]);
        for reserved in [
            "spiffe://spike.dev/spike",
            "spiffe://spike.dev/spike/nexus",
            "spiffe://spike.dev/spike/keeper/1",
            "spiffe://spike.dev/spike/pilot/role/superuser",
            "spiffe://spike.dev/spike/bootstrap",
            "spiffe://spike.dev/spike/operator",
            "spiffe://spike.dev/spike/gateway/gw1",
            "spiffe://spike.dev/spike/gateway/gw1/extra",
        ] {
            let rid = id(reserved);
            assert!(e.permissions(&rid, &path("db/x")).is_empty(), "{reserved}");
            let ex = e.explain(&rid, &path("db/x"));
            assert!(ex.permissions.is_empty());
            assert!(ex.policies.iter().all(|c| !c.applies));
            assert!(ex.policies.iter().any(|c| c.note.is_some()), "{reserved}");
        }
        assert!(e.allows(&id("spiffe://spike.dev/spikey"), &path("db/x"), Read));
        assert!(e.allows(&id("spiffe://spike.dev/app/spike"), &path("db/x"), Read));
    }

    #[test]
    fn validation_rejects_patterns_aimed_at_reserved_ids() {
        for p in [
            "spiffe://spike.dev/spike",
            "spiffe://spike.dev/spike/**",
            "spiffe://spike.dev/spike/nexus",
            "spiffe://spike.dev/spike/*",
            "spiffe://spike.dev/spike/keeper/*",
            "spiffe://spike.dev/spike/gateway/**",
            "spiffe://spike.dev/spike/gateway/a/b",
        ] {
            assert_eq!(
                Policy::parse("p", p, "**", [Read]),
                Err(PolicyError::ReservedIdentity),
                "{p}"
            );
            assert_eq!(
                Policy::parse("p", p, "**", [Resolve]).err(),
                Some(PolicyError::ReservedIdentity),
                "{p}"
            );
        }
    }

    #[test]
    fn gateways_get_resolve_only_from_gateway_policies() {
        assert_eq!(
            Policy::parse("g", "spiffe://spike.dev/spike/gateway/*", "**", [Read]),
            Err(PolicyError::GatewayPermissions)
        );
        assert_eq!(
            Policy::parse(
                "g",
                "spiffe://spike.dev/spike/gateway/*",
                "**",
                [Resolve, Read]
            ),
            Err(PolicyError::GatewayPermissions)
        );
        assert_eq!(
            Policy::parse("w", "spiffe://spike.dev/**", "**", [Resolve]),
            Err(PolicyError::ResolveNeedsGateway)
        );
        let e = PolicyEngine::new([
            pol(
                "gw",
                "spiffe://spike.dev/spike/gateway/egress-*",
                "apis/**",
                &[Resolve],
            ),
            pol("all", "spiffe://spike.dev/**", "**", &[Super]),
        ]);
        let gw = id("spiffe://spike.dev/spike/gateway/egress-1");
        assert_eq!(
            e.permissions(&gw, &path("apis/openai")),
            Permissions::only(Resolve)
        );
        assert!(e.permissions(&gw, &path("db/x")).is_empty());
        let other_gw = id("spiffe://spike.dev/spike/gateway/internal");
        assert!(e.permissions(&other_gw, &path("apis/openai")).is_empty());
        let other_td = id("spiffe://evil.dev/spike/gateway/egress-1");
        assert!(e.permissions(&other_td, &path("apis/openai")).is_empty());
        // A workload never resolves, even with super.
        let app = id("spiffe://spike.dev/app");
        assert!(!e.allows(&app, &path("apis/openai"), Resolve));
        assert!(e.allows(&app, &path("apis/openai"), Read));
        let ex = e.explain(&gw, &path("apis/openai"));
        assert_eq!(ex.caller, CallerClass::Gateway);
        let all = ex.policies.iter().find(|c| c.name == "all").unwrap();
        assert!(all.id_matches && !all.applies && all.note.is_some());
    }

    #[test]
    fn listing_helpers() {
        let e = PolicyEngine::new([
            pol("l", "spiffe://spike.dev/app", "db/team-*/**", &[List]),
            pol("r", "spiffe://spike.dev/app", "other/**", &[Read]),
        ]);
        let app = id("spiffe://spike.dev/app");
        let c = e.for_caller(&app);
        assert!(c.may_list(&path("db/team-a/x")));
        assert!(!c.may_list(&path("db/x")));
        assert!(!c.may_list(&path("other/x")));
        let pre = |s: &str| PathPrefix::parse(s).unwrap();
        assert!(c.could_list_under(&PathPrefix::ROOT));
        assert!(c.could_list_under(&pre("db")));
        assert!(c.could_list_under(&pre("db/team-a/deep")));
        assert!(!c.could_list_under(&pre("db/ops")));
        assert!(!c.could_list_under(&pre("other")));
        assert!(
            !e.for_caller(&id("spiffe://spike.dev/x"))
                .could_list_under(&PathPrefix::ROOT)
        );
        let under = |s: &str| PathSpan::Under(pre(s));
        assert_eq!(c.list_spans(&PathPrefix::ROOT), [under("db")]);
        assert_eq!(c.list_spans(&pre("db/team-a/x")), [under("db/team-a/x")]);
        assert!(c.list_spans(&pre("db/ops")).is_empty());
        assert!(c.list_spans(&pre("other")).is_empty());
        assert!(e.for_caller(&id("spiffe://spike.dev/x")).is_empty());
    }

    #[test]
    fn list_spans_merge_overlapping_patterns() {
        let e = PolicyEngine::new([
            pol("a", "spiffe://spike.dev/app", "db/**", &[List]),
            pol("b", "spiffe://spike.dev/app", "db/x/*", &[List, Read]),
            pol("c", "spiffe://spike.dev/app", "db-x/one", &[Super]),
            pol("d", "spiffe://spike.dev/app", "hidden/**", &[Read, Write]),
        ]);
        let c = e.for_caller(&id("spiffe://spike.dev/app"));
        let exactly = |s: &str| PathSpan::Exactly(path(s));
        let under = |s: &str| PathSpan::Under(PathPrefix::parse(s).unwrap());
        assert_eq!(
            c.list_spans(&PathPrefix::ROOT),
            [under("db"), exactly("db-x/one")]
        );
        // `**` anywhere in the caller's list grants means the whole (requested) prefix.
        let all = PolicyEngine::new([
            pol("a", "spiffe://spike.dev/app", "db/**", &[List]),
            pol("b", "spiffe://spike.dev/app", "*/creds", &[List]),
        ]);
        let c = all.for_caller(&id("spiffe://spike.dev/app"));
        assert_eq!(c.list_spans(&PathPrefix::ROOT), [under("")]);
        assert_eq!(c.list_spans(&PathPrefix::parse("k").unwrap()), [under("k")]);
    }

    #[test]
    fn names_and_permissions_validate() {
        assert!(PolicyName::new("web.db_read-1").is_ok());
        assert_eq!(PolicyName::new(""), Err(PolicyError::EmptyName));
        assert_eq!(PolicyName::new(".."), Err(PolicyError::NameDot));
        assert_eq!(
            PolicyName::new("a/b"),
            Err(PolicyError::NameBadChar { ch: '/' })
        );
        assert!(PolicyName::new(&"a".repeat(128)).is_ok());
        assert_eq!(
            PolicyName::new(&"a".repeat(129)),
            Err(PolicyError::NameTooLong { len: 129 })
        );
        assert_eq!(
            Policy::parse("p", "spiffe://spike.dev/**", "**", []),
            Err(PolicyError::NoPermissions)
        );
        assert!(matches!(
            Policy::parse("p", "spike.dev/**", "**", [Read]),
            Err(PolicyError::IdPattern(PatternError::MissingScheme))
        ));
        assert!(matches!(
            Policy::parse("p", "spiffe://spike.dev/**", "/db", [Read]),
            Err(PolicyError::PathPattern(PatternError::LeadingSlash))
        ));
        assert_eq!("cipher".parse::<Permission>(), Ok(Cipher));
        assert!("admin".parse::<Permission>().is_err());
        let set = Permissions::from([Write, Read, Read]);
        assert_eq!(set.len(), 2);
        assert_eq!(set.to_string(), "read, write");
        assert!(set.is_superset(Permissions::only(Read)));
        assert!(!Permissions::only(Read).is_superset(set));
    }

    #[test]
    fn serde_wire_format() {
        let json = r#"{"name":"web","spiffeIdPattern":"spiffe://spike.dev/ns/web/**","pathPattern":"apps/web/**","permissions":["write","read","read"]}"#;
        let p: Policy = serde_json::from_str(json).unwrap();
        assert_eq!(p.name().as_str(), "web");
        assert_eq!(p.permissions(), Permissions::from([Read, Write]));
        assert_eq!(p.kind(), PolicyKind::Workload);
        assert_eq!(
            serde_json::to_string(&p).unwrap(),
            r#"{"name":"web","spiffeIdPattern":"spiffe://spike.dev/ns/web/**","pathPattern":"apps/web/**","permissions":["read","write"]}"#
        );
        for bad in [
            r#"{"name":"web","spiffeIdPattern":"spiffe://spike.dev/**","pathPattern":"**","permissions":["read"],"extra":1}"#,
            r#"{"name":"web","spiffeIdPattern":"spiffe://spike.dev/**","pathPattern":"**","permissions":[]}"#,
            r#"{"name":"web","spiffeIdPattern":"spiffe://spike.dev/**","pathPattern":"**","permissions":["admin"]}"#,
            r#"{"name":"web","spiffeIdPattern":"spiffe://spike.dev/spike/**","pathPattern":"**","permissions":["read"]}"#,
            r#"{"name":"web","spiffe_id_pattern":"spiffe://spike.dev/**","pathPattern":"**","permissions":["read"]}"#,
        ] {
            assert!(serde_json::from_str::<Policy>(bad).is_err(), "{bad}");
        }
        let e = PolicyEngine::new([p]);
        let ex = e.explain(&id(WEB), &path("apps/web/x"));
        let back: Explanation = serde_json::from_str(&serde_json::to_string(&ex).unwrap()).unwrap();
        assert_eq!(back, ex);
    }
}
