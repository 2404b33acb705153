//! Undoing a response's `Content-Encoding`, so a compressed body is scrubbed like any other.
//!
//! The proxy either decodes a compressed body and serves it uncompressed (dropping
//! `Content-Encoding` and `Content-Length`, since the scrubbed length differs anyway) or
//! refuses the response; it never passes a body it cannot scan. [`Decoder::from_header`]
//! reads the header (an unknown coding is an error the proxy refuses on), and
//! [`Decoder::push`] decodes as the body streams, each chunk as far as it goes, so an
//! event stream stays incremental with gzip, deflate and brotli. zstd output lags the input
//! by up to the frame's window (at most 8 MiB): `ruzstd` releases decoded bytes only once
//! they leave the window, or when the frame ends. So the proxy should not offer `zstd` in
//! `Accept-Encoding` for streamed responses (it decides what the upstream may send).
//!
//! Codings: `gzip` (and `x-gzip`; several members in a row are one body), `deflate` (zlib as
//! the RFC says, or raw deflate as some servers send; told apart by the zlib header check
//! bits), `br` and `zstd` (window at most 8 MiB, as RFC 9659 asks of HTTP; dictionaries are
//! refused), `identity`, and lists of them (`gzip, br` is undone right to left). All decoders
//! are pure Rust.
//!
//! # Decompression bombs
//!
//! Every stage's output is counted as it is produced, in pieces of at most 128 KiB, and the
//! decoding stops with an error as soon as the total passes [`Limits::max_decoded`] or grows
//! beyond [`Limits::max_ratio`] times the encoded bytes received plus
//! [`Limits::ratio_allowance`] (small bodies compress far better than their ratio suggests).
//! Intermediate stages of a chained coding are held to the same limits, so a bomb inside a
//! bomb stops at the first. Memory stays bounded by the limits, not by what the body claims.

mod brotli;
mod flate;
mod zstd;

use bytes::Bytes;

/// A content coding this module decodes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum ContentCoding {
    /// `gzip` or `x-gzip`.
    Gzip,
    /// `deflate`: zlib, or raw deflate.
    Deflate,
    /// `br`.
    Brotli,
    /// `zstd`.
    Zstd,
}

/// Caps on what decoding may produce.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Most decoded bytes in all.
    pub max_decoded: u64,
    /// Most decoded bytes per encoded byte, beyond the allowance.
    pub max_ratio: u64,
    /// Decoded bytes allowed on top of the ratio.
    pub ratio_allowance: u64,
}

impl Default for Limits {
    /// 64 MiB in all; 200 decoded bytes per encoded byte beyond the first MiB (JSON and text
    /// compress 5 to 20 times, very repetitive logs rarely beyond 100).
    fn default() -> Self {
        Self {
            max_decoded: 64 << 20,
            max_ratio: 200,
            ratio_allowance: 1 << 20,
        }
    }
}

/// Why a body could not be decoded. None of them carries body content.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum DecodeError {
    /// A coding this module does not decode (the header's text is not repeated: it comes
    /// from the upstream).
    #[error("unsupported content coding")]
    UnsupportedCoding,
    /// More codings than [`MAX_CODINGS`] in the header.
    #[error("more than {MAX_CODINGS} content codings")]
    TooManyCodings,
    /// The decoded body passed [`Limits::max_decoded`].
    #[error("decoded body larger than {limit} bytes")]
    TooLarge {
        /// The limit that was passed.
        limit: u64,
    },
    /// The decoded body grew faster than [`Limits::max_ratio`] allows.
    #[error("decoded body expands more than {ratio} times its encoded size")]
    Expansion {
        /// The ratio that was passed.
        ratio: u64,
    },
    /// The encoded data is not valid.
    #[error("invalid {0:?} data")]
    Corrupt(ContentCoding),
    /// The body ended in the middle of the encoded data.
    #[error("{0:?} data ends early")]
    Truncated(ContentCoding),
    /// Bytes follow the end of the encoded data.
    #[error("data after the end of the {0:?} stream")]
    TrailingData(ContentCoding),
}

/// The most codings a `Content-Encoding` may list (`identity` not counted).
pub const MAX_CODINGS: usize = 4;

/// Reads a `Content-Encoding` value (several header lines joined with `,`) into the codings
/// in the order they were applied. `identity` and empty list elements are skipped.
pub fn parse_content_encoding(value: &[u8]) -> Result<Vec<ContentCoding>, DecodeError> {
    let mut codings = Vec::new();
    for element in value.split(|&b| b == b',') {
        let name = element.trim_ascii();
        let coding = if name.eq_ignore_ascii_case(b"gzip") || name.eq_ignore_ascii_case(b"x-gzip") {
            ContentCoding::Gzip
        } else if name.eq_ignore_ascii_case(b"deflate") {
            ContentCoding::Deflate
        } else if name.eq_ignore_ascii_case(b"br") {
            ContentCoding::Brotli
        } else if name.eq_ignore_ascii_case(b"zstd") {
            ContentCoding::Zstd
        } else if name.is_empty() || name.eq_ignore_ascii_case(b"identity") {
            continue;
        } else {
            return Err(DecodeError::UnsupportedCoding);
        };
        if codings.len() == MAX_CODINGS {
            return Err(DecodeError::TooManyCodings);
        }
        codings.push(coding);
    }
    Ok(codings)
}

/// How much a stage may have produced in all by now, and the error for passing it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Allowance {
    total: u64,
    error: DecodeError,
}

