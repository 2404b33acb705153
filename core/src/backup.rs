//! The backup file: a manifest and the init record in clear, then every entry of the store
//! sealed under the backup subkey ([`crate::crypto::BackupKey`]) and bound to both.
//!
//! ```text
//! "SPIKE-BACKUP\n" ‖ u32 BE manifest length ‖ manifest (JSON) ‖ u32 BE init record length
//!   ‖ init record ‖ sealed payload
//! payload (before sealing) = entry*, entry = u8 table length ‖ table ‖ u32 BE key length
//!   ‖ key ‖ u32 BE value length ‖ value
//! ```
//!
//! The init record holds the key ring sealed under the root key (never the root key), so a
//! Nexus restoring the file needs `threshold` shares of the same root key to read anything.
//! The entries are the store's records as stored: values already encrypted, other records
//! tagged; the seal adds confidentiality for the metadata and makes any edit, truncation or
//! swap of the clear parts fail as a whole.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use zeroize::Zeroizing;

/// The first bytes of every backup file.
pub const BACKUP_MAGIC: &[u8] = b"SPIKE-BACKUP\n";
/// The backup format this build writes, and the newest it reads.
pub const BACKUP_FORMAT: u32 = 1;
/// Longest manifest accepted when reading.
const MAX_MANIFEST: usize = 64 * 1024;
/// Longest init record accepted when reading.
const MAX_INIT_RECORD: usize = 1 << 20;

/// What a backup holds, readable without any key.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct BackupManifest {
    /// [`BACKUP_FORMAT`] when written.
    pub format: u32,
    /// When the snapshot was taken (RFC 3339, UTC).
    pub created: String,
    /// The deployment: SHA-256 of its first init record's root-key check, hex (the same for
    /// every backup of one deployment until a rotation or rekey replaces the root key).
    pub deployment: String,
    /// The data key the payload is sealed under (its id, hex).
    pub data_key_id: String,
    /// Entries per table.
    pub tables: BTreeMap<String, u64>,
    /// The audit chain's head when the snapshot was taken: the last line's seq, if any.
    pub audit_head: Option<u64>,
    /// The store's generation (its freshness witness), read just after the snapshot (so at or
    /// slightly after it), if the store keeps one.
    pub store_generation: Option<u64>,
}

/// Why a backup file cannot be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum BackupError {
    /// Not a SPIKE backup at all.
    #[error("not a SPIKE backup (it does not start with SPIKE-BACKUP)")]
    NotABackup,
    /// Cut short or otherwise malformed.
    #[error("the backup is truncated or malformed: {0}")]
    Malformed(&'static str),
    /// Written by a newer SPIKE.
    #[error("the backup has format {found}; this build reads up to {supported}")]
    TooNew {
        /// The file's format.
        found: u32,
        /// This build's.
        supported: u32,
    },
}

/// A parsed backup file, borrowing the bytes.
#[derive(Debug)]
pub struct BackupFile<'a> {
    /// The manifest.
    pub manifest: BackupManifest,
    /// The init record, as stored.
    pub init_record: &'a [u8],
    /// The sealed payload.
    pub payload: &'a [u8],
    /// The clear parts the payload is bound to.
    pub bound: &'a [u8],
}

/// One entry of the store: table name, key, value.
pub type BackupEntry = (String, Vec<u8>, Vec<u8>);

/// The file's bytes: magic, manifest, init record, payload.
pub fn encode_file(manifest: &BackupManifest, init_record: &[u8], payload: &[u8]) -> Vec<u8> {
    let mut out = clear_parts(manifest, init_record);
    out.extend_from_slice(payload);
    out
}

/// The clear parts of a file (what its payload binds), before the payload is sealed.
pub fn clear_parts(manifest: &BackupManifest, init_record: &[u8]) -> Vec<u8> {
    // A manifest of strings, numbers and a map always serializes.
    let json = serde_json::to_vec(manifest).unwrap_or_default();
    let mut out = Vec::with_capacity(BACKUP_MAGIC.len() + 8 + json.len() + init_record.len());
    out.extend_from_slice(BACKUP_MAGIC);
    push_u32_field(&mut out, &json);
    push_u32_field(&mut out, init_record);
    out
}

/// Parses a file's clear parts (no key needed); the payload is checked when it is opened.
pub fn parse_file(bytes: &[u8]) -> Result<BackupFile<'_>, BackupError> {
    let rest = bytes
        .strip_prefix(BACKUP_MAGIC)
        .ok_or(BackupError::NotABackup)?;
    let (json, rest) = take_u32_field(rest, MAX_MANIFEST, "manifest")?;
    let manifest: BackupManifest = match serde_json::from_slice(json) {
        Ok(m) => m,
        Err(_) => {
            // A newer format may have other fields: say so rather than "malformed".
            #[derive(Deserialize)]
            struct Format {
                format: u32,
            }
            return Err(match serde_json::from_slice::<Format>(json) {
                Ok(f) if f.format > BACKUP_FORMAT => BackupError::TooNew {
                    found: f.format,
                    supported: BACKUP_FORMAT,
                },
                _ => BackupError::Malformed("the manifest is not valid"),
            });
        }
    };
    if manifest.format > BACKUP_FORMAT {
        return Err(BackupError::TooNew {
            found: manifest.format,
            supported: BACKUP_FORMAT,
        });
    }
    let (init_record, payload) = take_u32_field(rest, MAX_INIT_RECORD, "init record")?;
    if payload.is_empty() {
        return Err(BackupError::Malformed("the payload is missing"));
    }
    let bound = &bytes[..bytes.len() - payload.len()];
    Ok(BackupFile {
        manifest,
        init_record,
        payload,
        bound,
    })
}

