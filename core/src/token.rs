//! Reference tokens: the opaque `$SPIKE{ref:…}` strings agents hold instead of credentials,
//! and the parts of a token's binding that Nexus, the CLI and the gateway all read the same
//! way (destinations, actions, where a token may be substituted).
//!
//! A reference is 128 random bits and means nothing on its own; Nexus stores only a keyed
//! hash of it. The reference is as good as the credential to whoever can reach a gateway
//! with the bound agent's identity, so it lives in zeroizing memory and no `Debug` or
//! `Display` shows it.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use zeroize::Zeroizing;

/// Bytes of randomness in a reference.
pub const REF_LEN: usize = 16;
/// What a reference starts with.
pub const REF_PREFIX: &str = "$SPIKE{ref:";
/// What it ends with.
const REF_SUFFIX: &str = "}";
/// Length of a token's text, `$SPIKE{ref:<32 hex>}`.
pub const TOKEN_TEXT_LEN: usize = REF_PREFIX.len() + 2 * REF_LEN + REF_SUFFIX.len();
/// Hex digits of the token id: a prefix of the keyed hash, shown in listings and audit lines.
pub const TOKEN_ID_LEN: usize = 16;
/// Fewest hex digits `token inspect` and `token revoke` take as an id prefix.
pub const MIN_ID_PREFIX: usize = 6;

/// A reference token's secret part: 128 random bits. Wiped on drop; never printed.
#[derive(Clone, PartialEq, Eq)]
pub struct TokenRef(Zeroizing<[u8; REF_LEN]>);

/// A string that is not a reference token. Never quotes the input (it may be a credential
/// pasted in the wrong place).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("not a reference token: expected $SPIKE{{ref:<32 lowercase hex digits>}}")]
pub struct BadTokenRef;

impl TokenRef {
    /// A fresh random reference from the OS CSPRNG.
    pub fn generate() -> Result<Self, crate::crypto::CryptoError> {
        let mut b = Zeroizing::new([0u8; REF_LEN]);
        crate::crypto::fill_random(&mut b[..])?;
        Ok(Self(b))
    }

    /// The raw bits (what the keyed hash is computed over).
    pub fn expose_secret(&self) -> &[u8; REF_LEN] {
        &self.0
    }

    /// The token as agents hold it, `$SPIKE{ref:<hex>}`, in a buffer wiped on drop.
    pub fn to_token_string(&self) -> crate::secret::SecretString {
        let mut s = String::with_capacity(REF_PREFIX.len() + 2 * REF_LEN + 1);
        s.push_str(REF_PREFIX);
        s.push_str(&hex::encode(&self.0[..]));
        s.push_str(REF_SUFFIX);
        crate::secret::SecretString::new(s)
    }

    /// Parses `$SPIKE{ref:<32 lowercase hex>}` exactly (no whitespace, no upper case: the
    /// gateway looks for exactly this form, so Nexus accepts no other).
    pub fn parse(s: &str) -> Result<Self, BadTokenRef> {
        let hex_part = s
            .strip_prefix(REF_PREFIX)
            .and_then(|r| r.strip_suffix(REF_SUFFIX))
            .ok_or(BadTokenRef)?;
        if hex_part.len() != 2 * REF_LEN
            || !hex_part
                .bytes()
                .all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
        {
            return Err(BadTokenRef);
        }
        let mut b = Zeroizing::new([0u8; REF_LEN]);
        hex::decode_to_slice(hex_part, &mut b[..]).map_err(|_| BadTokenRef)?;
        Ok(Self(b))
    }
}

/// Domain label of the keyed hash a reference is stored under.
const HASH_LABEL: &[u8] = b"spike/v1/token-ref\0";

impl TokenRef {
    /// The keyed hash Nexus stores the token under: HMAC-SHA256 under the store's token-hash
    /// key ([`crate::crypto::KeyRing::token_hash_key`]) over a domain label and the bits.
    pub fn keyed_hash(&self, key: &[u8; crate::crypto::KEY_LEN]) -> [u8; 32] {
        use hmac::Mac;
        let mut m = crate::crypto::hmac_sha256(key);
        m.update(HASH_LABEL);
        m.update(&self.0[..]);
        m.finalize().into_bytes().into()
    }
}

impl fmt::Debug for TokenRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("TokenRef([redacted])")
    }
}

