//! Request checks: does an agent's request contain a real value the gateway knows?
//!
//! An agent holds only references, so a real value in anything it sends (in any encoding the
//! scrubber knows) means it obtained one some other way; the gateway refuses the request and
//! audits it. [`find_known_value`] checks a whole byte string (a header, a URL, a buffered
//! body); [`Detector`] checks a body as it streams, with the same scanner as the scrubber, so
//! a value split across chunks is found too.

use std::ops::Range;
use std::sync::Arc;

use crate::ScrubSet;
use crate::patterns::Encoding;
use crate::scan::{Found, FoundSink, Scanner};
use crate::views::Escaping;

/// A known value found in a request. Carries no part of the value.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Match {
    /// How the value was written.
    pub encoding: Encoding,
    /// The escaping it was found under.
    pub escaping: Escaping,
    /// Where in the input it was, in bytes from the start of the stream (widened over base64
    /// boundary characters, like the scrubber's replacement).
    pub span: Range<u64>,
    /// The replacement (reference token) of the value found, for the audit line.
    pub reference: Arc<str>,
}

/// The first match reported.
#[derive(Debug, Default)]
struct First(Option<Found>);

impl FoundSink for First {
    fn found(&mut self, found: Found) {
        self.0.get_or_insert(found);
    }
}

fn to_match(set: &ScrubSet, found: Found) -> Match {
    Match {
        encoding: found.encoding,
        escaping: found.escaping,
        span: found.start..found.end,
        reference: Arc::clone(set.replacement(found.entry)),
    }
}

/// The first known value in `input`, if any.
pub fn find_known_value(set: &ScrubSet, input: &[u8]) -> Option<Match> {
    Finder::new(set).find(input)
}

/// [`find_known_value`] for many separate byte strings (a request's header values, its
/// path, its body): one scanner, reset between them, rather than one built for each.
pub(crate) struct Finder<'s> {
    set: &'s ScrubSet,
    scanner: Option<Scanner>,
}

impl<'s> Finder<'s> {
    pub(crate) fn new(set: &'s ScrubSet) -> Self {
        Self {
            set,
            scanner: set.matchers().map(|m| Scanner::new(Arc::clone(m))),
        }
    }

    /// The first known value in `input`, scanned on its own (nothing carries over from the
    /// inputs before it).
    pub(crate) fn find(&mut self, input: &[u8]) -> Option<Match> {
        let scanner = self.scanner.as_mut()?;
        scanner.reset();
        let mut first = First::default();
        scanner.feed(input, &mut first);
        scanner.finish(&mut first);
        first.0.map(|found| to_match(self.set, found))
    }
}

/// Checks a request body as it streams.
///
/// A match is reported as soon as it is certain, which for a base64 form may be one decoded
/// byte after the value ends; [`finish`](Self::finish) reports one that the end of the input
/// completes. Once a match is found, further input is not scanned.
#[derive(Debug)]
pub struct Detector {
    set: Arc<ScrubSet>,
    scanner: Option<Scanner>,
    first: First,
}

impl Detector {
    /// A detector for one stream, over a snapshot of the agent's scrub set.
    pub fn new(set: Arc<ScrubSet>) -> Self {
        let scanner = set.matchers().map(|m| Scanner::new(Arc::clone(m)));
        Self {
            set,
            scanner,
            first: First::default(),
        }
    }

    /// Scans the next chunk; returns the first match found so far.
    pub fn push(&mut self, chunk: &[u8]) -> Option<Match> {
        if self.first.0.is_none()
            && let Some(scanner) = self.scanner.as_mut()
        {
            scanner.feed(chunk, &mut self.first);
        }
        self.first.0.map(|found| to_match(&self.set, found))
    }

    /// Ends the stream; returns the first match in it, if any.
    pub fn finish(mut self) -> Option<Match> {
        if self.first.0.is_none()
            && let Some(scanner) = self.scanner.as_mut()
        {
            scanner.finish(&mut self.first);
        }
        self.first.0.map(|found| to_match(&self.set, found))
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    const VALUE: &[u8] = b"sk-live-4f9a8b7c6d5e";

    fn set() -> ScrubSet {
        let mut set = ScrubSet::new();
        set.insert(VALUE, "$SPIKE{ref:9f2c0000000000000000000000000000}")
            .unwrap();
        set
    }

    /// Inputs that leave every kind of state behind: partial matches, unfinished escapes of
    /// each view, a match waiting for its right neighbour, and values in several forms.
    fn inputs() -> Vec<Vec<u8>> {
        let hex: String = VALUE.iter().map(|b| format!("{b:02x}")).collect();
        let percent: String = VALUE.iter().map(|b| format!("%{b:02X}")).collect();
        let json: String = VALUE.iter().map(|b| format!("\\u{b:04x}")).collect();
        let html: String = VALUE.iter().map(|b| format!("&#{b};")).collect();
        let b64 = "c2stbGl2ZS00ZjlhOGI3YzZkNWU";
        [
            "",
            "plain text",
            "sk-live-4f9a",
            "6d5e",
            "%",
            "%4",
            "\\u00",
            "&#1",
            "&amp",
            b64,
            &format!("Q{b64}"),
            &hex,
            &percent,
            &json,
            &html,
            &format!("x{}", std::str::from_utf8(VALUE).unwrap()),
        ]
        .iter()
        .map(|s| s.as_bytes().to_vec())
        .collect()
    }

    #[test]
    fn a_reused_finder_answers_like_a_fresh_scan_whatever_came_before() {
        let set = set();
        let inputs = inputs();
        // The forms of the value are found (the comparison below is not between two Nones).
        let found = inputs
            .iter()
            .filter(|i| find_known_value(&set, i).is_some())
            .count();
        assert_eq!(found, 7);
        let mut finder = Finder::new(&set);
        for before in &inputs {
            for input in &inputs {
                finder.find(before);
                assert_eq!(
                    finder.find(input),
                    find_known_value(&set, input),
                    "after {:?}, in {:?}",
                    String::from_utf8_lossy(before),
                    String::from_utf8_lossy(input),
                );
            }
        }
    }

    #[test]
    fn a_value_split_across_two_inputs_is_not_joined() {
        let set = set();
        let mut finder = Finder::new(&set);
        assert_eq!(finder.find(&VALUE[..10]), None);
        assert_eq!(finder.find(&VALUE[10..]), None);
        assert!(finder.find(VALUE).is_some());
    }

    #[test]
    fn an_empty_set_finds_nothing() {
        let set = ScrubSet::new();
        assert_eq!(Finder::new(&set).find(VALUE), None);
    }
}
