//! A streaming multi-pattern matcher: an Aho–Corasick automaton compiled to a dense DFA over
//! byte classes, that also tells, in every state, how long the partial match it stands for is.
//!
//! Why not the `aho-corasick` crate: the scrubber must hold back only the bytes that can still
//! become part of a match, so that an SSE event that ends in ordinary text is passed on at once
//! instead of waiting behind a fixed-size tail. That needs the depth of each automaton state
//! (the length of the longest suffix of the input that is a prefix of some pattern), which the
//! crate's automaton API does not expose. The construction here is the textbook one (trie,
//! breadth-first failure links, full transition table), and the transition table is built over
//! byte classes so that its size is (states × distinct pattern bytes), not (states × 256).
//!
//! Case-insensitive matching is a property of the whole automaton: with folding, upper- and
//! lowercase ASCII letters share one byte class, so it costs nothing at match time. (The
//! scanner folds every pattern and checks the exact ones when they are reported.)
//!
//! The transition table encodes the patterns, which are encodings of secret values, so it is
//! held in zeroizing buffers and the type's `Debug` shows only sizes.

use std::fmt;

use zeroize::Zeroizing;

/// A state of a [`Dfa`]: its row's offset in the transition table, with [`MATCH`] set when
/// patterns end in it, so the per-byte path tests one bit instead of loading match lists.
/// The start state is [`Dfa::START`].
pub(crate) type StateId = u32;

/// The flag of a [`StateId`] in which some pattern ends.
const MATCH: StateId = 1 << 31;

/// Builds a [`Dfa`] from patterns added one by one.
pub(crate) struct DfaBuilder {
    fold_ascii_case: bool,
    patterns: Vec<Zeroizing<Vec<u8>>>,
}

impl DfaBuilder {
    /// A builder; with `fold_ascii_case`, ASCII letters match regardless of case.
    pub(crate) fn new(fold_ascii_case: bool) -> Self {
        Self {
            fold_ascii_case,
            patterns: Vec::new(),
        }
    }

    /// Adds a non-empty pattern and returns its id (ids count from 0 in insertion order).
    pub(crate) fn add(&mut self, pattern: Zeroizing<Vec<u8>>) -> u32 {
        debug_assert!(!pattern.is_empty());
        self.patterns.push(pattern);
        // The pattern count is bounded by the scrub set's limits, far below u32::MAX.
        (self.patterns.len() - 1) as u32
    }

