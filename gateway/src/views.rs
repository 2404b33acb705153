//! Streaming decoding views: the escaping layers a value may be wrapped in.
//!
//! Each view turns the input into a decoded stream, one *unit* at a time: a literal byte, or
//! the bytes one escape sequence stands for. Every unit carries the input span it came from,
//! so a match found in the decoded stream masks exactly the input bytes that spelled it.
//!
//! Escaping is *partial* by nature: any character may or may not be escaped, in either hex
//! case. A view therefore decodes on the fly instead of the scrubber enumerating the 2ⁿ
//! spellings of a value. Only one escaping layer is undone at a time (a JSON string inside a
//! JSON string, or percent-encoding inside a JSON string, is not unwrapped twice); the raw,
//! hex and base64 patterns are searched in every view, so base64 with `\/` in JSON or `%2B`
//! in a URL is found.
//!
//! What each view decodes:
//!
//! - percent: `%HH` (either case) → one byte. `+` is left as it is (a space in
//!   `application/x-www-form-urlencoded` only; values with spaces are found in the other views).
//! - JSON: `\" \\ \/ \b \f \n \r \t`, and `\uXXXX` (either case) → the UTF-8 of that code
//!   point, with a UTF-16 surrogate pair (`\uD83D\uDE00`) forming one code point. A lone
//!   surrogate is not a character and is left undecoded.
//! - HTML: `&#NN;` and `&#xHH;` (any case, leading zeros allowed up to
//!   [`LONGEST_ESCAPE`] bytes in all) → the UTF-8 of that code point; the named references
//!   `&amp; &lt; &gt; &quot; &apos;` and `&sol; &plus; &equals;` (base64's own characters).
//!   The terminating `;` is required.
//!
//! A sequence that turns out not to be an escape is passed through: its first byte becomes a
//! literal unit and decoding resumes right after it, so `%%41` decodes to `%A`.

/// The longest escape sequence any view decodes, in input bytes (a JSON surrogate pair, or an
/// HTML numeric reference with its leading zeros). Longer HTML references are left undecoded.
pub(crate) const LONGEST_ESCAPE: usize = 12;

/// Which escaping layer a match was found under.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Escaping {
    /// The text as it is.
    None,
    /// Percent-encoding (`%HH`).
    Percent,
    /// JSON string escapes (`\n`, `\uXXXX`, …).
    Json,
    /// HTML character references (`&amp;`, `&#NN;`, `&#xHH;`).
    Html,
}

/// What a decoded unit is handed to: its bytes and the input span `[start, end)` they came
/// from (absolute stream offsets).
pub(crate) trait UnitSink {
    fn unit(&mut self, bytes: &[u8], start: u64, end: u64);
}

/// A streaming decoder for one view.
pub(crate) trait Decode {
    /// The byte that starts every escape sequence (none for the identity view).
    const INTRODUCER: Option<u8>;
    /// Feeds the input byte at offset `pos`.
    fn feed(&mut self, byte: u8, pos: u64, sink: &mut impl UnitSink);
    /// Ends the input: whatever is pending is passed through undecoded.
    fn flush(&mut self, sink: &mut impl UnitSink);
    /// Where the escape sequence still being read starts, if one is.
    fn pending_start(&self) -> Option<u64>;
}

/// The identity view: every byte is a unit of its own.
#[derive(Debug, Default)]
pub(crate) struct Identity;

impl Decode for Identity {
    const INTRODUCER: Option<u8> = None;

    #[inline]
    fn feed(&mut self, byte: u8, pos: u64, sink: &mut impl UnitSink) {
        sink.unit(&[byte], pos, pos + 1);
    }

    fn flush(&mut self, _sink: &mut impl UnitSink) {}

    fn pending_start(&self) -> Option<u64> {
        None
    }
}

/// What an escaping scheme makes of the bytes read since its introducer.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Parsed {
    /// Could still become an escape sequence.
    Incomplete,
    /// Cannot be an escape sequence.
    Invalid,
    /// A complete escape sequence for these bytes (`len` of them, at most 4).
    Decoded { bytes: [u8; 4], len: u8 },
}

