//! Lets gRPC C-core and grpc-java clients talk to a tonic server over a Unix socket.
//!
//! Over a Unix socket, gRPC C-core (Python, C++, Ruby, PHP) and grpc-java send the socket
//! path, percent-encoded, as `:authority` (`tmp%2Fspike-agent%2Fagent.sock`). The `h2` crate
//! under tonic validates `:authority` as a URI authority and resets every such stream with
//! `PROTOCOL_ERROR` (a long-standing open h2 issue), so py-spiffe could never fetch an SVID.
//! SPIRE ignores the authority on its socket; so do we: the client-to-server bytes pass
//! through [`RequestRewriter`], which re-encodes every request header block with
//! `:authority: localhost` (what grpc-go and tonic clients send on Unix sockets) and passes
//! every other byte through unchanged.
//!
//! Why re-encode whole blocks: HPACK blocks refer to a per-connection dynamic table, so one
//! field cannot be edited in place without the server's table drifting from the client's.
//! The rewriter decodes each block with its own copy of the client's table and re-encodes
//! every field as a literal *without indexing*: the server's table then stays empty and every
//! block it sees stands alone, so the two can never disagree. Names, values and order are kept
//! (the authority aside), so `h2` still applies all its own header checks. Anything that is not
//! well-formed HTTP/2 header framing closes the connection.

use std::io;

use crate::hpack::{Decoder, encode_literal};

const PREFACE: &[u8; 24] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
const FRAME_HEADER_LEN: usize = 9;
const HEADERS: u8 = 0x1;
const CONTINUATION: u8 = 0x9;
const END_STREAM: u8 = 0x1;
const END_HEADERS: u8 = 0x4;
const PADDED: u8 = 0x8;
const PRIORITY: u8 = 0x20;
/// The SETTINGS_MAX_FRAME_SIZE h2 advertises by default (tonic keeps it): incoming header
/// frames may not be larger, and re-encoded ones are split to fit.
const MAX_FRAME: usize = 16_384;
/// Largest header block accepted, compressed or decoded.
const MAX_BLOCK: usize = 64 * 1024;
/// SETTINGS_HEADER_TABLE_SIZE as h2 advertises it (the protocol default).
const TABLE_SIZE: usize = 4096;
const AUTHORITY: &[u8] = b":authority";
const LOCALHOST: &[u8] = b"localhost";

/// Rewrites the client-to-server half of one HTTP/2 connection (see the module docs).
#[derive(Debug)]
pub(crate) struct RequestRewriter {
    phase: Phase,
    /// Received, not yet processed.
    input: Vec<u8>,
    /// Processed, not yet handed to the server.
    output: Vec<u8>,
    /// Payload bytes of the current non-header frame still to copy through.
    copy: usize,
    /// A header block waiting for its CONTINUATION frames.
    block: Option<Block>,
    decoder: Decoder,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    Preface,
    Frames,
    /// Not HTTP/2 (no preface): bytes pass untouched and the server rejects them itself.
    Raw,
}

#[derive(Debug)]
struct Block {
    stream: [u8; 4],
    end_stream: bool,
    priority: Option<[u8; 5]>,
    fragment: Vec<u8>,
}

fn malformed(what: &str) -> io::Error {
    io::Error::new(
        io::ErrorKind::InvalidData,
        format!("malformed HTTP/2 from client: {what}"),
    )
}

impl RequestRewriter {
    pub(crate) fn new() -> Self {
        Self {
            phase: Phase::Preface,
            input: Vec::new(),
            output: Vec::new(),
            copy: 0,
            block: None,
            decoder: Decoder::new(TABLE_SIZE, MAX_BLOCK),
        }
    }

    /// Takes bytes received from the client.
    pub(crate) fn push(&mut self, data: &[u8]) -> io::Result<()> {
        self.input.extend_from_slice(data);
        self.process()
    }

    /// Bytes ready for the server.
    pub(crate) fn ready(&self) -> &[u8] {
        &self.output
    }

    /// Marks `n` bytes of [`Self::ready`] as handed over.
    pub(crate) fn consume(&mut self, n: usize) {
        self.output.drain(..n.min(self.output.len()));
    }

