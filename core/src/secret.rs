//! Redacting, zeroizing containers for secret values.
//!
//! [`SecretBytes`], [`SecretString`] and [`SecretMap`] hold secret material in memory that is
//! wiped when the value is dropped, and print as `[redacted]` through `Debug` and `Display`, so
//! a stray `{:?}` in a log line or a panic message cannot leak a value.
//!
//! # The one path that exposes a value
//!
//! Code reads a value only through an explicit accessor (`expose_secret()`, or
//! [`SecretMap::iter`] followed by `expose_secret()`), which makes every read easy to find in
//! review. The types also implement serde's `Serialize` and `Deserialize` **with the real
//! value**: the API must return secrets to authorized callers, and that is the only reason.
//! Serializing one of these types is therefore a deliberate disclosure; never serialize them
//! into logs, metrics, errors or configuration dumps.
//!
//! Zeroization is best effort: intermediate buffers owned by other libraries (a JSON parser's
//! scratch space, a socket buffer) are outside these types' reach.
#![warn(missing_docs)]

use std::collections::BTreeMap;
use std::collections::btree_map;
use std::fmt;
use std::io;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use serde::de::{self, Deserializer, MapAccess, Visitor};
use serde::ser::{SerializeMap, Serializer};
use serde::{Deserialize, Serialize};
use subtle::{Choice, ConstantTimeEq};
use zeroize::{Zeroize, Zeroizing};

/// What `Debug` and `Display` print in place of a secret value.
pub const REDACTED: &str = "[redacted]";

/// Secret bytes, wiped on drop, printed as `[redacted]`.
///
/// Serializes as a standard base64 string (with padding), the only path that exposes the value.
/// Equality is constant-time in the content (the length is not treated as secret).
#[derive(Clone, Default)]
pub struct SecretBytes(Zeroizing<Vec<u8>>);

impl SecretBytes {
    /// Takes ownership of `bytes`; they are wiped when the returned value is dropped.
    pub fn new(bytes: Vec<u8>) -> Self {
        Self(Zeroizing::new(bytes))
    }

    /// Copies `bytes` into a new secret. The caller remains responsible for its own copy.
    pub fn copy_from(bytes: &[u8]) -> Self {
        Self::new(bytes.to_vec())
    }

    /// The secret bytes. Every call site is a place where the value leaves this wrapper.
    pub fn expose_secret(&self) -> &[u8] {
        &self.0
    }

    /// Number of bytes (not secret).
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Whether the secret is empty.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl From<Vec<u8>> for SecretBytes {
    fn from(bytes: Vec<u8>) -> Self {
        Self::new(bytes)
    }
}

impl ConstantTimeEq for SecretBytes {
    fn ct_eq(&self, other: &Self) -> Choice {
        // `subtle` compares slices of different lengths as unequal without looking at the
        // content; lengths are not secret.
        self.expose_secret().ct_eq(other.expose_secret())
    }
}

impl PartialEq for SecretBytes {
    fn eq(&self, other: &Self) -> bool {
        self.ct_eq(other).into()
    }
}

impl Eq for SecretBytes {}

impl fmt::Debug for SecretBytes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(REDACTED)
    }
}

impl fmt::Display for SecretBytes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(REDACTED)
    }
}

/// Serializes the real value (standard base64). See the module docs.
impl Serialize for SecretBytes {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let encoded = Zeroizing::new(BASE64.encode(self.expose_secret()));
        serializer.serialize_str(&encoded)
    }
}

impl<'de> Deserialize<'de> for SecretBytes {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let encoded = Zeroizing::new(String::deserialize(deserializer)?);
        match BASE64.decode(encoded.as_bytes()) {
            Ok(bytes) => Ok(Self::new(bytes)),
            // Never echo the input: it is the secret.
            Err(_) => Err(de::Error::custom("secret bytes are not valid base64")),
        }
    }
}

/// A secret UTF-8 string, wiped on drop, printed as `[redacted]`.
///
/// Serializes as a plain string, the only path that exposes the value. Equality is
/// constant-time in the content (the length is not treated as secret).
#[derive(Clone, Default)]
pub struct SecretString(Zeroizing<String>);