impl Parsed {
    fn byte(b: u8) -> Self {
        Self::Decoded {
            bytes: [b, 0, 0, 0],
            len: 1,
        }
    }

    fn char(code_point: u32) -> Self {
        match char::from_u32(code_point) {
            Some(c) => {
                let mut bytes = [0u8; 4];
                let len = c.encode_utf8(&mut bytes).len() as u8;
                Self::Decoded { bytes, len }
            }
            None => Self::Invalid,
        }
    }
}

/// An escaping scheme: the byte that starts its sequences and how to read one.
pub(crate) trait Scheme {
    const INTRODUCER: u8;
    /// Reads `seq`, which starts with the introducer and is at most [`LONGEST_ESCAPE`] long.
    /// Must not answer `Incomplete` for a sequence of [`LONGEST_ESCAPE`] bytes.
    fn parse(seq: &[u8]) -> Parsed;
}

/// A [`Decode`] for an escaping [`Scheme`]. No `Debug`: the pending bytes are input, which
/// may be part of a value.
pub(crate) struct Unescape<S> {
    pending: [u8; LONGEST_ESCAPE],
    len: usize,
    start: u64,
    scheme: std::marker::PhantomData<S>,
}

impl<S> Default for Unescape<S> {
    fn default() -> Self {
        Self {
            pending: [0; LONGEST_ESCAPE],
            len: 0,
            start: 0,
            scheme: std::marker::PhantomData,
        }
    }
}

/// The pending bytes may be the start of an escaped value.
impl<S> Drop for Unescape<S> {
    fn drop(&mut self) {
        zeroize::Zeroize::zeroize(&mut self.pending);
    }
}

impl<S: Scheme> Unescape<S> {
    /// Passes the first pending byte through as a literal and reads the rest again.
    fn reject_first(&mut self, sink: &mut impl UnitSink) {
        let (rest, len, start) = (self.pending, self.len, self.start);
        self.len = 0;
        sink.unit(&rest[..1], start, start + 1);
        for (i, &b) in rest[1..len].iter().enumerate() {
            self.feed(b, start + 1 + i as u64, sink);
        }
    }
}

impl<S: Scheme> Decode for Unescape<S> {
    const INTRODUCER: Option<u8> = Some(S::INTRODUCER);

    #[inline]
    fn feed(&mut self, byte: u8, pos: u64, sink: &mut impl UnitSink) {
        if self.len == 0 {
            if byte != S::INTRODUCER {
                sink.unit(&[byte], pos, pos + 1);
                return;
            }
            self.start = pos;
        }
        self.pending[self.len] = byte;
        self.len += 1;
        match S::parse(&self.pending[..self.len]) {
            Parsed::Incomplete if self.len < LONGEST_ESCAPE => {}
            Parsed::Decoded { bytes, len } => {
                let end = self.start + self.len as u64;
                self.len = 0;
                sink.unit(&bytes[..usize::from(len)], self.start, end);
            }
            Parsed::Incomplete | Parsed::Invalid => self.reject_first(sink),
        }
    }

    fn flush(&mut self, sink: &mut impl UnitSink) {
        while self.len > 0 {
            self.reject_first(sink);
        }
    }

    fn pending_start(&self) -> Option<u64> {
        (self.len > 0).then_some(self.start)
    }
}

fn hex_digit(b: u8) -> Option<u32> {
    char::from(b).to_digit(16)
}

/// Percent-encoding: `%HH`.
#[derive(Debug)]
pub(crate) struct Percent;

impl Scheme for Percent {
    const INTRODUCER: u8 = b'%';

    fn parse(seq: &[u8]) -> Parsed {
        let mut value = 0u32;
        for &b in &seq[1..] {
            match hex_digit(b) {
                Some(d) => value = value * 16 + d,
                None => return Parsed::Invalid,
            }
        }
        if seq.len() < 3 {
            Parsed::Incomplete
        } else {
            Parsed::byte(value as u8)
        }
    }
}

