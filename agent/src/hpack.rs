//! A small HPACK (RFC 7541) decoder and a literal-only encoder.
//!
//! Used only by [`crate::uds_h2`] to re-encode the header blocks clients send, so it favours
//! plainness and strict bounds over speed: a malformed or oversized block is an error, never
//! a panic or an unbounded allocation.

use std::collections::VecDeque;
use std::sync::OnceLock;

/// A decoded header field: name and value as raw octets.
pub(crate) type Field = (Vec<u8>, Vec<u8>);

/// Why a header block could not be decoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum HpackError {
    #[error("header block is truncated")]
    Truncated,
    #[error("integer in header block is too large")]
    IntegerOverflow,
    #[error("header index {0} is out of range")]
    BadIndex(usize),
    #[error("invalid Huffman-coded string")]
    BadHuffman,
    #[error("dynamic table size update is too large or misplaced")]
    BadSizeUpdate,
    #[error("header list exceeds {0} bytes")]
    TooLarge(usize),
}

/// Per-entry overhead in table size accounting (RFC 7541 §4.1).
const ENTRY_OVERHEAD: usize = 32;

/// The decoding half of one connection's HPACK context (client to server).
#[derive(Debug)]
pub(crate) struct Decoder {
    /// Newest entry first.
    table: VecDeque<Field>,
    size: usize,
    max_size: usize,
    /// The limit we advertise in SETTINGS_HEADER_TABLE_SIZE; size updates may not exceed it.
    settings_max: usize,
    /// Largest decoded header list (sum of name + value + 32 per field) accepted.
    max_list: usize,
}

impl Decoder {
    pub(crate) fn new(settings_max: usize, max_list: usize) -> Self {
        Self {
            table: VecDeque::new(),
            size: 0,
            max_size: settings_max,
            settings_max,
            max_list,
        }
    }

    /// Decodes one complete header block, updating the dynamic table.
    pub(crate) fn decode(&mut self, block: &[u8]) -> Result<Vec<Field>, HpackError> {
        let mut pos = 0;
        let mut fields = Vec::new();
        let mut list_size = 0usize;
        let mut may_resize = true;
        while pos < block.len() {
            let b = block[pos];
            let field = if b & 0x80 != 0 {
                let index = decode_int(block, &mut pos, 7)?;
                self.get(index)?
            } else if b & 0xc0 == 0x40 {
                let field = self.decode_literal(block, &mut pos, 6)?;
                self.insert(field.clone());
                field
            } else if b & 0xe0 == 0x20 {
                // Only allowed before the first field of a block (RFC 7541 §4.2).
                let size = decode_int(block, &mut pos, 5)?;
                if !may_resize || size > self.settings_max {
                    return Err(HpackError::BadSizeUpdate);
                }
                self.max_size = size;
                self.evict(0);
                continue;
            } else {
                // 0001xxxx (never indexed) and 0000xxxx (without indexing).
                self.decode_literal(block, &mut pos, 4)?
            };
            may_resize = false;
            list_size = list_size.saturating_add(field.0.len() + field.1.len() + ENTRY_OVERHEAD);
            if list_size > self.max_list {
                return Err(HpackError::TooLarge(self.max_list));
            }
            fields.push(field);
        }
        Ok(fields)
    }

    fn decode_literal(
        &self,
        block: &[u8],
        pos: &mut usize,
        prefix: u8,
    ) -> Result<Field, HpackError> {
        let index = decode_int(block, pos, prefix)?;
        let name = if index == 0 {
            decode_string(block, pos, self.max_list)?
        } else {
            self.get(index)?.0
        };
        let value = decode_string(block, pos, self.max_list)?;
        Ok((name, value))
    }

    fn get(&self, index: usize) -> Result<Field, HpackError> {
        match index {
            0 => Err(HpackError::BadIndex(0)),
            1..=61 => {
                let (n, v) = STATIC_TABLE[index - 1];
                Ok((n.as_bytes().to_vec(), v.as_bytes().to_vec()))
            }
            _ => self
                .table
                .get(index - 62)
                .cloned()
                .ok_or(HpackError::BadIndex(index)),
        }
    }