impl SecretString {
    /// Takes ownership of `value`; it is wiped when the returned value is dropped.
    pub fn new(value: String) -> Self {
        Self(Zeroizing::new(value))
    }

    /// The secret text. Every call site is a place where the value leaves this wrapper.
    pub fn expose_secret(&self) -> &str {
        &self.0
    }

    /// Length in bytes (not secret).
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Whether the secret is the empty string.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl From<String> for SecretString {
    fn from(value: String) -> Self {
        Self::new(value)
    }
}

impl From<&str> for SecretString {
    fn from(value: &str) -> Self {
        Self::new(value.to_owned())
    }
}

impl ConstantTimeEq for SecretString {
    fn ct_eq(&self, other: &Self) -> Choice {
        self.expose_secret()
            .as_bytes()
            .ct_eq(other.expose_secret().as_bytes())
    }
}

impl PartialEq for SecretString {
    fn eq(&self, other: &Self) -> bool {
        self.ct_eq(other).into()
    }
}

impl Eq for SecretString {}

impl fmt::Debug for SecretString {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(REDACTED)
    }
}

impl fmt::Display for SecretString {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(REDACTED)
    }
}

/// Serializes the real value. See the module docs.
impl Serialize for SecretString {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.expose_secret())
    }
}

impl<'de> Deserialize<'de> for SecretString {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        String::deserialize(deserializer).map(Self::new)
    }
}

/// The value of a secret: string keys mapped to secret strings, ordered by key.
///
/// Key names are not secret (they appear in `Debug` output, in listings and in audit lines);
/// values are. `Debug` shows the key names with every value redacted; `Display` prints
/// `[redacted]`. Serializes as a JSON-style map of strings, the only path that exposes the
/// values. Equality compares the key sets, then every value in constant time.
#[derive(Clone, Default)]
pub struct SecretMap(BTreeMap<String, SecretString>);

impl ConstantTimeEq for SecretMap {
    fn ct_eq(&self, other: &Self) -> Choice {
        // Key names are not secret, so a differing key set may return early; values are
        // all compared, without stopping at the first difference.
        if self.0.len() != other.0.len() || !self.0.keys().eq(other.0.keys()) {
            return Choice::from(0);
        }
        self.0
            .values()
            .zip(other.0.values())
            .fold(Choice::from(1), |acc, (a, b)| acc & a.ct_eq(b))
    }
}

impl PartialEq for SecretMap {
    fn eq(&self, other: &Self) -> bool {
        self.ct_eq(other).into()
    }
}

impl Eq for SecretMap {}

impl SecretMap {
    /// An empty map.
    pub fn new() -> Self {
        Self::default()
    }

    /// Sets `key` to `value`, returning the previous value for `key`, if any.
    pub fn insert(
        &mut self,
        key: impl Into<String>,
        value: impl Into<SecretString>,
    ) -> Option<SecretString> {
        self.0.insert(key.into(), value.into())
    }

    /// The value for `key`.
    pub fn get(&self, key: &str) -> Option<&SecretString> {
        self.0.get(key)
    }

    /// Removes `key`, returning its value.
    pub fn remove(&mut self, key: &str) -> Option<SecretString> {
        self.0.remove(key)
    }

    /// Whether `key` is present.
    pub fn contains_key(&self, key: &str) -> bool {
        self.0.contains_key(key)
    }

    /// Number of keys.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Whether the map has no keys.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The key names in order (not secret).
    pub fn keys(&self) -> impl ExactSizeIterator<Item = &str> + '_ {
        self.0.keys().map(String::as_str)
    }

    /// Key/value pairs in key order. Values stay wrapped until `expose_secret()`.
    pub fn iter(&self) -> impl ExactSizeIterator<Item = (&str, &SecretString)> + '_ {
        self.0.iter().map(|(k, v)| (k.as_str(), v))
    }

    /// The underlying map (values still wrapped).
    pub fn expose(&self) -> &BTreeMap<String, SecretString> {
        &self.0
    }

    /// Canonical encoding for sealing: compact JSON with keys in byte order, in a buffer that
    /// is wiped on drop.
    ///
    /// The buffer is sized exactly before writing, so no partially written copy is left behind
    /// by a reallocation.
    pub fn to_json_bytes(&self) -> SecretBytes {
        let mut counter = ByteCounter(0);
        // Writing into a counter cannot fail: the map serializer never errors on strings and
        // the counter's writer is infallible.
        if serde_json::to_writer(&mut counter, self).is_err() {
            return SecretBytes::default();
        }
        let mut buf = Zeroizing::new(Vec::with_capacity(counter.0));
        if serde_json::to_writer(&mut *buf, self).is_err() {
            return SecretBytes::default();
        }
        SecretBytes(buf)
    }

    /// Decodes [`SecretMap::to_json_bytes`] output (any JSON object of strings).
    ///
    /// The error never quotes the input.
    pub fn from_json_bytes(bytes: &[u8]) -> Result<Self, SecretMapDecodeError> {
        serde_json::from_slice(bytes).map_err(|_| SecretMapDecodeError)
    }
}