/// JSON string escapes.
#[derive(Debug)]
pub(crate) struct Json;

impl Json {
    /// Reads `\uXXXX` at the start of `seq`: `Ok(None)` while incomplete.
    fn code_unit(seq: &[u8]) -> Result<Option<u32>, ()> {
        if seq.first().is_some_and(|&b| b != b'\\') || seq.get(1).is_some_and(|&b| b != b'u') {
            return Err(());
        }
        let mut value = 0u32;
        for &b in seq.iter().take(6).skip(2) {
            value = value * 16 + hex_digit(b).ok_or(())?;
        }
        Ok((seq.len() >= 6).then_some(value))
    }
}

impl Scheme for Json {
    const INTRODUCER: u8 = b'\\';

    fn parse(seq: &[u8]) -> Parsed {
        let Some(&kind) = seq.get(1) else {
            return Parsed::Incomplete;
        };
        let simple = match kind {
            b'"' => b'"',
            b'\\' => b'\\',
            b'/' => b'/',
            b'b' => 0x08,
            b'f' => 0x0c,
            b'n' => b'\n',
            b'r' => b'\r',
            b't' => b'\t',
            b'u' => 0,
            _ => return Parsed::Invalid,
        };
        if kind != b'u' {
            return Parsed::byte(simple);
        }
        let high = match Self::code_unit(seq) {
            Err(()) => return Parsed::Invalid,
            Ok(None) => return Parsed::Incomplete,
            Ok(Some(unit)) => unit,
        };
        match high {
            0xD800..=0xDBFF => match Self::code_unit(&seq[6..]) {
                Err(()) => Parsed::Invalid,
                Ok(None) => Parsed::Incomplete,
                Ok(Some(low @ 0xDC00..=0xDFFF)) => {
                    Parsed::char(0x10000 + ((high - 0xD800) << 10) + (low - 0xDC00))
                }
                Ok(Some(_)) => Parsed::Invalid,
            },
            // A lone low surrogate; `Parsed::char` refuses it.
            unit => Parsed::char(unit),
        }
    }
}

/// HTML character references.
#[derive(Debug)]
pub(crate) struct Html;

/// The named references decoded, without `&`.
const NAMED: [(&[u8], u8); 8] = [
    (b"amp;", b'&'),
    (b"lt;", b'<'),
    (b"gt;", b'>'),
    (b"quot;", b'"'),
    (b"apos;", b'\''),
    (b"sol;", b'/'),
    (b"plus;", b'+'),
    (b"equals;", b'='),
];

impl Scheme for Html {
    const INTRODUCER: u8 = b'&';

    fn parse(seq: &[u8]) -> Parsed {
        let body = &seq[1..];
        match body.first() {
            None => Parsed::Incomplete,
            Some(b'#') => Self::numeric(&body[1..]),
            Some(_) => {
                if let Some(&(_, byte)) = NAMED.iter().find(|(name, _)| *name == body) {
                    Parsed::byte(byte)
                } else if NAMED.iter().any(|(name, _)| name.starts_with(body)) {
                    Parsed::Incomplete
                } else {
                    Parsed::Invalid
                }
            }
        }
    }
}

