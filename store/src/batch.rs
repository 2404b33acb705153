use std::fmt;

use crate::{MAX_BATCH_BYTES, MAX_BATCH_ENTRIES, MAX_KEY_LEN, MAX_VALUE_LEN, StoreError, Table};

/// An atomic, conditional set of changes for [`Store::commit`](crate::Store::commit).
///
/// Conditions are checked first, all against the state before the batch; operations then apply
/// in the order they were added. The builder methods never fail: limits are checked by `commit`,
/// which refuses an oversized batch whole.
///
/// ```
/// use spike_store::{Batch, Table};
/// const META: Table = Table::new("meta");
///
/// // "Initialize once": only the first of two racing batches can succeed.
/// let mut batch = Batch::new();
/// batch.require_absent(META, "root-key-check").put(META, "root-key-check", b"sealed".to_vec());
/// assert_eq!(batch.len(), 2);
/// ```
#[derive(Clone, Default)]
pub struct Batch {
    pub(crate) conditions: Vec<Condition>,
    pub(crate) ops: Vec<Op>,
}

/// What must hold before a batch applies.
#[derive(Clone)]
pub(crate) enum Condition {
    Absent {
        table: Table,
        key: Vec<u8>,
    },
    Present {
        table: Table,
        key: Vec<u8>,
    },
    Equals {
        table: Table,
        key: Vec<u8>,
        expected: Vec<u8>,
    },
}

/// One change.
#[derive(Clone)]
pub(crate) enum Op {
    Put {
        table: Table,
        key: Vec<u8>,
        value: Vec<u8>,
    },
    Delete {
        table: Table,
        key: Vec<u8>,
    },
}

impl Condition {
    pub(crate) fn table(&self) -> Table {
        match self {
            Self::Absent { table, .. }
            | Self::Present { table, .. }
            | Self::Equals { table, .. } => *table,
        }
    }

    pub(crate) fn key(&self) -> &[u8] {
        match self {
            Self::Absent { key, .. } | Self::Present { key, .. } | Self::Equals { key, .. } => key,
        }
    }

    /// Whether the condition holds given the key's current value.
    pub(crate) fn holds(&self, current: Option<&[u8]>) -> bool {
        match self {
            Self::Absent { .. } => current.is_none(),
            Self::Present { .. } => current.is_some(),
            Self::Equals { expected, .. } => current == Some(expected.as_slice()),
        }
    }
}

impl Batch {
    /// An empty batch.
    pub fn new() -> Self {
        Self::default()
    }

    /// Requires that `key` has no value in `table`.
    pub fn require_absent(&mut self, table: Table, key: impl Into<Vec<u8>>) -> &mut Self {
        self.conditions.push(Condition::Absent {
            table,
            key: key.into(),
        });
        self
    }

    /// Requires that `key` has some value in `table`.
    pub fn require_present(&mut self, table: Table, key: impl Into<Vec<u8>>) -> &mut Self {
        self.conditions.push(Condition::Present {
            table,
            key: key.into(),
        });
        self
    }

    /// Requires that `key` has exactly the value `expected` in `table` (compare-and-set).
    pub fn require_value(
        &mut self,
        table: Table,
        key: impl Into<Vec<u8>>,
        expected: impl Into<Vec<u8>>,
    ) -> &mut Self {
        self.conditions.push(Condition::Equals {
            table,
            key: key.into(),
            expected: expected.into(),
        });
        self
    }

    /// Sets `key` to `value` in `table`.
    pub fn put(
        &mut self,
        table: Table,
        key: impl Into<Vec<u8>>,
        value: impl Into<Vec<u8>>,
    ) -> &mut Self {
        self.ops.push(Op::Put {
            table,
            key: key.into(),
            value: value.into(),
        });
        self
    }

    /// Removes `key` from `table`; removing a missing key is not an error.
    pub fn delete(&mut self, table: Table, key: impl Into<Vec<u8>>) -> &mut Self {
        self.ops.push(Op::Delete {
            table,
            key: key.into(),
        });
        self
    }