/// What a request does, as the gateway classifies it by its route's rules (method and path
/// prefix), since inference APIs are all `POST`: without a rule `GET`, `HEAD` and `OPTIONS`
/// are `read` and other methods `write`. A token allows exactly one action.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TokenAction {
    /// Requests that only read (chat completions on an inference route, for example).
    Read,
    /// Requests that change something upstream.
    Write,
    /// Administrative requests.
    Admin,
}

impl TokenAction {
    /// The name on the wire and the command line.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Read => "read",
            Self::Write => "write",
            Self::Admin => "admin",
        }
    }
}

impl fmt::Display for TokenAction {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for TokenAction {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "read" => Ok(Self::Read),
            "write" => Ok(Self::Write),
            "admin" => Ok(Self::Admin),
            _ => Err(format!("unknown action `{s}`: use read, write or admin")),
        }
    }
}

/// Where in a request the gateway found a token, and so where it may put the value: one named
/// header (by default `Authorization`), one named query parameter, or the body. Written
/// `header:NAME`, `query:NAME` or `body`; header names compare case-insensitively and are
/// kept in lower case.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum TokenLocation {
    /// A request header.
    Header(String),
    /// A query parameter.
    Query(String),
    /// The request body.
    Body,
}

impl TokenLocation {
    /// Where a token may be substituted when its binding names no location.
    pub fn default_header() -> Self {
        Self::Header("authorization".into())
    }
}

impl fmt::Display for TokenLocation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Header(n) => write!(f, "header:{n}"),
            Self::Query(n) => write!(f, "query:{n}"),
            Self::Body => f.write_str("body"),
        }
    }
}

/// Longest header or query-parameter name a location may carry.
const MAX_LOCATION_NAME: usize = 128;

impl FromStr for TokenLocation {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let usage = || format!("location `{s}`: write header:NAME, query:NAME or body");
        if s == "body" {
            return Ok(Self::Body);
        }
        let (kind, name) = s.split_once(':').ok_or_else(usage)?;
        let token_char = |b: u8| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b);
        if name.is_empty() || name.len() > MAX_LOCATION_NAME || !name.bytes().all(token_char) {
            return Err(format!(
                "location `{s}`: the name must be 1 to {MAX_LOCATION_NAME} characters of letters, digits and !#$%&'*+-.^_`|~"
            ));
        }
        match kind {
            "header" => Ok(Self::Header(name.to_ascii_lowercase())),
            "query" => Ok(Self::Query(name.to_owned())),
            _ => Err(usage()),
        }
    }
}

impl Serialize for TokenLocation {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for TokenLocation {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// A host a token may be sent to: `host` or `host:port`, a bare host meaning port 443. Names
/// are IDNA-normalized (to their ASCII `xn--` form, lower case, no trailing dot), so the
/// gateway's exact match on the host it connects to cannot be dodged by spelling.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Destination {
    host: String,
    port: u16,
}

/// Longest destination host name (DNS's limit).
const MAX_HOST_LEN: usize = 253;

/// Why a destination does not parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DestinationError {
    /// Empty, a URL, or otherwise not `host[:port]`.
    #[error(
        "destination `{0}`: write a host name or host:port, e.g. api.groq.com or api.groq.com:8443 (no scheme, path or user)"
    )]
    Syntax(String),
    /// The port is not 1 to 65535.
    #[error("destination `{0}`: the port must be 1 to 65535")]
    Port(String),
    /// The name is not a valid (IDNA) host name.
    #[error("destination `{0}`: not a valid host name")]
    Host(String),
}

impl Destination {
    /// Parses and normalizes `host[:port]`. IP literals are accepted (IPv6 in brackets).
    pub fn parse(s: &str) -> Result<Self, DestinationError> {
        let syntax = || DestinationError::Syntax(s.to_owned());
        if s.is_empty() || s.contains(['/', '@', '?', '#', ' ']) || s.contains("://") {
            return Err(syntax());
        }
        let (host, port) = if let Some(rest) = s.strip_prefix('[') {
            let (h, after) = rest.split_once(']').ok_or_else(syntax)?;
            let ip: std::net::Ipv6Addr = h
                .parse()
                .map_err(|_| DestinationError::Host(s.to_owned()))?;
            let port = match after {
                "" => None,
                p => Some(p.strip_prefix(':').ok_or_else(syntax)?),
            };
            (format!("[{ip}]"), port)
        } else {
            let (h, port) = match s.rsplit_once(':') {
                Some((h, p)) => (h, Some(p)),
                None => (s, None),
            };
            if h.contains(':') {
                // An IPv6 literal must be bracketed so its port is unambiguous.
                return Err(syntax());
            }
            (
                normalize_host(h).ok_or_else(|| DestinationError::Host(s.to_owned()))?,
                port,
            )
        };
        let port = match port {
            None => 443,
            Some(p) => match p.parse::<u16>() {
                Ok(n) if n > 0 && !p.starts_with('+') => n,
                _ => return Err(DestinationError::Port(s.to_owned())),
            },
        };
        Ok(Self { host, port })
    }

