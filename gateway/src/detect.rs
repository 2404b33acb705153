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
    let matchers = set.matchers()?;
    let mut scanner = Scanner::new(Arc::clone(matchers));
    let mut first = First::default();
    scanner.feed(input, &mut first);
    scanner.finish(&mut first);
    first.0.map(|found| to_match(set, found))
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
