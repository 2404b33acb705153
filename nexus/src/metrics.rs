//! Prometheus metrics: counters with bounded labels (route template and status, never a raw
//! path or a value).

use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::Mutex;

/// Request counters.
#[derive(Debug, Default)]
pub(crate) struct Metrics {
    requests: Mutex<BTreeMap<(&'static str, u16), u64>>,
}

impl Metrics {
    /// Counts one request of `action` answered with `status`.
    pub(crate) fn record(&self, action: &'static str, status: u16) {
        if let Ok(mut m) = self.requests.lock() {
            *m.entry((action, status)).or_default() += 1;
        }
    }

    /// Renders the Prometheus text exposition.
    pub(crate) fn render(&self, sealed: bool, store: &spike_store::StoreStats) -> String {
        let mut out = String::new();
        let _ = writeln!(
            out,
            "# HELP spike_nexus_requests_total API requests by action and status."
        );
        let _ = writeln!(out, "# TYPE spike_nexus_requests_total counter");
        if let Ok(m) = self.requests.lock() {
            for ((action, status), n) in m.iter() {
                let _ = writeln!(
                    out,
                    "spike_nexus_requests_total{{action=\"{action}\",status=\"{status}\"}} {n}"
                );
            }
        }
        let _ = writeln!(
            out,
            "# HELP spike_nexus_sealed 1 while Nexus holds no root key."
        );
        let _ = writeln!(out, "# TYPE spike_nexus_sealed gauge");
        let _ = writeln!(out, "spike_nexus_sealed {}", u8::from(sealed));
        let _ = writeln!(
            out,
            "# HELP spike_store_batches_total Write batches committed."
        );
        let _ = writeln!(out, "# TYPE spike_store_batches_total counter");
        let _ = writeln!(out, "spike_store_batches_total {}", store.batches_committed);
        let _ = writeln!(
            out,
            "# HELP spike_store_syncs_total Durable store transactions (group commits)."
        );
        let _ = writeln!(out, "# TYPE spike_store_syncs_total counter");
        let _ = writeln!(out, "spike_store_syncs_total {}", store.transactions);
        out.push_str(&spike_runtime::net::render_handshake_metrics());
        out
    }
}

/// The keeper gauges: how many keepers are configured, how many answered as themselves at the
/// last check (one check per keeper interval) and how many took the store's witness then; and
/// the store's generation, for a store that keeps a witness.
pub(crate) fn render_keepers(
    reachable: usize,
    configured: usize,
    witnessing: usize,
    generation: Option<u64>,
) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "# HELP spike_nexus_keepers_witnessing Keepers that took the store's freshness witness at the last push."
    );
    let _ = writeln!(out, "# TYPE spike_nexus_keepers_witnessing gauge");
    let _ = writeln!(out, "spike_nexus_keepers_witnessing {witnessing}");
    if let Some(generation) = generation {
        let _ = writeln!(
            out,
            "# HELP spike_store_generation Changing write transactions since the store first kept a witness."
        );
        let _ = writeln!(out, "# TYPE spike_store_generation gauge");
        let _ = writeln!(out, "spike_store_generation {generation}");
    }
    let _ = writeln!(
        out,
        "# HELP spike_nexus_keepers_reachable Keepers that answered as themselves at the last check."
    );
    let _ = writeln!(out, "# TYPE spike_nexus_keepers_reachable gauge");
    let _ = writeln!(out, "spike_nexus_keepers_reachable {reachable}");
    let _ = writeln!(out, "# HELP spike_nexus_keepers Keepers configured.");
    let _ = writeln!(out, "# TYPE spike_nexus_keepers gauge");
    let _ = writeln!(out, "spike_nexus_keepers {configured}");
    out
}
