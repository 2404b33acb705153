//! Generated secret values: `length` characters drawn uniformly from an alphabet, from the
//! operating system's CSPRNG, built in buffers that are wiped when dropped.

use spike_core::crypto::fill_random;
use spike_core::secret::SecretString;
use zeroize::Zeroizing;

use super::error::SyncError;

/// The longest value a generator makes (Nexus takes values up to 64 KiB).
pub const MAX_GENERATED_LEN: usize = 4096;
/// The shortest: fewer characters than this are guessable whatever the alphabet.
const MIN_GENERATED_LEN: usize = 8;

/// The characters a generated value is made of: 2 to 94 distinct printable ASCII characters
/// (no space, so a value never needs quoting).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Alphabet(Vec<u8>);

impl Alphabet {
    /// `A-Z a-z 0-9`.
    pub fn alphanumeric() -> Self {
        Self(
            (b'A'..=b'Z')
                .chain(b'a'..=b'z')
                .chain(b'0'..=b'9')
                .collect(),
        )
    }

    /// An alphabet of exactly the characters in `chars`.
    pub fn new(chars: &str) -> Result<Self, SyncError> {
        let mut set: Vec<u8> = chars.bytes().collect();
        set.sort_unstable();
        let before = set.len();
        set.dedup();
        if before != set.len() || !set.iter().all(u8::is_ascii_graphic) || set.len() < 2 {
            return Err(SyncError::BadInput(
                "an alphabet is 2 to 94 distinct printable ASCII characters, without spaces".into(),
            ));
        }
        Ok(Self(set))
    }
}

/// How to make one value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Generator {
    /// How many characters.
    pub length: usize,
    /// Which characters.
    pub alphabet: Alphabet,
}

impl Generator {
    /// Checks the length, so a bad spec is refused before anything is sent.
    pub fn validate(&self) -> Result<(), SyncError> {
        if !(MIN_GENERATED_LEN..=MAX_GENERATED_LEN).contains(&self.length) {
            return Err(SyncError::BadInput(format!(
                "a generated value is {MIN_GENERATED_LEN} to {MAX_GENERATED_LEN} characters long, not {}",
                self.length
            )));
        }
        Ok(())
    }

    /// A fresh value. Each character is drawn by rejection sampling (bytes at or above the
    /// largest multiple of the alphabet's size are dropped), so every character is equally
    /// likely.
    pub fn generate(&self) -> Result<SecretString, SyncError> {
        self.validate()?;
        let n = self.alphabet.0.len();
        // n <= 94, so the limit is at least 188 and most bytes are kept.
        let limit = 256 - 256 % n;
        let mut out = Zeroizing::new(String::with_capacity(self.length));
        let mut pool = Zeroizing::new([0u8; 256]);
        while out.len() < self.length {
            fill_random(&mut pool[..])
                .map_err(|e| SyncError::Unexpected(format!("the random generator failed: {e}")))?;
            for &b in pool.iter() {
                if out.len() == self.length {
                    break;
                }
                if usize::from(b) < limit {
                    out.push(char::from(self.alphabet.0[usize::from(b) % n]));
                }
            }
        }
        Ok(SecretString::new(std::mem::take(&mut *out)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_values_have_the_length_and_only_the_alphabet() {
        let g = Generator {
            length: 64,
            alphabet: Alphabet::new("ab").unwrap(),
        };
        let v = g.generate().unwrap();
        assert_eq!(v.expose_secret().len(), 64);
        assert!(v.expose_secret().bytes().all(|b| b == b'a' || b == b'b'));
        // 2^-64 odds of a false failure: two draws are never equal in practice.
        assert_ne!(v.expose_secret(), g.generate().unwrap().expose_secret());
    }

    #[test]
    fn every_character_of_the_alphabet_turns_up() {
        let g = Generator {
            length: MAX_GENERATED_LEN,
            alphabet: Alphabet::alphanumeric(),
        };
        let v = g.generate().unwrap();
        // 4096 draws from 62 characters: a missing one has odds below 1e-25.
        for c in Alphabet::alphanumeric().0 {
            assert!(
                v.expose_secret().as_bytes().contains(&c),
                "{}",
                char::from(c)
            );
        }
    }

    #[test]
    fn bad_generators_are_refused() {
        for bad in ["", "a", "aa", "ab c", "abé"] {
            assert!(Alphabet::new(bad).is_err(), "{bad:?}");
        }
        for length in [0, MIN_GENERATED_LEN - 1, MAX_GENERATED_LEN + 1] {
            let g = Generator {
                length,
                alphabet: Alphabet::alphanumeric(),
            };
            let e = g.generate().unwrap_err();
            assert!(e.to_string().contains("characters long"), "{e}");
        }
    }
}
