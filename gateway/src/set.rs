//! [`ScrubSet`]: the real values resolved for one agent, each with the reference the agent
//! holds for it.

use std::fmt;
use std::sync::Arc;

use zeroize::Zeroizing;

use crate::detect::find_known_value;
use crate::scan::Matchers;

/// The shortest value that can be scrubbed. A shorter one (a PIN, a port number, a short word)
/// occurs in ordinary text by chance, and its hex and base64 forms are shorter still, so
/// scrubbing it would mangle responses; such values are refused and the gateway does not
/// substitute them either.
pub const MIN_VALUE_LEN: usize = 8;

/// The longest value accepted (a PEM private key fits). It bounds the automata's size and the
/// bytes a stream may be held back ([`ScrubSet::max_held_back`]).
pub const MAX_VALUE_LEN: usize = 4096;

/// The most value bytes one set holds in all. The automaton has about 11 states per value
/// byte (raw, hex and six base64 interiors), each a row of 4-byte transitions, one per
/// distinct pattern byte: about 3 KiB per value byte with typical keys, so a set of five
/// 40-byte keys takes about 600 KiB and a full set about 50 MiB.
pub const MAX_SET_BYTES: usize = 16 << 10;

/// The longest replacement accepted.
pub const MAX_REPLACEMENT_LEN: usize = 256;

/// Why a value could not be added to a [`ScrubSet`]. No variant carries the value or a part
/// of it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ScrubSetError {
    /// The value is shorter than [`MIN_VALUE_LEN`].
    #[error(
        "a value shorter than {MIN_VALUE_LEN} bytes cannot be scrubbed without mangling ordinary text"
    )]
    ValueTooShort,
    /// The value is longer than [`MAX_VALUE_LEN`].
    #[error("a value longer than {MAX_VALUE_LEN} bytes cannot be scrubbed")]
    ValueTooLong,
    /// The set's values would exceed [`MAX_SET_BYTES`] in all.
    #[error("the scrub set would hold more than {MAX_SET_BYTES} bytes of values")]
    SetTooLarge,
    /// The replacement is empty, too long, or has a character outside the allowed set.
    #[error(
        "a replacement must be 1 to {MAX_REPLACEMENT_LEN} ASCII letters, digits or `$ {{ }} : _ - . /`"
    )]
    InvalidReplacement,
    /// A replacement (the new one, or one already in the set) contains a value of the set in
    /// one of its encodings, so substituting it would put the value back.
    #[error("a replacement contains a value of the scrub set in one of its encodings")]
    ReplacementContainsValue,
}

/// One value and its replacement.
#[derive(Clone)]
struct Entry {
    value: Zeroizing<Vec<u8>>,
    replacement: Arc<str>,
}

/// The values to scrub for one agent and what each is replaced with.
///
/// Built once per agent and extended with [`insert`](Self::insert) whenever a new value is
/// resolved for it; scrubbers and detectors take an `Arc<ScrubSet>` snapshot, so a set that
/// is being extended (clone, insert, swap) does not disturb streams already running. Values
/// live in zeroizing buffers, and the compiled automata (which encode them) are wiped too.
/// `Debug` shows only the number of values.
#[derive(Clone, Default)]
pub struct ScrubSet {
    entries: Vec<Entry>,
    matchers: Option<Arc<Matchers>>,
}

impl ScrubSet {
    /// An empty set: scrubbing with it changes nothing.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds `value`, to be replaced by `replacement` (the reference token the agent holds,
    /// such as `$SPIKE{ref:…}`), or, if the set holds the value already, makes `replacement`
    /// its replacement from now on (the agent's newest reference to it).
    ///
    /// A replacement may contain only ASCII letters, digits and `$ { } : _ - . /`: none of
    /// them has a meaning in the escapings the scrubber decodes, so a replacement put into a
    /// JSON string, a URL or an HTML page leaves it well-formed. On error the set is
    /// unchanged.
    pub fn insert(&mut self, value: &[u8], replacement: &str) -> Result<(), ScrubSetError> {
        if value.len() < MIN_VALUE_LEN {
            return Err(ScrubSetError::ValueTooShort);
        }
        if value.len() > MAX_VALUE_LEN {
            return Err(ScrubSetError::ValueTooLong);
        }
        if !is_valid_replacement(replacement) {
            return Err(ScrubSetError::InvalidReplacement);
        }
        let mut next = self.clone();
        // Value comparison is not constant-time: which values the gateway has resolved for
        // an agent is not observable by the agent through the time an insertion takes.
        match next.entries.iter_mut().find(|e| *e.value == value) {
            Some(entry) => entry.replacement = replacement.into(),
            None => {
                let total: usize = next.entries.iter().map(|e| e.value.len()).sum();
                if total + value.len() > MAX_SET_BYTES {
                    return Err(ScrubSetError::SetTooLarge);
                }
                next.entries.push(Entry {
                    value: Zeroizing::new(value.to_vec()),
                    replacement: replacement.into(),
                });
                next.matchers = Some(Arc::new(Matchers::build(
                    next.entries.iter().map(|e| e.value.as_slice()),
                )));
            }
        }
        if next
            .entries
            .iter()
            .any(|e| find_known_value(&next, e.replacement.as_bytes()).is_some())
        {
            return Err(ScrubSetError::ReplacementContainsValue);
        }
        *self = next;
        Ok(())
    }

