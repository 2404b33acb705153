//! The controllers' Prometheus metrics: reconciles, their durations and their errors, by
//! controller and (for errors) a bounded reason. The health server renders them at `/metrics`
//! with [`Metrics::render`].
//!
//! Labels are bounded by construction: the controller is one of [`ControllerName`] and the
//! reason one of the `&'static str` labels of [`crate::controller::Error::reason`], so a
//! resource name or an error message can never become a time series.

use std::time::Instant;

use prometheus_client::encoding::{EncodeLabelSet, EncodeLabelValue};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::{Registry, Unit};

/// Which controller a sample is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, EncodeLabelValue)]
#[allow(non_camel_case_types)] // The label values, as the metrics' documentation spells them.
pub enum ControllerName {
    /// The `SpikePolicy` controller.
    spikepolicy,
    /// The `SpikeSecret` controller.
    spikesecret,
    /// The `SpikeCluster` controller.
    spikecluster,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct ControllerLabels {
    controller: ControllerName,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct ErrorLabels {
    controller: ControllerName,
    reason: &'static str,
}

/// Reconcile durations from 5 ms to about 20 s: a reconcile is a few API calls and, for
/// policies and secrets, a Nexus round trip or two.
fn duration_histogram() -> Histogram {
    Histogram::new(exponential_buckets(0.005, 2.0, 13))
}

/// The operator's metrics, shared by every controller and the health server.
pub struct Metrics {
    registry: Registry,
    reconciles: Family<ControllerLabels, Counter>,
    durations: Family<ControllerLabels, Histogram, fn() -> Histogram>,
    errors: Family<ErrorLabels, Counter>,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics").finish_non_exhaustive()
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// Registers `spike_operator_reconciles_total`,
    /// `spike_operator_reconcile_duration_seconds` and `spike_operator_reconcile_errors_total`.
    pub fn new() -> Self {
        let mut registry = Registry::default();
        let reconciles = Family::<ControllerLabels, Counter>::default();
        let durations =
            Family::<ControllerLabels, Histogram, fn() -> Histogram>::new_with_constructor(
                duration_histogram,
            );
        let errors = Family::<ErrorLabels, Counter>::default();
        // The client appends `_total` to counters and the unit to the histogram's name.
        registry.register(
            "spike_operator_reconciles",
            "Reconciles started, by controller",
            reconciles.clone(),
        );
        registry.register_with_unit(
            "spike_operator_reconcile_duration",
            "How long reconciles took, by controller",
            Unit::Seconds,
            durations.clone(),
        );
        registry.register(
            "spike_operator_reconcile_errors",
            "Reconciles that failed, by controller and reason",
            errors.clone(),
        );
        Self {
            registry,
            reconciles,
            durations,
            errors,
        }
    }

    /// Counts a reconcile of `controller`; its duration is recorded when the returned guard
    /// drops, however the reconcile ends.
    pub fn reconcile(&self, controller: ControllerName) -> ReconcileTimer<'_> {
        self.reconciles
            .get_or_create(&ControllerLabels { controller })
            .inc();
        ReconcileTimer {
            metrics: self,
            controller,
            start: Instant::now(),
        }
    }

    /// Counts a failed reconcile of `controller` for `reason` (a bounded label).
    pub fn reconcile_failed(&self, controller: ControllerName, reason: &'static str) {
        self.errors
            .get_or_create(&ErrorLabels { controller, reason })
            .inc();
    }

    /// Every metric in the Prometheus (OpenMetrics) text format.
    pub fn render(&self) -> String {
        let mut out = String::new();
        // Writing to a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }
}

/// Records a reconcile's duration when dropped.
#[derive(Debug)]
pub struct ReconcileTimer<'a> {
    metrics: &'a Metrics,
    controller: ControllerName,
    start: Instant,
}

impl Drop for ReconcileTimer<'_> {
    fn drop(&mut self) {
        self.metrics
            .durations
            .get_or_create(&ControllerLabels {
                controller: self.controller,
            })
            .observe(self.start.elapsed().as_secs_f64());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reconciles_durations_and_errors_are_rendered_by_controller() {
        let m = Metrics::new();
        drop(m.reconcile(ControllerName::spikepolicy));
        drop(m.reconcile(ControllerName::spikepolicy));
        m.reconcile_failed(ControllerName::spikepolicy, "NexusUnavailable");
        let text = m.render();
        assert!(
            text.contains("spike_operator_reconciles_total{controller=\"spikepolicy\"} 2"),
            "{text}"
        );
        assert!(
            text.contains(
                "spike_operator_reconcile_duration_seconds_count{controller=\"spikepolicy\"} 2"
            ),
            "{text}"
        );
        assert!(
            text.contains(
                "spike_operator_reconcile_errors_total{controller=\"spikepolicy\",reason=\"NexusUnavailable\"} 1"
            ),
            "{text}"
        );
        assert!(
            !text.contains("spikesecret"),
            "no series before a sample: {text}"
        );
    }
}
