//! The audit line, its key, MAC and chain.

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;

use hmac::{Hmac, KeyInit, Mac};
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use sha2::{Digest, Sha256};
use time::OffsetDateTime;
use zeroize::Zeroizing;

use crate::id::SpiffeId;

use super::*;

/// Longest line [`verify`] and the audit writer accept, in bytes (newline excluded).
/// Lines the writer produces are far shorter.
pub const MAX_LINE_LEN: usize = 64 * 1024;
/// Longest `path` kept in a line, in bytes; longer ones are cut and end with `...`.
pub const MAX_AUDIT_PATH_LEN: usize = 1024;
/// Bytes of an invalid raw path kept, escaped, in front of its hash (see
/// [`AuditRecord::with_raw_path`]).
pub const RAW_PATH_PREFIX_LEN: usize = 32;
/// Domain separation tag of the version-1 MAC input.
const DOMAIN: &[u8] = b"spike-audit-v1\0";
/// Domain separation of a gateway's chain key, derived from Nexus's audit-chain key.
const GATEWAY_KEY_DOMAIN: &[u8] = b"spike-gateway-audit-v1\0";
/// Separates the token ids of one gateway line (ids are lowercase hex, never a comma).
pub const TOKEN_ID_SEPARATOR: char = ',';

pub(super) type HmacSha256 = Hmac<Sha256>;

/// The 256-bit audit-chain key, derived by Nexus from its data key. Zeroized on drop; never
/// printed.
#[derive(Clone)]
pub struct AuditKey(Zeroizing<[u8; 32]>);

impl AuditKey {
    /// Copies `bytes` into a zeroizing key.
    pub fn new(bytes: &[u8; 32]) -> Self {
        Self(Zeroizing::new(*bytes))
    }

    /// The chain key of the gateway `gateway`: HMAC-SHA256 under this (Nexus's) key over
    /// `"spike-gateway-audit-v1\0" ‖ gateway's SPIFFE ID`. Each gateway gets its own key, so
    /// one gateway cannot forge lines of another's chain or of Nexus's, and it is as stable as
    /// Nexus's key (which survives rotation and rekeying).
    pub fn for_gateway(&self, gateway: &SpiffeId) -> Self {
        let mut m = self.hmac();
        m.update(GATEWAY_KEY_DOMAIN);
        m.update(gateway.as_str().as_bytes());
        Self(Zeroizing::new(m.finalize().into_bytes().into()))
    }

    /// The key as 64 lowercase hex digits, in a zeroizing string (for the one answer that
    /// hands a gateway its key).
    pub fn to_hex(&self) -> Zeroizing<String> {
        Zeroizing::new(hex::encode(&self.0[..]))
    }

    /// Parses 64 hex digits; the input is not echoed in the error.
    pub fn from_hex(s: &str) -> Result<Self, BadKeyHex> {
        let mut out = Zeroizing::new([0u8; 32]);
        hex::decode_to_slice(s, &mut out[..]).map_err(|_| BadKeyHex)?;
        Ok(Self(out))
    }

    pub(super) fn hmac(&self) -> HmacSha256 {
        // HMAC accepts keys of any length, so this cannot fail.
        <HmacSha256 as KeyInit>::new_from_slice(&self.0[..]).expect("hmac accepts any key length")
    }
}

impl From<Zeroizing<[u8; 32]>> for AuditKey {
    fn from(bytes: Zeroizing<[u8; 32]>) -> Self {
        Self(bytes)
    }
}

impl fmt::Debug for AuditKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("AuditKey(..)")
    }
}

/// A line's MAC (or `prev`): 32 bytes, written as 64 lowercase hex digits.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct AuditMac([u8; 32]);

impl AuditMac {
    /// All zeros: the `prev` of the first line.
    pub const ZERO: Self = Self([0; 32]);