/// The payload's plaintext, in a buffer wiped on drop.
pub fn encode_entries(entries: &[BackupEntry]) -> Zeroizing<Vec<u8>> {
    let size = entries
        .iter()
        .map(|(t, k, v)| 1 + t.len() + 8 + k.len() + v.len())
        .sum();
    let mut out = Zeroizing::new(Vec::with_capacity(size));
    for (table, key, value) in entries {
        // Table names are at most 64 bytes (the store's limit).
        out.push(u8::try_from(table.len()).unwrap_or(u8::MAX));
        out.extend_from_slice(table.as_bytes());
        push_u32_field(&mut out, key);
        push_u32_field(&mut out, value);
    }
    out
}

/// Parses a payload's plaintext.
pub fn decode_entries(mut bytes: &[u8]) -> Result<Vec<BackupEntry>, BackupError> {
    let mut out = Vec::new();
    while let Some((&len, rest)) = bytes.split_first() {
        let len = usize::from(len);
        if rest.len() < len {
            return Err(BackupError::Malformed("an entry's table name is cut short"));
        }
        let table = std::str::from_utf8(&rest[..len])
            .map_err(|_| BackupError::Malformed("a table name is not UTF-8"))?
            .to_owned();
        let (key, rest) = take_u32_field(&rest[len..], usize::MAX, "entry key")?;
        let (value, rest) = take_u32_field(rest, usize::MAX, "entry value")?;
        out.push((table, key.to_vec(), value.to_vec()));
        bytes = rest;
    }
    Ok(out)
}

fn push_u32_field(out: &mut Vec<u8>, bytes: &[u8]) {
    let len = u32::try_from(bytes.len()).unwrap_or(u32::MAX);
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(bytes);
}

fn take_u32_field<'a>(
    bytes: &'a [u8],
    max: usize,
    what: &'static str,
) -> Result<(&'a [u8], &'a [u8]), BackupError> {
    let (len, rest) = bytes
        .split_first_chunk::<4>()
        .ok_or(BackupError::Malformed(what))?;
    let len = usize::try_from(u32::from_be_bytes(*len)).unwrap_or(usize::MAX);
    if len > max || rest.len() < len {
        return Err(BackupError::Malformed(what));
    }
    Ok(rest.split_at(len))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn manifest() -> BackupManifest {
        BackupManifest {
            format: BACKUP_FORMAT,
            created: "2026-12-04T20:00:00Z".into(),
            deployment: "ab".repeat(32),
            data_key_id: "01020304".into(),
            tables: BTreeMap::from([("secrets".into(), 2)]),
            audit_head: Some(7),
            store_generation: Some(9),
        }
    }

    #[test]
    fn files_and_entries_round_trip() {
        let entries: Vec<BackupEntry> = vec![
            ("secrets".into(), b"a".to_vec(), b"v1".to_vec()),
            ("secrets".into(), b"".to_vec(), b"".to_vec()),
            ("versions".into(), vec![0, 255], vec![7; 300]),
        ];
        let plain = encode_entries(&entries);
        assert_eq!(decode_entries(&plain).unwrap(), entries);
        let bytes = encode_file(&manifest(), b"init", b"sealed");
        let file = parse_file(&bytes).unwrap();
        assert_eq!(file.manifest, manifest());
        assert_eq!(file.init_record, b"init");
        assert_eq!(file.payload, b"sealed");
        assert_eq!(file.bound, clear_parts(&manifest(), b"init").as_slice());
    }

    #[test]
    fn damaged_files_are_refused_with_their_reason() {
        let bytes = encode_file(&manifest(), b"init", b"sealed");
        assert_eq!(
            parse_file(b"PK\x03\x04").unwrap_err(),
            BackupError::NotABackup
        );
        for cut in [
            BACKUP_MAGIC.len() + 2,
            BACKUP_MAGIC.len() + 20,
            bytes.len() - 6,
        ] {
            assert!(
                matches!(parse_file(&bytes[..cut]), Err(BackupError::Malformed(_))),
                "cut at {cut}"
            );
        }
        let newer = BackupManifest {
            format: 2,
            ..manifest()
        };
        assert!(matches!(
            parse_file(&encode_file(&newer, b"i", b"p")),
            Err(BackupError::TooNew { found: 2, .. })
        ));
        assert!(decode_entries(&[5, b'a']).is_err());
        assert!(decode_entries(&[1, b'a', 0, 0, 0, 9, 1]).is_err());
    }
}
