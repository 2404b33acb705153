//! The scanner shared by the scrubber and the detector: every decoding view of the input,
//! each searched for every pattern of every value, incrementally.
//!
//! For each input byte, each view ([`crate::views`]) produces decoded units; each decoded byte
//! steps one case-folding automaton ([`crate::matcher`]) that holds every pattern. Hex matches
//! in any case; a raw or base64 pattern, which must match exactly, is checked against the
//! view's recent decoded bytes when the automaton reports it (rare outside real matches), so
//! each decoded byte costs one transition. A match in a view masks the input span of the
//! decoded bytes it covers, widened over a base64 boundary character on either side when the
//! pattern has one and the neighbouring decoded byte is a base64 character
//! ([`crate::patterns`]).
//! The neighbour after a match has not arrived yet when the match completes, so such a match
//! waits for the view's next decoded byte (or the end of the input) before it is reported.
//!
//! # Sleeping views
//!
//! An escaping view decodes to the same bytes as the identity view except around escape
//! sequences, and a match in it that covers no escape is found by the identity view too. So
//! an escaping view sleeps as soon as nothing is pending in it and its partial match (with
//! the byte before it) lies within the literal bytes since its last escape: every match it
//! could still report would be the identity view's. The byte that introduces its escapes
//! (`%`, `\`, `&`) wakes it with the identity view's automaton state and recent history.
//! That state may also carry a partial match over bytes the escaping view decoded otherwise;
//! if it completes, the match is real in the identity view, so reporting it twice is
//! harmless. Text without escapes is scanned once, not four times.
//!
//! # Skipping at the start state
//!
//! When only the identity view is scanning (the other views asleep, so the run holds no
//! `%`, `\` or `&`: [`Scanner::feed`] stops at each), nothing waits for a right neighbour
//! and the automaton is in its start state, a byte that starts no pattern (in no case) leaves
//! it there: stepping it changes nothing but the view's history and count. Such runs are
//! skipped with one table look-up a byte ([`Dfa::stays_at_start`]), advancing the count and
//! writing only the run's last byte to the history. That misses nothing: every pattern of
//! every form (raw, hex, either base64 alphabet at any alignment) begins with one of the
//! bytes the automaton leaves the start state on, so the skipped bytes begin no partial
//! match and end none either (the state before each is the start state, depth 0). And
//! every reader of the history looks back at most one byte before the current partial match
//! (its exact check, a base64 boundary character, the safe point, an escaping view waking):
//! right after a run that is the run's last byte, written; every byte after it is written
//! as before, until the automaton is back at its start state.
//!
//! # What may still become a match
//!
//! [`Scanner::safe_point`] is the smallest input offset at which a match reported in the
//! future can start. In each awake view it is the earliest of: the start of an escape
//! sequence still being read, the start of a match waiting for its right neighbour, and the
//! start of the automaton's current partial match (its length is the depth of the automaton
//! state) or, if the decoded byte before that is a base64 character, of that byte, which a
//! base64 match would take as its left boundary character. Input before the safe point can
//! be released: after text that is no partial match and does not end in a base64 character
//! (an SSE event ends in a blank line), nothing at all is held.
//!
//! Bound: a partial match or a waiting match spans at most `L + 1` decoded bytes (`L` the
//! longest pattern, plus a boundary character), each decoded from at most
//! [`LONGEST_ESCAPE`] input bytes, and at most `LONGEST_ESCAPE - 1` bytes of an unfinished
//! escape may follow; so the safe point lags the input by less than `(L + 2) · LONGEST_ESCAPE`
//! bytes, and one match covers less than that too ([`Matchers::max_lag`]).

use std::fmt;

use zeroize::{Zeroize as _, Zeroizing};

use crate::matcher::{Dfa, DfaBuilder, StateId};
use crate::patterns::{self, Case, Encoding, Form, is_base64_char};
use crate::views::{
    Decode, Escaping, Html, Identity, Json, LONGEST_ESCAPE, Percent, Unescape, UnitSink,
};

