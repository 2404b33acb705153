//! `zstd`, with `ruzstd`'s frame decoder driven one block at a time.
//!
//! `ruzstd` reads from `io::Read` and cannot resume in the middle of a block, and its
//! slice API decodes every block it is given at once (a few KiB of RLE blocks can be GiBs).
//! So this stage reads the frame format itself (RFC 8878 §3.1: frame header, 3-byte block
//! headers, optional checksum, skippable frames), buffers input until one whole unit is
//! there, and hands `ruzstd` exactly one frame header or one block at a time. A block
//! decodes to at most 128 KiB, which bounds each step; the window is capped at 8 MiB, the
//! most RFC 9659 lets an HTTP sender use. Decoded bytes come out once they leave the window
//! (all of them when the frame ends), so output lags by up to the window.

use std::fmt;

use ruzstd::decoding::{BlockDecodingStrategy, FrameDecoder};

use super::{Allowance, ContentCoding, DecodeError, Output, Stage};

/// The largest window accepted (RFC 9659 §3).
const MAX_WINDOW: u64 = 8 << 20;

const FRAME_MAGIC: u32 = 0xFD2F_B528;
/// Skippable frames have magic numbers 0x184D2A50 to 0x184D2A5F.
const SKIPPABLE_MAGIC: u32 = 0x184D_2A50;

const CORRUPT: DecodeError = DecodeError::Corrupt(ContentCoding::Zstd);

/// Where in the stream the next bytes belong.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Next {
    /// A frame's magic number (or the end of the body).
    Frame,
    /// The rest of a skippable frame.
    Skip(u64),
    /// A block header and its content; `checksum` if the frame ends with one.
    Block { checksum: bool },
}

/// `zstd`; see the module docs.
pub(super) struct Zstd {
    decoder: Box<FrameDecoder>,
    /// Input not yet handed to the decoder: less than one whole unit.
    pending: Vec<u8>,
    next: Next,
    /// Whether a frame (not a skippable one) has ended; a body without one is not zstd data.
    frame_seen: bool,
    out: Output,
}

impl fmt::Debug for Zstd {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Zstd")
            .field("next", &self.next)
            .field("pending", &self.pending.len())
            .finish_non_exhaustive()
    }
}

fn le_u32(bytes: &[u8]) -> u32 {
    let mut word = [0u8; 4];
    word.copy_from_slice(&bytes[..4]);
    u32::from_le_bytes(word)
}

/// The length of a frame header (magic number included) from its descriptor byte.
fn frame_header_len(descriptor: u8) -> usize {
    let single_segment = descriptor & 0x20 != 0;
    let window = if single_segment { 0 } else { 1 };
    let dictionary = [0, 1, 2, 4][usize::from(descriptor & 0x03)];
    let content_size = match descriptor >> 6 {
        0 => usize::from(single_segment),
        1 => 2,
        2 => 4,
        _ => 8,
    };
    4 + 1 + window + dictionary + content_size
}

impl Zstd {
    pub(super) fn new() -> Self {
        let mut decoder = Box::new(FrameDecoder::new());
        decoder.set_max_window_size(MAX_WINDOW);
        Self {
            decoder,
            pending: Vec::new(),
            next: Next::Frame,
            frame_seen: false,
            out: Output::new(),
        }
    }

    /// Decodes every whole unit in `pending`.
    fn decode(&mut self) -> Result<(), DecodeError> {
        let pending = std::mem::take(&mut self.pending);
        let mut used = 0;
        let result = loop {
            match self.step(&pending[used..]) {
                Ok(Some(n)) => used += n,
                Ok(None) => break Ok(()),
                Err(e) => break Err(e),
            }
        };
        self.pending = pending;
        self.pending.drain(..used);
        result
    }

