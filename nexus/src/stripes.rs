//! Striped locks: a fixed set of mutexes picked by a stable hash of a record's key, so writers
//! of one record are serialized without a lock per record.

/// Stripes per engine.
const STRIPES: usize = 64;

pub(crate) struct Stripes(Vec<tokio::sync::Mutex<()>>);

impl Stripes {
    pub(crate) fn new() -> Self {
        Self((0..STRIPES).map(|_| tokio::sync::Mutex::new(())).collect())
    }

    /// The lock of the record stored under `key`.
    pub(crate) fn for_key(&self, key: &[u8]) -> &tokio::sync::Mutex<()> {
        // FNV-1a: a stable, cheap spread over the stripes.
        let h = key.iter().copied().fold(0xcbf2_9ce4_8422_2325_u64, |h, b| {
            (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
        });
        let n = self.0.len() as u64;
        &self.0[usize::try_from(h % n).unwrap_or(0)]
    }
}