/// A match, in absolute input offsets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Found {
    /// Index of the value in its scrub set.
    pub(crate) entry: u32,
    pub(crate) encoding: Encoding,
    pub(crate) escaping: Escaping,
    pub(crate) start: u64,
    pub(crate) end: u64,
}

/// Where matches go.
pub(crate) trait FoundSink {
    fn found(&mut self, found: Found);
}

/// What a pattern id stands for.
#[derive(Debug, Clone, Copy)]
struct PatternInfo {
    entry: u32,
    form: Form,
    len: u32,
}

/// The compiled patterns of a scrub set's values. `Debug` shows only sizes: the patterns are
/// encodings of the values.
pub(crate) struct Matchers {
    dfa: Dfa,
    info: Vec<PatternInfo>,
    /// For each pattern that must match exactly (raw and base64), its bytes; empty for hex.
    exact: Vec<Zeroizing<Vec<u8>>>,
    max_len: usize,
}

impl Matchers {
    /// Compiles the patterns of `values`, the n-th value being entry n.
    pub(crate) fn build<'a>(values: impl Iterator<Item = &'a [u8]>) -> Self {
        let mut builder = DfaBuilder::new(true);
        let (mut info, mut exact) = (Vec::new(), Vec::new());
        for (entry, value) in values.enumerate() {
            for pattern in patterns::expand(value) {
                info.push(PatternInfo {
                    entry: entry as u32,
                    form: pattern.form,
                    len: pattern.bytes.len() as u32,
                });
                exact.push(match pattern.case {
                    Case::Exact => pattern.bytes.clone(),
                    Case::Folded => Zeroizing::new(Vec::new()),
                });
                builder.add(pattern.bytes);
            }
        }
        let dfa = builder.build();
        let max_len = dfa.max_len();
        Self {
            dfa,
            info,
            exact,
            max_len,
        }
    }

    /// The bound on [`Scanner::position`] minus [`Scanner::safe_point`], and on the input
    /// one match covers; see the module docs.
    pub(crate) fn max_lag(&self) -> usize {
        (self.max_len + 2) * LONGEST_ESCAPE
    }
}

/// One view's matching state, apart from its decoder (so the decoder can feed it). Its history
/// holds decoded input, which may be a value: no `Debug`, and wiped on drop.
struct ViewState {
    escaping: Escaping,
    state: StateId,
    /// Start offset and value of the last decoded bytes, indexed by decoded count & mask.
    history: Vec<(u64, u8)>,
    mask: u64,
    /// Decoded bytes so far (since the view last woke, for an escaping view).
    count: u64,
    /// Matches that wait for the decoded byte after them, a possible boundary character.
    waiting: Vec<Found>,
    /// Literal bytes decoded since the last escape sequence.
    literal_run: u64,
}

/// The automaton and the sink a view reports to while it decodes.
struct Feeding<'a, F> {
    state: &'a mut ViewState,
    matchers: &'a Matchers,
    sink: &'a mut F,
}

impl<F: FoundSink> UnitSink for Feeding<'_, F> {
    #[inline]
    fn unit(&mut self, bytes: &[u8], start: u64, end: u64) {
        if end - start == 1 {
            self.state.literal_run += 1;
        } else {
            self.state.literal_run = 0;
        }
        for &b in bytes {
            self.state.decoded(self.matchers, b, start, end, self.sink);
        }
    }
}

impl ViewState {
    /// A view's state; its history is allocated at once for the identity view and on first
    /// waking for an escaping one, as most input (a header, a JSON body without escapes)
    /// never wakes one.
    fn new(escaping: Escaping, matchers: &Matchers) -> Self {
        let mut state = Self {
            escaping,
            state: Dfa::START,
            history: Vec::new(),
            mask: 0,
            count: 0,
            waiting: Vec::new(),
            literal_run: 0,
        };
        if escaping == Escaping::None {
            state.allocate_history(matchers);
        }
        state
    }

