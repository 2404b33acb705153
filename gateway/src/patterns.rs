//! The byte patterns a value is searched for: its raw bytes, its hex digits, and the stable
//! interior of its base64 encodings.
//!
//! # Base64 alignment
//!
//! A value of `n` bytes inside a larger base64-encoded string starts at some byte offset `o`;
//! its bits then start at bit `8·o` of the encoded data, and each base64 character carries six
//! bits. Only the characters whose six bits all belong to the value are the same wherever the
//! value occurs with the same `o mod 3`; that run is the *interior* for that alignment, and
//! it is what is matched. For alignment `a`, with the value's bits at `[8a, 8a + 8n)`:
//!
//! - interior characters: from `⌈8a / 6⌉` to `⌊(8a + 8n) / 6⌋` (exclusive);
//! - a *boundary* character before it when `a ≠ 0` (it carries 4 bits of the value for
//!   `a = 1`, 2 bits for `a = 2`) and one after it when `(a + n) mod 3 ≠ 0` (2 or 4 bits).
//!
//! The boundary characters depend on the neighbouring bytes, so they cannot be part of a
//! pattern; the scanner widens a match over them when they are there (see
//! [`crate::scan`]), so no character that carries any bit of the value survives. Padding
//! (`=`) carries no bits and is left alone. Padded and unpadded encodings have the same
//! interior, so both are found.
//!
//! For `n ≥ 8` the shortest interior is 10 characters (60 bits).
//!
//! # Hex
//!
//! Hex is byte-aligned, so one lowercase pattern per value suffices; it is matched by a
//! case-folding automaton, which finds upper, lower and mixed case alike.

use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD_NO_PAD, URL_SAFE_NO_PAD};
use zeroize::Zeroizing;

/// How a value is written in the text that was matched, before any escaping.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Encoding {
    /// The value's own bytes.
    Raw,
    /// Standard base64 (`+` and `/`), at any byte alignment, padded or not.
    Base64,
    /// URL-safe base64 (`-` and `_`), at any byte alignment, padded or not.
    Base64Url,
    /// Hex digits, in any mix of case.
    Hex,
}

/// Which base64 alphabet a pattern is written in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Alphabet {
    Standard,
    UrlSafe,
}

/// Whether `b` can be a boundary character: a (non-padding) character of either base64
/// alphabet. Both count, because an interior without `+ / - _` is one pattern for both
/// alphabets; at worst one neighbouring `-`, `_`, `+` or `/` that is not base64 is replaced
/// along with the value.
pub(crate) fn is_base64_char(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'+' | b'/' | b'-' | b'_')
}

/// What a match of a pattern means and whether it must be widened over boundary characters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Form {
    pub(crate) encoding: Encoding,
    /// For base64: whether a boundary character precedes / follows the interior.
    pub(crate) boundary: Option<Boundary>,
}

/// The boundary characters around a base64 interior.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Boundary {
    pub(crate) before: bool,
    pub(crate) after: bool,
}

/// Which automaton a pattern belongs in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Case {
    /// Matched byte for byte.
    Exact,
    /// Matched with ASCII case folded (hex).
    Folded,
}

/// One pattern of one value.
pub(crate) struct Pattern {
    pub(crate) bytes: Zeroizing<Vec<u8>>,
    pub(crate) form: Form,
    pub(crate) case: Case,
}

/// Every pattern `value` is searched for. Identical patterns (a base64 interior without `+`
/// or `/` is the same in both alphabets) are kept once, under the standard alphabet.
pub(crate) fn expand(value: &[u8]) -> Vec<Pattern> {
    let mut patterns = vec![
        Pattern {
            bytes: Zeroizing::new(value.to_vec()),
            form: Form {
                encoding: Encoding::Raw,
                boundary: None,
            },
            case: Case::Exact,
        },
        Pattern {
            bytes: Zeroizing::new(hex::encode(value).into_bytes()),
            form: Form {
                encoding: Encoding::Hex,
                boundary: None,
            },
            case: Case::Folded,
        },
    ];
    for (alphabet, encoding) in [
        (Alphabet::Standard, Encoding::Base64),
        (Alphabet::UrlSafe, Encoding::Base64Url),
    ] {
        for alignment in 0..3 {
            let (bytes, boundary) = base64_interior(value, alignment, alphabet);
            let duplicate = patterns
                .iter()
                .any(|p| p.case == Case::Exact && p.bytes == bytes);
            if !duplicate && !bytes.is_empty() {
                patterns.push(Pattern {
                    bytes,
                    form: Form {
                        encoding,
                        boundary: Some(boundary),
                    },
                    case: Case::Exact,
                });
            }
        }
    }
    patterns
}

