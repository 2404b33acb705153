//! Size and growth of the audit log, for `/metrics`.

use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering};

/// Counters the writer updates after each durable batch.
#[derive(Debug)]
pub struct AuditStats {
    bytes: AtomicU64,
    lines_written: AtomicU64,
    bytes_written: AtomicU64,
    rotations: AtomicU64,
}

impl AuditStats {
    /// Counters for a log of `bytes` bytes (all its files).
    pub(crate) fn new(bytes: u64) -> Self {
        Self {
            bytes: AtomicU64::new(bytes),
            lines_written: AtomicU64::new(0),
            bytes_written: AtomicU64::new(0),
            rotations: AtomicU64::new(0),
        }
    }

    pub(crate) fn wrote(&self, lines: u64, bytes: u64) {
        self.bytes.fetch_add(bytes, Ordering::Relaxed);
        self.lines_written.fetch_add(lines, Ordering::Relaxed);
        self.bytes_written.fetch_add(bytes, Ordering::Relaxed);
    }

    pub(crate) fn rotated(&self) {
        self.rotations.fetch_add(1, Ordering::Relaxed);
    }

    /// Bytes of every file of the log (as this writer found and grew them).
    pub fn bytes(&self) -> u64 {
        self.bytes.load(Ordering::Relaxed)
    }

    /// The Prometheus text of these counters.
    pub fn render(&self) -> String {
        let mut out = String::new();
        for (name, kind, help, v) in [
            (
                "spike_audit_log_bytes",
                "gauge",
                "Bytes of the audit log, its rotated files included.",
                self.bytes(),
            ),
            (
                "spike_audit_lines_written_total",
                "counter",
                "Audit lines written since this process opened it.",
                self.lines_written.load(Ordering::Relaxed),
            ),
            (
                "spike_audit_bytes_written_total",
                "counter",
                "Audit log bytes written since this process opened it (its growth).",
                self.bytes_written.load(Ordering::Relaxed),
            ),
            (
                "spike_audit_rotations_total",
                "counter",
                "Audit log files rotated by size since this process opened it.",
                self.rotations.load(Ordering::Relaxed),
            ),
        ] {
            let _ = writeln!(out, "# HELP {name} {help}");
            let _ = writeln!(out, "# TYPE {name} {kind}");
            let _ = writeln!(out, "{name} {v}");
        }
        out
    }
}