    fn allocate_history(&mut self, matchers: &Matchers) {
        // The partial match plus the possible boundary character before it.
        let capacity = (matchers.max_len + 2).next_power_of_two();
        self.history = vec![(0, 0); capacity];
        self.mask = capacity as u64 - 1;
    }

    /// Back to the start of a new input. The history is kept (and overwritten): only the
    /// entries decoded since the reset are ever read, and it is wiped on drop.
    fn reset(&mut self) {
        self.state = Dfa::START;
        self.count = 0;
        self.waiting.clear();
        self.literal_run = 0;
    }

    /// Handles one decoded byte: the hot path of the scanner, kept to a ring write and one
    /// table look-up; what is rare (matches, waiting matches) is out of line.
    #[inline(always)]
    fn decoded(&mut self, m: &Matchers, b: u8, start: u64, end: u64, sink: &mut impl FoundSink) {
        if !self.waiting.is_empty() {
            self.resolve_waiting(b, end, sink);
        }
        self.history[(self.count & self.mask) as usize] = (start, b);
        self.count += 1;
        self.state = m.dfa.next(self.state, b);
        if Dfa::is_match(self.state) {
            self.report_matches(m, end, sink);
        }
    }

    /// Decodes literal input bytes starting at offset `pos` (the identity view's input): the
    /// steps of [`decoded`](Self::decoded) in a loop that keeps its state in registers and
    /// leaves it only for a match.
    fn literals(&mut self, m: &Matchers, bytes: &[u8], pos: u64, sink: &mut impl FoundSink) {
        let mut i = 0;
        while i < bytes.len() {
            if !self.waiting.is_empty() {
                let at = pos + i as u64;
                self.decoded(m, bytes[i], at, at + 1, sink);
                i += 1;
                continue;
            }
            let (mut state, mut count, mask) = (self.state, self.count, self.mask);
            let history = &mut self.history[..];
            let mut matched = false;
            while let Some(&b) = bytes.get(i) {
                if state == Dfa::START {
                    // See "Skipping at the start state" in the module docs.
                    let skipped = m.dfa.stays_at_start(&bytes[i..]);
                    if skipped > 0 {
                        i += skipped;
                        count += skipped as u64;
                        let last = i - 1;
                        history[((count - 1) & mask) as usize] = (pos + last as u64, bytes[last]);
                        continue;
                    }
                }
                history[(count & mask) as usize] = (pos + i as u64, b);
                count += 1;
                state = m.dfa.next(state, b);
                i += 1;
                if Dfa::is_match(state) {
                    matched = true;
                    break;
                }
            }
            self.state = state;
            self.count = count;
            if matched {
                self.report_matches(m, pos + i as u64, sink);
            }
        }
    }

    /// The decoded byte after waiting matches: widens them over it if it is a base64 character.
    #[cold]
    #[inline(never)]
    fn resolve_waiting(&mut self, b: u8, end: u64, sink: &mut impl FoundSink) {
        for mut found in self.waiting.drain(..) {
            if is_base64_char(b) {
                found.end = end;
            }
            sink.found(found);
        }
    }

    #[cold]
    #[inline(never)]
    fn report_matches(&mut self, m: &Matchers, end: u64, sink: &mut impl FoundSink) {
        for &id in m.dfa.matches(self.state) {
            let id = id as usize;
            if self.spells(&m.exact[id]) {
                self.matched(m.info[id], end, sink);
            }
        }
    }

    /// Whether the last decoded bytes are exactly `pattern` (any pattern when it is empty:
    /// hex, which matches in any case, as the automaton already checked).
    fn spells(&self, pattern: &[u8]) -> bool {
        let first = self.count - pattern.len() as u64;
        pattern
            .iter()
            .zip(first..)
            .all(|(&p, i)| self.history[(i & self.mask) as usize].1 == p)
    }