    /// Handles the unit at the start of `input`: returns how many bytes it took, or `None`
    /// if it is not whole yet.
    fn step(&mut self, input: &[u8]) -> Result<Option<usize>, DecodeError> {
        match self.next {
            Next::Frame => {
                if input.len() < 4 {
                    return Ok(None);
                }
                let magic = le_u32(input);
                if magic & 0xFFFF_FFF0 == SKIPPABLE_MAGIC {
                    if input.len() < 8 {
                        return Ok(None);
                    }
                    self.next = Next::Skip(u64::from(le_u32(&input[4..])));
                    return Ok(Some(8));
                }
                if magic != FRAME_MAGIC {
                    return Err(CORRUPT);
                }
                let Some(&descriptor) = input.get(4) else {
                    return Ok(None);
                };
                let len = frame_header_len(descriptor);
                if input.len() < len {
                    return Ok(None);
                }
                // `reset` refuses a frame that needs a dictionary (none is configured) and
                // one whose window is larger than MAX_WINDOW.
                self.decoder.reset(&input[..len]).map_err(|_| CORRUPT)?;
                self.next = Next::Block {
                    checksum: descriptor & 0x04 != 0,
                };
                Ok(Some(len))
            }
            Next::Skip(0) => {
                self.next = Next::Frame;
                Ok(Some(0))
            }
            Next::Skip(_) if input.is_empty() => Ok(None),
            Next::Skip(left) => {
                let take = left.min(input.len() as u64);
                self.next = Next::Skip(left - take);
                Ok(Some(take as usize))
            }
            Next::Block { checksum } => {
                if input.len() < 3 {
                    return Ok(None);
                }
                let header =
                    u32::from(input[0]) | u32::from(input[1]) << 8 | u32::from(input[2]) << 16;
                let last = header & 1 != 0;
                let size = (header >> 3) as usize;
                let content = match (header >> 1) & 3 {
                    0 => size, // raw
                    1 => 1,    // RLE: one byte repeated `size` times
                    2 => size, // compressed
                    _ => return Err(CORRUPT),
                };
                let len = 3 + content + if last && checksum { 4 } else { 0 };
                if input.len() < len {
                    return Ok(None);
                }
                self.decoder
                    .decode_blocks(&input[..len], BlockDecodingStrategy::UptoBlocks(1))
                    .map_err(|_| CORRUPT)?;
                // Everything but the window (all of it once the frame is done).
                self.decoder
                    .collect_to_writer(&mut self.out)
                    .map_err(|_| self.out.failure(CORRUPT))?;
                if last {
                    // The calculated checksum covers what has been collected, so it is
                    // compared only now that the whole frame is out.
                    if checksum
                        && self.decoder.get_checksum_from_data()
                            != self.decoder.get_calculated_checksum()
                    {
                        return Err(CORRUPT);
                    }
                    self.next = Next::Frame;
                    self.frame_seen = true;
                }
                Ok(Some(len))
            }
        }
    }
}

impl Stage for Zstd {
    fn push(&mut self, input: &[u8], allowance: Allowance) -> Result<Vec<u8>, DecodeError> {
        self.out.set_allowance(allowance);
        self.pending.extend_from_slice(input);
        self.decode()?;
        Ok(self.out.take())
    }

    fn finish(&mut self, allowance: Allowance) -> Result<Vec<u8>, DecodeError> {
        self.out.set_allowance(allowance);
        self.decode()?;
        if self.next != Next::Frame || !self.pending.is_empty() || !self.frame_seen {
            return Err(DecodeError::Truncated(ContentCoding::Zstd));
        }
        Ok(self.out.take())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frame_header_lengths_follow_the_descriptor() {
        // Single segment, 1-byte content size, no dictionary: magic + descriptor + FCS.
        assert_eq!(frame_header_len(0x20), 6);
        // Window descriptor, no content size.
        assert_eq!(frame_header_len(0x00), 6);
        // Window, 4-byte dictionary id, 8-byte content size.
        assert_eq!(frame_header_len(0xC3), 4 + 1 + 1 + 4 + 8);
    }
}