    fn insert(&mut self, field: Field) {
        let size = field.0.len() + field.1.len() + ENTRY_OVERHEAD;
        if size > self.max_size {
            // An entry larger than the table empties it and is not added (§4.4).
            self.table.clear();
            self.size = 0;
            return;
        }
        self.evict(size);
        self.size += size;
        self.table.push_front(field);
    }

    /// Evicts oldest entries until `incoming` more bytes fit.
    fn evict(&mut self, incoming: usize) {
        while self.size + incoming > self.max_size {
            match self.table.pop_back() {
                Some((n, v)) => self.size -= n.len() + v.len() + ENTRY_OVERHEAD,
                None => break,
            }
        }
    }
}

/// Appends `name: value` as a "literal header field without indexing — new name" with raw
/// (not Huffman-coded) strings, so the peer's dynamic table is never touched.
pub(crate) fn encode_literal(out: &mut Vec<u8>, name: &[u8], value: &[u8]) {
    out.push(0x00);
    encode_string(out, name);
    encode_string(out, value);
}

fn encode_string(out: &mut Vec<u8>, s: &[u8]) {
    encode_int(out, s.len(), 7, 0x00);
    out.extend_from_slice(s);
}

fn encode_int(out: &mut Vec<u8>, mut value: usize, prefix: u8, flags: u8) {
    let max = (1usize << prefix) - 1;
    if value < max {
        // `value < max <= 127`, so it fits the prefix bits of one byte.
        out.push(flags | value as u8);
        return;
    }
    out.push(flags | max as u8);
    value -= max;
    while value >= 0x80 {
        out.push((value & 0x7f) as u8 | 0x80);
        value >>= 7;
    }
    out.push(value as u8);
}

/// Decodes an integer with an `prefix`-bit prefix at `*pos` (RFC 7541 §5.1).
fn decode_int(buf: &[u8], pos: &mut usize, prefix: u8) -> Result<usize, HpackError> {
    let max = (1usize << prefix) - 1;
    let first = *buf.get(*pos).ok_or(HpackError::Truncated)?;
    *pos += 1;
    let mut value = usize::from(first) & max;
    if value < max {
        return Ok(value);
    }
    let mut shift = 0u32;
    loop {
        let b = *buf.get(*pos).ok_or(HpackError::Truncated)?;
        *pos += 1;
        // Nothing in a header block legitimately needs more than 28 bits.
        if shift > 21 {
            return Err(HpackError::IntegerOverflow);
        }
        value += usize::from(b & 0x7f) << shift;
        shift += 7;
        if b & 0x80 == 0 {
            return Ok(value);
        }
    }
}

fn decode_string(buf: &[u8], pos: &mut usize, limit: usize) -> Result<Vec<u8>, HpackError> {
    let huffman = buf.get(*pos).ok_or(HpackError::Truncated)? & 0x80 != 0;
    let len = decode_int(buf, pos, 7)?;
    if len > limit {
        return Err(HpackError::TooLarge(limit));
    }
    let end = pos.checked_add(len).ok_or(HpackError::Truncated)?;
    let raw = buf.get(*pos..end).ok_or(HpackError::Truncated)?;
    *pos = end;
    if huffman {
        huffman_decode(raw)
    } else {
        Ok(raw.to_vec())
    }
}

/// The Huffman code is canonical (codes of one length are consecutive, ordered by symbol,
/// shorter codes first), so the code lengths alone define it; decoding walks the lengths one
/// bit at a time, as in zlib's `puff`.
struct Canonical {
    /// `count[len]`: how many symbols have a code of `len` bits.
    count: [u16; 31],
    /// Symbols ordered by (code length, symbol).
    symbols: Vec<u16>,
}

fn canonical() -> &'static Canonical {
    static TABLE: OnceLock<Canonical> = OnceLock::new();
    TABLE.get_or_init(|| {
        let mut count = [0u16; 31];
        for &len in HUFFMAN_CODE_LENGTHS.iter() {
            count[usize::from(len)] += 1;
        }
        let mut symbols: Vec<u16> = (0..257).collect();
        symbols.sort_by_key(|&s| (HUFFMAN_CODE_LENGTHS[usize::from(s)], s));
        Canonical { count, symbols }
    })
}

