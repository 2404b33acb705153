//! Property tests: random values, random encodings and escapings of each occurrence, random
//! surrounding text and random chunking.
//!
//! The oracle is written independently of the crate: one-shot decoders for each escaping and
//! a base64 check that decodes every run of base64 characters from each of its first four
//! offsets, so it finds a value at any alignment without knowing how the scrubber looks for
//! one.
#![allow(clippy::unwrap_used)] // Strategies and oracles panic on a broken fixture.

use std::sync::Arc;

use base64::Engine as _;
use base64::engine::general_purpose::{
    GeneralPurpose, STANDARD, STANDARD_NO_PAD, URL_SAFE, URL_SAFE_NO_PAD,
};
use proptest::prelude::*;
use spike_gateway::{ScrubSet, Scrubber, find_known_value, scrub};

// ---- the oracle ------------------------------------------------------------------------------

fn hex_value(b: u8) -> Option<u32> {
    char::from(b).to_digit(16)
}

fn percent_decode(s: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(s.len());
    let mut i = 0;
    while i < s.len() {
        if s[i] == b'%'
            && let (Some(h), Some(l)) = (
                s.get(i + 1).copied().and_then(hex_value),
                s.get(i + 2).copied().and_then(hex_value),
            )
        {
            out.push((h * 16 + l) as u8);
            i += 3;
        } else {
            out.push(s[i]);
            i += 1;
        }
    }
    out
}

/// `\uXXXX` at `s[i..]`.
fn json_unit(s: &[u8], i: usize) -> Option<u32> {
    if s.get(i) != Some(&b'\\') || s.get(i + 1) != Some(&b'u') {
        return None;
    }
    let digits = s.get(i + 2..i + 6)?;
    digits
        .iter()
        .try_fold(0u32, |acc, &b| Some(acc * 16 + hex_value(b)?))
}

fn json_decode(s: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(s.len());
    let mut i = 0;
    while i < s.len() {
        if s[i] != b'\\' || i + 1 == s.len() {
            out.push(s[i]);
            i += 1;
            continue;
        }
        let simple = match s[i + 1] {
            b'"' => Some(b'"'),
            b'\\' => Some(b'\\'),
            b'/' => Some(b'/'),
            b'b' => Some(8),
            b'f' => Some(12),
            b'n' => Some(b'\n'),
            b'r' => Some(b'\r'),
            b't' => Some(b'\t'),
            _ => None,
        };
        if let Some(b) = simple {
            out.push(b);
            i += 2;
            continue;
        }
        let decoded = json_unit(s, i).and_then(|unit| match unit {
            0xD800..=0xDBFF => {
                let low = json_unit(s, i + 6).filter(|l| (0xDC00..=0xDFFF).contains(l))?;
                char::from_u32(0x10000 + ((unit - 0xD800) << 10) + (low - 0xDC00)).map(|c| (c, 12))
            }
            _ => char::from_u32(unit).map(|c| (c, 6)),
        });
        i += push_decoded(&mut out, decoded, s[i]);
    }
    out
}

/// Appends what an escape at the current position decoded to, or else the byte there, and
/// says how far to move on.
fn push_decoded(out: &mut Vec<u8>, decoded: Option<(char, usize)>, byte: u8) -> usize {
    match decoded {
        Some((c, len)) => {
            out.extend_from_slice(c.encode_utf8(&mut [0; 4]).as_bytes());
            len
        }
        None => {
            out.push(byte);
            1
        }
    }
}