    fn matched(&mut self, info: PatternInfo, end: u64, sink: &mut impl FoundSink) {
        let first = self.count - u64::from(info.len);
        let mut found = Found {
            entry: info.entry,
            encoding: info.form.encoding,
            escaping: self.escaping,
            start: self.history[(first & self.mask) as usize].0,
            end,
        };
        let Some(boundary) = info.form.boundary else {
            sink.found(found);
            return;
        };
        if boundary.before && first > 0 {
            let (start, byte) = self.history[((first - 1) & self.mask) as usize];
            if is_base64_char(byte) {
                found.start = start;
            }
        }
        if boundary.after {
            self.waiting.push(found);
        } else {
            sink.found(found);
        }
    }

    /// The end of the input: waiting matches have no right neighbour.
    fn finish(&mut self, sink: &mut impl FoundSink) {
        for found in self.waiting.drain(..) {
            sink.found(found);
        }
    }

    fn safe_point(&self, m: &Matchers, mut safe: u64) -> u64 {
        for found in &self.waiting {
            safe = safe.min(found.start);
        }
        let depth = m.dfa.depth(self.state) as u64;
        // The partial match, and the byte before it, which a base64 match starting there would
        // take as its boundary character. At depth 0 that byte is the last one: a match may
        // start right after it.
        let first = self.count - depth;
        if first > 0 {
            let (start, byte) = self.history[((first - 1) & self.mask) as usize];
            if is_base64_char(byte) {
                return safe.min(start);
            }
        }
        if depth > 0 {
            safe = safe.min(self.history[(first & self.mask) as usize].0);
        }
        safe
    }

    /// Whether the view's partial match, and the byte before it, lie within the literal bytes
    /// since its last escape: then every match it can still report covers no escape.
    fn only_literals_live(&self, m: &Matchers) -> bool {
        self.waiting.is_empty() && (m.dfa.depth(self.state) as u64) < self.literal_run
    }

    /// Takes over `identity`'s automaton state and the history its partial match needs (with
    /// the byte before it): an escaping view waking up.
    fn wake_from(&mut self, m: &Matchers, identity: &Self) {
        if self.history.is_empty() {
            self.allocate_history(m);
        }
        self.state = identity.state;
        self.count = identity.count;
        let needed = (m.dfa.depth(identity.state) as u64 + 1).min(identity.count);
        for i in identity.count - needed..identity.count {
            let slot = (i & self.mask) as usize;
            self.history[slot] = identity.history[slot];
        }
        self.literal_run = 0;
    }
}

/// A view: its decoder and its matching state.
struct View<D> {
    decoder: D,
    state: ViewState,
    /// Whether the view is scanning; see "Sleeping views" in the module docs. The identity
    /// view never sleeps.
    awake: bool,
}

impl<D: Decode + Default> View<D> {
    fn new(escaping: Escaping, matchers: &Matchers) -> Self {
        Self {
            decoder: D::default(),
            state: ViewState::new(escaping, matchers),
            awake: escaping == Escaping::None,
        }
    }

    fn reset(&mut self) {
        self.decoder = D::default();
        self.state.reset();
        self.awake = self.state.escaping == Escaping::None;
    }

    #[inline]
    fn feed(&mut self, m: &Matchers, byte: u8, pos: u64, sink: &mut impl FoundSink) {
        let mut feeding = Feeding {
            state: &mut self.state,
            matchers: m,
            sink,
        };
        self.decoder.feed(byte, pos, &mut feeding);
    }

    /// For an escaping view: wakes it, with the identity view's state from before `byte`,
    /// when `byte` may start one of its escapes.
    #[inline]
    fn wake_for(&mut self, m: &Matchers, identity: &ViewState, byte: u8) {
        if !self.awake && Some(byte) == D::INTRODUCER {
            self.state.wake_from(m, identity);
            self.awake = true;
        }
    }

