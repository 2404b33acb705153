//! Streaming response scrubbing: [`Scrubber`] for bodies, [`scrub_header_value`] and
//! [`scrub`] for whole byte strings.
//!
//! Every match the scanner reports ([`crate::scan`]) becomes a *region* of input to replace.
//! Overlapping regions (the same value found in two views, or two values that overlap) are
//! merged and replaced once, by the replacement of the region that starts first, and of
//! regions that start together, the one of the value inserted first into the set (so the
//! choice never depends on the order matches were found in); adjacent regions stay separate,
//! each replaced by its own value's replacement.
//!
//! [`Scrubber::push`] releases all input before the scanner's safe point, the earliest offset
//! a future match can start at, and every region that ends by then: no later match can
//! overlap it. A region that reaches past the safe point may still grow (a run of a
//! periodic value, `aaaaaaaa` in `aaaa…`, grows as long as the run), so to keep the
//! hold-back bounded it is released in pieces of the longest single match
//! ([`ScrubSet::longest_region`](crate::ScrubSet)), each replaced by its replacement, once
//! it is known to cover them. Every region is replaced so: one replacement per piece, the
//! last piece possibly shorter; a single occurrence of a value is shorter than a piece, so
//! it gets exactly one. Pieces are
//! counted from the region's start, which no later match can precede, so the output is the
//! same however the input was split, and no byte that can still be part of a value is
//! released before that is known.

use std::borrow::Cow;
use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use zeroize::Zeroizing;

use crate::ScrubSet;
use crate::scan::{Found, FoundSink, Scanner};