fn html_decode(s: &[u8]) -> Vec<u8> {
    const NAMED: [(&str, char); 8] = [
        ("amp", '&'),
        ("lt", '<'),
        ("gt", '>'),
        ("quot", '"'),
        ("apos", '\''),
        ("sol", '/'),
        ("plus", '+'),
        ("equals", '='),
    ];
    let mut out = Vec::with_capacity(s.len());
    let mut i = 0;
    while i < s.len() {
        let reference = (s[i] == b'&')
            .then(|| s[i + 1..].iter().take(11).position(|&b| b == b';'))
            .flatten()
            .and_then(|semi| {
                let name = std::str::from_utf8(&s[i + 1..i + 1 + semi]).ok()?;
                // Digits only: `from_str_radix` and `parse` would also take a sign.
                let c = if let Some(hex) = name.strip_prefix("#x").or(name.strip_prefix("#X")) {
                    hex.bytes().all(|b| b.is_ascii_hexdigit()).then_some(())?;
                    char::from_u32(u32::from_str_radix(hex, 16).ok()?)?
                } else if let Some(dec) = name.strip_prefix('#') {
                    dec.bytes().all(|b| b.is_ascii_digit()).then_some(())?;
                    char::from_u32(dec.parse().ok()?)?
                } else {
                    NAMED.iter().find(|(n, _)| *n == name)?.1
                };
                Some((c, semi + 2))
            });
        i += push_decoded(&mut out, reference, s[i]);
    }
    out
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

/// Whether `text` holds `value` raw, as hex in any case, or in base64 of either alphabet at
/// any alignment.
fn holds_value(text: &[u8], value: &[u8]) -> bool {
    if contains(text, value) || contains(&text.to_ascii_lowercase(), hex::encode(value).as_bytes())
    {
        return true;
    }
    for (engine, extra) in [(&STANDARD_NO_PAD, b"+/"), (&URL_SAFE_NO_PAD, b"-_")] {
        let is_char = |b: &u8| b.is_ascii_alphanumeric() || extra.contains(b);
        for run in text.split(|b| !is_char(b)) {
            for offset in 0..4.min(run.len()) {
                let body = &run[offset..];
                let body = &body[..body.len() / 4 * 4];
                if let Ok(decoded) = engine.decode(body)
                    && contains(&decoded, value)
                {
                    return true;
                }
            }
        }
    }
    false
}

/// Whether `text`, in any of the escapings decoded, holds `value` in any encoding.
fn leaks(text: &[u8], value: &[u8]) -> bool {
    [
        text.to_vec(),
        percent_decode(text),
        json_decode(text),
        html_decode(text),
    ]
    .iter()
    .any(|view| holds_value(view, value))
}

// ---- the generator ---------------------------------------------------------------------------

/// Random bits, consumed cyclically, that decide each per-character choice.
struct Bits<'a> {
    bits: &'a [bool],
    next: usize,
}

impl Bits<'_> {
    fn bit(&mut self) -> bool {
        let b = self.bits[self.next % self.bits.len()];
        self.next += 1;
        b
    }
}

#[derive(Debug, Clone)]
enum Form {
    Raw,
    Base64 {
        url_safe: bool,
        padded: bool,
        before: Vec<u8>,
        after: Vec<u8>,
    },
    Hex,
}

#[derive(Debug, Clone, Copy)]
enum Escaping {
    None,
    Percent,
    Json,
    Html,
}

#[derive(Debug, Clone)]
struct Occurrence {
    value: usize,
    form: Form,
    escaping: Escaping,
    bits: Vec<bool>,
}

fn encode_form(value: &[u8], form: &Form, bits: &mut Bits<'_>) -> Vec<u8> {
    match form {
        Form::Raw => value.to_vec(),
        Form::Hex => hex::encode(value)
            .bytes()
            .map(|b| {
                if bits.bit() {
                    b.to_ascii_uppercase()
                } else {
                    b
                }
            })
            .collect(),
        Form::Base64 {
            url_safe,
            padded,
            before,
            after,
        } => {
            let engine: &GeneralPurpose = match (url_safe, padded) {
                (false, true) => &STANDARD,
                (false, false) => &STANDARD_NO_PAD,
                (true, true) => &URL_SAFE,
                (true, false) => &URL_SAFE_NO_PAD,
            };
            engine
                .encode([before.as_slice(), value, after].concat())
                .into_bytes()
        }
    }
}

fn hex_digits(n: u32, width: usize, upper: bool) -> String {
    if upper {
        format!("{n:0width$X}")
    } else {
        format!("{n:0width$x}")
    }
}

/// Escapes `text`: characters that must be escaped always are, any other one when the next
/// bit says so. Non-UTF-8 text is escaped byte by byte (ASCII only for JSON and HTML).
fn escape(text: &[u8], escaping: Escaping, bits: &mut Bits<'_>) -> Vec<u8> {
    let mut out = Vec::new();
    match escaping {
        Escaping::None => out.extend_from_slice(text),
        Escaping::Percent => {
            for &b in text {
                if b == b'%' || bits.bit() {
                    out.extend_from_slice(
                        format!("%{}", hex_digits(b.into(), 2, bits.bit())).as_bytes(),
                    );
                } else {
                    out.push(b);
                }
            }
        }
        Escaping::Json | Escaping::Html => {
            let chars: Vec<(u32, Vec<u8>)> = match std::str::from_utf8(text) {
                Ok(s) => s
                    .chars()
                    .map(|c| (c as u32, c.to_string().into_bytes()))
                    .collect(),
                Err(_) => text.iter().map(|&b| (u32::from(b), vec![b])).collect(),
            };
            let utf8 = std::str::from_utf8(text).is_ok();
            for (cp, literal) in chars {
                let escapable = utf8 || cp < 0x80;
                let escaped = if let Escaping::Json = escaping {
                    json_escape(cp, escapable, bits)
                } else {
                    html_escape(cp, escapable, bits)
                };
                out.extend_from_slice(escaped.as_ref().map_or(&literal[..], |e| e.as_bytes()));
            }
        }
    }
    out
}