    fn process(&mut self) -> io::Result<()> {
        loop {
            match self.phase {
                Phase::Raw => {
                    self.output.append(&mut self.input);
                    return Ok(());
                }
                Phase::Preface => {
                    let n = self.input.len().min(PREFACE.len());
                    if self.input[..n] != PREFACE[..n] {
                        self.phase = Phase::Raw;
                        continue;
                    }
                    if n < PREFACE.len() {
                        return Ok(());
                    }
                    self.output.extend(self.input.drain(..n));
                    self.phase = Phase::Frames;
                }
                Phase::Frames => {
                    if self.copy > 0 {
                        let n = self.copy.min(self.input.len());
                        self.output.extend(self.input.drain(..n));
                        self.copy -= n;
                        if self.copy > 0 {
                            return Ok(());
                        }
                        continue;
                    }
                    let Some(head) = self.input.get(..FRAME_HEADER_LEN) else {
                        return Ok(());
                    };
                    let len = usize::from(head[0]) << 16
                        | usize::from(head[1]) << 8
                        | usize::from(head[2]);
                    let kind = head[3];
                    if kind != HEADERS && kind != CONTINUATION {
                        if self.block.is_some() {
                            return Err(malformed("frame interleaved in a header block"));
                        }
                        self.output.extend(self.input.drain(..FRAME_HEADER_LEN));
                        self.copy = len;
                        continue;
                    }
                    if len > MAX_FRAME {
                        return Err(malformed("header frame larger than the maximum frame size"));
                    }
                    if self.input.len() < FRAME_HEADER_LEN + len {
                        return Ok(());
                    }
                    let frame: Vec<u8> = self.input.drain(..FRAME_HEADER_LEN + len).collect();
                    self.header_frame(&frame)?;
                }
            }
        }
    }

    fn header_frame(&mut self, frame: &[u8]) -> io::Result<()> {
        let (kind, flags) = (frame[3], frame[4]);
        let stream: [u8; 4] = [frame[5], frame[6], frame[7], frame[8]];
        let payload = &frame[FRAME_HEADER_LEN..];
        if kind == HEADERS {
            if self.block.is_some() {
                return Err(malformed("HEADERS inside a header block"));
            }
            let mut start = 0;
            let mut pad = 0;
            if flags & PADDED != 0 {
                pad = usize::from(*payload.first().ok_or_else(|| malformed("padding"))?);
                start = 1;
            }
            let priority = if flags & PRIORITY != 0 {
                let p = payload
                    .get(start..start + 5)
                    .ok_or_else(|| malformed("priority"))?;
                start += 5;
                Some([p[0], p[1], p[2], p[3], p[4]])
            } else {
                None
            };
            let end = payload
                .len()
                .checked_sub(pad)
                .filter(|&end| end >= start)
                .ok_or_else(|| malformed("padding longer than the frame"))?;
            self.block = Some(Block {
                stream,
                end_stream: flags & END_STREAM != 0,
                priority,
                fragment: payload[start..end].to_vec(),
            });
        } else {
            let block = self
                .block
                .as_mut()
                .filter(|b| b.stream == stream)
                .ok_or_else(|| malformed("CONTINUATION without its HEADERS"))?;
            if block.fragment.len() + payload.len() > MAX_BLOCK {
                return Err(malformed("header block too large"));
            }
            block.fragment.extend_from_slice(payload);
        }
        if flags & END_HEADERS != 0
            && let Some(block) = self.block.take()
        {
            self.emit(block)?;
        }
        Ok(())
    }

    fn emit(&mut self, block: Block) -> io::Result<()> {
        let fields = self
            .decoder
            .decode(&block.fragment)
            .map_err(|e| malformed(&e.to_string()))?;
        let mut encoded = Vec::with_capacity(block.fragment.len() * 2 + 16);
        for (name, value) in &fields {
            let value = if name.as_slice() == AUTHORITY {
                LOCALHOST
            } else {
                value.as_slice()
            };
            encode_literal(&mut encoded, name, value);
        }

        let priority_len = if block.priority.is_some() { 5 } else { 0 };
        let (first, mut rest) = encoded.split_at(encoded.len().min(MAX_FRAME - priority_len));
        let mut flags = 0;
        if block.end_stream {
            flags |= END_STREAM;
        }
        if block.priority.is_some() {
            flags |= PRIORITY;
        }
        if rest.is_empty() {
            flags |= END_HEADERS;
        }
        self.frame_header(priority_len + first.len(), HEADERS, flags, block.stream);
        if let Some(p) = block.priority {
            self.output.extend_from_slice(&p);
        }
        self.output.extend_from_slice(first);
        while !rest.is_empty() {
            let (chunk, tail) = rest.split_at(rest.len().min(MAX_FRAME));
            let flags = if tail.is_empty() { END_HEADERS } else { 0 };
            self.frame_header(chunk.len(), CONTINUATION, flags, block.stream);
            self.output.extend_from_slice(chunk);
            rest = tail;
        }
        Ok(())
    }

