//! Prometheus metrics of the gateway: decisions by route, decision and reason; values
//! scrubbed from responses; upstream latency. Labels are bounded (configured route names and
//! fixed codes), never a token, a value, a path or an agent ID.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// The gateway's counters.
#[derive(Debug, Default)]
pub struct Metrics {
    decisions: Mutex<BTreeMap<(String, &'static str, &'static str), u64>>,
    scrubbed: AtomicU64,
    upstream_micros: AtomicU64,
    upstream_count: AtomicU64,
}

impl Metrics {
    /// Counts one request on `route` (a configured name, `forward`, or `-`).
    pub fn decision(&self, route: &str, decision: &'static str, reason: &'static str) {
        if let Ok(mut m) = self.decisions.lock() {
            *m.entry((route.to_owned(), decision, reason)).or_default() += 1;
        }
    }

    /// Counts values replaced in a response.
    pub fn scrubbed(&self, n: u64) {
        self.scrubbed.fetch_add(n, Ordering::Relaxed);
    }

    /// Records how long an upstream took to answer (to the response head).
    pub fn upstream(&self, took: Duration) {
        let micros = u64::try_from(took.as_micros()).unwrap_or(u64::MAX);
        self.upstream_micros.fetch_add(micros, Ordering::Relaxed);
        self.upstream_count.fetch_add(1, Ordering::Relaxed);
    }

    /// The Prometheus text exposition.
    pub fn render(&self) -> String {
        let mut out = String::new();
        let _ = writeln!(
            out,
            "# HELP spike_gateway_requests_total Requests by route, decision and reason."
        );
        let _ = writeln!(out, "# TYPE spike_gateway_requests_total counter");
        if let Ok(m) = self.decisions.lock() {
            for ((route, decision, reason), n) in m.iter() {
                let _ = writeln!(
                    out,
                    "spike_gateway_requests_total{{route=\"{route}\",decision=\"{decision}\",reason=\"{reason}\"}} {n}"
                );
            }
        }
        let _ = writeln!(
            out,
            "# HELP spike_gateway_scrubbed_total Values replaced by their token in responses."
        );
        let _ = writeln!(out, "# TYPE spike_gateway_scrubbed_total counter");
        let _ = writeln!(
            out,
            "spike_gateway_scrubbed_total {}",
            self.scrubbed.load(Ordering::Relaxed)
        );
        let _ = writeln!(
            out,
            "# HELP spike_gateway_upstream_seconds Time from sending upstream to its response head."
        );
        let _ = writeln!(out, "# TYPE spike_gateway_upstream_seconds summary");
        let micros = self.upstream_micros.load(Ordering::Relaxed);
        let _ = writeln!(
            out,
            "spike_gateway_upstream_seconds_sum {}",
            micros as f64 / 1e6
        );
        let _ = writeln!(
            out,
            "spike_gateway_upstream_seconds_count {}",
            self.upstream_count.load(Ordering::Relaxed)
        );
        out
    }
}