    /// The normalized host.
    pub fn host(&self) -> &str {
        &self.host
    }

    /// The port (443 when none was written).
    pub fn port(&self) -> u16 {
        self.port
    }
}

/// The IDNA ASCII form of a host name, lower case, without a trailing dot; `None` when it is
/// not a valid name.
fn normalize_host(h: &str) -> Option<String> {
    let h = h.strip_suffix('.').unwrap_or(h);
    if h.is_empty() || h.ends_with('.') {
        return None;
    }
    let ascii = idna::domain_to_ascii_strict(h).ok()?;
    let valid_label = |l: &str| {
        !l.is_empty()
            && l.len() <= 63
            && !l.starts_with('-')
            && !l.ends_with('-')
            && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
    };
    (ascii.len() <= MAX_HOST_LEN && ascii.split('.').all(valid_label)).then_some(ascii)
}

impl fmt::Display for Destination {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.host, self.port)
    }
}

impl FromStr for Destination {
    type Err = DestinationError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s)
    }
}

impl Serialize for Destination {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Destination {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn references_round_trip_and_other_spellings_are_refused() {
        let r = TokenRef::generate().unwrap();
        let s = r.to_token_string();
        assert!(s.expose_secret().starts_with("$SPIKE{ref:"));
        assert_eq!(s.expose_secret().len(), 11 + 32 + 1);
        assert_eq!(TokenRef::parse(s.expose_secret()).unwrap(), r);
        assert_eq!(format!("{r:?}"), "TokenRef([redacted])");
        let hex = &s.expose_secret()[11..43];
        for bad in [
            String::new(),
            hex.to_owned(),
            format!("$SPIKE{{ref:{}}}", hex.to_uppercase()),
            format!("$SPIKE{{ref:{hex} }}"),
            format!(" $SPIKE{{ref:{hex}}}"),
            format!("$SPIKE{{ref:{}}}", &hex[..31]),
            format!("$SPIKE{{ref:{hex}0}}"),
            format!("$SPIKE{{key:{hex}}}"),
        ] {
            assert_eq!(TokenRef::parse(&bad), Err(BadTokenRef), "{bad}");
        }
        // The error never quotes what it was given.
        assert!(!BadTokenRef.to_string().contains(hex));
    }

    #[test]
    fn destinations_normalize_so_spelling_cannot_widen_a_match() {
        let d = |s: &str| Destination::parse(s).map(|d| d.to_string());
        assert_eq!(d("api.groq.com").unwrap(), "api.groq.com:443");
        assert_eq!(d("API.Groq.COM.").unwrap(), "api.groq.com:443");
        assert_eq!(d("api.groq.com:8443").unwrap(), "api.groq.com:8443");
        assert_eq!(d("bücher.example").unwrap(), "xn--bcher-kva.example:443");
        assert_eq!(d("127.0.0.1:80").unwrap(), "127.0.0.1:80");
        assert_eq!(d("[::1]:8443").unwrap(), "[::1]:8443");
        for bad in [
            "",
            "https://api.groq.com",
            "api.groq.com/v1",
            "user@api.groq.com",
            "api..groq.com",
            "api.groq.com:0",
            "api.groq.com:99999",
            "api.groq.com:+1",
            "::1",
            "-bad.example",
            "a b.example",
        ] {
            assert!(d(bad).is_err(), "{bad} should be refused");
        }
    }

    #[test]
    fn locations_and_actions_parse_as_the_cli_writes_them() {
        let l = |s: &str| s.parse::<TokenLocation>();
        assert_eq!(
            l("header:Authorization").unwrap(),
            TokenLocation::default_header()
        );
        assert_eq!(l("query:api_key").unwrap().to_string(), "query:api_key");
        assert_eq!(l("body").unwrap(), TokenLocation::Body);
        for bad in ["", "header:", "cookie:x", "header:a b", "query"] {
            assert!(l(bad).is_err(), "{bad}");
        }
        assert_eq!("read".parse::<TokenAction>().unwrap(), TokenAction::Read);
        assert!("GET".parse::<TokenAction>().is_err());
    }
}