    /// The raw bytes.
    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }

    /// Wraps raw bytes.
    pub const fn from_bytes(bytes: [u8; 32]) -> Self {
        Self(bytes)
    }

    /// Parses exactly 64 lowercase hex digits.
    pub fn from_hex(s: &str) -> Result<Self, BadMacHex> {
        if s.len() != 64 || !s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')) {
            return Err(BadMacHex);
        }
        let mut out = [0; 32];
        hex::decode_to_slice(s, &mut out).map_err(|_| BadMacHex)?;
        Ok(Self(out))
    }

    /// 64 lowercase hex digits.
    pub fn to_hex(&self) -> String {
        self.with_hex(str::to_owned)
    }

    /// Lends the 64 hex digits from the stack: every audit line formats two MACs, and
    /// `hex::encode` builds its string a `char` at a time, which showed in the gateway's profile.
    fn with_hex<R>(&self, f: impl FnOnce(&str) -> R) -> R {
        let mut out = [0u8; 64];
        hex::encode_to_slice(self.0, &mut out).expect("32 bytes are 64 hex digits");
        f(std::str::from_utf8(&out).expect("hex digits are ASCII"))
    }
}

/// An audit key that is not 64 hex digits.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("an audit key must be 64 hex digits")]
#[non_exhaustive]
pub struct BadKeyHex;

/// A MAC that is not 64 lowercase hex digits.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("a MAC must be 64 lowercase hex digits")]
#[non_exhaustive]
pub struct BadMacHex;

impl fmt::Display for AuditMac {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.with_hex(|hex| f.write_str(hex))
    }
}

impl fmt::Debug for AuditMac {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "AuditMac({})", self.to_hex())
    }
}

impl FromStr for AuditMac {
    type Err = BadMacHex;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::from_hex(s)
    }
}

impl Serialize for AuditMac {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        self.with_hex(|hex| s.serialize_str(hex))
    }
}

impl<'de> Deserialize<'de> for AuditMac {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        Self::from_hex(&s).map_err(serde::de::Error::custom)
    }
}

/// The outcome of a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Decision {
    /// The request was authorized (and, with a 2xx status, served).
    Allow,
    /// The request was refused (authentication, policy, rate limit, ...).
    Deny,
    /// The request failed for another reason.
    Error,
}

impl Decision {
    /// The wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Allow => "allow",
            Self::Deny => "deny",
            Self::Error => "error",
        }
    }
}

/// What a request handler reports; the chain adds `seq`, `time`, `prev` and `mac`.
///
/// `action` and `reason` are static codes (`"secret.get"`, `"policy_denied"`) so caller data
/// can never reach them; there is deliberately no field for a value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditRecord {
    caller: Option<SpiffeId>,
    action: &'static str,
    path: Option<String>,
    decision: Decision,
    reason: &'static str,
    status: Option<u16>,
    counts: BTreeMap<&'static str, u64>,
    token: Option<TokenSubject>,
    route: Option<String>,
    destination: Option<String>,
}

/// Who a reference-token request was about: the token's id (a prefix of its keyed hash, never
/// the reference) and, for a resolution, the agent the gateway acted for.
#[derive(Debug, Clone, PartialEq, Eq)]
struct TokenSubject {
    id: Option<String>,
    agent: Option<SpiffeId>,
}

impl AuditRecord {
    /// A record with no caller, path or status yet.
    pub fn new(action: &'static str, decision: Decision, reason: &'static str) -> Self {
        Self {
            caller: None,
            action,
            path: None,
            decision,
            reason,
            status: None,
            counts: BTreeMap::new(),
            token: None,
            route: None,
            destination: None,
        }
    }