    /// Compiles the automaton.
    pub(crate) fn build(self) -> Dfa {
        let fold = |b: u8| {
            if self.fold_ascii_case {
                b.to_ascii_lowercase()
            } else {
                b
            }
        };

        // Byte classes: one per distinct (folded) byte that occurs in a pattern, class 0 for
        // every other byte. Bytes of class 0 always lead back to the start state.
        let mut classes = Zeroizing::new([0u8; 256].to_vec());
        let mut class_count = 1usize;
        let mut seen = [false; 256];
        for pattern in &self.patterns {
            for &b in pattern.iter() {
                seen[usize::from(fold(b))] = true;
            }
        }
        if seen.iter().all(|&s| s) {
            // Every byte value occurs in some pattern: no byte needs the "other" class.
            for b in 0..=255u8 {
                classes[usize::from(b)] = b;
            }
            class_count = 256;
        } else {
            for b in 0..=255u8 {
                if seen[usize::from(b)] {
                    // At most 255 distinct bytes here, so the class fits in a u8.
                    classes[usize::from(b)] = class_count as u8;
                    class_count += 1;
                }
            }
        }
        if self.fold_ascii_case {
            for b in b'A'..=b'Z' {
                classes[usize::from(b)] = classes[usize::from(b.to_ascii_lowercase())];
            }
        }
        let stride = class_count;

        // The trie. `NONE` marks a missing edge until the failure pass fills it in.
        const NONE: StateId = StateId::MAX;
        let total: usize = self.patterns.iter().map(|p| p.len()).sum::<usize>() + 1;
        let mut trans: Zeroizing<Vec<StateId>> = Zeroizing::new(Vec::with_capacity(total * stride));
        trans.resize(stride, NONE);
        let mut depth: Vec<u32> = vec![0];
        let mut outputs: Vec<Vec<u32>> = vec![Vec::new()];
        let mut max_len = 0usize;
        for (id, pattern) in self.patterns.iter().enumerate() {
            max_len = max_len.max(pattern.len());
            let mut state = 0usize;
            for &b in pattern.iter() {
                let class = usize::from(classes[usize::from(b)]);
                let next = trans[state * stride + class];
                state = if next == NONE {
                    let new = depth.len();
                    trans[state * stride + class] = new as StateId;
                    trans.resize((new + 1) * stride, NONE);
                    depth.push(depth[state] + 1);
                    outputs.push(Vec::new());
                    new
                } else {
                    next as usize
                };
            }
            outputs[state].push(id as u32);
        }

        // Failure links in breadth-first order; every missing edge becomes the edge of the
        // state's failure target, and each state inherits its failure target's matches.
        let states = depth.len();
        let mut fail = vec![0usize; states];
        let mut queue = std::collections::VecDeque::with_capacity(states);
        for class in 0..stride {
            let next = trans[class];
            if next == NONE {
                trans[class] = 0;
            } else {
                queue.push_back(next as usize);
            }
        }
        while let Some(state) = queue.pop_front() {
            let inherited = outputs[fail[state]].clone();
            outputs[state].extend(inherited);
            for class in 0..stride {
                let next = trans[state * stride + class];
                let via_fail = trans[fail[state] * stride + class];
                if next == NONE {
                    trans[state * stride + class] = via_fail;
                } else {
                    fail[next as usize] = via_fail as usize;
                    queue.push_back(next as usize);
                }
            }
        }

        // Premultiply the targets and flag the matching ones. The scrub set's size limits keep
        // `states * stride` far below 2^31.
        debug_assert!(states * stride < MATCH as usize);
        for entry in trans.iter_mut() {
            let target = *entry as usize;
            let flag = if outputs[target].is_empty() { 0 } else { MATCH };
            *entry = (target * stride) as StateId | flag;
        }

        let mut match_start = Vec::with_capacity(states + 1);
        let mut match_ids = Vec::new();
        for out in &outputs {
            match_start.push(match_ids.len() as u32);
            match_ids.extend_from_slice(out);
        }
        match_start.push(match_ids.len() as u32);

        // A transition from the start state back to it is 0 once premultiplied (row 0, no
        // match flag), whatever the byte's class.
        let mut starts = Zeroizing::new([false; 256]);
        for b in 0..=255u8 {
            starts[usize::from(b)] = trans[usize::from(classes[usize::from(b)])] != Dfa::START;
        }

        Dfa {
            classes,
            stride,
            trans,
            starts,
            depth,
            match_start,
            match_ids,
            max_len,
        }
    }
}

/// A compiled automaton; see the module docs. Stepping is two table look-ups per byte (byte
/// class, transition).
pub(crate) struct Dfa {
    classes: Zeroizing<Vec<u8>>,
    stride: usize,
    trans: Zeroizing<Vec<StateId>>,
    /// For each byte, whether it leaves the start state: whether it is the first byte of
    /// some pattern (in either case, with folding). Which bytes start a value's patterns is
    /// about the value, so this is wiped too.
    starts: Zeroizing<[bool; 256]>,
    depth: Vec<u32>,
    match_start: Vec<u32>,
    match_ids: Vec<u32>,
    max_len: usize,
}

impl Dfa {
    /// The state before any input.
    pub(crate) const START: StateId = 0;

    /// The state after `byte` in `state`.
    #[inline]
    pub(crate) fn next(&self, state: StateId, byte: u8) -> StateId {
        let class = usize::from(self.classes[usize::from(byte)]);
        self.trans[(state & !MATCH) as usize + class]
    }

    /// How many of the leading bytes of `bytes` keep the automaton in its start state: bytes
    /// that begin no pattern, which one table look-up each can skip without stepping it.
    #[inline]
    pub(crate) fn stays_at_start(&self, bytes: &[u8]) -> usize {
        bytes
            .iter()
            .position(|&b| self.starts[usize::from(b)])
            .unwrap_or(bytes.len())
    }

    /// Whether some pattern ends in `state`.
    #[inline]
    pub(crate) fn is_match(state: StateId) -> bool {
        state & MATCH != 0
    }

