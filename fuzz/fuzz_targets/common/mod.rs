//! Helpers shared by the fuzz targets: strings built from meaningful fragments (so the fuzzer
//! reaches valid inputs quickly), sample paths instantiated from a glob, and a serde round trip.
#![allow(dead_code)]

use arbitrary::{Result, Unstructured};
use serde::Serialize;
use serde::de::DeserializeOwned;

/// Segment fragments for paths, patterns and SPIFFE IDs: literal words, the path alphabet's
/// punctuation, wildcards, separators, and a few bytes outside the alphabet.
pub const PATH_PIECES: &[&str] = &[
    "a", "b", "db", "k8s", "ns", "team-a", "x", "*", "**", "/", "-", "_", ".", "..", "0", "Z",
    "spike", "web", "%", " ", "\u{e9}", "\\", "//", "*.", "a*", "*b",
];

/// A string of up to `max` fragments from `pieces`, or (one time in eight) raw text.
pub fn build(u: &mut Unstructured<'_>, pieces: &[&str], max: usize) -> Result<String> {
    if u.ratio(1, 8)? {
        return text(u, max * 4);
    }
    let n = u.int_in_range(0..=max)?;
    let mut s = String::new();
    for _ in 0..n {
        s.push_str(u.choose(pieces)?);
    }
    Ok(s)
}

/// Up to `max` bytes of fuzz data as text (invalid UTF-8 replaced).
pub fn text(u: &mut Unstructured<'_>, max: usize) -> Result<String> {
    let len = u.int_in_range(0..=max)?;
    let b = u.bytes(len.min(u.len()))?;
    Ok(String::from_utf8_lossy(b).into_owned())
}

/// A segment of the path alphabet `[A-Za-z0-9._-]`, 0 to `max` characters.
pub fn segment_chars(u: &mut Unstructured<'_>, max: usize) -> Result<String> {
    const ALPHABET: &[u8] = b"abcxyzAZ0129._-";
    let n = u.int_in_range(0..=max)?;
    (0..n)
        .map(|_| u.choose(ALPHABET).map(|&b| char::from(b)))
        .collect()
}

/// A sequence of segments the glob `glob` (`/`-separated, `*` and `**` as in
/// `spike_core::pattern`) should match, with the fuzzer choosing what each wildcard stands
/// for. Segments it makes may be invalid (an empty `*`, a `.`); callers parse the result.
pub fn instantiate(u: &mut Unstructured<'_>, glob: &str) -> Result<Vec<String>> {
    let mut out = Vec::new();
    for seg in glob.split('/') {
        if seg == "**" {
            for _ in 0..u.int_in_range(0..=2)? {
                let mut s = segment_chars(u, 3)?;
                if s.is_empty() {
                    s.push('q');
                }
                out.push(s);
            }
        } else {
            let mut s = String::new();
            for (i, part) in seg.split('*').enumerate() {
                if i > 0 {
                    s.push_str(&segment_chars(u, 3)?);
                }
                s.push_str(part);
            }
            out.push(s);
        }
    }
    Ok(out)
}

/// Serializes `value` to JSON, reads it back and serializes again: both forms must agree.
pub fn json_round_trip<T: Serialize + DeserializeOwned>(value: &T) -> T {
    let first = serde_json::to_string(value).expect("an accepted value serializes");
    let back: T =
        serde_json::from_str(&first).unwrap_or_else(|e| panic!("{first} does not read back: {e}"));
    let second = serde_json::to_string(&back).expect("an accepted value serializes");
    assert_eq!(first, second, "the JSON form is not stable");
    back
}
