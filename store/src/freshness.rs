//! The freshness witness: a generation and a digest of the whole store, kept in every commit.
//!
//! Records are authenticated by their owner, but an authenticated record can still be an *old*
//! one: whoever can write the data directory can put back an earlier copy of the file, or of a
//! single record. The witness makes that visible. Once armed with a [`WitnessKey`], every write
//! transaction that changes anything raises the generation by one and updates the digest (the
//! sum, modulo 2^256, of a keyed hash of every entry), and stores both, tagged, in the same
//! transaction as the change. The owner hands the latest [`Witness`] to something that keeps it
//! outside the data directory; on the next start, [`Armed`] reports what the file claims and
//! what its contents actually sum to, and the owner compares the three.
//!
//! The sum is kept incrementally: a put subtracts the old entry's hash and adds the new one, a
//! delete subtracts, so a commit costs one keyed hash per changed entry. Because the hashes are
//! keyed, nobody without the key can find a different set of entries with the same sum (an
//! unkeyed additive hash would fall to a generalized birthday search).

use std::fmt;

/// Length of a digest and of a tag.
pub const DIGEST_LEN: usize = 32;

/// Keyed functions the store keeps its witness with; the store never sees the key itself.
pub trait WitnessKey: Send + Sync + 'static {
    /// The keyed hash of one entry. It must bind the table, the key and the value
    /// unambiguously (length-prefixed).
    fn entry_hash(&self, table: &str, key: &[u8], value: &[u8]) -> [u8; DIGEST_LEN];

    /// The tag binding a generation to a digest.
    fn tag(&self, generation: u64, digest: &Digest) -> [u8; DIGEST_LEN];
}

/// A digest of a set of entries: the sum of their keyed hashes modulo 2^256.
#[derive(Clone, Copy, Default, PartialEq, Eq, Hash)]
pub struct Digest([u64; 4]);

impl Digest {
    /// The digest of no entries.
    pub const EMPTY: Self = Self([0; 4]);

    /// The digest from its 32-byte big-endian form.
    pub fn from_bytes(bytes: [u8; DIGEST_LEN]) -> Self {
        let mut limbs = [0u64; 4];
        for (i, limb) in limbs.iter_mut().enumerate() {
            // Limb 0 is the least significant: the last eight bytes.
            let start = DIGEST_LEN - 8 * (i + 1);
            let mut word = [0u8; 8];
            word.copy_from_slice(&bytes[start..start + 8]);
            *limb = u64::from_be_bytes(word);
        }
        Self(limbs)
    }

    /// The 32-byte big-endian form.
    pub fn to_bytes(self) -> [u8; DIGEST_LEN] {
        let mut out = [0u8; DIGEST_LEN];
        for (i, limb) in self.0.iter().enumerate() {
            let start = DIGEST_LEN - 8 * (i + 1);
            out[start..start + 8].copy_from_slice(&limb.to_be_bytes());
        }
        out
    }

    /// Adds an entry's hash.
    pub fn add(&mut self, hash: [u8; DIGEST_LEN]) {
        let other = Self::from_bytes(hash).0;
        let mut carry = false;
        for (limb, o) in self.0.iter_mut().zip(other) {
            let (sum, c1) = limb.overflowing_add(o);
            let (sum, c2) = sum.overflowing_add(u64::from(carry));
            *limb = sum;
            carry = c1 || c2;
        }
    }

    /// Subtracts an entry's hash.
    pub fn sub(&mut self, hash: [u8; DIGEST_LEN]) {
        let other = Self::from_bytes(hash).0;
        let mut borrow = false;
        for (limb, o) in self.0.iter_mut().zip(other) {
            let (diff, b1) = limb.overflowing_sub(o);
            let (diff, b2) = diff.overflowing_sub(u64::from(borrow));
            *limb = diff;
            borrow = b1 || b2;
        }
    }
}

impl fmt::Debug for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Digest(")?;
        for b in self.to_bytes() {
            write!(f, "{b:02x}")?;
        }
        write!(f, ")")
    }
}