    /// Names the tokens a gateway request used by their ids, in order, each once, joined by
    /// [`TOKEN_ID_SEPARATOR`], and the agent it acted for. Ids are Nexus's (hex prefixes of
    /// its keyed hash of a reference): a line never holds a reference.
    pub fn with_tokens<'a>(self, ids: impl IntoIterator<Item = &'a str>, agent: SpiffeId) -> Self {
        let mut joined = String::new();
        let mut seen = std::collections::BTreeSet::new();
        for id in ids {
            if seen.insert(id) {
                if !joined.is_empty() {
                    joined.push(TOKEN_ID_SEPARATOR);
                }
                joined.push_str(id);
            }
        }
        self.with_token((!joined.is_empty()).then_some(joined), Some(agent))
    }

    /// Sets the gateway route a request addressed (a configured name, or `forward`).
    pub fn with_route(mut self, route: impl Into<String>) -> Self {
        self.route = Some(route.into());
        self
    }

    /// Sets where a gateway request goes (`host:port`).
    pub fn with_destination(mut self, destination: impl Into<String>) -> Self {
        self.destination = Some(destination.into());
        self
    }

    /// Names the reference token a request was about by its id (when known), and the agent
    /// a gateway resolved it for. Only the id: a line never holds a reference.
    pub fn with_token(mut self, id: Option<String>, agent: Option<SpiffeId>) -> Self {
        if id.is_some() || agent.is_some() {
            self.token = Some(TokenSubject { id, agent });
        }
        self
    }

    /// Sets the caller's SPIFFE ID.
    pub fn with_caller(mut self, caller: SpiffeId) -> Self {
        self.caller = Some(caller);
        self
    }

    /// Sets the path (a secret path, policy name or prefix). Cut to [`MAX_AUDIT_PATH_LEN`]
    /// bytes, ending with `...` when cut, so an oversized request cannot bloat the log.
    pub fn with_path(mut self, path: impl Into<String>) -> Self {
        let mut path = path.into();
        if path.len() > MAX_AUDIT_PATH_LEN {
            let mut end = MAX_AUDIT_PATH_LEN - 3;
            while !path.is_char_boundary(end) {
                end -= 1;
            }
            path.truncate(end);
            path.push_str("...");
        }
        self.path = Some(path);
        self
    }

    /// Records a path that did not parse as a secret path: at most
    /// [`RAW_PATH_PREFIX_LEN`] bytes of it, escaped, then its length and a SHA-256 prefix, e.g.
    /// `a\u{0}b... (1024 bytes, sha256:3f2a…)`. A caller sending huge or binary invalid paths
    /// thus costs a short line, and the same bad path is still recognisable across lines.
    pub fn with_raw_path(mut self, raw: &str) -> Self {
        self.path = Some(abbreviate_raw_path(raw));
        self
    }

    /// Adds `n` to the count of `code` (a reason code). A summary line carries counts instead
    /// of one line per refused item or request.
    pub fn with_count(mut self, code: &'static str, n: u64) -> Self {
        *self.counts.entry(code).or_default() += n;
        self
    }

    /// The counts of a summary line (empty on an ordinary line).
    pub fn counts(&self) -> &BTreeMap<&'static str, u64> {
        &self.counts
    }

    /// Sets the HTTP status sent.
    pub fn with_status(mut self, status: u16) -> Self {
        self.status = Some(status);
        self
    }

    /// The caller.
    pub fn caller(&self) -> Option<&SpiffeId> {
        self.caller.as_ref()
    }

    /// The action code.
    pub fn action(&self) -> &'static str {
        self.action
    }

    /// The path.
    pub fn path(&self) -> Option<&str> {
        self.path.as_deref()
    }

    /// The decision.
    pub fn decision(&self) -> Decision {
        self.decision
    }

    /// The reason code.
    pub fn reason(&self) -> &'static str {
        self.reason
    }

    /// The HTTP status.
    pub fn status(&self) -> Option<u16> {
        self.status
    }
}