    /// The state's index in the per-state tables.
    fn index(&self, state: StateId) -> usize {
        (state & !MATCH) as usize / self.stride
    }

    /// The length of the partial match `state` stands for: the longest suffix of the input
    /// so far that is a prefix of (or equal to) some pattern.
    #[inline]
    pub(crate) fn depth(&self, state: StateId) -> usize {
        self.depth[self.index(state)] as usize
    }

    /// The ids of the patterns that end at the input position that led to `state`.
    #[inline]
    pub(crate) fn matches(&self, state: StateId) -> &[u32] {
        let index = self.index(state);
        let start = self.match_start[index] as usize;
        let end = self.match_start[index + 1] as usize;
        &self.match_ids[start..end]
    }

    /// The length of the longest pattern (0 for an automaton without patterns).
    pub(crate) fn max_len(&self) -> usize {
        self.max_len
    }
}

impl fmt::Debug for Dfa {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Dfa")
            .field("states", &self.depth.len())
            .field("classes", &self.stride)
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dfa(fold: bool, patterns: &[&[u8]]) -> Dfa {
        let mut builder = DfaBuilder::new(fold);
        for p in patterns {
            builder.add(Zeroizing::new(p.to_vec()));
        }
        builder.build()
    }

    /// Every (end position, pattern id) the automaton reports over `haystack`.
    fn run(dfa: &Dfa, haystack: &[u8]) -> Vec<(usize, u32)> {
        let mut state = Dfa::START;
        let mut found = Vec::new();
        for (i, &b) in haystack.iter().enumerate() {
            state = dfa.next(state, b);
            found.extend(dfa.matches(state).iter().map(|&id| (i + 1, id)));
        }
        found
    }

    #[test]
    fn reports_overlapping_and_nested_matches() {
        let d = dfa(false, &[b"he", b"she", b"his", b"hers"]);
        assert_eq!(run(&d, b"ushers"), vec![(4, 1), (4, 0), (6, 3)]);
    }

    #[test]
    fn depth_is_the_longest_live_prefix() {
        let d = dfa(false, &[b"abcd", b"bcx"]);
        let mut state = Dfa::START;
        let mut depths = Vec::new();
        for &b in b"zabcz" {
            state = d.next(state, b);
            depths.push(d.depth(state));
        }
        assert_eq!(depths, vec![0, 1, 2, 3, 0]);
        assert_eq!(d.max_len(), 4);
    }

    #[test]
    fn folding_matches_any_case_and_only_with_folding() {
        let folded = dfa(true, &[b"deadbeef"]);
        assert_eq!(run(&folded, b"xDeAdBeEfx"), vec![(9, 0)]);
        let exact = dfa(false, &[b"deadbeef"]);
        assert!(run(&exact, b"xDeAdBeEfx").is_empty());
        assert_eq!(run(&exact, b"deadbeef"), vec![(8, 0)]);
    }

    #[test]
    fn stays_at_start_stops_at_any_first_byte_in_any_case() {
        let d = dfa(true, &[b"deadbeef", b"cafe"]);
        assert_eq!(d.stays_at_start(b"xyz-e!a?D..."), 8);
        assert_eq!(d.stays_at_start(b"xxCafe"), 2);
        assert_eq!(d.stays_at_start(b"efab"), 4);
        // Every byte that stays at the start state is one the automaton steps to it on.
        for b in 0..=255u8 {
            let stays = d.stays_at_start(&[b]) == 1;
            assert_eq!(stays, d.next(Dfa::START, b) == Dfa::START, "byte {b}");
        }
        let none = dfa(false, &[]);
        assert_eq!(none.stays_at_start(b"anything"), 8);
    }

    #[test]
    fn every_byte_value_in_patterns_still_works() {
        let all: Vec<u8> = (0..=255u8).collect();
        let d = dfa(false, &[&all, b"\x00\xff"]);
        let mut haystack = vec![1u8, 0, 0xff];
        haystack.extend_from_slice(&all);
        let found = run(&d, &haystack);
        assert!(found.contains(&(3, 1)));
        assert!(found.contains(&(haystack.len(), 0)));
    }
}
