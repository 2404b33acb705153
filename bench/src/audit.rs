//! What a gateway request waits for when its audit line is written: the shared audit writer
//! (`spike_runtime::audit_log`) appending gateway-sized lines one at a time, as one agent's
//! requests do, once waiting for each line's `fdatasync` and once for its `write(2)` only.

use std::path::Path;
use std::time::{Duration, Instant};

use serde::Serialize;
use spike_core::audit::{AuditKey, AuditRecord, Decision};
use spike_core::id::SpiffeId;
use spike_runtime::audit_log::{AuditWriter, Durability, WriterOptions};

/// The append latencies of one durability mode.
#[derive(Debug, Clone, Serialize)]
pub struct AppendReport {
    /// `synced` or `batched`.
    pub durability: &'static str,
    /// Lines appended.
    pub lines: usize,
    /// Median append, microseconds.
    pub p50_us: f64,
    /// 99th percentile, microseconds.
    pub p99_us: f64,
}

/// Appends `count` gateway lines to a new log in `dir` per mode (synced, then batched with
/// the gateway's default interval), one at a time.
pub async fn audit_append(dir: &Path, count: usize) -> anyhow::Result<Vec<AppendReport>> {
    let gateway = SpiffeId::new("spiffe://spike.bench/spike/gateway/bench")?;
    let agent = SpiffeId::new("spiffe://spike.bench/agents/bench")?;
    let mut out = Vec::new();
    for (name, durability) in [
        ("synced", Durability::Synced),
        ("batched", Durability::Batched(Duration::from_millis(100))),
    ] {
        let options = WriterOptions {
            durability,
            ..WriterOptions::default()
        };
        let path = dir.join(format!("audit-{name}.log"));
        let w = AuditWriter::open_with(&path, AuditKey::new(&[1; 32]), options, None).await?;
        let mut took = Vec::with_capacity(count);
        for _ in 0..count {
            let record = AuditRecord::new("gateway.read", Decision::Allow, "ok")
                .with_caller(gateway.clone())
                .with_tokens(["0a1b2c3d4e5f6a7b"], agent.clone())
                .with_route("up")
                .with_destination("127.0.0.1:8080");
            let t = Instant::now();
            w.append(record).await?;
            took.push(t.elapsed());
        }
        w.close().await;
        took.sort();
        let at = |q: f64| {
            let i = ((took.len() as f64 * q) as usize).min(took.len().saturating_sub(1));
            took.get(i).map_or(0.0, |d| d.as_secs_f64() * 1e6)
        };
        out.push(AppendReport {
            durability: name,
            lines: count,
            p50_us: at(0.5),
            p99_us: at(0.99),
        });
    }
    Ok(out)
}