/// One sealed line of the log, as written and as read back.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuditLine {
    /// Sequence number, from 1, without gaps.
    pub seq: u64,
    /// When the line was sealed, RFC 3339 UTC.
    pub time: String,
    /// The caller's SPIFFE ID, or `null` when it had none.
    pub caller: Option<String>,
    /// The action code.
    pub action: String,
    /// The path acted on, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    /// The decision.
    pub decision: Decision,
    /// The reason code.
    pub reason: String,
    /// The HTTP status, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<u16>,
    /// Counts per reason code, on a summary line only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub counts: Option<BTreeMap<String, u64>>,
    /// The reference token's id, on token lines only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token: Option<String>,
    /// The agent a gateway resolved a token for, on resolution lines only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub agent: Option<String>,
    /// The gateway route addressed, on gateway lines only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub route: Option<String>,
    /// Where a gateway request goes (`host:port`), on gateway lines only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub destination: Option<String>,
    /// The previous line's MAC (zeros on the first line).
    pub prev: AuditMac,
    /// HMAC-SHA256 over the other fields.
    pub mac: AuditMac,
}

impl AuditLine {
    /// Parses one line (without its newline). Checks the syntax only; the MAC and chain are
    /// checked by [`verify`].
    pub fn parse(line: &str) -> Result<Self, LineProblem> {
        if line.is_empty() {
            return Err(LineProblem::Empty);
        }
        serde_json::from_str(line).map_err(|e| LineProblem::Malformed {
            kind: match e.classify() {
                serde_json::error::Category::Data => "unexpected or missing field",
                _ => "invalid JSON",
            },
            column: e.column(),
        })
    }

    /// The line as JSON, ending with a newline.
    pub fn to_json_line(&self) -> String {
        // Serializing plain strings, numbers and enums into a String cannot fail.
        let mut s = serde_json::to_string(self).expect("audit lines always serialize");
        s.push('\n');
        s
    }

    /// This line as a checkpoint.
    pub fn checkpoint(&self) -> Checkpoint {
        Checkpoint {
            seq: self.seq,
            mac: self.mac,
        }
    }

    /// The MAC this line should carry under `key`: HMAC-SHA256 over
    /// `"spike-audit-v1\0" ‖ seq (u64 BE) ‖ time ‖ caller? ‖ action ‖ path? ‖ decision ‖
    /// reason ‖ status? ‖ prev (32 bytes) [‖ counts]`, where each string is a u32 BE length
    /// then its bytes, and each optional field is a 0 byte when absent or a 1 byte then the
    /// field. `counts`, present on summary lines only, is appended after `prev` as a 1 byte,
    /// the number of entries (u32 BE), then each code (string) and count (u64 BE) in code
    /// order; lines without it keep exactly the original encoding. `token` and `agent`, on
    /// token lines only, follow as a 2 byte then the id, and a 3 byte then the agent's ID;
    /// `route` and `destination`, on gateway lines only, as a 4 byte then the route and a 5
    /// byte then the destination. Lines without a tagged field keep exactly the encoding
    /// they had before it existed.
    pub fn compute_mac(&self, key: &AuditKey) -> AuditMac {
        let mut m = key.hmac();
        m.update(DOMAIN);
        m.update(&self.seq.to_be_bytes());
        put_str(&mut m, &self.time);
        put_opt_str(&mut m, self.caller.as_deref());
        put_str(&mut m, &self.action);
        put_opt_str(&mut m, self.path.as_deref());
        put_str(&mut m, self.decision.as_str());
        put_str(&mut m, &self.reason);
        match self.status {
            None => m.update(&[0]),
            Some(s) => {
                m.update(&[1]);
                m.update(&s.to_be_bytes());
            }
        }
        m.update(self.prev.as_bytes());
        if let Some(counts) = &self.counts {
            m.update(&[1]);
            let n = u32::try_from(counts.len()).unwrap_or(u32::MAX);
            m.update(&n.to_be_bytes());
            for (code, count) in counts {
                put_str(&mut m, code);
                m.update(&count.to_be_bytes());
            }
        }
        if let Some(token) = &self.token {
            m.update(&[2]);
            put_str(&mut m, token);
        }
        for (tag, field) in [(3, &self.agent), (4, &self.route), (5, &self.destination)] {
            if let Some(v) = field {
                m.update(&[tag]);
                put_str(&mut m, v);
            }
        }
        AuditMac(m.finalize().into_bytes().into())
    }