fn json_escape(cp: u32, escapable: bool, bits: &mut Bits<'_>) -> Option<String> {
    let must = cp == u32::from(b'"') || cp == u32::from(b'\\') || cp < 0x20;
    if !escapable || !(must || bits.bit()) {
        return None;
    }
    let short = match cp {
        0x22 => Some("\\\""),
        0x5C => Some("\\\\"),
        0x2F => Some("\\/"),
        0x0A => Some("\\n"),
        0x09 => Some("\\t"),
        _ => None,
    };
    if let Some(short) = short.filter(|_| bits.bit()) {
        return Some(short.to_owned());
    }
    let upper = bits.bit();
    Some(if cp >= 0x10000 {
        let v = cp - 0x10000;
        format!(
            "\\u{}\\u{}",
            hex_digits(0xD800 + (v >> 10), 4, upper),
            hex_digits(0xDC00 + (v & 0x3FF), 4, upper)
        )
    } else {
        format!("\\u{}", hex_digits(cp, 4, upper))
    })
}

fn html_escape(cp: u32, escapable: bool, bits: &mut Bits<'_>) -> Option<String> {
    if !escapable || !(cp == u32::from(b'&') || bits.bit()) {
        return None;
    }
    let named = match cp {
        0x26 => Some("&amp;"),
        0x3C => Some("&lt;"),
        0x3E => Some("&gt;"),
        0x22 => Some("&quot;"),
        0x27 => Some("&apos;"),
        _ => None,
    };
    if let Some(named) = named.filter(|_| bits.bit()) {
        return Some(named.to_owned());
    }
    Some(if bits.bit() {
        format!("&#{cp};")
    } else {
        format!(
            "&#{}{};",
            if bits.bit() { 'x' } else { 'X' },
            hex_digits(cp, 1, bits.bit())
        )
    })
}

fn occurrence_text(values: &[Vec<u8>], occurrence: &Occurrence) -> Vec<u8> {
    let mut bits = Bits {
        bits: &occurrence.bits,
        next: 0,
    };
    let value = &values[occurrence.value % values.len()];
    let formed = encode_form(value, &occurrence.form, &mut bits);
    escape(&formed, occurrence.escaping, &mut bits)
}

fn value() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        prop::collection::vec(any::<u8>(), 8..64),
        prop::collection::vec(0x20u8..0x7f, 8..64),
        prop::collection::vec(any::<char>(), 2..16)
            .prop_map(|cs| cs.into_iter().collect::<String>().into_bytes())
            .prop_filter("at least 8 bytes", |v| v.len() >= 8),
    ]
}

/// Text full of the characters that matter: escape introducers, base64 and hex characters.
fn text() -> impl Strategy<Value = Vec<u8>> {
    let interesting = prop::sample::select(b"aZ09+/=-_%\\&#;\"<>u x{}:,\n".to_vec());
    prop::collection::vec(prop_oneof![3 => interesting, 1 => any::<u8>()], 0..40)
}

fn form() -> impl Strategy<Value = Form> {
    let neighbours = || prop::collection::vec(any::<u8>(), 0..5);
    prop_oneof![
        Just(Form::Raw),
        Just(Form::Hex),
        (any::<bool>(), any::<bool>(), neighbours(), neighbours()).prop_map(
            |(url_safe, padded, before, after)| Form::Base64 {
                url_safe,
                padded,
                before,
                after
            }
        ),
    ]
}

fn occurrence() -> impl Strategy<Value = Occurrence> {
    (
        any::<usize>(),
        form(),
        prop_oneof![
            Just(Escaping::None),
            Just(Escaping::Percent),
            Just(Escaping::Json),
            Just(Escaping::Html),
        ],
        prop::collection::vec(any::<bool>(), 1..64),
    )
        .prop_map(|(value, form, escaping, bits)| Occurrence {
            value,
            form,
            escaping,
            bits,
        })
}

fn scrub_set(values: &[Vec<u8>]) -> Option<Arc<ScrubSet>> {
    let mut set = ScrubSet::new();
    for (i, value) in values.iter().enumerate() {
        set.insert(value, &format!("$SPIKE{{ref:{i:032x}}}")).ok()?;
    }
    Some(Arc::new(set))
}