    /// Number of conditions plus operations.
    pub fn len(&self) -> usize {
        self.conditions.len() + self.ops.len()
    }

    /// Whether the batch has neither conditions nor operations.
    pub fn is_empty(&self) -> bool {
        self.conditions.is_empty() && self.ops.is_empty()
    }

    /// Bytes of keys, values and expected values the batch carries.
    pub fn size_bytes(&self) -> usize {
        let conditions = self.conditions.iter().map(|c| match c {
            Condition::Absent { key, .. } | Condition::Present { key, .. } => key.len(),
            Condition::Equals { key, expected, .. } => key.len() + expected.len(),
        });
        let ops = self.ops.iter().map(|op| match op {
            Op::Put { key, value, .. } => key.len() + value.len(),
            Op::Delete { key, .. } => key.len(),
        });
        conditions.chain(ops).sum()
    }

    /// Checks every limit, so a backend can apply the batch without failing on input.
    pub(crate) fn validate(&self) -> Result<(), StoreError> {
        let bytes = self.size_bytes();
        if self.len() > MAX_BATCH_ENTRIES || bytes > MAX_BATCH_BYTES {
            return Err(StoreError::BatchTooLarge {
                entries: self.len(),
                bytes,
                max_entries: MAX_BATCH_ENTRIES,
                max_bytes: MAX_BATCH_BYTES,
            });
        }
        for condition in &self.conditions {
            check_key(condition.key())?;
            if let Condition::Equals { expected, .. } = condition {
                check_value(expected)?;
            }
        }
        for op in &self.ops {
            match op {
                Op::Put { key, value, .. } => {
                    check_key(key)?;
                    check_value(value)?;
                }
                Op::Delete { key, .. } => check_key(key)?,
            }
        }
        Ok(())
    }
}

pub(crate) fn check_key(key: &[u8]) -> Result<(), StoreError> {
    if key.len() > MAX_KEY_LEN {
        return Err(StoreError::KeyTooLong {
            len: key.len(),
            max: MAX_KEY_LEN,
        });
    }
    Ok(())
}

fn check_value(value: &[u8]) -> Result<(), StoreError> {
    if value.len() > MAX_VALUE_LEN {
        return Err(StoreError::ValueTooLong {
            len: value.len(),
            max: MAX_VALUE_LEN,
        });
    }
    Ok(())
}

/// Shows the batch's shape only: keys may be secret paths and values are never printed.
impl fmt::Debug for Batch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Batch")
            .field("conditions", &self.conditions.len())
            .field("ops", &self.ops.len())
            .field("bytes", &self.size_bytes())
            .finish()
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    const T: Table = Table::new("t");

    #[test]
    fn debug_hides_contents() {
        let mut batch = Batch::new();
        batch
            .require_value(T, "secret-path", "old-value")
            .put(T, "secret-path", "new-value");
        let shown = format!("{batch:?}");
        assert!(!shown.contains("secret"), "{shown}");
        assert!(!shown.contains("value"), "{shown}");
        assert_eq!(shown, "Batch { conditions: 1, ops: 1, bytes: 40 }");
    }

    #[test]
    fn limits() {
        let mut batch = Batch::new();
        batch.put(T, vec![0; MAX_KEY_LEN], vec![0; MAX_VALUE_LEN]);
        assert!(batch.validate().is_ok());

        let mut batch = Batch::new();
        batch.delete(T, vec![0; MAX_KEY_LEN + 1]);
        assert!(matches!(
            batch.validate(),
            Err(StoreError::KeyTooLong { len, .. }) if len == MAX_KEY_LEN + 1
        ));

        let mut batch = Batch::new();
        batch.require_value(T, "k", vec![0; MAX_VALUE_LEN + 1]);
        assert!(matches!(
            batch.validate(),
            Err(StoreError::ValueTooLong { .. })
        ));

        let mut batch = Batch::new();
        for i in 0..=MAX_BATCH_ENTRIES {
            batch.delete(T, i.to_be_bytes());
        }
        assert!(matches!(
            batch.validate(),
            Err(StoreError::BatchTooLarge { .. })
        ));
    }
}
