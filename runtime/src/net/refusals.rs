//! Refused TLS handshakes: one rate-limited WARN line each and the
//! `spike_tls_handshake_failures_total{reason}` counter every service renders on `/metrics`.
//!
//! The line is at WARN because a refused handshake is the only trace an operator gets of a
//! misconfigured client; the rate limit is there because a flood of bad handshakes must not
//! fill the disk.

use std::fmt::Write;
use std::net::SocketAddr;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use crate::tls::refusal_reason;

/// Every reason label the counter can carry; bounded so the metric's cardinality is too.
const REASONS: [&str; 12] = [
    "expired",
    "not_yet_valid",
    "unknown_issuer",
    "other_trust_domain",
    "not_svid",
    "id_not_allowed",
    "bad_certificate",
    "no_certificate",
    "protocol_version",
    "peer_alert",
    "protocol_error",
    "timeout",
];

/// The label of I/O failures that are not TLS errors (a peer that hangs up mid-handshake).
const IO: &str = "io";

static COUNTS: [AtomicU64; REASONS.len() + 1] = [const { AtomicU64::new(0) }; REASONS.len() + 1];

fn count(reason: &str) {
    let i = REASONS
        .iter()
        .position(|r| *r == reason)
        .unwrap_or(REASONS.len());
    COUNTS[i].fetch_add(1, Ordering::Relaxed);
}

/// Handshake failures counted so far for `reason` (a label of the metric), in this process.
pub fn handshake_failures(reason: &str) -> u64 {
    let i = REASONS
        .iter()
        .position(|r| *r == reason)
        .unwrap_or(REASONS.len());
    COUNTS[i].load(Ordering::Relaxed)
}

/// The `spike_tls_handshake_failures_total` counter in the Prometheus text format, every
/// reason listed (zeros included, so a dashboard sees the series before the first refusal).
pub fn render_handshake_metrics() -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "# HELP spike_tls_handshake_failures_total TLS handshakes this server refused, by reason."
    );
    let _ = writeln!(out, "# TYPE spike_tls_handshake_failures_total counter");
    for (reason, n) in REASONS.iter().chain([&IO]).zip(COUNTS.iter()) {
        let _ = writeln!(
            out,
            "spike_tls_handshake_failures_total{{reason=\"{reason}\"}} {}",
            n.load(Ordering::Relaxed)
        );
    }
    out
}

/// A token bucket: `BURST` lines at once, then `PER_SECOND` lines a second.
struct Bucket {
    tokens: f64,
    last: Instant,
    suppressed: u64,
}

const BURST: f64 = 20.0;
const PER_SECOND: f64 = 2.0;

static BUCKET: Mutex<Option<Bucket>> = Mutex::new(None);

/// Takes a token; `Some(n)` lets the line through, `n` being how many were dropped before it.
fn admit() -> Option<u64> {
    let mut guard = BUCKET.lock().unwrap_or_else(|p| p.into_inner());
    let now = Instant::now();
    let b = guard.get_or_insert(Bucket {
        tokens: BURST,
        last: now,
        suppressed: 0,
    });
    let refill = now.duration_since(b.last).as_secs_f64() * PER_SECOND;
    b.tokens = (b.tokens + refill).min(BURST);
    b.last = now;
    if b.tokens >= 1.0 {
        b.tokens -= 1.0;
        Some(std::mem::take(&mut b.suppressed))
    } else {
        b.suppressed += 1;
        None
    }
}

fn report(remote: SocketAddr, reason: &'static str, detail: &dyn std::fmt::Display) {
    count(reason);
    if let Some(suppressed) = admit() {
        tracing::warn!(
            %remote,
            reason,
            suppressed,
            "TLS handshake refused: {detail}"
        );
    }
}

/// Records a handshake that failed with `e` (the error of the TLS accept).
pub(crate) fn handshake_failed(remote: SocketAddr, e: &std::io::Error) {
    match e
        .get_ref()
        .and_then(|inner| inner.downcast_ref::<rustls::Error>())
    {
        Some(tls) => report(remote, refusal_reason(tls), tls),
        None => report(remote, IO, e),
    }
}

/// Records a handshake that did not finish within the handshake timeout.
pub(crate) fn handshake_timed_out(remote: SocketAddr) {
    report(remote, "timeout", &"the handshake did not finish in time");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_flood_is_cut_to_the_burst_and_the_dropped_lines_are_counted() {
        let admitted = (0..1000).filter(|_| admit().is_some()).count();
        // Refill during the loop is at most a few tokens.
        assert!(admitted < 40, "{admitted}");
        std::thread::sleep(std::time::Duration::from_millis(600));
        assert!(admit().is_some_and(|n| n > 900));
    }

    #[test]
    fn every_reason_is_rendered() {
        count("expired");
        let text = render_handshake_metrics();
        for r in REASONS.iter().chain([&IO]) {
            assert!(text.contains(&format!("{{reason=\"{r}\"}}")), "{r}: {text}");
        }
        assert!(handshake_failures("expired") >= 1);
    }
}