/// The interior characters of `value`'s base64 encoding when it starts at a byte offset
/// `≡ alignment (mod 3)` in the encoded data; see the module docs.
fn base64_interior(
    value: &[u8],
    alignment: usize,
    alphabet: Alphabet,
) -> (Zeroizing<Vec<u8>>, Boundary) {
    // Any bytes may stand before the value: the interior does not depend on them.
    let mut shifted = Zeroizing::new(vec![0u8; alignment]);
    shifted.extend_from_slice(value);
    let engine = match alphabet {
        Alphabet::Standard => &STANDARD_NO_PAD,
        Alphabet::UrlSafe => &URL_SAFE_NO_PAD,
    };
    let encoded = Zeroizing::new(engine.encode(&shifted[..]).into_bytes());
    let first_bit = 8 * alignment;
    let end_bit = 8 * (alignment + value.len());
    let first = first_bit.div_ceil(6);
    let end = end_bit / 6;
    let interior = Zeroizing::new(encoded[first..end].to_vec());
    let boundary = Boundary {
        before: !first_bit.is_multiple_of(6),
        after: !end_bit.is_multiple_of(6),
    };
    (interior, boundary)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn interiors(value: &[u8], alphabet: Alphabet) -> Vec<(String, bool, bool)> {
        (0..3)
            .map(|a| {
                let (bytes, b) = base64_interior(value, a, alphabet);
                (
                    String::from_utf8(bytes.to_vec()).unwrap(),
                    b.before,
                    b.after,
                )
            })
            .collect()
    }

    #[test]
    fn interiors_are_the_stable_characters_at_each_alignment() {
        // "secret-value" is 12 bytes (a multiple of 3).
        let value = b"secret-value";
        let found = interiors(value, Alphabet::Standard);
        // Alignment 0: the whole unpadded encoding, no boundaries.
        assert_eq!(found[0], (STANDARD_NO_PAD.encode(value), false, false));
        // Alignments 1 and 2: each interior must occur inside the encoding of the value behind
        // any 1 or 2 bytes, with one boundary character on each side.
        for (a, (interior, before, after)) in found.iter().enumerate().skip(1) {
            assert!(*before && *after);
            for prefix in [[0u8, 0], [0xff, 0x13], [b'x', b'y']] {
                let mut data = prefix[..a].to_vec();
                data.extend_from_slice(value);
                data.extend_from_slice(b"!?");
                let encoded = STANDARD_NO_PAD.encode(&data);
                assert_eq!(encoded.find(interior.as_str()), Some((8 * a).div_ceil(6)));
            }
        }
    }

    #[test]
    fn value_not_a_multiple_of_three_has_a_trailing_boundary_at_alignment_zero() {
        let found = interiors(b"12345678", Alphabet::UrlSafe);
        // 64 bits: 10 full characters, 4 bits left over.
        assert_eq!(found[0].0.len(), 10);
        assert!(!found[0].1 && found[0].2);
        // Every interior is at least 10 characters for an 8-byte value.
        assert!(found.iter().all(|(s, _, _)| s.len() >= 10));
    }

    #[test]
    fn expansion_has_raw_hex_and_deduplicated_base64() {
        let patterns = expand(b"aaaaaaaaa");
        assert_eq!(patterns[0].bytes.as_slice(), b"aaaaaaaaa");
        assert_eq!(patterns[1].bytes.as_slice(), b"616161616161616161");
        assert_eq!(patterns[1].case, Case::Folded);
        // "aaa…" encodes without '+' or '/', so the URL-safe interiors are duplicates.
        let b64: Vec<_> = patterns
            .iter()
            .filter(|p| p.form.encoding == Encoding::Base64Url)
            .collect();
        assert!(b64.is_empty());
        assert_eq!(patterns.len(), 5);
    }

    #[test]
    fn boundary_characters_are_those_of_either_alphabet_without_padding() {
        assert!(b"aZ09+/-_".iter().all(|&b| is_base64_char(b)));
        assert!(b"=.~ \\\"%".iter().all(|&b| !is_base64_char(b)));
    }
}
