//! The chain's head and its authenticated, storable form.

use serde::{Deserialize, Serialize};

use super::record::HmacSha256;
use super::{AuditKey, AuditMac};
use hmac::Mac;

/// Domain separation tag of a stored checkpoint's MAC; no line MAC input starts with it.
const DOMAIN: &[u8] = b"spike-audit-checkpoint-v1\0";
/// Leading bytes of a stored checkpoint: its format.
const MAGIC: &[u8; 4] = b"SAC1";
/// Bytes of a stored checkpoint: magic, seq, head MAC, tag.
const STORED_LEN: usize = 4 + 8 + 32 + 32;
/// What starts a shipped checkpoint in a line of a second sink (after any syslog prefix).
pub const SHIPPED_MARKER: &str = "spike-audit-checkpoint ";

/// The position of a chain: the last line's `seq` and `mac`. `seq` 0 with a zero MAC is the
/// empty log. Nexus keeps the latest one in its store (sealed with [`Checkpoint::seal`]) and
/// checks with [`verify_against`](super::verify_against) that the log still reaches it, so a
/// log cut short, removed or replaced by a shorter chain is noticed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Checkpoint {
    /// The last line's sequence number.
    pub seq: u64,
    /// The last line's MAC.
    pub mac: AuditMac,
}

/// A stored checkpoint that cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum CheckpointError {
    /// Not the stored checkpoint format.
    #[error("the stored audit checkpoint is not in a known format")]
    Format,
    /// The tag does not verify: edited, or written under another key.
    #[error("the stored audit checkpoint does not verify under the audit key (edited?)")]
    BadTag,
}

impl Checkpoint {
    /// The empty log.
    pub const GENESIS: Self = Self {
        seq: 0,
        mac: AuditMac::ZERO,
    };

    /// HMAC-SHA256 under the audit key over `"spike-audit-checkpoint-v1\0" ‖ seq (u64 BE) ‖
    /// mac`: someone who can edit the store but lacks the key cannot move it.
    fn tag(&self, key: &AuditKey) -> HmacSha256 {
        let mut m = key.hmac();
        m.update(DOMAIN);
        m.update(&self.seq.to_be_bytes());
        m.update(self.mac.as_bytes());
        m
    }

    /// The stored form: `"SAC1" ‖ seq (u64 BE) ‖ mac ‖ tag`.
    pub fn seal(&self, key: &AuditKey) -> Vec<u8> {
        let mut out = Vec::with_capacity(STORED_LEN);
        out.extend_from_slice(MAGIC);
        out.extend_from_slice(&self.seq.to_be_bytes());
        out.extend_from_slice(self.mac.as_bytes());
        out.extend_from_slice(&self.tag(key).finalize().into_bytes());
        out
    }

    /// The line shipped to a second sink (a file, syslog): `spike-audit-checkpoint seq=N
    /// mac=HEX sealed=HEX`, where `sealed` is [`Checkpoint::seal`]'s form and alone counts
    /// (`seq` and `mac` are there for people reading the sink). No newline.
    pub fn shipped_line(&self, key: &AuditKey) -> String {
        format!(
            "{SHIPPED_MARKER}seq={} mac={} sealed={}",
            self.seq,
            self.mac,
            hex::encode(self.seal(key))
        )
    }

    /// Reads the checkpoint of a line written by [`Checkpoint::shipped_line`], wherever in
    /// the line it starts (a syslog file prefixes its own fields). `None` when the line holds
    /// no shipped checkpoint.
    pub fn open_shipped(line: &str, key: &AuditKey) -> Option<Result<Self, CheckpointError>> {
        let at = line.find(SHIPPED_MARKER)?;
        let sealed = line[at..]
            .split_ascii_whitespace()
            .find_map(|field| field.strip_prefix("sealed="));
        Some(
            sealed
                .and_then(|h| hex::decode(h).ok())
                .ok_or(CheckpointError::Format)
                .and_then(|raw| Self::open(&raw, key)),
        )
    }

    /// Reads a checkpoint stored by [`Checkpoint::seal`], checking its tag in constant time.
    pub fn open(stored: &[u8], key: &AuditKey) -> Result<Self, CheckpointError> {
        if stored.len() != STORED_LEN || &stored[..4] != MAGIC {
            return Err(CheckpointError::Format);
        }
        let seq = u64::from_be_bytes(
            stored[4..12]
                .try_into()
                .map_err(|_| CheckpointError::Format)?,
        );
        let mac: [u8; 32] = stored[12..44]
            .try_into()
            .map_err(|_| CheckpointError::Format)?;
        let cp = Self {
            seq,
            mac: AuditMac::from_bytes(mac),
        };
        cp.tag(key)
            .verify_slice(&stored[44..])
            .map_err(|_| CheckpointError::BadTag)?;
        Ok(cp)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn stored_checkpoint_is_authenticated() {
        let key = AuditKey::new(&[5; 32]);
        let cp = Checkpoint {
            seq: 42,
            mac: AuditMac::from_bytes([9; 32]),
        };
        let stored = cp.seal(&key);
        assert_eq!(Checkpoint::open(&stored, &key).unwrap(), cp);
        // Moving it back (a smaller seq) without the key breaks the tag.
        let mut moved = stored.clone();
        moved[11] = 41;
        assert_eq!(Checkpoint::open(&moved, &key), Err(CheckpointError::BadTag));
        assert_eq!(
            Checkpoint::open(&stored, &AuditKey::new(&[6; 32])),
            Err(CheckpointError::BadTag)
        );
        assert_eq!(
            Checkpoint::open(&stored[1..], &key),
            Err(CheckpointError::Format)
        );
    }

    #[test]
    fn a_shipped_line_is_found_anywhere_in_a_line_and_only_its_sealed_form_counts() {
        let key = AuditKey::new(&[5; 32]);
        let cp = Checkpoint {
            seq: 7,
            mac: AuditMac::from_bytes([3; 32]),
        };
        let line = cp.shipped_line(&key);
        assert!(
            line.starts_with("spike-audit-checkpoint seq=7 mac=0303"),
            "{line}"
        );
        assert_eq!(Checkpoint::open_shipped(&line, &key), Some(Ok(cp)));
        let syslog = format!("Dec  3 14:08:24 host spike-nexus[42]: {line}");
        assert_eq!(Checkpoint::open_shipped(&syslog, &key), Some(Ok(cp)));
        assert_eq!(
            Checkpoint::open_shipped("Dec  3 host sshd: hello", &key),
            None
        );
        // The readable seq is not what counts: editing it changes nothing, editing the
        // sealed form breaks the tag, and a mangled one is not a checkpoint at all.
        let edited = line.replace("seq=7", "seq=9");
        assert_eq!(Checkpoint::open_shipped(&edited, &key), Some(Ok(cp)));
        let sealed_at = line.find("sealed=").unwrap() + "sealed=".len();
        let mut moved = line.clone();
        moved.replace_range(sealed_at + 22..sealed_at + 24, "06");
        assert_eq!(
            Checkpoint::open_shipped(&moved, &key),
            Some(Err(CheckpointError::BadTag))
        );
        for bad in [
            "spike-audit-checkpoint seq=7",
            "spike-audit-checkpoint sealed=zz",
            &line[..line.len() - 2],
        ] {
            assert_eq!(
                Checkpoint::open_shipped(bad, &key),
                Some(Err(CheckpointError::Format)),
                "{bad}"
            );
        }
        assert_eq!(
            Checkpoint::open_shipped(&line, &AuditKey::new(&[6; 32])),
            Some(Err(CheckpointError::BadTag))
        );
    }
}