/// A part of the input to replace, in absolute offsets.
#[derive(Debug, Clone, Copy)]
struct Region {
    start: u64,
    end: u64,
    entry: u32,
    /// Pieces of it were released already: its replacement is chosen, and matches cut to
    /// begin where it now begins join it rather than compete with it.
    carried: bool,
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
            carried: false,
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
///
/// `Debug` shows only counts: the held-back input may be part of a value. It is wiped when
/// the scrubber is dropped.
pub struct Scrubber {
    set: Arc<ScrubSet>,
    /// `None` when the set is empty: everything passes.
    scanner: Option<Scanner>,
    /// The input from `base` to the scanner's position, not yet released.
    held: Zeroizing<Vec<u8>>,
    base: u64,
    regions: Regions,
    /// A region longer than this is replaced piece by piece; see the module docs.
    piece: u64,
    replaced: u64,
}

impl Scrubber {
    /// A scrubber for one stream, over a snapshot of the agent's scrub set.
    pub fn new(set: Arc<ScrubSet>) -> Self {
        let scanner = set.matchers().map(|m| Scanner::new(Arc::clone(m)));
        Self {
            piece: set.longest_region().max(1) as u64,
            set,
            scanner,
            held: Zeroizing::new(Vec::new()),
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

    /// [`push`](Self::push) for a chunk the caller owns as `Bytes` (a body frame): when
    /// nothing was held back, nothing is found and nothing needs holding back, the chunk
    /// itself is returned, without a copy. Same output as `push` in every case.
    pub fn push_bytes(&mut self, chunk: Bytes) -> Bytes {
        let Some(scanner) = self.scanner.as_mut() else {
            return chunk;
        };
        if !self.held.is_empty() {
            return self.push(&chunk);
        }
        scanner.feed(&chunk, &mut self.regions);
        let safe = scanner.safe_point();
        if self.regions.0.is_empty() && safe == scanner.position() {
            self.base = safe;
            return chunk;
        }
        self.held.extend_from_slice(&chunk);
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

    /// Releases the input before `limit` (the safe point, or the end of the input), with every
    /// region that ends by then replaced, and the whole pieces of a region that reaches past it.
    fn release(&mut self, safe: u64) -> Bytes {
        // Pieces of a region may have been released past the safe point.
        let limit = safe.max(self.base);
        if self.regions.0.is_empty() {
            // The common case: nothing to replace, one copy.
            let len = (limit - self.base) as usize;
            let out = Bytes::copy_from_slice(&self.held[..len]);
            self.held.drain(..len);
            self.base = limit;
            return out;
        }
        self.merge_regions();
        let mut out = BytesMut::with_capacity((limit - self.base) as usize);
        let mut cursor = self.base;
        let mut done = 0;
        let mut pending = false;
        for region in &mut self.regions.0 {
            if region.start >= limit {
                break;
            }
            let held = &self.held[(cursor - self.base) as usize..];
            out.extend_from_slice(&held[..(region.start - cursor) as usize]);
            let replacement = self.set.replacement(region.entry).as_bytes();
            if region.end <= safe {
                // No later match can reach into it: it is final. One replacement per piece,
                // the last one possibly shorter.
                let pieces = (region.end - region.start).div_ceil(self.piece);
                for _ in 0..pieces {
                    out.extend_from_slice(replacement);
                }
                self.replaced += pieces;
                cursor = region.end;
                done += 1;
            } else {
                // It may still grow: release its whole pieces, keep the rest.
                let pieces = (region.end - region.start) / self.piece;
                for _ in 0..pieces {
                    out.extend_from_slice(replacement);
                }
                self.replaced += pieces;
                region.start += pieces * self.piece;
                region.carried |= pieces > 0;
                cursor = region.start;
                pending = true;
                break;
            }
        }
        self.regions.0.drain(..done);
        if !pending && cursor < limit {
            out.extend_from_slice(
                &self.held[(cursor - self.base) as usize..(limit - self.base) as usize],
            );
            cursor = limit;
        }
        self.held.drain(..(cursor - self.base) as usize);
        self.base = cursor;
        out.freeze()
    }

    /// Sorts the regions and merges those that overlap (keeping the replacement of the one
    /// that starts first, or of the same start, of the carried region, else of the first
    /// value). A match reaching into pieces released already is cut to begin after them: it
    /// joins the region they were cut from.
    fn merge_regions(&mut self) {
        let base = self.base;
        let regions = &mut self.regions.0;
        regions.retain_mut(|r| {
            r.start = r.start.max(base);
            r.end > r.start
        });
        regions.sort_unstable_by_key(|r| (r.start, !r.carried, r.entry));
        let mut kept = 0;
        for i in 0..regions.len() {
            let r = regions[i];
            if kept > 0 && r.start < regions[kept - 1].end {
                regions[kept - 1].end = regions[kept - 1].end.max(r.end);
            } else {
                regions[kept] = r;
                kept += 1;
            }
        }
        regions.truncate(kept);
    }
}

impl std::fmt::Debug for Scrubber {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Scrubber")
            .field("set", &self.set)
            .field("held_back", &self.held.len())
            .field("replacements", &self.replaced)
            .finish_non_exhaustive()
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

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn scrub_split(set: &Arc<ScrubSet>, input: &[u8], at: usize) -> Vec<u8> {
        let mut s = Scrubber::new(Arc::clone(set));
        let mut out = s.push(&input[..at]).to_vec();
        out.extend_from_slice(&s.push(&input[at..]));
        out.extend_from_slice(&s.finish());
        out
    }

    /// Found by the fuzz target: two values that match at the same offset (one a prefix of
    /// the other) merged into one region whose replacement depended on where the input was
    /// split.
    #[test]
    fn values_matching_at_the_same_offset_get_the_same_replacement_however_split() {
        for values in [
            ["x".repeat(8), "x".repeat(14)],
            ["x".repeat(14), "x".repeat(8)],
        ] {
            let mut set = ScrubSet::new();
            for (i, v) in values.iter().enumerate() {
                set.insert(v.as_bytes(), &format!("$SPIKE{{ref:{i:032x}}}"))
                    .unwrap();
            }
            let set = Arc::new(set);
            let input = format!("{}\0\0\0", "x".repeat(65));
            let one_shot = scrub(&set, input.as_bytes()).into_owned();
            assert!(one_shot.starts_with(b"$SPIKE{ref:00000000000000000000000000000000}"));
            for at in 0..=input.len() {
                assert_eq!(scrub_split(&set, input.as_bytes(), at), one_shot, "{at}");
            }
        }
    }
}