    /// True when `mac` is right for the other fields under `key` (compared in constant time).
    pub fn mac_is_valid(&self, key: &AuditKey) -> bool {
        let expected = self.compute_mac(key);
        subtle::ConstantTimeEq::ct_eq(&expected.0[..], &self.mac.0[..]).into()
    }
}

fn put_str(m: &mut HmacSha256, s: &str) {
    // Every field is bounded far below 4 GiB (lines are at most MAX_LINE_LEN).
    let len = u32::try_from(s.len()).unwrap_or(u32::MAX);
    m.update(&len.to_be_bytes());
    m.update(s.as_bytes());
}

fn put_opt_str(m: &mut HmacSha256, s: Option<&str>) {
    match s {
        None => m.update(&[0]),
        Some(s) => {
            m.update(&[1]);
            put_str(m, s);
        }
    }
}

/// See [`AuditRecord::with_raw_path`].
fn abbreviate_raw_path(raw: &str) -> String {
    let mut end = raw.len().min(RAW_PATH_PREFIX_LEN);
    while !raw.is_char_boundary(end) {
        end -= 1;
    }
    // Escaping keeps control characters and look-alikes out of the log as themselves.
    let prefix: String = raw[..end].chars().flat_map(char::escape_default).collect();
    let digest = Sha256::digest(raw.as_bytes());
    format!(
        "{prefix}{} ({} bytes, sha256:{})",
        if end < raw.len() { "..." } else { "" },
        raw.len(),
        hex::encode(&digest[..8])
    )
}

/// Formats `t` as RFC 3339 UTC with microseconds, e.g. `2025-01-31T12:00:00.000001Z`.
fn format_time(t: OffsetDateTime) -> String {
    let t = t.to_offset(time::UtcOffset::UTC);
    format!(
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.{:06}Z",
        t.year(),
        u8::from(t.month()),
        t.day(),
        t.hour(),
        t.minute(),
        t.second(),
        t.microsecond()
    )
}

/// The running head of a chain and its key: turns records into sealed lines.
pub struct Chain {
    key: AuditKey,
    head: Checkpoint,
}

impl Chain {
    /// A new, empty chain: the first line gets `seq` 1 and a zero `prev`.
    pub fn new(key: AuditKey) -> Self {
        Self::resume(key, Checkpoint::GENESIS)
    }

    /// Continues a chain whose last line is `head`.
    pub fn resume(key: AuditKey, head: Checkpoint) -> Self {
        Self { key, head }
    }

    /// Moves the head back to `head`, a checkpoint this chain produced earlier: after a
    /// failed write, the next line continues from the last durable one.
    pub fn rewind(&mut self, head: Checkpoint) {
        self.head = head;
    }

    /// The last sealed line's position.
    pub fn head(&self) -> Checkpoint {
        self.head
    }

    /// Seals `record` as the next line, timestamped now.
    pub fn seal(&mut self, record: AuditRecord) -> AuditLine {
        self.seal_at(record, OffsetDateTime::now_utc())
    }

    /// Seals `record` as the next line with the given time.
    pub fn seal_at(&mut self, record: AuditRecord, time: OffsetDateTime) -> AuditLine {
        let mut line = AuditLine {
            // A u64 sequence cannot run out in practice; saturating keeps this panic-free,
            // and a repeated seq would fail verification rather than pass silently.
            seq: self.head.seq.saturating_add(1),
            time: format_time(time),
            caller: record.caller.map(|c| c.as_str().to_owned()),
            action: record.action.to_owned(),
            path: record.path,
            decision: record.decision,
            reason: record.reason.to_owned(),
            status: record.status,
            counts: (!record.counts.is_empty()).then(|| {
                record
                    .counts
                    .into_iter()
                    .map(|(k, v)| (k.to_owned(), v))
                    .collect()
            }),
            agent: record
                .token
                .as_ref()
                .and_then(|t| t.agent.as_ref())
                .map(|a| a.as_str().to_owned()),
            token: record.token.and_then(|t| t.id),
            route: record.route,
            destination: record.destination,
            prev: self.head.mac,
            mac: AuditMac::ZERO,
        };
        line.mac = line.compute_mac(&self.key);
        self.head = line.checkpoint();
        line
    }
}