impl Html {
    /// Reads what follows `&#`.
    fn numeric(rest: &[u8]) -> Parsed {
        let (radix, digits) = match rest.first() {
            None => return Parsed::Incomplete,
            Some(b'x' | b'X') => (16, &rest[1..]),
            Some(_) => (10, rest),
        };
        let mut value = 0u32;
        for (i, &b) in digits.iter().enumerate() {
            if b == b';' {
                // Only the last byte can be `;`: `parse` is called after every byte.
                return if i == 0 {
                    Parsed::Invalid
                } else {
                    Parsed::char(value)
                };
            }
            match char::from(b).to_digit(radix) {
                // Saturating keeps a value too large for a code point too large.
                Some(d) => value = value.saturating_mul(radix).saturating_add(d),
                None => return Parsed::Invalid,
            }
        }
        Parsed::Incomplete
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Collects units as (bytes, start, end).
    #[derive(Default)]
    struct Units(Vec<(Vec<u8>, u64, u64)>);

    impl UnitSink for Units {
        fn unit(&mut self, bytes: &[u8], start: u64, end: u64) {
            self.0.push((bytes.to_vec(), start, end));
        }
    }

    fn decode<D: Decode + Default>(input: &[u8]) -> Units {
        let mut decoder = D::default();
        let mut units = Units::default();
        for (i, &b) in input.iter().enumerate() {
            decoder.feed(b, i as u64, &mut units);
        }
        decoder.flush(&mut units);
        units
    }

    fn text<D: Decode + Default>(input: &[u8]) -> Vec<u8> {
        decode::<D>(input).0.into_iter().flat_map(|u| u.0).collect()
    }

    #[test]
    fn percent_decodes_either_case_and_passes_bad_sequences_through() {
        assert_eq!(text::<Unescape<Percent>>(b"a%2Fb%2fc"), b"a/b/c");
        assert_eq!(text::<Unescape<Percent>>(b"%%41%4"), b"%A%4");
        assert_eq!(text::<Unescape<Percent>>(b"%zz%"), b"%zz%");
        let units = decode::<Unescape<Percent>>(b"x%41");
        assert_eq!(units.0[1], (b"A".to_vec(), 1, 4));
    }

    #[test]
    fn json_decodes_simple_escapes_and_code_points() {
        assert_eq!(
            text::<Unescape<Json>>(br#"\"\\\/\b\f\n\r\t\u0041\u00e9\u20AC"#),
            "\"\\/\u{8}\u{c}\n\r\tAé€".as_bytes()
        );
        assert_eq!(text::<Unescape<Json>>(br"\x\u12\u"), br"\x\u12\u");
    }

    #[test]
    fn json_joins_surrogate_pairs_and_leaves_lone_surrogates() {
        let units = decode::<Unescape<Json>>(br"a\uD83D\uDE00b");
        assert_eq!(units.0[1], ("😀".as_bytes().to_vec(), 1, 13));
        assert_eq!(text::<Unescape<Json>>(br"\uD83Dx"), br"\uD83Dx");
        assert_eq!(text::<Unescape<Json>>(br"\uDE00"), br"\uDE00");
        // A high surrogate followed by an escape that is not a low surrogate: that escape is
        // still decoded.
        assert_eq!(text::<Unescape<Json>>(br"\uD83D\u0041"), br"\uD83DA");
    }

    #[test]
    fn html_decodes_numeric_and_named_references() {
        assert_eq!(
            text::<Unescape<Html>>(
                b"&#65;&#x42;&#X43;&#0000068;&amp;&lt;&gt;&quot;&apos;&sol;&plus;&equals;"
            ),
            b"ABCD&<>\"'/+="
        );
        assert_eq!(text::<Unescape<Html>>(b"&#x1F600;"), "😀".as_bytes());
    }

    #[test]
    fn html_leaves_what_is_not_a_reference() {
        for input in [
            &b"&#;"[..],
            b"&#x;",
            b"&#xD800;",
            b"&#1114112;",
            b"&ampx",
            b"&nbsp;",
            b"&#00000000065;",
            b"&#65",
            b"&",
        ] {
            assert_eq!(text::<Unescape<Html>>(input), input, "{input:?}");
        }
        assert_eq!(text::<Unescape<Html>>(b"&&amp;"), b"&&");
    }

    #[test]
    fn pending_start_marks_an_unfinished_sequence() {
        let mut decoder = Unescape::<Json>::default();
        let mut units = Units::default();
        for (i, &b) in br"ab\u00".iter().enumerate() {
            decoder.feed(b, i as u64, &mut units);
        }
        assert_eq!(decoder.pending_start(), Some(2));
        decoder.feed(b'4', 6, &mut units);
        decoder.feed(b'1', 7, &mut units);
        assert_eq!(decoder.pending_start(), None);
        assert_eq!(units.0.last(), Some(&(b"A".to_vec(), 2, 8)));
    }
}