fn huffman_decode(data: &[u8]) -> Result<Vec<u8>, HpackError> {
    let table = canonical();
    let mut out = Vec::with_capacity(data.len() * 8 / 5);
    // State of the code being read: its bits so far, their number, and the canonical
    // bookkeeping for that length.
    let (mut code, mut first, mut index, mut len) = (0i64, 0i64, 0usize, 0usize);
    for &byte in data {
        for shift in (0..8).rev() {
            code |= i64::from((byte >> shift) & 1);
            len += 1;
            if len > 30 {
                return Err(HpackError::BadHuffman);
            }
            let count = i64::from(table.count[len]);
            if code - first < count {
                let offset = usize::try_from(code - first).map_err(|_| HpackError::BadHuffman)?;
                let symbol = table.symbols[index + offset];
                // The end-of-string symbol must not appear inside a string (§5.2).
                let symbol = u8::try_from(symbol).map_err(|_| HpackError::BadHuffman)?;
                out.push(symbol);
                (code, first, index, len) = (0, 0, 0, 0);
            } else {
                index += usize::from(table.count[len]);
                first = (first + count) << 1;
                code <<= 1;
            }
        }
    }
    // Leftover bits are padding: at most 7, all ones (a prefix of EOS).
    if len > 7 || (len > 0 && code >> 1 != (1i64 << len) - 1) {
        return Err(HpackError::BadHuffman);
    }
    Ok(out)
}

/// RFC 7541 Appendix A.
const STATIC_TABLE: [(&str, &str); 61] = [
    (":authority", ""),
    (":method", "GET"),
    (":method", "POST"),
    (":path", "/"),
    (":path", "/index.html"),
    (":scheme", "http"),
    (":scheme", "https"),
    (":status", "200"),
    (":status", "204"),
    (":status", "206"),
    (":status", "304"),
    (":status", "400"),
    (":status", "404"),
    (":status", "500"),
    ("accept-charset", ""),
    ("accept-encoding", "gzip, deflate"),
    ("accept-language", ""),
    ("accept-ranges", ""),
    ("accept", ""),
    ("access-control-allow-origin", ""),
    ("age", ""),
    ("allow", ""),
    ("authorization", ""),
    ("cache-control", ""),
    ("content-disposition", ""),
    ("content-encoding", ""),
    ("content-language", ""),
    ("content-length", ""),
    ("content-location", ""),
    ("content-range", ""),
    ("content-type", ""),
    ("cookie", ""),
    ("date", ""),
    ("etag", ""),
    ("expect", ""),
    ("expires", ""),
    ("from", ""),
    ("host", ""),
    ("if-match", ""),
    ("if-modified-since", ""),
    ("if-none-match", ""),
    ("if-range", ""),
    ("if-unmodified-since", ""),
    ("last-modified", ""),
    ("link", ""),
    ("location", ""),
    ("max-forwards", ""),
    ("proxy-authenticate", ""),
    ("proxy-authorization", ""),
    ("range", ""),
    ("referer", ""),
    ("refresh", ""),
    ("retry-after", ""),
    ("server", ""),
    ("set-cookie", ""),
    ("strict-transport-security", ""),
    ("transfer-encoding", ""),
    ("user-agent", ""),
    ("vary", ""),
    ("via", ""),
    ("www-authenticate", ""),
];