impl fmt::Debug for Chain {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Chain")
            .field("key", &self.key)
            .field("head", &self.head)
            .finish()
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    /// A Nexus line sealed under a fixed key and time: its MAC is pinned, so a change to the
    /// encoding (new fields, new tags) cannot silently change what old lines verify as.
    #[test]
    fn a_nexus_line_keeps_its_pinned_mac() {
        let key = AuditKey::new(&[7; 32]);
        let mut chain = Chain::new(key);
        let at = time::macros::datetime!(2025-01-31 12:00:00.000001 UTC);
        let caller = SpiffeId::new("spiffe://spike.dev/app").unwrap();
        let first = chain.seal_at(
            AuditRecord::new("secret.get", Decision::Allow, "ok")
                .with_caller(caller.clone())
                .with_path("db/x")
                .with_status(200),
            at,
        );
        let second = chain.seal_at(
            AuditRecord::new("token.resolve", Decision::Deny, "token_unknown")
                .with_caller(caller)
                .with_token(Some("0123456789abcdef".into()), None)
                .with_count("forbidden", 2),
            at,
        );
        assert_eq!(
            first.mac.to_hex(),
            "90030ad8e4d9496143d5f22cb35367829d2991a629e31a20db41d354741692b4"
        );
        assert_eq!(
            second.mac.to_hex(),
            "699921aff5565f41e87f84cb28c228a20d20c56079302bf525128658dce4f4dd"
        );
    }

    #[test]
    fn invalid_raw_paths_are_kept_as_a_short_escaped_prefix_and_a_hash() {
        let raw = format!("bad\u{1}\n{}", "x".repeat(1020));
        let r = AuditRecord::new("secret.put", Decision::Error, "invalid_path").with_raw_path(&raw);
        let p = r.path().unwrap();
        assert!(p.len() < 120, "{p}");
        assert!(p.starts_with("bad\\u{1}\\nxxx"), "{p}");
        assert!(p.contains("(1025 bytes, sha256:"), "{p}");
        // The same path gives the same line text; another one does not.
        let again =
            AuditRecord::new("secret.put", Decision::Error, "invalid_path").with_raw_path(&raw);
        assert_eq!(again.path(), Some(p));
        let other = format!("{raw}y");
        let other =
            AuditRecord::new("secret.put", Decision::Error, "invalid_path").with_raw_path(&other);
        assert_ne!(other.path(), Some(p));
    }

    #[test]
    fn summary_counts_are_covered_by_the_mac() {
        let key = AuditKey::new(&[3; 32]);
        let mut chain = Chain::new(key.clone());
        let r = AuditRecord::new(
            "secret.batch.put.refused",
            Decision::Deny,
            "batch_items_refused",
        )
        .with_count("forbidden", 2)
        .with_count("invalid_path", 1)
        .with_count("forbidden", 1);
        let line = chain.seal(r);
        assert_eq!(line.counts.as_ref().unwrap()["forbidden"], 3);
        let parsed = AuditLine::parse(line.to_json_line().trim_end()).unwrap();
        assert!(parsed.mac_is_valid(&key));
        let mut edited = parsed.clone();
        edited
            .counts
            .as_mut()
            .unwrap()
            .insert("forbidden".into(), 1);
        assert!(!edited.mac_is_valid(&key));
        let mut dropped = parsed;
        dropped.counts = None;
        assert!(!dropped.mac_is_valid(&key));
    }