    /// For an escaping view: feeds it if it is awake, and lets it sleep when every match it
    /// could still report would be the identity view's.
    #[inline]
    fn feed_if_awake(&mut self, m: &Matchers, byte: u8, pos: u64, sink: &mut impl FoundSink) {
        if self.awake {
            self.feed(m, byte, pos, sink);
            if self.decoder.pending_start().is_none() && self.state.only_literals_live(m) {
                self.awake = false;
            }
        }
    }

    fn finish(&mut self, m: &Matchers, sink: &mut impl FoundSink) {
        if !self.awake {
            return;
        }
        let mut feeding = Feeding {
            state: &mut self.state,
            matchers: m,
            sink,
        };
        self.decoder.flush(&mut feeding);
        self.state.finish(sink);
    }

    fn safe_point(&self, m: &Matchers, end: u64) -> u64 {
        if !self.awake {
            // Asleep, it would hold back what the identity view holds back.
            return end;
        }
        let safe = self.state.safe_point(m, end);
        self.decoder.pending_start().map_or(safe, |p| safe.min(p))
    }
}

/// Scans a stream in every view; see the module docs. `Debug` shows only the position: the
/// views hold recent input.
pub(crate) struct Scanner {
    matchers: std::sync::Arc<Matchers>,
    identity: View<Identity>,
    percent: View<Unescape<Percent>>,
    json: View<Unescape<Json>>,
    html: View<Unescape<Html>>,
    /// Input bytes fed so far.
    position: u64,
}

impl Scanner {
    pub(crate) fn new(matchers: std::sync::Arc<Matchers>) -> Self {
        let m = &*matchers;
        Self {
            identity: View::new(Escaping::None, m),
            percent: View::new(Escaping::Percent, m),
            json: View::new(Escaping::Json, m),
            html: View::new(Escaping::Html, m),
            position: 0,
            matchers,
        }
    }

    /// Starts a new, separate input (the next header value, say): the same state as a new
    /// scanner, without allocating one.
    pub(crate) fn reset(&mut self) {
        self.identity.reset();
        self.percent.reset();
        self.json.reset();
        self.html.reset();
        self.position = 0;
    }

    /// Scans `chunk`, the input that follows what was fed before.
    pub(crate) fn feed(&mut self, chunk: &[u8], sink: &mut impl FoundSink) {
        // A handle of its own, so the views can be borrowed mutably next to it.
        let matchers = std::sync::Arc::clone(&self.matchers);
        let m = &*matchers;
        let mut rest = chunk;
        while !rest.is_empty() {
            if !(self.percent.awake || self.json.awake || self.html.awake) {
                // Only the identity view is scanning: run it up to the next byte that could
                // wake another.
                let run = memchr::memchr3(b'%', b'\\', b'&', rest).unwrap_or(rest.len());
                self.identity
                    .state
                    .literals(m, &rest[..run], self.position, sink);
                self.position += run as u64;
                rest = &rest[run..];
                let Some(&b) = rest.first() else { break };
                self.feed_all(m, b, sink);
            } else {
                self.feed_all(m, rest[0], sink);
            }
            rest = &rest[1..];
        }
    }

    /// Feeds one byte to every view that is, or wakes up, awake.
    #[inline]
    fn feed_all(&mut self, m: &Matchers, b: u8, sink: &mut impl FoundSink) {
        let pos = self.position;
        let identity = &self.identity.state;
        self.percent.wake_for(m, identity, b);
        self.json.wake_for(m, identity, b);
        self.html.wake_for(m, identity, b);
        // The identity view first, so that of two views finding a value at the same byte the
        // one without escaping reports it first.
        self.identity.state.decoded(m, b, pos, pos + 1, sink);
        self.percent.feed_if_awake(m, b, pos, sink);
        self.json.feed_if_awake(m, b, pos, sink);
        self.html.feed_if_awake(m, b, pos, sink);
        self.position += 1;
    }

