//! The scrubber's oracle and occurrence builder, shared by the property tests
//! (`gateway/tests/scrub_props.rs`) and the fuzz target (`fuzz/fuzz_targets/scrubber.rs`), so
//! both check the same thing.
//!
//! The oracle is written independently of the crate: one-shot decoders for each escaping and
//! a base64 check that decodes every run of base64 characters from each of its first four
//! offsets, so it finds a value at any alignment without knowing how the scrubber looks for
//! one. The builder writes a value in a chosen form and escaping, each per-character choice
//! decided by given bits.
#![allow(dead_code)] // Each includer uses a part.

use std::sync::Arc;

use base64::Engine as _;
use base64::alphabet;
use base64::engine::DecodePaddingMode;
use base64::engine::general_purpose::{
    GeneralPurpose, GeneralPurposeConfig, STANDARD, STANDARD_NO_PAD, URL_SAFE, URL_SAFE_NO_PAD,
};
use spike_gateway::{Detector, ScrubSet, Scrubber, find_known_value, scrub};

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
/// any alignment, a run's unpadded last quantum included.
fn holds_value(text: &[u8], value: &[u8]) -> bool {
    if contains(text, value) || contains(&text.to_ascii_lowercase(), hex::encode(value).as_bytes())
    {
        return true;
    }
    // Lenient about the last quantum's unused bits: a value can end anywhere in a longer run.
    let lenient = GeneralPurposeConfig::new()
        .with_decode_allow_trailing_bits(true)
        .with_decode_padding_mode(DecodePaddingMode::RequireNone);
    for (alphabet, extra) in [(&alphabet::STANDARD, b"+/"), (&alphabet::URL_SAFE, b"-_")] {
        let engine = GeneralPurpose::new(alphabet, lenient);
        let is_char = |b: &u8| b.is_ascii_alphanumeric() || extra.contains(b);
        for run in text.split(|b| !is_char(b)) {
            for offset in 0..4.min(run.len()) {
                let body = &run[offset..];
                // A single character of a last quantum carries no whole byte.
                let body = &body[..body.len() - usize::from(body.len() % 4 == 1)];
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

fn views(text: &[u8]) -> [Vec<u8>; 4] {
    [
        text.to_vec(),
        percent_decode(text),
        json_decode(text),
        html_decode(text),
    ]
}

/// Whether `text`, in any of the escapings decoded, holds `value` in any encoding.
pub(crate) fn leaks(text: &[u8], value: &[u8]) -> bool {
    views(text).iter().any(|view| holds_value(view, value))
}

/// Whether `text`, in any view, holds what the scrubber counts as a base64 occurrence of
/// `value`: the characters of its encoding made of its bits alone, at any alignment. Those at
/// either end also carry a neighbour's bits, which the scrubber cannot know, so it matches
/// without them (and replaces them when present): text holding all but those few bits of a
/// value counts as holding it. A superset of [`leaks`], for what must pass unchanged.
pub(crate) fn may_leak(text: &[u8], value: &[u8]) -> bool {
    let cores: Vec<Vec<u8>> = (0..3usize)
        .flat_map(|lead| {
            let padded = [&vec![0; lead][..], value, &[0, 0]].concat();
            let (first, end) = ((8 * lead).div_ceil(6), 8 * (lead + value.len()) / 6);
            [
                STANDARD_NO_PAD.encode(&padded),
                URL_SAFE_NO_PAD.encode(&padded),
            ]
            .map(|e| e.as_bytes()[first..end].to_vec())
        })
        .collect();
    leaks(text, value)
        || views(text)
            .iter()
            .any(|view| cores.iter().any(|core| contains(view, core)))
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

/// How a value is written.
#[derive(Debug, Clone)]
pub(crate) enum Form {
    Raw,
    Base64 {
        url_safe: bool,
        padded: bool,
        before: Vec<u8>,
        after: Vec<u8>,
    },
    Hex,
}

/// How the written value is then escaped (each character possibly).
#[derive(Debug, Clone, Copy)]
pub(crate) enum Escaping {
    None,
    Percent,
    Json,
    Html,
}

#[derive(Debug, Clone)]
/// One occurrence of a value in a text: which value (modulo their count), in which form and
/// escaping, with the bits (used cyclically, at least one) that decide each per-character
/// choice.
pub(crate) struct Occurrence {
    pub(crate) value: usize,
    pub(crate) form: Form,
    pub(crate) escaping: Escaping,
    pub(crate) bits: Vec<bool>,
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

pub(crate) fn occurrence_text(values: &[Vec<u8>], occurrence: &Occurrence) -> Vec<u8> {
    let mut bits = Bits {
        bits: &occurrence.bits,
        next: 0,
    };
    let value = &values[occurrence.value % values.len()];
    let formed = encode_form(value, &occurrence.form, &mut bits);
    escape(&formed, occurrence.escaping, &mut bits)
}

/// A set of `values`, the n-th replaced by a token ending in n; `None` when the set refuses
/// them, or when a value overlaps a replacement (holds one, or begins with the end of one, or
/// ends with the start of one): the text beside a replacement could then spell that value
/// again, which shows the agent only what it sent and holds, yet breaks "no value survives".
pub(crate) fn scrub_set(values: &[Vec<u8>]) -> Option<Arc<ScrubSet>> {
    let replacements: Vec<String> = (0..values.len())
        .map(|i| format!("$SPIKE{{ref:{i:032x}}}"))
        .collect();
    let overlaps = |v: &[u8], r: &[u8]| {
        contains(v, r)
            || (1..v.len().min(r.len()))
                .any(|k| v[v.len() - k..] == r[..k] || v[..k] == r[r.len() - k..])
    };
    if values
        .iter()
        .any(|v| replacements.iter().any(|r| overlaps(v, r.as_bytes())))
    {
        return None;
    }
    let mut set = ScrubSet::new();
    for (value, replacement) in values.iter().zip(&replacements) {
        set.insert(value, replacement).ok()?;
    }
    Some(Arc::new(set))
}

/// Scrubs `input` split at `cuts` (offsets, any order), with `push` and `push_bytes` in turn,
/// checking the hold-back bound.
pub(crate) fn scrub_chunked(set: &Arc<ScrubSet>, input: &[u8], cuts: &[usize]) -> Vec<u8> {
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

/// The text `parts` describe (each a stretch of text, then an occurrence), then `tail`.
pub(crate) fn assemble(
    values: &[Vec<u8>],
    parts: &[(Vec<u8>, Occurrence)],
    tail: &[u8],
) -> Vec<u8> {
    let mut input = Vec::new();
    for (text, occurrence) in parts {
        input.extend_from_slice(text);
        // A space keeps the text from running into the occurrence (a stray `\` before a
        // JSON escape, or a `%4` before a percent-encoded digit, would change it).
        input.push(b' ');
        input.extend(occurrence_text(values, occurrence));
        input.push(b' ');
    }
    input.extend_from_slice(tail);
    input
}

/// Detects in `input` split at `cuts` with the streaming [`Detector`].
fn detect_chunked(set: &Arc<ScrubSet>, input: &[u8], cuts: &[usize]) -> bool {
    let mut cuts: Vec<usize> = cuts.iter().map(|c| c % (input.len() + 1)).collect();
    cuts.sort_unstable();
    let mut detector = Detector::new(Arc::clone(set));
    let mut from = 0;
    for cut in cuts {
        if detector.push(&input[from..cut]).is_some() {
            return true;
        }
        from = cut;
    }
    detector.push(&input[from..]).is_some() || detector.finish().is_some()
}

/// Asserts that no value of `set` (built from `values`) survives scrubbing `input`, in any
/// view, that every chunking gives the same output (`cuts` and one byte at a time), and that
/// the detectors, one-shot and streaming, find a value when the oracle sees one; text in
/// which the oracle sees nothing like one passes unchanged.
pub(crate) fn check_scrubbed(
    set: &Arc<ScrubSet>,
    values: &[Vec<u8>],
    input: &[u8],
    cuts: &[usize],
) {
    if !values.iter().any(|v| may_leak(input, v)) {
        return check_unchanged(set, input, cuts);
    }
    let one_shot = scrub(set, input).into_owned();
    for value in values {
        assert!(!leaks(&one_shot, value), "a value survived");
    }
    assert_eq!(
        scrub_chunked(set, input, cuts),
        one_shot,
        "chunking changed the output"
    );
    let one_byte: Vec<usize> = (0..input.len()).collect();
    assert_eq!(
        scrub_chunked(set, input, &one_byte),
        one_shot,
        "byte chunks changed the output"
    );
    let found = find_known_value(set, input).is_some();
    if values.iter().any(|v| leaks(input, v)) {
        assert!(found, "the detector missed a value");
    }
    assert_eq!(
        detect_chunked(set, input, cuts),
        found,
        "streaming detection differs"
    );
}

/// Asserts that `text`, in which the oracle sees nothing like a value of `set` (see
/// [`may_leak`]), passes unchanged and undetected, whatever the chunking.
pub(crate) fn check_unchanged(set: &Arc<ScrubSet>, text: &[u8], cuts: &[usize]) {
    assert_eq!(
        scrub_chunked(set, text, cuts),
        text,
        "text without a value was changed"
    );
    assert!(
        find_known_value(set, text).is_none(),
        "a value was detected in text without one"
    );
    assert!(
        !detect_chunked(set, text, cuts),
        "a value was detected while streaming"
    );
}