    fn frame_header(&mut self, len: usize, kind: u8, flags: u8, stream: [u8; 4]) {
        // `len` is at most MAX_FRAME, so it fits the 24-bit length field.
        let len = u32::try_from(len).unwrap_or(u32::MAX).to_be_bytes();
        self.output.extend_from_slice(&len[1..]);
        self.output.push(kind);
        self.output.push(flags);
        self.output.extend_from_slice(&stream);
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    struct Frame {
        kind: u8,
        flags: u8,
        stream: u32,
        payload: Vec<u8>,
    }

    fn frame(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
        let mut out = u32::try_from(payload.len()).unwrap().to_be_bytes()[1..].to_vec();
        out.push(kind);
        out.push(flags);
        out.extend_from_slice(&stream.to_be_bytes());
        out.extend_from_slice(payload);
        out
    }

    fn parse(mut bytes: &[u8]) -> Vec<Frame> {
        assert!(bytes.starts_with(PREFACE));
        bytes = &bytes[PREFACE.len()..];
        let mut frames = Vec::new();
        while !bytes.is_empty() {
            let len =
                usize::from(bytes[0]) << 16 | usize::from(bytes[1]) << 8 | usize::from(bytes[2]);
            frames.push(Frame {
                kind: bytes[3],
                flags: bytes[4],
                stream: u32::from_be_bytes(bytes[5..9].try_into().unwrap()),
                payload: bytes[9..9 + len].to_vec(),
            });
            bytes = &bytes[9 + len..];
        }
        frames
    }

    fn hex(s: &str) -> Vec<u8> {
        let s: String = s.split_whitespace().collect();
        (0..s.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
            .collect()
    }

    /// Feeds `input` in chunks of `step` bytes and returns everything produced.
    fn run(input: &[u8], step: usize) -> io::Result<Vec<u8>> {
        let mut r = RequestRewriter::new();
        let mut out = Vec::new();
        for chunk in input.chunks(step) {
            r.push(chunk)?;
            out.extend_from_slice(r.ready());
            let n = r.ready().len();
            r.consume(n);
        }
        Ok(out)
    }

    fn decode_all(frames: &[Frame]) -> Vec<Vec<(Vec<u8>, Vec<u8>)>> {
        let mut d = Decoder::new(TABLE_SIZE, MAX_BLOCK);
        let mut blocks = Vec::new();
        let mut current = Vec::new();
        for f in frames {
            if f.kind == HEADERS || f.kind == CONTINUATION {
                let start = if f.flags & PRIORITY != 0 { 5 } else { 0 };
                current.extend_from_slice(&f.payload[start..]);
                if f.flags & END_HEADERS != 0 {
                    blocks.push(d.decode(&current).unwrap());
                    current.clear();
                }
            }
        }
        blocks
    }

    fn client_stream() -> Vec<u8> {
        let mut input = PREFACE.to_vec();
        // SETTINGS and WINDOW_UPDATE pass through untouched.
        input.extend(frame(0x4, 0, 0, &[0, 3, 0, 0, 0, 100]));
        input.extend(frame(0x8, 0, 0, &[0, 0, 0x10, 0]));
        // Request 1 (RFC 7541 C.4.1, Huffman authority), padded and with priority, split
        // into HEADERS + CONTINUATION.
        let block1 = hex("8286 8441 8cf1 e3c2 e5f2 3a6b a0ab 90f4 ff");
        let mut payload = vec![3];
        payload.extend_from_slice(&[0x80, 0, 0, 0, 15]);
        payload.extend_from_slice(&block1[..6]);
        payload.extend_from_slice(&[0, 0, 0]);
        input.extend(frame(HEADERS, PADDED | PRIORITY, 1, &payload));
        input.extend(frame(CONTINUATION, END_HEADERS, 1, &block1[6..]));
        input.extend(frame(0x0, END_STREAM, 1, b"hello data"));
        // Request 2 refers to the authority through the dynamic table (index 62).
        let block2 = hex("8286 84be 5886 a8eb 1064 9cbf");
        input.extend(frame(HEADERS, END_HEADERS | END_STREAM, 3, &block2));
        input
    }

    #[test]
    fn rewrites_authority_and_keeps_everything_else() {
        let input = client_stream();
        for step in [1, 2, 7, 64, input.len()] {
            let out = run(&input, step).unwrap();
            let frames = parse(&out);
            let kinds: Vec<u8> = frames.iter().map(|f| f.kind).collect();
            assert_eq!(kinds, [0x4, 0x8, HEADERS, 0x0, HEADERS], "step {step}");
            assert_eq!(frames[0].payload, [0, 3, 0, 0, 0, 100]);
            assert_eq!(frames[3].payload, b"hello data");
            assert_eq!(frames[3].flags, END_STREAM);
            // Request 1: priority kept, padding dropped, one frame with END_HEADERS.
            assert_eq!(frames[2].flags, PRIORITY | END_HEADERS);
            assert_eq!(frames[2].stream, 1);
            assert_eq!(&frames[2].payload[..5], &[0x80, 0, 0, 0, 15]);
            assert_eq!(frames[4].flags, END_HEADERS | END_STREAM);
            assert_eq!(frames[4].stream, 3);

            let blocks = decode_all(&frames);
            let want = |extra: &[(&str, &str)]| -> Vec<(Vec<u8>, Vec<u8>)> {
                [
                    (":method", "GET"),
                    (":scheme", "http"),
                    (":path", "/"),
                    (":authority", "localhost"),
                ]
                .iter()
                .chain(extra)
                .map(|(n, v)| (n.as_bytes().to_vec(), v.as_bytes().to_vec()))
                .collect()
            };
            assert_eq!(blocks[0], want(&[]));
            assert_eq!(blocks[1], want(&[("cache-control", "no-cache")]));
        }
    }

    #[test]
    fn large_blocks_are_split_into_continuations() {
        let mut block = Vec::new();
        encode_literal(&mut block, b":path", b"/x");
        encode_literal(&mut block, b"x-big", &vec![b'a'; 20_000]);
        let mut input = PREFACE.to_vec();
        input.extend(frame(HEADERS, 0, 5, &block[..10_000]));
        input.extend(frame(CONTINUATION, END_HEADERS, 5, &block[10_000..]));
        let frames = parse(&run(&input, 4096).unwrap());
        assert_eq!(frames.len(), 2);
        assert_eq!(frames[0].kind, HEADERS);
        assert_eq!(frames[0].flags & END_HEADERS, 0);
        assert_eq!(frames[0].payload.len(), MAX_FRAME);
        assert_eq!(frames[1].kind, CONTINUATION);
        assert_eq!(frames[1].flags, END_HEADERS);
        let blocks = decode_all(&frames);
        assert_eq!(blocks[0][1].1.len(), 20_000);
    }

    #[test]
    fn broken_framing_is_an_error() {
        let block = hex("8286 84");
        // A DATA frame in the middle of a header block.
        let mut input = PREFACE.to_vec();
        input.extend(frame(HEADERS, 0, 1, &block));
        input.extend(frame(0x0, 0, 1, b"x"));
        assert!(run(&input, 100).is_err());
        // CONTINUATION on another stream, and without HEADERS.
        let mut input = PREFACE.to_vec();
        input.extend(frame(HEADERS, 0, 1, &block));
        input.extend(frame(CONTINUATION, END_HEADERS, 3, &block));
        assert!(run(&input, 100).is_err());
        let mut input = PREFACE.to_vec();
        input.extend(frame(CONTINUATION, END_HEADERS, 1, &block));
        assert!(run(&input, 100).is_err());
        // Padding longer than the payload.
        let mut input = PREFACE.to_vec();
        input.extend(frame(HEADERS, END_HEADERS | PADDED, 1, &[200, 0x82]));
        assert!(run(&input, 100).is_err());
        // A bad HPACK block.
        let mut input = PREFACE.to_vec();
        input.extend(frame(HEADERS, END_HEADERS, 1, &[0x80]));
        assert!(run(&input, 100).is_err());
        // An oversized header frame.
        let mut input = PREFACE.to_vec();
        input.extend(frame(HEADERS, END_HEADERS, 1, &vec![0x82; MAX_FRAME + 1]));
        assert!(run(&input, 100_000).is_err());
    }

    #[test]
    fn non_http2_bytes_pass_through() {
        let input = b"GET / HTTP/1.1\r\nHost: x\r\n\r\n";
        assert_eq!(run(input, 3).unwrap(), input);
    }
}
