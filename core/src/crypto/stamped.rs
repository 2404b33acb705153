//! Fixed-length, non-secret records that start with `format (1) ‖ key id (4)`: the record tag
//! and the wrapped data key. Both are stored as their bytes and serialized as standard base64,
//! and both refuse another format before another length, so that lives here once.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;

use super::CryptoError;
use super::keys::KeyId;

/// Length of the `format ‖ key id` header.
pub(super) const HEADER_LEN: usize = 1 + 4;

/// `N` bytes whose first byte is a format and whose next four are a key id.
#[derive(Clone, PartialEq, Eq)]
pub(super) struct Stamped<const N: usize>([u8; N]);

impl<const N: usize> Stamped<N> {
    /// Wraps bytes this build produced.
    pub(super) const fn new(bytes: [u8; N]) -> Self {
        Self(bytes)
    }

    /// Parses stored bytes: the format must be `format` (checked first, so a newer format gets
    /// the clear message), and the length `N`. `what` names the record in errors.
    pub(super) fn parse(bytes: &[u8], format: u8, what: &'static str) -> Result<Self, CryptoError> {
        let malformed = |reason| CryptoError::Malformed { what, reason };
        let Some(&found) = bytes.first() else {
            return Err(malformed("empty"));
        };
        if found != format {
            return Err(CryptoError::UnsupportedFormat {
                found,
                supported: format,
            });
        }
        <[u8; N]>::try_from(bytes)
            .map(Self)
            .map_err(|_| malformed("wrong length"))
    }

    /// All the bytes.
    pub(super) fn bytes(&self) -> &[u8; N] {
        &self.0
    }

    /// The key id in the header.
    pub(super) fn key_id(&self) -> KeyId {
        let b = &self.0;
        KeyId::from_bytes([b[1], b[2], b[3], b[4]])
    }

    /// Standard base64 of the bytes.
    pub(super) fn to_base64(&self) -> String {
        BASE64.encode(self.0)
    }
}

/// Decodes the standard base64 form; `what` names the record in the error.
pub(super) fn decode_base64(s: &str, what: &'static str) -> Result<Vec<u8>, String> {
    BASE64
        .decode(s.as_bytes())
        .map_err(|_| format!("{what} is not valid base64"))
}

/// Serde as a base64 string for a type with `from_bytes(&[u8]) -> Result<Self, CryptoError>`
/// and a `Stamped` field `.0`.
macro_rules! base64_serde {
    ($ty:ty, $what:literal) => {
        impl serde::Serialize for $ty {
            fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
                serializer.serialize_str(&self.0.to_base64())
            }
        }

        impl<'de> serde::Deserialize<'de> for $ty {
            fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
                let s = <String as serde::Deserialize>::deserialize(deserializer)?;
                let bytes = super::stamped::decode_base64(&s, $what)
                    .map_err(<D::Error as serde::de::Error>::custom)?;
                Self::from_bytes(&bytes).map_err(<D::Error as serde::de::Error>::custom)
            }
        }
    };
}
pub(super) use base64_serde;
