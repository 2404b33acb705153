//! `gzip` and `deflate`, with `flate2` over `miniz_oxide`.

use std::io::Write as _;

use flate2::write::MultiGzDecoder;
use flate2::{Decompress, FlushDecompress, Status};

use super::{Allowance, ContentCoding, DecodeError, Output, Stage};

/// Inflated bytes are taken out in pieces of this size, so a bomb is stopped within one.
const PIECE: usize = 32 << 10;

/// `gzip`: any number of members in a row, each checked against its CRC and length.
#[derive(Debug)]
pub(super) struct Gzip {
    decoder: MultiGzDecoder<Output>,
}

impl Gzip {
    pub(super) fn new() -> Self {
        Self {
            decoder: MultiGzDecoder::new(Output::new()),
        }
    }
}

impl Stage for Gzip {
    fn push(&mut self, input: &[u8], allowance: Allowance) -> Result<Vec<u8>, DecodeError> {
        self.decoder.get_mut().set_allowance(allowance);
        // flate2 writes inflated data to the output in pieces of its buffer's size (32 KiB),
        // so the output's allowance stops a bomb within one piece.
        if self.decoder.write_all(input).is_err() {
            let out = self.decoder.get_ref();
            return Err(out.failure(DecodeError::Corrupt(ContentCoding::Gzip)));
        }
        Ok(self.decoder.get_mut().take())
    }

    fn finish(&mut self, allowance: Allowance) -> Result<Vec<u8>, DecodeError> {
        self.decoder.get_mut().set_allowance(allowance);
        if self.decoder.try_finish().is_err() {
            let out = self.decoder.get_ref();
            return Err(out.failure(DecodeError::Truncated(ContentCoding::Gzip)));
        }
        Ok(self.decoder.get_mut().take())
    }
}

/// `deflate`: zlib (RFC 1950) as HTTP specifies, or the raw deflate (RFC 1951) that some
/// servers send instead, told apart by the first two bytes as browsers do.
#[derive(Debug)]
pub(super) struct Deflate {
    state: DeflateState,
    out: Output,
    ended: bool,
}

#[derive(Debug)]
enum DeflateState {
    /// Fewer than two bytes seen: not known yet which framing.
    Sniffing(Vec<u8>),
    Inflating(Box<Decompress>),
}

/// Whether two bytes are a zlib header: compression method 8, a window of at most 32 KiB,
/// and the check bits that make the pair a multiple of 31.
fn is_zlib_header(cmf: u8, flg: u8) -> bool {
    cmf & 0x0f == 8 && cmf >> 4 <= 7 && (u16::from(cmf) << 8 | u16::from(flg)) % 31 == 0
}

impl Deflate {
    pub(super) fn new() -> Self {
        Self {
            state: DeflateState::Sniffing(Vec::with_capacity(2)),
            out: Output::new(),
            ended: false,
        }
    }

    fn inflate(&mut self, mut input: &[u8]) -> Result<(), DecodeError> {
        let DeflateState::Inflating(inflater) = &mut self.state else {
            return Ok(());
        };
        let corrupt = DecodeError::Corrupt(ContentCoding::Deflate);
        let mut piece = vec![0u8; PIECE];
        loop {
            if self.ended {
                return if input.is_empty() {
                    Ok(())
                } else {
                    Err(DecodeError::TrailingData(ContentCoding::Deflate))
                };
            }
            let (in_before, out_before) = (inflater.total_in(), inflater.total_out());
            let status = inflater
                .decompress(input, &mut piece, FlushDecompress::None)
                .map_err(|_| corrupt.clone())?;
            let consumed = (inflater.total_in() - in_before) as usize;
            let produced = (inflater.total_out() - out_before) as usize;
            input = &input[consumed..];
            self.out.put(&piece[..produced])?;
            if status == Status::StreamEnd {
                self.ended = true;
            } else if consumed == 0 && produced == 0 {
                // No progress: fine when the input is used up (more is needed); with input
                // left and room for output, the data is broken.
                return if input.is_empty() {
                    Ok(())
                } else {
                    Err(corrupt)
                };
            } else if input.is_empty() && produced < piece.len() {
                // Everything this input decodes to is out.
                return Ok(());
            }
        }
    }
}

impl Stage for Deflate {
    fn push(&mut self, input: &[u8], allowance: Allowance) -> Result<Vec<u8>, DecodeError> {
        self.out.set_allowance(allowance);
        match &mut self.state {
            DeflateState::Sniffing(head) => {
                head.extend_from_slice(input);
                if let [cmf, flg, ..] = head[..] {
                    let head = std::mem::take(head);
                    let zlib = is_zlib_header(cmf, flg);
                    self.state = DeflateState::Inflating(Box::new(Decompress::new(zlib)));
                    self.inflate(&head)?;
                }
            }
            DeflateState::Inflating(_) => self.inflate(input)?,
        }
        Ok(self.out.take())
    }

    fn finish(&mut self, allowance: Allowance) -> Result<Vec<u8>, DecodeError> {
        self.out.set_allowance(allowance);
        self.inflate(&[])?;
        if !self.ended {
            return Err(DecodeError::Truncated(ContentCoding::Deflate));
        }
        Ok(self.out.take())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn zlib_headers_are_told_from_raw_deflate() {
        // The headers zlib writes at its compression levels.
        for flg in [0x01, 0x5e, 0x9c, 0xda] {
            assert!(is_zlib_header(0x78, flg));
        }
        // A raw deflate stream's first byte holds BFINAL and BTYPE in its low bits.
        assert!(!is_zlib_header(0xf3, 0x48));
        assert!(!is_zlib_header(0x78, 0x00));
    }
}