/// What a store claims about itself: its generation, the digest of its contents at that
/// generation, and the tag binding the two.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Witness {
    /// Write transactions that changed something since the witness was first kept.
    pub generation: u64,
    /// The digest of every entry as of that transaction.
    pub digest: Digest,
    /// [`WitnessKey::tag`] of the two.
    pub tag: [u8; DIGEST_LEN],
}

/// Length of [`Witness::encode`]'s output.
pub const WITNESS_LEN: usize = 8 + 2 * DIGEST_LEN;

impl Witness {
    /// A witness of `generation` and `digest`, tagged under `key`.
    pub fn tagged(key: &dyn WitnessKey, generation: u64, digest: Digest) -> Self {
        Self {
            generation,
            digest,
            tag: key.tag(generation, &digest),
        }
    }

    /// `generation ‖ digest ‖ tag`, big-endian.
    pub fn encode(&self) -> [u8; WITNESS_LEN] {
        let mut out = [0u8; WITNESS_LEN];
        out[..8].copy_from_slice(&self.generation.to_be_bytes());
        out[8..8 + DIGEST_LEN].copy_from_slice(&self.digest.to_bytes());
        out[8 + DIGEST_LEN..].copy_from_slice(&self.tag);
        out
    }

    /// Parses [`Witness::encode`]'s output; `None` if it has the wrong length.
    pub fn decode(bytes: &[u8]) -> Option<Self> {
        if bytes.len() != WITNESS_LEN {
            return None;
        }
        let mut generation = [0u8; 8];
        generation.copy_from_slice(&bytes[..8]);
        let mut digest = [0u8; DIGEST_LEN];
        digest.copy_from_slice(&bytes[8..8 + DIGEST_LEN]);
        let mut tag = [0u8; DIGEST_LEN];
        tag.copy_from_slice(&bytes[8 + DIGEST_LEN..]);
        Some(Self {
            generation: u64::from_be_bytes(generation),
            digest: Digest::from_bytes(digest),
            tag,
        })
    }
}

/// What arming found: the witness the file holds (if it holds a well-formed one) and the
/// digest of what the file actually contains. The store does not judge them; its owner, who
/// holds the key and the outside copy, does.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Armed {
    /// The stored witness; `None` if the file has none (a new store, or one written before
    /// witnesses existed) or holds a malformed one (see `malformed`).
    pub stored: Option<Witness>,
    /// Whether a witness record exists but could not be parsed.
    pub malformed: bool,
    /// The digest of every entry, computed by reading the whole store.
    pub contents: Digest,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn add_and_sub_are_inverse_and_carry_across_limbs() {
        let mut d = Digest::EMPTY;
        let max = [0xff; DIGEST_LEN];
        d.add(max);
        d.add([
            0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
            0, 0, 1,
        ]);
        // 2^256 - 1 + 1 wraps to zero.
        assert_eq!(d, Digest::EMPTY);
        let mut one = [0u8; DIGEST_LEN];
        one[31] = 1;
        d.sub(one);
        assert_eq!(d.to_bytes(), max);
        d.add(one);
        let mut x = [0u8; DIGEST_LEN];
        x[0] = 0x80;
        x[20] = 7;
        d.add(x);
        d.add(x);
        d.sub(x);
        d.sub(x);
        assert_eq!(d, Digest::EMPTY);
    }

    #[test]
    fn order_does_not_matter() {
        let a = [3u8; DIGEST_LEN];
        let b = [200u8; DIGEST_LEN];
        let (mut x, mut y) = (Digest::EMPTY, Digest::EMPTY);
        x.add(a);
        x.add(b);
        y.add(b);
        y.add(a);
        assert_eq!(x, y);
        assert_eq!(Digest::from_bytes(x.to_bytes()), x);
    }

    #[test]
    fn witness_round_trips() {
        let w = Witness {
            generation: 0x0102_0304_0506_0708,
            digest: Digest::from_bytes([9; DIGEST_LEN]),
            tag: [7; DIGEST_LEN],
        };
        assert_eq!(Witness::decode(&w.encode()), Some(w));
        assert_eq!(Witness::decode(&w.encode()[1..]), None);
    }
}