    /// The replacement `value` has in the set, if it is in it.
    pub fn replacement_of(&self, value: &[u8]) -> Option<&str> {
        self.entries
            .iter()
            .find(|e| *e.value == value)
            .map(|e| &*e.replacement)
    }

    /// Number of values.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether the set has no values.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The most input bytes a [`Scrubber`](crate::Scrubber) over this set holds back at any
    /// time: `2 · (L + 2) · 12`, with `L` the longest pattern of any value (its hex form,
    /// twice the value's length) and 12 the longest escape sequence decoded: the scanner's
    /// lag behind the input, plus a region of replaced input that may still grow. For a
    /// 40-byte API key that is 1,968 bytes. This is the worst case, reached only while the
    /// stream's tail really is a partial match or a value; ordinary text is held back not at
    /// all (see [`crate::scrub`]).
    pub fn max_held_back(&self) -> usize {
        2 * self.longest_region()
    }

    /// The most input one match can cover (`(L + 2) · 12`, as above); a region of
    /// overlapping matches longer than this is replaced in pieces of this length.
    pub fn longest_region(&self) -> usize {
        self.matchers.as_ref().map_or(0, |m| m.max_lag())
    }

    /// The compiled patterns, or `None` for an empty set.
    pub(crate) fn matchers(&self) -> Option<&Arc<Matchers>> {
        self.matchers.as_ref()
    }

    /// The replacement of entry `entry`.
    pub(crate) fn replacement(&self, entry: u32) -> &Arc<str> {
        &self.entries[entry as usize].replacement
    }
}

impl fmt::Debug for ScrubSet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ScrubSet")
            .field("values", &self.entries.len())
            .finish_non_exhaustive()
    }
}

fn is_valid_replacement(replacement: &str) -> bool {
    (1..=MAX_REPLACEMENT_LEN).contains(&replacement.len())
        && replacement
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"${}:_-./".contains(&b))
}

#[cfg(test)]
mod tests {
    use super::*;

    const TOKEN: &str = "$SPIKE{ref:0123456789abcdef0123456789abcdef}";

    #[test]
    fn a_value_knows_its_replacement() {
        let mut set = ScrubSet::new();
        assert_eq!(set.replacement_of(b"sk-value-123"), None);
        set.insert(b"sk-value-123", TOKEN)
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(set.replacement_of(b"sk-value-123"), Some(TOKEN));
        assert_eq!(set.replacement_of(b"sk-value-12"), None);
    }

    #[test]
    fn refuses_short_and_long_values() {
        let mut set = ScrubSet::new();
        assert_eq!(
            set.insert(b"1234567", TOKEN),
            Err(ScrubSetError::ValueTooShort)
        );
        assert_eq!(
            set.insert(&[b'x'; MAX_VALUE_LEN + 1], TOKEN),
            Err(ScrubSetError::ValueTooLong)
        );
        assert!(set.is_empty());
        set.insert(b"zyxwvuts", TOKEN).unwrap();
        assert_eq!(set.len(), 1);
    }

    #[test]
    fn refuses_values_beyond_the_set_limit() {
        let mut set = ScrubSet::new();
        for i in 0..MAX_SET_BYTES / MAX_VALUE_LEN {
            set.insert(&vec![b'a' + i as u8; MAX_VALUE_LEN], &format!("$r{i}"))
                .unwrap();
        }
        assert_eq!(
            set.insert(b"one-more-value", "$more"),
            Err(ScrubSetError::SetTooLarge)
        );
        assert_eq!(set.len(), MAX_SET_BYTES / MAX_VALUE_LEN);
    }

    #[test]
    fn refuses_replacements_that_could_break_their_context() {
        let mut set = ScrubSet::new();
        for bad in ["", "a\"b", "a\\b", "a%b", "a&b", "a<b", "a b", "é"] {
            assert_eq!(
                set.insert(b"secret-value-1", bad),
                Err(ScrubSetError::InvalidReplacement),
                "{bad:?}"
            );
        }
        assert!(set.is_empty());
    }

    #[test]
    fn refuses_a_replacement_that_spells_a_value() {
        let mut set = ScrubSet::new();
        set.insert(b"abcdefgh-secret", TOKEN).unwrap();
        assert_eq!(
            set.insert(b"another-secret", "x-abcdefgh-secret-x"),
            Err(ScrubSetError::ReplacementContainsValue)
        );
        // Nor may a new value be spelled by an existing replacement.
        assert_eq!(
            set.insert(b"0123456789abcdef", "$x"),
            Err(ScrubSetError::ReplacementContainsValue)
        );
        assert_eq!(set.len(), 1);
    }

    #[test]
    fn a_known_value_gets_the_newest_replacement() {
        let mut set = ScrubSet::new();
        set.insert(b"abcdefgh-secret", "$SPIKE{ref:1}").unwrap();
        set.insert(b"abcdefgh-secret", "$SPIKE{ref:2}").unwrap();
        assert_eq!(set.len(), 1);
        assert_eq!(&**set.replacement(0), "$SPIKE{ref:2}");
    }

    #[test]
    fn debug_shows_no_value() {
        let mut set = ScrubSet::new();
        set.insert(b"abcdefgh-secret", TOKEN).unwrap();
        let shown = format!("{set:?}");
        assert!(!shown.contains("abcdefgh"), "{shown}");
        assert!(shown.contains("values: 1"));
    }
}
