//! `br`, with `brotli-decompressor`'s streaming state machine.

use std::fmt;

use brotli_decompressor::{
    BrotliDecoderHasMoreOutput, BrotliDecompressStream, BrotliResult, BrotliState, StandardAlloc,
};

use super::{Allowance, ContentCoding, DecodeError, Output, Stage};

/// Decoded bytes are taken out in pieces of this size, so a bomb is stopped within one.
const PIECE: usize = 32 << 10;

/// `br`, limited to the standard window of RFC 7932 (at most 16 MiB): the large-window
/// extension, which lets a stream ask for a 1 GiB window, is refused.
pub(super) struct Brotli {
    state: Box<BrotliState<StandardAlloc, StandardAlloc, StandardAlloc>>,
    out: Output,
    piece: Vec<u8>,
    ended: bool,
}

impl fmt::Debug for Brotli {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Brotli")
            .field("ended", &self.ended)
            .finish_non_exhaustive()
    }
}

impl Brotli {
    pub(super) fn new() -> Self {
        Self {
            state: Box::new(BrotliState::new_strict(
                StandardAlloc::default(),
                StandardAlloc::default(),
                StandardAlloc::default(),
            )),
            out: Output::new(),
            piece: vec![0; PIECE],
            ended: false,
        }
    }

    fn decode(&mut self, input: &[u8]) -> Result<(), DecodeError> {
        let mut offset = 0;
        loop {
            if self.ended {
                return if offset == input.len() {
                    Ok(())
                } else {
                    Err(DecodeError::TrailingData(ContentCoding::Brotli))
                };
            }
            let mut available_in = input.len() - offset;
            let mut available_out = self.piece.len();
            let mut written = 0;
            let mut total_out = 0;
            let result = BrotliDecompressStream(
                &mut available_in,
                &mut offset,
                input,
                &mut available_out,
                &mut written,
                &mut self.piece,
                &mut total_out,
                &mut self.state,
            );
            self.out.put(&self.piece[..written])?;
            match result {
                BrotliResult::ResultSuccess => self.ended = true,
                BrotliResult::NeedsMoreOutput => {}
                // The decoder can say it needs input while decoded bytes still wait in its ring
                // buffer (when the piece filled up): take those first.
                BrotliResult::NeedsMoreInput if BrotliDecoderHasMoreOutput(&self.state) => {}
                BrotliResult::NeedsMoreInput => return Ok(()),
                BrotliResult::ResultFailure => {
                    return Err(DecodeError::Corrupt(ContentCoding::Brotli));
                }
            }
        }
    }
}

impl Stage for Brotli {
    fn push(&mut self, input: &[u8], allowance: Allowance) -> Result<Vec<u8>, DecodeError> {
        self.out.set_allowance(allowance);
        self.decode(input)?;
        Ok(self.out.take())
    }

    fn finish(&mut self, allowance: Allowance) -> Result<Vec<u8>, DecodeError> {
        self.out.set_allowance(allowance);
        self.decode(&[])?;
        if !self.ended {
            return Err(DecodeError::Truncated(ContentCoding::Brotli));
        }
        Ok(self.out.take())
    }
}
