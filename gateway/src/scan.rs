//! The scanner shared by the scrubber and the detector: every decoding view of the input,
//! each searched for every pattern of every value, incrementally.
//!
//! For each input byte, each view ([`crate::views`]) produces decoded units; each decoded byte
//! steps two automata ([`crate::matcher`]): an exact one (raw values and base64 interiors) and
//! a case-folding one (hex). A match in a view masks the input span of the decoded bytes it
//! covers, widened over a base64 boundary character on either side when the pattern has one
//! and the neighbouring decoded byte is a base64 character ([`crate::patterns`]).
//! The neighbour after a match has not arrived yet when the match completes, so such a match
//! waits for the view's next decoded byte (or the end of the input) before it is reported.
//!
//! # What may still become a match
//!
//! [`Scanner::safe_point`] is the smallest input offset at which a match reported in the
//! future can start. In each view it is the earliest of: the start of an escape sequence still
//! being read, the start of a match waiting for its right neighbour, and the start of the
//! decoded byte just before the automata's current partial match (whose length is the depth
//! of the automaton state; the byte before it is the possible left boundary character).
//! Input before the safe point can be released; when nothing is partially matched, the safe
//! point is the end of the input, so nothing is held.
//!
//! Bound: a partial match or a waiting match spans at most `L + 1` decoded bytes (`L` the
//! longest pattern, plus a boundary character), each decoded from at most
//! [`LONGEST_ESCAPE`] input bytes, and at most `LONGEST_ESCAPE - 1` bytes of an unfinished
//! escape may follow; so the input held back is less than `(L + 2) · LONGEST_ESCAPE` bytes
//! ([`ScrubSet::max_held_back`](crate::ScrubSet::max_held_back)).

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

/// The compiled patterns of a scrub set's values.
#[derive(Debug)]
pub(crate) struct Matchers {
    exact: Dfa,
    exact_info: Vec<PatternInfo>,
    folded: Dfa,
    folded_info: Vec<PatternInfo>,
    max_len: usize,
}

impl Matchers {
    /// Compiles the patterns of `values`, the n-th value being entry n.
    pub(crate) fn build<'a>(values: impl Iterator<Item = &'a [u8]>) -> Self {
        let mut exact = DfaBuilder::new(false);
        let mut folded = DfaBuilder::new(true);
        let (mut exact_info, mut folded_info) = (Vec::new(), Vec::new());
        for (entry, value) in values.enumerate() {
            for pattern in patterns::expand(value) {
                let info = PatternInfo {
                    entry: entry as u32,
                    form: pattern.form,
                    len: pattern.bytes.len() as u32,
                };
                match pattern.case {
                    Case::Exact => {
                        exact.add(pattern.bytes);
                        exact_info.push(info);
                    }
                    Case::Folded => {
                        folded.add(pattern.bytes);
                        folded_info.push(info);
                    }
                }
            }
        }
        let (exact, folded) = (exact.build(), folded.build());
        let max_len = exact.max_len().max(folded.max_len());
        Self {
            exact,
            exact_info,
            folded,
            folded_info,
            max_len,
        }
    }

    /// The bound on [`Scanner::position`] minus [`Scanner::safe_point`]; see the module docs.
    pub(crate) fn max_held_back(&self) -> usize {
        (self.max_len + 2) * LONGEST_ESCAPE
    }
}

/// One view's matching state, apart from its decoder (so the decoder can feed it).
#[derive(Debug)]
struct ViewState {
    escaping: Escaping,
    exact: StateId,
    folded: StateId,
    /// Start offset and value of the last decoded bytes, indexed by decoded count & mask.
    history: Vec<(u64, u8)>,
    mask: u64,
    /// Decoded bytes so far.
    count: u64,
    /// Matches that wait for the decoded byte after them, a possible boundary character.
    waiting: Vec<Found>,
}

/// The automata and the sink a view reports to while it decodes.
struct Feeding<'a, F> {
    state: &'a mut ViewState,
    matchers: &'a Matchers,
    sink: &'a mut F,
}

impl<F: FoundSink> UnitSink for Feeding<'_, F> {
    #[inline]
    fn unit(&mut self, bytes: &[u8], start: u64, end: u64) {
        for &b in bytes {
            self.state.decoded(self.matchers, b, start, end, self.sink);
        }
    }
}

impl ViewState {
    fn new(escaping: Escaping, matchers: &Matchers) -> Self {
        // The partial match plus the possible boundary character before it.
        let capacity = (matchers.max_len + 2).next_power_of_two();
        Self {
            escaping,
            exact: Dfa::START,
            folded: Dfa::START,
            history: vec![(0, 0); capacity],
            mask: capacity as u64 - 1,
            count: 0,
            waiting: Vec::new(),
        }
    }

    #[inline]
    fn decoded(&mut self, m: &Matchers, b: u8, start: u64, end: u64, sink: &mut impl FoundSink) {
        if !self.waiting.is_empty() {
            for mut found in self.waiting.drain(..) {
                if is_base64_char(b) {
                    found.end = end;
                }
                sink.found(found);
            }
        }
        self.history[(self.count & self.mask) as usize] = (start, b);
        self.count += 1;
        self.exact = m.exact.next(self.exact, b);
        for &id in m.exact.matches(self.exact) {
            self.matched(m.exact_info[id as usize], end, sink);
        }
        self.folded = m.folded.next(self.folded, b);
        for &id in m.folded.matches(self.folded) {
            self.matched(m.folded_info[id as usize], end, sink);
        }
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
        let depth = m.exact.depth(self.exact).max(m.folded.depth(self.folded)) as u64;
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
}

/// A view: its decoder and its matching state.
#[derive(Debug)]
struct View<D> {
    decoder: D,
    state: ViewState,
}

impl<D: Decode> View<D> {
    fn new(decoder: D, escaping: Escaping, matchers: &Matchers) -> Self {
        Self {
            decoder,
            state: ViewState::new(escaping, matchers),
        }
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

    fn finish(&mut self, m: &Matchers, sink: &mut impl FoundSink) {
        let mut feeding = Feeding {
            state: &mut self.state,
            matchers: m,
            sink,
        };
        self.decoder.flush(&mut feeding);
        self.state.finish(sink);
    }

    fn safe_point(&self, m: &Matchers, end: u64) -> u64 {
        let safe = self.state.safe_point(m, end);
        self.decoder.pending_start().map_or(safe, |p| safe.min(p))
    }
}

/// Scans a stream in every view; see the module docs.
#[derive(Debug)]
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
            identity: View::new(Identity, Escaping::None, m),
            percent: View::new(Unescape::default(), Escaping::Percent, m),
            json: View::new(Unescape::default(), Escaping::Json, m),
            html: View::new(Unescape::default(), Escaping::Html, m),
            position: 0,
            matchers,
        }
    }

    /// Scans `chunk`, the input that follows what was fed before.
    pub(crate) fn feed(&mut self, chunk: &[u8], sink: &mut impl FoundSink) {
        let m = &*self.matchers;
        for &b in chunk {
            let pos = self.position;
            self.identity.feed(m, b, pos, sink);
            self.percent.feed(m, b, pos, sink);
            self.json.feed(m, b, pos, sink);
            self.html.feed(m, b, pos, sink);
            self.position += 1;
        }
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