/// Scrubs `input` split at `cuts` (offsets, any order), with `push` and `push_bytes` in turn,
/// checking the hold-back bound.
fn scrub_chunked(set: &Arc<ScrubSet>, input: &[u8], cuts: &[usize]) -> Vec<u8> {
    let mut cuts: Vec<usize> = cuts.iter().map(|c| c % (input.len() + 1)).collect();
    cuts.sort_unstable();
    let mut scrubber = Scrubber::new(Arc::clone(set));
    let mut out = Vec::new();
    let mut from = 0;
    for (i, cut) in cuts.into_iter().chain([input.len()]).enumerate() {
        // Both ways in, alternately: they must give the same output.
        let chunk = &input[from..cut];
        if i % 2 == 0 {
            out.extend_from_slice(&scrubber.push(chunk));
        } else {
            out.extend_from_slice(&scrubber.push_bytes(bytes::Bytes::copy_from_slice(chunk)));
        }
        assert!(scrubber.held_back() <= set.max_held_back());
        from = cut;
    }
    out.extend_from_slice(&scrubber.finish());
    out
}

// ---- the properties --------------------------------------------------------------------------

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    /// Every occurrence is scrubbed, whatever its form and the chunking; the output is the
    /// same for every chunking; the detector finds the values.
    #[test]
    fn no_value_survives_in_any_view(
        values in prop::collection::vec(value(), 1..4),
        parts in prop::collection::vec((text(), occurrence()), 1..5),
        tail in text(),
        cuts in prop::collection::vec(any::<usize>(), 0..12),
    ) {
        let set = scrub_set(&values);
        prop_assume!(set.is_some());
        let set = set.unwrap();
        let mut input = Vec::new();
        for (text, occurrence) in &parts {
            input.extend_from_slice(text);
            // A space keeps the text from running into the occurrence (a stray `\` before a
            // JSON escape, or a `%4` before a percent-encoded digit, would change it).
            input.push(b' ');
            input.extend(occurrence_text(&values, occurrence));
            input.push(b' ');
        }
        input.extend_from_slice(&tail);

        let one_shot = scrub(&set, &input).into_owned();
        for value in &values {
            prop_assert!(!leaks(&one_shot, value), "a value survived");
        }
        prop_assert_eq!(&scrub_chunked(&set, &input, &cuts), &one_shot);
        let one_byte: Vec<usize> = (0..input.len()).collect();
        prop_assert_eq!(scrub_chunked(&set, &input, &one_byte), one_shot);
        prop_assert!(find_known_value(&set, &input).is_some());
    }

    /// Text that holds no value passes byte for byte, whatever the chunking.
    #[test]
    fn text_without_values_is_unchanged(
        values in prop::collection::vec(value(), 1..4),
        text in prop::collection::vec(text(), 1..20).prop_map(|t| t.concat()),
        cuts in prop::collection::vec(any::<usize>(), 0..12),
    ) {
        let set = scrub_set(&values);
        prop_assume!(set.is_some());
        let set = set.unwrap();
        prop_assume!(values.iter().all(|v| !leaks(&text, v)));
        prop_assert_eq!(&scrub_chunked(&set, &text, &cuts), &text);
        prop_assert!(find_known_value(&set, &text).is_none());
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    /// Inside a longer base64 string, the replacement takes exactly the characters that carry
    /// a bit of the value: those that encode only neighbouring bytes stay, so nothing of the
    /// value is left to decode, not even a fragment of a byte.
    #[test]
    fn base64_keeps_only_characters_without_value_bits(
        value in value(),
        before in prop::collection::vec(any::<u8>(), 0..7),
        after in prop::collection::vec(any::<u8>(), 0..7),
        url_safe in any::<bool>(),
        cuts in prop::collection::vec(any::<usize>(), 0..6),
    ) {
        let set = scrub_set(std::slice::from_ref(&value));
        prop_assume!(set.is_some());
        let set = set.unwrap();
        let engine = if url_safe { &URL_SAFE } else { &STANDARD };
        let encoded = engine.encode([before.as_slice(), &value, &after].concat());
        let kept_before = 8 * before.len() / 6;
        let kept_after = (8 * (before.len() + value.len())).div_ceil(6);
        // The neighbours' own characters could by chance spell the value another way; then
        // more is replaced, which this property does not describe.
        prop_assume!(!leaks(&encoded.as_bytes()[..kept_before], &value));
        prop_assume!(!leaks(&encoded.as_bytes()[kept_after..], &value));
        let expected = format!(
            "({}$SPIKE{{ref:{:032x}}}{})",
            &encoded[..kept_before],
            0,
            &encoded[kept_after..]
        );
        let out = scrub_chunked(&set, format!("({encoded})").as_bytes(), &cuts);
        prop_assert_eq!(String::from_utf8(out).unwrap(), expected);
    }
}