impl Allowance {
    /// The allowance after `encoded` bytes of the body came in.
    fn new(limits: &Limits, encoded: u64) -> Self {
        let by_ratio = limits
            .max_ratio
            .saturating_mul(encoded)
            .saturating_add(limits.ratio_allowance);
        if by_ratio < limits.max_decoded {
            Self {
                total: by_ratio,
                error: DecodeError::Expansion {
                    ratio: limits.max_ratio,
                },
            }
        } else {
            Self {
                total: limits.max_decoded,
                error: DecodeError::TooLarge {
                    limit: limits.max_decoded,
                },
            }
        }
    }
}

/// A stage's decoded output, counted against its allowance as it is produced. `Debug` shows
/// only counts: the output is body content.
pub(crate) struct Output {
    buf: Vec<u8>,
    produced: u64,
    allowance: Allowance,
    /// The allowance error, once it was hit.
    over: Option<DecodeError>,
}

impl Output {
    pub(crate) fn new() -> Self {
        Self {
            buf: Vec::new(),
            produced: 0,
            allowance: Allowance {
                total: 0,
                error: DecodeError::TooLarge { limit: 0 },
            },
            over: None,
        }
    }

    pub(crate) fn set_allowance(&mut self, allowance: Allowance) {
        self.allowance = allowance;
    }

    /// Appends decoded bytes, or fails if they pass the allowance.
    pub(crate) fn put(&mut self, bytes: &[u8]) -> Result<(), DecodeError> {
        let produced = self.produced.saturating_add(bytes.len() as u64);
        if produced > self.allowance.total {
            let error = self.allowance.error.clone();
            self.over = Some(error.clone());
            return Err(error);
        }
        self.produced = produced;
        self.buf.extend_from_slice(bytes);
        Ok(())
    }

    /// The allowance error if it was hit, else `otherwise`: a decoder reports a failing
    /// output through its own error type.
    pub(crate) fn failure(&self, otherwise: DecodeError) -> DecodeError {
        self.over.clone().unwrap_or(otherwise)
    }

    /// The output produced since the last call.
    pub(crate) fn take(&mut self) -> Vec<u8> {
        std::mem::take(&mut self.buf)
    }
}

impl std::fmt::Debug for Output {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Output")
            .field("produced", &self.produced)
            .field("buffered", &self.buf.len())
            .finish_non_exhaustive()
    }
}

impl std::io::Write for Output {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.put(bytes)
            .map(|()| bytes.len())
            .map_err(|_| std::io::Error::other("decoded body passed its limit"))
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// One decoding stage. Each owns its [`Output`].
trait Stage: std::fmt::Debug + Send {
    /// Decodes `input`, the bytes after those pushed before, as far as it goes, and returns
    /// the output produced.
    fn push(&mut self, input: &[u8], allowance: Allowance) -> Result<Vec<u8>, DecodeError>;
    /// Ends the input and returns the last output; fails if the encoded data is incomplete.
    fn finish(&mut self, allowance: Allowance) -> Result<Vec<u8>, DecodeError>;
}

fn stage(coding: ContentCoding) -> Box<dyn Stage> {
    match coding {
        ContentCoding::Gzip => Box::new(flate::Gzip::new()),
        ContentCoding::Deflate => Box::new(flate::Deflate::new()),
        ContentCoding::Brotli => Box::new(brotli::Brotli::new()),
        ContentCoding::Zstd => Box::new(zstd::Zstd::new()),
    }
}

/// Decodes one response body as it streams; see the module docs.
#[derive(Debug)]
pub struct Decoder {
    /// In decoding order.
    stages: Vec<Box<dyn Stage>>,
    limits: Limits,
    encoded: u64,
}

impl Decoder {
    /// A decoder for a body encoded with `codings`, in the order they were applied. With no
    /// codings, the body passes as it is.
    pub fn new(codings: &[ContentCoding], limits: Limits) -> Self {
        Self {
            stages: codings.iter().rev().map(|&c| stage(c)).collect(),
            limits,
            encoded: 0,
        }
    }

    /// A decoder for a body with this `Content-Encoding` value.
    pub fn from_header(content_encoding: &[u8], limits: Limits) -> Result<Self, DecodeError> {
        Ok(Self::new(
            &parse_content_encoding(content_encoding)?,
            limits,
        ))
    }

    /// Whether the body passes undecoded (no coding, or only `identity`).
    pub fn is_identity(&self) -> bool {
        self.stages.is_empty()
    }

    /// Decodes the next chunk of the body and returns what it decodes to so far.
    pub fn push(&mut self, chunk: &[u8]) -> Result<Bytes, DecodeError> {
        self.encoded = self.encoded.saturating_add(chunk.len() as u64);
        self.run(chunk, false)
    }

    /// Ends the body; fails if the encoded data is incomplete.
    pub fn finish(mut self) -> Result<Bytes, DecodeError> {
        self.run(&[], true)
    }

    fn run(&mut self, chunk: &[u8], end: bool) -> Result<Bytes, DecodeError> {
        let mut input = chunk.to_vec();
        for stage in &mut self.stages {
            let allowance = Allowance::new(&self.limits, self.encoded);
            let mut output = stage.push(&input, allowance.clone())?;
            if end {
                output.extend(stage.finish(allowance)?);
            }
            input = output;
        }
        Ok(Bytes::from(input))
    }
}
