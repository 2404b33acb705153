//! Audit records of requests made while the chain is not open (sealed: no audit key yet),
//! kept in memory and appended, with their original times, as soon as it opens, so restore
//! calls (and every other call while sealed) are chained too. Bounded: beyond
//! [`MAX_SEALED_RECORDS`], records are only counted per action, and one summary line says how
//! many. A restart while sealed loses what was buffered; the operational log has each one.

use std::collections::BTreeMap;

use spike_core::audit::{AuditRecord, Decision};
use time::OffsetDateTime;

/// Most records kept while sealed.
pub(crate) const MAX_SEALED_RECORDS: usize = 1024;
/// Action of the summary line of records dropped while sealed.
pub(crate) const DROPPED_ACTION: &str = "audit.sealed_dropped";

/// Records waiting for the chain to open.
#[derive(Debug, Default)]
pub(crate) struct SealedAudit {
    records: Vec<(AuditRecord, OffsetDateTime)>,
    dropped: BTreeMap<&'static str, u64>,
}

impl SealedAudit {
    /// Keeps `record`, made now.
    pub(crate) fn push(&mut self, record: AuditRecord) {
        if self.records.len() < MAX_SEALED_RECORDS {
            self.records.push((record, OffsetDateTime::now_utc()));
        } else {
            *self.dropped.entry(record.action()).or_default() += 1;
        }
    }

    /// Everything to append, in order: the kept records, then the summary of dropped ones.
    pub(crate) fn drain(&mut self) -> Vec<(AuditRecord, OffsetDateTime)> {
        let mut out = std::mem::take(&mut self.records);
        let dropped = std::mem::take(&mut self.dropped);
        if !dropped.is_empty() {
            let summary = dropped.into_iter().fold(
                AuditRecord::new(DROPPED_ACTION, Decision::Error, "buffer_full"),
                |r, (action, n)| r.with_count(action, n),
            );
            out.push((summary, OffsetDateTime::now_utc()));
        }
        out
    }
}