/// The bytes given to [`SecretMap::from_json_bytes`] are not a JSON object of strings.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("secret value is not a JSON object of strings")]
pub struct SecretMapDecodeError;

/// Counts bytes written, so an exact-size buffer can be allocated.
struct ByteCounter(usize);

impl io::Write for ByteCounter {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0 += buf.len();
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl<K: Into<String>, V: Into<SecretString>> FromIterator<(K, V)> for SecretMap {
    fn from_iter<I: IntoIterator<Item = (K, V)>>(iter: I) -> Self {
        Self(
            iter.into_iter()
                .map(|(k, v)| (k.into(), v.into()))
                .collect(),
        )
    }
}

impl<'a> IntoIterator for &'a SecretMap {
    type Item = (&'a String, &'a SecretString);
    type IntoIter = btree_map::Iter<'a, String, SecretString>;

    fn into_iter(self) -> Self::IntoIter {
        self.0.iter()
    }
}

impl fmt::Debug for SecretMap {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Key names only; `SecretString`'s Debug prints the redaction marker.
        f.debug_map().entries(self.0.iter()).finish()
    }
}

impl fmt::Display for SecretMap {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(REDACTED)
    }
}

/// Serializes the real values. See the module docs.
impl Serialize for SecretMap {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut map = serializer.serialize_map(Some(self.0.len()))?;
        for (k, v) in &self.0 {
            map.serialize_entry(k, v)?;
        }
        map.end()
    }
}

impl<'de> Deserialize<'de> for SecretMap {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_map(SecretMapVisitor)
    }
}

struct SecretMapVisitor;

impl<'de> Visitor<'de> for SecretMapVisitor {
    type Value = SecretMap;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a map of string keys to string values")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut access: A) -> Result<SecretMap, A::Error> {
        let mut map = BTreeMap::new();
        while let Some((key, value)) = access.next_entry::<String, SecretString>()? {
            if map.contains_key(&key) {
                // Key names are not secret; naming the duplicate helps the caller fix it.
                return Err(de::Error::custom(format_args!("duplicate key {key:?}")));
            }
            map.insert(key, value);
        }
        Ok(SecretMap(map))
    }
}

