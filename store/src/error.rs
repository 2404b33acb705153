use std::error::Error as StdError;
use std::path::PathBuf;
use std::sync::Arc;

/// Why a store operation failed.
///
/// No variant carries a stored value; paths are those of the data directory and its file, never
/// keys. Errors are cheap to clone, because one failed group commit answers every batch in it.
#[derive(Clone, Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// Condition number `condition` (0-based, in the order it was added to the batch) does not
    /// hold; nothing of the batch was applied.
    #[error("condition {condition} of the batch does not hold; nothing was applied")]
    Conflict {
        /// Index of the first failing condition.
        condition: usize,
    },

    /// The data directory was written by a newer release.
    #[error(
        "the data directory was written by a newer SPIKE (format {found}); \
         this binary supports up to {supported}"
    )]
    FormatTooNew {
        /// Format version found on disk.
        found: u32,
        /// Newest format version this build understands.
        supported: u32,
    },

    /// The data file is not a SPIKE store, or its bookkeeping is damaged.
    #[error("{path} is not a valid SPIKE store: {reason}")]
    Corrupt {
        /// The data file.
        path: PathBuf,
        /// What is wrong.
        reason: &'static str,
    },

    /// Another process (or another handle in this one) has the data file open.
    #[error("{path} is already in use by another SPIKE process")]
    InUse {
        /// The data file.
        path: PathBuf,
    },

    /// The data directory or file is writable by other users, so anyone could replace it.
    #[error(
        "{path} is writable by other users (mode {mode:o}); refusing to use it \
         (fix with: chmod o-w,g-w {path})"
    )]
    InsecurePermissions {
        /// The directory or file.
        path: PathBuf,
        /// Its permission bits.
        mode: u32,
    },

    /// The data path exists but is not a directory.
    #[error("{path} is not a directory")]
    NotADirectory {
        /// The data path.
        path: PathBuf,
    },

    /// A key is longer than [`MAX_KEY_LEN`](crate::MAX_KEY_LEN).
    #[error("a key of {len} bytes exceeds the limit of {max} bytes")]
    KeyTooLong {
        /// Length of the key.
        len: usize,
        /// The limit.
        max: usize,
    },

    /// A value is longer than [`MAX_VALUE_LEN`](crate::MAX_VALUE_LEN).
    #[error("a value of {len} bytes exceeds the limit of {max} bytes")]
    ValueTooLong {
        /// Length of the value.
        len: usize,
        /// The limit.
        max: usize,
    },

    /// A batch exceeds [`MAX_BATCH_BYTES`](crate::MAX_BATCH_BYTES) or
    /// [`MAX_BATCH_ENTRIES`](crate::MAX_BATCH_ENTRIES).
    #[error(
        "the batch is too large ({entries} entries, {bytes} bytes; limits {max_entries} entries, {max_bytes} bytes)"
    )]
    BatchTooLarge {
        /// Conditions plus operations in the batch.
        entries: usize,
        /// Bytes of keys and values in the batch.
        bytes: usize,
        /// The entry limit.
        max_entries: usize,
        /// The byte limit.
        max_bytes: usize,
    },

    /// Creating, inspecting or syncing the data directory or file failed.
    #[error("i/o error on {path}")]
    Io {
        /// The directory or file.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: Arc<std::io::Error>,
    },

    /// The storage engine failed. Nothing in the failing operation was acknowledged.
    #[error("storage backend error while {context}")]
    Backend {
        /// What the store was doing.
        context: &'static str,
        /// The underlying error.
        #[source]
        source: Arc<dyn StdError + Send + Sync + 'static>,
    },

    /// The store was closed, or its writer stopped.
    #[error("the store is closed")]
    Closed,
}

impl StoreError {
    pub(crate) fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Self::Io {
            path: path.into(),
            source: Arc::new(source),
        }
    }

    pub(crate) fn backend(
        context: &'static str,
        source: impl StdError + Send + Sync + 'static,
    ) -> Self {
        Self::Backend {
            context,
            source: Arc::new(source),
        }
    }
}
