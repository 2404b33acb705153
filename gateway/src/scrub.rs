//! Streaming response scrubbing: [`Scrubber`] for bodies, [`scrub_header_value`] and
//! [`scrub`] for whole byte strings.
//!
//! Every match the scanner reports ([`crate::scan`]) becomes a *region* of input to replace.
//! Overlapping regions (the same value found in two views, or two values that overlap) are
//! merged and replaced once, by the replacement of the region that starts first; adjacent
//! regions stay separate, each replaced by its own value's replacement.
//!
//! [`Scrubber::push`] releases all input before the scanner's safe point, the earliest offset
//! a future match can start at. A region that starts before it is released whole, with its
//! replacement, even if it reaches past the safe point; a match found later that begins inside
//! such a released region is cut to begin where it ended (its first part was replaced
//! already). So the output never depends on how the input was split, and no byte that can
//! still be part of a value is released before that is known.

use std::borrow::Cow;
use std::sync::Arc;

use bytes::{Bytes, BytesMut};

use crate::ScrubSet;
use crate::scan::{Found, FoundSink, Scanner};

/// A part of the input to replace, in absolute offsets.
#[derive(Debug, Clone, Copy)]
struct Region {
    start: u64,
    end: u64,
    entry: u32,
}

/// The regions found and not yet released.
#[derive(Debug, Default)]
struct Regions(Vec<Region>);

impl FoundSink for Regions {
    fn found(&mut self, found: Found) {
        self.0.push(Region {
            start: found.start,
            end: found.end,
            entry: found.entry,
        });
    }
}

/// Scrubs one response body as it streams; see the module docs.
///
/// ```
/// use std::sync::Arc;
/// use spike_gateway::{ScrubSet, Scrubber};
///
/// let mut set = ScrubSet::new();
/// set.insert(b"sk-live-4f9a8b7c", "$SPIKE{ref:9f2c0000000000000000000000000000}")?;
/// let mut scrubber = Scrubber::new(Arc::new(set));
/// let mut out = Vec::new();
/// for chunk in [&b"data: {\"key\":\"sk-li"[..], b"ve-4f9a8b7c\"}\n\n"] {
///     out.extend_from_slice(&scrubber.push(chunk));
/// }
/// out.extend_from_slice(&scrubber.finish());
/// assert_eq!(out, b"data: {\"key\":\"$SPIKE{ref:9f2c0000000000000000000000000000}\"}\n\n");
/// # Ok::<(), spike_gateway::ScrubSetError>(())
/// ```
#[derive(Debug)]
pub struct Scrubber {
    set: Arc<ScrubSet>,
    /// `None` when the set is empty: everything passes.
    scanner: Option<Scanner>,
    /// The input from `base` to the scanner's position, not yet released.
    held: Vec<u8>,
    base: u64,
    regions: Regions,
    replaced: u64,
}

impl Scrubber {
    /// A scrubber for one stream, over a snapshot of the agent's scrub set.
    pub fn new(set: Arc<ScrubSet>) -> Self {
        let scanner = set.matchers().map(|m| Scanner::new(Arc::clone(m)));
        Self {
            set,
            scanner,
            held: Vec::new(),
            base: 0,
            regions: Regions::default(),
            replaced: 0,
        }
    }

    /// Scrubs the next chunk of the stream and returns the output that is final: everything
    /// that can no longer be part of a value, with every value replaced. The rest is held
    /// back (at most [`ScrubSet::max_held_back`] bytes) until the next call or
    /// [`finish`](Self::finish). The output may be empty.
    pub fn push(&mut self, chunk: &[u8]) -> Bytes {
        let Some(scanner) = self.scanner.as_mut() else {
            return Bytes::copy_from_slice(chunk);
        };
        scanner.feed(chunk, &mut self.regions);
        self.held.extend_from_slice(chunk);
        let safe = scanner.safe_point();
        self.release(safe)
    }

    /// Ends the stream and returns the rest of the output.
    pub fn finish(mut self) -> Bytes {
        self.end()
    }

    fn end(&mut self) -> Bytes {
        let Some(scanner) = self.scanner.as_mut() else {
            return Bytes::new();
        };
        scanner.finish(&mut self.regions);
        let end = scanner.position();
        self.release(end)
    }

    /// Input bytes held back now.
    pub fn held_back(&self) -> usize {
        self.held.len()
    }

    /// How many values were replaced in the output so far (for the audit line and metrics).
    pub fn replacements(&self) -> u64 {
        self.replaced
    }

    /// Releases the input before `limit`, and the whole of any region starting before it.
    fn release(&mut self, limit: u64) -> Bytes {
        // A released region may reach past the safe point, and a partial match may start
        // inside it; what it covered is out already.
        let limit = limit.max(self.base);
        let regions = &mut self.regions.0;
        if regions.is_empty() {
            // The common case: nothing to replace, one copy.
            let len = (limit - self.base) as usize;
            let out = Bytes::copy_from_slice(&self.held[..len]);
            self.held.drain(..len);
            self.base = limit;
            return out;
        }
        regions.sort_unstable_by_key(|r| r.start);
        let mut out = BytesMut::with_capacity((limit - self.base) as usize);
        let mut cursor = self.base;
        let mut used = 0;
        while let Some(first) = regions.get(used).copied() {
            if first.start >= limit {
                break;
            }
            used += 1;
            let mut end = first.end;
            while let Some(next) = regions.get(used).filter(|r| r.start < end) {
                end = end.max(next.end);
                used += 1;
            }
            if end <= cursor {
                // Inside what a released region replaced already.
                continue;
            }
            let start = first.start.max(cursor);
            out.extend_from_slice(
                &self.held[(cursor - self.base) as usize..(start - self.base) as usize],
            );
            out.extend_from_slice(self.set.replacement(first.entry).as_bytes());
            self.replaced += 1;
            cursor = end;
        }
        regions.drain(..used);
        if cursor < limit {
            out.extend_from_slice(
                &self.held[(cursor - self.base) as usize..(limit - self.base) as usize],
            );
            cursor = limit;
        }
        self.held.drain(..(cursor - self.base) as usize);
        self.base = cursor;
        out.freeze()
    }
}

/// Scrubs a whole byte string (a header value, a buffered body): `Cow::Borrowed` when it holds
/// no value, so the caller can tell whether it changed.
pub fn scrub<'a>(set: &Arc<ScrubSet>, input: &'a [u8]) -> Cow<'a, [u8]> {
    if set.is_empty() {
        return Cow::Borrowed(input);
    }
    let mut scrubber = Scrubber::new(Arc::clone(set));
    let mut out = scrubber.push(input).to_vec();
    out.extend_from_slice(&scrubber.end());
    if scrubber.replacements() == 0 {
        Cow::Borrowed(input)
    } else {
        Cow::Owned(out)
    }
}

/// Scrubs one response header value; `Cow::Borrowed` when it is unchanged. The replacements
/// are visible ASCII, so a scrubbed value is still a valid header value.
pub fn scrub_header_value<'a>(set: &Arc<ScrubSet>, value: &'a [u8]) -> Cow<'a, [u8]> {
    scrub(set, value)
}