impl Zeroize for SecretMap {
    /// Wipes every value and empties the map.
    fn zeroize(&mut self) {
        // Each `SecretString` wipes itself on drop.
        self.0.clear();
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    const SECRET: &str = "hunter2-s3cr3t";

    #[test]
    fn debug_and_display_redact_every_type() {
        let bytes = SecretBytes::copy_from(SECRET.as_bytes());
        let string = SecretString::from(SECRET);
        let mut map = SecretMap::new();
        map.insert("password", SECRET);
        map.insert("user", "admin-user-value");

        let outputs = [
            format!("{bytes:?}"),
            format!("{bytes}"),
            format!("{bytes:#?}"),
            format!("{string:?}"),
            format!("{string}"),
            format!("{string:#?}"),
            format!("{map:?}"),
            format!("{map}"),
            format!("{map:#?}"),
        ];
        for out in &outputs {
            assert!(!out.contains(SECRET), "leaked in {out}");
            assert!(!out.contains("admin-user-value"), "leaked in {out}");
            assert!(!out.contains("hunter2"), "leaked in {out}");
            assert!(out.contains(REDACTED), "no marker in {out}");
        }
        // The byte form must not show up as a number list either.
        assert!(!format!("{bytes:?}").contains("104"));
        // Key names are allowed in a map's Debug.
        assert!(format!("{map:?}").contains("password"));
        assert_eq!(
            format!("{map:?}"),
            r#"{"password": [redacted], "user": [redacted]}"#
        );
    }

    #[test]
    fn expose_returns_the_value() {
        assert_eq!(SecretString::from(SECRET).expose_secret(), SECRET);
        assert_eq!(
            SecretBytes::copy_from(b"\x00\x01").expose_secret(),
            &[0u8, 1][..]
        );
        let map: SecretMap = [("a", "1"), ("b", "2")].into_iter().collect();
        assert_eq!(map.get("b").map(SecretString::expose_secret), Some("2"));
        assert_eq!(map.keys().collect::<Vec<_>>(), ["a", "b"]);
    }

    #[test]
    fn equality_compares_content() {
        assert_eq!(SecretString::from("x"), SecretString::from("x"));
        assert_ne!(SecretString::from("x"), SecretString::from("y"));
        assert_ne!(SecretString::from("x"), SecretString::from("xx"));
        assert_eq!(SecretBytes::copy_from(b"ab"), SecretBytes::copy_from(b"ab"));
        assert_ne!(SecretBytes::copy_from(b"ab"), SecretBytes::copy_from(b"ac"));

        let a: SecretMap = [("k", "v"), ("l", "w")].into_iter().collect();
        let same: SecretMap = [("l", "w"), ("k", "v")].into_iter().collect();
        let other_value: SecretMap = [("k", "v"), ("l", "x")].into_iter().collect();
        let other_key: SecretMap = [("k", "v"), ("m", "w")].into_iter().collect();
        assert_eq!(a, same);
        assert_ne!(a, other_value);
        assert_ne!(a, other_key);
    }

    #[test]
    fn serde_round_trips_the_real_value() {
        let map: SecretMap = [("user", "alice"), ("pass", "p\"w\\d\u{e9}")]
            .into_iter()
            .collect();
        let json = serde_json::to_string(&map).unwrap();
        assert_eq!(json, r#"{"pass":"p\"w\\dé","user":"alice"}"#);
        let back: SecretMap = serde_json::from_str(&json).unwrap();
        assert_eq!(back, map);

        let bytes = SecretBytes::copy_from(&[0, 255, 7]);
        let json = serde_json::to_string(&bytes).unwrap();
        assert_eq!(json, "\"AP8H\"");
        assert_eq!(serde_json::from_str::<SecretBytes>(&json).unwrap(), bytes);
    }

    #[test]
    fn deserialize_errors_do_not_quote_values() {
        let err = serde_json::from_str::<SecretBytes>("\"not base64 s3cr3t!\"").unwrap_err();
        assert!(!err.to_string().contains("s3cr3t"), "{err}");

        let err = serde_json::from_str::<SecretMap>(r#"{"a":"s3cr3t","a":"x"}"#).unwrap_err();
        assert!(err.to_string().contains("duplicate key \"a\""), "{err}");
        assert!(!err.to_string().contains("s3cr3t"), "{err}");

        assert!(serde_json::from_str::<SecretMap>(r#"{"a":1}"#).is_err());
        assert!(serde_json::from_str::<SecretMap>(r#"["a"]"#).is_err());
    }

    #[test]
    fn json_bytes_are_canonical_and_round_trip() {
        let map: SecretMap = [("b", "2"), ("a", "1")].into_iter().collect();
        let bytes = map.to_json_bytes();
        assert_eq!(bytes.expose_secret(), br#"{"a":"1","b":"2"}"#);
        assert_eq!(
            SecretMap::from_json_bytes(bytes.expose_secret()).unwrap(),
            map
        );

        let empty = SecretMap::new().to_json_bytes();
        assert_eq!(empty.expose_secret(), b"{}");

        let err = SecretMap::from_json_bytes(b"{\"a\": s3cr3t").unwrap_err();
        assert!(!err.to_string().contains("s3cr3t"));
    }

    #[test]
    fn zeroize_empties_map() {
        let mut map: SecretMap = [("k", "v")].into_iter().collect();
        map.zeroize();
        assert!(map.is_empty());
    }
}