    /// Ends the input, reporting the matches that were waiting for more of it.
    pub(crate) fn finish(&mut self, sink: &mut impl FoundSink) {
        let m = &*self.matchers;
        self.identity.finish(m, sink);
        self.percent.finish(m, sink);
        self.json.finish(m, sink);
        self.html.finish(m, sink);
    }

    /// Input bytes fed so far.
    pub(crate) fn position(&self) -> u64 {
        self.position
    }

    /// The smallest offset at which a match reported later can start.
    pub(crate) fn safe_point(&self) -> u64 {
        let m = &*self.matchers;
        let end = self.position;
        self.identity
            .safe_point(m, end)
            .min(self.percent.safe_point(m, end))
            .min(self.json.safe_point(m, end))
            .min(self.html.safe_point(m, end))
    }
}

impl fmt::Debug for Matchers {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Matchers")
            .field("patterns", &self.info.len())
            .field("dfa", &self.dfa)
            .finish_non_exhaustive()
    }
}

impl fmt::Debug for Scanner {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Scanner")
            .field("position", &self.position)
            .finish_non_exhaustive()
    }
}

impl Drop for ViewState {
    fn drop(&mut self) {
        for (_, byte) in &mut self.history {
            byte.zeroize();
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use base64::Engine as _;

    use super::*;

    #[derive(Default)]
    struct Collect(Vec<Found>);

    impl FoundSink for Collect {
        fn found(&mut self, found: Found) {
            self.0.push(found);
        }
    }

    const VALUE: &[u8] = b"sk-live-0123456789";

    fn scanner() -> Scanner {
        Scanner::new(std::sync::Arc::new(Matchers::build([VALUE].into_iter())))
    }

    /// Scans `input` in chunks of `chunk` bytes and returns the matches.
    fn scan(input: &[u8], chunk: usize) -> Vec<Found> {
        let mut scanner = scanner();
        let mut found = Collect::default();
        for piece in input.chunks(chunk) {
            scanner.feed(piece, &mut found);
        }
        scanner.finish(&mut found);
        found.0
    }

    /// The skip at the start state writes only a run's last byte to the history: a base64
    /// match whose left boundary character ends a skipped run is still widened over it, the
    /// safe point still holds that character back, and a value right after a run is found.
    #[test]
    fn skipped_runs_keep_the_boundary_character_and_every_match() {
        // Base64 of one byte and the value: the value's interior at alignment 1, after one
        // character that carries bits of both (its left boundary character).
        let encoded =
            base64::engine::general_purpose::STANDARD_NO_PAD.encode([b"Q", VALUE].concat());
        let matchers = Matchers::build([VALUE].into_iter());
        // The case this test is about: the boundary character starts no pattern, so it is
        // the last byte of a skipped run.
        assert_eq!(matchers.dfa.stays_at_start(&encoded.as_bytes()[..2]), 2);

        let prefix = "plain words without a pattern start ";
        let input = format!(
            "{prefix}{encoded} then {} end",
            std::str::from_utf8(VALUE).unwrap()
        );
        for chunk in [1, 3, input.len()] {
            let found = scan(input.as_bytes(), chunk);
            let base64 = found
                .iter()
                .find(|f| f.encoding == Encoding::Base64)
                .unwrap();
            assert_eq!(base64.start, (prefix.len() + 1) as u64, "chunk {chunk}");
            let raw_at = input.find(std::str::from_utf8(VALUE).unwrap()).unwrap();
            assert!(
                found
                    .iter()
                    .any(|f| f.encoding == Encoding::Raw && f.start == raw_at as u64),
                "chunk {chunk}: {found:?}"
            );
        }

        // After a run that ends in a base64 character, that character is held back.
        let mut scanner = scanner();
        scanner.feed(&encoded.as_bytes()[..2], &mut Collect::default());
        assert_eq!(scanner.safe_point(), 1);
        // After a run that ends in one that is not, nothing is.
        scanner.feed(b" ", &mut Collect::default());
        assert_eq!(scanner.safe_point(), 3);
    }
}
