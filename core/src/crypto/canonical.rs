//! Canonical, length-prefixed encoding of the inputs to MACs, KDFs and associated data.
//!
//! Every variable-length field is preceded by its length as a big-endian `u32`, and integers
//! are fixed-width big-endian, so no two different field lists encode to the same bytes (for
//! example `("ab", "c")` and `("a", "bc")`). The first field is always a versioned label that
//! names what is being encoded, which keeps the encodings of different structures apart.
//!
//! Changing this encoding changes what is on disk: the known-answer tests in the sibling
//! modules pin it.

use zeroize::Zeroizing;

/// Builds a canonical encoding.
///
/// The buffer is wiped on drop because some encodings (share-seed info) sit next to secret
/// derivations and record MAC inputs carry record values.
pub(crate) struct Canonical(Zeroizing<Vec<u8>>);

impl Canonical {
    /// Starts an encoding with its versioned `label` as the first field.
    pub(crate) fn new(label: &str) -> Self {
        let mut this = Self(Zeroizing::new(Vec::with_capacity(64)));
        this.field(label.as_bytes());
        this
    }

    /// Appends a variable-length field: its length as a big-endian `u32`, then its bytes.
    ///
    /// Callers bound their inputs (paths, keys and values have limits far below 4 GiB); a
    /// longer field would be a programming error, and its length saturates rather than wraps
    /// so two such fields still cannot collide with a short one.
    pub(crate) fn field(&mut self, bytes: &[u8]) -> &mut Self {
        let len = u32::try_from(bytes.len()).unwrap_or(u32::MAX);
        self.0.extend_from_slice(&len.to_be_bytes());
        self.0.extend_from_slice(bytes);
        self
    }

    /// Appends a fixed-width `u8`.
    pub(crate) fn u8(&mut self, value: u8) -> &mut Self {
        self.0.push(value);
        self
    }

    /// Appends a fixed-width big-endian `u32`.
    pub(crate) fn u32(&mut self, value: u32) -> &mut Self {
        self.0.extend_from_slice(&value.to_be_bytes());
        self
    }

    /// Appends a fixed-width big-endian `u64`.
    pub(crate) fn u64(&mut self, value: u64) -> &mut Self {
        self.0.extend_from_slice(&value.to_be_bytes());
        self
    }

    /// The encoded bytes.
    pub(crate) fn as_bytes(&self) -> &[u8] {
        &self.0
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn fields_are_length_prefixed() {
        let mut a = Canonical::new("l");
        a.field(b"ab").field(b"c");
        let mut b = Canonical::new("l");
        b.field(b"a").field(b"bc");
        assert_ne!(a.as_bytes(), b.as_bytes());
        assert_eq!(
            a.as_bytes(),
            [0, 0, 0, 1, b'l', 0, 0, 0, 2, b'a', b'b', 0, 0, 0, 1, b'c']
        );
    }

    #[test]
    fn integers_are_fixed_width_big_endian() {
        let mut c = Canonical::new("");
        c.u8(7).u32(0x0102_0304).u64(5);
        assert_eq!(
            c.as_bytes(),
            [0, 0, 0, 0, 7, 1, 2, 3, 4, 0, 0, 0, 0, 0, 0, 0, 5]
        );
    }
}