/// Code length in bits of each symbol 0..=256 (256 = EOS), RFC 7541 Appendix B.
#[rustfmt::skip]
const HUFFMAN_CODE_LENGTHS: [u8; 257] = [
    13, 23, 28, 28, 28, 28, 28, 28, 28, 24, 30, 28, 28, 30, 28, 28,
    28, 28, 28, 28, 28, 28, 30, 28, 28, 28, 28, 28, 28, 28, 28, 28,
     6, 10, 10, 12, 13,  6,  8, 11, 10, 10,  8, 11,  8,  6,  6,  6,
     5,  5,  5,  6,  6,  6,  6,  6,  6,  6,  7,  8, 15,  6, 12, 10,
    13,  6,  7,  7,  7,  7,  7,  7,  7,  7,  7,  7,  7,  7,  7,  7,
     7,  7,  7,  7,  7,  7,  7,  7,  8,  7,  8, 13, 19, 13, 14,  6,
    15,  5,  6,  5,  6,  5,  6,  6,  6,  5,  7,  7,  6,  6,  6,  5,
     6,  7,  6,  5,  5,  6,  7,  7,  7,  7,  7, 15, 11, 14, 13, 28,
    20, 22, 20, 20, 22, 22, 22, 23, 22, 23, 23, 23, 23, 23, 24, 23,
    24, 24, 22, 23, 24, 23, 23, 23, 23, 21, 22, 23, 22, 23, 23, 24,
    22, 21, 20, 22, 22, 23, 23, 21, 23, 22, 22, 24, 21, 22, 23, 23,
    21, 21, 22, 21, 23, 22, 23, 23, 20, 22, 22, 22, 23, 22, 22, 23,
    26, 26, 20, 19, 22, 23, 22, 25, 26, 26, 26, 27, 27, 26, 24, 25,
    19, 21, 26, 27, 27, 26, 27, 24, 21, 21, 26, 26, 28, 27, 27, 27,
    20, 24, 20, 21, 22, 21, 21, 23, 22, 22, 25, 25, 24, 24, 26, 23,
    26, 27, 26, 26, 27, 27, 27, 27, 27, 28, 27, 27, 27, 27, 27, 26,
    30,
];

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn hex(s: &str) -> Vec<u8> {
        let s: String = s.split_whitespace().collect();
        (0..s.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
            .collect()
    }

    fn fields(list: &[(&str, &str)]) -> Vec<Field> {
        list.iter()
            .map(|(n, v)| (n.as_bytes().to_vec(), v.as_bytes().to_vec()))
            .collect()
    }

    #[test]
    fn huffman_code_is_complete() {
        // Kraft equality: a complete prefix code fills the code space exactly.
        let sum: u64 = HUFFMAN_CODE_LENGTHS
            .iter()
            .map(|&l| 1u64 << (30 - u32::from(l)))
            .sum();
        assert_eq!(sum, 1 << 30);
    }

    #[test]
    fn huffman_strings_from_rfc() {
        // RFC 7541 C.4.
        for (coded, plain) in [
            ("f1e3 c2e5 f23a 6ba0 ab90 f4ff", "www.example.com"),
            ("a8eb 1064 9cbf", "no-cache"),
            ("25a8 49e9 5ba9 7d7f", "custom-key"),
            ("25a8 49e9 5bb8 e8b4 bf", "custom-value"),
            // C.6.
            ("6402", "302"),
            ("aec3 771a 4b", "private"),
        ] {
            assert_eq!(huffman_decode(&hex(coded)).unwrap(), plain.as_bytes());
        }
        assert_eq!(huffman_decode(&[]).unwrap(), b"");
    }

    #[test]
    fn bad_huffman_padding_is_rejected() {
        // "no-cache" with its final padding bits cleared: not a prefix of EOS.
        let mut bad = hex("a8eb 1064 9cbf");
        *bad.last_mut().unwrap() &= 0xf0;
        assert!(huffman_decode(&bad).is_err());
        // A full byte of padding (8 one-bits) is too long.
        let mut long = hex("a8eb 1064 9cbf");
        long.push(0xff);
        assert_eq!(huffman_decode(&long), Err(HpackError::BadHuffman));
        // 30 one-bits and more: EOS inside a string.
        assert_eq!(huffman_decode(&[0xff; 4]), Err(HpackError::BadHuffman));
    }

    #[test]
    fn decodes_rfc_request_sequences_with_dynamic_table() {
        // RFC 7541 C.4: three requests with Huffman coding, sharing one dynamic table.
        let mut d = Decoder::new(4096, 65536);
        let r1 = d
            .decode(&hex("8286 8441 8cf1 e3c2 e5f2 3a6b a0ab 90f4 ff"))
            .unwrap();
        assert_eq!(
            r1,
            fields(&[
                (":method", "GET"),
                (":scheme", "http"),
                (":path", "/"),
                (":authority", "www.example.com"),
            ])
        );
        let r2 = d.decode(&hex("8286 84be 5886 a8eb 1064 9cbf")).unwrap();
        assert_eq!(
            r2,
            fields(&[
                (":method", "GET"),
                (":scheme", "http"),
                (":path", "/"),
                (":authority", "www.example.com"),
                ("cache-control", "no-cache"),
            ])
        );
        let r3 = d
            .decode(&hex(
                "8287 85bf 4088 25a8 49e9 5ba9 7d7f 8925 a849 e95b b8e8 b4bf",
            ))
            .unwrap();
        assert_eq!(
            r3,
            fields(&[
                (":method", "GET"),
                (":scheme", "https"),
                (":path", "/index.html"),
                (":authority", "www.example.com"),
                ("custom-key", "custom-value"),
            ])
        );
        assert_eq!(d.size, 164);
    }

    #[test]
    fn evicts_by_size() {
        // RFC 7541 C.5/C.6 use a 256-byte table; entries must be evicted oldest first.
        let mut d = Decoder::new(256, 65536);
        d.decode(&hex(
            "4882 6402 5885 aec3 771a 4b61 96d0 7abe 9410 54d4 44a8 2005 9504 0b81 66e0 82a6 \
             2d1b ff6e 919d 29ad 1718 63c7 8f0b 97c8 e9ae 82ae 43d3",
        ))
        .unwrap();
        assert_eq!(d.size, 222);
        let r = d.decode(&hex("4883 640e ffc1 c0bf")).unwrap();
        assert_eq!(r[0], (b":status".to_vec(), b"307".to_vec()));
        assert_eq!(r[1].0, b"cache-control");
        assert_eq!(d.size, 222);
        assert_eq!(d.table.len(), 4);
    }

    #[test]
    fn size_updates_are_bounded_and_only_at_block_start() {
        let mut d = Decoder::new(4096, 65536);
        // Update to 0 then an indexed static field: fine.
        assert!(d.decode(&[0x20, 0x82]).is_ok());
        assert_eq!(d.max_size, 0);
        // Update to exactly the advertised limit (31 + 97 + 31 * 128 = 4096) is fine, one
        // more is not.
        assert!(d.decode(&[0x3f, 0xe1, 0x1f]).is_ok());
        assert_eq!(d.max_size, 4096);
        assert_eq!(
            d.decode(&[0x3f, 0xe2, 0x1f]),
            Err(HpackError::BadSizeUpdate)
        );
        // Update after a field.
        assert_eq!(d.decode(&[0x82, 0x20]), Err(HpackError::BadSizeUpdate));
    }

    #[test]
    fn malformed_blocks_are_errors() {
        let mut d = Decoder::new(4096, 1024);
        assert_eq!(d.decode(&[0x80]), Err(HpackError::BadIndex(0)));
        assert_eq!(d.decode(&[0xbe]), Err(HpackError::BadIndex(62)));
        assert_eq!(d.decode(&[0x41, 0x05, b'a']), Err(HpackError::Truncated));
        assert_eq!(
            d.decode(&[0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01]),
            Err(HpackError::IntegerOverflow)
        );
        assert_eq!(d.decode(&[0x7f]), Err(HpackError::Truncated));
        // A literal longer than the list limit is refused before allocating.
        let mut block = vec![0x00, 0x01, b'a'];
        encode_int(&mut block, 5000, 7, 0x00);
        assert_eq!(d.decode(&block), Err(HpackError::TooLarge(1024)));
    }

    #[test]
    fn literal_encoding_round_trips() {
        let list = fields(&[
            (":authority", "localhost"),
            (":path", "/SpiffeWorkloadAPI/FetchX509SVID"),
            ("x-long", &"v".repeat(300)),
            ("", ""),
        ]);
        let mut block = Vec::new();
        for (n, v) in &list {
            encode_literal(&mut block, n, v);
        }
        let mut d = Decoder::new(4096, 65536);
        assert_eq!(d.decode(&block).unwrap(), list);
        // Literals without indexing never touch the table.
        assert_eq!(d.size, 0);
    }
}