    #[test]
    fn a_token_line_names_the_token_and_agent_under_the_mac() {
        let key = AuditKey::new(&[4; 32]);
        let mut chain = Chain::new(key.clone());
        let gw = SpiffeId::new("spiffe://spike.dev/spike/gateway/gw").unwrap();
        let agent = SpiffeId::new("spiffe://spike.dev/agents/a").unwrap();
        let r = AuditRecord::new("token.resolve", Decision::Error, "token_unknown")
            .with_caller(gw)
            .with_path("ai/groq")
            .with_token(Some("0123456789abcdef".into()), Some(agent));
        let line = chain.seal(r);
        let parsed = AuditLine::parse(line.to_json_line().trim_end()).unwrap();
        assert_eq!(parsed.token.as_deref(), Some("0123456789abcdef"));
        assert_eq!(parsed.agent.as_deref(), Some("spiffe://spike.dev/agents/a"));
        assert!(parsed.mac_is_valid(&key));
        let mut other_agent = parsed.clone();
        other_agent.agent = Some("spiffe://spike.dev/agents/b".into());
        assert!(!other_agent.mac_is_valid(&key));
        let mut no_token = parsed;
        no_token.token = None;
        assert!(!no_token.mac_is_valid(&key));
    }

    fn gateway_line(chain: &mut Chain) -> AuditLine {
        let gw = SpiffeId::new("spiffe://spike.dev/spike/gateway/gw").unwrap();
        let agent = SpiffeId::new("spiffe://spike.dev/agents/a").unwrap();
        chain.seal(
            AuditRecord::new("gateway.read", Decision::Allow, "ok")
                .with_caller(gw)
                .with_tokens(["00aa", "11bb", "00aa"], agent)
                .with_route("llm")
                .with_destination("api.example:443"),
        )
    }

    #[test]
    fn a_gateway_line_covers_route_destination_and_tokens_under_the_mac() {
        let key = AuditKey::new(&[5; 32]);
        let line = gateway_line(&mut Chain::new(key.clone()));
        let parsed = AuditLine::parse(line.to_json_line().trim_end()).unwrap();
        // Each token once, in order of use.
        assert_eq!(parsed.token.as_deref(), Some("00aa,11bb"));
        assert_eq!(parsed.route.as_deref(), Some("llm"));
        assert_eq!(parsed.destination.as_deref(), Some("api.example:443"));
        assert!(parsed.mac_is_valid(&key));
        let edits: [fn(&mut AuditLine); 5] = [
            |l| l.route = Some("other".into()),
            |l| l.route = None,
            |l| l.destination = Some("evil.example:443".into()),
            |l| l.destination = None,
            // The route's bytes moved into the destination: the tags keep them apart.
            |l| {
                l.destination = l.route.take();
            },
        ];
        for edit in edits {
            let mut e = parsed.clone();
            edit(&mut e);
            assert!(!e.mac_is_valid(&key), "{e:?}");
        }
    }

    #[test]
    fn each_gateway_has_its_own_chain_key() {
        let nexus = AuditKey::new(&[6; 32]);
        let a = SpiffeId::new("spiffe://spike.dev/spike/gateway/a").unwrap();
        let b = SpiffeId::new("spiffe://spike.dev/spike/gateway/b").unwrap();
        let (ka, kb) = (nexus.for_gateway(&a), nexus.for_gateway(&b));
        assert_ne!(ka.0[..], kb.0[..]);
        assert_ne!(ka.0[..], nexus.0[..]);
        // Stable, and carried as hex without loss.
        assert_eq!(nexus.for_gateway(&a).0[..], ka.0[..]);
        assert_eq!(AuditKey::from_hex(&ka.to_hex()).unwrap().0[..], ka.0[..]);
        assert!(AuditKey::from_hex("zz").is_err());
        // A line sealed under one gateway's key does not verify under another's.
        let line = gateway_line(&mut Chain::new(ka.clone()));
        assert!(line.mac_is_valid(&ka));
        assert!(!line.mac_is_valid(&kb));
        assert!(!line.mac_is_valid(&nexus));
    }
}
